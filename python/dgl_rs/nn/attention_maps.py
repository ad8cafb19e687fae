"""Where a global prompt looks (the paper's Figure 5): its attention mass per frame and
per patch, from the global queries' probabilities of the fused op.

:func:`global_attention_map` turns the probabilities ``(batch, heads, G, G + T*L)``
that :class:`dgl_rs.GlobalLocalAttention` records into a :class:`GlobalAttentionMap`;
:meth:`dgl_rs.DGL.global_attention` does that for a model and a batch of videos. The
frame tokens are laid out as DGL packs them: ``[CLS, n_f frame prompts, P patches]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

from torch import Tensor


@dataclass(frozen=True)
class GlobalAttentionMap:
    """One global query's attention over a batch of videos, averaged over heads.

    ``frames (batch, T)``: the mass on each frame's tokens (CLS, frame prompts and
    patches); ``patches (batch, T, P)``: the mass on each patch token, row-major over a
    ``grid`` of ``(rows, cols)`` patches; ``on_global (batch,)``: the mass on the G
    global tokens themselves. ``frames.sum(-1) + on_global == 1``. ``layer`` is the
    visual block (0-based) and ``query`` the global prompt (an index, or ``"mean"``
    over all G).
    """

    frames: Tensor
    patches: Tensor
    on_global: Tensor
    grid: Tuple[int, int]
    layer: int
    query: Union[int, str]

    def patch_grid(self) -> Tensor:
        """``patches`` as images ``(batch, T, rows, cols)``."""
        return self.patches.reshape(*self.patches.shape[:2], *self.grid)


def select_query(weights: Tensor, query: Union[int, str]) -> Tensor:
    """``(batch, heads, G, seq)`` -> ``(batch, seq)``: heads averaged, then global query
    ``query`` (an int in ``[-G, G)``) or their mean (``"mean"``)."""
    if weights.dim() != 4:
        raise ValueError(f"`weights` must be (batch, heads, G, seq), got {tuple(weights.shape)}")
    g = weights.shape[2]
    w = weights.float().mean(dim=1)
    if query == "mean":
        return w.mean(dim=1)
    if isinstance(query, bool) or not isinstance(query, int) or not -g <= query < g:
        raise ValueError(f"`query` must be an int in [{-g}, {g}) (the global prompt) or 'mean', got {query!r}")
    return w[:, query]


def global_attention_map(weights: Tensor, num_frames: int, num_frame_prompts: int, grid: Tuple[int, int],
                         query: Union[int, str] = 0, layer: int = -1) -> GlobalAttentionMap:
    """The :class:`GlobalAttentionMap` of the global queries' probabilities ``weights
    (batch, heads, G, G + T*L)`` of a DGL video, ``L = 1 + num_frame_prompts + rows*cols``."""
    row = select_query(weights, query)
    b, s = row.shape
    g, t = weights.shape[2], num_frames
    p = grid[0] * grid[1]
    L = 1 + num_frame_prompts + p
    if s != g + t * L:
        raise ValueError(f"`weights` covers {s} tokens; {g} global + {t} frames x (1 CLS + {num_frame_prompts} "
                         f"prompts + {p} patches) = {g + t * L} expected")
    per_frame = row[:, g:].reshape(b, t, L)
    return GlobalAttentionMap(frames=per_frame.sum(-1), patches=per_frame[:, :, 1 + num_frame_prompts:],
                              on_global=row[:, :g].sum(-1), grid=tuple(grid), layer=layer, query=query)


__all__ = ["GlobalAttentionMap", "global_attention_map", "select_query"]
