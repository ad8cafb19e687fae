"""Where and in what precision a command computes: ``--device`` and ``--precision``."""

from __future__ import annotations

import contextlib

import torch

from ..util.errors import UsageError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N`` as a device; a name
    torch does not know or a GPU this machine lacks is a :class:`UsageError`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"--device {device}: not a device ('auto', 'cpu', 'cuda' or 'cuda:N')") from exc
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: dgl-rs runs on 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}, {torch.cuda.device_count()} GPUs); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def autocast_for(precision: str, device: torch.device):
    """Autocast context of a resolved precision (fp32 / amp_bf16 / amp)."""
    if precision == "amp_bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "amp":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> amp_bf16 on CUDA with bf16 support (amp otherwise), fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "amp_bf16" if torch.cuda.is_bf16_supported() else "amp"
    if precision != "fp32" and device.type != "cuda":
        raise UsageError(f"--precision {precision} needs a CUDA device (CPU runs in fp32)")
    return precision
