"""dgl_rs.metrics against an independent numpy reference written from the spec.

The reference ranks by counting (pessimistic ties: rank = #{j : s_j >= s_true}),
never by calling dgl_rs. Sizes are small: the whole file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgl_rs import metrics as M

SEED = 0
KEYS = ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR")
DEVICES = ["cpu", "cuda"]  # cuda is skipped when unavailable (checked per test, not at import)


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return name


# ---------------------------------------------------------------------------
# Reference (spec section 7), deliberately naive.
# ---------------------------------------------------------------------------


def ref_t2v_ranks(sim, c2v=None):
    sim = np.asarray(sim, dtype=np.float64)
    n = sim.shape[0]
    target = np.arange(n) if c2v is None else np.asarray(c2v)
    truth = sim[np.arange(n), target]
    return (sim >= truth[:, None]).sum(axis=1)


def ref_reduce(sim, c2v):
    """M[u, v] = max over captions c of video u of sim[c, v]."""
    sim = np.asarray(sim, dtype=np.float64)
    n_videos = sim.shape[1]
    out = np.full((n_videos, n_videos), -np.inf)
    for c, u in enumerate(c2v):
        out[u] = np.maximum(out[u], sim[c])
    return out


def ref_v2t_ranks(sim, c2v=None):
    sim = np.asarray(sim, dtype=np.float64)
    reduced = sim if c2v is None else ref_reduce(sim, c2v)
    # video v is the query; candidate caption groups u are scored by M[u, v]
    return ref_t2v_ranks(reduced.T)


def ref_summary(ranks):
    ranks = np.asarray(ranks)
    out = {f"R@{k}": 100.0 * np.mean(ranks <= k) for k in (1, 5, 10, 50)}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    return out


def legacy_compute_metrics(x):
    """The usual sort-based code (CLIP4Clip-style), kept only to show its tie bug."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {"R@1": float(np.sum(ind == 0)) * 100 / len(ind), "n_ranks": len(ind)}


def assert_report_close(got, want):
    assert set(got) == set(KEYS)
    for k in KEYS:
        assert isinstance(got[k], float), (k, type(got[k]))
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


def random_case(rng, n_videos, caps_per_video, ties, dtype):
    """(captions, videos) scores and a shuffled caption_to_video (None if one caption each)."""
    if caps_per_video == 1:
        c2v = None
        n_captions = n_videos
    else:
        counts = rng.integers(1, caps_per_video + 1, size=n_videos)
        c2v = np.repeat(np.arange(n_videos), counts)
        rng.shuffle(c2v)
        n_captions = len(c2v)
    sim = rng.standard_normal((n_captions, n_videos))
    if ties:
        sim = np.round(sim * 2) / 2  # few distinct values: many ties, also with the truth
    return sim.astype(dtype), c2v


