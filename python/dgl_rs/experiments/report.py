"""The benchmark's results: the mean over seeds, the Markdown table (the paper's Table 1
layout), the JSON document and the bar chart (PNG, with matplotlib when installed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..util.files import atomic_write, atomic_write_text
from .entries import KEYS, SPLITS, TABLE3


def mean_entry(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every number (and the spread of t2v R@1 and reversal)."""
    def avg(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    out: dict[str, Any] = {k: avg([r[k] for r in runs]) for k in ("trainable", "lr", "step_s", "peak_mib",
                                                                     "reversal")}
    out["trainable"] = int(out["trainable"])
    for split in SPLITS:
        out[split] = {d: {k: avg([r[split][d][k] for r in runs]) for k in KEYS} for d in ("t2v", "v2t")}
        out[split]["t2v_R@1_std"] = float(np.std([r[split]["t2v"]["R@1"] for r in runs]))
    out["reversal_std"] = float(np.std([r["reversal"] for r in runs]))
    out["reversal_by_kind"] = {k: avg([r["reversal_by_kind"].get(k) for r in runs]) for k in runs[0]["reversal_by_kind"]}
    return out


def _optional(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(name: str, e: dict[str, Any], spread: bool) -> str:
    cells = [name, f"{e['trainable']:,}", _optional(e["lr"], "g"), _optional(e["step_s"], ".2f"),
             _optional(e["peak_mib"], ".0f")]
    for split in SPLITS:
        for d in ("t2v", "v2t"):
            for k in KEYS:
                cell = f"{e[split][d][k]:.1f}"
                if spread and d == "t2v" and k == "R@1":
                    cell += f" ±{e[split]['t2v_R@1_std']:.1f}"
                cells.append(cell)
    cells.append(f"{e['reversal']:.1f}" + (f" ±{e['reversal_std']:.1f}" if spread else ""))
    return "| " + " | ".join(cells) + " |"


def markdown_table(methods: dict[str, Any], seeds: Sequence[int]) -> str:
    """The paper's Table 1 layout, one row per method."""
    head = ["method", "trainable", "lr", "s/step", "peak MiB"]
    for split in SPLITS:
        head += [f"{split} {d} {k}" for d in ("t2v", "v2t") for k in KEYS]
    head.append("reversal %")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(name, e, len(seeds) > 1) for name, e in methods.items()]
    return "\n".join(lines)


def summary_table(methods: dict[str, Any]) -> str:
    """The README's table: R@1 both ways on each split and the reversal accuracy, with the
    cost columns (what ``summary.md`` holds; the README's demo table is this, tested)."""
    head = ["method", "trainable", "lr", "s/step", "peak MiB"]
    head += [f"{split} {d}" for split in SPLITS for d in ("t2v", "v2t")] + ["reversal %"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, e in methods.items():
        cells = [name, f"{e['trainable']:,}", _optional(e["lr"], "g"), _optional(e["step_s"], ".2f"),
                 _optional(e["peak_mib"], ".0f")]
        cells += [f"{e[split][d]['R@1']:.1f}" for split in SPLITS for d in ("t2v", "v2t")]
        lines.append("| " + " | ".join(cells + [f"{e['reversal']:.1f}"]) + " |")
    return "\n".join(lines)


def seeds_table(methods: dict[str, Any]) -> str:
    """The README's table of a several-seed run: R@1 both ways on each split (t2v with the
    standard deviation over seeds), the reversal accuracy (with its) and per kind of
    temporal caption (motion, order, colour)."""
    head = ["method", "trainable", "lr", "s/step", "static t2v R@1", "static v2t R@1", "temporal t2v R@1",
            "temporal v2t R@1", "reversal %", "motion", "order", "colour"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, e in methods.items():
        cells = [name, f"{e['trainable']:,}", _optional(e["lr"], "g"), _optional(e["step_s"], ".2f")]
        for split in SPLITS:
            cells += [f"{e[split]['t2v']['R@1']:.1f} ±{e[split]['t2v_R@1_std']:.1f}", f"{e[split]['v2t']['R@1']:.1f}"]
        cells.append(f"{e['reversal']:.1f} ±{e['reversal_std']:.1f}")
        cells += [_optional(e["reversal_by_kind"].get(k), ".1f") for k in ("motion", "order", "colour")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _r1(e: Optional[dict[str, Any]], split: str, direction: str, spread: bool) -> str:
    if e is None:
        return "-"
    cell = f"{e[split][direction]['R@1']:.1f}"
    return cell + (f" ±{e[split]['t2v_R@1_std']:.1f}" if spread and direction == "t2v" else "")


def table3_markdown(methods: dict[str, Any], seeds: Sequence[int]) -> str:
    """The paper's Table 3 rows (MSR-VTT R@1 from its text) beside this benchmark's R@1 of
    the entry that has the same switch (:data:`~.entries.TABLE3`; '-' where dgl-rs has no
    such switch, the paper's text gives no number, or the entry did not run)."""
    spread = len(seeds) > 1
    head = ["table", "paper's row", "dgl-rs entry", "paper t2v", "paper v2t", "static t2v", "static v2t",
            "temporal t2v", "temporal v2t", "reversal %"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for part, row, name, p_t2v, p_v2t in TABLE3:
        e = methods.get(name) if name else None
        cells = [part, row, f"`{name}`" if name else "(no such switch)", _optional(p_t2v, ".1f"),
                 _optional(p_v2t, ".1f")]
        cells += [_r1(e, split, d, spread) for split in SPLITS for d in ("t2v", "v2t")]
        cells.append("-" if e is None else f"{e['reversal']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(methods: dict[str, Any], path: Path) -> Optional[Path]:
    """t2v R@1 on each split and the reversal accuracy per method (matplotlib optional),
    drawn on a ``matplotlib.figure.Figure`` (no pyplot state) and written atomically."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = list(methods)
    x = np.arange(len(names))
    series = [("static t2v R@1", [methods[n]["static"]["t2v"]["R@1"] for n in names]),
              ("temporal t2v R@1", [methods[n]["temporal"]["t2v"]["R@1"] for n in names]),
              ("reversal accuracy", [methods[n]["reversal"] for n in names])]
    fig = Figure(figsize=(max(6, 1.1 * len(names)), 4))
    ax = fig.subplots()
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title("synthetic benchmark, frozen tiny CLIP\n(higher is better; reversal 50% = blind to frame order)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def to_json(doc: dict[str, Any]) -> str:
    """``doc`` as indented JSON with every list of plain numbers on one line (the per-query
    ranks would otherwise take a line per query)."""
    text = json.dumps(doc, indent=2)
    return re.sub(r"\[\s+(-?[\d.eE+-]+(?:,\s+-?[\d.eE+-]+)*)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def write_outputs(out: Path, doc: dict[str, Any], table: str) -> list[Path]:
    """``benchmark.json``, ``benchmark.md``, ``summary.md`` (:func:`summary_table`) and (with
    matplotlib) ``benchmark.png`` in ``out``."""
    paths = [atomic_write_text(out / "benchmark.json", to_json(doc)),
             atomic_write_text(out / "benchmark.md", table + "\n"),
             atomic_write_text(out / "summary.md", summary_table(doc["methods"]) + "\n")]
    png = bar_chart(doc["methods"], out / "benchmark.png")
    return paths + ([png] if png else [])
