"""Issue 9: nothing wrong without an error, nothing lost, one line for every user error.

One regression test per item of the issue: commands never write over files they did not
make (2), every user error is one ``dgl-rs CMD: error: ...`` line with exit status 2
naming the file (and line) or flag (3), bounds and types at the API (4). Packaging (5) is
in ``test_build.py``, the fuzz test of the public API in ``test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import dgl_rs
from dgl_rs.factory import checkpoints as ckpt
from dgl_rs.factory import runs
from dgl_rs.util import files
from dgl_rs import metrics
from dgl_rs.backbone.loading import load_clip
from dgl_rs.cli import main
from dgl_rs.cli.eval import check_results_target
from dgl_rs.data import read_folder, write_synthetic_videos
from dgl_rs.util.errors import UsageError
from dgl_rs.factory import build_method, load_method
from dgl_rs.backbone.memory import SIZES, memory_estimate
from dgl_rs.services.index import check_index_target, save_index
from dgl_rs.train import main as train_main
from dgl_rs.factory.runs import check_run_dir

from test_train import StandInDGL, patch_standins, toy_argv

TINY = ["--model", "synthetic-tiny", "--pretrained", "none"]
QUIET = ["--device", "cpu", "--no-progress"]


def cli_error(argv) -> str:
    """Run ``dgl-rs ARGV``; it must fail with status 2 and one error line (after
    argparse's usage, for flags), no traceback. Returns that line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(list(map(str, argv)))
        except SystemExit as exc:  # argparse-style flag errors
            rc = exc.code
    text = err.getvalue()
    assert rc == 2, text
    assert "Traceback" not in text, text
    line = text.strip().splitlines()[-1]
    assert line.startswith(f"dgl-rs {argv[0]}: error: "), text
    return line


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    model, _, _ = load_clip("synthetic-tiny", "none")
    return model


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two real mp4 files (64x64, 2 frames) with a captions.csv."""
    root = tmp_path_factory.mktemp("videos")
    write_synthetic_videos(root, split="static", num_videos=2, num_frames=2, seed=1)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, clip):
    """A run folder as `dgl-rs train` leaves it: prompts.safetensors + model.json."""
    from dgl_rs.train.main import export_prompts
    from dgl_rs.train.params import parse_args

    run = tmp_path_factory.mktemp("runs") / "run"
    run.mkdir()
    model = dgl_rs.DGL(clip, num_frames=2, generator="linear", num_text_prompts=(4, 4))
    export_prompts(model, run / "prompts.safetensors", parse_args(["--dataset", "synthetic", "--pretrained", "none"]))
    return run


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 2. data loss
def test_encode_never_writes_into_a_run_folder(videos, run_dir, tmp_path):
    before = _snapshot(run_dir)
    line = cli_error(["encode", videos, "--prompts", run_dir / "prompts.safetensors", "--out", run_dir, *QUIET])
    assert "not a video index" in line and str(run_dir) in line
    assert _snapshot(run_dir) == before  # prompts.safetensors and model.json untouched
    with pytest.raises(UsageError, match="not a video index"):  # the library refuses too
        save_index(run_dir, np.zeros((1, 4), np.float32), ["a.mp4"], {})
    assert _snapshot(run_dir) == before


def test_encode_replaces_an_index_only_with_overwrite(videos, tmp_path):
    index = tmp_path / "index"
    argv = ["encode", videos, "--zero-shot", *TINY, "--num-frames", "2", "--out", index, *QUIET]
    assert main(list(map(str, argv))) == 0
    (index / ".embeddings.npy.x1.tmp").write_bytes(b"left by a killed encode")
    before = _snapshot(index)
    assert "--overwrite" in cli_error(argv)
    assert _snapshot(index) == before
    assert main(list(map(str, [*argv, "--overwrite"]))) == 0
    assert not (index / ".embeddings.npy.x1.tmp").exists()  # stray temp cleaned up
    check_index_target(tmp_path / "new", overwrite=False)  # a new folder is fine


def test_a_fresh_run_never_writes_into_a_non_empty_folder(tmp_path):
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    line = cli_error(["train", "--dataset", "synthetic", "--output-dir", tmp_path / "runs", "--name", "mine",
                      "--device", "cpu"])
    assert "already exists and is not empty" in line and "--resume latest" in line
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    # continuing (--resume latest) is allowed into a dgl-rs run folder, not into any folder
    assert "not a dgl-rs run" in check_run_dir(run, continuing=True)
    (run / "config.json").write_text("{}")
    assert check_run_dir(run, continuing=True) is None
    assert check_run_dir(tmp_path / "runs" / "new", continuing=False) is None


def test_resume_latest_without_checkpoints_cleans_stray_temps(tmp_path, monkeypatch):
    """A run killed before its first checkpoint: its folder holds config.json and temp
    files of interrupted writes; --resume latest starts it again and removes the temps."""
    patch_standins(monkeypatch)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    stray = [run / ".params.txt.k2j3.tmp", run / "checkpoints" / ".step_00000004.safetensors.a8.tmp"]
    for p in stray:
        p.write_bytes(b"half")
    assert train_main.main(toy_argv(tmp_path, "--epochs", "1", "--resume", "latest")) == 0
    assert not any(p.exists() for p in stray)
    assert (run / "prompts.safetensors").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_keep_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = files.atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_prompt_files_are_byte_reproducible(clip, tmp_path):
    torch.manual_seed(3)
    model = dgl_rs.DGL(clip, num_frames=2, generator="transformer", num_global=2)
    model.save_prompts(str(tmp_path / "a.safetensors"))
    loaded = dgl_rs.DGL.load_prompts(str(tmp_path / "a.safetensors"), clip)
    loaded.save_prompts(str(tmp_path / "b.safetensors"))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def _results(data_root, annotations, prompts="p.safetensors"):
    config = {"dataset": "folder", "data_root": str(data_root), "eval_annotations": annotations,
              "eval_limit": 0, "num_frames": 2}
    return config, {"model": "synthetic-tiny", "pretrained": "none", "prompts": prompts}


def test_eval_results_of_another_annotation_file_are_never_replaced(tmp_path):
    out = tmp_path / "eval.json"
    check_results_target(out, *_results(tmp_path, "a.csv"), overwrite=False)  # new: fine
    config, backbone = _results(tmp_path, "a.csv")
    out.write_text(json.dumps({"config": config, "backbone": backbone, "results": {}}))
    check_results_target(out, *_results(tmp_path, "a.csv"), overwrite=False)  # same evaluation
    with pytest.raises(UsageError, match="another evaluation.*'a.csv' -> 'b.csv'"):
        check_results_target(out, *_results(tmp_path, "b.csv"), overwrite=False)
    with pytest.raises(UsageError, match="another evaluation.*prompts"):
        check_results_target(out, *_results(tmp_path, "a.csv", "q.safetensors"), overwrite=False)
    check_results_target(out, *_results(tmp_path, "b.csv"), overwrite=True)
    (tmp_path / "prompts.safetensors").write_bytes(b"weights")
    with pytest.raises(UsageError, match="not a dgl-rs results file"):  # never, even with --overwrite
        check_results_target(tmp_path / "prompts.safetensors", *_results(tmp_path, "a.csv"), overwrite=True)


def test_eval_keeps_the_results_of_each_annotation_file(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = (videos / "captions.csv").read_text().splitlines()
    (videos / "first.csv").write_text("\n".join(rows[:2]) + "\n")
    (videos / "second.csv").write_text("\n".join(rows) + "\n")
    base = ["eval", "--zero-shot", "--dataset", "folder", "--data-root", str(videos), *TINY,
            "--num-frames", "2", "--workers", "0", *QUIET]
    assert main([*base, "--eval-annotations", "first.csv"]) == 0
    first = (tmp_path / "eval-folder-first-zero-shot.json").read_bytes()
    assert main([*base, "--eval-annotations", "second.csv"]) == 0
    assert (tmp_path / "eval-folder-first-zero-shot.json").read_bytes() == first
    assert json.loads((tmp_path / "eval-folder-second-zero-shot.json").read_text())["results"]["test"][
        "num_videos"] == 2
    line = cli_error([*base, "--eval-annotations", "second.csv", "--out", "eval-folder-first-zero-shot.json"])
    assert "another evaluation" in line and "--overwrite" in line
    assert (tmp_path / "eval-folder-first-zero-shot.json").read_bytes() == first


def test_pretrain_refuses_to_replace_weights(tmp_path):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"weights")
    assert "--overwrite" in cli_error(["pretrain-synthetic", "--out", out])
    assert out.read_bytes() == b"weights"


# ------------------------------------------------------ 3. one line per user error
@pytest.fixture()
def folder(tmp_path):
    """A folder dataset whose train/test files each test rewrites."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "test.csv").write_text("video,caption\na.mp4,a clip\n")
    return root


def _train_folder(root, name="run"):
    return ["train", "--dataset", "folder", "--data-root", root, *TINY, "--num-frames", "2", "--epochs", "1",
            "--output-dir", root.parent / "runs", "--name", name, "--workers", "0", "--no-tensorboard", *QUIET]


@pytest.mark.parametrize("name,content,expected", [
    ("train.csv", b"video,caption\na.mp4\n", "train.csv:2: no 'caption' value"),
    ("train.csv", b"video,caption\na.mp4,caf\xe9\n", "train.csv:2: not UTF-8"),
    ("train.csv", b"vid,cap\na.mp4,x\n", "train.csv: expected a CSV header with columns video, caption"),
    ("train.jsonl", b'{"video": "a.mp4", "caption": "x"}\n{bad\n', "train.jsonl:2: not valid JSON"),
    ("train.jsonl", b'{"video": "a.mp4", "caption": null}\n', "train.jsonl:1: 'caption' must be a string, got null"),
    ("train.jsonl", b'["a.mp4", "x"]\n', "train.jsonl:1: expected a JSON object"),
    ("train.jsonl", b'{"video": "a.mp4"}\n', "train.jsonl:1: no 'caption' key"),
])
def test_malformed_annotation_files_are_named_with_their_line(folder, name, content, expected):
    (folder / name).write_bytes(content)
    assert expected in cli_error(_train_folder(folder))
    assert not (folder.parent / "runs").exists()  # failed before making the run folder


def test_jsonl_null_caption_is_an_error_not_the_text_none(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": null}\n')
    with pytest.raises(UsageError, match="captions.jsonl:1"):
        read_folder(tmp_path)


@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "inf", "--lr must be finite and > 0"),
    ("--lr", "nan", "--lr must be finite"),
    ("--beta1", "1.5", "--beta1 must be finite and >= 0 and < 1"),
    ("--beta2", "-0.1", "--beta2"),
    ("--eps", "-1", "--eps must be finite and > 0"),
    ("--warmup", "nan", "--warmup must be finite and >= 0"),
    ("--wd", "inf", "--wd"),
    ("--grad-clip", "-1", "--grad-clip"),
    ("--context-length", "100", "context_length"),
    ("--num-frames", "0", "--num-frames"),
])
def test_bad_train_flags_are_one_line_naming_the_flag(tmp_path, flag, value, expected):
    line = cli_error(["train", "--dataset", "synthetic", *TINY, "--output-dir", tmp_path, "--device", "cpu",
                      flag, value])
    assert expected in line
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "eval", "encode"])
def test_device_cuda_without_cuda(tmp_path, command, videos):
    argv = {"train": ["train", "--dataset", "synthetic", "--output-dir", tmp_path],
            "eval": ["eval", "--zero-shot", "--dataset", "synthetic", *TINY],
            "encode": ["encode", videos, "--zero-shot", *TINY, "--out", tmp_path / "i"]}[command]
    assert "--device cuda: CUDA is not available" in cli_error([*argv, "--device", "cuda"])


