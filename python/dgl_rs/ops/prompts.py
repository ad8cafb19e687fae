"""The prompt generators' native math (DGL-SPEC section 5) as ``torch.library`` custom ops:
the forward runs in Rust, a fake kernel gives torch.compile the shapes, and the backward
is the vector-Jacobian product of the plain-PyTorch reference (:mod:`.reference`, the
same math, tested equal): the generators run once per forward on a few thousand values,
so recomputing them for the backward costs nothing next to the towers. A whole training
step compiles without a graph break (the generators' parameters live in
:mod:`dgl_rs.nn.prompts`)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .. import _native
from .reference import linear_prompts_ref, transformer_prompts_ref


@torch.library.custom_op("dgl_rs::linear_prompts", mutates_args=())
def _linear_op(frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor,
               post_bias: Tensor, num_frames: int) -> Tuple[Tensor, Tensor]:
    text, frames = _native.linear_prompts(frame_prompts, pre_weight, pre_bias, post_weight, post_bias, num_frames)
    return text, frames.clone()  # an output may not be a view of an input


@_linear_op.register_fake
def _linear_fake(frame_prompts, pre_weight, pre_bias, post_weight, post_bias, num_frames):
    layers, n_f, d_v = frame_prompts.shape
    d_t = pre_weight.shape[0]
    return frame_prompts.new_empty(layers, 2 * n_f, d_t), frame_prompts.new_empty(layers, num_frames, n_f, d_v)


@torch.library.custom_op("dgl_rs::transformer_prompts", mutates_args=())
def _transformer_op(table: Tensor, block: List[Tensor], mlp: List[Tensor], num_layers: int, num_heads: int,
                    num_text: int, num_frames: int) -> Tuple[Tensor, Tensor]:
    text, frames = _native.transformer_prompts(table, block, mlp, (num_layers, num_heads, num_text), num_frames)
    return text, frames


@_transformer_op.register_fake
def _transformer_fake(table, block, mlp, num_layers, num_heads, num_text, num_frames):
    rows, width = table.shape
    d_v, d_t = width // num_layers, mlp[2].shape[0]
    n_f = (rows - num_text) // num_frames
    return table.new_empty(num_layers, num_text, d_t), table.new_empty(num_layers, num_frames, n_f, d_v)


def _vjp(reference, tensors: Sequence[Tensor], rebuild, grads) -> List[Tensor]:
    """The reference's vector-Jacobian product with respect to ``tensors`` (``rebuild``
    maps them back to the reference's arguments)."""
    _, pullback = torch.func.vjp(lambda *ts: reference(*rebuild(ts)), *tensors)
    return list(pullback(tuple(grads)))


def _linear_setup(ctx, inputs, output) -> None:
    *tensors, ctx.num_frames = inputs
    ctx.save_for_backward(*tensors)


def _linear_backward(ctx, grad_text, grad_frames):
    t = ctx.num_frames
    return (*_vjp(linear_prompts_ref, ctx.saved_tensors, lambda ts: (*ts, t), (grad_text, grad_frames)), None)


def _transformer_setup(ctx, inputs, output) -> None:
    table, block, mlp, *ctx.sizes = inputs
    ctx.num_block = len(block)
    ctx.save_for_backward(table, *block, *mlp)


def _transformer_backward(ctx, grad_text, grad_frames):
    nb, sizes = ctx.num_block, ctx.sizes
    out = _vjp(transformer_prompts_ref, ctx.saved_tensors,
               lambda ts: (ts[0], list(ts[1:1 + nb]), list(ts[1 + nb:]), *sizes), (grad_text, grad_frames))
    return out[0], out[1:1 + nb], out[1 + nb:], None, None, None, None


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)
_transformer_op.register_autograd(_transformer_backward, setup_context=_transformer_setup)


def linear_prompts(frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor,
                   post_bias: Tensor, num_frames: int) -> Tuple[Tensor, Tensor]:
    """DGL-Linear: ``(text (layers, 2 n_f, D_t), frames (layers, T, n_f, D_v))``."""
    return _linear_op(frame_prompts, pre_weight, pre_bias, post_weight, post_bias, num_frames)


def transformer_prompts(table: Tensor, block: Sequence[Tensor], mlp: List[Tensor], num_layers: int, heads: int,
                        num_text: int, num_frames: int) -> Tuple[Tensor, Tensor]:
    """DGL-Transformer: the unified prompt transformer over the learned table."""
    return _transformer_op(table, list(block), list(mlp), num_layers, heads, num_text, num_frames)
