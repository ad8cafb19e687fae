"""`dgl-rs estimate` (issue 20, items 2-3): a training step's peak memory counted on fake
tensors equals, within 5%, the peak of live bytes the CPU allocator reports for the same
step really run (``torch.profiler``'s memory events: an instrument of its own); the
optimizer state is AdamW's two moments; the attention op's FLOP formula equals the count
of a plain-PyTorch computation of the same attention; nothing of a huge step's size is
ever allocated; the command's table, JSON and errors."""

from __future__ import annotations

import dataclasses
import json
import resource

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._pytree import tree_leaves

from dgl_rs.backbone.loading import create_clip
from dgl_rs.cli import main
from dgl_rs.factory.build import build_method
from dgl_rs.ops.attention import global_local_attention
from dgl_rs.ops.flops import flop_counter
from dgl_rs.ops.reference import naive_global_local_attention
from dgl_rs.train import estimate as E
from dgl_rs.train.optim import make_optimizer
from dgl_rs.train.params import TrainConfig

TINY = "synthetic-tiny"


def _distinct_bytes(tensors) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors if isinstance(t, torch.Tensor)}.values())


def measured_peak(method, batch, frames, precision, checkpoint=False) -> int:
    """The real step's peak of live tensor bytes: what is alive before it (counted) plus
    the highest running sum of the allocator's allocations and frees during it."""
    torch.manual_seed(0)
    model = build_method(create_clip(TINY), method, num_frames=frames, context_length=32,
                         checkpoint_blocks=checkpoint).train()
    optimizer = make_optimizer(model, dataclasses.replace(TrainConfig(), method=method, lr=1e-3))
    for group in optimizer.param_groups:
        group["foreach"] = True
    x = torch.randn(batch, frames, 3, *model.backbone.image_size)
    tokens = torch.randint(1, 400, (batch, 32))
    live = E.LiveBytes()  # only its phase is set: not entered
    step = lambda: E._train_step(model, optimizer, x, tokens, E.PRECISIONS[precision], 1.0, live)  # noqa: E731
    step()
    before = _distinct_bytes([*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters()),
                              *tree_leaves(list(optimizer.state.values())), x, tokens])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = highest = 0
    for e in events:
        running += e.self_cpu_memory_usage
        highest = max(highest, running)
    return before + highest


@pytest.mark.parametrize("method, precision, checkpoint", [
    ("dgl-linear", "fp32", False), ("dgl-transformer", "fp32", False), ("dgl-linear", "fp32", True),
    ("vpt", "amp_bf16", False), ("vop-fc", "fp32", False), ("upt", "amp_bf16", True)])
def test_the_estimated_peak_is_the_measured_one_within_5_percent(method, precision, checkpoint):
    want = measured_peak(method, 4, 4, precision, checkpoint)
    got = E.estimate_step(method, TINY, 4, 4, precision, checkpoint_blocks=checkpoint)
    assert abs(got.peak_bytes / want - 1) < 0.05, (got.peak_bytes, want)
    assert sum(got.categories.values()) == got.peak_bytes


def test_the_optimizer_state_is_adamws_two_moments():
    e = E.estimate_step("dgl-linear", TINY, 2, 4, "fp32")
    tensors = sum(1 for _ in build_method(create_clip(TINY), "dgl-linear", num_frames=4).trainable_parameters())
    assert e.categories["optimizer"] == 2 * 4 * e.trainable + 4 * tensors  # exp_avg, exp_avg_sq, step


def test_checkpointing_trades_flops_for_activations():
    plain = E.estimate_step("dgl-linear", TINY, 8, 4, "fp32")
    ckpt = E.estimate_step("dgl-linear", TINY, 8, 4, "fp32", checkpoint_blocks=True)
    assert ckpt.categories["activations"] < 0.5 * plain.categories["activations"]
    assert plain.flops < ckpt.flops < 1.6 * plain.flops


@pytest.mark.parametrize("mode", ["global_local", "local", "global"])
def test_attention_flop_formula_equals_a_plain_count(mode):
    """Forward: the fused op's formula against the counted matmuls of the same attention
    done as plain multi-head attention calls (global_local: the released code's two calls
    minus their duplicate projections; global: one call over everything)."""
    d, heads, g, t, L, b = 32, 4, 2, 3, 5, 2
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True)
    x = torch.randn(b, g + t * L, d)
    with flop_counter() as fused:
        global_local_attention(x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias,
                               heads, g, t, mode=mode)
    with flop_counter() as plain:
        if mode == "global":
            mha(x, x, x, need_weights=False)
        elif mode == "local":
            groups = torch.cat([x[:, :g].unsqueeze(1).expand(b, t, g, d), x[:, g:].reshape(b, t, L, d)], 2)
            mha(*[groups.reshape(b * t, g + L, d)] * 3, need_weights=False)
        else:
            naive_global_local_attention(mha, x, g, t)
    want = plain.get_total_flops()
    if mode == "global_local":  # the local call projects [G ; frame_t]'s keys/values again
        want -= 2 * b * t * (g + L) * d * 2 * d
    if mode == "local":  # G's rows are projected once per frame there, once in the op
        want -= 2 * b * (t - 1) * g * d * 4 * d
    assert fused.get_total_flops() == want


def test_a_step_beyond_any_gpu_is_estimated_without_allocating_it(capsys):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["estimate", "--methods", "dgl-linear", "--model", TINY, "--batch-size", "100000",
                 "--num-frames", "64"]) == 0
    out = capsys.readouterr().out
    assert "none (> 192 GB)" in out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 500 * 1024  # KiB: no real allocation


def test_the_command_writes_its_json(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["estimate", "--methods", "dgl-linear", "vpt", "--model", TINY, "--batch-size", "2",
                 "--num-frames", "2", "--precision", "fp32", "--released", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["methods"]) == {"dgl-linear", "dgl-linear (released code's way)", "vpt"}
    row = doc["methods"]["dgl-linear"]
    assert row["peak_bytes"] == sum(row["categories"].values()) and row["flops"] > 0
    assert doc["methods"]["dgl-linear (released code's way)"]["flops"] > row["flops"]
    assert "| dgl-linear |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, named", [
    (["--methods", "nope"], "nope"), (["--methods", "dgl-linear", "--precision", "fp8"], "--precision"),
    (["--methods", "dgl-linear", "--batch-size", "0"], "--batch-size"),
    (["--methods", "dgl-linear", "--num-frames", "-2"], "--num-frames"),
    (["--methods", "dgl-linear", "--utilisation", "2"], "--utilisation"),
    (["--methods", "dgl-linear", "--model", "no-such-model"], "no-such-model")])
def test_bad_arguments_are_one_line(argv, named, capsys):
    try:
        rc = main(["estimate", *argv])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dgl-rs estimate") and named in err and "Traceback" not in err
