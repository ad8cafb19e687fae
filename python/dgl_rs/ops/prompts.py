"""The prompt generators' native math (DGL-SPEC section 5), on tensors that libtorch's
autograd records (the generators' parameters live in :mod:`dgl_rs.nn.prompts`)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor

from .. import _native


def linear_prompts(frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor,
                   post_bias: Tensor, num_frames: int) -> Tuple[Tensor, Tensor]:
    """DGL-Linear: ``(text (layers, 2 n_f, D_t), frames (layers, T, n_f, D_v))``."""
    return _native.linear_prompts(frame_prompts, pre_weight, pre_bias, post_weight, post_bias, num_frames)


def transformer_prompts(table: Tensor, block: Sequence[Tensor], mlp: List[Tensor], num_layers: int, heads: int,
                        num_text: int, num_frames: int) -> Tuple[Tensor, Tensor]:
    """DGL-Transformer: the unified prompt transformer over the learned table."""
    return _native.transformer_prompts(table, block, mlp, (num_layers, heads, num_text), num_frames)