# ---------------------------------------------------------------------------
# Comparison with the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_videos,caps", [(1, 1), (2, 1), (7, 1), (33, 1), (5, 3), (40, 4), (64, 20)])
@pytest.mark.parametrize("ties", [False, True])
def test_numpy_matches_reference(dtype, n_videos, caps, ties):
    rng = np.random.default_rng([SEED, n_videos, caps, int(ties)])
    sim, c2v = random_case(rng, n_videos, caps, ties, dtype)
    r = M.ranks(sim, c2v)
    assert r["t2v"].dtype == np.int64 and r["v2t"].dtype == np.int64
    np.testing.assert_array_equal(r["t2v"], ref_t2v_ranks(sim, c2v))
    np.testing.assert_array_equal(r["v2t"], ref_v2t_ranks(sim, c2v))
    rep = M.retrieval_report(sim, c2v)
    assert_report_close(rep["t2v"], ref_summary(ref_t2v_ranks(sim, c2v)))
    assert_report_close(rep["v2t"], ref_summary(ref_v2t_ranks(sim, c2v)))
    assert M.t2v(sim, c2v) == rep["t2v"]
    assert M.v2t(sim, c2v) == rep["v2t"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_videos,caps,chunk", [(1, 1, 1), (9, 1, 4), (30, 1, 1024), (12, 3, 5), (25, 5, 7)])
def test_tensor_matches_reference(device, dtype, n_videos, caps, chunk):
    device = _device(device)
    rng = np.random.default_rng([SEED, 1, n_videos, caps])
    sim, c2v = random_case(rng, n_videos, caps, ties=True, dtype=np.float64)
    t = torch.from_numpy(sim).to(device=device, dtype=dtype)
    c2v_t = None if c2v is None else torch.from_numpy(c2v).to(device)
    r = M.ranks(t, c2v_t, chunk=chunk)
    np.testing.assert_array_equal(r["t2v"], ref_t2v_ranks(sim, c2v))
    np.testing.assert_array_equal(r["v2t"], ref_v2t_ranks(sim, c2v))
    assert M.retrieval_report(t, c2v, chunk=chunk) == M.retrieval_report(sim, c2v)


def test_non_contiguous_numpy_views():
    rng = np.random.default_rng(SEED)
    big = np.round(rng.standard_normal((20, 30)), 1)
    for view in (big.T[:20, :20], big[::2, ::3], np.asfortranarray(big[:, :20])):
        np.testing.assert_array_equal(M.ranks(view)["t2v"], ref_t2v_ranks(view))
        np.testing.assert_array_equal(M.ranks(view)["v2t"], ref_v2t_ranks(view))


def test_tensor_requires_grad_and_non_contiguous():
    sim = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    np.testing.assert_array_equal(M.ranks(sim.t())["t2v"], ref_t2v_ranks(sim.detach().numpy().T))


def test_caption_map_as_list_and_tensor():
    sim = np.array([[0.1, 0.9], [0.8, 0.0], [0.5, 0.2]])
    for c2v in ([0, 0, 1], np.array([0, 0, 1], dtype=np.int32), torch.tensor([0, 0, 1])):
        r = M.ranks(sim, c2v)
        np.testing.assert_array_equal(r["t2v"], [2, 1, 2])
        np.testing.assert_array_equal(r["v2t"], [1, 2])


# ---------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------


def test_hand_computed_one_caption():
    sim = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0], [0.0, 5.0, 5.0]], dtype=np.float32)
    r = M.ranks(sim)
    # t2v: row0 truth 3 -> 1; row1 truth 1 -> 3; row2 truth 5 tied with 5 -> 2
    np.testing.assert_array_equal(r["t2v"], [1, 3, 2])
    # v2t = t2v of sim.T: col0 [3,3,0] truth 3 tied -> 2; col1 [1,1,5] truth 1 -> 3; col2 [2,2,5] truth 5 -> 1
    np.testing.assert_array_equal(r["v2t"], [2, 3, 1])
    rep = M.retrieval_report(sim)
    assert rep["t2v"] == {"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "R@50": 100.0, "MdR": 2.0, "MnR": 2.0}


def test_hand_computed_several_captions():
    # captions 0,1 -> video 1; caption 2 -> video 0; caption 3 -> video 2
    c2v = [1, 1, 0, 2]
    sim = np.array(
        [
            [0.2, 0.5, 0.9],  # truth 0.5 -> rank 2
            [0.1, 0.7, 0.3],  # truth 0.7 -> rank 1
            [0.4, 0.6, 0.0],  # truth 0.4 -> rank 2
            [0.3, 0.3, 0.3],  # truth 0.3, all tied -> rank 3
        ]
    )
    r = M.ranks(sim, c2v)
    np.testing.assert_array_equal(r["t2v"], [2, 1, 2, 3])
    # M[u, v]: u=0 -> caption 2 row [0.4, 0.6, 0.0]; u=1 -> max(rows 0,1) = [0.2, 0.7, 0.9];
    # u=2 -> [0.3, 0.3, 0.3].
    # video 0: column M[:,0] = [0.4, 0.2, 0.3], truth 0.4 -> 1
    # video 1: M[:,1] = [0.6, 0.7, 0.3], truth 0.7 -> 1
    # video 2: M[:,2] = [0.0, 0.9, 0.3], truth 0.3 -> 2
    np.testing.assert_array_equal(r["v2t"], [1, 1, 2])


def test_median_even_count_is_numpy_median():
    assert M.summarize([1, 2, 3, 10]) == {"R@1": 25.0, "R@5": 75.0, "R@10": 100.0, "R@50": 100.0, "MdR": 2.5, "MnR": 4.0}


# ---------------------------------------------------------------------------
# Tie policy
# ---------------------------------------------------------------------------


def test_constant_matrix_is_never_better_than_chance():
    # pessimistic ties: every rank is N, so R@k = 0 for k < N (a random order
    # expects 100 k / N); an optimistic rule would give R@1 = 100
    for n in (1, 4, 10, 60):
        rep = M.retrieval_report(np.zeros((n, n), dtype=np.float32))
        for d in ("t2v", "v2t"):
            for k in (1, 5, 10, 50):
                assert rep[d][f"R@{k}"] == (100.0 if k >= n else 0.0)
            assert rep[d]["MdR"] == n and rep[d]["MnR"] == n
    # several captions per video: every rank is the number of videos
    r = M.ranks(np.ones((6, 3)), [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(r["t2v"], [3] * 6)
    np.testing.assert_array_equal(r["v2t"], [3] * 3)


def test_legacy_sort_code_double_counts_ties():
    # caption 0 ties its video with video 1; caption 1 ties with video 2
    x = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    legacy = legacy_compute_metrics(x)
    # np.where returns every tied column: 5 "ranks" for 3 queries, and each tied
    # caption is counted once as a hit and once as a miss.
    assert legacy["n_ranks"] == 5
    assert legacy["R@1"] == pytest.approx(60.0)
    ours = M.ranks(x)["t2v"]
    assert len(ours) == 3
    np.testing.assert_array_equal(ours, [2, 2, 1])
    assert M.t2v(x)["R@1"] == pytest.approx(100 / 3)


def ref_ranks_near_ties(sim, c2v, rtol):
    """rank = #{j : s_j >= s_true - rtol * scale}, scale = the largest |score| the query
    compares (its row for t2v, its column of sim for v2t), in float64."""
    sim = np.asarray(sim, dtype=np.float64)
    n = sim.shape[0]
    target = np.arange(n) if c2v is None else np.asarray(c2v)
    truth = sim[np.arange(n), target] - rtol * np.abs(sim).max(axis=1)
    t2v_r = (sim >= truth[:, None]).sum(axis=1)
    reduced = sim if c2v is None else ref_reduce(sim, c2v)
    col_scale = np.abs(sim).max(axis=0)
    v2t_r = (reduced >= (np.diag(reduced) - rtol * col_scale)[None, :]).sum(axis=0)
    return t2v_r, v2t_r


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_videos,caps", [(7, 1), (40, 4)])
def test_near_ties_match_reference(device, n_videos, caps):
    device = _device(device)
    rng = np.random.default_rng([SEED, 5, n_videos, caps])
    sim, c2v = random_case(rng, n_videos, caps, ties=False, dtype=np.float64)
    # nudge some wrong scores to within 1e-6 of the truth: near-ties by construction
    n = sim.shape[0]
    target = np.arange(n) if c2v is None else c2v
    other = (target + 1) % n_videos
    sim[np.arange(n), other] = sim[np.arange(n), target] * (1 + 1e-7) - 1e-7 * (np.arange(n) % 2)
    want = ref_ranks_near_ties(sim, c2v, 1e-5)
    for arr in (sim, torch.from_numpy(sim).to(device)):
        r = M.ranks(arr, c2v, tie_rtol=1e-5)
        np.testing.assert_array_equal(r["t2v"], want[0])
        np.testing.assert_array_equal(r["v2t"], want[1])
    assert (want[0] >= 2).all()  # every truth has a near-tied rival, counted ahead of it
    np.testing.assert_array_equal(M.ranks(sim, c2v)["t2v"], ref_t2v_ranks(sim, c2v))  # default: exact


@pytest.mark.parametrize("bad", [-1e-3, 1.0, float("nan"), float("inf")])
def test_bad_tie_rtol(bad):
    with pytest.raises(ValueError, match="tie_rtol"):
        M.ranks(np.eye(3), tie_rtol=bad)


def _mean_pool(frames: np.ndarray, order) -> np.ndarray:
    """float32 mean of frame features, accumulated one frame at a time in ``order``."""
    acc = np.zeros(frames.shape[1], dtype=np.float32)
    for t in order:
        acc += frames[t]
    acc /= np.float32(len(order))
    return acc / np.linalg.norm(acc)


def test_order_blind_near_ties_do_not_depend_on_summation_order():
    """An order-blind model scores a video and its exact time reversal equal up to the
    rounding of a sum taken in another order. Exact ranking breaks those ties by that
    noise; the evaluation's near-tie rule gives the same metrics whatever the order."""
    from dgl_rs.services.evaluate import EVAL_TIE_RTOL

    rng = np.random.default_rng([SEED, 6])
    n_pairs, frames_per_video, dim = 40, 8, 64
    clips = rng.standard_normal((n_pairs, frames_per_video, dim)).astype(np.float32)
    videos = [(c, c[::-1]) for c in clips]  # a video and its exact reversal
    text = rng.standard_normal((2 * n_pairs, dim)).astype(np.float32)
    text[0::2] += 3 * np.stack([c.mean(0) for c in clips])  # each caption near its pair
    text[1::2] += 3 * np.stack([c.mean(0) for c in clips])
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    forward, backward, shuffled = range(frames_per_video), range(frames_per_video)[::-1], rng.permutation(8)
    results, exact = [], []
    for order in (forward, backward, shuffled):
        emb = np.stack([_mean_pool(v, order) for pair in videos for v in pair])
        sim = text @ emb.T
        results.append(M.ranks(sim, tie_rtol=EVAL_TIE_RTOL))
        exact.append(M.ranks(sim)["t2v"])
    for r in results[1:]:
        np.testing.assert_array_equal(r["t2v"], results[0]["t2v"])
        np.testing.assert_array_equal(r["v2t"], results[0]["v2t"])
    assert (results[0]["t2v"] >= 2).all()  # the reversal ties with the truth: never rank 1
    assert any((e != exact[0]).any() for e in exact[1:])  # exact ties did depend on the order


# ---------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------


cases = st.tuples(
    st.integers(1, 12),  # videos
    st.sampled_from([1, 1, 2, 4]),  # max captions per video
    st.booleans(),  # ties
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),  # seed
)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_property_recall_monotone_and_bounded(case):
    n_videos, caps, ties, dtype, seed = case
    sim, c2v = random_case(np.random.default_rng(seed), n_videos, caps, ties, dtype)
    r = M.ranks(sim, c2v)
    for d in ("t2v", "v2t"):
        assert r[d].min() >= 1 and r[d].max() <= n_videos
        rep = M.summarize(r[d])
        assert rep["R@1"] <= rep["R@5"] <= rep["R@10"] <= rep["R@50"] == 100.0  # N <= 50
        assert 1.0 <= rep["MdR"] <= n_videos and 1.0 <= rep["MnR"] <= n_videos


@settings(max_examples=40, deadline=None)
@given(cases)
def test_property_permutation_invariant(case):
    n_videos, caps, ties, dtype, seed = case
    rng = np.random.default_rng(seed)
    sim, c2v = random_case(rng, n_videos, caps, ties, dtype)
    base = M.retrieval_report(sim, c2v)
    if c2v is None:
        p = rng.permutation(n_videos)
        assert M.retrieval_report(sim[p][:, p], None) == base
        c2v = np.arange(n_videos)
    rows = rng.permutation(sim.shape[0])
    cols = rng.permutation(n_videos)
    inv = np.argsort(cols)  # old video u is new column inv[u]
    got = M.retrieval_report(np.ascontiguousarray(sim[rows][:, cols]), inv[c2v[rows]])
    for d in ("t2v", "v2t"):
        for k in KEYS:
            assert got[d][k] == pytest.approx(base[d][k], abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.sampled_from([1, 3]), st.integers(0, 2**32 - 1))
def test_property_identity_is_perfect(n_videos, caps, seed):
    rng = np.random.default_rng(seed)
    _, c2v = random_case(rng, n_videos, caps, False, np.float32)
    target = np.arange(n_videos) if c2v is None else c2v
    sim = np.zeros((len(target), n_videos), dtype=np.float32)
    sim[np.arange(len(target)), target] = 1.0
    rep = M.retrieval_report(sim, c2v)
    for d in ("t2v", "v2t"):
        assert rep[d]["R@1"] == 100.0 and rep[d]["MdR"] == 1.0 and rep[d]["MnR"] == 1.0


# ---------------------------------------------------------------------------
# Chunked evaluation from embeddings
# ---------------------------------------------------------------------------


def integer_embeddings(rng, n_captions, n_videos, dim=8):
    # small integers: every dot product is exact in float32, whatever the BLAS
    # blocking, so the chunked and full results must agree bit for bit (with ties)
    text = rng.integers(-2, 3, size=(n_captions, dim)).astype(np.float32)
    video = rng.integers(-2, 3, size=(n_videos, dim)).astype(np.float32)
    return text, video


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_videos,caps,chunk", [(1, 1, 1), (17, 1, 5), (17, 1, 4096), (11, 4, 3), (30, 3, 8)])
def test_chunked_equals_full(device, n_videos, caps, chunk):
    device = _device(device)
    rng = np.random.default_rng([SEED, 2, n_videos, caps, chunk])
    _, c2v = random_case(rng, n_videos, caps, False, np.float32)
    n_captions = n_videos if c2v is None else len(c2v)
    text, video = integer_embeddings(rng, n_captions, n_videos)
    full = text @ video.T
    want = {"t2v": ref_t2v_ranks(full, c2v), "v2t": ref_v2t_ranks(full, c2v)}
    # numpy embeddings
    got = M.ranks_chunked(text, video, c2v, chunk=chunk)
    for d in ("t2v", "v2t"):
        np.testing.assert_array_equal(got[d], want[d])
    sim = M.similarity(text, video, chunk=chunk)
    assert isinstance(sim, np.ndarray)
    np.testing.assert_array_equal(sim, full)
    # tensors on the device
    t, v = torch.from_numpy(text).to(device), torch.from_numpy(video).to(device)
    got = M.ranks_chunked(t, v, c2v, chunk=chunk)
    for d in ("t2v", "v2t"):
        np.testing.assert_array_equal(got[d], want[d])
    sim_t = M.similarity(t, v, chunk=chunk, out_device="cpu")
    assert sim_t.device.type == "cpu"
    np.testing.assert_array_equal(sim_t.numpy(), full)
    assert M.report_from_ranks(got) == M.retrieval_report(full, c2v)


# ---------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------


def ref_dual_softmax(sim, temperature, axis):
    a = sim / temperature
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return sim * e / e.sum(axis=axis, keepdims=True)


def test_dual_softmax_hand_example():
    sim = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    e = np.e
    out = M.dual_softmax(sim, temperature=1.0, axis=0)
    np.testing.assert_allclose(out, [[e / (2 * e + 1), 0.0], [0.0, e / (2 * e + 1)], [e / (2 * e + 1)] * 2])
    out1 = M.dual_softmax(sim, temperature=0.5, axis=1)
    e2 = np.exp(2.0)
    np.testing.assert_allclose(out1, [[e2 / (e2 + 1), 0.0], [0.0, e2 / (e2 + 1)], [0.5, 0.5]])


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dual_softmax_matches_reference(axis, dtype):
    rng = np.random.default_rng(SEED)
    sim = (rng.standard_normal((13, 9)) * 30).astype(dtype)  # logit-like range
    want = ref_dual_softmax(sim.astype(np.float64), 1.0, axis % 2)
    out = M.dual_softmax(sim, axis=axis)
    assert out.dtype == dtype and out.shape == sim.shape
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-30)
    t = M.dual_softmax(torch.from_numpy(sim), axis=axis)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.from_numpy(sim).dtype
    np.testing.assert_array_equal(t.numpy(), out)


def test_dual_softmax_report():
    rng = np.random.default_rng(SEED)
    sim = rng.standard_normal((12, 4)) * 10
    c2v = np.repeat(np.arange(4), 3)
    rep = M.dual_softmax_report(sim, c2v, temperature=2.0)
    assert rep["t2v"] == pytest.approx(ref_summary(ref_t2v_ranks(ref_dual_softmax(sim, 2.0, 0), c2v)))
    assert rep["v2t"] == pytest.approx(ref_summary(ref_v2t_ranks(ref_dual_softmax(sim, 2.0, 1), c2v)))


def ref_qb_norm(test, bank, k, beta):
    """The published dynamic inverted softmax, transcribed from the paper's description."""
    active = set()
    for row in bank:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        active.update(order[:k])
    denom = np.exp(beta * bank).sum(axis=0)
    out = test.copy()
    for i, row in enumerate(test):
        if int(np.argmax(row)) in active:
            out[i] = np.exp(beta * row) / denom
    return out


def test_qb_norm_hand_example():
    bank = np.array([[1.0, 0.0], [0.5, 0.0]])  # both bank queries retrieve video 0: A = {0}
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])  # query 0 retrieves 0 (normalised), query 1 retrieves 1
    out = M.qb_norm(sim, bank, k=1, beta=1.0)
    l0, l1 = np.log(np.e + np.exp(0.5)), np.log(2.0)
    np.testing.assert_allclose(out[0], [0.9 - l0, 0.1 - l1])
    np.testing.assert_array_equal(out[1], sim[1])
    # k=2 activates both videos: every row is normalised
    out2 = M.qb_norm(sim, bank, k=2, beta=1.0)
    np.testing.assert_allclose(out2[1], [0.2 - l0, 0.8 - l1])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_qb_norm_matches_reference(k):
    rng = np.random.default_rng([SEED, k])
    n = 20
    test = rng.uniform(-1, 1, size=(n, n))
    test[np.arange(n), np.arange(n)] += 0.5
    bank = rng.uniform(-1, 1, size=(50, n))
    bank[:, 3] += 0.8  # a hub: video 3 is every bank query's favourite
    want = ref_qb_norm(test, bank, k, 20.0)
    out = M.qb_norm(test, bank, k=k, beta=20.0)
    normalised = ~np.all(out == test, axis=1)
    np.testing.assert_allclose(np.exp(out[normalised]), want[normalised], rtol=1e-10)
    np.testing.assert_array_equal(out[~normalised], want[~normalised])
    np.testing.assert_array_equal(M.ranks(out)["t2v"], ref_t2v_ranks(want))
    # torch in, torch out (float32 bank is cast to the dtype of sim)
    t = M.qb_norm(torch.from_numpy(test).float(), torch.from_numpy(bank), k=k, beta=20.0)
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), out, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Bad input: ValueError naming the argument
# ---------------------------------------------------------------------------


