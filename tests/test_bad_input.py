"""Issue 18 item 7: the bad-input suite. Every subcommand x {missing, unreadable,
unwritable, wrong kind, zero, negative, huge} exits non-zero with one error line naming
the flag or file, last on stderr (``dgl-rs COMMAND: ...``; before it only argparse's usage
or the log of what ran), no traceback, and never changes, removes or leaves a file: every
file and folder under the case's folder and the shared inputs keeps its bytes and mtime,
and nothing new appears.

Each case calls ``dgl_rs.cli.main(argv)`` in-process on tiny inputs (the bundled
``synthetic-tiny`` CLIP, 2-frame videos, ``--dataset synthetic`` with 4 videos) and names
what its error line must mention. Running as root, permissions do not stop reads or
writes, so 'unreadable' is a folder where a file belongs and 'unwritable' is a path under
a regular file (which cannot be created); otherwise they are a ``chmod 000`` file and a
path in a read-only folder.

The combinations that have no input to break (:data:`NOT_APPLICABLE`) are listed with the
reason, and the one 'huge' value that is not an error (``search -k``) is tested to work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS, load_clip
from dgl_rs.cli import build_parser, main
from dgl_rs.data import write_synthetic_videos
from dgl_rs.factory import build_method, runs

from test_official import released_prompts, write_released

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TINY = ["--model", "synthetic-tiny", "--pretrained", "synthetic-tiny"]
SYN = ["--dataset", "synthetic", "--synthetic-videos", "4", "--synthetic-eval-videos", "4", "--num-frames", "2",
       "--workers", "0"]
QUIET = ["--device", "cpu", "--no-progress"]
HUGE_T = 10**7  # frames per video: 490 GB of 64x64 frames alone, beyond any machine
HUGE_N = 10**9  # videos per batch, stills per pool, ...

KINDS = ("missing", "unreadable", "unwritable", "wrong-kind", "zero", "negative", "huge")
#: Combinations with nothing to break, and why.
NOT_APPLICABLE = {
    ("search", "unwritable"): "search writes nothing",
    ("search", "huge"): "-k above the index size lists every video (test_search_huge_k_lists_everything)",
    ("methods", "unreadable"): "methods reads no file",
    ("methods", "unwritable"): "methods writes nothing",
    ("pretrain-synthetic", "missing"): "pretrain-synthetic reads no file",
    ("estimate", "unreadable"): "estimate reads no file but --model's config (the missing case)",
    ("estimate", "huge"): "a huge batch is estimated, not refused or allocated: marked 'none (> 192 GB)' "
                          "(test_estimate.py)",
    ("pretrain-synthetic", "unreadable"): "pretrain-synthetic reads no file",
    ("claims", "zero"): "claims takes no number",
    ("claims", "negative"): "claims takes no number",
    ("claims", "huge"): "claims takes no number",
}


@dataclass(frozen=True)
class World:
    """The inputs every case shares (read-only: each case checks they stay as they are)."""

    root: Path
    videos: Path  # 2 mp4 files (2 frames of 64x64) + captions.csv
    run: Path  # a run folder: prompts.safetensors (dgl-linear, T=2) + model.json
    index: Path  # an index of `videos` made by `dgl-rs encode`
    official: Path  # a checkpoint in the layout released with the DGL paper

    @property
    def video(self) -> Path:
        return self.videos / "static_0000.mp4"

    @property
    def prompts(self) -> Path:
        return self.run / runs.PROMPTS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    write_synthetic_videos(root / "videos", split="static", num_videos=2, num_frames=2, seed=1)
    clip = load_clip("synthetic-tiny", "synthetic-tiny")[0]
    (root / "run").mkdir()
    runs.export_prompts(build_method(clip, "dgl-linear", num_frames=2), root / "run" / runs.PROMPTS,
                        "synthetic-tiny", "synthetic-tiny")
    sd = {k: v.clone() for k, v in clip.state_dict().items()}
    write_released(root / "ckpt.best.pth.tar", sd, released_prompts("linear", 4, 128, 64))
    w = World(root, root / "videos", root / "run", root / "index", root / "ckpt.best.pth.tar")
    assert main([str(a) for a in ("encode", w.videos, "--prompts", w.run, "--out", w.index, *QUIET)]) == 0
    return w


# ------------------------------------------------------------------------ bad inputs
def junk(t: Path, name: str) -> Path:
    """A file of random bytes named like the file expected."""
    path = t / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def existing(t: Path, name: str, text: str = "the user's own notes\n") -> Path:
    path = t / name
    path.write_text(text)
    return path


def unreadable(t: Path, source: Path, name: str) -> Path:
    """A copy of ``source`` nobody may read; as root, who reads anything, a folder."""
    path = t / name
    if ROOT:
        path.mkdir()
    else:
        shutil.copyfile(source, path)
        path.chmod(0)
    return path


def unwritable(t: Path, name: str) -> Path:
    """A destination that cannot be written: in a read-only folder; as root, under a
    regular file (nothing can be created there)."""
    if ROOT:
        return existing(t, "file.txt") / name
    folder = t / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return folder / name


# ----------------------------------------------------------------- each command's argv
def train(w, t, *extra):
    return ["train", *SYN, *TINY, *QUIET, "--epochs", "1", "--batch-size", "2", "--no-tensorboard",
            "--output-dir", t / "runs", "--name", "r", *extra]


def eval_(w, t, *extra):
    return ["eval", *SYN, "--prompts", w.run, *QUIET, "--out", t / "results.json", *extra]


def encode(w, t, *extra, video_dir=None):
    return ["encode", video_dir or w.videos, "--prompts", w.run, "--out", t / "index", *QUIET, *extra]


def prepare(w, t, *extra, video_dir=None):
    return ["prepare", video_dir or w.videos, "--out", t / "cache", "--workers", "0", "--no-progress", *extra]


def _cache_with(t: Path, make) -> Path:
    """A folder ``cache`` holding what ``make(folder)`` puts there."""
    (t / "cache").mkdir()
    make(t / "cache")
    return t / "cache"


def search(w, t, *extra, index=None):
    return ["search", index or w.index, "a red circle", "--device", "cpu", *extra]


def pretrain(w, t, *extra):
    return ["pretrain-synthetic", "--out", t / "tiny.safetensors", "--steps", "1", "--batch-size", "4",
            "--pool-size", "8", "--eval-samples", "0", "--no-progress", *extra]


def bench(command):
    def argv(w, t, *extra):
        return [command, "--methods", "vpt", "--videos", "4", "--eval-videos", "4", "--epochs", "1",
                "--num-frames", "2", "--batch-size", "2", "--output-dir", t / "bench", "--device", "cpu",
                "--no-progress", *extra]
    return argv


def methods(w, t, *extra):
    return ["methods", "--model", "synthetic-tiny", *extra]


def estimate(w, t, *extra):
    return ["estimate", "--methods", "dgl-linear", "--model", "synthetic-tiny", "--batch-size", "2",
            "--num-frames", "2", *extra]


def explain(w, t, *extra, video=None):
    return ["explain", video or w.video, "a red circle", "--prompts", w.run, "--out", t / "fig.png",
            "--device", "cpu", *extra]


def convert(w, t, *extra, checkpoint=None, out=None):
    return ["convert", checkpoint or w.official, out or t / "out.safetensors", *extra]


def claims(w, t, *extra, results=None):
    """``dgl-rs claims`` on a small valid benchmark document (or ``results``)."""
    if results is None:
        results = t / "benchmark.json"
        results.write_text(json.dumps({"setup": {"world": "shifted"}, "runs": {}}))
    return ["claims", results, *extra]


def case(command, kind, what, build, expect, marks=()):
    return pytest.param(build, expect, id=f"{command}-{kind}-{what}", marks=marks)


def index_with(t: Path, w: World, name: str, make) -> Path:
    """A copy of the shared index whose file ``name`` is ``make(t, path)``'s."""
    index = t / "index-copy"
    shutil.copytree(w.index, index)
    (index / name).unlink()
    make(index, name)
    return index


