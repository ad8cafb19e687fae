"""The checkpoints released with the DGL paper, loaded into dgl-rs (../shared/spec/OFFICIAL-CHECKPOINT.md).

A released file (``ckpt.best.pth.tar``) is a ``torch.save`` dict whose ``state_dict`` holds
the whole frozen CLIP (``clip.`` + open_clip's key names) and the prompts, under
``module.`` when it was written under DDP. It is read with ``torch.load(...,
weights_only=True)`` only; anything that needs code to unpickle is refused.

* :func:`load_official`: the :class:`dgl_rs.DGL` model (backbone from the file's own
  weights; generator, T, prompt counts, context length from its shapes;
  ``postfix="after_padding"``, as the released code places the postfix prompts).
* ``official:PATH`` wherever the CLI takes ``--prompts`` (registered with
  :data:`dgl_rs.factory.SOURCES`), and as ``--pretrained`` of an index made from one.
* :func:`convert_official`: a dgl-rs prompt file plus the backbone it needs
  (``dgl-rs convert``).

Where the file is silent: the released code fixes 4 frame prompts and 4 + 4 text prompts
(the transformer table's rows are ``8 + 4 T``, which gives T); DGL-Linear's prompts do
not depend on T (12, the paper's, unless ``num_frames`` says otherwise); the context is
64 tokens for T = 64 (ActivityNet) and 32 otherwise, as in the released scripts.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import build as factory
from . import runs
from ..backbone.loading import SYNTHETIC_TINY, create_clip, preprocess_cfg, set_origin, state_shapes
from ..backbone.openclip import Backbone
from ..backbone.text import tokenize
from ..util.errors import UsageError
from ..util.files import atomic_write_bytes, safetensors_bytes

PathLike = Union[str, "os.PathLike[str]"]
PREFIX = "official:"
#: Backbones a released file can hold (the paper's ViT-B/32 and B/16), and the shipped
#: synthetic-tiny (tests and demos write released-format files around it).
BACKBONES = ("ViT-B-32-quickgelu", "ViT-B-16-quickgelu", SYNTHETIC_TINY)
#: The released code's prompt counts: frame prompts, prefix and postfix text prompts.
NUM_FRAME_PROMPTS, NUM_TEXT_PROMPTS = 4, (4, 4)
UNUSED = ("visual.position_ids",)

_BLOCK = "PromptTransformer.resblocks.0."
#: Transformer generator: released key (after ``clip.``) -> dgl-rs parameter.
TRANSFORMER_KEYS = {
    "unified_prompt_embedding.weight": "generator.table",
    **{_BLOCK + k: "generator.block." + k for k in (
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
        "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
        "mlp.c_proj.bias")},
    "unified_prompt_mlp.c_fc.weight": "generator.text_mlp.0.weight",
    "unified_prompt_mlp.c_fc.bias": "generator.text_mlp.0.bias",
    "unified_prompt_mlp.c_proj.weight": "generator.text_mlp.2.weight",
    "unified_prompt_mlp.c_proj.bias": "generator.text_mlp.2.bias",
}
#: Linear generator: released key -> dgl-rs parameter (the frame table is re-laid out).
LINEAR_KEYS = {
    "visual_prompt_embedding": "generator.frame_prompts",
    "prefix_text_prompt_proj_layer.weight": "generator.pre.weight",
    "prefix_text_prompt_proj_layer.bias": "generator.pre.bias",
    "postfix_text_prompt_proj_layer.weight": "generator.post.weight",
    "postfix_text_prompt_proj_layer.bias": "generator.post.bias",
}
GLOBAL_KEY = "visual.prompt_embeddings"


def _refuse(path, why: str) -> UsageError:
    return UsageError(f"{path} is not a released DGL checkpoint: {why}")


# ---------------------------------------------------------------------------- reading
def read_official(path: PathLike) -> Dict[str, Tensor]:
    """The file's ``state_dict`` with ``module.`` and ``clip.`` removed from every key.
    Raises FileNotFoundError, or :class:`UsageError` saying what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        why = why.group(1).strip() if why else str(exc).strip().splitlines()[0]
        if "Unsupported global" in why:
            raise _refuse(path, f"it needs code to unpickle, which weights_only=True refuses ({why.split(' was ')[0]})") from exc
        raise _refuse(path, f"torch.load cannot read it ({why})") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise _refuse(path, f"torch.load cannot read it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        got = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise _refuse(path, f"expected a dict with a 'state_dict' dict, got {got}")
    sd = ckpt["state_dict"]
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    odd = [k for k, v in sd.items() if not (isinstance(k, str) and k.startswith("clip.") and isinstance(v, Tensor))]
    if odd or not sd:
        raise _refuse(path, f"every state_dict entry must be a tensor under 'clip.'; not so: {odd[:5] or 'empty'}")
    return {k[len("clip."):]: v for k, v in sd.items()}


def backbone_name(backbone: Dict[str, Any]) -> str:
    """The open_clip model (of :data:`BACKBONES`) whose ``state_dict`` has exactly these
    keys and shapes (read on the meta device: nothing is allocated)."""
    got = {k: tuple(v.shape) for k, v in backbone.items()}
    for name in BACKBONES:
        if got == state_shapes(name):
            return name
    w = got.get("visual.conv1.weight")
    raise ValueError(f"the CLIP weights ({len(got)} tensors, visual.conv1.weight {w}) are none of {BACKBONES}")


def split_state(sd: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """``(backbone, prompts)``: the CLIP's tensors (unused buffers dropped) and the rest."""
    known = {GLOBAL_KEY, *TRANSFORMER_KEYS, *LINEAR_KEYS}
    prompts = {k: v for k, v in sd.items() if k in known}
    backbone = {k: v for k, v in sd.items() if k not in known and k not in UNUSED}
    return backbone, prompts


def official_config(prompts: Dict[str, Tensor], width: int, layers: int, num_frames: Optional[int] = None,
                    context_length: Optional[int] = None, max_context: int = 77) -> Dict[str, Any]:
    """The dgl-rs method and options the prompt tensors imply (``width``/``layers``: the
    visual tower's; ``max_context``: the text tower's positions). Raises ValueError naming
    the tensor that does not fit."""
    has_t, has_l = "unified_prompt_embedding.weight" in prompts, "visual_prompt_embedding" in prompts
    if has_t == has_l:
        raise ValueError("expected the prompts of exactly one generator (unified_prompt_embedding.weight for "
                         "DGL-Transformer or visual_prompt_embedding for DGL-Linear), found "
                         f"{'both' if has_t else 'neither'}")
    g = prompts.get(GLOBAL_KEY)
    if g is None or g.dim() != 3 or g.shape[0] != 1 or g.shape[2] != width or g.shape[1] < 1:
        raise ValueError(f"{GLOBAL_KEY} must be (1, G, {width}), got {None if g is None else tuple(g.shape)}")
    table = prompts["unified_prompt_embedding.weight" if has_t else "visual_prompt_embedding"]
    if table.shape[-1] != layers * width:
        raise ValueError(f"the prompt table has {table.shape[-1]} columns; {layers} layers x {width} expected")
    n_text = sum(NUM_TEXT_PROMPTS)
    if has_t:
        rows = table.shape[0]
        if table.dim() != 2 or rows <= n_text or (rows - n_text) % NUM_FRAME_PROMPTS:
            raise ValueError(f"unified_prompt_embedding.weight has {tuple(table.shape)}: {n_text} + "
                             f"{NUM_FRAME_PROMPTS} x T rows expected")
        t = (rows - n_text) // NUM_FRAME_PROMPTS
        if num_frames is not None and num_frames != t:
            raise ValueError(f"its DGL-Transformer prompts are learned for T={t} frame positions, not {num_frames}")
        n_f, method = NUM_FRAME_PROMPTS, "dgl-transformer"
    else:
        if table.dim() != 3 or table.shape[0] != 1:
            raise ValueError(f"visual_prompt_embedding must be (1, n_f, {layers * width}), got {tuple(table.shape)}")
        t, n_f, method = num_frames or 12, table.shape[1], "dgl-linear"
    options = dict(num_frames=t, num_global=g.shape[1], num_frame_prompts=n_f,
                   num_text_prompts=NUM_TEXT_PROMPTS if has_t else (n_f, n_f), postfix="after_padding",
                   context_length=context_length or min(64 if t == 64 else 32, max_context))
    return {"method": method, "options": options}


def prompt_state(prompts: Dict[str, Tensor], method: str, layers: int) -> Dict[str, Tensor]:
    """The released prompt tensors under dgl-rs's parameter names and layouts."""
    keys = TRANSFORMER_KEYS if method == "dgl-transformer" else LINEAR_KEYS
    missing = sorted(k for k in keys if k not in prompts)
    if missing:
        raise ValueError(f"missing {method} tensors {missing}")
    out = {"global_prompts": prompts[GLOBAL_KEY][0]}
    for theirs, ours in keys.items():
        out[ours] = prompts[theirs]
    if method == "dgl-linear":
        # (1, n_f, layers * D), layer-major columns -> (layers, n_f, D)
        f = prompts["visual_prompt_embedding"][0]
        out["generator.frame_prompts"] = f.reshape(f.shape[0], layers, -1).transpose(0, 1)
    return out


# ---------------------------------------------------------------------------- loading
def _backbone(path, backbone: Dict[str, Tensor], device) -> Tuple[str, nn.Module]:
    try:
        name = backbone_name(backbone)
    except ValueError as exc:
        raise _refuse(path, str(exc)) from exc
    clip = create_clip(name)  # weights: the file's, below
    set_origin(clip, name, PREFIX + os.path.abspath(path))
    clip.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in backbone.items()}, strict=True)
    return name, clip.to(device).eval()


