"""Runs of the synthetic benchmark: each method trained with ``dgl-rs train`` in its own
process (so its peak memory is its own), evaluated on the static and temporal test
splits, its learning rate searched on validation videos, and the whole benchmark."""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ..services.device import resolve_device, resolve_precision
from ..util.errors import UsageError
from ..util.files import atomic_write_text
from ..services.evaluate import evaluate_sets
from ..factory.build import load_model
from ..services.data import build_data
from ..train.params import parse_args
from ..train.selection import METRIC, selection_score
from .entries import RUNNABLE
from .report import mean_entry, to_json
from .reversal import reversal_accuracy

log = logging.getLogger("dgl_rs.benchmark")


def run_dir(out: Path, name: str, seed: int, run_name: Optional[str] = None) -> Path:
    """Where a run of ``name`` with ``seed`` lives (``run_name``: an lr-search run's name)."""
    return out / (run_name or f"{name}-s{seed}")


def train_argv(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
               run_name: Optional[str] = None) -> list[str]:
    """`dgl-rs train` flags of one run (``lr``: the entry's unless given)."""
    method, extra, base = RUNNABLE[name]
    lr = base if lr is None else lr
    argv = ["--dataset", "synthetic", "--method", method, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--num-frames", str(args.num_frames),
            "--synthetic-split", "both", "--synthetic-videos", str(args.videos),
            "--synthetic-eval-videos", str(args.eval_videos), "--synthetic-world", args.world,
            "--model", "synthetic-tiny",
            "--pretrained", args.pretrained, "--output-dir", str(out),
            "--name", run_dir(out, name, seed, run_name).name,
            "--seed", str(seed), "--workers", str(args.workers), "--device", args.device,
            "--eval-every", "0", "--keep-checkpoints", "1", "--log-every", "5", *extra]
    if lr is not None:
        argv += ["--lr", str(lr)]
    return argv + (["--no-progress"] if args.no_progress else [])


# The child runs the `dgl-rs` command line (a separate process, not an import of it) and
# reports its exit status and its own peak RSS.
_CHILD = ("import json, resource, sys; from dgl_rs.cli import main; rc = main(sys.argv[1:]); "
          "print(json.dumps({'rc': rc, 'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")


