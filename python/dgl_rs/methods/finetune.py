"""``full-finetune``: CLIP4Clip with every backbone parameter trained (meanP or seqTransf)."""

from __future__ import annotations

from ..backbone.openclip import Backbone
from .options import Option
from .temporal import TemporalPooling


class FullFinetune(TemporalPooling):
    """CLIP4Clip (Luo et al. 2022): each frame encoded alone by the CLIP and every CLIP
    parameter (``logit_scale`` too) trained. meanP: the video embedding is the mean of
    the L2-normalised frame embeddings; with ``temporal_layers=4, temporal_residual=True,
    temporal_init="text"`` it is CLIP4Clip's seqTransf head. The visual attention still
    runs on the fused op (with no global tokens it is per-frame self-attention), whose
    explicit backward computes the weight gradients here. Saved files hold the whole
    backbone.

    Recipe (CLIP4Clip): lr 1e-4 with ``backbone_lr_scale=1e-3`` (CLIP4Clip's ``coef_lr``),
    so the pretrained CLIP trains at 1e-7 and the new temporal transformer at 1e-4;
    cosine, weight decay 0.2. The trainer's optimizer reads :meth:`lr_scale`; with an
    optimizer of your own, give the ``clip.*`` parameters the lower lr yourself."""

    OPTIONS = (Option("backbone_lr_scale", "float", 1.0, "full fine-tuning: the CLIP's lr is --lr times this, new "
                      "modules train at --lr (CLIP4Clip's coef_lr)", low=0),)

    def _build(self, backbone: Backbone) -> None:
        super()._build(backbone)
        for p in self.clip.parameters():
            p.requires_grad_(True)

    def lr_scale(self, name: str) -> float:
        """``backbone_lr_scale`` for the CLIP's parameters, 1 for the temporal transformer."""
        return self.backbone_lr_scale if name.startswith("clip.") else 1.0
