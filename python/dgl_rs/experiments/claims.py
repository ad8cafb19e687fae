"""The paper's claims, one by one, decided on the benchmark's per-query results.

Each claim compares two entries of the benchmark (``a`` above ``b``, or ``a`` reaching
``b``) by text->video R@1 on a test split. The test (the same for every claim):

* the unit is a test query; both entries were trained with the same seeds (at least
  :data:`MIN_SEEDS`) and ranked the same test queries (the synthetic test split does not
  depend on the training seed), so every (seed, query) has a hit (rank 1) or a miss for
  each entry, and the statistic is the mean over seeds and queries of
  ``hit_a - hit_b``: the difference of their R@1, in points;
* a paired bootstrap over queries: :data:`REPS` resamples of the test queries with
  replacement (the same resample for every seed, so a query keeps its seeds together),
  the statistic recomputed on each; the two-sided ``1 - ALPHA`` percentile interval;
* verdict, for "a above b" (superiority): **holds** when the interval lies above 0, **does
  not hold** when it lies below 0 (b is above a), else **inconclusive**; for "a reaches
  b" (non-inferiority with margin ``m`` R@1 points): **holds** when the interval lies
  above ``-m``, **does not hold** when it lies below ``-m``, else **inconclusive**.

Every claim is tested at ``ALPHA`` on its own (no correction for the number of claims;
the table lists them all, so a reader can apply one). The bootstrap is seeded: the same
inputs give the same verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

ALPHA = 0.05
REPS = 10_000
MIN_SEEDS = 3
#: Non-inferiority margin of "reaches" claims, in R@1 points (5% of the paper's 43.1 for
#: CLIP4Clip on MSR-VTT, rounded).
MARGIN = 2.0
#: The setup keys two benchmark documents must share to be compared.
SAME_SETUP = ("world", "videos", "eval_videos", "epochs", "num_frames", "batch_size", "pretrained")

#: (claim, entry a, entry b, margin: None for "a above b", else "a reaches b" within it).
CLAIMS: tuple[tuple[str, str, str, Optional[float]], ...] = (
    ("DGL reaches full fine-tuning with <1% of its parameters (DGL-Linear)", "dgl-linear", "full-finetune",
     MARGIN),
    ("DGL above VPT", "dgl-transformer", "vpt", None),
    ("DGL above UPT", "dgl-transformer", "upt", None),
    ("DGL above VoP (VoP^F+C, the paper's row)", "dgl-transformer", "vop-fc", None),
    ("DGL above Efficient Prompt", "dgl-transformer", "efficient-prompt", None),
    ("global-local attention above local-only (3b)", "dgl-transformer", "dgl-transformer+attention-local", None),
    ("global-local attention above global-only (3b)", "dgl-transformer", "dgl-transformer+attention-global",
     None),
    ("first global prompt above the mean of the global prompts (3a)", "dgl-transformer",
     "dgl-transformer+pool-global_mean", None),
    ("first global prompt above the mean of the frames' CLS (3a)", "dgl-transformer",
     "dgl-transformer+pool-frame_cls_mean", None),
    ("first global prompt above the global-local mean (3a)", "dgl-transformer",
     "dgl-transformer+pool-global_local_mean", None),
    ("4+X+4 text prompts above 8+X (3c)", "dgl-transformer", "dgl-transformer+text-8+0", None),
    ("4+X+4 text prompts above 4+X (3c)", "dgl-transformer", "dgl-transformer+text-4+0", None),
    ("visual-to-text above text-to-visual (3e, DGL-Linear)", "dgl-linear", "dgl-linear+text_to_visual", None),
    ("shared latent space above divided prompts (3f)", "dgl-transformer", "dgl-divided", None),
)


def paired_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, *, reps: int = REPS, alpha: float = ALPHA,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(difference, low, high)`` in R@1 points: the mean of ``hits_a - hits_b`` over
    (seeds, queries) arrays of 0/1 hits, and its two-sided ``1 - alpha`` percentile
    interval from ``reps`` resamples of the queries (columns), the same for every seed."""
    a, b = np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] < 2:
        raise ValueError(f"hits_a and hits_b must be (seeds, queries) arrays of one shape with >= 2 queries, "
                         f"got {a.shape} and {b.shape}")
    if not 0 < alpha < 1 or reps < 1:
        raise ValueError(f"alpha must be in (0, 1) and reps >= 1, got alpha={alpha!r}, reps={reps!r}")
    per_query = 100.0 * (a - b).mean(axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_query.size, size=(reps, per_query.size))
    boot = per_query[idx].mean(axis=1)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(per_query.mean()), float(low), float(high)


