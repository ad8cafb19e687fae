"""``dgl-rs convert``: a checkpoint released with the DGL paper -> dgl-rs files."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..util.errors import UsageError
from ..factory.official import PREFIX, convert_official
from ..util.files import check_readable, check_writable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dgl-rs convert", description="Write a checkpoint released with the DGL paper (ckpt.best.pth.tar; "
        "read with torch.load(weights_only=True)) as a dgl-rs prompt file OUT, the backbone weights it needs "
        "beside it (OUT_STEM.backbone.safetensors) and model.json, so that `--prompts OUT` works everywhere. "
        f"(`--prompts {PREFIX}PATH` reads the released file directly.)")
    p.add_argument("checkpoint", metavar="PATH", help="the released checkpoint")
    p.add_argument("out", metavar="OUT", help="the prompt file to write (*.safetensors)")
    p.add_argument("--num-frames", type=int, help="T for a DGL-Linear file (default 12; a DGL-Transformer "
                   "file fixes T itself)")
    p.add_argument("--context-length", type=int, help="text context (default: the released one, 32; 64 for T=64)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT, its backbone file and model.json")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    ns = build_parser().parse_args(argv)
    for flag, value in (("--num-frames", ns.num_frames), ("--context-length", ns.context_length)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    check_readable(ns.checkpoint, "PATH")
    check_writable(ns.out, "OUT")  # before the checkpoint is read
    paths = convert_official(ns.checkpoint, ns.out, num_frames=ns.num_frames, context_length=ns.context_length,
                             overwrite=ns.overwrite)
    print(f"prompts:  {paths['prompts']}\nbackbone: {paths['backbone']}\nmodel:    {paths['model_json']}")
    return 0
