"""The temporal transformer (module) of Efficient Prompt and of CLIP4Clip's seqTransf."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .prompts import PromptBlock


class TemporalTransformer(nn.Module):
    """Transformer blocks over a video's frame embeddings ``(B, T, D)``, with a learned
    position embedding per frame (Efficient Prompt's temporal module, CLIP4Clip's
    seqTransf). Blocks: pre-LN, unmasked, QuickGELU MLP 4x."""

    def __init__(self, width: int, layers: int, heads: int, num_frames: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.empty(num_frames, width).normal_(std=0.01))
        self.blocks = nn.ModuleList([PromptBlock(width, heads) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t != self.position.shape[0]:
            raise ValueError(f"the temporal transformer is learned for {self.position.shape[0]} frames, got {t}")
        x = x + self.position.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return x
