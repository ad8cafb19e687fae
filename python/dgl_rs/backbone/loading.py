"""Frozen CLIP backbones from open_clip: OpenAI weights, a local file, random init, or
the tiny CLIP shipped with dgl-rs (``synthetic-tiny``, pretrained on synthetic stills).

:func:`load_clip` returns ``(model, preprocess_cfg, tokenizer)`` where
``preprocess_cfg`` is ``{"image_size": int, "mean": (3 floats), "std": (3 floats)}``
(feed it to :meth:`dgl_rs.data.VideoTransform.from_preprocess_cfg`) and ``tokenizer``
maps a list of texts to int64 token ids (N, context_length): dgl-rs's one tokenizer,
:func:`dgl_rs.tokenize` (CLIP's BPE, the tokenizer of every model dgl-rs supports).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import open_clip
import torch

from .text import tokenize

log = logging.getLogger("dgl_rs.backbones")

PACKAGE_DIR = Path(__file__).resolve().parent.parent
OPEN_CLIP_VERSION = open_clip.__version__
SYNTHETIC_TINY = "synthetic-tiny"
SYNTHETIC_TINY_CONFIG = PACKAGE_DIR / "configs" / f"{SYNTHETIC_TINY}.json"
SYNTHETIC_TINY_WEIGHTS = PACKAGE_DIR / "assets" / f"{SYNTHETIC_TINY}.safetensors"
DEFAULT_MODEL = "ViT-B-32-quickgelu"
_SCHEMAS = ("hf-hub:", "local-dir:")


def register_synthetic_tiny() -> None:
    """Make ``synthetic-tiny`` an open_clip model name (idempotent)."""
    if SYNTHETIC_TINY not in open_clip.list_models():
        open_clip.add_model_config(SYNTHETIC_TINY_CONFIG)


def _check_model_name(model_name: str) -> None:
    if model_name.startswith(_SCHEMAS) or model_name in open_clip.list_models():
        return
    names = open_clip.list_models()
    close = [n for n in names if n.lower().startswith(model_name.split("-")[0].lower())][:8]
    examples = close or [DEFAULT_MODEL, "ViT-B-16-quickgelu", "ViT-L-14", SYNTHETIC_TINY]
    raise ValueError(f"unknown model {model_name!r}; valid names include {examples} "
                     f"({len(names)} in open_clip.list_models())")


def preprocess_cfg(model) -> dict[str, Any]:
    cfg = open_clip.get_model_preprocess_cfg(model) or {}
    size = cfg.get("size", cfg.get("image_size"))
    if isinstance(size, (tuple, list)):
        size = size[0]
    return {"image_size": int(size),
            "mean": tuple(cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN),
            "std": tuple(cfg.get("std") or open_clip.OPENAI_DATASET_STD)}


def _offline_hint(model_name: str, tag: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not fetch the {tag!r} weights of {model_name} (no network, or the download "
        f"failed: {exc}). Pass a local checkpoint instead, e.g. `--pretrained "
        f"/path/to/ViT-B-32.pt` (load_clip(pretrained='/path/to/ViT-B-32.pt')), or put the "
        "weights in open_clip's cache (the Hugging Face hub cache, ~/.cache/huggingface/hub, "
        "or cache_dir=...) on a machine with network first.")


def load_clip(model_name: str = DEFAULT_MODEL, pretrained: Optional[str] = "openai",
              device: Union[str, torch.device] = "cpu", precision: str = "fp32", *,
              context_length: Optional[int] = None, cache_dir: Optional[str] = None,
              ) -> tuple[torch.nn.Module, dict[str, Any], Callable[[Any], torch.Tensor]]:
    """An open_clip CLIP model with its preprocessing config and tokenizer.

    ``pretrained``:
      - an open_clip tag such as ``"openai"`` (downloaded by open_clip; offline this
        raises a RuntimeError saying how to pass a local file instead);
      - a checkpoint file path (``.pt``/``.bin``/``.safetensors``, loaded by open_clip);
      - ``None`` or ``"none"``: random initialisation;
      - ``"synthetic-tiny"``: the checkpoint shipped in ``dgl_rs/assets`` (only with
        ``model_name="synthetic-tiny"``; for that model ``"openai"``, the default, also
        means the shipped checkpoint).

    ``context_length`` sets the tokenizer's length (default: the model's, 77 for OpenAI
    CLIP, 32 for synthetic-tiny). The model is returned in eval mode; freezing it is the
    caller's business. Raises ValueError for an unknown model or tag,
    FileNotFoundError for a missing checkpoint file.
    """
    if model_name == SYNTHETIC_TINY or pretrained == SYNTHETIC_TINY:
        register_synthetic_tiny()
    _check_model_name(model_name)
    tag = None if pretrained is None or str(pretrained).lower() == "none" else str(pretrained)
    if tag == SYNTHETIC_TINY or (model_name == SYNTHETIC_TINY and tag == "openai"):
        if model_name != SYNTHETIC_TINY:
            raise ValueError(f"pretrained='synthetic-tiny' needs model_name='synthetic-tiny', "
                             f"got {model_name!r}")
        if not SYNTHETIC_TINY_WEIGHTS.is_file():
            raise FileNotFoundError(f"the shipped synthetic-tiny weights are missing: "
                                    f"{SYNTHETIC_TINY_WEIGHTS} (run `dgl-rs pretrain-synthetic "
                                    f"--out {SYNTHETIC_TINY_WEIGHTS}`)")
        tag = str(SYNTHETIC_TINY_WEIGHTS)
    is_file = tag is not None and os.path.isfile(tag)
    if tag is not None and not is_file and not model_name.startswith(_SCHEMAS):
        known = open_clip.list_pretrained_tags_by_model(model_name)
        if tag not in known:
            if os.sep in tag or tag.endswith((".pt", ".bin", ".pth", ".safetensors")):
                raise FileNotFoundError(f"pretrained checkpoint file not found: {tag!r}")
            raise ValueError(f"unknown pretrained tag {tag!r} for {model_name}; known tags: "
                             f"{known or 'none'}; or pass a checkpoint file path or 'none'")
    try:
        model = open_clip.create_model(model_name, pretrained=tag, device=device,
                                       precision=precision, cache_dir=cache_dir)
    except RuntimeError as exc:
        if tag is not None and not is_file:
            raise _offline_hint(model_name, tag, exc) from exc
        raise
    model.eval()
    given = os.path.abspath(pretrained) if pretrained and os.path.isfile(str(pretrained)) else (pretrained or "none")
    set_origin(model, model_name, given)
    tokenizer = functools.partial(tokenize, context_length=context_length or getattr(model, "context_length", 77))
    return model, preprocess_cfg(model), tokenizer


ORIGIN = "dgl_rs_origin"


def set_origin(model: torch.nn.Module, model_name: str, pretrained: Optional[str]) -> None:
    """Tag a CLIP with the name and weights it was loaded from, so that a method saved on
    it records them (``Backbone.origin``) and its file alone rebuilds it."""
    setattr(model, ORIGIN, {"model": model_name, "pretrained": pretrained})


@contextlib.contextmanager
def _quiet():
    """Without open_clip's "No pretrained weights loaded" warning (the weights come next)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def create_clip(model_name: str, device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """An open_clip model with random weights drawn under a fixed seed (isolated from the
    global RNG), in eval mode: the skeleton a checkpoint's weights are loaded into."""
    if model_name == SYNTHETIC_TINY:
        register_synthetic_tiny()
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(0)
        model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    return model.to(device).eval()


def meta_clip(model_name: str) -> torch.nn.Module:
    """An open_clip model built on the meta device: shapes and dtypes, no memory."""
    if model_name == SYNTHETIC_TINY:
        register_synthetic_tiny()
    _check_model_name(model_name)
    with torch.device("meta"), _quiet():
        return open_clip.create_model(model_name, device="meta")


def state_shapes(model_name: str) -> dict[str, tuple]:
    """The ``state_dict`` shapes of an open_clip model, built on the meta device (no memory)."""
    return {k: tuple(v.shape) for k, v in meta_clip(model_name).state_dict().items()}