def _nan(n=4, where=(1, 2), value=np.nan, dtype=np.float32):
    x = np.eye(n, dtype=dtype)
    x[where] = value
    return x


BAD_SIM = [
    pytest.param(_nan(), None, "`sim`.*NaN", id="nan"),
    pytest.param(_nan(value=np.inf), None, "`sim`.*NaN or inf", id="inf"),
    pytest.param(_nan(where=(3, 3), value=-np.inf), None, "`sim`", id="neg-inf-on-diagonal"),
    pytest.param(np.zeros(4, dtype=np.float32), None, "`sim`.*shape", id="1d"),
    pytest.param(np.zeros((2, 2, 2), dtype=np.float32), None, "`sim`.*shape", id="3d"),
    pytest.param(np.zeros((0, 3), dtype=np.float32), [], "`sim`.*shape", id="empty"),
    pytest.param(np.eye(3, dtype=np.int64), None, "`sim`.*dtype", id="int"),
    pytest.param(np.eye(3, dtype=np.float16), None, "`sim`.*dtype", id="float16"),
    pytest.param(np.eye(3, 4), None, "`sim`.*square", id="not-square"),
    pytest.param(np.eye(3), [0, 1], "`caption_to_video`.*shape", id="map-short"),
    pytest.param(np.eye(3), [0, 1, 3], "`caption_to_video`.*entry 2 is 3", id="map-out-of-range"),
    pytest.param(np.eye(3), [0, -1, 2], "`caption_to_video`.*entry 1 is -1", id="map-negative"),
    pytest.param(np.eye(3), [0, 0, 2], "`caption_to_video`.*video 1 has no caption", id="video-without-caption"),
    pytest.param(np.eye(3), [0.0, 1.0, 2.0], "`caption_to_video`.*dtype", id="map-float"),
    pytest.param(np.eye(3), [[0, 1, 2]], "`caption_to_video`.*shape", id="map-2d"),
]


