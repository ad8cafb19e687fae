"""Adapters (modules): Houlsby's bottleneck and the ST-Adapter, both starting at identity.

* :class:`BottleneckAdapter` (Houlsby et al. 2019): ``a + up(act(down(a)))``, applied to
  a block's attention output before the residual add.
* :class:`STAdapter` (Pan et al. 2022): ``up(dwconv3d(down(x)))`` over the patch tokens
  of a video laid out as ``(B, T, h, w, D)``, a depthwise 3-D convolution (default
  kernel 3x1x1: each patch sees itself in the neighbouring frames), added to the
  residual stream before a block.

The up-projection is zero-initialised, so a model with fresh adapters computes exactly
what it computed without them.
"""

from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from .prompts import QuickGELU


class BottleneckAdapter(nn.Module):
    def __init__(self, width: int, hidden: int = 368) -> None:
        super().__init__()
        self.down = nn.Linear(width, hidden)
        self.act = QuickGELU()
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, a: Tensor) -> Tensor:
        return a + self.up(self.act(self.down(a)))


class STAdapter(nn.Module):
    def __init__(self, width: int, hidden: int = 368, kernel: Tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__()
        self.down = nn.Linear(width, hidden)
        self.conv = nn.Conv3d(hidden, hidden, kernel, padding=tuple(k // 2 for k in kernel), groups=hidden)
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, T, h, w, D)`` patch tokens -> the residual update, same shape."""
        h = self.down(x).permute(0, 4, 1, 2, 3)  # (B, hidden, T, h, w)
        h = self.conv(h).permute(0, 2, 3, 4, 1)
        return self.up(h)