def load_official_backbone(path: PathLike, device="cpu") -> Tuple[str, nn.Module]:
    """``(open_clip model name, CLIP)``: the frozen backbone a released file holds."""
    backbone, _ = split_state(read_official(path))
    return _backbone(path, backbone, device)


def _build(path, sd: Dict[str, Tensor], device, num_frames=None, context_length=None):
    backbone, prompts = split_state(sd)
    name, clip = _backbone(path, backbone, "cpu")
    view = Backbone(clip)
    width, layers = view.vision_width, view.vision_layers
    try:
        cfg = official_config(prompts, width, layers, num_frames, context_length, view.context_length)
        state = prompt_state(prompts, cfg["method"], layers)
    except (ValueError, TypeError) as exc:
        raise _refuse(path, str(exc)) from exc
    try:  # sizes the caller asked for (--num-frames, --context-length) may be the fault here
        model = factory.build_method(clip, cfg["method"], **cfg["options"])
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: cannot build its {cfg['method']} model: {exc}") from exc
    try:
        model.load_prompt_state_dict(state)
    except (ValueError, TypeError) as exc:
        raise _refuse(path, str(exc)) from exc
    return name, model.to(device).eval()


def load_official(path: PathLike, device="cpu", *, num_frames: Optional[int] = None,
                  context_length: Optional[int] = None):
    """The :class:`dgl_rs.DGL` model of a checkpoint released with the DGL paper, on
    ``device``, in eval mode: the open_clip backbone from the file's own weights
    (ViT-B/32 or B/16, recognised from the shapes), the matching generator, T, global and
    local prompt counts, context length and ``postfix="after_padding"``, and every
    prompt tensor loaded. ``num_frames`` sets T of a DGL-Linear file (default 12);
    ``context_length`` overrides the released one (32; 64 for T=64). A file that is not
    such a checkpoint raises :class:`dgl_rs.UsageError` naming what is wrong."""
    return _build(path, read_official(path), device, num_frames, context_length)[1]