@pytest.mark.parametrize("sim,c2v,match", BAD_SIM)
@pytest.mark.parametrize("fn", [M.t2v, M.v2t, M.ranks, M.retrieval_report])
def test_bad_input_numpy(fn, sim, c2v, match):
    with pytest.raises(ValueError, match=match):
        fn(sim, c2v)


@pytest.mark.parametrize("sim,c2v,match", [p for p in BAD_SIM if p.id not in ("float16", "int", "empty")])
@pytest.mark.parametrize("fn", [M.t2v, M.v2t])
def test_bad_input_tensor(fn, sim, c2v, match):
    with pytest.raises(ValueError, match=match):
        fn(torch.from_numpy(np.asarray(sim)), c2v, chunk=2)


def test_bad_input_tensor_dtype_and_chunk():
    with pytest.raises(ValueError, match="`sim`.*dtype"):
        M.t2v(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="`sim`.*shape"):
        M.v2t(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="`chunk`"):
        M.t2v(torch.eye(3), chunk=0)


def test_bad_embeddings():
    t, v = np.ones((4, 8), np.float32), np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="`video_emb`.*shape"):
        M.ranks_chunked(t, np.ones((4, 7), np.float32))
    with pytest.raises(ValueError, match="`video_emb`.*dtype"):
        M.ranks_chunked(t, v.astype(np.float64))
    with pytest.raises(ValueError, match="`text_emb`.*NaN"):
        M.ranks_chunked(_nan(4)[:, :4].repeat(2, axis=1), v)
    with pytest.raises(ValueError, match="`text_emb`.*shape"):
        M.ranks_chunked(np.ones((3, 8), np.float32), v)  # one caption per video needs 4 captions
    with pytest.raises(ValueError, match="`caption_to_video`"):
        M.ranks_chunked(t, v, [0, 1, 2, 4])
    with pytest.raises(ValueError, match="`text_emb`.*shape"):
        M.similarity(np.ones(8, np.float32), v)
    with pytest.raises(ValueError, match="`chunk`"):
        M.similarity(t, v, chunk=0)


