"""Text-video datasets: training pairs, evaluation sets, collation and loaders.

:mod:`dgl_rs.data.readers` turns the annotation files into :class:`VideoRecord` lists;
:class:`TrainPairs` and :class:`EvalSet` turn records into tensors:

- ``TrainPairs``: one (video, caption) pair per item. Items are dicts
  ``{"frames": float32 (frames, 3, S, S), "text": int64 (context_length,),
  "video_index": int, "caption_index": int}``.
- ``EvalSet``: every video once (items ``{"frames", "video_index"}``) plus all
  captions (``captions``) and ``caption_to_video`` (int64, one video index per caption),
  so each text and each video is embedded once.

A broken or missing video raises :class:`~dgl_rs.data.video.VideoDecodeError`
(``on_error="raise"``, the evaluation default) or makes ``__getitem__`` return ``None``
(``on_error="skip"``, the training default); :func:`collate_skip` drops the ``None``s and
reports how many it dropped in the batch (``batch["num_skipped"]``), and
:class:`VideoLoader` sums them (``loader.num_skipped``).
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..backbone.memory import frames_bytes, refuse_beyond
from .readers import VideoRecord
from .video import VideoDecodeError, decode_frames

log = logging.getLogger("dgl_rs.data")

ON_ERROR = ("skip", "raise")

# (source, num_frames, train, rng) -> uint8 (frames, H, W, 3)
VideoLoaderFn = Callable[[Any, int, bool, Optional[np.random.Generator]], torch.Tensor]
Tokenizer = Callable[[Sequence[str]], torch.Tensor]


# ---------------------------------------------------------------------- datasets
def _item_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's RNG: reproducible under a seeded
    DataLoader (worker seeds come from its generator) or a seeded main process."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


class _VideoDataset(Dataset):
    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], on_error: str,
                 load_video: Optional[VideoLoaderFn]) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.records = list(records)
        if not self.records:
            raise ValueError("no videos: the record list is empty")
        self.num_frames = int(num_frames)
        size = getattr(transform, "image_size", None)
        if size:  # before any video is decoded: a typo must not fill the machine
            refuse_beyond(frames_bytes(1, self.num_frames, size, size), torch.device("cpu"),
                          f"num_frames={num_frames} at {size} px: one video")
        self.transform = transform
        self.on_error = _check_on_error(on_error)
        self.load_video = load_video or decode_frames

    def _frames(self, video_index: int, train: bool) -> Optional[torch.Tensor]:
        rec = self.records[video_index]
        try:
            frames = self.load_video(rec.video_path, self.num_frames, train,
                                     _item_rng() if train else None)
        except VideoDecodeError as exc:
            if self.on_error == "raise":
                raise
            log.warning("skipping broken video: %s", exc)
            return None
        out = self.transform(frames)
        if not torch.isfinite(out).all():  # cannot happen with uint8 input; never pass NaN on
            raise ValueError(f"non-finite frames from {rec.video_path!r}")
        return out


class TrainPairs(_VideoDataset):
    """One (video, caption) item per caption of every record.

    ``tokenizer``: texts -> LongTensor (N, context_length), e.g. the one
    :func:`dgl_rs.backbones.load_clip` returns. Frames are sampled with one random frame
    per segment (from torch's RNG, so seed the loader). ``on_error="skip"`` (default)
    returns ``None`` for a broken video (dropped by :func:`collate_skip`).
    """

    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], tokenizer: Tokenizer, *,
                 on_error: str = "skip", load_video: Optional[VideoLoaderFn] = None) -> None:
        super().__init__(records, num_frames, transform, on_error, load_video)
        self.tokenizer = tokenizer
        self.pairs = np.array([(v, c) for v, r in enumerate(self.records)
                               for c in range(len(r.captions))], dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def captions(self) -> list[str]:
        """Every training caption, in item order (e.g. the QB-Norm query bank)."""
        return [self.records[v].captions[c] for v, c in self.pairs]

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        v, c = (int(x) for x in self.pairs[index])
        frames = self._frames(v, train=True)
        if frames is None:
            return None
        text = self.tokenizer([self.records[v].captions[c]])[0]
        return {"frames": frames, "text": text, "video_index": v, "caption_index": c}


class EvalSet(_VideoDataset):
    """Every video once (items ``{"frames", "video_index"}``, segment-centre frames)
    plus ``captions`` (all captions, flattened) and ``caption_to_video`` (int64,
    caption -> index of its video). ``on_error="raise"`` by default: a missing test
    video changes the benchmark, so it should fail loudly."""

    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], *,
                 tokenizer: Optional[Tokenizer] = None, on_error: str = "raise",
                 load_video: Optional[VideoLoaderFn] = None) -> None:
        super().__init__(records, num_frames, transform, on_error, load_video)
        self.tokenizer = tokenizer
        self.captions: list[str] = [c for r in self.records for c in r.captions]
        self.caption_to_video = np.array([v for v, r in enumerate(self.records)
                                          for _ in r.captions], dtype=np.int64)
        self.video_ids = [r.video_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        frames = self._frames(int(index), train=False)
        if frames is None:
            return None
        return {"frames": frames, "video_index": int(index)}

    def tokenized_captions(self, tokenizer: Optional[Tokenizer] = None) -> torch.Tensor:
        """All captions as token ids (num_captions, context_length)."""
        tok = tokenizer or self.tokenizer
        if tok is None:
            raise ValueError("EvalSet.tokenized_captions: no tokenizer given")
        return tok(self.captions)

    def make_loader(self, batch_size: int = 32, workers: int = 0, **kwargs) -> "VideoLoader":
        """The videos in order, batched (see :func:`make_loader`)."""
        return make_loader(self, batch_size, shuffle=False, num_workers=workers, **kwargs)

    def restrict(self, kept_videos: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """After skipping broken videos: ``(caption_indices, caption_to_kept)``, the
        captions whose video was kept and their video's position in ``kept_videos``."""
        pos = {int(v): i for i, v in enumerate(kept_videos)}
        caps = np.array([i for i, v in enumerate(self.caption_to_video) if int(v) in pos],
                        dtype=np.int64)
        return caps, np.array([pos[int(self.caption_to_video[i])] for i in caps],
                              dtype=np.int64)


# ----------------------------------------------------------------------- loading
def collate_skip(batch: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Collate dict items, dropping ``None`` (skipped broken videos).

    The batch gets ``num_skipped`` (how many were dropped) and ``batch_size`` (how many
    remain; 0 when every item was skipped, then no other keys)."""
    kept = [b for b in batch if b is not None]
    out: dict[str, Any] = default_collate(kept) if kept else {}
    out["num_skipped"] = len(batch) - len(kept)
    out["batch_size"] = len(kept)
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch
    seed (which the loader's generator determines)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class VideoLoader(DataLoader):
    """A DataLoader that drops empty batches and counts skipped samples
    (``num_skipped``: total since creation)."""

    num_skipped: int = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, dict) and "num_skipped" in batch:
                self.num_skipped += int(batch["num_skipped"])
                if batch["batch_size"] == 0:
                    continue
            yield batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False,
                num_workers: int = 0, seed: int = 0, *, drop_last: bool = False,
                sampler=None, pin_memory: bool = False, persistent_workers: bool = False,
                prefetch_factor: Optional[int] = None) -> VideoLoader:
    """A :class:`VideoLoader` over ``dataset`` with :func:`collate_skip`, a generator
    seeded with ``seed`` (shuffling and worker seeds) and :func:`seed_worker`.

    Pass a ``sampler`` (e.g. ``DistributedSampler``) instead of ``shuffle`` for DDP.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sampler is not None and shuffle:
        raise ValueError("pass either shuffle=True or a sampler, not both")
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return VideoLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                       num_workers=num_workers, collate_fn=collate_skip,
                       generator=torch.Generator().manual_seed(int(seed)),
                       worker_init_fn=seed_worker, drop_last=drop_last,
                       pin_memory=pin_memory, **kwargs)
