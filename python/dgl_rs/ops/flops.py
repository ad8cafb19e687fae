"""FLOP formulas of dgl-rs's custom ops, for ``torch.utils.flop_counter.FlopCounterMode``.

The counter sees only the ops it has a formula for; a custom op's kernels (Rust) are
opaque to it, and torch has none for the CPU flash attention that open_clip's text tower
and the prompt transformer's reference run through. :func:`flop_counter` adds formulas for:

- ``dgl_rs::global_local_attention``: the q/k/v and output projections plus the
  attentions of its ``mode`` (each query-key pair costs ``2 * dim`` for ``q.k`` and as
  much for ``p.v``);
- ``dgl_rs::global_local_attention_backward``: what the backward computes (see
  ``src/attention/mod.rs``): the projection again when ``qkv`` was not saved, the
  attentions again, the flash backward (5 matmuls per pair: scores, dV, dP, dQ, dK), the
  projections' input and weight gradients as ``needs`` asks;
- ``dgl_rs::linear_prompts`` and ``dgl_rs::transformer_prompts`` (their backward runs
  the plain-PyTorch reference, which the counter sees);
- ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward, with torch's
  own formulas for the CUDA kernels (the same math).

Multiply-adds count 2 FLOPs, as torch's formulas do; element-wise work is not counted.
"""

from __future__ import annotations

import torch
from torch.utils import flop_counter as fc

from . import attention, prompts  # noqa: F401  (define torch.ops.dgl_rs.*)

aten = torch.ops.aten


def attention_pairs(seq: int, num_global: int, num_frames: int, mode: str) -> int:
    """Query-key pairs per sample and head-summed channel of the attention of ``mode``
    over ``[G ; frame_1 ; ... ; frame_T]`` of ``seq`` tokens."""
    g, t = num_global, num_frames
    per_frame = (seq - g) // t
    if mode == "global":
        return seq * seq
    if mode == "local":
        return t * (g + per_frame) ** 2
    return t * per_frame * (g + per_frame) + g * seq  # global_local


def _attention_forward(x_shape, num_global: int, num_frames: int, mode: str) -> tuple[int, int]:
    """(projection FLOPs, attention FLOPs) of one forward."""
    b, s, d = x_shape
    return 2 * b * s * d * 4 * d, 4 * b * d * attention_pairs(s, num_global, num_frames, mode)


def attention_flop(x_shape, w_in_shape, b_in_shape, w_out_shape, b_out_shape, num_heads, num_global, num_frames,
                   mode, backend, need_weights, recompute_qkv, out_shape=None, **kwargs) -> int:
    proj, attn = _attention_forward(x_shape, num_global, num_frames, mode)
    return proj + attn


def attention_backward_flop(grad_shape, x_shape, qkv_shape, w_in_shape, b_in_shape, w_out_shape, num_heads,
                            num_global, num_frames, mode, needs, backend, out_shape=None, **kwargs) -> int:
    b, s, d = grad_shape
    need_x, need_w_in, need_b_in, need_w_out = needs[0], needs[1], needs[2], needs[3]
    need_attention = need_x or need_w_in or need_b_in
    if not (need_attention or need_w_out):
        return 0
    _, attn = _attention_forward(grad_shape, num_global, num_frames, mode)
    flops = attn + (2 * b * s * d * 3 * d if qkv_shape is None else 0)  # attentions (and q/k/v) again
    if need_w_out:
        flops += 2 * b * s * d * d
    if need_attention:
        flops += 2 * b * s * d * d + attn * 5 // 2  # grad through out_proj, flash backward
        flops += 2 * b * s * 3 * d * d * (int(need_x) + int(need_w_in))
    return flops


def linear_prompts_flop(f_shape, pre_w_shape, pre_b_shape, post_w_shape, post_b_shape, num_frames,
                        out_shape=None, **kwargs) -> int:
    layers, n_f, d_v = f_shape
    return 2 * 2 * layers * n_f * d_v * pre_w_shape[0]


def transformer_prompts_flop(table_shape, block_shapes, mlp_shapes, num_layers, num_heads, num_text, num_frames,
                             out_shape=None, **kwargs) -> int:
    rows, width = table_shape
    d, hidden = width // num_layers, block_shapes[8][0]
    per_layer = 2 * rows * d * (4 * d + 2 * hidden) + 4 * rows * rows * d
    text = 2 * num_text * (mlp_shapes[0][1] * mlp_shapes[0][0] + mlp_shapes[2][1] * mlp_shapes[2][0])
    return num_layers * (per_layer + text)


def _cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def formulas() -> dict:
    """op -> FLOP formula (of shapes) for the ops the counter has no formula of its own for."""
    ops = torch.ops.dgl_rs
    return {  # keyed by overload packet, as the counter looks them up
        ops.global_local_attention: attention_flop,
        ops.global_local_attention_backward: attention_backward_flop,
        ops.linear_prompts: linear_prompts_flop,
        ops.transformer_prompts: transformer_prompts_flop,
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
    }


def flop_counter() -> fc.FlopCounterMode:
    """A ``FlopCounterMode`` (no display) that also counts dgl-rs's custom ops (torch's own
    registry is left as it is)."""
    mapping = {op: f for op, f in formulas().items() if op not in fc.flop_registry}
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)
