"""The fused global-local attention: autograd wiring and functional API."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .. import _native

_BACKENDS = ("auto", "flash", "efficient", "math")
#: The attention patterns (paper, Table 3b): DGL itself, then the two ablations.
MODES = ("global_local", "local", "global")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a ValueError naming the choices."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    return mode


class GlobalLocalAttentionFunction(torch.autograd.Function):
    """Native forward and explicit native backward.

    Saved for backward (by default): the q/k/v projection ``(batch, seq, 3*dim)``,
    plus ``x`` only when ``in_proj_weight`` requires grad, in every ``mode``. The
    backward recomputes the attentions from q/k/v with the fast kernels, so neither
    the attention output nor a score matrix is kept. With ``recompute_qkv=True`` only
    ``x`` is saved and the projection is recomputed too (a third of the memory, one
    more matmul). The weights are the module's own tensors (saving them costs nothing).

    With ``need_weights`` it returns ``(out, weights)``, ``weights`` the global queries'
    attention probabilities (non-differentiable: no gradient flows through them).
    """

    @staticmethod
    def forward(ctx, x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames,
                mode, backend, recompute_qkv, need_weights=False):
        out, qkv, weights = _native.attention_forward(
            x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
            num_heads, num_global, num_frames, mode, backend, need_weights,
        )
        keep_x = recompute_qkv or ctx.needs_input_grad[1]
        ctx.save_for_backward(x if keep_x else None, None if recompute_qkv else qkv, in_proj_weight, in_proj_bias,
                              out_proj_weight)
        ctx.config = (num_heads, num_global, num_frames, mode, backend)
        if need_weights:
            ctx.mark_non_differentiable(weights)
            return out, weights
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *_weights_grad):
        x, qkv, w_in, b_in, w_out = ctx.saved_tensors
        num_heads, num_global, num_frames, mode, backend = ctx.config
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:5])
        grads = _native.attention_backward(
            grad_out.contiguous(), x, qkv, w_in, b_in, w_out, num_heads, num_global, num_frames, mode, needs, backend,
        )
        return (*grads, None, None, None, None, None, None, None)


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
    mode: str = "global_local",
    backend: str = "auto",
    recompute_qkv: bool = False,
    need_weights: bool = False,
):
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
        mode: which attentions run (paper, Table 3b), all from the one q/k/v projection
            and through the one ``out_proj``:

            - ``"global_local"`` (DGL, the default): frame t's tokens attend to
              ``[G ; frame t]``; the G tokens attend to the whole sequence.
            - ``"local"`` (no global video attention): each ``[G ; frame t]`` does
              self-attention within itself; the frame tokens take their frame's
              result, the G tokens the mean over the frames of their per-frame
              results. No attention spans two frames.
            - ``"global"`` (no local frame attention): every token attends to the
              whole sequence (joint space-time attention, i.e. plain multi-head
              self-attention over the packed sequence).

            With ``G = 0`` ``"local"`` equals ``"global_local"``; with one frame all
            three are equal.
        backend: ``"auto"`` (CPU flash kernel on CPU; memory-efficient kernel on CUDA
            for float16/bfloat16/float32, math otherwise), or force ``"flash"``,
            ``"efficient"`` or ``"math"``.
        recompute_qkv: save only ``x`` for backward and recompute the projection there
            (smallest memory) instead of saving q/k/v (default: faster).
        need_weights: also return the global queries' attention probabilities
            ``(batch, heads, G, G + frames * tokens)``, per head, rows summing to 1,
            such that the G tokens' attention result (before ``out_proj``) is exactly
            ``weights @ v``. Only those G rows are formed (cheap; the frame tokens'
            local probabilities never are) and the output is unchanged. Per mode:
            ``"global_local"`` and ``"global"``: G's softmax over every token;
            ``"local"``: G's effective weights, i.e. the mean over frames of its
            probabilities on the G tokens, and ``1/T`` of frame t's probabilities on
            frame t's tokens. In the dtype of ``x``; no gradient flows through them.

    Returns:
        ``(batch, G + frames * tokens, dim)``, same dtype and device as ``x``; with
        ``need_weights``, ``(out, weights)``.

    Under autocast the inputs are cast to the autocast dtype; gradients flow back
    through the cast. The explicit backward computes weight gradients only for
    weights that require grad.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
    check_mode(mode)
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
                num_heads, num_global, num_frames, mode, backend, recompute_qkv, bool(need_weights),
            )
    return GlobalLocalAttentionFunction.apply(
        x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames, mode,
        backend, recompute_qkv, bool(need_weights),
    )
