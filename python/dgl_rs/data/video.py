"""Video decoding (PyAV), frame sampling and the CLIP frame transform.

Spec section 7: T frames sampled uniformly at segment centres for evaluation, one random
frame per segment for training; videos shorter than T repeat frames; short side resized
to the model's image size, centre crop, CLIP mean/std.

Tensors: decoded frames are uint8 ``(frames, H, W, 3)`` (RGB), or ``(frames, S, S, 3)``
resized in uint8 (``size``); transformed frames are float32 ``(frames, 3, S, S)``.

Decoding reads the packet index once (demuxing, no decoding), then decodes only what the
wanted frames need: from the keyframe before a wanted frame when that keyframe lies past
what was decoded so far (a seek), else onward; frames no other frame references are not
decoded at all unless wanted (``skip_frame``), and only the wanted frames are converted to
RGB (then resized in uint8 with ``size``).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..backbone.memory import refuse_beyond
from ..backbone.openclip import OPENAI_MEAN, OPENAI_STD
from ..util.errors import UsageError, VideoDecodeError
from ..util.files import atomic_write

PathLike = Union[str, "os.PathLike[str]"]



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


def scaled_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(height, width)`` with the short side ``size``, the long side truncated
    (torchvision's ``Resize(int)`` rule, as open_clip's transform resizes)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def centre_crop(x, size: int, h_dim: int, w_dim: int):
    """The centre ``size`` x ``size`` window of array or tensor ``x`` (dims ``h_dim``,
    ``w_dim``), offsets rounded as torchvision's ``CenterCrop``."""
    h, w = x.shape[h_dim], x.shape[w_dim]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    index = [slice(None)] * x.ndim
    index[h_dim], index[w_dim] = slice(top, top + size), slice(left, left + size)
    return x[tuple(index)]


def _to_rgb(frame) -> np.ndarray:
    """av.VideoFrame -> uint8 RGB (H, W, 3) at its own size (swscale's SIMD conversion)."""
    return frame.to_ndarray(format="rgb24")


def resize_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (frames, H, W, 3) -> uint8 (frames, size, size, 3): short side to ``size``
    (bicubic, antialiased: torch's uint8 kernel, equal to :class:`VideoTransform`'s float
    resize up to rounding), centre crop. Measured as fast or faster than scaling in the decoder's
    swscale before the RGB conversion, which also differs by 1-9 grey levels (chroma
    scaled at half resolution); see the README, "Frame cache"."""
    h, w = frames.shape[1:3]
    if min(h, w) != size:
        x = frames.permute(0, 3, 1, 2)
        x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=scaled_size(h, w, size),
                          mode="bicubic", antialias=True, align_corners=False)
        frames = x.permute(0, 2, 3, 1)
    return centre_crop(frames, size, 1, 2).contiguous()


def _decode_picked(path: str, wanted: np.ndarray, convert=_to_rgb) -> tuple[list, int]:
    """One sequential decoding pass that converts only the wanted frames to RGB.

    Returns the (H, W, 3) arrays found, in the order of ``wanted``, and how many frames
    were decoded (stops early after the last wanted frame). A decoding error after the
    first frame ends the pass like the end of the file would (a damaged tail); an error
    before any frame decodes propagates. The fallback of :func:`_decode_seeking`.
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
                    got[n] = convert(frame)
                n += 1
                if n > last:
                    break
        except av.error.FFmpegError:
            if n == 0:
                raise
    return [got[int(w)] for w in wanted if int(w) in got], n


class PacketIndex:
    """A video stream's packets (decode order) read by demuxing, no decoding: ``pts``
    (presentation times, sorted: frame i of the video is ``pts[i]``), the positions of
    the keyframes and their times. ``usable`` is False when the container lacks the
    timestamps seeking needs (then decoding falls back to one sequential pass)."""

    def __init__(self, container, stream) -> None:
        self.packets = [p for p in container.demux(stream) if p.size > 0]
        times = [p.pts for p in self.packets]
        self.usable = bool(times) and None not in times and len(set(times)) == len(times)
        self.pts = sorted(times) if self.usable else []
        self.keys = [i for i, p in enumerate(self.packets) if p.is_keyframe] if self.usable else []
        self.key_pts = [self.packets[k].pts for k in self.keys]
        self.usable = self.usable and bool(self.keys) and self.keys[0] == 0

    def keyframe_before(self, t: int) -> int:
        """Decode-order position of the last keyframe at or before time ``t``."""
        return self.keys[max(bisect.bisect_right(self.key_pts, t) - 1, 0)]


