"""Fuzz test of the public API (issue 9): random, mostly invalid arguments and damaged
files for every public entry point. The only exceptions allowed are the documented ones
(:mod:`dgl_rs.errors`): ``TypeError``, ``ValueError`` (``DglShapeError``,
``DglDtypeError``, ``DglDeviceError`` and ``UsageError`` are ValueErrors),
``FileNotFoundError`` and ``VideoDecodeError``. Anything else (an ``AttributeError``, a
``KeyError``, a ``RuntimeError`` from torch, a ``SafetensorError``, a Rust panic) fails
the test with hypothesis' smallest example.

Bounded: about 800 examples in all, about 15 s on 2 cores; no example database is written
(each run draws new examples). ``DGL_RS_FUZZ_SCALE=10`` fuzzes longer.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dgl_rs
from dgl_rs.factory import checkpoints as ckpt
from dgl_rs import metrics
from dgl_rs.backbone.loading import load_clip
from dgl_rs.data import read_dataset, read_folder
from dgl_rs.util.errors import UsageError, VideoDecodeError
from dgl_rs.factory import load_method
from dgl_rs.services.index import load_index, save_index

# hypothesis casts values like 1e38 into float16 arrays (overflow to inf: wanted here)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

DOCUMENTED = (TypeError, ValueError, FileNotFoundError, VideoDecodeError)
def fuzz(examples: int) -> settings:
    """Settings of one fuzz test; ``DGL_RS_FUZZ_SCALE=10`` runs ten times the examples."""
    examples = max(1, round(examples * float(os.environ.get("DGL_RS_FUZZ_SCALE", "1"))))
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a documented exception is an answer, any other fails."""
    try:
        return fn(*args, **kwargs)
    except DOCUMENTED:
        return None


# Values of the wrong type, out of range, or fine: what a user might pass anywhere.
anything = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.sampled_from(["1", "44", b"x", 10**12, -(10**12), 1e300, [1.7, 1.2]]),
    st.lists(st.integers(-2, 9), max_size=3), st.tuples(st.integers(-1, 9), st.integers(-1, 9)),
)
DTYPES = [np.float16, np.float32, np.float64, np.int64, np.bool_]
special = st.sampled_from([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-40])


def arrays(max_dims=3, max_side=6):
    def elements(dtype):
        if np.dtype(dtype).kind == "f":
            return st.one_of(st.floats(-3, 3, width=16 if dtype == np.float16 else 32), special)
        return None  # hypothesis' default elements for ints and bools

    return st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
        dt, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side),
        elements=elements(dt)))


def as_input(draw_tensor: bool, arr: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(arr)) if draw_tensor else arr


caption_maps = st.one_of(st.none(), st.lists(st.integers(-2, 7), max_size=8), arrays(max_dims=2), anything)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model, _, _ = load_clip("synthetic-tiny", "none")
    return model


# ------------------------------------------------------------------------ metrics
METRICS = {
    "ranks": lambda d, a, b: metrics.ranks(a, d.draw(caption_maps), chunk=d.draw(st.one_of(st.integers(1, 4), anything))),
    "t2v": lambda d, a, b: metrics.t2v(a, d.draw(caption_maps)),
    "v2t": lambda d, a, b: metrics.v2t(a, d.draw(caption_maps)),
    "retrieval_report": lambda d, a, b: metrics.retrieval_report(a, d.draw(caption_maps)),
    "summarize": lambda d, a, b: metrics.summarize(a),
    "dual_softmax": lambda d, a, b: metrics.dual_softmax(
        a, temperature=d.draw(st.one_of(st.floats(allow_nan=True), anything)), axis=d.draw(anything)),
    "dual_softmax_report": lambda d, a, b: metrics.dual_softmax_report(a, d.draw(caption_maps),
                                                                       temperature=d.draw(anything)),
    "qb_norm": lambda d, a, b: metrics.qb_norm(a, b, k=d.draw(anything),
                                               beta=d.draw(st.one_of(st.floats(allow_nan=True), anything))),
    "similarity": lambda d, a, b: metrics.similarity(a, b, chunk=d.draw(st.one_of(st.integers(1, 4), anything))),
    "ranks_chunked": lambda d, a, b: metrics.ranks_chunked(a, b, d.draw(caption_maps),
                                                           chunk=d.draw(st.one_of(st.integers(1, 4), anything))),
    "format_table": lambda d, a, b: metrics.format_table(d.draw(st.one_of(anything, st.dictionaries(
        st.sampled_from(["t2v", "v2t", "x"]), st.dictionaries(st.sampled_from(list(metrics.KEYS)), anything)))))
}


