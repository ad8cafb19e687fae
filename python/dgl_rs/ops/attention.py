"""The fused global-local attention: the ``dgl_rs::global_local_attention`` custom op
(native forward, explicit native backward, a fake kernel for torch.compile) and the
functional API."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import _native

_BACKENDS = ("auto", "flash", "efficient", "math")
#: The attention patterns (paper, Table 3b): DGL itself, then the two ablations.
MODES = ("global_local", "local", "global")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a ValueError naming the choices."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    return mode


# The op is a torch.library custom op with a fake (meta) kernel and a registered
# autograd formula, so torch.compile traces through it (fullgraph) instead of breaking
# the graph at every layer; eager mode runs the same native calls.

@torch.library.custom_op("dgl_rs::global_local_attention", mutates_args=())
def _attention_op(x: Tensor, in_proj_weight: Tensor, in_proj_bias: Optional[Tensor], out_proj_weight: Tensor,
                  out_proj_bias: Optional[Tensor], num_heads: int, num_global: int, num_frames: int, mode: str,
                  backend: str, need_weights: bool, recompute_qkv: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """``(out, qkv, weights)``; ``weights`` empty unless ``need_weights``. ``recompute_qkv``
    changes only what the autograd formula saves."""
    out, qkv, weights = _native.attention_forward(
        x, (in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias),
        (num_heads, num_global, num_frames, mode, backend), need_weights,
    )
    return out, qkv, (weights if weights is not None else x.new_empty(0))


@_attention_op.register_fake
def _attention_fake(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global,
                    num_frames, mode, backend, need_weights, recompute_qkv):
    b, s, d = x.shape
    weights = x.new_empty(b, num_heads, num_global, s) if need_weights else x.new_empty(0)
    return x.new_empty(b, s, d), x.new_empty(b, s, 3 * d), weights


@torch.library.custom_op("dgl_rs::global_local_attention_backward", mutates_args=())
def _attention_backward_op(grad_out: Tensor, x: Optional[Tensor], qkv: Optional[Tensor], in_proj_weight: Tensor,
                           in_proj_bias: Optional[Tensor], out_proj_weight: Tensor, num_heads: int, num_global: int,
                           num_frames: int, mode: str, needs: List[bool], backend: str) -> List[Tensor]:
    """The five gradients (x, in_proj w/b, out_proj w/b); an empty tensor where not needed."""
    grads = _native.attention_backward(
        grad_out.contiguous(), x, qkv, (in_proj_weight, in_proj_bias, out_proj_weight, None),
        (num_heads, num_global, num_frames, mode, backend), tuple(needs),
    )
    return [g if g is not None else grad_out.new_empty(0) for g in grads]


@_attention_backward_op.register_fake
def _attention_backward_fake(grad_out, x, qkv, in_proj_weight, in_proj_bias, out_proj_weight, num_heads,
                             num_global, num_frames, mode, needs, backend):
    d = grad_out.shape[-1]
    shapes = [grad_out.shape, in_proj_weight.shape, (3 * d,), out_proj_weight.shape, (d,)]
    return [grad_out.new_empty(shape if need else (0,)) for need, shape in zip(needs, shapes)]


def _setup_context(ctx, inputs, output):
    """Saved for backward (by default): the q/k/v projection ``(batch, seq, 3*dim)``, plus
    ``x`` only when ``in_proj_weight`` requires grad, in every ``mode``. The backward
    recomputes the attentions from q/k/v with the fast kernels, so neither the attention
    output nor a score matrix is kept. With ``recompute_qkv`` only ``x`` is saved and the
    projection is recomputed too. The weights are the module's own tensors (saving them
    costs nothing)."""
    x, w_in, b_in, w_out, _, num_heads, num_global, num_frames, mode, backend, _, recompute = inputs
    keep_x = recompute or w_in.requires_grad
    ctx.save_for_backward(x if keep_x else None, None if recompute else output[1], w_in, b_in, w_out)
    ctx.config = (num_heads, num_global, num_frames, mode, backend)


def _backward(ctx, grad_out, _grad_qkv, _grad_weights):
    x, qkv, w_in, b_in, w_out = ctx.saved_tensors
    num_heads, num_global, num_frames, mode, backend = ctx.config
    needs = [bool(n) for n in ctx.needs_input_grad[:5]]
    grads = _attention_backward_op(grad_out, x, qkv, w_in, b_in, w_out, num_heads, num_global, num_frames, mode,
                                   needs, backend)
    grads = [g if need else None for g, need in zip(grads, needs)]
    return (*grads, None, None, None, None, None, None, None)


_attention_op.register_autograd(_backward, setup_context=_setup_context)


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
    for name, value in (("num_heads", num_heads), ("num_global", num_global), ("num_frames", num_frames)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}, got {backend!r}")
    device_type = x.device.type
    args = (x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        args = tuple(t if t is None or not t.is_floating_point() else t.to(dtype) for t in args)
        with torch.autocast(device_type, enabled=False):
            return _call(args, num_heads, num_global, num_frames, mode, backend, recompute_qkv, need_weights)
    return _call(args, num_heads, num_global, num_frames, mode, backend, recompute_qkv, need_weights)


def _call(args, num_heads, num_global, num_frames, mode, backend, recompute_qkv, need_weights):
    out, _, weights = _attention_op(*args, num_heads, num_global, num_frames, mode, backend, bool(need_weights),
                                    bool(recompute_qkv))
    # The backward ignores the weights' gradient: detach them rather than let one be dropped silently.
    return (out, weights.detach()) if need_weights else out
