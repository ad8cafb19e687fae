"""``full-finetune``: CLIP4Clip with every backbone parameter trained (meanP or seqTransf)."""

from __future__ import annotations

from .pooling import TemporalPooling


class FullFinetune(TemporalPooling):
    """CLIP4Clip (Luo et al. 2022): each frame encoded alone by the CLIP and every CLIP
    parameter (``logit_scale`` too) trained. meanP: the video embedding is the mean of
    the L2-normalised frame embeddings; with ``temporal_layers=4, temporal_residual=True,
    temporal_init="text"`` it is CLIP4Clip's seqTransf head. The visual attention still
    runs on the fused op (with no global tokens it is per-frame self-attention), whose
    explicit backward computes the weight gradients here. Recipe (CLIP4Clip): lr 1e-7,
    cosine, weight decay 0.2. Saved files hold the whole backbone."""

    def __init__(self, clip_model, **options) -> None:
        super().__init__(clip_model, **options)
        for p in self.clip.parameters():
            p.requires_grad_(True)

    @property
    def method(self) -> str:
        return getattr(self, "_method", None) or ("full-finetune-seqtransf" if self.temporal_layers
                                                  else "full-finetune")
