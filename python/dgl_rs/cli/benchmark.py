"""``dgl-rs benchmark`` and ``dgl-rs demo``: every method on the synthetic benchmark, one table.

From the shipped tiny CLIP (``synthetic-tiny``, pretrained on synthetic STILL frames and
their static captions; frozen), each method is trained with the same data, seed, epochs
and batch (``dgl-rs train --method ...`` in its own process, so its peak memory is its
own), then evaluated on the static and the temporal test splits. ONE table like the
paper's Table 1: trainable parameters, seconds per training step, peak memory, t2v and v2t
R@1/R@5/R@10/MnR on each split, and how often a temporal caption scores its own video
above that video's exact time reversal (50% = blind to frame order). Written as JSON,
Markdown and a bar chart (PNG, with matplotlib) into the output folder. With several
``--seeds``, every cell is the mean over seeds and the JSON keeps each run.

Learning rates: one prior per kind of parameter, the same for every method of a kind
(prompt tables 1e-2, the synthetic recipe; transformer prompt generators 5e-3; new weight
matrices, i.e. adapters and temporal transformers, 1e-3; the whole backbone 1e-5), then
the same search for every method: ``--lr-factors 1 0.2`` trains each factor with the
first seed and keeps the lr with the best score on validation videos drawn from another
seed (mean t2v R@1 over both splits), never the test split. :data:`ENTRIES` holds the
lrs that search chose; the table has the lr used.

These are synthetic numbers, not MSR-VTT: they show whether a method that can see frame
order beats mean pooling where the order matters (the temporal split), and what it
costs where it does not (the static split).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..services.device import resolve_precision
from ..services.evaluate import encode_texts, encode_videos, evaluate
from ..factory import load_model
from ..files import atomic_write_text
from ..services.data import build_data
from ..train.distributed import init_distributed
from ..train.logger import setup_logging
from ..train.params import parse_args
from ..train.selection import METRIC, selection_score

log = logging.getLogger("dgl_rs.benchmark")

#: name -> (method, extra `dgl-rs train` flags, learning rate; None: not trained). Each lr
#: was chosen on validation videos by `dgl-rs benchmark --methods all --seeds 0 1 2
#: --lr-factors 1 0.2` (384 videos, 6 epochs) from the per-kind prior in the comment
#: (the same two candidates for every method: prior and prior / 5).
ENTRIES: dict[str, tuple[str, tuple, Optional[float]]] = {
    "zero-shot": ("zero-shot", (), None),
    "full-finetune": ("full-finetune", ("--backbone-lr-scale", "1"), 2e-6),  # prior 1e-5
    # the new temporal transformer at lr, the backbone at lr / 100 (CLIP4Clip's split of lrs)
    "full-finetune-seqtransf": ("full-finetune-seqtransf", ("--backbone-lr-scale", "0.01"), 1e-3),  # prior 1e-3
    "visual-text-adapter": ("visual-text-adapter", (), 1e-3),  # prior 1e-3
    "video-text-adapter": ("video-text-adapter", (), 1e-3),  # prior 1e-3
    "efficient-prompt": ("efficient-prompt", (), 1e-3),  # prior 1e-3
    "vpt": ("vpt", (), 2e-3),  # prior 1e-2
    "upt": ("upt", (), 1e-3),  # prior 5e-3
    "vop": ("vop", (), 2e-3),  # prior 1e-2
    "vop-f": ("vop-f", (), 1e-2),  # prior 1e-2
    "vop-c": ("vop-c", (), 1e-2),  # prior 1e-2
    "vop-p": ("vop-p", (), 2e-3),  # prior 1e-2
    "vop-fc": ("vop-fc", (), 1e-2),  # prior 1e-2
    "vop-fp": ("vop-fp", (), 1e-2),  # prior 1e-2
    "dgl-divided": ("dgl-divided", (), 1e-2),  # prior 1e-2
    "dgl-linear": ("dgl-linear", (), 1e-2),  # prior 1e-2
    "dgl-linear+temporal": ("dgl-linear", ("--temporal-embedding",), 1e-2),  # prior 1e-2
    "dgl-transformer": ("dgl-transformer", (), 1e-3),  # prior 5e-3
    "dgl-linear+cls": ("dgl-linear", ("--global-init", "cls"), 1e-2),  # prior 1e-2
    "dgl-transformer+cls": ("dgl-transformer", ("--global-init", "cls"), 1e-3),  # prior 5e-3
}
#: What `make demo` runs: zero-shot meanP and a representative set.
#: video-text-adapter: the best of all methods on the temporal split (see the README).
DEMO = ("zero-shot", "vpt", "vop", "upt", "video-text-adapter", "dgl-linear", "dgl-linear+temporal",
        "dgl-transformer")
SPLITS = ("static", "temporal")
KEYS = ("R@1", "R@5", "R@10", "MnR")


def build_parser(prog: str, default_methods: Sequence[str], defaults: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(default_methods), metavar="NAME",
                   help=f"'all' or names among {', '.join(ENTRIES)} (default: {' '.join(default_methods)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    p.add_argument("--lr-factors", nargs="+", type=float, default=[1.0], metavar="F",
                   help="learning rates to try: each method's lr times each F, with the first seed, "
                        "chosen on validation videos (never the test ones); the other seeds use the "
                        "chosen lr (default 1: no search)")
    p.add_argument("--videos", type=int, default=defaults["videos"],
                   help=f"training videos per split (default {defaults['videos']})")
    p.add_argument("--eval-videos", type=int, default=200, help="test videos per split (default 200)")
    p.add_argument("--epochs", type=int, default=defaults["epochs"], help=f"epochs (default {defaults['epochs']})")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video T (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="videos per step (default 32)")
    p.add_argument("--pretrained", default="synthetic-tiny", help="tiny CLIP weights (default synthetic-tiny)")
    p.add_argument("--output-dir", default="runs", help="results go to OUTPUT_DIR/NAME-DATE-TIME/ (default runs)")
    p.add_argument("--workers", type=int, default=0, help="data-loader workers (default 0)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.methods == ["all"]:
        args.methods = list(ENTRIES)
    unknown = [m for m in args.methods if m not in ENTRIES]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose among {', '.join(ENTRIES)} or 'all'")
    for name in ("videos", "eval_videos", "epochs", "num_frames", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    bad = [f for f in args.lr_factors if not 0 < f < float("inf")]
    if bad:
        p.error(f"--lr-factors must be positive finite numbers, got {bad}")


def train_argv(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
               run_name: Optional[str] = None) -> list[str]:
    """`dgl-rs train` flags of one run (``lr``: the entry's unless given)."""
    method, extra, base = ENTRIES[name]
    lr = base if lr is None else lr
    argv = ["--dataset", "synthetic", "--method", method, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--num-frames", str(args.num_frames),
            "--synthetic-split", "both", "--synthetic-videos", str(args.videos),
            "--synthetic-eval-videos", str(args.eval_videos), "--model", "synthetic-tiny",
            "--pretrained", args.pretrained, "--output-dir", str(out),
            "--name", run_dir(out, name, seed, run_name).name,
            "--seed", str(seed), "--workers", str(args.workers), "--device", args.device,
            "--eval-every", "0", "--keep-checkpoints", "1", "--log-every", "5", *extra]
    if lr is not None:
        argv += ["--lr", str(lr)]
    return argv + (["--no-progress"] if args.no_progress else [])


_CHILD = ("import json, resource, sys; from dgl_rs.cli import main; rc = main(sys.argv[1:]); "
          "print(json.dumps({'rc': rc, 'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")


def train_in_child(argv: list[str]) -> float:
    """Run `dgl-rs train argv` in a fresh process; its peak RSS in MiB."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, "train", *argv], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dgl-rs benchmark: training failed: dgl-rs train {' '.join(argv)}")
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    if done["rc"] != 0:
        raise SystemExit(done["rc"])
    return done["peak_mib"]


def step_seconds(run: Path, batch: int) -> float:
    """Median seconds per training step from the run's logged throughput."""
    rates = [row["train/samples_per_s"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "train/samples_per_s" in row]
    return batch / statistics.median(rates) if rates else float("nan")


@torch.no_grad()
def reversal_accuracy(model, eval_set, device) -> dict[str, float]:
    """Percentage of temporal test captions that score their own video above its exact
    time reversal (both directions of every (video, reversal) pair in the split), over
    all of them (``"all"``) and per kind of caption (motion, order of events, colour
    change). A model blind to frame order sits at 50%: for mean pooling the reversal's
    frames are the same frames, so the two scores tie up to float rounding, and a tie
    (difference <= 1e-5) counts as half a hit."""
    specs = list(eval_set.specs)
    pos = {spec: i for i, spec in enumerate(specs)}
    partner = {i: pos[s.reversed()] for i, s in enumerate(specs) if s.reversed() in pos}
    if not partner:
        return {"all": float("nan")}
    video = encode_videos(model, eval_set.make_loader(batch_size=32), device=device, progress=False)
    text = encode_texts(model, list(eval_set.captions), device=device, progress=False,
                        context_length=model.config["context_length"])
    sim = (text @ video.t()).numpy()
    own = [(c, i) for c, i in enumerate(eval_set.caption_to_video) if i in partner]
    diff = np.array([sim[c, i] - sim[c, partner[i]] for c, i in own])
    score = 100.0 * np.where(np.abs(diff) <= 1e-5, 0.5, (diff > 0).astype(np.float64))
    kinds = np.array([specs[i].kind for _, i in own])
    return {"all": float(score.mean()), **{k: float(score[kinds == k].mean()) for k in sorted(set(kinds))}}


def run_dir(out: Path, name: str, seed: int, run_name: Optional[str] = None) -> Path:
    """Where a run of ``name`` with ``seed`` lives (``run_name``: an lr-search run's name)."""
    return out / (run_name or f"{name}-s{seed}")


def run_one(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
            run_name: Optional[str] = None) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one method with one seed on the test splits."""
    entry = train_run(args, name, seed, out, lr, run_name)
    return score_on_test(args, *load_run(args, name, seed, out, lr, run_name), entry)


def train_run(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
              run_name: Optional[str] = None) -> dict[str, Any]:
    """Train one run in a child process (zero-shot: nothing to train): its seed, lr,
    seconds per step and peak memory."""
    if ENTRIES[name][2] is None:
        return {"seed": seed, "lr": None, "step_s": None, "peak_mib": None}
    argv = train_argv(args, name, seed, out, lr, run_name)
    peak = train_in_child(argv)
    return {"seed": seed, "lr": parse_args(argv).lr, "peak_mib": peak,
            "step_s": step_seconds(run_dir(out, name, seed, run_name), args.batch_size)}


def load_run(args, name: str, seed: int, out: Path, lr: Optional[float] = None,
             run_name: Optional[str] = None):
    """``(model, data, cfg, info)``: a trained run (or the zero-shot model) with the
    benchmark's evaluation data: the test splits, and validation splits drawn from
    another seed (read only by the lr search)."""
    cfg = parse_args(train_argv(args, name, seed, out, lr, run_name) + ["--val-split", "val"])
    info = init_distributed(cfg.device)
    if ENTRIES[name][2] is None:
        model, preprocess_cfg, _ = load_model(None, model_name="synthetic-tiny", pretrained=args.pretrained,
                                              device=info.device, num_frames=args.num_frames,
                                              context_length=cfg.context_length)
    else:
        model, preprocess_cfg, _ = load_model(run_dir(out, name, seed, run_name), device=info.device,
                                              pretrained=args.pretrained)
    return model, build_data(cfg, preprocess_cfg, train=False), cfg, info


def _scores(args, model, sets: dict, cfg, info) -> dict[str, Any]:
    precision = resolve_precision(cfg.precision, info.device)
    return {split: evaluate(model, eval_set, device=info.device, batch_size=cfg.eval_batch_size,
                            precision=precision, context_length=cfg.context_length,
                            progress=not args.no_progress, name=split)
            for split, eval_set in sets.items()}


def score_on_test(args, model, data, cfg, info, entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with the test splits' raw scores and the reversal accuracy."""
    entry["trainable"] = model.num_trainable()
    entry.update({split: res["raw"] for split, res in _scores(args, model, data.evals, cfg, info).items()})
    by_kind = reversal_accuracy(model, data.evals["temporal"], info.device)
    entry["reversal"] = by_kind.pop("all")
    entry["reversal_by_kind"] = by_kind
    return entry


def scaled_lr(base: float, factor: float) -> float:
    """``base * factor`` to 3 significant digits (a readable lr in run names and tables)."""
    return float(f"{base * factor:.3g}")


def search_lr(args, name: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``name`` with the first seed at the entry's lr times each ``--lr-factors``,
    score every run on the VALIDATION splits only (:func:`selection_score`: mean raw
    t2v R@1 over static and temporal; of equal scores the first factor wins), then
    evaluate only the chosen run on the test splits. ``(its test entry, the record)``."""
    seed, base = args.seeds[0], ENTRIES[name][2]
    tried = []
    for factor in args.lr_factors:
        lr = scaled_lr(base, factor)
        run_name = f"{name}-lr{lr:g}-s{seed}"
        entry = train_run(args, name, seed, out, lr, run_name)
        model, data, cfg, info = load_run(args, name, seed, out, lr, run_name)
        score = selection_score(_scores(args, model, data.vals, cfg, info))
        log.info("benchmark: %s, lr %g: validation t2v R@1 %.2f", name, lr, score)
        tried.append({"lr": lr, "val_t2v_R@1": score, "run": run_name, "entry": entry})
    best = max(tried, key=lambda t: t["val_t2v_R@1"])
    entry = score_on_test(args, *load_run(args, name, seed, out, best["lr"], best["run"]), best["entry"])
    record = {"metric": METRIC, "seed": seed, "chosen_lr": best["lr"],
              "tried": [{k: t[k] for k in ("lr", "val_t2v_R@1", "run")} for t in tried]}
    return entry, record


def run_method(args, name: str, out: Path) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
    """Every seed of one method: with several ``--lr-factors`` the first seed searches
    the lr on validation and the other seeds train with the chosen one."""
    base = ENTRIES[name][2]
    if base is None or len(args.lr_factors) == 1:
        lr = None if base is None else scaled_lr(base, args.lr_factors[0])
        return [run_one(args, name, seed, out, lr) for seed in args.seeds], None
    first, record = search_lr(args, name, out)
    return [first] + [run_one(args, name, seed, out, record["chosen_lr"]) for seed in args.seeds[1:]], record


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


def markdown_table(methods: dict[str, Any], seeds: Sequence[int]) -> str:
    """The paper's Table 1 layout, one row per method."""
    spread = len(seeds) > 1
    head = ["method", "trainable", "lr", "s/step", "peak MiB"]
    for split in SPLITS:
        head += [f"{split} {d} {k}" for d in ("t2v", "v2t") for k in KEYS]
    head.append("reversal %")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in methods.items():
        cells = [name, f"{e['trainable']:,}", "-" if e["lr"] is None else f"{e['lr']:g}",
                 "-" if e["step_s"] is None else f"{e['step_s']:.2f}",
                 "-" if e["peak_mib"] is None else f"{e['peak_mib']:.0f}"]
        for split in SPLITS:
            for d in ("t2v", "v2t"):
                for k in KEYS:
                    cell = f"{e[split][d][k]:.1f}"
                    if spread and d == "t2v" and k == "R@1":
                        cell += f" ±{e[split]['t2v_R@1_std']:.1f}"
                    cells.append(cell)
        cells.append(f"{e['reversal']:.1f}" + (f" ±{e['reversal_std']:.1f}" if spread else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(methods: dict[str, Any], path: Path) -> Optional[Path]:
    """t2v R@1 on each split and the reversal accuracy per method (matplotlib optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(methods)
    x = np.arange(len(names))
    series = [("static t2v R@1", [methods[n]["static"]["t2v"]["R@1"] for n in names]),
              ("temporal t2v R@1", [methods[n]["temporal"]["t2v"]["R@1"] for n in names]),
              ("reversal accuracy", [methods[n]["reversal"] for n in names])]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title("synthetic benchmark, frozen tiny CLIP\n(higher is better; reversal 50% = blind to frame order)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(out: Path, doc: dict[str, Any], table: str) -> list[Path]:
    paths = [atomic_write_text(out / "benchmark.json", json.dumps(doc, indent=2) + "\n"),
             atomic_write_text(out / "benchmark.md", table + "\n")]
    png = bar_chart(doc["methods"], out / "benchmark.png")
    return paths + ([png] if png else [])


def run(args, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    runs: dict[str, list] = {}
    searches: dict[str, dict] = {}
    for name in args.methods:
        log.info("benchmark: %s, seeds %s", name, args.seeds)
        runs[name], record = run_method(args, name, out)
        if record:
            searches[name] = record
    methods = {name: mean_entry(r) for name, r in runs.items()}
    return {"methods": methods, "runs": runs, "seeds": list(args.seeds), "lr_search": searches,
            "setup": {k: v for k, v in vars(args).items() if k not in ("no_progress", "methods", "seeds")},
            "seconds": round(time.perf_counter() - t0, 1),
            "note": "synthetic benchmark (procedural shapes, template captions), not MSR-VTT"}


def main(argv: Optional[Sequence[str]] = None, prog: str = "dgl-rs benchmark", default_methods=tuple(ENTRIES),
         defaults: Optional[dict] = None) -> int:
    parser = build_parser(prog, default_methods, defaults or {"videos": 512, "epochs": 10})
    args = parser.parse_args(argv)
    check_args(parser, args)
    setup_logging(None)
    out = Path(args.output_dir) / f"{prog.split()[-1]}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=False)
    doc = run(args, out)
    table = markdown_table(doc["methods"], args.seeds)
    paths = write_outputs(out, doc, table)
    print(f"\nsynthetic benchmark (frozen tiny CLIP; recalls in %, MnR 1-based; seeds {args.seeds}; "
          f"{doc['seconds'] / 60:.1f} min)\n")
    print(table)
    print("\nreversal %: temporal captions scored above their video's time reversal (50% = blind to order)")
    for p in paths:
        print(f"wrote {p}")
    print(f"results: {paths[0]}")
    return 0


def demo_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dgl-rs demo``: the benchmark on zero-shot meanP and a representative set of
    methods, sized for ~10 minutes on 2 CPU cores."""
    return main(argv, prog="dgl-rs demo", default_methods=DEMO, defaults={"videos": 384, "epochs": 6})
