"""Video decoding (PyAV), frame sampling and the CLIP frame transform.

Spec section 7: T frames sampled uniformly at segment centres for evaluation, one random
frame per segment for training; videos shorter than T repeat frames; short side resized
to the model's image size, centre crop, CLIP mean/std.

Tensors: decoded frames are uint8 ``(frames, H, W, 3)`` (RGB); transformed frames are
float32 ``(frames, 3, S, S)``.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..backbone.memory import refuse_beyond
from ..util.errors import UsageError, VideoDecodeError
from ..util.files import atomic_write

PathLike = Union[str, "os.PathLike[str]"]

# open_clip.constants.OPENAI_DATASET_MEAN / _STD, repeated so this module works without
# importing open_clip (slow to import); tests check that they agree.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def sample_indices(num_total: int, num_frames: int, train: bool = False,
                   rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Indices (num_frames,) int64 of the frames to keep out of ``num_total``.

    The video is cut into ``num_frames`` equal segments ``[i*n/T, (i+1)*n/T)``.
    Evaluation takes the frame at each segment centre, ``floor((i + 0.5) * n / T)``;
    training takes one uniformly random frame per segment. With fewer frames than
    segments the indices repeat (in order), so short videos repeat frames.
    """
    if num_total < 1:
        raise ValueError(f"num_total must be >= 1, got {num_total}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    i = np.arange(num_frames, dtype=np.float64)
    centres = np.floor((i + 0.5) * num_total / num_frames).astype(np.int64)
    if not train:
        return np.minimum(centres, num_total - 1)
    rng = rng if rng is not None else np.random.default_rng()
    lo = np.floor(i * num_total / num_frames).astype(np.int64)
    hi = np.floor((i + 1) * num_total / num_frames).astype(np.int64)
    empty = hi <= lo  # segment shorter than one frame (video shorter than T)
    picked = lo + np.floor(rng.random(num_frames) * np.maximum(hi - lo, 1)).astype(np.int64)
    return np.minimum(np.where(empty, centres, picked), num_total - 1)


def _av():
    """PyAV (imported on first use: slow to import), or a one-line error naming it."""
    try:
        import av
    except ImportError as exc:
        raise UsageError(f"reading and writing videos needs PyAV, a dependency of dgl-rs: "
                         f"pip install av ({exc})") from exc
    return av


def _open(path: str):
    return _av().open(path, mode="r", metadata_errors="ignore")


def _count_frames(container, stream) -> int:
    """Frame count from the container metadata, else by demuxing (no decoding)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    count = sum(1 for p in container.demux(stream) if p.size > 0)
    container.seek(0)
    return count


def _decode_picked(path: str, wanted: np.ndarray) -> tuple[list, int]:
    """One sequential decoding pass that converts only the wanted frames to RGB.

    Returns the (H, W, 3) arrays found, in the order of ``wanted``, and how many frames
    were decoded (stops early after the last wanted frame). A decoding error after the
    first frame ends the pass like the end of the file would (a damaged tail); an error
    before any frame decodes propagates.
    """
    av = _av()
    last = int(wanted.max())
    want = set(int(w) for w in wanted)
    got: dict[int, np.ndarray] = {}
    n = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if n in want:
                    got[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > last:
                    break
        except av.error.FFmpegError:
            if n == 0:
                raise
    return [got[int(w)] for w in wanted if int(w) in got], n


def decode_frames(path: PathLike, num_frames: int, train: bool = False,
                  rng: Optional[np.random.Generator] = None) -> torch.Tensor:
    """Decode ``num_frames`` RGB frames of a video file: uint8 (frames, H, W, 3).

    Frames are picked by :func:`sample_indices` (segment centres when ``train`` is
    False, a random frame per segment otherwise, drawn from ``rng``). The video is
    decoded once, front to back, stopping after the last picked frame, and only the
    picked frames are converted to RGB. When the container's frame count is wrong
    (truncated file, damaged tail, bad metadata) the indices are recomputed over the
    frames that actually decode.

    Raises :class:`VideoDecodeError` (with the path) for a missing file, a file that is
    not a video, or a video without a decodable frame.
    """
    path = os.fspath(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    av = _av()
    try:
        with _open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            total = _count_frames(container, stream)
            size = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
        refuse_beyond(num_frames * size * 3, torch.device("cpu"), f"num_frames={num_frames} of {path}")
        if total < 1:
            raise VideoDecodeError(path, "no video frames")
        wanted = sample_indices(total, num_frames, train, rng)
        frames, decoded = _decode_picked(path, wanted)
        if len(frames) < num_frames:
            # Fewer frames decode than the metadata promised: resample over those.
            if decoded < 1:
                raise VideoDecodeError(path, "no decodable frames")
            wanted = sample_indices(decoded, num_frames, train, rng)
            frames, decoded = _decode_picked(path, wanted)
            if len(frames) < num_frames:
                raise VideoDecodeError(path, f"only {decoded} decodable frames, "
                                             f"frame count changed between passes")
    except (VideoDecodeError, UsageError):
        raise
    except (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError) as exc:
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(path, f"frame size changes within the video: {sorted(shapes)}")
    return torch.from_numpy(np.stack(frames))


#: Container formats by file suffix (written through a temp file: FFmpeg cannot guess from its name).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


def write_video(path: PathLike, frames: Union[torch.Tensor, np.ndarray], fps: int = 8,
                codec: str = "libx264", faststart: bool = False) -> str:
    """Write uint8 RGB frames (frames, H, W, 3) as a video file (H and W even for
    yuv420p). ``faststart`` puts the index (moov atom) at the front of an mp4.

    Written atomically (a temp file renamed over ``path``). Returns the path. Used for
    tests, the synthetic benchmark and the demo.
    """
    av = _av()
    path = os.fspath(path)
    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (frames, H, W, 3), got {arr.dtype} "
                         f"{tuple(arr.shape)}")
    t, h, w, _ = arr.shape
    if t < 1 or h % 2 or w % 2:
        raise ValueError(f"need at least one frame and even H, W; got {tuple(arr.shape)}")
    options = {"movflags": "faststart"} if faststart else {}
    container_format = CONTAINERS.get(Path(path).suffix.lower())  # the temp file has another suffix

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format=container_format, options=options) as container:
            stream = container.add_stream(codec, rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                # near-lossless and every frame a keyframe: small test clips, exact seeking
                stream.options = {"crf": "10", "g": "1"}
            for img in arr:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, encode)
    return path


def _as_triple(name: str, value: Sequence[float]) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be 3 finite numbers (one per RGB channel), got {value}")
    return vals  # type: ignore[return-value]


class VideoTransform:
    """uint8 frames (frames, H, W, 3) -> normalised float32 (frames, 3, S, S).

    Short side resized to ``image_size`` (bicubic, antialiased, as open_clip's image
    transform), centre crop ``image_size`` x ``image_size``, scaled to [0, 1], then
    ``(x - mean) / std`` per channel. Build it from a model with :meth:`from_preprocess_cfg`
    (``load_clip`` returns that dict).
    """

    def __init__(self, image_size: int, mean: Sequence[float] = OPENAI_MEAN,
                 std: Sequence[float] = OPENAI_STD) -> None:
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = int(image_size)
        self.mean = _as_triple("mean", mean)
        self.std = _as_triple("std", std)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @classmethod
    def from_preprocess_cfg(cls, cfg: dict) -> "VideoTransform":
        """From ``{"image_size", "mean", "std"}`` (the dict :func:`dgl_rs.backbones.load_clip`
        returns); open_clip's ``size`` key is accepted for ``image_size``."""
        size = cfg.get("image_size", cfg.get("size"))
        if size is None:
            raise ValueError("preprocess cfg has no 'image_size'")
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise ValueError(f"only square image sizes are supported, got {size}")
            size = size[0]
        return cls(int(size), cfg.get("mean") or OPENAI_MEAN, cfg.get("std") or OPENAI_STD)

    def __repr__(self) -> str:
        return f"VideoTransform(image_size={self.image_size}, mean={self.mean}, std={self.std})"

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor):
            frames = torch.as_tensor(np.asarray(frames))
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (frames, H, W, 3), got {frames.dtype} "
                             f"{tuple(frames.shape)}")
        s = self.image_size
        x = frames.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if min(h, w) != s:
            # torchvision's Resize(int) rule: short side -> s, long side truncated.
            nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 255)
            h, w = nh, nw
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        x = x[:, :, top:top + s, left:left + s]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        return ((x - mean) / std).contiguous()
