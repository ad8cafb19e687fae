"""A video index on disk: embed a folder of videos once, search it with text.

``dgl-rs encode VIDEO_DIR --prompts P --out INDEX`` writes the folder ``INDEX/``:

* ``embeddings.npy``: float32 (videos, D), L2-normalised video embeddings;
* ``index.json``: ``format``, the video ``root`` and the ``videos`` (paths relative to
  it, row order), videos that could not be read (``skipped``), and the model: backbone
  ``model`` / ``pretrained``, the DGL ``dgl`` config, ``num_frames``;
* ``prompts.safetensors``: a copy of the prompts (absent for the zero-shot baseline),
  so the index alone is enough to embed queries.

``dgl-rs search INDEX "a man is cooking" -k 5`` embeds the query with the same model and
prints the top-k videos by cosine similarity.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

log = logging.getLogger("dgl_rs.index")

FORMAT = "dgl-rs-index/1"


@dataclass
class VideoIndex:
    embeddings: np.ndarray  # float32 (videos, D), L2-normalised
    videos: list  # paths relative to root, row order
    meta: dict
    path: Path

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])


def list_videos(video_dir: str | os.PathLike) -> list[str]:
    """Video files under ``video_dir`` (recursive, sorted), relative to it."""
    from .data.datasets import VIDEO_EXTENSIONS

    root = Path(video_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def encode_folder(model, video_dir: str | os.PathLike, preprocess_cfg: dict, *,
                  device="cpu", batch_size: int = 16, workers: int = 0,
                  precision: str = "fp32", on_error: str = "skip", progress: bool = True):
    """``(embeddings (N, D) float32 numpy, kept relative paths, skipped relative paths)``
    for every video under ``video_dir``; broken videos are skipped (and listed) unless
    ``on_error="raise"``."""
    from .data.datasets import EvalSet, VideoRecord
    from .data.video import VideoTransform
    from .evaluate import encode_videos

    root = Path(video_dir)
    videos = list_videos(root)
    if not videos:
        raise FileNotFoundError(f"no video files under {root}")
    records = [VideoRecord(str(root / v), (v,), v) for v in videos]
    dataset = EvalSet(records, model.num_frames, VideoTransform.from_preprocess_cfg(preprocess_cfg),
                      on_error=on_error)
    loader = dataset.make_loader(batch_size=batch_size, workers=workers)
    try:
        emb, kept = encode_videos(model, loader, device=device, precision=precision,
                                  progress=progress, desc="videos", return_indices=True)
    except ValueError as exc:
        if "no videos" in str(exc):
            raise ValueError(f"none of the {len(videos)} videos under {root} could be read") from exc
        raise
    kept_set = set(int(i) for i in kept)
    skipped = [v for i, v in enumerate(videos) if i not in kept_set]
    return emb.numpy().astype(np.float32), [videos[int(i)] for i in kept], skipped


def save_index(out: str | os.PathLike, embeddings: np.ndarray, videos: Sequence[str],
               meta: dict, model=None) -> Path:
    """Write ``INDEX/`` (see the module docstring); files are replaced atomically."""
    from .train.checkpoint import atomic_write, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "embeddings.npy", lambda tmp: np.save(open(tmp, "wb"), embeddings))
    has_prompts = model is not None and model.num_trainable() > 0
    if has_prompts:
        atomic_write(out / "prompts.safetensors", lambda tmp: model.save_prompts(str(tmp)))
    elif (out / "prompts.safetensors").exists():
        (out / "prompts.safetensors").unlink()
    doc = {"format": FORMAT, **meta, "videos": list(videos),
           "prompts": "prompts.safetensors" if has_prompts else None,
           "dim": int(embeddings.shape[1]), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(out / "index.json", json.dumps(doc, indent=2) + "\n")
    return out


def load_index(path: str | os.PathLike) -> VideoIndex:
    path = Path(path)
    meta_path = path / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a video index (no index.json); make one with "
                                "`dgl-rs encode VIDEO_DIR --out INDEX`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown index format {meta.get('format')!r}")
    emb = np.load(path / "embeddings.npy")
    if emb.shape[0] != len(meta["videos"]):
        raise ValueError(f"{path}: {emb.shape[0]} embeddings but {len(meta['videos'])} videos")
    return VideoIndex(emb.astype(np.float32, copy=False), list(meta["videos"]), meta, path)


def load_query_model(index: VideoIndex, device="cpu"):
    """The model that made ``index`` (its copy of the prompts on the backbone recorded in
    ``index.json``), to embed text queries."""
    from .evaluate import load_dgl

    meta = index.meta
    prompts = index.path / meta["prompts"] if meta.get("prompts") else None
    model, _, _ = load_dgl(prompts, model_name=meta["model"], pretrained=meta["pretrained"],
                           device=device, num_frames=meta["dgl"]["num_frames"],
                           context_length=meta["dgl"]["context_length"])
    return model


@torch.no_grad()
def search(index: VideoIndex, queries: Sequence[str] | str, k: int = 5, model=None,
           device="cpu") -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(video path relative to the index root, cosine score)`` per query,
    best first."""
    from .evaluate import encode_texts

    if isinstance(queries, str):
        queries = [queries]
    model = model if model is not None else load_query_model(index, device)
    q = encode_texts(model, list(queries), context_length=model.config["context_length"],
                     device=device, progress=False).numpy()
    scores = q @ index.embeddings.T
    k = min(k, scores.shape[1])
    out = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:k]
        out.append([(index.videos[int(i)], float(row[int(i)])) for i in top])
    return out


# ------------------------------------------------------------------------ the CLI
def add_encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_dir", metavar="VIDEO_DIR", help="folder of videos (searched recursively)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompts.safetensors of a training run, a training "
                     "checkpoint, or a run folder")
    src.add_argument("--zero-shot", action="store_true",
                     help="no prompts: the frozen backbone with mean pooling of frame features")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder to write")
    p.add_argument("--model", help="open_clip model name (default: the one the prompts were "
                   "trained on; ViT-B-32-quickgelu with --zero-shot)")
    p.add_argument("--pretrained", help="backbone weights: 'openai', a file, 'synthetic-tiny' "
                   "(default: those the prompts were trained on; openai with --zero-shot)")
    p.add_argument("--num-frames", type=int, help="frames per video (default: the prompts'; "
                   "12 with --zero-shot)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch (default 16)")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes (default 0)")
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


def _device(name: str) -> torch.device:
    from .train.distributed import init_distributed

    return init_distributed(name).device


def encode_main(args: argparse.Namespace) -> int:
    from .evaluate import load_dgl
    from .train.params import UsageError

    if not Path(args.video_dir).is_dir():
        raise UsageError(f"VIDEO_DIR {args.video_dir}: no such directory")
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be >= 1 and --workers >= 0")
    device = _device(args.device)
    model_name, pretrained = args.model, args.pretrained
    model, preprocess_cfg, meta = load_dgl(args.prompts, model_name=model_name,
                                           pretrained=pretrained, device=device,
                                           num_frames=args.num_frames)
    t0 = time.perf_counter()
    emb, videos, skipped = encode_folder(model, args.video_dir, preprocess_cfg, device=device,
                                         batch_size=args.batch_size, workers=args.workers,
                                         on_error=args.on_broken,
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
    from .train.params import UsageError

    if args.k < 1:
        raise UsageError(f"-k must be >= 1, got {args.k}")
    try:
        index = load_index(args.index)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    results = search(index, args.query, args.k, device=_device(args.device))
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