@fuzz(300)
@given(st.data(), st.sampled_from(sorted(METRICS)), arrays(), arrays(), st.booleans(), st.booleans())
def test_metrics(data, name, a, b, tensor_a, tensor_b):
    call(METRICS[name], data, as_input(tensor_a, a), as_input(tensor_b, b))


# ------------------------------------------------------------ text, loss, the op
@fuzz(60)
@given(st.one_of(st.text(max_size=60), st.lists(st.one_of(st.text(max_size=60), anything), max_size=4), anything),
       st.one_of(st.integers(-2, 80), anything))
def test_tokenize(texts, context_length):
    out = call(dgl_rs.tokenize, texts, context_length=context_length)
    assert out is None or (out.dtype == torch.int64 and out.shape[1] == context_length)


@fuzz(60)
@given(arrays(), st.one_of(st.none(), arrays(max_dims=2), anything), st.booleans())
def test_symmetric_infonce(logits, labels, tensor):
    labels = torch.from_numpy(np.ascontiguousarray(labels)) if isinstance(labels, np.ndarray) else labels
    call(dgl_rs.symmetric_infonce, as_input(tensor, logits) if tensor else logits, labels)


def _shape(draw, valid, spread=2):
    return tuple(max(0, v + draw(st.integers(-spread, spread))) if draw(st.booleans()) else v for v in valid)


@fuzz(80)
@given(st.data())
def test_global_local_attention(data):
    d = data.draw
    heads, g, t, length = d(st.integers(1, 2)), d(st.integers(0, 2)), d(st.integers(1, 3)), d(st.integers(1, 3))
    dim = 4 * heads
    dtype = d(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64]))
    x = torch.randn(_shape(d, (2, g + t * length, dim))).to(dtype)
    w_in, b_in = torch.randn(_shape(d, (3 * dim, dim))), torch.randn(_shape(d, (3 * dim,)))
    w_out, b_out = torch.randn(_shape(d, (dim, dim))), torch.randn(_shape(d, (dim,)))
    args = [d(st.one_of(st.just(v), anything)) for v in (heads, g, t)]
    call(dgl_rs.global_local_attention, x, w_in, b_in, w_out, b_out, *args)


# ------------------------------------------------------------------- the models
OPTIONS = ("num_global", "num_frame_prompts", "num_text_prompts", "context_length", "pool", "attention",
           "postfix", "generator", "prompt_depth", "temporal_embedding", "linear_direction", "per_frame_prompts")


@fuzz(40)
@given(st.data())
def test_dgl(clip, data):
    d = data.draw
    options = {k: d(st.one_of(anything, st.sampled_from(["global", "local", "linear", "transformer"])))
               for k in d(st.lists(st.sampled_from(OPTIONS), max_size=2, unique=True))}
    # Counts between 64 and 10**12 are legal but slow to allocate; 10**12 must be refused up front.
    options = {k: v for k, v in options.items() if not (isinstance(v, int) and 64 < abs(v) < 10**12)}
    num_frames = d(st.one_of(st.integers(1, 3), anything.filter(lambda v: not (isinstance(v, int) and 64 < v < 10**12))))
    model = call(dgl_rs.DGL, clip, num_frames=num_frames, **options)
    if model is None:
        return
    frames = torch.randn(_shape(d, (1, model.num_frames, 3, 64, 64), 1))
    call(model.encode_video, frames if d(st.booleans()) else frames.long())
    tokens = torch.randint(0, 400, _shape(d, (2, model.context_length), 3))
    call(model.encode_text, tokens if d(st.booleans()) else tokens.float())


@fuzz(30)
@given(st.sampled_from([*sorted(dgl_rs.METHODS), "nope", ""]), st.dictionaries(
    st.sampled_from([*OPTIONS, "bogus"]), st.one_of(anything, st.just(10**12)), max_size=2),
    st.one_of(st.integers(1, 3), anything))
