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

The videos and captions come from the shifted world by default (``--world shifted``:
textured backdrops, clutter, camera motion, lighting drift, noise, compression, new object
sizes, paraphrased captions; :mod:`dgl_rs.data.synthetic`), so the frozen tiny CLIP, pretrained
on the other world's stills, has something to adapt to (zero-shot static t2v R@1 ~33 instead
of 91); ``--world pretraining`` is the stills' own world. ``--table 3`` runs the paper's Table 3
ablations and prints them beside the paper's rows; ``dgl-rs claims`` decides the paper's claims
on the JSON documents.

These are synthetic numbers, not MSR-VTT: they show whether a method that can see frame
order beats mean pooling where the order matters (the temporal split), and what it
costs where it does not (the static split).

This module is the command line only; the runs, the reversal metric, the lr search and
the report are :mod:`dgl_rs.experiments`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
from pathlib import Path
from typing import Optional, Sequence

from ..data.synthetic import WORLDS
from ..experiments import claims as _claims
from ..experiments.claims import ALPHA, REPS, claims_table, load_runs
from ..experiments.entries import DEMO, ENTRIES, RUNNABLE, TABLE3_METHODS
from ..experiments.report import markdown_table, table3_markdown, write_outputs
from ..experiments.runner import run_benchmark, train_argv
from ..factory.build import load_backbone
from ..train.main import build_model
from ..train.params import parse_args
from ..util.files import atomic_write_text, check_readable, check_writable
from ..util.errors import UsageError
from ..util.log import setup_logging


