"""``GlobalLocalAttention``: a drop-in for the ``nn.MultiheadAttention`` of a resblock."""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

from torch import Tensor, nn

from ..ops.attention import check_mode, global_local_attention


class GlobalLocalAttention(nn.Module):
    """Global-local video attention over a packed sequence, sharing an MHA's weights.

    ``GlobalLocalAttention.from_mha(block.attn, num_global=4, num_frames=12)``
    returns a module that holds the SAME parameter objects as ``block.attn``
    (nothing is copied; frozen stays frozen), with the same ``state_dict`` keys
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``),
    and that accepts the ``nn.MultiheadAttention`` call
    ``(query, key, value, need_weights=False, attn_mask=None)`` and returns
    ``(out, None)``. So ``block.attn = GlobalLocalAttention.from_mha(block.attn, ...)``
    just works; ``to_mha()`` gives the original module back.

    ``need_weights=True`` returns ``(out, weights)`` in ``nn.MultiheadAttention``'s
    convention, for the G global queries only (the frame tokens' local probabilities
    are never formed): ``(batch, G, G + frames * tokens)`` averaged over heads, or
    ``(batch, heads, G, G + frames * tokens)`` with ``average_attn_weights=False``;
    batch first whatever ``batch_first`` is, no gradient. What they mean in each
    ``mode`` is in :func:`dgl_rs.global_local_attention` (``need_weights``).
    :meth:`record_weights` keeps them from calls made by code that asks for none
    (e.g. open_clip's resblock).

    The input is the packed video sequence ``(batch, G + frames * tokens, dim)``
    (``(seq, batch, dim)`` if the MHA is not batch-first). ``num_frames`` can be
    changed between calls (attribute), or given per call.

    ``mode`` (attribute, default ``"global_local"``) picks the attention pattern:
    ``"global_local"`` (DGL), or the Table 3b ablations ``"local"`` (no global video
    attention) and ``"global"`` (no local frame attention, plain self-attention over
    the packed sequence); see :func:`dgl_rs.global_local_attention`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_global: int = 4,
        num_frames: int = 12,
        bias: bool = True,
        batch_first: bool = True,
        backend: str = "auto",
        recompute_qkv: bool = False,
        mode: str = "global_local",
    ) -> None:
        super().__init__()
        mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=batch_first)
        self._adopt(mha, num_global, num_frames, backend, recompute_qkv, mode)

    def _adopt(self, mha: nn.MultiheadAttention, num_global: int, num_frames: int, backend: str,
               recompute_qkv: bool = False, mode: str = "global_local") -> None:
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"`mha` must be an nn.MultiheadAttention, got {type(mha).__name__}")
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("`mha` must use one packed in_proj_weight (kdim == vdim == embed_dim)")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("`mha` with add_bias_kv or add_zero_attn is not supported")
        if mha.dropout:
            raise ValueError(f"`mha` must have dropout=0 (got {mha.dropout}); prompt tuning uses a frozen backbone")
        for name, value in (("num_global", num_global), ("num_frames", num_frames)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
        if num_global < 0:
            raise ValueError(f"`num_global` must be >= 0, got {num_global}")
        if num_frames < 1:
            raise ValueError(f"`num_frames` must be >= 1, got {num_frames}")
        check_mode(mode)
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.num_global = num_global
        self.num_frames = num_frames
        self.backend = backend
        self.recompute_qkv = recompute_qkv
        self.mode = mode
        # The same Parameter objects: shared, not copied.
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self._mha = (mha,)  # a tuple keeps it out of the module tree
        self._recorder: Optional[List[Tensor]] = None

    @classmethod
    def from_mha(
        cls, mha: nn.MultiheadAttention, num_global: int = 4, num_frames: int = 12, backend: str = "auto",
        recompute_qkv: bool = False, mode: str = "global_local",
    ) -> "GlobalLocalAttention":
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._adopt(mha, num_global, num_frames, backend, recompute_qkv, mode)
        return self

    @contextlib.contextmanager
    def record_weights(self) -> Iterator[List[Tensor]]:
        """``with attn.record_weights() as rec:``: every forward inside the block also
        appends its global queries' probabilities ``(batch, heads, G, seq)`` (detached)
        to the list ``rec``; the output is unchanged. Not re-entrant."""
        if self._recorder is not None:
            raise RuntimeError("GlobalLocalAttention.record_weights is already active on this module")
        self._recorder = []
        try:
            yield self._recorder
        finally:
            self._recorder = None

    def to_mha(self) -> nn.MultiheadAttention:
        """The ``nn.MultiheadAttention`` these weights came from (same parameters)."""
        return self._mha[0]

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        need_weights: bool = False,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        num_frames: Optional[int] = None,
        average_attn_weights: bool = True,
        **kwargs,
    ):
        if attn_mask is not None:
            raise ValueError("GlobalLocalAttention: `attn_mask` is not supported: the visual branch has no mask (DGL-SPEC 3)")
        if key_padding_mask is not None:
            raise ValueError("GlobalLocalAttention: `key_padding_mask` is not supported")
        for name, t in (("key", key), ("value", value)):
            if t is not None and t is not query:
                raise ValueError(f"GlobalLocalAttention is self-attention: `{name}` must be None or the same tensor as `query`")
        if kwargs:
            raise TypeError(f"GlobalLocalAttention got unexpected arguments {sorted(kwargs)}")
        frames = self.num_frames if num_frames is None else num_frames
        x = query if self.batch_first else query.transpose(0, 1)
        weights = None
        out = global_local_attention(
            x, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight, self.out_proj.bias,
            self.num_heads, self.num_global, frames, mode=self.mode, backend=self.backend,
            recompute_qkv=self.recompute_qkv, need_weights=need_weights or self._recorder is not None,
        )
        if isinstance(out, tuple):
            out, weights = out
            if self._recorder is not None:
                self._recorder.append(weights.detach())
            weights = (weights.mean(dim=1) if average_attn_weights else weights) if need_weights else None
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_global={self.num_global}, "
                f"num_frames={self.num_frames}, mode={self.mode!r}, batch_first={self.batch_first}")
