"""Checkpoints: atomic writes, full-state round trips, interrupt-and-resume == uninterrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dgl_rs.util import files
from dgl_rs.factory import checkpoints as ckpt
from dgl_rs.factory import runs
from dgl_rs.train import main as train_main
from dgl_rs.train.params import parse_args

from test_train import StandInDGL, patch_standins, toy_argv


def _state(step):
    model = StandInDGL()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model(torch.randn(4, 4, 3, 8, 8), torch.randint(1, 60, (4, 8))).sum().backward()
    opt.step()
    return model.prompt_state_dict(), {"step": step, "optimizer": opt.state_dict(),
                                       "rng": [ckpt.capture_rng_state()], "nested": {"t": (1, 2.5, None)}}


def test_round_trip_keeps_every_state_exactly(tmp_path):
    prompts, state = _state(7)
    path = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(7), prompts, state)
    assert ckpt.is_checkpoint(path)
    p2, s2 = ckpt.load_checkpoint(path)
    assert all(torch.equal(prompts[k], p2[k]) for k in prompts) and p2.keys() == prompts.keys()
    assert s2["step"] == 7 and s2["nested"] == {"t": (1, 2.5, None)}
    # the optimizer state loads into a fresh optimizer (int param ids, tensors, betas)
    model = StandInDGL()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    opt.load_state_dict(s2["optimizer"])
    for a, b in zip(state["optimizer"]["state"].values(), opt.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # RNG states restore to the same streams
    ckpt.restore_rng_state(s2["rng"][0])
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng_state(state["rng"][0])
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    prompts, state = _state(1)
    good = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(1), prompts, state)
    before = good.read_bytes()

    def half_then_fail(f, data, chunk=1 << 22):
        f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "_write_chunks", half_then_fail)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(2), prompts, {**state, "step": 2})
    # overwriting the same name fails the same way and keeps the old bytes
    with pytest.raises(OSError):
        ckpt.save_checkpoint(good, prompts, {**state, "step": 99})
    assert sorted(os.listdir(tmp_path)) == [good.name]  # no partial file, no temp file
    assert good.read_bytes() == before
    assert runs.resolve_resume("latest", tmp_path) == good
    assert ckpt.load_checkpoint(good)[1]["step"] == 1


def test_killed_writer_leaves_previous_checkpoint(tmp_path):
    """A process SIGKILLed halfway through writing: the last complete checkpoint is intact."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from dgl_rs.util import files
        from dgl_rs.factory import checkpoints as ckpt
        d = {str(tmp_path)!r}
        p = {{"prompt": torch.arange(1000.0)}}
        ckpt.save_checkpoint(os.path.join(d, ckpt.checkpoint_name(1)), p, {{"step": 1}})
        def die(f, data, chunk=0):
            f.write(data[: len(data) // 2]); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        files._write_chunks = die
        ckpt.save_checkpoint(os.path.join(d, ckpt.checkpoint_name(2)), {{"prompt": p["prompt"] * 2}}, {{"step": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(1)]
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path))  # the orphan, ignored
    prompts, state = ckpt.load_checkpoint(runs.resolve_resume("latest", tmp_path))
    assert state["step"] == 1 and torch.equal(prompts["prompt"], torch.arange(1000.0))


def test_prune_keeps_newest(tmp_path):
    for s in (3, 10, 7):
        files.atomic_write_bytes(tmp_path / ckpt.checkpoint_name(s), b"x")
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(7), ckpt.checkpoint_name(10)]


# ------------------------------------------------------------------ resume exactness
def _final_prompts(run_dir: Path):
    return load_file(str(run_dir / "prompts.safetensors"))


def _interrupt_at(epoch_stop, step_stop, sig=signal.SIGTERM):
    def on_step(epoch, step):
        if (epoch, step) == (epoch_stop, step_stop):
            signal.raise_signal(sig)
    return on_step


@pytest.mark.slow
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    patch_standins(monkeypatch)
    ref_dir = tmp_path / "ref"
    assert train_main.main(toy_argv(ref_dir)) == 0
    ref = _final_prompts(ref_dir / "run")

    run_dir = tmp_path / "cut"
    # SIGTERM mid-epoch 2 (epoch index 1, after step 2 of 4). The interrupted run and the
    # last leg use 2 data workers, the reference none: per-sample seeding makes the
    # frames independent of which process loads them.
    rc = train_main.run(parse_args(toy_argv(run_dir, "--workers", "2")), on_step=_interrupt_at(1, 2))
    assert rc == 128 + signal.SIGTERM
    assert not (run_dir / "run" / "prompts.safetensors").exists()
    (latest,) = ckpt.list_checkpoints(run_dir / "run" / "checkpoints")[-1:]
    assert ckpt.load_checkpoint(latest)[1]["global_step"] == 6
    # Ctrl-C (SIGINT) on the last step of an epoch: saved at the epoch boundary
    rc = train_main.run(parse_args(toy_argv(run_dir, "--resume", "latest")),
                        on_step=_interrupt_at(1, 4, signal.SIGINT))
    assert rc == 128 + signal.SIGINT
    assert train_main.main(toy_argv(run_dir, "--resume", "latest", "--workers", "2")) == 0
    got = _final_prompts(run_dir / "run")
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k  # bitwise on CPU
    # the resumed run's metric log has no duplicate steps
    import json
    steps = [json.loads(x)["step"] for x in open(run_dir / "run" / "metrics.jsonl") if "train/loss" in x]
    assert steps == list(range(1, 13))


def test_fresh_run_refuses_to_overwrite_checkpoints(tmp_path, monkeypatch):
    patch_standins(monkeypatch)
    argv = toy_argv(tmp_path, "--epochs", "1")
    assert train_main.main(argv) == 0
    with pytest.raises(train_main.UsageError, match="--resume latest"):
        train_main.main(argv)
    # resuming a finished run is a no-op that re-exports the prompts
    assert train_main.main([*argv, "--resume", "latest"]) == 0


@pytest.mark.slow
def test_resume_is_exact_with_the_real_dgl(tmp_path):
    """Same property with dgl_rs.DGL (DGL-Transformer, native attention) on a tiny
    random backbone and the synthetic benchmark's rendered videos."""
    def argv(out, *extra):
        return ["--dataset", "synthetic", "--pretrained", "none", "--generator", "transformer",
                "--synthetic-split", "temporal", "--synthetic-videos", "16", "--synthetic-eval-videos", "4",
                "--num-frames", "2", "--batch-size", "8", "--epochs", "2", "--lr", "1e-2",
                "--output-dir", str(out), "--name", "run", "--workers", "0", "--device", "cpu",
                "--no-progress", "--no-tensorboard", "--eval-every", "0", *extra]

    assert train_main.main(argv(tmp_path / "ref")) == 0
    rc = train_main.run(parse_args(argv(tmp_path / "cut")), on_step=_interrupt_at(0, 1))
    assert rc == 128 + signal.SIGTERM
    assert train_main.main(argv(tmp_path / "cut", "--resume", "latest")) == 0
    ref, got = _final_prompts(tmp_path / "ref" / "run"), _final_prompts(tmp_path / "cut" / "run")
    assert ref.keys() == got.keys() and len(ref) > 1
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
