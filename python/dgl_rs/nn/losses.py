"""The one contrastive loss (DGL-SPEC section 6)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_infonce(logits: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """Mean of the cross-entropy over rows (text -> video) and columns (video -> text).

    ``logits`` ``(B, B)``. Without ``labels`` the matching pairs are on the diagonal.
    With ``labels`` ``(B,)``, every pair ``(i, j)`` with ``labels[i] == labels[j]`` is a
    positive, all positives of a row weighted equally (several videos with the same
    caption, as in the synthetic pretraining).
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"`logits` must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"`logits` must be a floating tensor, got {logits.dtype}")
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1] or logits.shape[0] == 0:
        raise ValueError(f"`logits` must be a square (B, B) matrix with B >= 1, got {tuple(logits.shape)}")
    if labels is None:
        target = torch.arange(logits.shape[0], device=logits.device)
    else:
        if not isinstance(labels, Tensor):
            raise TypeError(f"`labels` must be a torch.Tensor, got {type(labels).__name__}")
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"`labels` must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
        pos = (labels[:, None] == labels[None, :]).to(logits.dtype)
        target = pos / pos.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