def test_bad_device_names(tmp_path):
    assert "not a device" in cli_error(["train", "--dataset", "synthetic", "--output-dir", tmp_path,
                                        "--device", "gpu0"])


@pytest.mark.parametrize("frames", ["-3", "0"])
def test_encode_num_frames_below_one(videos, tmp_path, frames):
    line = cli_error(["encode", videos, "--zero-shot", *TINY, "--num-frames", frames, "--out", tmp_path / "i"])
    assert f"--num-frames must be >= 1, got {frames}" in line


def test_a_folder_of_broken_videos(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (root / name).write_text("not a video")
    line = cli_error(["encode", root, "--zero-shot", *TINY, "--num-frames", "2", "--out", tmp_path / "i", *QUIET])
    assert "none of the 2 videos" in line and str(root) in line
    (root / "test.csv").write_text("video,caption\na.mp4,one\nb.mp4,two\n")
    eval_argv = ["eval", "--zero-shot", "--dataset", "folder", "--data-root", root, *TINY, "--num-frames", "2",
                 "--workers", "0", *QUIET]
    assert "a.mp4" in cli_error(eval_argv)  # evaluation stops at the first broken video ...
    assert "all 2 test videos were unreadable" in cli_error([*eval_argv, "--on-broken", "skip"])  # ... or skips all


def test_training_on_broken_videos_only(folder):
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_text("not a video")
    (folder / "train.csv").write_text("video,caption\na.mp4,one\nb.mp4,two\n")
    line = cli_error([*_train_folder(folder), "--batch-size", "2"])
    assert "every training video was unreadable (2 skipped" in line


def test_search_errors(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    (index / "index.json").write_text(json.dumps({"format": "dgl-rs-index/1"}))
    assert "no 'videos' list" in cli_error(["search", index, "a dog"])
    (index / "index.json").write_text('{"format": "dgl-rs-index/1",')
    assert "index.json:1" in cli_error(["search", index, "a dog"])
    assert "empty query" in cli_error(["search", index, "  "])
    assert "-k must be >= 1" in cli_error(["search", index, "a dog", "-k", "0"])


def test_damaged_prompt_files_are_named(run_dir, tmp_path):
    """A truncated prompts file (with its model.json, or alone) is named as damaged; it
    is never taken for the default backbone, whose weights would need a download."""
    data = (run_dir / "prompts.safetensors").read_bytes()
    for cut in (len(data) // 2, 40, 0):
        bad = tmp_path / f"cut{cut}" / "prompts.safetensors"
        bad.parent.mkdir()
        bad.write_bytes(data[:cut])
        line = cli_error(["eval", "--prompts", bad, "--dataset", "synthetic", *QUIET])
        assert str(bad) in line and "could not fetch" not in line
    bad = tmp_path / "json" / "prompts.safetensors"  # an intact prompts file, a damaged model.json
    bad.parent.mkdir()
    bad.write_bytes(data)
    (bad.parent / "model.json").write_text((run_dir / "model.json").read_text()[:-5])
    assert "model.json:" in cli_error(["eval", "--prompts", bad, "--dataset", "synthetic", *QUIET])


def _checkpoints(folder: Path, steps) -> list[Path]:
    model = StandInDGL()
    return [ckpt.save_checkpoint(folder / ckpt.checkpoint_name(s), model.prompt_state_dict(), {"step": s})
            for s in steps]


def test_resume_latest_skips_a_damaged_newest_checkpoint(tmp_path):
    older, newest = _checkpoints(tmp_path, [4, 8])
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated: its header still parses
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("dgl_rs.checkpoints")
    logger.addHandler(handler)
    try:
        assert runs.resolve_resume("latest", tmp_path) == older
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1 and newest.name in messages[0] and "damaged" in messages[0] and older.name in messages[0]
    assert newest.is_file()  # left in place
    with pytest.raises(UsageError, match=f"checkpoint {newest} is damaged"):
        ckpt.load_checkpoint(newest)
    older.write_bytes(b"\x00" * 16)
    with pytest.raises(UsageError, match="every checkpoint .* is damaged"):
        runs.resolve_resume("latest", tmp_path)


def test_eval_names_a_damaged_checkpoint(tmp_path):
    (path,) = _checkpoints(tmp_path, [2])
    path.write_bytes(path.read_bytes()[:-64])
    line = cli_error(["eval", "--prompts", path, "--dataset", "synthetic", *QUIET])
    assert f"checkpoint {path} is damaged" in line


# -------------------------------------------------------- 4. bounds and types
@pytest.mark.parametrize("option,value", [
    ("num_global", True), ("num_frames", True), ("num_frames", 2.0), ("num_frame_prompts", "4"),
    ("context_length", 10.0), ("num_text_prompts", [1.7, 1.2]), ("num_text_prompts", "44"),
    ("num_text_prompts", (True, 4)), ("prompt_depth", 1.0), ("temporal_embedding", 1),
])
def test_dgl_options_of_the_wrong_type_are_a_type_error(clip, option, value):
    kwargs = {"num_frames": 2, "generator": "transformer", option: value}
    with pytest.raises(TypeError, match=option):
        dgl_rs.DGL(clip, **kwargs)


def test_tokenize_types():
    with pytest.raises(TypeError, match="context_length"):
        dgl_rs.tokenize(["a"], context_length=10.0)
    with pytest.raises(TypeError, match="context_length"):
        dgl_rs.tokenize(["a"], context_length=True)
    with pytest.raises(ValueError, match="context_length"):
        dgl_rs.tokenize(["a"], context_length=0)
    with pytest.raises(TypeError, match="strings"):
        dgl_rs.tokenize(["a", None])
    with pytest.raises(TypeError, match="strings"):
        dgl_rs.tokenize(None)
    assert dgl_rs.tokenize(("a", "b"), context_length=8).shape == (2, 8)


def test_postprocessing_types():
    sim = np.eye(3, dtype=np.float32)
    for bad in ("1", True, torch.tensor(1.0), None):
        with pytest.raises(TypeError, match="temperature"):
            metrics.dual_softmax(sim, temperature=bad)
        with pytest.raises(TypeError, match="beta"):
            metrics.qb_norm(sim, sim, beta=bad)
    for bad in ("1", True, 1.0):
        with pytest.raises(TypeError, match="`k`"):
            metrics.qb_norm(sim, sim, k=bad)
        with pytest.raises(TypeError, match="chunk"):
            metrics.t2v(torch.eye(3), chunk=bad)


@pytest.mark.parametrize("temperature", [1e-30, 1e-6, 1e-2, 1.0, 1e6, 1e30, np.finfo(np.float64).max])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dual_softmax_stays_normalised_for_any_finite_temperature(temperature, dtype):
    rng = np.random.default_rng(0)
    sim = (rng.uniform(0.5, 2.0, (5, 4)) * rng.choice([-1, 1], (5, 4)) * 50).astype(dtype)
    for axis in (0, 1):
        out = metrics.dual_softmax(sim, temperature=temperature, axis=axis)
        assert np.isfinite(out).all()
        np.testing.assert_allclose((out / sim).sum(axis=axis), 1.0, rtol=1e-5)


def test_qb_norm_overflow_raises():
    sim = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.3], [0.2, 0.3, 0.9]], np.float32)
    assert np.isfinite(metrics.qb_norm(sim, sim, beta=1e38)).all()  # large but representable
    with pytest.raises(ValueError, match="`beta`.*overflows float32"):
        metrics.qb_norm(sim, sim, beta=1e300)  # was -inf
    with pytest.raises(ValueError, match="`beta`.*overflows"):
        metrics.qb_norm(torch.from_numpy(sim).half(), sim, beta=1e6)  # fits float32, not float16
    assert np.isfinite(metrics.qb_norm(sim.astype(np.float64), sim.astype(np.float64), beta=1e300)).all()


