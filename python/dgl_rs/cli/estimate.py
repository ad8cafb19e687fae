"""``dgl-rs estimate``: the memory, FLOPs and time of one training step at any scale.

Counted on fake tensors (:mod:`dgl_rs.train.estimate`): nothing of the model's or the
batch's size is allocated, so ViT-L/14 at B=512 estimates on a laptop in seconds::

    dgl-rs estimate --methods dgl-linear vpt --model ViT-B-32-quickgelu --batch-size 128 \\
        --num-frames 12 --precision amp_fp16 [--checkpoint-blocks] [--released] [--json OUT]

The peak is of live tensors during a step after the first optimizer step, split into
parameters, gradients, optimizer state, inputs, forward activations and the backward's
tensors. Not counted: the CUDA context and the allocator's caching (see ``fits``). The
time is the FLOPs at ``--device-tflops`` (an H100 SXM's dense peak for the precision by
default) times ``--utilisation``.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from ..methods import METHODS
from ..train.estimate import CATEGORIES, PRECISIONS, StepEstimate, estimate_step
from ..util.errors import UsageError
from ..util.files import atomic_write_text, check_writable

#: Common single-GPU memory sizes (GB); a step "fits" one when peak + 1 GiB (the CUDA
#: context) is at most 95% of it (the caching allocator's headroom).
GPU_GB = (16, 24, 40, 48, 80, 141, 192)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgl-rs estimate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", required=True, metavar="M",
                   help=f"method names, or 'all' (every trained one: {', '.join(METHODS)})")
    p.add_argument("--model", default="ViT-B-32-quickgelu",
                   help="open_clip model name, e.g. ViT-B-32-quickgelu, ViT-B-16-quickgelu, ViT-L-14 "
                        "(default ViT-B-32-quickgelu)")
    p.add_argument("--batch-size", type=int, default=128, help="videos per step (default 128)")
    p.add_argument("--num-frames", type=int, default=12, help="frames per video T (default 12)")
    p.add_argument("--context-length", type=int, default=32, help="text tokens (default 32)")
    p.add_argument("--precision", default="amp_fp16", choices=list(PRECISIONS),
                   help="fp32 or autocast fp16/bf16 (default amp_fp16, the paper's)")
    p.add_argument("--checkpoint-blocks", action="store_true",
                   help="recompute each backbone block in the backward (activation checkpointing)")
    p.add_argument("--released", action="store_true",
                   help="also each DGL method computed the released code's way (two-call attention, "
                        "per-sample prompts)")
    p.add_argument("--device-tflops", type=float, default=None,
                   help="device throughput for the time column (default: an H100 SXM's dense peak "
                        "for the precision: 989.4 fp16/bf16, 67 fp32)")
    p.add_argument("--utilisation", type=float, default=0.4,
                   help="fraction of --device-tflops a step reaches (default 0.4)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the estimates as JSON")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.methods == ["all"]:
        args.methods = [m for m in METHODS if m != "zero-shot"]  # nothing to train
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)} or 'all'")
    for name in ("batch_size", "num_frames", "context_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    if not 0 < args.utilisation <= 1:
        p.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    if args.device_tflops is not None and not 0 < args.device_tflops < float("inf"):
        p.error(f"--device-tflops must be a positive number, got {args.device_tflops}")
    if args.json:
        check_writable(args.json, "--json")


def fits(peak_bytes: int) -> str:
    """The smallest of :data:`GPU_GB` a step of ``peak_bytes`` fits, or "none" beyond all."""
    need = peak_bytes + 2**30
    return next((f"{gb} GB" for gb in GPU_GB if need <= 0.95 * gb * 1e9), f"none (> {GPU_GB[-1]} GB)")


def _row(name: str, e: StepEstimate) -> str:
    gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
    parts = " | ".join(gib(e.categories[c]) for c in CATEGORIES)
    return (f"| {name} | {e.trainable:,} | {gib(e.peak_bytes)} | {parts} | {e.flops / 1e12:.1f} | "
            f"{e.seconds * 1e3:.0f} | {fits(e.peak_bytes)} |")


def table(estimates: dict[str, StepEstimate]) -> str:
    head = " | ".join(f"{c} GiB" for c in CATEGORIES)
    lines = [f"| method | trainable | peak GiB | {head} | TFLOP | ms | fits |",
             "|---|---:|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|---|"]
    return "\n".join([*lines, *(_row(n, e) for n, e in estimates.items())])


def run(args: argparse.Namespace) -> dict[str, StepEstimate]:
    out: dict[str, StepEstimate] = {}
    common = dict(model_name=args.model, batch_size=args.batch_size, num_frames=args.num_frames,
                  precision=args.precision, checkpoint_blocks=args.checkpoint_blocks,
                  context_length=args.context_length, device_tflops=args.device_tflops,
                  utilisation=args.utilisation)
    for name in args.methods:
        try:
            out[name] = estimate_step(name, **common)
            if args.released and name.startswith("dgl"):
                out[f"{name} (released code's way)"] = estimate_step(name, released=True, **common)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--methods {name}: {exc}") from exc
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    estimates = run(args)
    first = next(iter(estimates.values()))
    print(f"one training step (after the first optimizer step): {args.model}, B={args.batch_size}, "
          f"T={args.num_frames}, {args.precision}{', checkpointed blocks' if args.checkpoint_blocks else ''}; "
          f"time at {first.device_tflops:g} TFLOP/s x {args.utilisation:g}\n")
    print(table(estimates))
    print("\nfits: the smallest common GPU with peak + 1 GiB (CUDA context) <= 95% of its memory")
    if args.json:
        doc = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "methods")},
               "methods": {n: e.as_dict() for n, e in estimates.items()}}
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
