"""QB-Norm in both directions and the DGL release's threshold variant, against numpy
references written from the QB-Norm paper's and the released evaluation script's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgl_rs import metrics as M
from dgl_rs.services.evaluate import QB_NORM, QB_NORM_RELEASED, report_from_embeddings


def ref_qb_norm(train_test, test_test, k, beta, theta):
    """The released script's ``qb_norm`` (theta = 1 is the QB-Norm paper's): an item is
    activated when it is in the top k of at least theta bank rows; a test row whose top-1
    is activated becomes exp(beta*s) / sum_bank exp(beta*bank), others are unchanged."""
    top = np.argsort(-train_test, axis=1)[:, :k].reshape(-1)
    items, counts = np.unique(top, return_counts=True)
    activated = set(items[counts >= theta].tolist())
    out = test_test.astype(np.float64).copy()
    norm = np.exp(train_test.astype(np.float64) * beta).sum(axis=0)
    for i, row in enumerate(test_test):
        if int(np.argmax(row)) in activated:
            out[i] = np.exp(row.astype(np.float64) * beta) / norm
    return out


def ref_r1(x):
    """R@1 of a square matrix whose diagonal is the right answer (rows are queries)."""
    return 100.0 * float(np.mean(np.argmax(x, axis=1) == np.arange(len(x))))


def data(n=40, bank=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    videos = unit(rng.normal(size=(n, d)))
    texts = unit(videos + 0.9 * rng.normal(size=(n, d)))  # caption i describes video i
    train_videos = unit(rng.normal(size=(bank, d)))
    train_texts = unit(train_videos + 0.9 * rng.normal(size=(bank, d)))
    # hubs: a few test videos close to many training captions
    train_texts[: bank // 3] = unit(videos[:3].repeat(bank // 9 + 1, 0)[: bank // 3] + 0.3 * rng.normal(size=(bank // 3, d)))
    return [torch.from_numpy(a.astype(np.float32)) for a in (texts, videos, train_texts, train_videos)]


@pytest.mark.parametrize("theta", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [1, 3])
def test_min_count_matches_the_released_script(k, theta):
    rng = np.random.default_rng(k * 10 + theta)
    bank, sim = rng.normal(size=(60, 12)), rng.normal(size=(9, 12))
    want = ref_qb_norm(bank, sim, k, 2.0, theta)
    got = M.qb_norm(sim, bank, k=k, beta=2.0, min_count=theta)
    normed = ~np.all(want == sim, axis=1)
    np.testing.assert_allclose(np.exp(got[normed]), want[normed], rtol=1e-10)
    np.testing.assert_array_equal(got[~normed], sim[~normed])
    if theta == 1:
        np.testing.assert_array_equal(got, M.qb_norm(sim, bank, k=k, beta=2.0))


def test_min_count_bounds():
    sim, bank = np.ones((2, 3)), np.eye(3)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="min_count"):
            M.qb_norm(sim, bank, min_count=bad)


@pytest.mark.parametrize("params", [QB_NORM, QB_NORM_RELEASED])
def test_both_directions_match_the_reference(params):
    texts, videos, train_texts, train_videos = data()
    sim = (texts @ videos.T).double().numpy()
    tb, vb = (train_texts @ videos.T).double().numpy(), (train_videos @ texts.T).double().numpy()
    k, beta, (th_t, th_v) = params["k"], params["beta"] * (100 if params is QB_NORM_RELEASED else 1), params["min_count"]
    scale = 100.0 if params is QB_NORM_RELEASED else 1.0
    rep = M.qb_norm_report(sim * scale, np.arange(len(sim)), text_bank=tb * scale, video_bank=vb * scale,
                           k=k, beta=params["beta"], min_count=params["min_count"])
    assert rep["t2v"]["R@1"] == pytest.approx(ref_r1(ref_qb_norm(tb, sim, k, beta, th_t)))
    assert rep["v2t"]["R@1"] == pytest.approx(ref_r1(ref_qb_norm(vb, sim.T, k, beta, th_v)))


def test_v2t_with_several_captions_per_video_ranks_each_video_row():
    """video->text re-scores sim.T (videos x captions), then reduces each video row over
    every video's captions (max), as the raw v2t does."""
    rng = np.random.default_rng(3)
    c2v = np.repeat(np.arange(6), 3)
    sim, vbank = rng.normal(size=(18, 6)), rng.normal(size=(30, 18))
    rep = M.qb_norm_report(sim, c2v, video_bank=vbank, beta=3.0)
    normed = ref_qb_norm(vbank, sim.T, 1, 3.0, 1)  # (videos, captions)
    per_video = np.stack([normed[:, c2v == u].max(axis=1) for u in range(6)], axis=1)  # (query video, video)
    assert rep == {"v2t": {**rep["v2t"], "R@1": pytest.approx(ref_r1(per_video))}}


def test_reports_are_separate_and_raw_is_untouched():
    texts, videos, train_texts, train_videos = data(seed=1)
    c2v = np.arange(len(texts))
    plain = report_from_embeddings(texts, videos, c2v)
    assert set(plain) == {"raw"}
    only_text = report_from_embeddings(texts, videos, c2v, bank_emb=train_texts)
    assert set(only_text["qb_norm"]) == {"t2v"} and set(only_text["qb_norm_released"]) == {"t2v"}
    both = report_from_embeddings(texts, videos, c2v, bank_emb=train_texts, video_bank_emb=train_videos,
                                  logit_scale=100.0)
    assert both["raw"] == plain["raw"]
    assert set(both) == {"raw", "qb_norm", "qb_norm_released"}
    assert set(both["qb_norm"]) == set(both["qb_norm_released"]) == {"t2v", "v2t"}
    sim = (texts @ videos.T).numpy()
    want = M.qb_norm_report(sim * 100, c2v, text_bank=(train_texts @ videos.T).numpy() * 100,
                            video_bank=(train_videos @ texts.T).numpy() * 100, **QB_NORM_RELEASED)
    for d in ("t2v", "v2t"):
        assert both["qb_norm_released"][d] == pytest.approx(want[d])


def test_synthetic_banks_come_from_the_training_split():
    from dgl_rs.services.data import build_data
    from dgl_rs.train.distributed import DistInfo
    from dgl_rs.train.params import parse_args

    cfg = parse_args(["--dataset", "synthetic", "--synthetic-split", "temporal", "--synthetic-videos", "12",
                      "--synthetic-eval-videos", "8", "--num-frames", "2", "--qb-norm"])
    pre = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    for train in (True, False):
        b = build_data(cfg, pre, train=train)
        train_specs = set(map(repr, b.video_bank.specs))
        assert len(b.video_bank) == 12 and list(b.query_bank) == [s.caption for s in b.video_bank.specs]
        assert not train_specs & set(map(repr, b.evals["temporal"].specs))  # never the test videos
