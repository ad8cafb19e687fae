"""Captions to token ids: open_clip's tokenizer, the one place dgl-rs tokenizes."""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import open_clip
from torch import Tensor

#: Far beyond any CLIP text tower (77 for OpenAI CLIP); a bound so that a typo cannot
#: allocate (texts, context_length) int64 ids beyond the machine.
MAX_CONTEXT = 1 << 16


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 32) -> Tensor:
    """open_clip's tokenizer: ``[SOT, words..., EOT, 0...]``, ``(len(texts), context_length)``
    int64. Captions longer than the context are cut and still end with EOT. A text that is
    not a string, or a ``context_length`` that is not an int in [1, :data:`MAX_CONTEXT`],
    is a ``TypeError`` / ``ValueError``."""
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, Iterable):
        raise TypeError(f"`texts` must be a string or a sequence of strings, got {type(texts).__name__}")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"`texts` must hold strings, got a {type(t).__name__}: {t!r}")
    if isinstance(context_length, bool) or not isinstance(context_length, int):
        raise TypeError(f"`context_length` must be an int, got {type(context_length).__name__} {context_length!r}")
    if not 1 <= context_length <= MAX_CONTEXT:
        raise ValueError(f"`context_length` must be in [1, {MAX_CONTEXT}], got {context_length}")
    return open_clip.tokenize(texts, context_length=context_length)
