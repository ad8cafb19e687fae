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

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone.openclip import Backbone
from ..nn.prompts import QuickGELU
from .options import Option
from .prompting import DeepPrompts


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


class VoP(DeepPrompts):
    """Basic VoP plus the video prompts (see the module docstring). Options of
    :class:`~dgl_rs.methods.prompting.DeepPrompts` and ``context_prompts``, ``context_dim``
    (the generator's bottleneck) and ``exchange_layers`` (visual block indices where the
    frames' prompts attend to each other, ``"upper_half"``, or ``None``: none)."""

    OPTIONS = (
        Option("context_prompts", "bool", False, "VoP^C: per-layer generators add the video's context to the "
               "frame prompts"),
        Option("context_dim", "int", 64, "VoP^C: the context generator's bottleneck width", low=1),
        Option("exchange_layers", "layers", None, "VoP^P: visual blocks where every token also sees all frames' "
               "prompts (block indices or upper_half)", choices=("upper_half",), nullable=True),
    )

    @classmethod
    def _validate(cls, values: Dict[str, Any], backbone: Backbone) -> None:
        super()._validate(values, backbone)
        n = backbone.vision_layers
        layers = values["exchange_layers"]
        if layers == "upper_half":
            layers = list(range(n // 2, n))
        layers = layers or []
        if any(i >= n for i in layers):
            raise ValueError(f"`exchange_layers` must be visual block indices < {n}, got {layers}")
        values["exchange_layers"] = layers or None
        if (values["context_prompts"] or layers) and not values["num_frame_prompts"]:
            raise ValueError("context and function-specific prompts need num_frame_prompts >= 1")

    def _build(self, backbone: Backbone) -> None:
        super()._build(backbone)
        d, n = backbone.vision_width, self.num_frame_prompts
        self.context = nn.ModuleList(ContextPrompts(d, n, self.context_dim) for _ in range(1, self._prompt_layers)) \
            if self.context_prompts else None

    def _exchanges(self, i: int) -> bool:
        return self.exchange_layers is not None and i in self.exchange_layers

    def _before_block(self, i: int, x: Tensor, frame_prompts, b: int, t: int, L: int) -> Tensor:
        if self._exchanges(i):
            return x  # the prompts carry their hidden states into an exchange block
        if self.context is not None and 0 < i < self._prompt_layers:
            cls = self._frame_cls(x, b, t, L)
            offset = self.context[i - 1](cls.mean(dim=1)).to(x.dtype)  # (B, n_f, D), one per video
            layer = frame_prompts[i].to(x.dtype)
            layer = layer.unsqueeze(0) if layer.dim() == 3 else layer
            frame_prompts = list(frame_prompts)
            frame_prompts[i] = layer + offset.unsqueeze(1)  # (B, T, n_f, D)
        return super()._before_block(i, x, frame_prompts, b, t, L)

    def _attention_override(self, i: int, b: int, t: int, L: int):
        if not self._exchanges(i):
            return None
        nf, g = self.num_frame_prompts, self.num_global
        return lambda h: self.backbone.masked_attention(i, h, exchange_mask(t, L, nf, g, h.device))


def exchange_mask(t: int, L: int, nf: int, g: int, device) -> Tensor:
    """``(S, S)`` bool, True where query may attend key: every token its own frame (and G)
    and the prompt tokens of every frame."""
    frame = torch.arange(t, device=device).repeat_interleave(L)
    is_prompt = ((torch.arange(t * L, device=device) % L) >= 1) & ((torch.arange(t * L, device=device) % L) <= nf)
    allowed = (frame[:, None] == frame[None, :]) | is_prompt[None, :]
    if g:
        allowed = F.pad(allowed, (g, 0, g, 0), value=True)
    return allowed
