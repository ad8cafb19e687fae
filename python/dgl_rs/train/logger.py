"""Run logging: python logging, a JSONL metrics file, TensorBoard (optional) and PNG plots.

Only the master rank creates a :class:`RunLogger` that writes anything; other ranks get
one built with ``enabled=False`` whose methods do nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..factory import runs
from ..util.files import atomic_write, atomic_write_text

log = logging.getLogger("dgl_rs.train")


class RunLogger:
    """Scalars to ``metrics.jsonl`` (one JSON object per line) and TensorBoard.

    ``log(step, {"train/loss": ..}, epoch=..)`` appends one record; :meth:`plot` redraws
    ``loss.png`` (train loss per step) and ``recall.png`` (R@1 per epoch) from the records
    of this run (resumed runs read back the earlier part of the file first).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / runs.METRICS
        self.records: list[dict[str, Any]] = []
        self.writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path) as f:
                self.records = [json.loads(line) for line in f if line.strip()]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is an optional extra
                log.warning("tensorboard is not installed: logging to metrics.jsonl only")
            else:
                self.writer = SummaryWriter(str(self.run_dir / runs.TENSORBOARD))

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run replays those steps)."""
        if not self.enabled:
            return
        kept = [r for r in self.records if r.get("step", -1) <= step]
        if len(kept) != len(self.records):
            self.records = kept
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, scalars: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **extra, **{k: float(v) for k, v in scalars.items()}}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def plot(self) -> list[Path]:
        """Write ``loss.png`` and ``recall.png`` (when there are eval records); returns
        the paths written. Needs matplotlib; skipped with a warning without it. Draws on
        ``matplotlib.figure.Figure`` (no pyplot, no backend switch) and writes each PNG
        atomically: a reader sees the previous plot or the new one, never a torn file."""
        if not self.enabled:
            return []
        try:
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover
            log.warning("matplotlib is not installed: no plots")
            return []
        written = []
        loss = [(r["step"], r["train/loss"]) for r in self.records if "train/loss" in r]
        if loss:
            fig = Figure(figsize=(6, 4))
            ax = fig.subplots()
            ax.plot(*zip(*loss), lw=1)
            _label(ax, "step", "symmetric InfoNCE", "training loss")
            written.append(_save_png(fig, self.run_dir / "loss.png"))
        keys = sorted({k for r in self.records for k in r if k.endswith("/R@1") and "epoch" in r})
        if keys:
            fig = Figure(figsize=(6, 4))
            ax = fig.subplots()
            for key in keys:
                pts = [(r["epoch"], r[key]) for r in self.records if key in r]
                ax.plot(*zip(*pts), marker="o", label=key)
            _label(ax, "epoch", "R@1 (%)", "retrieval R@1 per epoch")
            ax.legend(fontsize=7)
            written.append(_save_png(fig, self.run_dir / "recall.png"))
        return written

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _save_png(fig, path: Path, dpi: int = 100) -> Path:
    """``fig`` as a PNG at ``path``, through the package's one atomic write."""
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
