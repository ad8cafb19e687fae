"""``dgl-rs encode`` and ``dgl-rs search``: the command line of :mod:`dgl_rs.index`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..backbone.memory import check_memory
from ..util.errors import UsageError
from ..factory.build import load_model
from ..util.files import check_readable, check_writable
from ..services.index import check_index_target, encode_folder, load_index, save_index, search
from ..services.device import resolve_device


def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_dir", metavar="VIDEO_DIR", help="folder of videos (searched recursively)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompts.safetensors of a training run, a training "
                     "checkpoint, a run folder, or official:PATH (a checkpoint released with the DGL paper)")
    src.add_argument("--zero-shot", action="store_true",
                     help="no prompts: the frozen backbone with mean pooling of frame features")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder to write (new or "
                   "empty; an existing index only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the index already in --out")
    p.add_argument("--model", help="open_clip model name (default: the one the prompts were "
                   "trained on; ViT-B-32-quickgelu with --zero-shot)")
    p.add_argument("--pretrained", help="backbone weights: 'openai', a file, 'synthetic-tiny' "
                   "(default: those the prompts were trained on; openai with --zero-shot)")
    p.add_argument("--num-frames", type=int, help="frames per video (default: the prompts'; "
                   "12 with --zero-shot)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch (default 16)")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0)")
    p.add_argument("--frame-cache", metavar="CACHE", help="read the frames from this frame cache (`dgl-rs prepare "
                   "VIDEO_DIR --out CACHE`) instead of decoding the videos")
    p.add_argument("--on-broken", choices=("skip", "raise"), default="skip",
                   help="a video that cannot be read is skipped and listed (default) or stops "
                   "the run with an error naming it")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", metavar="INDEX", help="index folder written by `dgl-rs encode`")
    p.add_argument("query", nargs="+", metavar="QUERY", help="text query (several are searched "
                   "one after the other)")
    p.add_argument("-k", "--top-k", type=int, default=5, dest="k", help="results per query (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")


def encode_main(args: argparse.Namespace) -> int:
    check_readable(args.video_dir, "VIDEO_DIR", folder=True)
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    if args.num_frames is not None and args.num_frames < 1:
        raise UsageError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.frame_cache:
        check_readable(Path(args.frame_cache) / "manifest.json", "--frame-cache")
    check_index_target(args.out, args.overwrite)
    check_writable(args.out, "--out")  # before any model loads
    device = resolve_device(args.device)
    model_name, pretrained = args.model, args.pretrained
    model, preprocess_cfg, meta = load_model(args.prompts, model_name=model_name,
                                           pretrained=pretrained, device=device,
                                           num_frames=args.num_frames)
    check_memory(model.backbone, model.config, args.batch_size, "--batch-size")
    t0 = time.perf_counter()
    emb, videos, skipped = encode_folder(model, args.video_dir, preprocess_cfg, device=device,
                                         batch_size=args.batch_size, workers=args.workers,
                                         on_error=args.on_broken, frame_cache=args.frame_cache,
                                         progress=not args.no_progress)
    meta = {**meta, "root": str(Path(args.video_dir).resolve()), "skipped": skipped,
            "num_frames": model.num_frames}
    meta.pop("prompts", None)
    out = save_index(args.out, emb, videos, meta, model)
    print(f"encoded {len(videos)} videos in {time.perf_counter() - t0:.1f}s"
          + (f" ({len(skipped)} unreadable, skipped: {', '.join(skipped)})" if skipped else ""))
    print(f"index: {out}")
    return 0


def search_main(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError(f"-k must be >= 1, got {args.k}")
    if not all(q.strip() for q in args.query):
        raise UsageError("QUERY: an empty query; give the text to search for")
    try:
        index = load_index(args.index)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    results = search(index, args.query, args.k, device=resolve_device(args.device))
    if args.json:
        print(json.dumps([{"query": q, "results": [{"video": str(index.root / v), "score": s}
                                                   for v, s in hits]}
                          for q, hits in zip(args.query, results)], indent=2))
        return 0
    for q, hits in zip(args.query, results):
        print(f"query: {q}")
        for rank, (video, score) in enumerate(hits, start=1):
            print(f"{rank:>3}. {score:.4f}  {index.root / video}")
    return 0
