"""The methods of the paper's Tables 1 and 3, each a named preset of a model class.

A method says what it adds to the frozen open_clip towers, what it trains and how a
video is pooled. :data:`METHODS` maps each name to a :class:`MethodSpec`;
:func:`dgl_rs.build_method` builds one. Every method is a
:class:`~.base.PromptedCLIP` (``encode_video``, ``encode_text``, ``forward``,
``trainable_parameters``, ``num_trainable``, ``save_prompts`` / ``load_prompts``) and
declares its options once (:mod:`.options`). The classes::

    PromptedCLIP            zero-shot; frozen CLIP, hooks, options, saved files
    ├── Adapters            visual-text-adapter, video-text-adapter
    ├── TemporalPooling
    │   └── FullFinetune    full-finetune, full-finetune-seqtransf
    └── DeepPrompts         vpt, upt (deep frame and text prompts from a generator)
        ├── VoP             vop, vop-f, vop-c, vop-p, vop-fc, vop-fp
        ├── EfficientPrompt efficient-prompt (with TemporalPooling)
        └── DGL             dgl-linear, dgl-transformer, dgl-divided, dgl
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

from .adapters import Adapters
from .base import FORMAT, SPECS, PromptedCLIP, read_prompt_file
from .dgl import ATTENTIONS, DGL, POOLS, method_name
from .finetune import FullFinetune
from .options import Option, class_options
from .prompting import GENERATORS, POSTFIX, DeepPrompts
from .temporal import EfficientPrompt, TemporalPooling
from .vop import VoP


@dataclass(frozen=True)
class MethodSpec:
    """A method: its class, the options it fixes (``pinned``), its defaults for the rest,
    training-recipe overrides, and the paper's Table 1 trainable count (ViT-B/32, in
    millions; None where the paper has no row for it)."""

    name: str
    cls: Type[PromptedCLIP]
    summary: str
    pinned: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    paper_params_m: Optional[float] = None


_VOP = dict(generator="independent")
_VOP_DEFAULTS = dict(num_frame_prompts=8, num_text_prompts=(4, 4))

METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("zero-shot", PromptedCLIP, "frozen CLIP, mean of the frame embeddings (CLIP4Clip meanP, "
               "untrained)"),
    MethodSpec("full-finetune", FullFinetune, "CLIP4Clip meanP, every backbone parameter trained",
               pinned=dict(temporal_layers=0),
               defaults=dict(backbone_lr_scale=1e-3), recipe=dict(lr=1e-4),
               paper_params_m=123.54),
    MethodSpec("full-finetune-seqtransf", FullFinetune, "CLIP4Clip seqTransf: every backbone parameter "
               "trained, a 4-layer temporal transformer (from the text tower's first layers) residual to meanP",
               defaults=dict(temporal_layers=4, temporal_residual=True, temporal_init="text", backbone_lr_scale=1e-3),
               recipe=dict(lr=1e-4)),
    MethodSpec("visual-text-adapter", Adapters, "Houlsby bottleneck adapters (368) after the attention of every "
               "block of both towers, meanP",
               pinned=dict(visual_adapter="houlsby"), paper_params_m=11.82),
    MethodSpec("video-text-adapter", Adapters, "text: Houlsby adapters; visual: an ST-Adapter (depthwise 3x1x1 "
               "conv over time) before every block, meanP",
               pinned=dict(visual_adapter="st"), paper_params_m=11.94),
    MethodSpec("efficient-prompt", EfficientPrompt, "Efficient Prompt: text prompts around the caption in the "
               "input layer only, frozen image tower, 2-layer temporal transformer, mean-pooled",
               pinned=dict(generator="independent", num_frame_prompts=0, prompt_depth=1),
               defaults=dict(num_text_prompts=(8, 8), temporal_layers=2, temporal_residual=False),
               paper_params_m=6.35),
    MethodSpec("vpt", DeepPrompts, "VPT-deep: n visual prompts per layer after each frame's CLS, frames encoded "
               "alone, meanP; text tower untouched",
               pinned=dict(generator="independent", num_text_prompts=(0, 0), per_frame_prompts=False),
               defaults=dict(num_frame_prompts=20), paper_params_m=0.18),
    MethodSpec("upt", DeepPrompts, "UPT: one unified transformer makes per-layer text and frame prompts from a "
               "learned table; frames encoded alone, meanP",
               pinned=dict(generator="transformer"),
               defaults=dict(num_frame_prompts=4, num_text_prompts=(4, 4)), paper_params_m=9.57),
    MethodSpec("vop", VoP, "basic VoP: deep visual prompts shared by all frames, deep text prefix and "
               "postfix prompts, each branch its own parameters, meanP",
               pinned=dict(per_frame_prompts=False, context_prompts=False, exchange_layers=None, **_VOP),
               defaults=_VOP_DEFAULTS),
    MethodSpec("vop-f", VoP, "VoP^F: position-specific video prompts (a set per frame position)",
               pinned=dict(per_frame_prompts=True, context_prompts=False, exchange_layers=None, **_VOP),
               defaults=_VOP_DEFAULTS),
    MethodSpec("vop-c", VoP, "VoP^C: context-specific video prompts generated per layer from the frames' CLS "
               "tokens", pinned=dict(per_frame_prompts=False, context_prompts=True, **_VOP),
               defaults=_VOP_DEFAULTS),
    MethodSpec("vop-p", VoP, "VoP^P: function-specific video prompts: in the upper half of the layers the "
               "frames' prompts attend to each other", pinned=dict(per_frame_prompts=False, context_prompts=False,
                                                                   **_VOP),
               defaults=dict(exchange_layers="upper_half", **_VOP_DEFAULTS)),
    MethodSpec("vop-fc", VoP, "VoP^F+C", pinned=dict(per_frame_prompts=True, context_prompts=True, **_VOP),
               defaults=_VOP_DEFAULTS, paper_params_m=14.10),
    MethodSpec("vop-fp", VoP, "VoP^F+P", pinned=dict(per_frame_prompts=True, context_prompts=False, **_VOP),
               defaults=dict(exchange_layers="upper_half", **_VOP_DEFAULTS)),
    MethodSpec("dgl-linear", DGL, "DGL-Linear: global-local attention, frame prompts shared by all "
               "frames, text prompts linear maps of them",
               pinned=dict(generator="linear"), paper_params_m=0.83),
    MethodSpec("dgl-transformer", DGL, "DGL-Transformer: global-local attention, text and per-frame "
               "prompts from one unified transformer",
               pinned=dict(generator="transformer"), paper_params_m=9.57),
    MethodSpec("dgl-divided", DGL, "Table 3f's baseline: DGL's global prompts and global-local attention, "
               "text and frame prompts learned separately",
               pinned=dict(generator="independent")),
    MethodSpec("dgl", DGL, "the DGL class with every switch yours to set (what DGL(...) builds directly)"),
)}

SPECS.update(METHODS)


def settable_options(name: str) -> dict[str, Option]:
    """The options of method ``name`` a user may set (its class's, less those it pins)."""
    spec = METHODS[name]
    return {k: o for k, o in class_options(spec.cls).items() if k not in spec.pinned}


__all__ = ["ATTENTIONS", "Adapters", "DGL", "DeepPrompts", "EfficientPrompt", "FORMAT", "FullFinetune", "GENERATORS",
           "METHODS", "MethodSpec", "Option", "POOLS", "POSTFIX", "PromptedCLIP", "TemporalPooling", "VoP",
           "method_name", "read_prompt_file", "settable_options"]
