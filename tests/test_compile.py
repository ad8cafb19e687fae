"""torch.compile: the fused op is a custom op (fake kernel + registered autograd), so a
compiled GlobalLocalAttention traces with fullgraph=True and a compiled model has no
graph break at the op; compiled == eager, gradients included."""

from __future__ import annotations

import pytest
import torch

import dgl_rs
from dgl_rs import GlobalLocalAttention

from test_model import CAPTIONS, frames_for, step_loss, tiny_clip, tiny_step



@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_module_compiles_fullgraph_and_matches_eager(backend):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=3)
    compiled = torch.compile(attn, fullgraph=True, backend=backend)
    x = torch.randn(2, 2 + 3 * 5, 32, requires_grad=True)
    g = torch.randn(2, 17, 32)
    want, _ = attn(x, x, x)
    (want_dx,) = torch.autograd.grad(want, x, g)
    got, _ = compiled(x, x, x)
    (got_dx,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_dx, want_dx, rtol=1e-5, atol=1e-6)


def test_weight_gradients_through_the_compiled_op():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    attn = GlobalLocalAttention.from_mha(mha, num_global=1, num_frames=2, mode="local")
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 1 + 2 * 4, 16)
    params = [attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias]
    want = torch.autograd.grad(attn(x)[0].square().sum(), params)
    got = torch.autograd.grad(compiled(x)[0].square().sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_model_has_no_graph_break_at_the_op():
    clip = tiny_clip(torch.float32)
    model = dgl_rs.build_method(clip, "dgl-linear", num_frames=3, num_global=2, num_frame_prompts=2,
                                num_text_prompts=(2, 2), context_length=12)
    frames = frames_for(clip, dtype=torch.float32)
    explain = torch._dynamo.explain(model.encode_video)(frames)
    reasons = " ".join(str(r) for r in explain.break_reasons)
    assert "global_local_attention" not in reasons and "_native.attention" not in reasons, reasons
    compiled = torch.compile(model, backend="aot_eager")
    tokens = dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    want = model(frames, tokens)
    got = compiled(frames, tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert model.global_prompts.grad is not None


STEP_METHODS = {"dgl-linear": dict(num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2)),
                "dgl-transformer": dict(num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2)),
                "vop": dict(num_frame_prompts=2, num_text_prompts=(2, 2)),
                "vpt": dict(num_frame_prompts=2)}


def _step_setup(method):
    return tiny_step(method, STEP_METHODS[method], torch.float32)


_loss = step_loss


@pytest.mark.parametrize("method", sorted(STEP_METHODS))
def test_a_whole_training_step_has_no_graph_break(method):
    """Both towers, the prompt generators (custom ops too), the loss: one graph."""
    model, frames, tokens = _step_setup(method)
    explain = torch._dynamo.explain(_loss)(model, frames, tokens)
    assert explain.graph_break_count == 0, [str(r) for r in explain.break_reasons]


@pytest.mark.parametrize("method", sorted(STEP_METHODS))
def test_a_compiled_training_step_equals_eager_with_gradients(method):
    model, frames, tokens = _step_setup(method)
    params = model.trainable_parameters()
    want = _loss(model, frames, tokens)
    want_grads = torch.autograd.grad(want, params)
    compiled = torch.compile(_loss, fullgraph=True, backend="aot_eager")
    got = compiled(model, frames, tokens)
    got_grads = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name, a, b in zip([n for n, _ in model.named_trainable_parameters()], got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
