"""The factory: backbones, any method from a name and options, any saved method file.

* :func:`load_backbone`: an open_clip CLIP (``load_clip``) with its errors as
  :class:`UsageError`, initialised under a fixed seed.
* :func:`build_method`: ``build_method(clip, "vpt", num_frames=12, **options)``.
* :func:`load_method`: a model from a file written by ``save_prompts`` (any method).
* :func:`load_model`: backbone + method from a prompts file, a training checkpoint or a
  run folder (what ``dgl-rs eval/encode/search`` take), or the zero-shot baseline.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from torch import nn

from ..backbone.loading import load_clip
from ..backbone.memory import check_memory
from ..methods import METHODS, method_name, read_prompt_file
from ..util.errors import UsageError
from ..util.files import check_readable
from . import checkpoints as ckpt
from . import runs
from .runs import resolve_prompts_path

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_MODEL = "ViT-B-32-quickgelu"
DEFAULT_PRETRAINED = "openai"
#: Other formats, given as ``PREFIX:PATH`` for ``prompts`` (``load_model``) or ``pretrained``
#: (``load_backbone``): prefix -> ``{"model": fn, "backbone": fn}`` with those functions'
#: signatures (path first). ``official:`` (the paper's released checkpoints) is registered
#: by :mod:`dgl_rs.official`.
SOURCES: dict[str, dict] = {}


def _source(value, kind: str):
    """The registered loader of ``kind`` for a ``PREFIX:PATH`` value, bound to PATH; else None."""
    for prefix, loaders in SOURCES.items():
        if isinstance(value, str) and value.startswith(prefix):
            return lambda *a, **kw: loaders[kind](value[len(prefix):], *a, **kw)
    return None


def load_backbone(model_name: str, pretrained: Optional[str], device="cpu"):
    """``(clip, preprocess_cfg, tokenizer)``; unknown models and unreachable weights
    raise :class:`UsageError`. The initialisation runs under a fixed seed, isolated from
    the global RNG: with ``pretrained="none"`` (random weights) training, evaluation and
    search all see the same backbone."""
    if _source(pretrained, "backbone"):
        return _source(pretrained, "backbone")(model_name, device=device)
    if isinstance(pretrained, str) and os.path.exists(pretrained) and (os.sep in pretrained or "." in pretrained):
        check_readable(pretrained, "--pretrained")  # a folder or an unreadable file, named as such
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return load_clip(model_name, pretrained, device=device, precision="fp32")
    except UsageError:
        raise
    except (ValueError, RuntimeError, OSError, KeyError, pickle.UnpicklingError, EOFError, SafetensorError) as exc:
        raise _backbone_error(model_name, pretrained, exc) from exc


def _backbone_error(model_name: str, pretrained, exc: Exception) -> UsageError:
    """Why a backbone did not load, as one line naming the weights: a file that is not a
    checkpoint of this model's weights says so."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (pickle.UnpicklingError, EOFError, SafetensorError)):
        return UsageError(f"--pretrained {pretrained}: not a checkpoint of {model_name} weights ({type(exc).__name__})")
    if text.startswith("Error(s) in loading state_dict"):  # the keys of another model: hundreds of them
        return UsageError(f"--pretrained {pretrained}: not a checkpoint of {model_name} weights "
                          f"({text[:200]} ...)")
    return UsageError(f"cannot load backbone --model {model_name} --pretrained {pretrained}: {text}")


def method_spec(name: str):
    if name not in METHODS:
        raise ValueError(f"`method` must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def build_method(clip: nn.Module, method: str, num_frames: int = 12, checkpoint_blocks: bool = False,
                 **options: Any) -> nn.Module:
    """A method around ``clip`` (frozen, except for ``full-finetune``).

    ``options`` are the method class's options (``dgl-rs methods --options NAME``) the
    method does not pin; passing a pinned one with another value is a ``ValueError`` naming it.
    ``checkpoint_blocks``: recompute each backbone block in the backward (activation
    checkpointing: the activations of one block at a time instead of all of them)."""
    spec = method_spec(method)
    declared = spec.cls.options()
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise TypeError(f"build_method({method!r}): unknown option(s) {unknown}; options are {list(declared)}")
    for key, value in options.items():
        if key in spec.pinned and _normal(value) != _normal(spec.pinned[key]):
            raise ValueError(f"method {method!r} fixes `{key}` to {spec.pinned[key]!r}; got {value!r}")
    kwargs = {**spec.defaults, **options, **spec.pinned, "num_frames": num_frames}
    model = spec.cls(clip, checkpoint_blocks=checkpoint_blocks, **kwargs)
    model._method = method
    return model


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def file_method(meta: dict) -> str:
    """The method a prompt file's metadata records (older files: inferred)."""
    return meta.get("method") or method_name(json.loads(meta["config"]))


