"""Every CUDA branch: the op's kernels by dtype and head size, the methods, autocast, the
CLI on a GPU, the on-device ranks. Marked ``cuda`` and skipped without a device
(``make test-cuda`` runs them; ``../shared/gpu/check.sh`` on a GPU machine).

Low-precision tolerances are relative to the error of the same math done plainly in that
precision on the same device (the reference's own error), against a float64 CPU truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dgl_rs
from dgl_rs import global_local_attention

from conftest import max_rel_err
from references import attention_mode_spec
from test_attention import make_inputs
from test_model import CAPTIONS, frames_for, tiny_clip

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LOW = [torch.float32, torch.float16, torch.bfloat16]


def _grads(out, leaves, g):
    return torch.autograd.grad(out, leaves, g)


# head_dim 64/80/96/128 take the memory-efficient kernel; 36 (not a multiple of 8) and
# float64 take the math fallback.
@pytest.mark.parametrize("hd", [64, 80, 96, 128, 36])
@pytest.mark.parametrize("g", [0, 4])
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("weights_grad", [False, True])
def test_op_and_five_gradients_on_cuda(hd, g, dtype, weights_grad):
    args = make_inputs(2, g, 3, 20, 2, hd, torch.float64, weights_grad=weights_grad)
    truth = attention_mode_spec(*args, 2, g, 3, "global_local")
    leaves = [a for a in args if a is not None and a.requires_grad]
    gout = torch.randn_like(truth)
    want = _grads(truth, leaves, gout)
    dev = [a.detach().to("cuda", dtype).requires_grad_(a.requires_grad) for a in args]
    dleaves = [a for a in dev if a.requires_grad]
    out = global_local_attention(*dev, 2, g, 3)
    plain = attention_mode_spec(*dev, 2, g, 3, "global_local")  # the same math, plainly, in dtype
    assert max_rel_err(out.cpu(), truth) <= 2 * max_rel_err(plain.cpu(), truth) + 1e-6
    got = _grads(out, dleaves, gout.to("cuda", dtype))
    ref = _grads(plain, dleaves, gout.to("cuda", dtype))
    for a, r, w in zip(got, ref, want):
        assert max_rel_err(a.cpu(), w) <= 2 * max_rel_err(r.cpu(), w) + 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_op_at_batch_128(dtype):
    args = make_inputs(128, 4, 12, 54, 12, 64, torch.float32, weights_grad=False)
    dev = [a.detach().to("cuda", dtype).requires_grad_(i == 0) for i, a in enumerate(args)]
    out = global_local_attention(*dev, 12, 4, 12)
    out.float().square().mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(dev[0].grad).all()
    small = [a[:2] if i == 0 else a for i, a in enumerate(args)]  # spot-check two videos in float64
    truth = attention_mode_spec(*[a.detach().double() for a in small], 12, 4, 12, "global_local")
    plain = attention_mode_spec(*[a.detach()[:2] if i == 0 else a.detach() for i, a in enumerate(dev)], 12, 4, 12,
                                "global_local")
    assert max_rel_err(out[:2].detach().cpu(), truth) <= 2 * max_rel_err(plain.cpu(), truth) + 1e-6


@pytest.mark.parametrize("method", ["dgl-linear", "dgl-transformer", "vop-fc", "video-text-adapter"])
def test_methods_on_cuda_match_cpu(method):
    cpu = dgl_rs.build_method(tiny_clip(torch.float32), method, num_frames=3, context_length=12)
    gpu = dgl_rs.build_method(tiny_clip(torch.float32).cuda(), method, num_frames=3, context_length=12)
    gpu.load_prompt_state_dict(cpu.prompt_state_dict())
    frames, tokens = frames_for(cpu.clip, dtype=torch.float32), dgl_rs.tokenize(CAPTIONS, context_length=12)
    frames, tokens = frames[:2], tokens[:2]
    loss_c = dgl_rs.symmetric_infonce(cpu(frames, tokens))
    loss_g = dgl_rs.symmetric_infonce(gpu(frames.cuda(), tokens.cuda()))
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=1e-4, atol=1e-5)
    loss_c.backward()
    loss_g.backward()
    for (n, pc), pg in zip(cpu.named_trainable_parameters(), gpu.trainable_parameters()):
        torch.testing.assert_close(pg.grad.cpu(), pc.grad, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("method", ["dgl-linear", "dgl-transformer"])
def test_bf16_autocast_training_step(method):
    model = dgl_rs.build_method(tiny_clip(torch.float32).cuda(), method, num_frames=3, context_length=12)
    frames = frames_for(model.clip, dtype=torch.float32)[:2].cuda()
    tokens = dgl_rs.tokenize(CAPTIONS[:2], context_length=12).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = dgl_rs.symmetric_infonce(model(frames, tokens).float())
    loss.backward()
    assert torch.isfinite(loss)
    for n, p in model.named_trainable_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
        assert p.dtype == torch.float32  # master weights stay float32


def test_cli_train_two_epochs_then_eval_on_cuda(tmp_path, capsys):
    from dgl_rs.cli import main

    argv = ["train", "--dataset", "synthetic", "--device", "cuda", "--epochs", "2", "--num-frames", "4",
            "--batch-size", "16", "--synthetic-videos", "64", "--synthetic-eval-videos", "32",
            "--output-dir", str(tmp_path), "--name", "gpu", "--workers", "0", "--no-progress", "--no-tensorboard"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert res["config"]["precision"] == "auto"
    capsys.readouterr()
    assert main(["eval", "--prompts", str(tmp_path / "gpu"), "--dataset", "synthetic", "--device", "cuda",
                 "--synthetic-eval-videos", "32", "--no-progress"]) == 0
    out = json.loads((tmp_path / "gpu" / "eval-synthetic.json").read_text())
    for split in ("static", "temporal"):
        assert out["results"][split]["raw"]["t2v"]["R@1"] >= 0


def test_tensor_ranks_on_cuda_at_100k_chunked():
    """N = 100,000 both ways on the device without the N x N matrix; 64 captions' ranks
    checked against a direct pessimistic count."""
    from dgl_rs import metrics

    torch.manual_seed(0)
    n, d = 100_000, 32
    text = torch.nn.functional.normalize(torch.randn(n, d, device="cuda"), dim=-1)
    video = torch.nn.functional.normalize(text + 0.5 * torch.randn(n, d, device="cuda"), dim=-1)
    ranks = metrics.ranks_chunked(text, video, chunk=4096)
    t2v = np.asarray(ranks["t2v"])
    assert t2v.shape == (n,) and t2v.min() >= 1 and t2v.max() <= n
    rows = torch.randint(0, n, (64,))
    s = (text[rows.cuda()] @ video.t()).cpu().numpy()
    truth = np.array([(row >= row[i]).sum() for row, i in zip(s, rows.numpy())])
    np.testing.assert_array_equal(t2v[rows.numpy()], truth)


@pytest.mark.parametrize("method, checkpoint", [("dgl-linear", False), ("dgl-linear", True), ("vpt", False)])
def test_estimate_against_cuda_max_memory_allocated(method, checkpoint):
    """Issue 20 item 3 on a GPU: `dgl-rs estimate`'s peak of live tensors (fake tensors, CPU
    autocast policy) against the CUDA caching allocator's peak of a real step (ViT-B/32,
    B=16, T=12, fp16 autocast). Printed for the README; asserted within 15% (the GPU's
    autocast policy, kernel workspaces and the allocator's 512-byte rounding differ)."""
    import dataclasses

    import open_clip

    from dgl_rs.train import estimate as E
    from dgl_rs.train.optim import make_optimizer
    from dgl_rs.train.params import TrainConfig

    b, t = 16, 12
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).cuda()
    model = dgl_rs.build_method(clip, method, num_frames=t, checkpoint_blocks=checkpoint).cuda().train()
    optimizer = make_optimizer(model, dataclasses.replace(TrainConfig(), method=method, lr=1e-3))
    x = torch.randn(b, t, 3, 224, 224, device="cuda")
    tokens = torch.randint(1, 400, (b, 32), device="cuda")
    live = E.LiveBytes()  # not entered: only its phase is set
    step = lambda: E._train_step(model, optimizer, x, tokens, "amp", 1.0, live)  # noqa: E731
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    real = torch.cuda.max_memory_allocated()
    est = E.estimate_step(method, "ViT-B-32-quickgelu", b, t, "amp_fp16", checkpoint_blocks=checkpoint).peak_bytes
    print(f"\n{method} checkpoint={checkpoint}: estimate {est / 2**20:.0f} MiB, "
          f"cuda max_memory_allocated {real / 2**20:.0f} MiB, ratio {est / real:.3f}")
    assert abs(est / real - 1) < 0.15