def load_official_model(path: str, *, model_name=None, pretrained=None, device="cpu", num_frames=None,
                        context_length=None):
    """``load_model``'s ``(model, preprocess_cfg, meta)`` for ``--prompts official:PATH``."""
    name, model = _build(path, read_official(path), device, num_frames, context_length)
    if model_name not in (None, name) or pretrained not in (None, PREFIX + os.path.abspath(path)):
        raise UsageError(f"--prompts {PREFIX}{path} holds its own {name} backbone; leave --model/--pretrained out")
    meta = {"model": name, "pretrained": PREFIX + os.path.abspath(path), "method": model.method,
            "dgl": model.config, "prompts": os.path.abspath(path)}
    return model, preprocess_cfg(model.clip), meta


def load_official_clip(path: str, model_name: str, device="cpu"):
    """``load_backbone``'s ``(clip, preprocess_cfg, tokenizer)`` for ``--pretrained official:PATH``."""
    name, clip = load_official_backbone(path, device)
    if model_name not in (None, name):
        raise UsageError(f"--pretrained {PREFIX}{path} holds a {name} backbone, not {model_name}")
    return clip, preprocess_cfg(clip), functools.partial(tokenize, context_length=Backbone(clip).context_length)


factory.SOURCES[PREFIX] = {"model": load_official_model, "backbone": load_official_clip}


# ---------------------------------------------------------------------------- convert
def convert_official(path: PathLike, out: PathLike, *, num_frames: Optional[int] = None,
                     context_length: Optional[int] = None, overwrite: bool = False) -> Dict[str, str]:
    """Write a released checkpoint as dgl-rs files: ``out`` (a prompt file, as
    ``save_prompts`` writes), the backbone's weights beside it (``<stem>.backbone.safetensors``,
    open_clip's key names: ``--pretrained`` takes it) and ``model.json`` (so that
    ``--prompts out`` finds that backbone). Existing files are replaced only with
    ``overwrite``. Returns the three paths."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UsageError(f"OUT {out}: name the prompt file *.safetensors")
    backbone_file = out.with_name(out.stem + ".backbone.safetensors")
    side = out.with_name(runs.MODEL_JSON)
    existing = [str(p) for p in (out, backbone_file, side) if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    name, model = _build(path, read_official(path), "cpu", num_frames, context_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.clip.state_dict().items()}
    atomic_write_bytes(backbone_file, safetensors_bytes(weights, {"source": os.path.abspath(path)}))
    runs.export_prompts(model, out, name, str(backbone_file.resolve()), converted_from=os.path.abspath(path))
    return {"prompts": str(out), "backbone": str(backbone_file), "model_json": str(side)}


__all__ = ["PREFIX", "convert_official", "load_official", "load_official_backbone", "official_config",
           "read_official"]