def test_nan_or_inf_in_a_prompt_file_is_refused(clip, tmp_path):
    model = dgl_rs.DGL(clip, num_frames=2, generator="linear", num_text_prompts=(4, 4))
    model.save_prompts(str(tmp_path / "p.safetensors"))
    meta, state = dgl_rs.methods.read_prompt_file(tmp_path / "p.safetensors")
    for bad in (float("nan"), float("inf")):
        name = sorted(state)[0]
        poisoned = {**state, name: state[name].clone().fill_(bad)}
        (tmp_path / "bad.safetensors").write_bytes(files.safetensors_bytes(poisoned, meta))
        with pytest.raises(ValueError, match=f"`{name}` holds NaN or inf"):
            load_method(tmp_path / "bad.safetensors", clip)


def test_counts_far_beyond_the_machine_are_refused_with_the_estimate(clip, tmp_path, videos, run_dir):
    need = memory_estimate(clip, {"num_frames": 10**8})
    assert need > 4.9e12  # 100M frames of 3x64x64 float32 alone are 4.9 TB
    with pytest.raises(UsageError, match=r"num_frames=100000000.*GiB \(estimate\)"):
        build_method(clip, "dgl-linear", num_frames=10**8)
    with pytest.raises(UsageError, match=r"num_global=1000000000000.*GiB \(estimate\)"):
        build_method(clip, "dgl-transformer", num_frames=2, num_global=10**12)
    with pytest.raises(UsageError, match="GiB"):
        build_method(clip, "dgl-transformer", num_frames=2, num_text_prompts=(10**7, 0))
    line = cli_error(["train", "--dataset", "synthetic", *TINY, "--num-frames", 10**8, "--output-dir", tmp_path,
                      *QUIET])
    assert "GiB (estimate)" in line and not any(tmp_path.iterdir())
    line = cli_error(["encode", videos, "--prompts", run_dir, "--num-frames", 10**8, "--out", tmp_path / "i",
                      *QUIET])
    assert "num_frames=100000000" in line and "GiB (estimate)" in line
    assert memory_estimate(clip, {"num_frames": 12}) < 2**30  # an ordinary model is far below


