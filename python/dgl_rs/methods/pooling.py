"""Temporal modelling over the frame embeddings: Efficient Prompt's temporal transformer
and CLIP4Clip's seqTransf, as a video pooling on top of any DGL-family configuration."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .. import patch
from ..temporal import TemporalTransformer
from .dgl import DGL, _int


class TemporalPooling(DGL):
    """A DGL-family model whose video embedding comes from a temporal transformer over
    the frame embeddings (``pool="frame_cls_mean"``: the ``(B, T, D_out)`` projected CLS
    tokens of the frames).

    Extra options:
        temporal_layers: transformer blocks (0: none, plain meanP).
        temporal_residual: CLIP4Clip's seqTransf (``True``): ``e + TF(e + pos)``, then the
            mean of the L2-normalised frames; Efficient Prompt (``False``): the mean of
            ``TF(e + pos)``.
        temporal_init: ``"text"`` copies the blocks from the CLIP text tower's first layers
            and the frame positions from its positional embedding (CLIP4Clip) when the
            widths match; ``"default"``: PyTorch's initialisation.
    """

    OPTIONS = DGL.OPTIONS + ("temporal_layers", "temporal_residual", "temporal_init")

    def __init__(self, clip_model: nn.Module, temporal_layers: int = 0, temporal_residual: bool = True,
                 temporal_init: str = "default", **options) -> None:
        super().__init__(clip_model, **options)
        self.temporal_layers = _int("temporal_layers", temporal_layers, 0)
        if not isinstance(temporal_residual, bool):
            raise TypeError(f"`temporal_residual` must be a bool, got {temporal_residual!r}")
        if temporal_init not in ("default", "text"):
            raise ValueError(f"`temporal_init` must be 'default' or 'text', got {temporal_init!r}")
        if self.temporal_layers and self.pool != "frame_cls_mean":
            raise ValueError("a temporal transformer pools frame embeddings: it needs pool='frame_cls_mean'")
        self.temporal_residual, self.temporal_init = temporal_residual, temporal_init
        self.temporal: Optional[TemporalTransformer] = None
        if self.temporal_layers:
            width = patch.visual_output_width(self._visual)
            self.temporal = TemporalTransformer(width, self.temporal_layers, max(1, width // 64), self.num_frames)
            if temporal_init == "text":
                self._init_from_text()
            self._place_prompts()

    def _init_from_text(self) -> None:
        """CLIP4Clip: the temporal blocks start as the text tower's first blocks."""
        text_blocks = patch.blocks(self._text.transformer)
        width = self.temporal.position.shape[1]
        if self._text.width != width or len(text_blocks) < self.temporal_layers:
            return
        for blk, src in zip(self.temporal.blocks, text_blocks):
            blk.load_state_dict(src.state_dict())
        n = min(self.num_frames, self._text.positional_embedding.shape[0])
        self.temporal.position.data[:n] = self._text.positional_embedding[:n]  # more frames: the rest stay random

    @property
    def config(self) -> dict:
        return {**super().config, "temporal_layers": self.temporal_layers,
                "temporal_residual": self.temporal_residual, "temporal_init": self.temporal_init}

    def _pool_frames(self, frame_emb: Tensor) -> Tensor:
        if self.temporal is None:
            return super()._pool_frames(frame_emb)
        if self.temporal_residual:
            return F.normalize(frame_emb + self.temporal(frame_emb), dim=-1).mean(dim=1)
        return self.temporal(frame_emb).mean(dim=1)
