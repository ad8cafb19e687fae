"""Video data: decoding, transforms, dataset readers, loaders, the synthetic benchmark.

- :func:`decode_frames`, :class:`VideoTransform`, :class:`VideoDecodeError` (``video``)
- readers (``read_msrvtt``, ``read_vatex``, ``read_lsmdc``, ``read_activitynet``,
  ``read_msvd``, ``read_didemo``, ``read_folder``, ``read_dataset``) -> :class:`VideoRecord`
  lists (``readers``)
- :class:`TrainPairs`, :class:`EvalSet`, :func:`make_loader`, :func:`collate_skip` (``datasets``)
- :class:`FrameCache` (a cache made by ``dgl-rs prepare``), :class:`CachedVideos` (``framecache``)
- :class:`SyntheticVideoDataset`, :func:`render_video`, :func:`write_synthetic_videos`
  (``synthetic``)
"""

from .datasets import EvalSet, TrainPairs, VideoLoader, collate_skip, make_loader, seed_worker
from .framecache import CachedVideos, FrameCache
from .readers import (
    READERS,
    VideoRecord,
    index_videos,
    read_activitynet,
    read_dataset,
    read_didemo,
    read_folder,
    read_lsmdc,
    read_msrvtt,
    read_msvd,
    read_vatex,
)
from .synthetic import (
    SyntheticVideoDataset,
    VideoSpec,
    describe_frame,
    make_specs,
    render_video,
    sample_stills,
    write_synthetic_videos,
)
from .video import (
    OPENAI_MEAN,
    OPENAI_STD,
    VideoDecodeError,
    VideoTransform,
    decode_at_fps,
    decode_frames,
    normalize_frames,
    sample_indices,
    write_video,
)

__all__ = [
    "OPENAI_MEAN", "OPENAI_STD", "READERS", "CachedVideos", "EvalSet", "FrameCache", "SyntheticVideoDataset",
    "TrainPairs",
    "VideoDecodeError", "VideoLoader", "VideoRecord", "VideoSpec", "VideoTransform",
    "collate_skip", "decode_at_fps", "decode_frames", "describe_frame", "index_videos", "make_loader",
    "make_specs", "normalize_frames", "read_activitynet", "read_dataset", "read_didemo", "read_folder", "read_lsmdc",
    "read_msrvtt", "read_msvd", "read_vatex", "render_video", "sample_indices", "sample_stills",
    "seed_worker", "write_synthetic_videos", "write_video",
]