def test_the_memory_estimate_reads_each_methods_own_sizes(clip):
    """Every method passes its resolved options; an option a method lacks counts as absent
    (SIZES: no prompts, no global tokens), not as DGL's default."""
    zs = dgl_rs.build_method(clip, "zero-shot", num_frames=12)
    dgl = dgl_rs.build_method(clip, "dgl-transformer", num_frames=12)
    assert SIZES["num_global"] == 0 and SIZES["generator"] is None
    assert memory_estimate(clip, zs.config) == memory_estimate(clip, {"num_frames": 12, "context_length": 32})
    assert memory_estimate(clip, dgl.config) > memory_estimate(clip, zs.config)
    without_global = {k: v for k, v in dgl.config.items() if k != "num_global"}
    assert memory_estimate(clip, without_global) < memory_estimate(clip, dgl.config)


def test_dgl_itself_refuses_huge_counts_up_front(clip):
    with pytest.raises(UsageError, match="GiB"):
        dgl_rs.DGL(clip, num_frames=10**12)


def test_seqtransf_with_more_frames_than_text_positions(clip):
    """It works (CLIP4Clip's seqTransf has no frame limit of its own): the first 32 frame
    positions start as the text tower's 32 positional embeddings, the other 8 keep their
    own initialisation, and 40 frames encode to a finite embedding that each of the 40
    positions reaches."""
    torch.manual_seed(0)
    model = build_method(clip, "full-finetune-seqtransf", num_frames=40)  # synthetic-tiny has 32 text positions
    position = model.temporal.position
    assert clip.positional_embedding.shape == (32, 64) and position.shape == (40, 64)
    assert torch.equal(position[:32], clip.positional_embedding)
    extra = position[32:].detach()
    assert extra.abs().max() > 0 and 0.005 < float(extra.std()) < 0.02  # normal(std=0.01), not copied nor zero
    frames = torch.randn(2, 40, 3, 64, 64)
    with torch.no_grad():
        video = model.encode_video(frames)
        assert video.shape == (2, 64) and torch.isfinite(video).all()
        position[39] += 1.0  # the last frame's position is used
        assert not torch.allclose(model.encode_video(frames), video, atol=1e-6)


def test_attention_counts_must_be_ints_not_bools():
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(TypeError, match="num_global"):
        dgl_rs.GlobalLocalAttention.from_mha(mha, num_global=True, num_frames=2)
    with pytest.raises(TypeError, match="num_frames"):
        dgl_rs.GlobalLocalAttention.from_mha(mha, num_global=1, num_frames=2.0)
    x = torch.randn(1, 5, 8)
    with pytest.raises(TypeError, match="num_heads"):
        dgl_rs.global_local_attention(x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight,
                                      mha.out_proj.bias, True, 1, 2)