def decode_targets(stream, index: PacketIndex, targets: Sequence[int], convert) -> dict:
    """``{pts: converted frame}`` for every time in ``targets`` that decodes.

    Walks the wanted times in order: when the keyframe before the next one lies past the
    packets sent so far, the decoder is flushed and starts there (a seek without
    re-reading the file); otherwise it goes on. Packets of frames that are not wanted
    are decoded with ``skip_frame="NONREF"`` (frames that no other frame references are
    dropped: exact, the reference frames are all decoded)."""
    cc = stream.codec_context
    wanted = set(int(t) for t in targets)
    got: dict[int, np.ndarray] = {}
    pos = 0
    for t in sorted(wanted):
        key = index.keyframe_before(t)
        if key > pos:
            cc.flush_buffers()
            pos = key
        while t not in got:
            packet = index.packets[pos] if pos < len(index.packets) else None
            if packet is not None:
                cc.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            frames = cc.decode(packet)
            pos += 1
            for frame in frames:
                if frame.pts in wanted and frame.pts not in got:
                    got[frame.pts] = convert(frame)
            if packet is None and not frames:
                return got  # drained: the rest does not decode
    return got


def _decode_indexed(path: str, pick, convert) -> Optional[list]:
    """The frames at positions ``pick(index, stream)`` of the demuxed packet index, by
    :func:`decode_targets`; None when that cannot give them all (no usable timestamps, a
    decoding error, fewer frames than packets): the caller then decodes sequentially."""
    av = _av()
    try:
        with _open(path) as container:
            stream = container.streams.video[0]
            index = PacketIndex(container, stream)
            if not index.usable:
                return None
            targets = [index.pts[int(i)] for i in pick(index, stream)]
            got = decode_targets(stream, index, targets, convert)
    except av.error.FFmpegError:
        return None
    return [got[t] for t in targets] if all(t in got for t in targets) else None


def _decode_seeking(path: str, num_frames: int, train: bool, rng, convert) -> Optional[list]:
    """The :func:`sample_indices` frames by seeking (:func:`_decode_indexed`)."""
    return _decode_indexed(path, lambda index, _: sample_indices(len(index.pts), num_frames, train, rng), convert)


def _probe(path: str, num_frames: int) -> int:
    """The container's frame count, after refusing a request beyond the machine's memory."""
    with _open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        total = _count_frames(container, stream)
        pixels = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
    refuse_beyond(num_frames * pixels * 3, torch.device("cpu"), f"num_frames={num_frames} of {path}")
    if total < 1:
        raise VideoDecodeError(path, "no video frames")
    return total


def _decode_sequential(path: str, num_frames: int, train: bool, rng, total: int, convert) -> list:
    """The old way, for files :func:`_decode_seeking` cannot index: one pass from the
    start; when fewer frames decode than the metadata promised, resampled over those."""
    wanted = sample_indices(total, num_frames, train, rng)
    frames, decoded = _decode_picked(path, wanted, convert)
    if len(frames) < num_frames:
        if decoded < 1:
            raise VideoDecodeError(path, "no decodable frames")
        wanted = sample_indices(decoded, num_frames, train, rng)
        frames, decoded = _decode_picked(path, wanted, convert)
        if len(frames) < num_frames:
            raise VideoDecodeError(path, f"only {decoded} decodable frames, "
                                         f"frame count changed between passes")
    return frames


@contextlib.contextmanager
def _decode_errors(path: str):
    """Any error of reading ``path`` as a :class:`VideoDecodeError` naming it."""
    av = _av()
    try:
        yield
    except (VideoDecodeError, UsageError):
        raise
    except (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError) as exc:
        raise VideoDecodeError(path, f"{type(exc).__name__}: {exc}") from exc


def _stacked(path: str, frames: list) -> torch.Tensor:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(path, f"frame size changes within the video: {sorted(shapes)}")
    return torch.from_numpy(np.stack(frames))