def load_method(path: PathLike, clip: nn.Module, **overrides: Any) -> nn.Module:
    """The model saved in ``path`` (by ``save_prompts``) around ``clip``."""
    meta, _ = read_prompt_file(path)
    name = file_method(meta)
    return method_spec(name).cls.load_prompts(str(path), clip, **overrides)


def _recorded(source: Path):
    """``(recorded, state_dict)``: what a checkpoint, or a prompts file (the backbone it
    records) and the ``model.json`` beside it, say about the backbone and method (``{}``
    when nothing)."""
    if ckpt.is_checkpoint(source):
        state_dict, state = ckpt.load_checkpoint(source)  # UsageError naming a damaged file
        try:
            config = state["model_config"]
            return {"model": state["config"]["model"], "pretrained": state["config"]["pretrained"],
                    "dgl": config, "method": state.get("method") or method_name(config)}, state_dict
        except (KeyError, TypeError) as exc:
            raise UsageError(f"checkpoint {source} does not record its run ({exc!r} missing)") from exc
    try:
        meta, _ = read_prompt_file(source)
        origin = json.loads(meta.get("origin") or "{}")
    except ValueError as exc:
        raise UsageError(f"{exc}") from exc
    return {**origin, **runs.model_json(source)}, None


def _build_for(source: Optional[Path], recorded: dict, state_dict, clip, num_frames, context_length):
    if source is None:
        return build_method(clip, "zero-shot", num_frames=num_frames or 12, context_length=context_length or 32)
    if state_dict is not None:
        config = method_spec(recorded["method"]).cls.upgrade_config(recorded["dgl"], source)
        model = build_method(clip, recorded["method"], **config)
        model.load_prompt_state_dict(state_dict)
        return model
    return load_method(source, clip)


def load_model(prompts: Optional[PathLike] = None, *, model_name: Optional[str] = None,
               pretrained: Optional[str] = None, device="cpu", num_frames: Optional[int] = None,
               context_length: Optional[int] = None):
    """Rebuild a saved method on its frozen backbone: ``(model, preprocess_cfg, meta)``.

    ``prompts``: a ``prompts.safetensors`` written by training (the backbone is read from
    the ``model.json`` beside it), a training checkpoint (it records the run's config),
    or a run folder; ``None`` gives the zero-shot mean-pooling baseline. ``model_name`` /
    ``pretrained`` override the recorded backbone; ``num_frames`` the frames per video
    (not for prompts learned per frame position). ``meta`` is ``{"model", "pretrained",
    "method", "dgl", "prompts"}``: what an index records."""
    if num_frames is not None and (type(num_frames) is not int or num_frames < 1):
        raise UsageError(f"--num-frames must be an int >= 1, got {num_frames!r}")
    if _source(prompts, "model"):
        return _source(prompts, "model")(model_name=model_name, pretrained=pretrained, device=device,
                                         num_frames=num_frames, context_length=context_length)
    source = resolve_prompts_path(prompts) if prompts is not None else None
    recorded, state_dict = _recorded(source) if source is not None else ({}, None)
    name = model_name or recorded.get("model") or DEFAULT_MODEL
    weights = pretrained or recorded.get("pretrained") or DEFAULT_PRETRAINED
    clip, preprocess_cfg, _ = load_backbone(name, weights, device)
    try:
        model = _build_for(source, recorded, state_dict, clip, num_frames, context_length)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(f"{source}: {exc} (pass the --model/--pretrained it was trained with)") from exc
    if num_frames is not None and source is not None and num_frames != model.num_frames:
        set_num_frames(model, num_frames)
    model = model.to(device).eval()
    if isinstance(weights, str) and os.path.isfile(weights):
        weights = os.path.abspath(weights)
    meta = {"model": name, "pretrained": weights, "method": model.method, "dgl": model.config,
            "prompts": str(source) if source else None}
    return model, preprocess_cfg, meta


def set_num_frames(model: nn.Module, num_frames: int) -> None:
    """Change T of a built model, refused when its prompts are learned per frame position."""
    if model.fixed_num_frames:
        raise UsageError(f"{model.method} learns parameters for each of {model.num_frames} frame positions; "
                         f"--num-frames {num_frames} cannot change that")
    check_memory(model.backbone, {**model.config, "num_frames": num_frames})
    model.num_frames = num_frames


def trainable_counts(clip: nn.Module, num_frames: int = 12) -> dict[str, int]:
    """Trainable parameters of every method (its defaults) on ``clip``, by name. The CLIP
    is left unpatched and frozen."""
    counts = {}
    for name in METHODS:
        model = build_method(clip, name, num_frames=num_frames)
        counts[name] = model.num_trainable()
        model.freeze_backbone()
        model.unpatch()
    return counts
