"""``dgl-rs explain``: where the global prompt looks in one video, as a PNG (paper Fig. 5)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Optional, Sequence

from ..util.errors import UsageError
from ..services.explain import explain_video, figure_format, plot_global_attention, save_figure
from ..factory.build import load_model
from ..services.device import resolve_device
from ..util.files import check_readable, check_writable


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dgl-rs explain", description="Draw the frames of VIDEO with the global prompt's attention "
        "over their patches (heat map) and over the frames (bars), titled with the cosine similarity to "
        "CAPTION. Needs matplotlib (pip install 'dgl-rs[plot]').")
    p.add_argument("video", metavar="VIDEO", help="a video file")
    p.add_argument("caption", metavar="CAPTION", help="the text to compare it with")
    p.add_argument("--prompts", required=True, help="a method with global prompts: prompts.safetensors, "
                   "a training checkpoint, a run folder, or official:PATH (a released DGL checkpoint)")
    p.add_argument("--out", required=True, help="image to write (PNG; another suffix picks matplotlib's format); "
                   "an existing file only with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the file already at --out")
    p.add_argument("--layer", type=int, default=-1, help="visual block whose attention to show (default -1: "
                   "the last)")
    p.add_argument("--query", default="0", help="global prompt: its index (default 0, whose output is the "
                   "video embedding) or 'mean' over all of them")
    p.add_argument("--model", help="open_clip model name (default: the one the prompts record)")
    p.add_argument("--pretrained", help="backbone weights (default: those the prompts record)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the image (default 150)")
    return p


def _query(text: str):
    if text == "mean":
        return "mean"
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--query must be an int or 'mean', got {text!r}") from None


def check_figure_target(out: str, overwrite: bool) -> None:
    """--out: a format matplotlib writes, a new file (an existing one with ``overwrite``,
    never a folder) in a folder we may write; checked before any model loads."""
    if importlib.util.find_spec("matplotlib") is None:  # the optional `plot` extra
        raise UsageError("explain draws with matplotlib: pip install 'dgl-rs[plot]' (or matplotlib)")
    figure_format(out)
    if Path(out).is_dir():
        raise UsageError(f"--out {out}: a folder, not a file")
    if Path(out).exists() and not overwrite:
        raise UsageError(f"--out {out}: exists; pass --overwrite to replace it")
    check_writable(out, "--out")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ns = build_parser().parse_args(argv)
    check_readable(ns.video, "VIDEO")
    if not ns.caption.strip():
        raise UsageError("CAPTION is empty")
    if ns.dpi < 1:
        raise UsageError(f"--dpi must be >= 1, got {ns.dpi}")
    query = _query(ns.query)
    check_figure_target(ns.out, ns.overwrite)
    device = resolve_device(ns.device)
    model, preprocess_cfg, _ = load_model(ns.prompts, model_name=ns.model, pretrained=ns.pretrained, device=device)
    if not hasattr(model, "global_attention") or not getattr(model, "num_global", 0):
        raise UsageError(f"--prompts {ns.prompts}: {model.method} has no global prompts; explain needs a DGL method")
    try:
        ex = explain_video(model, ns.video, ns.caption, preprocess_cfg, layer=ns.layer, query=query)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    fig = plot_global_attention(ex.frames, ex.attention, titles=[ex.title()], mean=preprocess_cfg["mean"],
                                std=preprocess_cfg["std"])
    out = save_figure(fig, ns.out, dpi=ns.dpi)
    print(f"cosine similarity {ex.similarity:.4f}; attention mass per frame "
          + " ".join(f"{m:.3f}" for m in ex.attention.frames[0].tolist()))
    print(f"figure: {out}")
    return 0
