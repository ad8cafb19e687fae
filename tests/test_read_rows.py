"""Compute only what is read (issue 20, item 6): the last visual block computes only the
first global token when the pool reads nothing else (DGL, ``pool="global"``), and the last
text block only the EOT token. Exact: equal, with gradients, in float64, to computing
every row and then reading the same ones; and fewer FLOPs."""

from __future__ import annotations

import pytest
import torch

import dgl_rs.backbone.openclip as openclip
from dgl_rs.ops.flops import flop_counter

from test_model import step_loss, tiny_step

SIZES = dict(num_frame_prompts=2, num_text_prompts=(2, 2))
#: DGL in each attention mode (Table 3b) and pool (3a), and methods with text hooks:
#: deep text prompts (VPT/UPT), text adapters after the attention, checkpointed blocks.
CASES = {
    "dgl-linear": dict(num_global=2, **SIZES),
    "dgl-transformer": dict(num_global=2, **SIZES),
    "dgl-linear/global": dict(num_global=2, attention="global", **SIZES),
    "dgl-linear/local": dict(num_global=2, attention="local", **SIZES),
    "dgl-linear/mean": dict(num_global=2, pool="global_local_mean", **SIZES),
    "upt": SIZES,
    "visual-text-adapter": dict(adapter_dim=4),
}


def _loss_and_grads(case, checkpoint=False):
    model, frames, tokens = tiny_step(case.split("/")[0], CASES[case], checkpoint_blocks=checkpoint)
    loss = step_loss(model, frames, tokens)
    params = [p for _, p in model.named_trainable_parameters()]
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_reading_rows_equals_computing_every_row(case, checkpoint, monkeypatch):
    got, got_grads = _loss_and_grads(case, checkpoint)
    monkeypatch.setattr(openclip, "_plain_attention", lambda block: False)  # every row, then read
    want, want_grads = _loss_and_grads(case, checkpoint)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _step_flops(case) -> int:
    model, frames, tokens = tiny_step(case, CASES[case])
    with flop_counter() as counter:
        step_loss(model, frames, tokens).backward()
    return counter.get_total_flops()


#: The saving on the 2-block tiny CLIP: DGL reads one row of both towers' last blocks
#: (of 2), UPT only the text tower's (the smaller one).
@pytest.mark.parametrize("case, at_most", [("dgl-linear", 0.8), ("upt", 0.99)])
def test_reading_rows_saves_flops(case, at_most, monkeypatch):
    rows = _step_flops(case)
    monkeypatch.setattr(openclip, "_plain_attention", lambda block: False)
    assert rows < at_most * _step_flops(case)


def test_read_global_must_name_a_global_token():
    model, frames, _ = tiny_step("dgl-linear", CASES["dgl-linear"])
    x = torch.zeros(1, 2 + 3 * 17, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="read_global"):
        model.backbone.run_visual(x, model._video_attention(3), read_global=2)
