"""``dgl-rs``: the command line.

Subcommands::

    dgl-rs train --dataset msrvtt|vatex|lsmdc|activitynet|folder|synthetic [--method M] [--frame-cache C]
    dgl-rs eval (--prompts P | --zero-shot) --dataset ... [--qb-norm] [--dsl] [--frame-cache C]
    dgl-rs prepare (VIDEO_DIR | --dataset NAME --data-root ROOT) --out CACHE [--fps 3 --size 224]
    dgl-rs encode VIDEO_DIR (--prompts P | --zero-shot) --out INDEX [--frame-cache CACHE]
    dgl-rs search INDEX "a man is cooking" [-k 5]
    dgl-rs pretrain-synthetic [--out FILE]
    dgl-rs demo [--videos N --epochs E --num-frames T]
    dgl-rs benchmark [--methods all] [--seeds 0 1 2] [--table 3] [--world shifted|pretraining]
    dgl-rs claims BENCHMARK.json [...] [--out FILE]
    dgl-rs methods [--model NAME --num-frames T]
    dgl-rs estimate --methods M [M ...] [--model NAME --batch-size B --num-frames T --precision P]
    dgl-rs explain VIDEO "caption" --prompts P --out fig.png
    dgl-rs convert RELEASED_CKPT OUT.safetensors

``--prompts official:PATH`` (eval, encode, explain) reads a checkpoint released with the
DGL paper directly.

``dgl-rs COMMAND --help`` lists every flag. ``main(argv)`` returns the exit status
(tests call it directly). Usage errors (a missing dataset root, an unknown model, weights
that cannot be fetched offline, a file that is missing, unreadable or of the wrong kind, a
destination that cannot be written) print one ``dgl-rs COMMAND: error: ...`` line and exit
with status 2, without a traceback; every destination is checked before the work starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .._version import __version__
from ..util.errors import UsageError, VideoDecodeError
from ..factory.build import load_backbone, trainable_counts
from ..methods import METHODS
from ..train.main import main as train_main
from ..train.pretrain import main as pretrain_main
from .benchmark import claims_main, demo_main
from .benchmark import main as benchmark_main
from .convert import main as convert_main
from .estimate import main as estimate_main
from .eval import main as eval_main
from .explain import main as explain_main
from .index import add_encode_arguments, add_search_arguments, encode_main, search_main
from .prepare import main as prepare_main

# Commands with their own parser (prog "dgl-rs COMMAND"): argv goes through untouched.
DELEGATED = {
    "train": (train_main, "train a method (--method) on a dataset (torchrun for several GPUs/processes)"),
    "eval": (eval_main, "evaluate a trained method or the zero-shot baseline on a test split"),
    "pretrain-synthetic": (pretrain_main, "pretrain the tiny CLIP of the synthetic benchmark"),
    "demo": (demo_main, "synthetic benchmark, ~10 min on 2 cores: zero-shot meanP and 6 methods, one table"),
    "benchmark": (benchmark_main, "synthetic benchmark of any methods (--methods all) and seeds: one table, "
                  "JSON, Markdown, bar chart"),
    "estimate": (estimate_main, "peak memory by category, FLOPs and time of one training step at any scale, "
                 "counted on fake tensors (no GPU needed)"),
    "claims": (claims_main, "the paper's claims decided on benchmark results (paired bootstrap over test queries)"),
    "explain": (explain_main, "draw where the global prompt looks in a video (PNG), with its similarity to a caption"),
    "prepare": (prepare_main, "decode every video once into a frame cache (sharded JPEG frames at a fixed fps) "
                "that train, eval and encode read with --frame-cache"),
    "convert": (convert_main, "write a checkpoint released with the DGL paper as dgl-rs prompt + backbone files"),
}

#: The commands that take --on-broken (skip unreadable videos).
ON_BROKEN = ("train", "eval", "encode", "prepare")


def add_methods_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="ViT-B-32-quickgelu", help="open_clip model whose counts "
                   "to show (random weights; default ViT-B-32-quickgelu)")
    p.add_argument("--num-frames", type=int, default=12, help="frames per video T (default 12)")
    p.add_argument("--options", metavar="NAME", choices=sorted(METHODS), help="list the options of method NAME "
                   "(its defaults, what it fixes, the flag of dgl-rs train that sets each) instead")


def options_table(name: str) -> str:
    """The options of method ``name``: flag, kind, the method's default and help; the
    options it fixes last."""
    spec = METHODS[name]
    rows = [f"{name} ({spec.cls.__name__}): {spec.summary}", ""]
    for key, opt in spec.cls.options().items():
        if key in spec.pinned:
            continue
        default = spec.defaults.get(key, opt.default)
        kind = "/".join(map(str, opt.choices)) if opt.kind == "choice" else opt.kind
        rows.append(f"  {opt.flag:<24} {kind:<40} default {default!r}\n      {opt.help}")
    fixed = ", ".join(f"{k}={v!r}" for k, v in spec.pinned.items())
    rows += ["", f"  fixed: {fixed or 'nothing'}"]
    return "\n".join(rows)


def methods_main(args: argparse.Namespace) -> int:
    """``dgl-rs methods``: every method, what it is, its trainable count on ``--model``
    next to the paper's Table 1 figure (``--options NAME``: one method's options)."""
    if args.options:
        print(options_table(args.options))
        return 0
    if args.num_frames < 1:
        raise UsageError(f"--num-frames must be >= 1, got {args.num_frames}")
    clip, _, _ = load_backbone(args.model, "none")
    counts = trainable_counts(clip, args.num_frames)
    print(f"{'method':<24} {'trainable':>12} {'paper (M)':>10}  description ({args.model}, T={args.num_frames})")
    for name, spec in METHODS.items():
        paper = f"{spec.paper_params_m:.2f}" if spec.paper_params_m is not None else "-"
        print(f"{name:<24} {counts[name]:>12,} {paper:>10}  {spec.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgl-rs", description="DGL: dynamic global-local prompt tuning for text-video "
        "retrieval on a frozen open_clip backbone, and the methods it is compared with.")
    parser.add_argument("--version", action="version", version=f"dgl-rs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    add_encode_arguments(sub.add_parser(
        "encode", help="embed a folder of videos into an index on disk",
        description="Embed every video under VIDEO_DIR once and write an index folder."))
    add_search_arguments(sub.add_parser(
        "search", help="text search in an index made by `dgl-rs encode`",
        description="Rank the indexed videos by cosine similarity to a text query."))
    add_methods_arguments(sub.add_parser(
        "methods", help="list the methods with their trainable parameters",
        description="Every method of the paper's Tables 1 and 3 that --method accepts."))
    return parser


def _fail(command: str, message: str) -> int:
    message = " ".join(message.splitlines())  # one line, whatever a library put in it
    print(f"dgl-rs {command}: error: {message}", file=sys.stderr)
    return 2


def _path_error(exc: OSError) -> str:
    """A path that is not what it should be (missing, a folder, under a file, not
    readable), as ``PATH: why``; our own messages are kept as they are."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"


def _video_error(exc: BaseException) -> Optional[str]:
    """The message of an unreadable-video error, also when a DataLoader worker raised it
    (torch re-raises it as a RuntimeError carrying the worker's traceback)."""
    if isinstance(exc, VideoDecodeError):
        return str(exc)
    tag = f"{VideoDecodeError.__module__}.{VideoDecodeError.__name__}: "
    if isinstance(exc, RuntimeError) and tag in str(exc):
        return str(exc).rsplit(tag, 1)[1].strip()
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    try:
        if command in DELEGATED:
            return int(DELEGATED[command][0](argv[1:]) or 0)
        args = build_parser().parse_args(argv)
        return {"encode": encode_main, "search": search_main, "methods": methods_main}[args.command](args)
    except UsageError as exc:
        return _fail(command, str(exc))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        return _fail(command, _path_error(exc))
    except Exception as exc:
        message = _video_error(exc)
        if message is None:
            raise
        hint = " (pass --on-broken skip to leave such videos out)" if command in ON_BROKEN else ""
        return _fail(command, message + hint)
    except KeyboardInterrupt:
        print(f"dgl-rs {command}: interrupted", file=sys.stderr)
        return 130

