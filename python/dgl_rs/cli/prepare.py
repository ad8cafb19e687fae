"""``dgl-rs prepare``: decode every video once into a frame cache (:mod:`dgl_rs.data.framecache`).

    dgl-rs prepare VIDEO_DIR --out CACHE                       every video under VIDEO_DIR
    dgl-rs prepare --dataset NAME --data-root ROOT --out CACHE  every video of every split

Videos are decoded in worker processes (``--workers``), resampled at ``--fps``, scaled to
``--size`` (short side, centre crop) and stored as JPEG (``--quality``) in tar shards of
``--videos-per-shard`` videos. Each finished shard is recorded in ``manifest.json`` at once,
so a run that is stopped (killed, Ctrl-C, a refused video) and started again keeps every
finished shard whose videos did not change and redoes the rest; a shard whose checksum no
longer matches, or one holding a source video whose size or mtime changed, is redone.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..backbone.memory import refuse_beyond
from ..data.framecache import (FORMAT, MANIFEST, SHARDS, encode_jpegs, file_sha256, index_name, shard_name,
                               source_stat, write_shard)
from ..data.readers import READERS
from ..data.video import VideoDecodeError, decode_at_fps
from ..services.data import SPLITS, VAL_SPLITS
from ..services.index import list_videos
from ..util.errors import UsageError
from ..util.files import atomic_write_text, check_readable, check_writable, read_json, remove_stale_temps
from ..util.progress import progress_bar

#: Frames per second stored (see the README, "Frame cache"): CLIP4Clip's rate.
DEFAULT_FPS = 3.0
DEFAULT_QUALITY = 90


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgl-rs prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video_dir", nargs="?", metavar="VIDEO_DIR", help="folder of videos (searched recursively); "
                   "or give --dataset and --data-root")
    p.add_argument("--dataset", choices=sorted(READERS), help="a dataset layout dgl-rs reads: every video of "
                   "its train, test and validation splits (folder: every video under --data-root)")
    p.add_argument("--data-root", help="the dataset's root folder (with --dataset)")
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder to write (new, or a cache this "
                   "command made: it is finished or updated)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help=f"frames stored per second of video "
                   f"(default {DEFAULT_FPS:g}: T=12 frames over a 15 s clip then draw from ~4 per segment)")
    p.add_argument("--size", type=int, default=224, help="frame size in pixels: the model's input size "
                   "(short side scaled, centre crop; default 224, ViT-B/32)")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"JPEG quality 1-100 (default "
                   f"{DEFAULT_QUALITY})")
    p.add_argument("--videos-per-shard", type=int, default=64, help="videos per tar shard (default 64)")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16),
                   help="decoding processes (0 = this process; default: one per core)")
    p.add_argument("--on-broken", choices=("skip", "raise"), default="skip", help="a missing, unreadable or "
                   "truncated video is skipped and listed (default) or stops the run with an error naming it "
                   "(finished shards are kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_args(args: argparse.Namespace) -> None:
    if (args.video_dir is None) == (args.dataset is None):
        raise UsageError("give either VIDEO_DIR or --dataset NAME --data-root ROOT")
    if args.dataset and not args.data_root:
        raise UsageError(f"--dataset {args.dataset} needs --data-root (the dataset's root folder)")
    checks = (("--fps", args.fps, 0 < args.fps < float("inf"), "a positive number"),
              ("--size", args.size, args.size >= 1, ">= 1"),
              ("--quality", args.quality, 1 <= args.quality <= 100, "in 1-100"),
              ("--videos-per-shard", args.videos_per_shard, args.videos_per_shard >= 1, ">= 1"),
              ("--workers", args.workers, args.workers >= 0, ">= 0"))
    for flag, value, ok, wanted in checks:
        if not ok:
            raise UsageError(f"{flag} must be {wanted}, got {value}")
    refuse_beyond(args.size * args.size * 3, torch.device("cpu"), f"--size {args.size}: one frame")


def dataset_videos(name: str, root: Path) -> list[Path]:
    """Every video file of every split of dataset ``name`` that has its annotation file."""
    if name == "folder":
        return [root / v for v in list_videos(root)]
    paths, read = set(), []
    for split in dict.fromkeys((*SPLITS[name], VAL_SPLITS.get(name))):
        try:
            records = READERS[name](root, split) if split else []
        except FileNotFoundError:
            continue
        read.append(split)
        paths.update(Path(r.video_path) for r in records)
    if not read:
        raise UsageError(f"--dataset {name} --data-root {root}: no split's annotation file found")
    return sorted(paths)


def source_videos(args: argparse.Namespace) -> tuple[Path, list[tuple[str, Path]]]:
    """The prepared root and its videos as sorted ``(id, path)``: ids relative to the root."""
    if args.video_dir is not None:
        root = check_readable(args.video_dir, "VIDEO_DIR", folder=True).resolve()
        paths = [root / v for v in list_videos(root)]
    else:
        root = check_readable(args.data_root, "--data-root", folder=True).resolve()
        paths = dataset_videos(args.dataset, root)
    videos = sorted((os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/"), Path(p)) for p in paths)
    if not videos:
        raise UsageError(f"no video files under {root}")
    return root, videos


def open_manifest(out: Path, args: argparse.Namespace, root: Path) -> dict:
    """The cache's manifest so far (a new one for a new folder); a cache made with other
    settings, or a folder that is not a cache, is refused naming both values."""
    settings = {"fps": float(args.fps), "size": int(args.size), "quality": int(args.quality)}
    fresh = {"format": FORMAT, **settings, "root": str(root), "complete": False, "shards": [], "videos": {},
             "skipped": {}}
    if not (out / MANIFEST).is_file():
        if out.is_dir() and any(p for p in out.iterdir() if p.name != SHARDS):
            raise UsageError(f"--out {out}: a non-empty folder that is not a frame cache; pick a new folder")
        return fresh
    meta = read_json(out / MANIFEST)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"--out {out}: {MANIFEST} is not a dgl-rs frame cache's; pick a new folder")
    for key, value in settings.items():
        if meta.get(key) != value:
            flag = f"--{key}"
            raise UsageError(f"--out {out} is a cache made with {flag} {meta.get(key):g}, this run asks {flag} "
                             f"{value:g}: pass {flag} {meta.get(key):g} to finish or update it, or pick a new --out")
    return meta


def reusable(meta: dict, out: Path, i: int, shard: list, stats: dict) -> bool:
    """Shard ``i`` of the old manifest holds exactly ``shard``'s videos, from unchanged
    sources, and its files match their checksums."""
    old = meta["shards"][i] if i < len(meta["shards"]) else None
    if not old or old["videos"] != [v for v, _ in shard]:
        return False
    for video, _ in shard:
        entry = meta["videos"].get(video) or meta["skipped"].get(video) or {}
        if entry.get("source") != stats[video]:
            return False
    tar, idx = out / SHARDS / shard_name(i), out / SHARDS / index_name(i)
    return (tar.is_file() and idx.is_file() and file_sha256(tar) == old["sha256"]
            and file_sha256(idx) == old["index_sha256"])


def _encode(job: tuple) -> tuple:
    """Worker: ``(number, id, path, fps, size, quality)`` -> ``(number, id, jpegs or None,
    reason)``."""
    number, video, path, fps, size, quality = job
    try:
        return number, video, encode_jpegs(decode_at_fps(path, fps, size), quality), None
    except VideoDecodeError as exc:
        return number, video, None, exc.reason


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _drop(meta: dict, shard_videos: Sequence[str]) -> None:
    for video in shard_videos:
        meta["videos"].pop(video, None)
        meta["skipped"].pop(video, None)


def write_manifest(out: Path, meta: dict) -> None:
    import json

    atomic_write_text(out / MANIFEST, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def run_shard(out: Path, meta: dict, i: int, shard: list, results, stats: dict, args, paths: dict, bar) -> None:
    """Write shard ``i`` from the workers' ``results`` and record it in the manifest."""
    skipped: dict = {}

    def videos():
        for number, video, blobs, reason in results:
            bar.update(1)
            if blobs is None:
                if args.on_broken == "raise":
                    raise UsageError(f"cannot decode video {str(paths[video])!r}: {reason} (pass --on-broken skip "
                                     "to leave such videos out; finished shards are kept)")
                skipped[video] = {"reason": reason, "source": stats[video]}
                continue
            yield number, video, blobs

    tar, idx = out / SHARDS / shard_name(i), out / SHARDS / index_name(i)
    placed = write_shard(tar, idx, videos())
    for video, (row, frames) in placed.items():
        meta["videos"][video] = {"shard": i, "row": row, "frames": frames, "source": stats[video]}
    meta["skipped"].update(skipped)
    meta["shards"][i] = {"videos": [v for v, _ in shard], "sha256": file_sha256(tar),
                         "index_sha256": file_sha256(idx), "bytes": tar.stat().st_size,
                         "frames": sum(f for _, f in placed.values())}
    write_manifest(out, meta)