def build_parser(prog: str, default_methods: Sequence[str], defaults: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(default_methods), metavar="NAME",
                   help=f"'all' (the methods) or names among {', '.join(RUNNABLE)} "
                        f"(default: {' '.join(default_methods)})")
    p.add_argument("--table", choices=["3"], help="3: the paper's Table 3 ablations with the switches dgl-rs "
                   f"has ({' '.join(TABLE3_METHODS)}), 3 seeds, 384 videos, 6 epochs unless given, printed "
                   "beside the paper's rows (table3.md)")
    seeds = defaults.get("seeds", [0])
    p.add_argument("--seeds", nargs="+", type=int, default=seeds,
                   help=f"training seeds (default {' '.join(map(str, seeds))})")
    p.add_argument("--lr-factors", nargs="+", type=float, default=[1.0], metavar="F",
                   help="learning rates to try: each method's lr times each F, with the first seed, "
                        "chosen on validation videos (never the test ones); the other seeds use the "
                        "chosen lr (default 1: no search)")
    p.add_argument("--videos", type=int, default=defaults["videos"],
                   help=f"training videos per split (default {defaults['videos']})")
    p.add_argument("--eval-videos", type=int, default=200, help="test videos per split (default 200)")
    p.add_argument("--epochs", type=int, default=defaults["epochs"], help=f"epochs (default {defaults['epochs']})")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video T (default 8)")
    p.add_argument("--world", choices=WORLDS, default="shifted",
                   help="'shifted' (default: the benchmark's videos and captions differ from the tiny CLIP's "
                        "pretraining stills, as a real retrieval set differs from web images) or 'pretraining' "
                        "(the stills' own world, where zero-shot meanP is an oracle on the static split)")
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
    unknown = [m for m in args.methods if m not in RUNNABLE]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose among {', '.join(RUNNABLE)} or 'all'")
    for name in ("videos", "eval_videos", "epochs", "num_frames", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    bad = [f for f in args.lr_factors if not 0 < f < float("inf")]
    if bad:
        p.error(f"--lr-factors must be positive finite numbers, got {bad}")


def check_runs(args: argparse.Namespace) -> None:
    """What would stop every run, found before the first: an output folder that cannot be
    written, weights that are not the tiny CLIP's, sizes beyond the machine (each method
    is built on the tiny CLIP as its run would build it)."""
    check_writable(args.output_dir, "--output-dir")
    clip, _, _ = load_backbone("synthetic-tiny", args.pretrained)
    for name in args.methods:
        if RUNNABLE[name][2] is None:  # not trained
            continue
        model = build_model(parse_args(train_argv(args, name, args.seeds[0], Path(args.output_dir))), clip)
        model.freeze_backbone()
        model.unpatch()


def run_into(args: argparse.Namespace, out: Path) -> dict:
    """:func:`run_benchmark` into the new folder ``out``; a failure that leaves it empty
    removes the folders it made."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=False)
    try:
        return run_benchmark(args, out)
    except BaseException:
        with contextlib.suppress(OSError):
            for folder in made:  # the deepest first; stops at one that is not empty
                folder.rmdir()
        raise


#: What `--table 3` runs unless told otherwise.
TABLE3_DEFAULTS = {"videos": 384, "epochs": 6, "seeds": [0, 1, 2]}


def main(argv: Optional[Sequence[str]] = None, prog: str = "dgl-rs benchmark", default_methods=tuple(ENTRIES),
         defaults: Optional[dict] = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--table")
    table = pre.parse_known_args(argv)[0].table
    if table == "3":
        default_methods, defaults = TABLE3_METHODS, TABLE3_DEFAULTS
    parser = build_parser(prog, default_methods, defaults or {"videos": 512, "epochs": 10})
    args = parser.parse_args(argv)
    check_args(parser, args)
    setup_logging(None)
    check_runs(args)
    out = Path(args.output_dir) / f"{prog.split()[-1]}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    doc = run_into(args, out)
    table = markdown_table(doc["methods"], args.seeds)
    paths = write_outputs(out, doc, table)
    print(f"\nsynthetic benchmark (frozen tiny CLIP; recalls in %, MnR 1-based; seeds {args.seeds}; "
          f"{doc['seconds'] / 60:.1f} min)\n")
    print(table)
    print("\nreversal %: temporal captions scored above their video's time reversal (50% = blind to order)")
    if args.table == "3":
        ablations = table3_markdown(doc["methods"], args.seeds)
        paths.append(atomic_write_text(out / "table3.md", ablations + "\n"))
        print("\nthe paper's Table 3 (MSR-VTT R@1) beside this benchmark's R@1 (mean ± sd over seeds)\n")
        print(ablations)
    for p in paths:
        print(f"wrote {p}")
    print(f"results: {paths[0]}")
    return 0


def demo_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dgl-rs demo``: the benchmark on zero-shot meanP and a representative set of
    methods, sized for ~10 minutes on 2 CPU cores."""
    return main(argv, prog="dgl-rs demo", default_methods=DEMO, defaults={"videos": 384, "epochs": 6})


def claims_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dgl-rs claims BENCHMARK.json [...]``: the paper's claims decided on benchmark runs
    (:mod:`dgl_rs.experiments.claims`: paired bootstrap over test queries, >= 3 seeds)."""
    p = argparse.ArgumentParser(prog="dgl-rs claims", description=_claims.__doc__.split("\n\n")[0],
                                epilog=_claims.__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="benchmark.json (or partial.json) files of one setup, e.g. the "
                   "all-methods run and the --table 3 run; documents of one --lr-factors pool their runs, and a "
                   "claim is decided within the first such group that ran both of its entries")
    p.add_argument("--out", help="also write the Markdown table and the records (JSON) here: OUT.md, OUT.json")
    args = p.parse_args(argv)
    for path in args.results:
        check_readable(path, "results")
    if args.out:
        check_writable(Path(args.out + ".md"), "--out")
    try:
        docs, setup = load_runs(args.results)
    except ValueError as exc:
        raise UsageError(f"results: {exc}".replace("results: paths: ", "results: ")) from exc
    records, table = claims_table(docs)
    print(f"the paper's claims on the synthetic benchmark ({setup['world']} world; t2v R@1 of a minus b, "
          f"paired bootstrap over test queries, {REPS} resamples, alpha {ALPHA})\n")
    print(table)
    if args.out:
        atomic_write_text(Path(args.out + ".md"), table + "\n")
        atomic_write_text(Path(args.out + ".json"), json.dumps({"setup": setup, "claims": records}, indent=2) + "\n")
    return 0
