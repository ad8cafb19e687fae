"""Activation checkpointing of the backbone's blocks (`checkpoint_blocks=True`, `dgl-rs train
--checkpoint-blocks`): the same loss and gradients in float64 for every kind of method
(prompts, hooks that replace attention or add adapters, trained backbone weights), far
fewer bytes kept for the backward, and a compiled step equal to eager."""

from __future__ import annotations

import pytest
import torch

import dgl_rs
from dgl_rs.train.params import parse_args

from test_model import step_loss, tiny_step

#: A method of each kind: generators, VoP's context and exchange hooks, ST-Adapters,
#: a temporal head, the whole CLIP trained.
KINDS = {"dgl-linear": dict(num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2)),
         "dgl-transformer": dict(num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2)),
         "vop-fc": dict(num_frame_prompts=2, num_text_prompts=(2, 2), context_dim=4),
         "vop-p": dict(num_frame_prompts=2, num_text_prompts=(2, 2)),
         "video-text-adapter": dict(adapter_dim=4),
         "full-finetune-seqtransf": dict(temporal_layers=1)}


def _step(method, checkpoint, dtype=torch.float64):
    return tiny_step(method, KINDS[method], dtype, checkpoint_blocks=checkpoint)


_loss = step_loss


@pytest.mark.parametrize("method", sorted(KINDS))
def test_checkpointed_blocks_give_the_same_loss_and_gradients(method):
    plain, frames, tokens = _step(method, False)
    ckpt, _, _ = _step(method, True)
    params = [p for _, p in plain.named_trainable_parameters()]
    names = [n for n, _ in plain.named_trainable_parameters()]
    want = _loss(plain, frames, tokens)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)
    got = _loss(ckpt, frames, tokens)
    got_grads = torch.autograd.grad(got, [p for _, p in ckpt.named_trainable_parameters()], allow_unused=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(names, got_grads, want_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def _saved_bytes(model, frames, tokens) -> int:
    """Bytes of the distinct storages autograd packs for the backward during one forward,
    parameters excluded (they are kept anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _loss(model, frames, tokens)
    return sum(seen.values())


@pytest.mark.parametrize("method", ["dgl-linear", "dgl-transformer"])
def test_checkpointing_keeps_far_fewer_bytes_for_the_backward(method):
    """With checkpointing only each block's input is kept for the backward."""
    plain, frames, tokens = _step(method, False, torch.float32)
    ckpt, _, _ = _step(method, True, torch.float32)
    kept_plain, kept_ckpt = _saved_bytes(plain, frames, tokens), _saved_bytes(ckpt, frames, tokens)
    assert kept_plain > 0 and kept_ckpt < 0.5 * kept_plain, (kept_ckpt, kept_plain)


def test_a_compiled_checkpointed_step_equals_eager():
    torch._dynamo.reset()
    model, frames, tokens = _step("dgl-transformer", True, torch.float32)
    params = model.trainable_parameters()
    want_grads = torch.autograd.grad(_loss(model, frames, tokens), params)
    got_grads = torch.autograd.grad(torch.compile(_loss, backend="aot_eager")(model, frames, tokens), params)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_the_train_flag_reaches_the_model():
    from dgl_rs.train import main as train_main

    clip = dgl_rs.load_clip("synthetic-tiny", "synthetic-tiny")[0]
    cfg = parse_args(["--dataset", "synthetic", "--checkpoint-blocks"])
    assert train_main.build_model(cfg, clip).checkpoint_blocks is True
    assert train_main.build_model(parse_args(["--dataset", "synthetic"]), clip).checkpoint_blocks is False
    with pytest.raises(TypeError, match="checkpoint_blocks"):
        dgl_rs.DGL(clip, checkpoint_blocks="yes")
