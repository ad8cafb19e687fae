"""Captions to token ids: open_clip's tokenizer, the one place dgl-rs tokenizes."""

from __future__ import annotations

from typing import Sequence, Union

import open_clip
from torch import Tensor


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 32) -> Tensor:
    """open_clip's tokenizer: ``[SOT, words..., EOT, 0...]``, ``(len(texts), context_length)``
    int64. Captions longer than the context are cut and still end with EOT."""
    if isinstance(texts, str):
        texts = [texts]
    return open_clip.tokenize(list(texts), context_length=context_length)
