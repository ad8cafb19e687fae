"""The fused global-local attention: autograd wiring and functional API."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import _native

_BACKENDS = ("auto", "flash", "efficient", "math")


class GlobalLocalAttentionFunction(torch.autograd.Function):
    """Native forward and explicit native backward.

    Saved for backward: ``x`` and the attention output before ``out_proj``
    (both ``(batch, seq, dim)``), and the per-row log-sum-exp of the two
    attentions (``(batch*frames, heads, tokens)`` and ``(batch, heads, G)``,
    float32 for half types). q, k and v are recomputed from ``x`` with one
    matmul in the backward; no score matrix is ever kept. The weights are the
    module's own tensors (saving them costs nothing).
    """

    @staticmethod
    def forward(ctx, x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames, backend):
        out, attn, lse_local, lse_global = _native.attention_forward(
            x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
            num_heads, num_global, num_frames, backend,
        )
        ctx.save_for_backward(x, in_proj_weight, in_proj_bias, out_proj_weight, attn, lse_local, lse_global)
        ctx.config = (num_heads, num_global, num_frames, backend)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w_in, b_in, w_out, attn, lse_local, lse_global = ctx.saved_tensors
        num_heads, num_global, num_frames, backend = ctx.config
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:5])
        grads = _native.attention_backward(
            grad_out.contiguous(), x, w_in, b_in, w_out, attn, lse_local, lse_global,
            num_heads, num_global, num_frames, needs, backend,
        )
        return (*grads, None, None, None, None)


def global_local_attention(
    x: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Optional[Tensor],
    out_proj_weight: Tensor,
    out_proj_bias: Optional[Tensor],
    num_heads: int,
    num_global: int,
    num_frames: int,
    *,
    backend: str = "auto",
) -> Tensor:
    """Fused global-local video attention (DGL-SPEC section 3).

    Args:
        x: the packed video sequence, ``(batch, G + frames * tokens, dim)``: ``G``
            global tokens, then ``frames`` frames of ``tokens`` tokens each. float32,
            float64, float16 or bfloat16, on CPU or CUDA.
        in_proj_weight: ``(3 * dim, dim)``, the q/k/v projection (``nn.MultiheadAttention``
            layout); in_proj_bias: ``(3 * dim,)`` or None.
        out_proj_weight: ``(dim, dim)``; out_proj_bias: ``(dim,)`` or None.
        num_heads: attention heads; ``dim`` must be a multiple of it.
        num_global: ``G``, the global tokens at the front (0 allowed).
        num_frames: ``frames``; ``(seq - G)`` must be a multiple of it.
        backend: ``"auto"`` (CPU flash kernel on CPU; memory-efficient kernel on CUDA
            for float16/bfloat16/float32, math otherwise), or force ``"flash"``,
            ``"efficient"`` or ``"math"``.

    Returns:
        ``(batch, G + frames * tokens, dim)``, same dtype and device as ``x``.

    Local: frame t's tokens attend to ``[G ; frame t]``. Global: the G tokens
    attend to the whole sequence. One q/k/v projection, one output projection.
    Under autocast the inputs are cast to the autocast dtype; gradients flow back
    through the cast. The explicit backward computes weight gradients only for
    weights that require grad.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}, got {backend!r}")
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t):
            return t if t is None or not t.is_floating_point() else t.to(dtype)

        with torch.autocast(device_type, enabled=False):
            return GlobalLocalAttentionFunction.apply(
                cast(x), cast(in_proj_weight), cast(in_proj_bias), cast(out_proj_weight), cast(out_proj_bias),
                num_heads, num_global, num_frames, backend,
            )
    return GlobalLocalAttentionFunction.apply(
        x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames, backend
    )
