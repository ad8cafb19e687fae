"""Training checkpoints: one safetensors file per checkpoint, written atomically.

A checkpoint ``checkpoints/step_00000123.safetensors`` holds

* the prompt parameters (``model.prompt_state_dict()``) under ``prompts.<name>``;
* everything needed to continue bit-for-bit: optimizer, scheduler and grad-scaler state,
  the RNG states of every rank (python, numpy, torch, cuda), epoch, step within the
  epoch (the data-loader position: the shuffle order is a function of (seed, epoch), so
  a position is a step count) and the global step, plus the run config.

Non-tensor state is a JSON tree in the safetensors metadata; its tensors are stored
next to the prompts under ``state.<path>``. No pickle, so a checkpoint from anywhere is
safe to open. Writes go to a temp file in the same directory, are fsynced, then
``os.replace``d over the final name and the directory is fsynced: a write that dies
midway leaves no file under a checkpoint name and the previous checkpoint untouched.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from ..util.errors import UsageError
from ..util.files import atomic_write_bytes, safetensors_bytes

log = logging.getLogger("dgl_rs.checkpoints")

FORMAT = "dgl-rs-checkpoint/1"
_NAME = re.compile(r"^step_(\d+)\.safetensors$")


# ------------------------------------------------------------------ JSON <-> tensors
def _pack(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64)
                                         if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": path, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__} at {path!r}")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: _unpack(v, tensors) for k, v in obj["__dict__"]}
    return obj


# ----------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """The python, numpy, torch (and cuda, when initialised) RNG states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------- checkpoints
def encode_checkpoint(prompts: dict[str, torch.Tensor], state: dict) -> bytes:
    """Serialise ``prompts`` (tensors) and ``state`` (nested JSON-able tree with tensors,
    numpy arrays and tuples inside) into safetensors bytes."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _pack(state, tensors, "state")
    for name, value in prompts.items():
        tensors[f"prompts.{name}"] = value.detach().cpu().clone().contiguous()
    meta = {"format": FORMAT, "state": json.dumps(tree)}
    return safetensors_bytes(tensors, meta)


def decode_checkpoint(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = st_load(data)
    # safetensors.torch.load drops metadata; read it from the header.
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"not a dgl-rs training checkpoint (format={meta.get('format')!r})")
    prompts = {k[len("prompts."):]: v for k, v in tensors.items() if k.startswith("prompts.")}
    state = _unpack(json.loads(meta["state"]), tensors)
    return prompts, state


def save_checkpoint(path: str | os.PathLike, prompts: dict[str, torch.Tensor], state: dict) -> Path:
    """Atomically write one checkpoint file (see the module docstring)."""
    return atomic_write_bytes(path, encode_checkpoint(prompts, state))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(prompts, state)``. A
    truncated or damaged file is a :class:`UsageError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return decode_checkpoint(path.read_bytes())
    except (SafetensorError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UsageError(f"checkpoint {path} is damaged or not a dgl-rs training checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a safetensors file in the training-checkpoint format."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 1 << 26:
                return False
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return meta.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temp files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_intact(found: list[Path]) -> Path:
    """The newest of ``found`` (oldest first) that loads; each newer, damaged one is
    named in a warning (and left in place). None loading is a :class:`UsageError`."""
    damaged = []
    for path in reversed(found):
        try:
            load_checkpoint(path)
        except UsageError as exc:
            damaged.append(str(exc))
            continue
        for message in damaged:
            log.warning("%s: resuming from the newest intact one, %s", message, path.name)
        return path
    raise UsageError(f"--resume: every checkpoint in {found[0].parent} is damaged: " + "; ".join(damaged))


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