BENCH_CASES = [
    c for command in ("benchmark", "demo") for c in (
        case(command, "missing", "pretrained", lambda w, t, b=bench(command): b(w, t, "--pretrained", t / "no.safetensors"),
             "no.safetensors"),
        case(command, "unreadable", "pretrained", lambda w, t, b=bench(command): b(
            w, t, "--pretrained", unreadable(t, SYNTHETIC_TINY_WEIGHTS, "w.safetensors")), "w.safetensors"),
        case(command, "unwritable", "output-dir", lambda w, t, b=bench(command): b(
            w, t, "--output-dir", unwritable(t, "bench")), "--output-dir"),
        case(command, "wrong-kind", "pretrained", lambda w, t, b=bench(command): b(
            w, t, "--pretrained", junk(t, "junk.safetensors")), "junk.safetensors"),
        case(command, "wrong-kind", "methods", lambda w, t, b=bench(command): b(w, t, "--methods", "nope"), "nope"),
        case(command, "zero", "epochs", lambda w, t, b=bench(command): b(w, t, "--epochs", "0"), "--epochs"),
        case(command, "zero", "videos", lambda w, t, b=bench(command): b(w, t, "--videos", "0"), "--videos"),
        case(command, "negative", "lr-factors", lambda w, t, b=bench(command): b(w, t, "--lr-factors", "-1"),
             "--lr-factors"),
        case(command, "negative", "batch-size", lambda w, t, b=bench(command): b(w, t, "--batch-size", "-2"),
             "--batch-size"),
        case(command, "huge", "num-frames", lambda w, t, b=bench(command): b(w, t, "--num-frames", HUGE_T),
             "GiB"),
        case(command, "huge", "batch-size", lambda w, t, b=bench(command): b(w, t, "--batch-size", HUGE_N),
             "batch"),
    )
]

