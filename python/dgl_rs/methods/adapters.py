"""Adapter baselines of the paper's Table 1: adapters in the frozen towers, meanP."""

from __future__ import annotations

from torch import Tensor, nn

from ..nn.adapters import BottleneckAdapter, STAdapter
from ..backbone.openclip import Backbone
from .base import PromptedCLIP
from .options import Option

VISUAL_ADAPTERS = ("houlsby", "st")


class Adapters(PromptedCLIP):
    """Frames encoded alone (no prompts), meanP, and adapters trained in both towers.

    * text tower: a Houlsby bottleneck adapter (D -> ``adapter_dim`` -> D, QuickGELU)
      on the attention output of every block, before the residual add;
    * visual tower: the same (``visual_adapter="houlsby"``, Visual-Text Adapter), or an
      ST-Adapter before every block (``"st"``, Video-Text Adapter): down-projection, a
      depthwise 3x1x1 convolution over (time, height, width) of the patch tokens,
      up-projection, added to the patch tokens (CLS untouched).

    Every up-projection starts at zero: at initialisation the model is zero-shot meanP.
    """

    OPTIONS = (
        Option("adapter_dim", "int", 368, "adapters' bottleneck width", low=1),
        Option("visual_adapter", "choice", "houlsby", "the visual tower's adapter: 'houlsby' (after the "
               "attention) or 'st' (ST-Adapter before every block)", choices=VISUAL_ADAPTERS),
    )

    def _build(self, backbone: Backbone) -> None:
        super()._build(backbone)
        d_v, d_t = backbone.vision_width, backbone.text_width
        self.text_adapters = nn.ModuleList(BottleneckAdapter(d_t, self.adapter_dim) for _ in range(backbone.text_layers))
        kind = BottleneckAdapter if self.visual_adapter == "houlsby" else STAdapter
        self.visual_adapters = nn.ModuleList(kind(d_v, self.adapter_dim) for _ in range(backbone.vision_layers))

    def _post_attention(self, tower: str, i: int):
        if tower == "text":
            return self.text_adapters[i]
        return self.visual_adapters[i] if self.visual_adapter == "houlsby" else None

    def _before_block(self, i: int, x: Tensor, frame_prompts, b: int, t: int, L: int) -> Tensor:
        if self.visual_adapter != "st":
            return x
        d = x.shape[-1]
        h, w = self.backbone.grid
        frames = x.reshape(b, t, L, d)
        start = L - h * w  # CLS first, then the h*w patches
        delta = self.visual_adapters[i](frames[:, :, start:].reshape(b, t, h, w, d)).reshape(b, t, h * w, d)
        frames = frames + nn.functional.pad(delta, (0, 0, start, 0))
        return frames.reshape(b, t * L, d)
