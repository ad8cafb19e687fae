"""A frame cache: every video decoded once (``dgl-rs prepare``), read back as uint8 frames.

Layout of a cache folder::

    manifest.json          format, fps, size, JPEG quality, the source root; per shard its
                           videos, bytes and SHA-256; per video its shard, first index row,
                           frame count and the source file's size and mtime; skipped videos
    shards/000000.tar      a WebDataset shard: per video ``KEY.json`` ({"id", "fps",
                           "frames"}) then ``KEY.000000.jpg``, ``KEY.000001.jpg``, ... (KEY:
                           ``v`` + the video's number), readable by ``webdataset`` or ``tar``
    shards/000000.idx.npy  int64 (frames, 3): byte offset, length and CRC-32 of every JPEG
                           in the shard, in member order (random access without the tar index)

Frame k of a video shows the source at time ``(k + 0.5) / fps`` (the last frame presented
at or before it), short side scaled to ``size``, centre crop, stored as JPEG (4:2:0).
:meth:`FrameCache.read` samples over the cached frames as
:func:`~dgl_rs.data.video.sample_indices` does over a video's frames, reads only the
sampled JPEGs (``os.pread`` at the indexed offsets), checks each one's CRC-32 and decodes
them with libjpeg-turbo (``torchvision.io.decode_jpeg``).

A video's id (what :meth:`FrameCache.read` takes) is its path relative to the prepared
root (for ``dgl-rs prepare DIR``: the file's path under DIR).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..util.errors import UsageError, VideoDecodeError
from ..util.files import atomic_write, read_json
from .video import sample_indices

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "dgl-rs-frames/1"
MANIFEST = "manifest.json"
SHARDS = "shards"


def shard_name(i: int) -> str:
    return f"{i:06d}.tar"


def index_name(i: int) -> str:
    return f"{i:06d}.idx.npy"


def video_key(number: int) -> str:
    """The WebDataset key of the ``number``-th video of the cache (no dots: WebDataset
    splits a member name at its first dot)."""
    return f"v{number:07d}"


def source_stat(path: PathLike) -> Optional[dict]:
    """``{"size", "mtime_ns"}`` of a source video (None when it is gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_jpegs(frames: torch.Tensor, quality: int) -> list[bytes]:
    """uint8 RGB (n, H, W, 3) -> one baseline JPEG (4:2:0) per frame at ``quality``."""
    from torchvision.io import encode_jpeg

    return [bytes(b.numpy()) for b in encode_jpeg(list(frames.permute(0, 3, 1, 2)), quality=int(quality))]


def write_shard(tar_path: Path, index_path: Path, videos) -> dict:
    """Write one shard (atomically, then its index) from ``videos``: an iterable of
    ``(number, id, jpegs)``; returns ``{id: (first index row, frame count)}``."""
    rows: list = []
    placed: dict = {}

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for number, video, blobs in videos:
                key = video_key(number)
                _add(tar, f"{key}.json", json.dumps({"id": video, "frames": len(blobs)}).encode())
                placed[video] = (len(rows), len(blobs))
                for k, blob in enumerate(blobs):
                    rows.append((_add(tar, f"{key}.{k:06d}.jpg", blob), len(blob), zlib.crc32(blob)))

    atomic_write(tar_path, write)
    index = np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def write_index(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, index, allow_pickle=False)

    atomic_write(index_path, write_index)
    return placed


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append member ``name``; the byte offset of its data in the tar file."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644  # mtime 0: the same frames give the same shard
    tar.addfile(info, io.BytesIO(data))
    return tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def decode_jpegs(blobs: Sequence[bytes]) -> torch.Tensor:
    """JPEG bytes -> uint8 RGB (n, H, W, 3) (libjpeg-turbo through torchvision)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    return torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB)).permute(0, 2, 3, 1)


def _check_setting(name: str, flag: str, cached, wanted, path) -> None:
    if wanted is not None and cached != wanted:
        raise UsageError(f"frame cache {path} holds frames at {name} {cached}, but {wanted} is needed here: "
                         f"prepare a cache with {flag} {wanted} (dgl-rs prepare ... {flag} {wanted})")


class FrameCache:
    """A frame cache made by ``dgl-rs prepare`` (see the module docstring).

    ``size`` / ``fps``: when given, a cache made at another size or frame rate is refused
    (a :class:`UsageError` naming both values). ``read`` opens shards lazily, once per
    process (loader workers each open their own), and keeps only the sampled frames.
    """

    def __init__(self, path: PathLike, *, size: Optional[int] = None, fps: Optional[float] = None) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise UsageError(f"--frame-cache {self.path}: no {MANIFEST}; make the cache with "
                             f"`dgl-rs prepare VIDEO_DIR --out {self.path}`")
        meta = read_json(manifest)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UsageError(f"{manifest}: not a dgl-rs frame cache (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
        if not meta.get("complete"):
            raise UsageError(f"frame cache {self.path} is incomplete (dgl-rs prepare was stopped): run the same "
                             "`dgl-rs prepare` again, it finishes without redoing finished shards")
        self.meta = meta
        self.size, self.fps, self.quality = int(meta["size"]), float(meta["fps"]), int(meta["quality"])
        self.root = Path(meta["root"])
        self._videos: dict = meta["videos"]
        self._skipped: dict = meta.get("skipped", {})
        _check_setting("size", "--size", self.size, size, self.path)
        _check_setting("fps", "--fps", self.fps, None if fps is None else float(fps), self.path)
        self._open: dict = {}  # shard -> (pid, fd, index array)

    def __len__(self) -> int:
        return len(self._videos)

    def __contains__(self, video: str) -> bool:
        return video in self._videos

    def __repr__(self) -> str:
        return f"FrameCache({str(self.path)!r}: {len(self)} videos, {self.size} px, {self.fps:g} fps)"

    def videos(self) -> list[str]:
        """The ids :meth:`read` takes (paths relative to the prepared root), sorted."""
        return sorted(self._videos)

    def num_frames(self, video: str) -> int:
        """How many frames the cache holds for ``video``."""
        return int(self._entry(video)["frames"])

    def key(self, path: PathLike, data_root: Optional[PathLike] = None) -> Optional[str]:
        """The id of source file ``path``: relative to the prepared root, else to
        ``data_root`` (the data moved since ``prepare``); None when it is in neither."""
        for root in (self.root, data_root):
            if root is None:
                continue
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
            rel = rel.replace(os.sep, "/")
            if rel in self._videos or rel in self._skipped:
                return rel
        return None

    def _entry(self, video: str) -> dict:
        entry = self._videos.get(video)
        if entry is None:
            why = (f"skipped by dgl-rs prepare ({self._skipped[video]['reason']})" if video in self._skipped
                   else "not in it")
            raise VideoDecodeError(str(self.root / video), f"not in the frame cache {self.path}: {why}")
        return entry

    def _shard(self, shard: int):
        """``(fd, index)`` of a shard, opened once per process."""
        got = self._open.get(shard)
        if got is not None and got[0] == os.getpid():
            return got[1], got[2]
        tar, idx = self.path / SHARDS / shard_name(shard), self.path / SHARDS / index_name(shard)
        try:
            index = np.load(idx, mmap_mode="r", allow_pickle=False)
            fd = os.open(tar, os.O_RDONLY)
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(str(tar), f"frame cache shard unreadable ({type(exc).__name__}: {exc}); "
                                             "run dgl-rs prepare again to rebuild it") from exc
        if index.ndim != 2 or index.shape[1] != 3:
            raise VideoDecodeError(str(idx), f"damaged frame cache index (shape {index.shape}); run dgl-rs "
                                             "prepare again to rebuild it")
        self._open[shard] = (os.getpid(), fd, index)
        return fd, index

    def read_frames(self, video: str, frames: Sequence[int]) -> torch.Tensor:
        """Cached frames ``frames`` (indices) of ``video``: uint8 (len(frames), S, S, 3)."""
        entry = self._entry(video)
        fd, index = self._shard(int(entry["shard"]))
        unique = sorted(set(int(i) for i in frames))
        blobs = []
        for i in unique:
            offset, length, crc = (int(v) for v in index[int(entry["row"]) + i])
            blob = os.pread(fd, length, offset)
            if len(blob) != length or zlib.crc32(blob) != crc:
                tar = self.path / SHARDS / shard_name(int(entry["shard"]))
                raise VideoDecodeError(str(tar), f"damaged frame cache shard: frame {i} of {video!r} fails its "
                                                 "CRC-32 check; run dgl-rs prepare again to rebuild the shard")
            blobs.append(blob)
        decoded = decode_jpegs(blobs)
        pos = {i: k for k, i in enumerate(unique)}
        return decoded[[pos[int(i)] for i in frames]]

    def read(self, video: str, num_frames: int, train: bool = False,
             rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        """``num_frames`` frames of ``video``: uint8 (num_frames, S, S, 3), sampled over the
        cached frames as :func:`~dgl_rs.data.video.sample_indices` samples (segment centres,
        or with ``train`` one random frame per segment drawn from ``rng``)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return self.read_frames(video, sample_indices(self.num_frames(video), num_frames, train, rng))

    def changed_sources(self, videos: Optional[Sequence[str]] = None) -> list[str]:
        """``"ID: what changed"`` for every source video (of ``videos``, default all) whose
        file has another size or mtime than when it was prepared; a source that is gone
        is not a change (the cache holds its frames)."""
        out = []
        for video in (self._videos if videos is None else videos):
            entry = self._videos.get(video)
            now = source_stat(self.root / video) if entry is not None else None
            was = entry.get("source") if entry is not None else None
            if now is not None and was is not None and now != was:
                what = "size" if now["size"] != was["size"] else "mtime"
                out.append(f"{video}: {what} {was[what]} -> {now[what]}")
        return out

    def verify(self) -> list[str]:
        """The shards whose SHA-256 differs from the manifest's (reads every shard)."""
        bad = []
        for i, shard in enumerate(self.meta["shards"]):
            tar = self.path / SHARDS / shard_name(i)
            if not tar.is_file() or file_sha256(tar) != shard["sha256"]:
                bad.append(str(tar))
        return bad

    def close(self) -> None:
        """Close the shards this process opened."""
        for pid, fd, _ in self._open.values():
            if pid == os.getpid():
                os.close(fd)
        self._open = {}

    def __getstate__(self) -> dict:  # to loader workers: without the open files
        return {**self.__dict__, "_open": {}}


class CachedVideos:
    """A dataset's ``load_video`` reading from a frame cache: ``(source path, num_frames,
    train, rng) -> uint8 (num_frames, S, S, 3)``. A video that is not in the cache (or was
    skipped by ``prepare``) raises :class:`VideoDecodeError` naming it, like a broken file."""

    def __init__(self, cache: FrameCache, data_root: Optional[PathLike] = None) -> None:
        self.cache, self.data_root = cache, data_root

    def key(self, path: PathLike) -> str:
        key = self.cache.key(path, self.data_root)
        if key is None:
            raise VideoDecodeError(os.fspath(path), f"not in the frame cache {self.cache.path} (prepared from "
                                                    f"{self.cache.root})")
        return key

    def __call__(self, path: PathLike, num_frames: int, train: bool = False,
                 rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        return self.cache.read(self.key(path), num_frames, train, rng)
