"""The methods of the paper's Tables 1 and 3, each a named preset of a model class.

A method says what it adds to the frozen open_clip towers, what it trains and how a
video is pooled. :data:`METHODS` maps each name to a :class:`MethodSpec`;
:func:`dgl_rs.build_method` builds one. Every method has the interface of
:class:`DGL` (``encode_video``, ``encode_text``, ``forward``, ``trainable_parameters``,
``num_trainable``, ``save_prompts`` / ``load_prompts``, ``unpatch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

from .dgl import ATTENTIONS, DGL, FORMAT, GENERATORS, POOLS, POSTFIX, method_name, read_prompt_file
from .finetune import FullFinetune

_MEAN_POOLED = dict(num_global=0, pool="frame_cls_mean", attention="global_local")


@dataclass(frozen=True)
class MethodSpec:
    """A method: its class, the options it fixes (``pinned``), its defaults for the rest,
    training-recipe overrides, and the paper's Table 1 trainable count (ViT-B/32, in
    millions; None where the paper has no row for it)."""

    name: str
    cls: Type[DGL]
    summary: str
    pinned: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    paper_params_m: Optional[float] = None


METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("zero-shot", DGL, "frozen CLIP, mean of the frame embeddings (CLIP4Clip meanP, untrained)",
               pinned=dict(generator=None, **_MEAN_POOLED)),
    MethodSpec("full-finetune", FullFinetune, "CLIP4Clip meanP, every backbone parameter trained",
               pinned=dict(generator=None, **_MEAN_POOLED), recipe=dict(lr=1e-7), paper_params_m=123.54),
    MethodSpec("vpt", DGL, "VPT-deep: n visual prompts per layer after each frame's CLS, frames encoded "
               "alone, meanP; text tower untouched",
               pinned=dict(generator="independent", num_text_prompts=(0, 0), per_frame_prompts=False,
                           **_MEAN_POOLED),
               defaults=dict(num_frame_prompts=20), paper_params_m=0.18),
    MethodSpec("upt", DGL, "UPT: one unified transformer makes per-layer text and frame prompts from a "
               "learned table; frames encoded alone, meanP",
               pinned=dict(generator="transformer", **_MEAN_POOLED),
               defaults=dict(num_frame_prompts=4, num_text_prompts=(4, 4)), paper_params_m=9.57),
    MethodSpec("vop", DGL, "basic VoP: deep visual prompts shared by all frames, deep text prefix and "
               "postfix prompts, each branch its own parameters, meanP",
               pinned=dict(generator="independent", per_frame_prompts=False, **_MEAN_POOLED),
               defaults=dict(num_frame_prompts=8, num_text_prompts=(4, 4))),
    MethodSpec("dgl-linear", DGL, "DGL-Linear: global-local attention, frame prompts shared by all "
               "frames, text prompts linear maps of them",
               pinned=dict(generator="linear"), paper_params_m=0.83),
    MethodSpec("dgl-transformer", DGL, "DGL-Transformer: global-local attention, text and per-frame "
               "prompts from one unified transformer",
               pinned=dict(generator="transformer"), paper_params_m=9.57),
    MethodSpec("dgl-divided", DGL, "Table 3f's baseline: DGL's global prompts and global-local attention, "
               "text and frame prompts learned separately",
               pinned=dict(generator="independent")),
)}

#: The options every DGL-family method accepts (its constructor's keyword arguments).
OPTIONS = ("num_frames", "generator", "num_global", "num_frame_prompts", "num_text_prompts", "postfix",
           "context_length", "pool", "attention", "linear_direction", "prompt_depth", "temporal_embedding",
           "per_frame_prompts")

__all__ = ["ATTENTIONS", "DGL", "FORMAT", "FullFinetune", "GENERATORS", "METHODS", "MethodSpec", "OPTIONS",
           "POOLS", "POSTFIX", "method_name", "read_prompt_file"]
