"""``DGL``: dynamic global-local prompts (DGL-SPEC sections 1-6): deep prompts plus global
prompts prepended once per video and the global-local attention over the packed video.

The backbone is frozen; the trainable parameters are the global prompts and the prompt
generator (< 1% of ViT-B/32's). ``dgl-linear``, ``dgl-transformer`` and ``dgl-divided``
are presets of this class (:func:`dgl_rs.build_method`); ``dgl`` is the class with every
switch yours to set.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.attention_maps import GlobalAttentionMap, global_attention_map
from ..backbone.openclip import Backbone, VideoAttention
from ..ops.attention import MODES
from .options import Option
from ..nn.prompts import vpt_bound
from .prompting import DeepPrompts

#: Table 3a: first global prompt, mean of the global prompts, mean of the frame CLS
#: tokens (CLIP4Clip's meanP), mean of both.
POOLS = ("global", "global_mean", "frame_cls_mean", "global_local_mean")
#: Table 3b, see :class:`dgl_rs.GlobalLocalAttention`.
ATTENTIONS = MODES
#: How the global prompts start (see DGL._init_global).
GLOBAL_INITS = ("random", "cls")


def method_name(config: dict) -> str:
    """The registry name of a DGL configuration in a file that records none (written before
    files recorded their method): the preset it matches, else ``"dgl"``."""
    gen, g = config.get("generator"), config.get("num_global", 0)
    if gen is None and g == 0:
        return "zero-shot"
    if gen == "independent" and g > 0:
        return "dgl-divided"
    if gen in ("linear", "transformer"):
        return f"dgl-{gen}"
    return "dgl"


class DGL(DeepPrompts):
    """Dynamic Global-Local prompt tuning around a frozen open_clip CLIP.

    ``DGL(clip_model, num_frames=12, generator="transformer", ...)``: the CLIP is frozen
    (``logit_scale`` too) and never modified (several models may share it). Options of
    :class:`~dgl_rs.methods.prompting.DeepPrompts` (``generator``, ``num_frame_prompts``,
    ``num_text_prompts``, ``postfix``, ``prompt_depth``, ``per_frame_prompts``,
    ``linear_direction``), ``num_frames``, ``context_length`` and:

        num_global: n_g global prompts, prepended once per video.
        pool: the video embedding (Table 3a): ``"global"`` (ln_post + proj of the first
            global prompt), ``"global_mean"``, ``"frame_cls_mean"`` (CLIP4Clip's meanP) or
            ``"global_local_mean"``; every mean is over L2-normalised token embeddings.
        attention: ``"global_local"`` (default), ``"local"`` or ``"global"`` (Table 3b).
        temporal_embedding: add a learned per-frame-position vector (zero at start) to
            every frame's prompts, so that prompts shared by all frames can tell frame
            order (fixes T).
        global_init: ``"random"`` (VPT's uniform, the paper's) or ``"cls"`` (each global
            prompt starts as the class token after ``ln_pre``, plus small noise).

    With ``generator=None`` there are no local prompts (with ``num_global=0`` and
    ``pool="frame_cls_mean"``: the zero-shot mean-pooling baseline).
    """

    OPTIONS = (
        Option("num_global", "int", 4, "global prompts per video n_g", low=0),
        Option("pool", "choice", "global", "video embedding (Table 3a)", choices=POOLS),
        Option("attention", "choice", "global_local", "visual attention (Table 3b)", choices=ATTENTIONS),
        Option("temporal_embedding", "bool", False, "add a learned per-frame-position vector to the frame prompts"),
        Option("global_init", "choice", "random", "how the global prompts start: 'random' (VPT uniform, the "
               "paper's) or 'cls' (the class token)", choices=GLOBAL_INITS),
    )

    @classmethod
    def _validate(cls, values: Dict[str, Any], backbone: Backbone) -> None:
        super()._validate(values, backbone)
        if values["num_global"] == 0 and values["pool"] in ("global", "global_mean", "global_local_mean"):
            raise ValueError(f"`num_global` must be >= 1 with pool={values['pool']!r}, got 0")
        if values["temporal_embedding"] and not values["num_frame_prompts"]:
            raise ValueError("`temporal_embedding` is added to the frame prompts: it needs num_frame_prompts >= 1")

    @property
    def fixed_num_frames(self) -> bool:
        return super().fixed_num_frames or self.temporal_embedding

    def _build(self, backbone: Backbone) -> None:
        g, d_v = self.num_global, backbone.vision_width
        bound = vpt_bound(backbone.patch_size, d_v)
        # The global prompts first (their init draws from the RNG before the generator's).
        self.global_prompts = nn.Parameter(self._init_global(backbone, g, d_v, bound)) if g else None
        super()._build(backbone)
        self.frame_position = nn.Parameter(torch.zeros(self.num_frames, d_v)) if self.temporal_embedding else None
        self._record: Optional[Tuple[int, list]] = None

    def _init_global(self, backbone: Backbone, g: int, d_v: int, bound: float) -> Tensor:
        """VPT's uniform init (``"random"``), or ``"cls"``: every global prompt starts as a
        frame's class token after ``ln_pre`` (plus VPT-uniform noise scaled by 0.1 so the
        G prompts are not interchangeable), so at step 0 the first global prompt reads the
        whole video the way CLS reads a frame, and its output is near CLIP's space."""
        noise = torch.empty(g, d_v).uniform_(-bound, bound)
        if self.global_init == "random":
            return noise
        with torch.no_grad():
            cls = backbone.class_token().float().cpu()
        return cls.expand(g, -1) + 0.1 * noise

    # ---- prompts ---------------------------------------------------------------------
    def generate_prompts(self, num_frames: Optional[int] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        text, frames = super().generate_prompts(num_frames)
        if frames is not None and self.frame_position is not None:
            t = num_frames or self.num_frames
            if t != self.frame_position.shape[0]:
                raise ValueError(f"the temporal embedding is learned for {self.frame_position.shape[0]} frame "
                                 f"positions; got num_frames={t}")
            frames = frames + self.frame_position.to(frames.dtype)[None, :, None, :]
        return text, frames

    # ---- video -----------------------------------------------------------------------
    def _pack_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        """The packed sequence ``(B, G + T*L, D)`` before block 0 (DGL-SPEC section 2)."""
        x = super()._pack_video(frames, frame_prompts)
        if not self.num_global:
            return x
        return torch.cat([self.global_prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)

    def _video_attention(self, t: int) -> VideoAttention:
        return VideoAttention(self.num_global, t, self.attention)

    def _attention_override(self, i: int, b: int, t: int, L: int):
        if self._record is None or self._record[0] != i:
            return None
        attention, out = self._video_attention(t), self._record[1]

        def record(h: Tensor) -> Tensor:
            y, weights = self.backbone.visual_attention(i, h, attention, need_weights=True)
            out.append(weights.detach())
            return y
        return record

    def _read_global(self) -> Optional[int]:
        return 0 if self.pool == "global" else None

    def _pool(self, x: Tensor, b: int, t: int, L: int) -> Tensor:
        """The video embedding from the last layer's packed sequence (Table 3a); with
        ``pool="global"`` ``x`` is the first global token alone, ``(B, 1, D)``."""
        g = self.num_global
        if self.pool == "global":
            return self.backbone.project_visual(x[:, 0])
        if self.pool == "frame_cls_mean":
            return super()._pool(x, b, t, L)
        tokens = [x[:, :g]]
        if self.pool == "global_local_mean":
            tokens.append(self._frame_cls(x, b, t, L))
        return F.normalize(self.backbone.project_visual(torch.cat(tokens, dim=1)), dim=-1).mean(dim=1)

    @torch.no_grad()
    def global_attention(self, frames: Tensor, layer: int = -1, query=0) -> GlobalAttentionMap:
        """Where global prompt ``query`` (an index, or ``"mean"`` over all G) looks in visual
        block ``layer`` (paper Fig. 5), heads averaged: ``.frames (B, T)``, the attention
        mass on each frame; ``.patches (B, T, P)``, on each patch; ``.on_global (B,)``, on
        the global tokens (see :class:`dgl_rs.attention_maps.GlobalAttentionMap`). The
        fused op returns only the G query rows. ``frames`` as for :meth:`encode_video`."""
        frames = self._video_input(frames)
        n = self.backbone.vision_layers
        if not self.num_global:
            raise ValueError(f"{self.method} has no global prompts (num_global=0): nothing to show")
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"`layer` must be an int in [{-n}, {n}) (the visual blocks), got {layer!r}")
        self._record = (layer % n, [])
        try:
            self.encode_video(frames)
            weights = self._record[1][-1]
        finally:
            self._record = None
        return global_attention_map(weights, self.num_frames, self.num_frame_prompts, self.backbone.grid, query,
                                    layer % n)

