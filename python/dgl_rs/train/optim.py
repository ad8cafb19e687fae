"""The optimizer of the recipe (DGL-SPEC section 6): AdamW with decoupled weight decay,
none on biases and 1-D parameters. The one place parameter groups are made."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

import torch
from torch import nn

from ..errors import UsageError


def no_decay_default(name: str, p: nn.Parameter) -> bool:
    """Biases and 1-D (norm) parameters get no weight decay."""
    return p.ndim < 2 or name.endswith("bias")


def param_groups(named_params: Iterable[Tuple[str, nn.Parameter]], weight_decay: float,
                 no_decay: Optional[Callable[[str, nn.Parameter], bool]] = None) -> list[dict]:
    """AdamW groups over the parameters that require grad: ``weight_decay`` on the rest,
    none on those ``no_decay(name, p)`` picks (default :func:`no_decay_default`)."""
    skip = no_decay or no_decay_default
    decay, plain = [], []
    for name, p in named_params:
        if p.requires_grad:
            (plain if skip(name, p) else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def make_optimizer(model, cfg) -> torch.optim.Optimizer:
    groups = param_groups(model.named_trainable_parameters(), cfg.wd)
    if not groups:
        raise UsageError(f"--method {getattr(cfg, 'method', None)} has no trainable parameters "
                         "(evaluate it with `dgl-rs eval --zero-shot`)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