def plan(meta: dict, out: Path, videos: list, per_shard: int, stats: dict) -> tuple[list, list]:
    """``(shards, pending shard numbers)``; the manifest forgets what is to be redone."""
    shards = [videos[i:i + per_shard] for i in range(0, len(videos), per_shard)]
    keep = [reusable(meta, out, i, s, stats) for i, s in enumerate(shards)]
    old_shards = meta["shards"]
    for i, old in enumerate(old_shards):
        if old and not (i < len(keep) and keep[i]):
            _drop(meta, old["videos"])
    for i in range(len(shards), len(old_shards)):  # the cache shrank: shards past the end go
        for path in (out / SHARDS / shard_name(i), out / SHARDS / index_name(i)):
            path.unlink(missing_ok=True)
    meta["shards"] = [old_shards[i] if keep[i] else None for i in range(len(shards))]
    return shards, [i for i, k in enumerate(keep) if not k]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    out = check_writable(Path(args.out), "--out")
    root, videos = source_videos(args)
    meta = open_manifest(out, args, root)
    meta.update(root=str(root), complete=False)
    stats = {v: source_stat(p) for v, p in videos}
    number = {v: n for n, (v, _) in enumerate(videos)}
    shards, pending = plan(meta, out, videos, args.videos_per_shard, stats)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out / SHARDS)  # a shard a killed run was writing
    write_manifest(out, meta)
    t0 = time.perf_counter()
    jobs = [(number[v], v, str(p), args.fps, args.size, args.quality) for i in pending for v, p in shards[i]]
    print(f"prepare: {len(videos)} videos in {len(shards)} shards; {len(shards) - len(pending)} done already, "
          f"{len(jobs)} videos to decode ({args.fps:g} fps, {args.size} px, JPEG quality {args.quality})")
    bar = progress_bar(total=len(jobs), desc="prepare", unit="video", enabled=not args.no_progress)
    pool = multiprocessing.Pool(args.workers, initializer=_worker_init) if args.workers and jobs else None
    try:
        results = pool.imap(_encode, jobs) if pool else map(_encode, jobs)
        for i in pending:
            run_shard(out, meta, i, shards[i], itertools.islice(results, len(shards[i])), stats, args,
                      dict(videos), bar)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    meta["complete"] = True
    write_manifest(out, meta)
    report(out, meta, time.perf_counter() - t0)
    return 0


def report(out: Path, meta: dict, seconds: float) -> None:
    frames = sum(s["frames"] for s in meta["shards"])
    size = sum(s["bytes"] for s in meta["shards"])
    print(f"frame cache {out}: {len(meta['videos'])} videos, {frames} frames, {size / 2**20:.1f} MiB "
          f"({size / max(frames, 1) / 1000:.1f} KB per frame) in {seconds:.1f} s")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} unreadable videos:")
        for video, entry in sorted(meta["skipped"].items()):
            print(f"  {Path(meta['root']) / video}: {entry['reason']}")
