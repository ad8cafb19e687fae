"""Adapter baselines of the paper's Table 1: adapters in the frozen towers, meanP."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import patch
from ..adapters import BottleneckAdapter, STAdapter
from .dgl import DGL, _int

VISUAL_ADAPTERS = ("houlsby", "st")


class Adapters(DGL):
    """Frames encoded alone (no prompts), meanP, and adapters trained in both towers.

    * text tower: a Houlsby bottleneck adapter (D -> ``adapter_dim`` -> D, QuickGELU)
      on the attention output of every block, before the residual add;
    * visual tower: the same (``visual_adapter="houlsby"``, Visual-Text Adapter), or an
      ST-Adapter before every block (``"st"``, Video-Text Adapter): down-projection, a
      depthwise 3x1x1 convolution over (time, height, width) of the patch tokens,
      up-projection, added to the patch tokens (CLS untouched).

    Every up-projection starts at zero: at initialisation the model is zero-shot meanP.
    """

    OPTIONS = DGL.OPTIONS + ("adapter_dim", "visual_adapter")

    def __init__(self, clip_model: nn.Module, adapter_dim: int = 368, visual_adapter: str = "houlsby",
                 **options) -> None:
        super().__init__(clip_model, **options)
        self.adapter_dim = _int("adapter_dim", adapter_dim, 1)
        if visual_adapter not in VISUAL_ADAPTERS:
            raise ValueError(f"`visual_adapter` must be one of {VISUAL_ADAPTERS}, got {visual_adapter!r}")
        if self.num_frame_prompts:
            raise ValueError("adapters and frame prompts do not mix here: use num_frame_prompts=0")
        self.visual_adapter = visual_adapter
        d_v, d_t = self._visual.transformer.width, self._text.width
        self.text_adapters = nn.ModuleList(BottleneckAdapter(d_t, self.adapter_dim) for _ in range(self._text_layers))
        kind = BottleneckAdapter if visual_adapter == "houlsby" else STAdapter
        self.visual_adapters = nn.ModuleList(kind(d_v, self.adapter_dim) for _ in range(self._vision_layers))
        self._place_prompts()

    @property
    def config(self) -> dict:
        return {**super().config, "adapter_dim": self.adapter_dim, "visual_adapter": self.visual_adapter}

    def _post_attention(self, tower: str, i: int):
        if tower == "text":
            return self.text_adapters[i]
        return self.visual_adapters[i] if self.visual_adapter == "houlsby" else None

    def _before_block(self, i: int, x: Tensor, frame_prompts, b: int, t: int, L: int) -> Tensor:
        x = super()._before_block(i, x, frame_prompts, b, t, L)
        if self.visual_adapter != "st":
            return x
        g, d = self.num_global, x.shape[-1]
        h, w = (s // patch.patch_size(self._visual) for s in patch.image_size(self._visual))
        frames = x[:, g:].reshape(b, t, L, d)
        start = L - h * w  # CLS (and any prompts) first, then the h*w patches
        delta = self.visual_adapters[i](frames[:, :, start:].reshape(b, t, h, w, d)).reshape(b, t, h * w, d)
        frames = frames + nn.functional.pad(delta, (0, 0, start, 0))
        return torch.cat([x[:, :g], frames.reshape(b, t * L, d)], dim=1)