def _readable(path: PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    return path


def decode_frames(path: PathLike, num_frames: int, train: bool = False,
                  rng: Optional[np.random.Generator] = None, size: Optional[int] = None) -> torch.Tensor:
    """Decode ``num_frames`` RGB frames of a video file: uint8 (frames, H, W, 3), or
    (frames, size, size, 3) with ``size`` (:func:`resize_crop`: short side to ``size``,
    centre crop).

    Frames are picked by :func:`sample_indices` over the video's frames (segment centres
    when ``train`` is False, a random frame per segment otherwise, drawn from ``rng``).
    Only what those frames need is decoded (see the module docstring); without ``size``
    the frames equal those of a full decode. When the packet index cannot be used or the
    container's frame count is wrong (truncated file, damaged tail, bad metadata), the
    video is decoded front to back and the indices recomputed over the frames that
    actually decode.

    Raises :class:`VideoDecodeError` (with the path) for a missing file, a file that is
    not a video, or a video without a decodable frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be >= 1 (pixels), got {size}")
    path = _readable(path)
    with _decode_errors(path):
        total = _probe(path, num_frames)
        state = rng.bit_generator.state if rng is not None else None
        frames = _decode_seeking(path, num_frames, train, rng, _to_rgb)
        if frames is None:
            if rng is not None:  # the same draw as the seeking pass made
                rng.bit_generator.state = state
            frames = _decode_sequential(path, num_frames, train, rng, total, _to_rgb)
    out = _stacked(path, frames)
    return out if size is None else resize_crop(out, int(size))


def fps_picks(times: np.ndarray, duration: float, fps: float) -> np.ndarray:
    """Frame k of a video resampled at ``fps`` shows the source at ``(k + 0.5) / fps``:
    the index of the last frame presented at or before it, for k < round(duration * fps)
    (at least one). ``times``: each frame's presentation time in seconds from the first
    frame's, ascending."""
    n = max(1, int(round(duration * fps)))
    t = (np.arange(n) + 0.5) / fps
    return np.clip(np.searchsorted(np.asarray(times), t, side="right") - 1, 0, len(times) - 1)


def _frame_seconds(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.04  # 25 fps when the container says nothing


def _decode_at_fps_seeking(path: str, fps: float, convert) -> Optional[list]:
    """The frames of :func:`decode_at_fps` by seeking (:func:`_decode_indexed`)."""
    def pick(index, stream):
        times = (np.asarray(index.pts, dtype=np.float64) - index.pts[0]) * float(stream.time_base)
        # the last frame lasts as long as the typical one (the rate PyAV reports after
        # demuxing is not reliable)
        last = float(np.median(np.diff(times))) if len(times) > 1 else _frame_seconds(stream)
        return fps_picks(times, times[-1] + last, fps)
    return _decode_indexed(path, pick, convert)


def _decode_at_fps_sequential(path: str, fps: float, total: int, convert) -> list:
    """Without usable timestamps: frame i at ``i / rate``, one pass from the start (again
    over the frames that decoded when fewer did than the metadata promised)."""
    with _open(path) as container:
        step = _frame_seconds(container.streams.video[0])
    count = total
    for _ in range(2):
        picks = fps_picks(np.arange(count) * step, count * step, fps)
        frames, count = _decode_picked(path, picks, convert)
        if len(frames) == len(picks):
            return frames
        if count < 1:
            break
    raise VideoDecodeError(path, "no decodable frames" if count < 1 else "frame count changed between passes")


def decode_at_fps(path: PathLike, fps: float, size: int) -> torch.Tensor:
    """Every frame of a video resampled at ``fps`` (see :func:`fps_picks`), short side
    scaled to ``size``, centre crop (:func:`resize_crop`): uint8 (frames, size, size, 3). What
    ``dgl-rs prepare`` stores. Raises :class:`VideoDecodeError` (with the path) as
    :func:`decode_frames` does."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if int(size) < 1:
        raise ValueError(f"size must be >= 1 (pixels), got {size}")
    path = _readable(path)

    def convert(frame) -> np.ndarray:  # one at a time: only the small frames are kept
        return resize_crop(torch.from_numpy(_to_rgb(frame))[None], int(size))[0].numpy()

    with _decode_errors(path):
        total = _probe(path, 1)
        frames = _decode_at_fps_seeking(path, fps, convert)
        if frames is None:
            frames = _decode_at_fps_sequential(path, fps, total, convert)
    return _stacked(path, frames)


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
        return _normalize(self._resized(frames), self.mean, self.std)

    def _resized(self, frames: torch.Tensor) -> torch.Tensor:
        """float32 (frames, 3, S, S) in [0, 255]: short side resized to S (skipped when it
        already is S, as frames decoded with ``size=S`` are), centre crop."""
        frames = _uint8_frames(frames)
        s = self.image_size
        x = frames.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if min(h, w) != s:
            x = F.interpolate(x, size=scaled_size(h, w, s), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 255)
        return centre_crop(x, s, 2, 3)

    def resize_crop(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (frames, H, W, 3) -> uint8 (frames, S, S, 3), resized (uint8 kernel, equal to
        :meth:`__call__`'s float resize up to rounding) and cropped, not normalised: what a
        loader ships when the normalisation runs on the device (:func:`normalize_frames`)."""
        return resize_crop(_uint8_frames(frames), self.image_size)


def _uint8_frames(frames) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor):
        frames = torch.as_tensor(np.asarray(frames))
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (frames, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return frames


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 255] -> ``(x / 255 - mean) / std`` per channel."""
    m = torch.tensor(_as_triple("mean", mean), device=x.device).view(3, 1, 1) * 255.0
    sd = torch.tensor(_as_triple("std", std), device=x.device).view(3, 1, 1) * 255.0
    return ((x - m) / sd).contiguous()


def normalize_frames(frames: torch.Tensor, mean: Sequence[float] = OPENAI_MEAN,
                     std: Sequence[float] = OPENAI_STD) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> normalised float32 (..., 3, H, W), computed on the
    frames' device: the CLIP normalisation after a uint8 batch is copied there. Equal to
    :class:`VideoTransform` on frames already at its size."""
    if frames.dtype != torch.uint8 or frames.dim() < 3 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return _normalize(frames.movedim(-1, -3).float(), mean, std)