def verdict(low: float, high: float, margin: Optional[float] = None) -> str:
    """"holds", "does not hold" or "inconclusive" for an interval of ``a - b`` (module
    docstring): superiority without ``margin``, non-inferiority within it."""
    bound = 0.0 if margin is None else -float(margin)
    if low > bound:
        return "holds"
    if high < bound:
        return "does not hold"
    return "inconclusive"


def load_runs(paths: Iterable[str | Path]) -> tuple[list[tuple[str, dict[str, list]]], dict[str, Any]]:
    """The runs of benchmark JSON documents (``benchmark.json`` or a stopped run's
    ``partial.json``) that share one setup (:data:`SAME_SETUP`), grouped by lr protocol
    (``--lr-factors``): documents of one protocol train every entry the same way, so their
    runs pool into one group (an entry in two of them: the later document's). ``([(label,
    {entry: runs})], setup)``, groups in the order their first document was given."""
    groups: dict[str, dict[str, list]] = {}
    setup: Optional[dict] = None
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text())
            mine, runs = {k: doc["setup"].get(k) for k in SAME_SETUP}, dict(doc["runs"])
            factors = " ".join(f"{f:g}" for f in doc["setup"].get("lr_factors", [1.0]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not a benchmark's
            raise ValueError(f"paths: {path} is not a benchmark document (benchmark.json or partial.json of "
                             f"`dgl-rs benchmark`): {type(exc).__name__}") from exc
        if setup is not None and mine != setup:
            raise ValueError(f"paths: {path} was run with {mine}, another document with {setup}: "
                             "claims compare runs of one setup only")
        setup = mine
        groups.setdefault(f"lr factors {factors}", {}).update(runs)
    if setup is None:
        raise ValueError("paths: no benchmark document given")
    return list(groups.items()), setup


def hits(runs: Sequence[dict], split: str, seeds: Sequence[int]) -> np.ndarray:
    """(seeds, queries) text->video R@1 hits of one entry's runs, rows in ``seeds`` order."""
    by_seed = {r["seed"]: r for r in runs}
    return np.array([np.asarray(by_seed[s]["ranks"][split]["t2v"]) == 1 for s in seeds])


def decide(runs: dict[str, list], a: str, b: str, split: str, margin: Optional[float]) -> dict[str, Any]:
    """One claim on one split: the seeds both entries ran, the R@1 difference, its
    interval and the verdict ("not run" when an entry is missing or has < MIN_SEEDS
    seeds in common with the other)."""
    if a not in runs or b not in runs:
        return {"verdict": "not run", "missing": [n for n in (a, b) if n not in runs]}
    seeds = sorted({r["seed"] for r in runs[a] if "ranks" in r} & {r["seed"] for r in runs[b] if "ranks" in r})
    if len(seeds) < MIN_SEEDS:
        return {"verdict": "not run", "seeds": seeds}
    hits_a, hits_b = hits(runs[a], split, seeds), hits(runs[b], split, seeds)
    diff, low, high = paired_bootstrap(hits_a, hits_b)
    return {"seeds": seeds, "a": 100.0 * float(hits_a.mean()), "b": 100.0 * float(hits_b.mean()), "diff": diff,
            "low": low, "high": high, "verdict": verdict(low, high, margin)}


def source_of(docs: Sequence[tuple[str, dict[str, list]]], a: str, b: str) -> tuple[str, dict[str, list]]:
    """The first group (:func:`load_runs`) that ran both ``a`` and ``b`` (a claim compares
    two entries trained under one lr protocol), else the first that ran either, else the
    first."""
    for wanted in (lambda r: a in r and b in r, lambda r: a in r or b in r):
        for label, runs in docs:
            if wanted(runs):
                return label, runs
    return docs[0]


def claims_table(docs: Sequence[tuple[str, dict[str, list]]],
                 splits: Sequence[str] = ("static", "temporal")) -> tuple[list, str]:
    """Every claim of :data:`CLAIMS` decided on every split, each within one group of runs
    (:func:`source_of`): ``(records, Markdown table)``."""
    records, lines = [], []
    head = ["claim", "a vs b"] + [f"{s} t2v R@1: a, b; a - b [95% CI]: verdict" for s in splits]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "---|" * len(splits)]
    for claim, a, b, margin in CLAIMS:
        label, runs = source_of(docs, a, b)
        per_split = {s: decide(runs, a, b, s, margin) for s in splits}
        records.append({"claim": claim, "a": a, "b": b, "margin": margin, "source": label, **per_split})
        cells = [claim, f"`{a}` vs `{b}`" + (f" (margin {margin:g})" if margin is not None else "")]
        for s in splits:
            d = per_split[s]
            cells.append(f"{d['a']:.1f}, {d['b']:.1f}; {d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]: "
                         f"**{d['verdict']}**" if "diff" in d else f"**{d['verdict']}**")
        lines.append("| " + " | ".join(cells) + " |")
    return records, "\n".join(lines)