def test_build_method(clip, name, options, num_frames):
    options = {k: v for k, v in options.items() if not (isinstance(v, int) and 64 < abs(v) < 10**12)}
    call(dgl_rs.build_method, clip, name, num_frames=num_frames, **options)


# ----------------------------------------------------------- files a user hands us
def damaged(data: bytes):
    """A strategy of damaged copies of ``data``: cut short, bytes overwritten, garbage."""
    n = len(data)
    cut = st.integers(0, n).map(lambda i: data[:i])
    flip = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
        lambda edits: bytes(_apply(bytearray(data), edits)))
    return st.one_of(cut, flip, st.binary(max_size=64), st.binary(max_size=16).map(lambda b: b + data[len(b):]))


def _apply(buf: bytearray, edits):
    for i, v in edits:
        buf[i] = v
    return buf


@pytest.fixture(scope="module")
def saved(clip, tmp_path_factory):
    """A prompts file, a checkpoint and an index, intact."""
    root = tmp_path_factory.mktemp("saved")
    model = dgl_rs.DGL(clip, num_frames=2, generator="linear", num_global=1, num_frame_prompts=1,
                       num_text_prompts=(1, 1), prompt_depth=1)
    model.save_prompts(str(root / "p.safetensors"))
    ckpt.save_checkpoint(root / "c.safetensors", model.prompt_state_dict(), {"step": 1, "config": {"a": [1, 2.5]}})
    save_index(root / "index", np.eye(2, 4, dtype=np.float32), ["a.mp4", "b.mp4"],
               {"root": str(root), "model": "synthetic-tiny", "pretrained": "none", "dgl": model.config})
    return root


@fuzz(120)
@given(st.data(), st.sampled_from(["prompts", "checkpoint", "index.json", "embeddings.npy"]))
def test_damaged_files(saved, clip, data, which):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if which == "prompts":
            (tmp / "p.safetensors").write_bytes(data.draw(damaged((saved / "p.safetensors").read_bytes())))
            call(load_method, tmp / "p.safetensors", clip)
        elif which == "checkpoint":
            (tmp / "c.safetensors").write_bytes(data.draw(damaged((saved / "c.safetensors").read_bytes())))
            call(ckpt.load_checkpoint, tmp / "c.safetensors")
        else:
            for name in ("index.json", "embeddings.npy"):
                raw = (saved / "index" / name).read_bytes()
                (tmp / name).write_bytes(data.draw(damaged(raw)) if name == which else raw)
            call(load_index, tmp)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["video", "caption", "sentences", "video_id",
                                                             "videoID", "enCap", "x"]), inner, max_size=3)),
    max_leaves=8)
csv_text = st.lists(st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=6), max_size=3),
                    max_size=4).map(lambda rows: "\n".join(",".join(r) for r in rows))


@fuzz(120)
@given(st.sampled_from(["captions.csv", "captions.jsonl", "msrvtt", "vatex", "activitynet", "lsmdc"]),
       st.one_of(json_values.map(json.dumps), csv_text, st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                 st.lists(json_values.map(json.dumps), max_size=3).map("\n".join)),
       st.booleans())
def test_annotation_readers(kind, text, valid_header):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        if kind.startswith("captions"):
            head = "video,caption\n" if valid_header and kind.endswith("csv") else ""
            (root / kind).write_bytes((head + text).encode("utf-8", "surrogatepass"))
            call(read_folder, root)
            return
        names = {"msrvtt": ["MSRVTT_train.9k.csv", "MSRVTT_data.json"], "vatex": ["vatex_training_v1.0.json"],
                 "activitynet": ["train.json"], "lsmdc": ["LSMDC16_annos_training.csv"]}[kind]
        for name in names:
            head = "video_id\n" if valid_header and name.endswith("9k.csv") else ""
            (root / name).write_text(head + text, encoding="utf-8", errors="surrogatepass")
        call(read_dataset, kind, root, "train")


def test_documented_errors_are_the_ones_raised():
    """The exceptions this module allows are the ones dgl_rs documents and exports."""
    assert issubclass(UsageError, ValueError)
    assert all(issubclass(e, ValueError) for e in (dgl_rs.DglShapeError, dgl_rs.DglDtypeError, dgl_rs.DglDeviceError))
    assert issubclass(VideoDecodeError, RuntimeError) and VideoDecodeError in DOCUMENTED