def train_in_child(argv: list[str]) -> float:
    """Run `dgl-rs train argv` in a fresh process; its peak RSS in MiB."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, "train", *argv], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    done = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"rc": proc.returncode or 1}
    if done["rc"] != 0:  # its own error is on stderr above
        raise UsageError(f"a run failed (exit status {done['rc']}, its error above): dgl-rs train {' '.join(argv)}")
    return done["peak_mib"]


def step_seconds(run: Path, batch: int) -> float:
    """Median seconds per training step from the run's logged throughput."""
    rates = [row["train/samples_per_s"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "train/samples_per_s" in row]
    return batch / statistics.median(rates) if rates else float("nan")


def train_run(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
              run_name: Optional[str] = None) -> dict[str, Any]:
    """Train one run in a child process (zero-shot: nothing to train): its seed, lr,
    seconds per step and peak memory."""
    if RUNNABLE[name][2] is None:
        return {"seed": seed, "lr": None, "step_s": None, "peak_mib": None}
    argv = train_argv(args, name, seed, out, lr, run_name)
    peak = train_in_child(argv)
    return {"seed": seed, "lr": parse_args(argv).lr, "peak_mib": peak,
            "step_s": step_seconds(run_dir(out, name, seed, run_name), args.batch_size)}


def load_run(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
             run_name: Optional[str] = None):
    """``(model, data, cfg, device)``: a trained run (or the zero-shot model) with the
    benchmark's evaluation data: the test splits, and validation splits drawn from
    another seed (read only by the lr search). Evaluation decodes in this process
    (``workers=0``)."""
    cfg = parse_args(train_argv(args, name, seed, out, lr, run_name) + ["--val-split", "val"])
    cfg = dataclasses.replace(cfg, workers=0, no_progress=args.no_progress)
    device = resolve_device(cfg.device)
    if RUNNABLE[name][2] is None:
        model, preprocess_cfg, _ = load_model(None, model_name="synthetic-tiny", pretrained=args.pretrained,
                                              device=device, num_frames=args.num_frames,
                                              context_length=cfg.context_length)
    else:
        model, preprocess_cfg, _ = load_model(run_dir(out, name, seed, run_name), device=device,
                                              pretrained=args.pretrained)
    return model, build_data(cfg, preprocess_cfg, train=False), cfg, device


def _scores(model, sets: dict, cfg, device, keep_ranks: bool = False) -> dict[str, Any]:
    return evaluate_sets(model, sets, cfg, device, resolve_precision(cfg.precision, device), raw_only=True,
                         keep_ranks=keep_ranks)


def score_on_test(model, data, cfg, device, entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with the test splits' raw scores, every test query's rank (``ranks``:
    split -> direction -> list, in the test set's order, the same for every seed) and the
    reversal accuracy."""
    entry["trainable"] = model.num_trainable()
    results = _scores(model, data.evals, cfg, device, keep_ranks=True)
    entry.update({split: res["raw"] for split, res in results.items()})
    entry["ranks"] = {split: res["ranks"] for split, res in results.items()}
    by_kind = reversal_accuracy(model, data.evals["temporal"], device)
    entry["reversal"] = by_kind.pop("all")
    entry["reversal_by_kind"] = by_kind
    return entry


def run_one(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
            run_name: Optional[str] = None) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one method with one seed on the test splits."""
    entry = train_run(args, name, seed, out, lr, run_name)
    return score_on_test(*load_run(args, name, seed, out, lr, run_name), entry)


def scaled_lr(base: float, factor: float) -> float:
    """``base * factor`` to 3 significant digits (a readable lr in run names and tables)."""
    return float(f"{base * factor:.3g}")


def search_lr(args, name: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``name`` with the first seed at the entry's lr times each ``--lr-factors``,
    score every run on the VALIDATION splits only (:func:`selection_score`: mean raw
    t2v R@1 over static and temporal; of equal scores the first factor wins), then
    evaluate only the chosen run on the test splits. ``(its test entry, the record)``."""
    seed, base = args.seeds[0], RUNNABLE[name][2]
    tried = []
    for factor in args.lr_factors:
        lr = scaled_lr(base, factor)
        run_name = f"{name}-lr{lr:g}-s{seed}"
        entry = train_run(args, name, seed, out, lr, run_name)
        model, data, cfg, device = load_run(args, name, seed, out, lr, run_name)
        score = selection_score(_scores(model, data.vals, cfg, device))
        log.info("benchmark: %s, lr %g: validation t2v R@1 %.2f", name, lr, score)
        tried.append({"lr": lr, "val_t2v_R@1": score, "run": run_name, "entry": entry})
    best = max(tried, key=lambda t: t["val_t2v_R@1"])
    entry = score_on_test(*load_run(args, name, seed, out, best["lr"], best["run"]), best["entry"])
    record = {"metric": METRIC, "seed": seed, "chosen_lr": best["lr"],
              "tried": [{k: t[k] for k in ("lr", "val_t2v_R@1", "run")} for t in tried]}
    return entry, record


def run_method(args, name: str, out: Path) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
    """Every seed of one method: with several ``--lr-factors`` the first seed searches
    the lr on validation and the other seeds train with the chosen one."""
    base = RUNNABLE[name][2]
    if base is None or len(args.lr_factors) == 1:
        lr = None if base is None else scaled_lr(base, args.lr_factors[0])
        return [run_one(args, name, seed, out, lr) for seed in args.seeds], None
    first, record = search_lr(args, name, out)
    return [first] + [run_one(args, name, seed, out, record["chosen_lr"]) for seed in args.seeds[1:]], record


def _document(args, runs: dict, searches: dict, seconds: float) -> dict[str, Any]:
    return {"methods": {name: mean_entry(r) for name, r in runs.items()}, "runs": runs, "seeds": list(args.seeds),
            "lr_search": searches,
            "setup": {k: v for k, v in vars(args).items() if k not in ("no_progress", "methods", "seeds")},
            "seconds": round(seconds, 1),
            "note": "synthetic benchmark (procedural shapes, template captions), not MSR-VTT"}


def run_benchmark(args, out: Path) -> dict[str, Any]:
    """Every method of ``args.methods`` with every seed into ``out``: the benchmark's JSON
    document (per-method means, every run, the lr searches, the setup). After each
    method, ``out/partial.json`` holds the document of the methods done so far (what a
    stopped run leaves)."""
    t0 = time.perf_counter()
    runs: dict[str, list] = {}
    searches: dict[str, dict] = {}
    doc = _document(args, runs, searches, 0.0)
    for name in args.methods:
        log.info("benchmark: %s, seeds %s", name, args.seeds)
        runs[name], record = run_method(args, name, out)
        if record:
            searches[name] = record
        doc = _document(args, runs, searches, time.perf_counter() - t0)
        atomic_write_text(out / "partial.json", to_json(doc))
    return doc