CASES = [
    # train
    case("train", "missing", "frame-cache", lambda w, t: train(
        w, t, "--dataset", "folder", "--data-root", w.videos, "--frame-cache", t / "no-cache"), "no-cache"),
    case("train", "wrong-kind", "frame-cache-synthetic", lambda w, t: train(w, t, "--frame-cache", w.index),
         "--frame-cache"),
    case("train", "missing", "resume", lambda w, t: train(w, t, "--resume", t / "no.safetensors"), "no.safetensors"),
    case("train", "missing", "pretrained", lambda w, t: train(w, t, "--pretrained", t / "no.safetensors"),
         "no.safetensors"),
    case("train", "missing", "data-root", lambda w, t: train(w, t, "--dataset", "folder", "--data-root", t / "no"),
         "no"),
    case("train", "unreadable", "pretrained", lambda w, t: train(
        w, t, "--pretrained", unreadable(t, SYNTHETIC_TINY_WEIGHTS, "w.safetensors")), "w.safetensors"),
    case("train", "unreadable", "train-annotations", lambda w, t: train(
        w, t, "--dataset", "folder", "--data-root", w.videos, "--eval-annotations", w.videos / "captions.csv",
        "--train-annotations", unreadable(t, w.videos / "captions.csv", "train.csv")), "train.csv"),
    case("train", "unreadable", "resume", lambda w, t: train(
        w, t, "--resume", unreadable(t, w.prompts, "step_00000001.safetensors")), "step_00000001.safetensors"),
    case("train", "unwritable", "output-dir", lambda w, t: train(w, t, "--output-dir", unwritable(t, "runs")),
         "--output-dir"),
    case("train", "wrong-kind", "pretrained", lambda w, t: train(w, t, "--pretrained", junk(t, "junk.pt")),
         "junk.pt"),
    case("train", "wrong-kind", "resume", lambda w, t: train(w, t, "--resume", w.prompts), "prompts.safetensors"),
    case("train", "wrong-kind", "run-folder", lambda w, t: train(w, t, "--output-dir", t, "--name", existing(
        t, "notes.txt").name), "notes.txt"),
    case("train", "wrong-kind", "data-root", lambda w, t: train(w, t, "--dataset", "folder", "--data-root", w.video),
         "static_0000.mp4"),
    case("train", "zero", "epochs", lambda w, t: train(w, t, "--epochs", "0"), "--epochs"),
    case("train", "zero", "batch-size", lambda w, t: train(w, t, "--batch-size", "0"), "--batch-size"),
    case("train", "zero", "num-frames", lambda w, t: train(w, t, "--num-frames", "0"), "--num-frames"),
    case("train", "negative", "lr", lambda w, t: train(w, t, "--lr", "-1"), "--lr"),
    case("train", "negative", "workers", lambda w, t: train(w, t, "--workers", "-1"), "--workers"),
    case("train", "huge", "num-frames", lambda w, t: train(w, t, "--num-frames", HUGE_T), "GiB"),
    case("train", "huge", "batch-size", lambda w, t: train(w, t, "--batch-size", HUGE_N), "batch"),
    # eval
    case("eval", "missing", "frame-cache", lambda w, t: eval_(
        w, t, "--dataset", "folder", "--data-root", w.videos, "--frame-cache", t / "no-cache"), "no-cache"),
    case("eval", "missing", "prompts", lambda w, t: eval_(w, t, "--prompts", t / "no.safetensors"), "no.safetensors"),
    case("eval", "missing", "pretrained", lambda w, t: eval_(w, t, "--pretrained", t / "no.pt"), "no.pt"),
    case("eval", "unreadable", "prompts", lambda w, t: eval_(
        w, t, "--prompts", unreadable(t, w.prompts, "p.safetensors")), "p.safetensors"),
    case("eval", "unwritable", "out", lambda w, t: eval_(w, t, "--out", unwritable(t, "results.json")), "--out"),
    case("eval", "wrong-kind", "prompts", lambda w, t: eval_(w, t, "--prompts", junk(t, "junk.safetensors")),
         "junk.safetensors"),
    case("eval", "wrong-kind", "pretrained", lambda w, t: eval_(w, t, "--pretrained", junk(t, "junk.pt")), "junk.pt"),
    case("eval", "wrong-kind", "out", lambda w, t: eval_(w, t, "--out", existing(t, "notes.json")), "notes.json"),
    case("eval", "zero", "eval-batch-size", lambda w, t: eval_(w, t, "--eval-batch-size", "0"), "--eval-batch-size"),
    case("eval", "zero", "num-frames", lambda w, t: eval_(w, t, "--num-frames", "0"), "--num-frames"),
    case("eval", "negative", "eval-limit", lambda w, t: eval_(w, t, "--eval-limit", "-1"), "--eval-limit"),
    case("eval", "negative", "workers", lambda w, t: eval_(w, t, "--workers", "-1"), "--workers"),
    case("eval", "huge", "num-frames", lambda w, t: eval_(w, t, "--num-frames", HUGE_T), "GiB"),
    case("eval", "huge", "eval-batch-size", lambda w, t: eval_(w, t, "--eval-batch-size", HUGE_N),
         "--eval-batch-size"),
    # encode
    case("encode", "missing", "video-dir", lambda w, t: encode(w, t, video_dir=t / "no"), "no"),
    case("encode", "missing", "prompts", lambda w, t: encode(w, t, "--prompts", t / "no.safetensors"),
         "no.safetensors"),
    case("encode", "unreadable", "prompts", lambda w, t: encode(
        w, t, "--prompts", unreadable(t, w.prompts, "p.safetensors")), "p.safetensors"),
    case("encode", "unwritable", "out", lambda w, t: encode(w, t, "--out", unwritable(t, "index")), "--out"),
    case("encode", "wrong-kind", "video-dir", lambda w, t: encode(w, t, video_dir=w.video), "static_0000.mp4"),
    case("encode", "wrong-kind", "out", lambda w, t: encode(w, t, "--out", existing(t, "notes.txt")), "notes.txt"),
    case("encode", "wrong-kind", "prompts", lambda w, t: encode(w, t, "--prompts", junk(t, "junk.safetensors")),
         "junk.safetensors"),
    case("encode", "zero", "batch-size", lambda w, t: encode(w, t, "--batch-size", "0"), "--batch-size"),
    case("encode", "zero", "num-frames", lambda w, t: encode(w, t, "--num-frames", "0"), "--num-frames"),
    case("encode", "negative", "workers", lambda w, t: encode(w, t, "--workers", "-1"), "--workers"),
    case("encode", "negative", "num-frames", lambda w, t: encode(w, t, "--num-frames", "-2"), "--num-frames"),
    case("encode", "huge", "num-frames", lambda w, t: encode(w, t, "--num-frames", HUGE_T), "GiB"),
    case("encode", "huge", "batch-size", lambda w, t: encode(w, t, "--batch-size", HUGE_N), "--batch-size"),
    case("encode", "missing", "frame-cache", lambda w, t: encode(w, t, "--frame-cache", t / "no-cache"), "no-cache"),
    # prepare
    case("prepare", "missing", "video-dir", lambda w, t: prepare(w, t, video_dir=t / "no"), "no"),
    case("prepare", "missing", "data-root", lambda w, t: ["prepare", "--dataset", "msrvtt", "--data-root", t / "nope",
                                                          "--out", t / "cache"], "nope"),
    case("prepare", "unreadable", "manifest", lambda w, t: prepare(
        w, t, "--out", _cache_with(t, lambda c: unreadable(c, w.prompts, "manifest.json"))), "cache"),
    case("prepare", "unwritable", "out", lambda w, t: prepare(w, t, "--out", unwritable(t, "cache")), "--out"),
    case("prepare", "wrong-kind", "video-dir", lambda w, t: prepare(w, t, video_dir=w.video), "static_0000.mp4"),
    case("prepare", "wrong-kind", "out", lambda w, t: prepare(w, t, "--out", _folder(t, "mine")), "mine"),
    case("prepare", "wrong-kind", "manifest", lambda w, t: prepare(
        w, t, "--out", _cache_with(t, lambda c: junk(c, "manifest.json"))), "manifest.json"),
    case("prepare", "zero", "fps", lambda w, t: prepare(w, t, "--fps", "0"), "--fps"),
    case("prepare", "zero", "videos-per-shard", lambda w, t: prepare(w, t, "--videos-per-shard", "0"),
         "--videos-per-shard"),
    case("prepare", "negative", "size", lambda w, t: prepare(w, t, "--size", "-224"), "--size"),
    case("prepare", "negative", "workers", lambda w, t: prepare(w, t, "--workers", "-1"), "--workers"),
    case("prepare", "huge", "size", lambda w, t: prepare(w, t, "--size", HUGE_N), "--size"),
    case("prepare", "huge", "quality", lambda w, t: prepare(w, t, "--quality", "101"), "--quality"),
    # search
    case("search", "missing", "index", lambda w, t: search(w, t, index=t / "no"), "no"),
    case("search", "unreadable", "index-json", lambda w, t: search(w, t, index=index_with(
        t, w, "index.json", lambda i, n: unreadable(i, w.index / n, n))), "index.json"),
    case("search", "wrong-kind", "index-file", lambda w, t: search(w, t, index=w.video), "static_0000.mp4"),
    case("search", "wrong-kind", "run-folder", lambda w, t: search(w, t, index=w.run), "run"),
    case("search", "wrong-kind", "embeddings", lambda w, t: search(w, t, index=index_with(
        t, w, "embeddings.npy", junk)), "embeddings.npy"),
    case("search", "zero", "k", lambda w, t: search(w, t, "-k", "0"), "-k"),
    case("search", "zero", "query", lambda w, t: ["search", w.index, " "], "QUERY"),
    case("search", "negative", "k", lambda w, t: search(w, t, "-k", "-3"), "-k"),
    # pretrain-synthetic
    case("pretrain-synthetic", "unwritable", "out", lambda w, t: pretrain(
        w, t, "--out", unwritable(t, "tiny.safetensors")), "--out"),
    case("pretrain-synthetic", "wrong-kind", "out-suffix", lambda w, t: pretrain(w, t, "--out", t / "tiny.json"),
         "--out"),
    case("pretrain-synthetic", "wrong-kind", "out-folder", lambda w, t: pretrain(
        w, t, "--out", _folder(t, "tiny.safetensors"), "--overwrite"), "tiny.safetensors"),
    case("pretrain-synthetic", "wrong-kind", "out-exists", lambda w, t: pretrain(
        w, t, "--out", existing(t, "tiny.safetensors")), "tiny.safetensors"),
    case("pretrain-synthetic", "zero", "steps", lambda w, t: pretrain(w, t, "--steps", "0"), "--steps"),
    case("pretrain-synthetic", "negative", "lr", lambda w, t: pretrain(w, t, "--lr", "-1"), "--lr"),
    case("pretrain-synthetic", "huge", "batch-size", lambda w, t: pretrain(w, t, "--batch-size", HUGE_N),
         "--batch-size"),
    case("pretrain-synthetic", "huge", "pool-size", lambda w, t: pretrain(w, t, "--pool-size", HUGE_N),
         "--pool-size"),
    # benchmark, demo
    *BENCH_CASES,
    # methods
    # estimate
    case("estimate", "missing", "model", lambda w, t: estimate(w, t, "--model", f"local-dir:{t / 'no'}"), "no"),
    case("estimate", "unwritable", "json", lambda w, t: estimate(w, t, "--json", unwritable(t, "e.json")),
         "--json"),
    case("estimate", "wrong-kind", "methods", lambda w, t: estimate(w, t, "--methods", "nope"), "nope"),
    case("estimate", "wrong-kind", "precision", lambda w, t: estimate(w, t, "--precision", "fp8"), "--precision"),
    case("estimate", "zero", "batch-size", lambda w, t: estimate(w, t, "--batch-size", "0"), "--batch-size"),
    case("estimate", "negative", "num-frames", lambda w, t: estimate(w, t, "--num-frames", "-1"), "--num-frames"),
    case("methods", "missing", "model", lambda w, t: methods(w, t, "--model", f"local-dir:{t / 'no'}"), "no"),
    case("methods", "wrong-kind", "model", lambda w, t: methods(w, t, "--model", "no-such-model"), "no-such-model"),
    case("methods", "wrong-kind", "options", lambda w, t: methods(w, t, "--options", "nope"), "nope"),
    case("methods", "zero", "num-frames", lambda w, t: methods(w, t, "--num-frames", "0"), "--num-frames"),
    case("methods", "negative", "num-frames", lambda w, t: methods(w, t, "--num-frames", "-1"), "--num-frames"),
    case("methods", "huge", "num-frames", lambda w, t: methods(w, t, "--num-frames", HUGE_T), "GiB"),
    # explain
    case("explain", "missing", "video", lambda w, t: explain(w, t, video=t / "no.mp4"), "no.mp4"),
    case("explain", "missing", "prompts", lambda w, t: explain(w, t, "--prompts", t / "no.safetensors"),
         "no.safetensors"),
    case("explain", "unreadable", "video", lambda w, t: explain(w, t, video=unreadable(t, w.video, "v.mp4")),
         "v.mp4"),
    case("explain", "unwritable", "out", lambda w, t: explain(w, t, "--out", unwritable(t, "fig.png")), "--out"),
    case("explain", "wrong-kind", "video", lambda w, t: explain(w, t, video=junk(t, "junk.mp4")), "junk.mp4"),
    case("explain", "wrong-kind", "prompts", lambda w, t: explain(w, t, "--prompts", junk(t, "junk.safetensors")),
         "junk.safetensors"),
    case("explain", "wrong-kind", "out-suffix", lambda w, t: explain(w, t, "--out", t / "fig.xyz"), "xyz"),
    case("explain", "wrong-kind", "out-exists", lambda w, t: explain(w, t, "--out", existing(t, "fig.png")),
         "--overwrite"),
    case("explain", "wrong-kind", "out-folder", lambda w, t: explain(
        w, t, "--out", _folder(t, "fig.png"), "--overwrite"), "fig.png"),
    case("explain", "zero", "dpi", lambda w, t: explain(w, t, "--dpi", "0"), "--dpi"),
    case("explain", "zero", "caption", lambda w, t: ["explain", w.video, " ", "--prompts", w.run, "--out",
                                                     t / "fig.png"], "CAPTION"),
    case("explain", "negative", "dpi", lambda w, t: explain(w, t, "--dpi", "-5"), "--dpi"),
    case("explain", "negative", "layer", lambda w, t: explain(w, t, "--layer", "-100"), "layer"),
    case("explain", "huge", "dpi", lambda w, t: explain(w, t, "--dpi", 10**6), "--dpi"),
    case("explain", "huge", "layer", lambda w, t: explain(w, t, "--layer", 10**6), "layer"),
    case("explain", "huge", "query", lambda w, t: explain(w, t, "--query", 10**6), "query"),
    # claims
    case("claims", "missing", "results", lambda w, t: claims(w, t, results=t / "no.json"), "no.json"),
    case("claims", "unreadable", "results", lambda w, t: claims(
        w, t, results=unreadable(t, claims(w, t)[1], "b.json")), "b.json"),
    case("claims", "unwritable", "out", lambda w, t: claims(w, t, "--out", unwritable(t, "claims")), "--out"),
    case("claims", "wrong-kind", "results", lambda w, t: claims(w, t, results=junk(t, "junk.json")), "junk.json"),
    case("claims", "wrong-kind", "results-json", lambda w, t: claims(w, t, results=existing(t, "notes.json", "[]")),
         "notes.json"),
    # convert
    case("convert", "missing", "checkpoint", lambda w, t: convert(w, t, checkpoint=t / "no.pth.tar"), "no.pth.tar"),
    case("convert", "unreadable", "checkpoint", lambda w, t: convert(
        w, t, checkpoint=unreadable(t, w.official, "c.pth.tar")), "c.pth.tar"),
    case("convert", "unwritable", "out", lambda w, t: convert(w, t, out=unwritable(t, "out.safetensors")), "OUT"),
    case("convert", "wrong-kind", "checkpoint", lambda w, t: convert(w, t, checkpoint=junk(t, "junk.pth.tar")),
         "junk.pth.tar"),
    case("convert", "wrong-kind", "checkpoint-prompts", lambda w, t: convert(w, t, checkpoint=w.prompts),
         "prompts.safetensors"),
    case("convert", "wrong-kind", "out-suffix", lambda w, t: convert(w, t, out=t / "out.json"), "out.json"),
    case("convert", "wrong-kind", "out-exists", lambda w, t: convert(w, t, out=existing(t, "out.safetensors")),
         "--overwrite"),
    case("convert", "zero", "num-frames", lambda w, t: convert(w, t, "--num-frames", "0"), "--num-frames"),
    case("convert", "negative", "context-length", lambda w, t: convert(w, t, "--context-length", "-1"),
         "--context-length"),
    case("convert", "huge", "num-frames", lambda w, t: convert(w, t, "--num-frames", HUGE_T), "GiB"),
    case("convert", "huge", "context-length", lambda w, t: convert(w, t, "--context-length", 10**6),
         "context"),
]