def test_bad_postprocess_args():
    sim = np.eye(3)
    with pytest.raises(ValueError, match="`temperature`"):
        M.dual_softmax(sim, temperature=0.0)
    with pytest.raises(ValueError, match="`axis`"):
        M.dual_softmax(sim, axis=2)
    with pytest.raises(ValueError, match="`sim`.*NaN"):
        M.dual_softmax(_nan(3, dtype=np.float64), axis=1)
    with pytest.raises(ValueError, match="`bank`.*shape"):
        M.qb_norm(sim, np.ones((5, 4)))
    with pytest.raises(ValueError, match="`bank`.*NaN"):
        M.qb_norm(sim, _nan(3, dtype=np.float64))
    with pytest.raises(ValueError, match="`k`"):
        M.qb_norm(sim, np.ones((5, 3)), k=0)
    with pytest.raises(ValueError, match="`k`"):
        M.qb_norm(sim, np.ones((5, 3)), k=4)
    with pytest.raises(ValueError, match="`beta`"):
        M.qb_norm(sim, np.ones((5, 3)), beta=-1.0)
    with pytest.raises(ValueError, match="`ranks`"):
        M.summarize([0, 1])


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------


def test_format_table_one_and_several():
    rep = M.retrieval_report(np.eye(5))
    table = M.format_table(rep)
    assert "text->video" in table and "video->text" in table and "100.0" in table
    for k in KEYS:
        assert k in table.splitlines()[0]
    many = M.format_table({"raw": rep, "DSL": M.dual_softmax_report(np.eye(5))})
    assert len(many.splitlines()) == 2 + 4
    assert many.splitlines()[2].startswith("raw") and many.splitlines()[4].startswith("DSL")
    with pytest.raises(ValueError, match="`report`"):
        M.format_table({"t2v": 1})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("several", [False, True])
def test_tch_tensor_path_equals_host_path(dtype, several):
    """CPU float32/float64 tensors are ranked through a zero-copy numpy view; the tch path
    (what CUDA tensors use) is driven directly here so it stays tested without a GPU."""
    from dgl_rs import _native

    rng = np.random.default_rng(3)
    videos = 37
    c2v = np.repeat(np.arange(videos), 3) if several else None
    rows = videos * 3 if several else videos
    sim = np.round(rng.standard_normal((rows, videos)), 1)  # forced ties
    t = torch.from_numpy(sim).to(dtype)
    host = t.double().numpy()
    for chunk in (1, 7, 1024):
        np.testing.assert_array_equal(_native.ranks_t2v_tensor(t, c2v, chunk), _native.ranks_t2v(host, c2v))
        np.testing.assert_array_equal(_native.ranks_v2t_tensor(t, c2v, chunk), _native.ranks_v2t(host, c2v))
