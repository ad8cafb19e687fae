"""``full-finetune``: CLIP4Clip's meanP with every backbone parameter trained."""

from __future__ import annotations

from .dgl import DGL


class FullFinetune(DGL):
    """CLIP4Clip meanP (Luo et al. 2022): each frame encoded alone by the CLIP, the video
    embedding the mean of the L2-normalised frame embeddings, and every CLIP parameter
    (``logit_scale`` too) trained. The visual attention still runs on the fused op (with
    no global tokens it is per-frame self-attention), whose explicit backward computes
    the weight gradients here. Recipe (CLIP4Clip): lr 1e-7, cosine, weight decay 0.2.
    Saved files hold the whole backbone."""

    _method = "full-finetune"

    def __init__(self, clip_model, **options) -> None:
        super().__init__(clip_model, **options)
        for p in self.clip.parameters():
            p.requires_grad_(True)
