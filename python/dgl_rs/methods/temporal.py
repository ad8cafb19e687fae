"""Temporal modelling over the frame embeddings: a temporal transformer as the video pooling
(CLIP4Clip's seqTransf, Efficient Prompt's temporal transformer)."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from ..backbone.openclip import Backbone
from ..nn.temporal import TemporalTransformer
from .base import PromptedCLIP
from .options import Option
from .prompting import DeepPrompts


class TemporalPooling(PromptedCLIP):
    """Frames encoded alone; the video embedding comes from a temporal transformer over the
    ``(B, T, D_out)`` frame embeddings (the frames' projected CLS tokens).

    Options:
        temporal_layers: transformer blocks (0: none, plain meanP).
        temporal_residual: CLIP4Clip's seqTransf (``True``): ``e + TF(e + pos)``, then the
            mean of the L2-normalised frames; Efficient Prompt (``False``): the mean of
            ``TF(e + pos)``.
        temporal_init: ``"text"`` copies the blocks from the CLIP text tower's first layers
            and the frame positions from its positional embedding (CLIP4Clip) when the
            widths match; ``"default"``: PyTorch's initialisation.
    """

    OPTIONS = (
        Option("temporal_layers", "int", 0, "temporal transformer blocks over the frame embeddings (0: meanP)",
               low=0),
        Option("temporal_residual", "bool", True, "CLIP4Clip's seqTransf (residual to meanP) rather than "
               "Efficient Prompt's plain mean"),
        Option("temporal_init", "choice", "default", "'text': the temporal blocks start as the text tower's first "
               "blocks (CLIP4Clip)", choices=("default", "text")),
    )

    @property
    def fixed_num_frames(self) -> bool:
        return super().fixed_num_frames or bool(self.temporal_layers)  # positions per frame

    def _build(self, backbone: Backbone) -> None:
        super()._build(backbone)
        self.temporal: Optional[TemporalTransformer] = None
        if self.temporal_layers:
            width = backbone.output_width
            self.temporal = TemporalTransformer(width, self.temporal_layers, max(1, width // 64), self.num_frames)
            if self.temporal_init == "text":
                self._init_from_text(backbone)

    def _init_from_text(self, backbone: Backbone) -> None:
        """CLIP4Clip: the temporal blocks start as the text tower's first blocks."""
        width = self.temporal.position.shape[1]
        if backbone.text_width != width or backbone.text_layers < self.temporal_layers:
            return
        for i, blk in enumerate(self.temporal.blocks):
            blk.load_state_dict(backbone.text_block(i).state_dict())
        n = min(self.num_frames, backbone.text_positions.shape[0])
        self.temporal.position.data[:n] = backbone.text_positions[:n]  # more frames: the rest stay random

    def _pool_frames(self, frame_emb: Tensor) -> Tensor:
        if self.temporal is None:
            return super()._pool_frames(frame_emb)
        if self.temporal_residual:
            return F.normalize(frame_emb + self.temporal(frame_emb), dim=-1).mean(dim=1)
        return self.temporal(frame_emb).mean(dim=1)


class EfficientPrompt(TemporalPooling, DeepPrompts):
    """Efficient Prompt (Ju et al. 2022) as the paper's Table 1 runs it: text prompts around
    the caption in the input layer only, the frozen image tower, a temporal transformer
    over the frame embeddings, mean-pooled (the ``efficient-prompt`` preset)."""

