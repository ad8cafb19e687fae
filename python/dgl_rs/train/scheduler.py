"""Learning-rate schedule of the DGL recipe: linear warm-up, then cosine to zero.

The schedule is a pure function of the global step, so resuming needs nothing but the
step counter; the class still has ``state_dict``/``load_state_dict`` so a checkpoint can
record it and catch a resume with a different recipe.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_lr(base_lr: float, step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at 0-based ``step``: ``base_lr * (step+1)/warmup`` during warm-up,
    then half a cosine from ``base_lr`` down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) * base_lr


class WarmupCosine:
    """Sets ``lr`` of every param group of ``optimizer`` for the step about to run: the
    schedule's lr times the group's ``lr_scale`` (1 where it has none).

    Call :meth:`step` once before each optimizer step (open_clip's ``scheduler(step)``
    convention, with the step kept here). ``warmup`` is a fraction of ``total_steps``
    (0.1 in the spec) when < 1, or a number of steps when >= 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int,
                 warmup: float = 0.1) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
        self.last_step = -1
        self.last_lr = 0.0

    def lr_at(self, step: int) -> float:
        return warmup_cosine_lr(self.base_lr, step, self.warmup_steps, self.total_steps)

    def step(self) -> float:
        self.last_step += 1
        self.last_lr = self.lr_at(self.last_step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_lr * group.get("lr_scale", 1.0)
        return self.last_lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        for key in ("base_lr", "total_steps", "warmup_steps"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"checkpoint scheduler has {key}={state[key]} but this run has "
                    f"{getattr(self, key)}; resume with the same --lr/--epochs/--batch-size")
        self.last_step = int(state["last_step"])
        if self.last_step >= 0:
            self.last_lr = self.lr_at(self.last_step)
