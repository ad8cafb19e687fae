"""The backbone layer: the only code that reads open_clip.

* :mod:`.openclip`: :class:`Backbone`, the one view of a CLIP that methods use (shapes,
  embeddings, both towers' forward passes with :class:`Hooks`, the visual attention's
  configuration as a per-call :class:`VideoAttention`), and ``apply_dgl``/``remove_dgl``.
* :mod:`.loading`: open_clip models by name and weights (:func:`load_clip`), the bundled
  ``synthetic-tiny`` CLIP.
* :mod:`.text`: the one tokenizer (:func:`tokenize`).
* :mod:`.memory`: the memory a forward of given sizes needs, checked before allocating.
"""

from .loading import SYNTHETIC_TINY, load_clip
from .openclip import Backbone, Hooks, VideoAttention, apply_dgl, remove_dgl
from .text import tokenize

__all__ = ["SYNTHETIC_TINY", "Backbone", "Hooks", "VideoAttention", "apply_dgl", "load_clip", "remove_dgl",
           "tokenize"]