def _folder(t: Path, name: str) -> Path:
    (t / name).mkdir()
    (t / name / "keep.txt").write_text("mine\n")
    return t / name


# -------------------------------------------------------------------------- the check
def snapshot(*folders: Path) -> dict:
    """Every file and folder under ``folders``: its bytes (files) and mtime."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            st = p.lstat()
            readable = p.is_file() and os.access(p, os.R_OK)
            out[str(p)] = (p.read_bytes() if readable else None, st.st_mtime_ns, stat.S_IFMT(st.st_mode))
    return out


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """Each case logs to its own captured stderr: drop the handlers an earlier ``main``
    left on the ``dgl_rs`` logger (they hold a closed stream)."""
    yield
    root = logging.getLogger("dgl_rs")
    for handler in list(root.handlers):
        root.removeHandler(handler)


def run_cli(argv, capsys) -> tuple[object, str]:
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: status 2
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("build,expect", CASES)
def test_bad_input_is_one_line_and_changes_nothing(build, expect, world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = build(world, tmp_path)
    before = snapshot(world.root, tmp_path)
    rc, err = run_cli(argv, capsys)
    assert rc not in (0, None), f"exit status {rc}\n{err}"
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith(f"dgl-rs {argv[0]}"), err
    assert expect in last, f"{expect!r} not named in: {last}"
    assert snapshot(world.root, tmp_path) == before, "a file was changed, removed or left behind"


def test_search_huge_k_lists_everything(world, capsys):
    """Not an error: like ``head -n``, a -k above the index size gives every video."""
    rc, _ = run_cli(["search", world.index, "a red circle", "-k", 10**20, "--json"], capsys)
    assert rc == 0


def test_every_command_and_kind_is_a_case_or_not_applicable():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    ids = {p.id for p in CASES}
    for command in sub.choices:
        for kind in KINDS:
            covered = any(i.startswith(f"{command}-{kind}-") for i in ids)
            assert covered != ((command, kind) in NOT_APPLICABLE), (command, kind)
