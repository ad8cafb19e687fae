"""VoP (Huang et al. 2023) and its video prompts, as dgl-rs reads them.

VoP's training code is not public; this follows the paper's description (seed
``002``) and the public ModelScope inference code for basic VoP. Every variant encodes
frames with the frozen image tower, deep text prefix/postfix prompts and deep visual
prompts after each frame's CLS, each branch its own parameters, meanP:

* ``vop``: the same visual prompts for every frame;
* ``vop-f`` (position-specific): a different set for every frame position t (frames at
  the same relative position share them): ``per_frame_prompts=True``;
* ``vop-c`` (context-specific): before block i > 0, a small generator per layer reads
  the video's context, the mean of the frames' CLS tokens entering the block, through a
  bottleneck (D -> ``context_dim`` -> n_f * D, QuickGELU, zero-initialised output) and
  adds the result to every frame's prompts of that layer, so intra-frame attention sees
  the whole video: ``context_prompts=True``;
* ``vop-p`` (function-specific): in the ``exchange_layers`` (default: the upper half)
  the prompt slots are not overwritten, so each frame's prompts carry what they gathered
  from their frame in the block before, and every token attends to its own frame plus
  the prompt tokens of ALL frames: those layers switch from intra- to inter-frame
  modelling, with the prompts as the bridge (a block where only the prompts saw each
  other would change nothing: their outputs are overwritten before anything reads them);
* ``vop-fc``, ``vop-fp``: the paper's combinations.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import patch
from ..prompts import QuickGELU
from .dgl import DGL, _int


class ContextPrompts(nn.Module):
    """Layer i's context generator: ``(B, D)`` context -> ``(B, n, D)`` prompt offsets."""

    def __init__(self, width: int, num_prompts: int, hidden: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.down = nn.Linear(width, hidden)
        self.act = QuickGELU()
        self.up = nn.Linear(hidden, num_prompts * width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.num_prompts = num_prompts

    def forward(self, ctx: Tensor) -> Tensor:
        return self.up(self.act(self.down(self.ln(ctx)))).reshape(ctx.shape[0], self.num_prompts, -1)


class VoP(DGL):
    """Basic VoP plus the video prompts (see the module docstring). Extra options:
    ``context_prompts`` (bool), ``context_dim`` (the generator's bottleneck) and
    ``exchange_layers`` (visual block indices where the frames' prompts attend to each
    other, ``"upper_half"``, or ``None``: none)."""

    OPTIONS = DGL.OPTIONS + ("context_prompts", "context_dim", "exchange_layers")

    def __init__(self, clip_model: nn.Module, context_prompts: bool = False, context_dim: int = 64,
                 exchange_layers: Optional[Sequence[int]] = None, **options) -> None:
        super().__init__(clip_model, **options)
        if not isinstance(context_prompts, bool):
            raise TypeError(f"`context_prompts` must be a bool, got {context_prompts!r}")
        self.context_prompts, self.context_dim = context_prompts, _int("context_dim", context_dim, 1)
        if exchange_layers == "upper_half":
            exchange_layers = range(self._vision_layers // 2, self._vision_layers)
        if isinstance(exchange_layers, str):
            raise ValueError(f"`exchange_layers` must be block indices or 'upper_half', got {exchange_layers!r}")
        layers = [] if exchange_layers is None else [_int("exchange_layers[]", i, 0) for i in exchange_layers]
        if any(i >= self._vision_layers for i in layers):
            raise ValueError(f"`exchange_layers` must be visual block indices < {self._vision_layers}, got {layers}")
        self.exchange_layers = sorted(set(layers))
        if (context_prompts or layers) and not self.num_frame_prompts:
            raise ValueError("context and function-specific prompts need num_frame_prompts >= 1")
        d = self._visual.transformer.width
        self.context = nn.ModuleList(ContextPrompts(d, self.num_frame_prompts, self.context_dim)
                                     for _ in range(1, self._prompt_layers)) if context_prompts else None
        self._place_prompts()

    @property
    def config(self) -> dict:
        return {**super().config, "context_prompts": self.context_prompts, "context_dim": self.context_dim,
                "exchange_layers": list(self.exchange_layers) or None}

    def _before_block(self, i: int, x: Tensor, frame_prompts, b: int, t: int, L: int) -> Tensor:
        if i in self.exchange_layers:
            return x  # the prompts carry their hidden states into an exchange block
        if self.context is not None and 0 < i < self._prompt_layers:
            cls = x[:, self.num_global:].reshape(b, t, L, -1)[:, :, 0]
            offset = self.context[i - 1](cls.mean(dim=1)).to(x.dtype)  # (B, n_f, D), one per video
            layer = frame_prompts[i].to(x.dtype)
            layer = layer.unsqueeze(0) if layer.dim() == 3 else layer
            frame_prompts = list(frame_prompts)
            frame_prompts[i] = layer + offset.unsqueeze(1)  # (B, T, n_f, D)
        return super()._before_block(i, x, frame_prompts, b, t, L)

    def _attention_override(self, i: int, b: int, t: int, L: int):
        if i not in self.exchange_layers:
            return None
        blk = patch.blocks(self._visual.transformer)[i]
        mask = exchange_mask(t, L, self.num_frame_prompts, self.num_global, blk.attn.in_proj_weight.device)
        return lambda h: masked_attention(h, patch.attention_weights(blk), mask)


def exchange_mask(t: int, L: int, nf: int, g: int, device) -> Tensor:
    """``(S, S)`` bool, True where query may attend key: every token its own frame (and G)
    and the prompt tokens of every frame."""
    frame = torch.arange(t, device=device).repeat_interleave(L)
    is_prompt = ((torch.arange(t * L, device=device) % L) >= 1) & ((torch.arange(t * L, device=device) % L) <= nf)
    allowed = (frame[:, None] == frame[None, :]) | is_prompt[None, :]
    if g:
        allowed = F.pad(allowed, (g, 0, g, 0), value=True)
    return allowed


def masked_attention(h: Tensor, weights: tuple, mask: Tensor) -> Tensor:
    """Multi-head self-attention of ``h`` ``(B, S, D)`` with a resblock's weights under a
    boolean mask (plain PyTorch)."""
    w_in, b_in, w_out, b_out, heads = weights
    bsz, s, d = h.shape
    q, k, v = F.linear(h, w_in.to(h.dtype), None if b_in is None else b_in.to(h.dtype)).chunk(3, dim=-1)
    split = lambda z: z.reshape(bsz, s, heads, d // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask,
                                         scale=1.0 / math.sqrt(d // heads))
    return F.linear(out.transpose(1, 2).reshape(bsz, s, d), w_out.to(h.dtype),
                    None if b_out is None else b_out.to(h.dtype))
