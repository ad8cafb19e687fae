"""The optimizer of the recipe (DGL-SPEC section 6): AdamW with decoupled weight decay,
none on biases and 1-D parameters. The one place parameter groups are made."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

import torch
from torch import nn

from ..util.errors import UsageError


def no_decay_default(name: str, p: nn.Parameter) -> bool:
    """Biases and 1-D (norm) parameters get no weight decay."""
    return p.ndim < 2 or name.endswith("bias")


def param_groups(named_params: Iterable[Tuple[str, nn.Parameter]], weight_decay: float,
                 no_decay: Optional[Callable[[str, nn.Parameter], bool]] = None,
                 lr_scale: Optional[Callable[[str], float]] = None) -> list[dict]:
    """AdamW groups over the parameters that require grad: ``weight_decay`` on the rest,
    none on those ``no_decay(name, p)`` picks (default :func:`no_decay_default`). Each
    group has an ``lr_scale`` (``lr_scale(name)``, default 1): the scheduler gives it the
    schedule's lr times that (CLIP4Clip's lower lr for the pretrained backbone)."""
    skip = no_decay or no_decay_default
    scale_of = lr_scale or (lambda name: 1.0)
    groups: dict[tuple, dict] = {}
    for name, p in named_params:
        if p.requires_grad:
            key = (float(scale_of(name)), skip(name, p))
            group = groups.setdefault(key, {"params": [], "weight_decay": 0.0 if key[1] else weight_decay,
                                            "lr_scale": key[0]})
            group["params"].append(p)
    scales = list(dict.fromkeys(k[0] for k in groups))  # in order of first use
    # per scale, decayed before plain: with one scale, the order of checkpoints saved before
    return [groups[k] for k in sorted(groups, key=lambda k: (scales.index(k[0]), k[1]))]


def make_optimizer(model, cfg) -> torch.optim.Optimizer:
    groups = param_groups(model.named_trainable_parameters(), cfg.wd, lr_scale=getattr(model, "lr_scale", None))
    if not groups:
        raise UsageError(f"--method {getattr(cfg, 'method', None)} has no trainable parameters "
                         "(evaluate it with `dgl-rs eval --zero-shot`)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
