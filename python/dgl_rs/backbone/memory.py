"""How much memory a method's sizes and a batch need, checked before anything is allocated.

:func:`check_memory` refuses frame or prompt counts whose one-video forward needs more
memory than the machine has (a typo such as ``--num-frames 100000`` would otherwise be
OOM-killed minutes later), with the estimate in the message. It reads the backbone's
shape from :class:`~.openclip.Backbone`; the methods call it before they allocate.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch._subclasses.fake_tensor import is_fake

from ..util.errors import UsageError
from .openclip import Backbone

#: The options that size the tensors of one forward, and their value for a method without them.
SIZES = {"num_frames": 12, "generator": None, "num_global": 0, "num_frame_prompts": 0,
         "num_text_prompts": (0, 0), "context_length": 32}


def _size(value: Any) -> int:
    """A size option as a count; anything but a positive int counts 0 (the method's own
    checks report it), so the other sizes are still checked."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def memory_estimate(backbone, options: dict[str, Any], videos: int = 1) -> int:
    """A lower bound of the bytes (float32) one forward of ``videos`` videos needs with
    these method options: the frames, one visual layer's working set over the packed
    sequence, every layer's prompts, and the text tower's causal mask and working set."""
    backbone = backbone if isinstance(backbone, Backbone) else Backbone(backbone)  # or a CLIP
    o = {k: options.get(k, default) for k, default in SIZES.items()}
    t, g, n_f, c = (_size(o[k]) for k in ("num_frames", "num_global", "num_frame_prompts", "context_length"))
    pair = o["num_text_prompts"] if isinstance(o["num_text_prompts"], (tuple, list)) else ()
    n_t = sum(_size(v) for v in pair)
    if not o["generator"]:  # no local prompts
        n_f = n_t = 0
    (h, w), (gh, gw) = backbone.image_size, backbone.grid
    d_v, d_t = backbone.vision_width, backbone.text_width
    seq_v, seq_t = g + t * (gh * gw + 1 + n_f), c + n_t
    layers = max(backbone.vision_layers, backbone.text_layers)
    floats = (videos * 8 * seq_v * d_v + layers * (t * n_f * d_v + n_t * d_t)
              + g * d_v + seq_t * seq_t + 8 * seq_t * d_t)
    return 4 * floats + frames_bytes(videos, t, h, w)


def frames_bytes(videos: int, num_frames: int, height: int, width: int) -> int:
    """Bytes of a batch of decoded, normalised frames (float32 ``(videos, T, 3, H, W)``):
    what a loader holds before any model sees it."""
    return 4 * videos * num_frames * 3 * height * width


def machine_memory(device: torch.device) -> Optional[int]:
    """Bytes of memory of ``device`` (the GPU's, or the host's RAM); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platforms without sysconf
        return None


def check_memory(backbone, options: dict[str, Any], videos: int = 1, flag: Optional[str] = None) -> None:
    """Refuse, up front and with the estimate, sizes whose forward of ``videos`` videos
    (:func:`memory_estimate`) needs more memory than the machine has: a
    :class:`UsageError` (a ``ValueError``) naming ``flag`` (the batch's) and the sizes."""
    backbone = backbone if isinstance(backbone, Backbone) else Backbone(backbone)  # or a CLIP
    param = next(backbone.clip.parameters())
    if param.is_meta or is_fake(param):  # nothing will be allocated (dgl-rs estimate)
        return
    device = param.device
    sizes = ", ".join(f"{k}={options[k]!r}" for k in SIZES if k in options)
    what = f"{flag} {videos} ({sizes}): a batch of {videos} videos" if flag else f"{sizes}: one video"
    refuse_beyond(memory_estimate(backbone, options, videos), device, what)


def refuse_beyond(need: int, device: torch.device, what: str) -> None:
    """A :class:`UsageError` when ``need`` bytes exceed the memory of ``device``: "WHAT needs
    at least N GiB (estimate), more than the M GiB of ... memory here"."""
    have = machine_memory(device)
    if have is not None and need > have:
        raise UsageError(f"{what} needs at least {need / 2**30:,.1f} GiB (estimate), more "
                         f"than the {have / 2**30:,.1f} GiB of {device.type} memory here")
