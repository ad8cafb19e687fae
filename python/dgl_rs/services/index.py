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

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.datasets import EvalSet
from ..data.readers import VIDEO_EXTENSIONS, VideoRecord
from ..data.video import VideoTransform
from ..util.errors import UsageError
from .data import check_cache_sources, video_source
from .evaluate import encode_texts, encode_videos
from ..factory.build import load_model
from ..util.files import atomic_write, atomic_write_text, is_temp, read_json, remove_stale_temps

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
                  precision: str = "fp32", on_error: str = "skip", progress: bool = True,
                  frame_cache: Optional[str] = None):
    """``(embeddings (N, D) float32 numpy, kept relative paths, skipped relative paths)``
    for every video under ``video_dir``; broken videos are skipped (and listed) unless
    ``on_error="raise"``. With ``frame_cache`` the frames come from that cache."""
    root = Path(video_dir)
    videos = list_videos(root)
    if not videos:
        raise FileNotFoundError(f"no video files under {root}")
    records = [VideoRecord(str(root / v), (v,), v) for v in videos]
    source = video_source(frame_cache, VideoTransform.from_preprocess_cfg(preprocess_cfg), root)
    dataset = EvalSet(records, model.num_frames, **source, on_error=on_error)
    check_cache_sources([dataset], root, frame_cache)
    loader = dataset.make_loader(batch_size=batch_size, workers=workers,
                                 pin_memory=torch.device(device).type == "cuda")
    try:
        emb, kept = encode_videos(model, loader, device=device, precision=precision,
                                  progress=progress, desc="videos", return_indices=True)
    except UsageError as exc:  # every video unreadable
        raise UsageError(f"none of the {len(videos)} videos under {root} could be read "
                         f"(e.g. {videos[0]})") from exc
    kept_set = set(int(i) for i in kept)
    skipped = [v for i, v in enumerate(videos) if i not in kept_set]
    return emb.numpy().astype(np.float32), [videos[int(i)] for i in kept], skipped


def save_index(out: str | os.PathLike, embeddings: np.ndarray, videos: Sequence[str],
               meta: dict, model=None) -> Path:
    """Write ``INDEX/`` (see the module docstring); files are replaced atomically. ``out``
    must be new, empty or an index (:func:`check_index_target`)."""
    out = Path(out)
    check_index_target(out, overwrite=True)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # left by an encode killed mid-write
    atomic_write(out / "embeddings.npy", lambda tmp: np.save(open(tmp, "wb"), embeddings))
    has_prompts = model is not None and model.num_trainable() > 0
    if has_prompts:
        model.save_prompts(str(out / "prompts.safetensors"))
    elif (out / "prompts.safetensors").exists() and is_index(out):
        (out / "prompts.safetensors").unlink()  # the previous index's, replaced
    doc = {"format": FORMAT, **meta, "videos": list(videos),
           "prompts": "prompts.safetensors" if has_prompts else None,
           "dim": int(embeddings.shape[1]), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(out / "index.json", json.dumps(doc, indent=2) + "\n")
    return out


def is_index(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding an index made by :func:`save_index`."""
    meta = Path(path) / "index.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def check_index_target(out: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that would lose data: a non-empty folder that is not an index
    (a run folder, say), or an existing index without ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if not out.is_dir() or all(is_temp(p) for p in out.iterdir()):
        return
    if not is_index(out):
        raise UsageError(f"--out {out}: a non-empty folder that is not a video index; "
                         "write the index to a new folder")
    if not overwrite:
        raise UsageError(f"--out {out}: an index is already there; pass --overwrite to replace it")


#: What ``index.json`` must hold, and of which type.
INDEX_KEYS = {"videos": list, "root": str, "model": str, "dgl": dict}


def load_index(path: str | os.PathLike) -> VideoIndex:
    """The index in folder ``path``; a damaged or incomplete one is a ``ValueError``
    (:class:`UsageError`) naming the file."""
    path = Path(path)
    meta_path = path / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a video index (no index.json); make one with "
                                "`dgl-rs encode VIDEO_DIR --out INDEX`")
    meta = read_json(meta_path)
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise UsageError(f"{meta_path}: not a dgl-rs index (format {fmt!r})")
    for key, kind in INDEX_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise UsageError(f"{meta_path}: no {key!r} {kind.__name__} (a damaged index: encode it again)")
    emb = _load_embeddings(path / "embeddings.npy")
    if emb.shape[0] != len(meta["videos"]):
        raise UsageError(f"{path}: {emb.shape[0]} embeddings but {len(meta['videos'])} videos")
    return VideoIndex(emb.astype(np.float32, copy=False), list(meta["videos"]), meta, path)


def _load_embeddings(path: Path) -> np.ndarray:
    """``embeddings.npy``: a finite float (videos, dim) array, else a :class:`UsageError`."""
    try:
        emb = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError...
        raise UsageError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if emb.ndim != 2 or emb.dtype.kind != "f" or not np.isfinite(emb).all():
        raise UsageError(f"{path}: expected finite float embeddings (videos, dim), got {emb.dtype} {emb.shape}")
    return emb


def load_query_model(index: VideoIndex, device="cpu"):
    """The model that made ``index`` (its copy of the prompts on the backbone recorded in
    ``index.json``), to embed text queries."""
    meta = index.meta
    prompts = index.path / meta["prompts"] if meta.get("prompts") else None
    sizes = [meta["dgl"].get(k) for k in ("num_frames", "context_length")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        raise UsageError(f"{index.path / 'index.json'}: 'dgl' lacks num_frames/context_length (a damaged index)")
    model, _, _ = load_model(prompts, model_name=meta["model"], pretrained=meta.get("pretrained"),
                             device=device, num_frames=sizes[0], context_length=sizes[1])
    return model


@torch.no_grad()
def search(index: VideoIndex, queries: Sequence[str] | str, k: int = 5, model=None,
           device="cpu") -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(video path relative to the index root, cosine score)`` per query,
    best first."""
    if isinstance(queries, str):
        queries = [queries]
    if not all(isinstance(q, str) and q.strip() for q in queries) or not queries:
        raise UsageError(f"every query must be a non-empty text, got {list(queries)!r}")
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
