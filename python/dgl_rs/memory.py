"""How much memory a method's sizes need, checked before anything is allocated.

:func:`check_memory` refuses frame or prompt counts whose one-video forward needs more
memory than the machine has (a typo such as ``--num-frames 100000`` would otherwise be
OOM-killed minutes later), with the estimate in the message. Layer: above
:mod:`dgl_rs.patch` (it reads the backbone's shape), below the methods.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import nn

from . import patch
from .errors import UsageError

#: The options that size the tensors of one forward, with the DGL class's defaults.
SIZES = {"num_frames": 12, "generator": "transformer", "num_global": 4, "num_frame_prompts": 4,
         "num_text_prompts": (4, 4), "context_length": 32}


def _size(value: Any) -> int:
    """A size option as a count; anything but a positive int counts 0 (the method's own
    checks report it), so the other sizes are still checked."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def memory_estimate(clip: nn.Module, options: dict[str, Any], videos: int = 1) -> int:
    """A lower bound of the bytes (float32) one forward of ``videos`` videos needs with
    these method options: the frames, one visual layer's working set over the packed
    sequence, every layer's prompts, and the text tower's causal mask and working set."""
    o = {k: options.get(k, default) for k, default in SIZES.items()}
    t, g, n_f, c = (_size(o[k]) for k in ("num_frames", "num_global", "num_frame_prompts", "context_length"))
    pair = o["num_text_prompts"] if isinstance(o["num_text_prompts"], (tuple, list)) else ()
    n_t = sum(_size(v) for v in pair)
    if not o["generator"]:  # no local prompts
        n_f = n_t = 0
    visual, text = patch.vision_tower(clip), patch.text_tower(clip)
    (h, w), p = patch.image_size(visual), patch.patch_size(visual)
    d_v, d_t = visual.transformer.width, text.width
    seq_v, seq_t = g + t * ((h // p) * (w // p) + 1 + n_f), c + n_t
    layers = max(len(patch.blocks(visual.transformer)), len(patch.blocks(text.transformer)))
    floats = (videos * (t * 3 * h * w + 8 * seq_v * d_v) + layers * (t * n_f * d_v + n_t * d_t)
              + g * d_v + seq_t * seq_t + 8 * seq_t * d_t)
    return 4 * floats


def machine_memory(device: torch.device) -> Optional[int]:
    """Bytes of memory of ``device`` (the GPU's, or the host's RAM); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platforms without sysconf
        return None


def check_memory(clip: nn.Module, options: dict[str, Any]) -> None:
    """Refuse, up front and with the estimate, sizes whose one-video forward
    (:func:`memory_estimate`) needs more memory than the machine has: a
    :class:`UsageError` (a ``ValueError``) naming them."""
    need = memory_estimate(clip, options)
    device = next(clip.parameters()).device
    have = machine_memory(device)
    if have is not None and need > have:
        sizes = ", ".join(f"{k}={options[k]!r}" for k in SIZES if k in options)
        raise UsageError(f"{sizes}: one video needs at least {need / 2**30:,.1f} GiB (estimate), more "
                         f"than the {have / 2**30:,.1f} GiB of {device.type} memory here")
