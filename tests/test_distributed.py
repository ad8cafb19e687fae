"""DDP on CPU: 2 gloo processes (torchrun) train the same prompts as 1 process with the
same global batch; the embedding gather carries gradients through the local shard only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import torch
    import torch.distributed as dist
    from dgl_rs.train import main as train_main
    from dgl_rs.train.distributed import gather_with_grad, init_distributed
    from test_train import patch_standins

    class Patch:
        setattr = staticmethod(setattr)

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # gather_with_grad with unequal local sizes: values in rank order, gradient
        # only into the local shard.
        info = init_distributed("cpu")
        r = info.rank
        x = torch.full((r + 1, 3), float(r + 1), requires_grad=True)
        y = gather_with_grad(x)
        assert y.shape == (3, 3), y.shape
        assert torch.equal(y.detach(), torch.tensor([[1.0] * 3, [2.0] * 3, [2.0] * 3])), y
        (y * torch.arange(1.0, 4.0).unsqueeze(1)).sum().backward()
        expect = torch.tensor([[1.0] * 3]) if r == 0 else torch.tensor([[2.0] * 3, [3.0] * 3])
        assert torch.equal(x.grad, expect), x.grad
    patch_standins(Patch, n_train=64, n_eval=16)
    sys.exit(train_main.main(sys.argv[1:]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _argv(out: Path, batch: int) -> list[str]:
    return ["--dataset", "synthetic", "--output-dir", str(out), "--name", "run", "--epochs", "2",
            "--batch-size", str(batch), "--lr", "0.05", "--num-frames", "4", "--workers", "0",
            "--device", "cpu", "--no-progress", "--no-tensorboard", "--log-every", "1"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_one_and_two_ranks(tmp_path: Path, two_batch: int, *two_extra: str) -> None:
    """Train the toy run in one process with batch 16 (into ``tmp_path/one``), then with 2
    gloo ranks of batch ``two_batch`` and ``two_extra`` flags (into ``tmp_path/two``)."""
    script = tmp_path / "run_toy.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    one = subprocess.run([sys.executable, str(script), *_argv(tmp_path / "one", 16)],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         str(script), *_argv(tmp_path / "two", two_batch), *two_extra],
        env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    run_one_and_two_ranks(tmp_path, 8)

    a = load_file(str(tmp_path / "one" / "run" / "prompts.safetensors"))
    b = load_file(str(tmp_path / "two" / "run" / "prompts.safetensors"))
    assert a.keys() == b.keys()
    init = {"adapter.weight": torch.eye(16)}
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
        if k in init:
            assert not torch.allclose(a[k], init[k])  # training moved it
    losses = lambda d: [json.loads(x)["train/loss"] for x in open(d / "run" / "metrics.jsonl")
                        if "train/loss" in x]
    la, lb = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(la) == len(lb) == 8
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-5, atol=1e-6)
    cfg = json.loads((tmp_path / "two" / "run" / "results.json").read_text())
    assert cfg["world_size"] == 2 and cfg["global_batch"] == 16
    # logging from rank 0 only: one line per event in the run log
    log = (tmp_path / "two" / "run" / "out.log").read_text()
    assert log.count("epoch 1 done") == 1
