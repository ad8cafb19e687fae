"""The frame cache (`dgl-rs prepare`, FrameCache, --frame-cache) and the seeking decoder.

References are independent: every frame decoded front to back with PyAV, picked by its
presentation time in a loop written here, resized by VideoTransform (torch, bicubic with
antialiasing, in float). Tolerances: the seeking decoder is exact; its resize (torch's
uint8 kernel) equals the float one up to rounding (mean difference below 0.5 grey level);
the cache stores JPEG (quality 90, 4:2:0) of those frames: on these colourful 32-pixel test
clips the mean absolute difference to the reference is about 2 grey levels (JPEG's chroma
subsampling), so the test allows 4.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from dgl_rs.cli import main
from dgl_rs.cli import prepare as prepare_cli
from dgl_rs.data import FrameCache, VideoDecodeError, VideoTransform, decode_frames, sample_indices
from dgl_rs.util.errors import UsageError

FPS, SIZE = 3, 32
MEAN_TOL = 4.0  # grey levels (see the module docstring)


def smooth_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """n frames of a smooth colour pattern that moves: every frame differs, JPEG-friendly."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).random(3) * 6
    out = [np.stack([127 + 100 * np.sin(xx / 9 + i / 3 + phase[c] + c * yy / 17) for c in range(3)], -1)
           for i in range(n)]
    return np.clip(out, 0, 255).astype(np.uint8)


def write_gop_video(path: Path, frames: np.ndarray, fps: int = 10, gop: int = 12) -> Path:
    """H.264 with a keyframe every ``gop`` frames and B-frames (what seeking must handle)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"g": str(gop), "crf": "12", "bf": "3", "sc_threshold": "0"}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def full_decode(path: Path):
    """Every frame (display order) and its time in seconds from the first."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = sorted(((f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(st)), key=lambda x: x[0])
        tb = float(st.time_base)
    pts = np.array([p for p, _ in frames], dtype=np.float64)
    return [f for _, f in frames], (pts - pts[0]) * tb


def frames_at_fps(path: Path, fps: float, size: int) -> torch.Tensor:
    """The reference of a cached video: frame k = the last frame shown at (k + 0.5) / fps."""
    frames, times = full_decode(path)
    step = float(np.median(np.diff(times)))
    n = max(1, int(round((times[-1] + step) * fps)))
    picked = []
    for k in range(n):
        t = (k + 0.5) / fps
        picked.append(frames[max(i for i in range(len(times)) if times[i] <= t + 1e-9)])
    return VideoTransform(size).resize_crop(torch.from_numpy(np.stack(picked)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    (d / "sub").mkdir()
    write_gop_video(d / "a.mp4", smooth_frames(40, seed=1))  # 4 s, keyframe every 12 frames
    write_gop_video(d / "sub" / "b.mp4", smooth_frames(25, 40, 72, seed=2), fps=25, gop=250)
    write_gop_video(d / "c.mp4", smooth_frames(12, seed=3), fps=8)
    return d


def prepare(src: Path, out: Path, *extra: str) -> int:
    return main(["prepare", str(src), "--out", str(out), "--fps", str(FPS), "--size", str(SIZE),
                 "--workers", "0", "--videos-per-shard", "1", "--no-progress", *extra])


@pytest.fixture(scope="module")
def cache(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c") / "cache"
    assert main(["prepare", str(videos), "--out", str(out), "--fps", str(FPS), "--size", str(SIZE),
                 "--workers", "2", "--videos-per-shard", "2", "--no-progress"]) == 0
    return out


# -------------------------------------------------------------------------- the decoder
def test_seeking_decode_equals_full_decode(videos):
    for name in ("a.mp4", "sub/b.mp4"):
        every, _ = full_decode(videos / name)
        for seed in range(3):
            got = decode_frames(videos / name, 5, train=True, rng=np.random.default_rng(seed))
            idx = sample_indices(len(every), 5, True, np.random.default_rng(seed))
            assert np.array_equal(got.numpy(), np.stack([every[i] for i in idx]))


def test_decode_with_size_matches_resize_after_decode(videos):
    every, _ = full_decode(videos / "a.mp4")
    got = decode_frames(videos / "a.mp4", 6, size=SIZE)
    ref = VideoTransform(SIZE).resize_crop(torch.from_numpy(np.stack([every[i] for i in sample_indices(40, 6)])))
    assert got.shape == (6, SIZE, SIZE, 3) and got.dtype == torch.uint8
    assert (got.float() - ref.float()).abs().mean() < 0.5  # uint8 resize kernel vs float, rounded


# -------------------------------------------------------------------- the cache itself
def test_cache_equals_source_at_the_same_times(videos, cache):
    fc = FrameCache(cache)
    assert fc.videos() == ["a.mp4", "c.mp4", "sub/b.mp4"] and len(fc) == 3
    assert [fc.num_frames(v) for v in fc.videos()] == [12, 4, 3]  # round(duration * fps)
    for video in fc.videos():
        got = fc.read_frames(video, range(fc.num_frames(video)))
        ref = frames_at_fps(videos / video, FPS, SIZE)
        assert got.shape == ref.shape and got.dtype == torch.uint8
        assert (got.float() - ref.float()).abs().mean() < MEAN_TOL, video


def test_read_samples_like_sample_indices(cache):
    fc = FrameCache(cache)
    every = fc.read_frames("a.mp4", range(12))
    assert torch.equal(fc.read("a.mp4", 5), every[sample_indices(12, 5)])
    assert torch.equal(fc.read("c.mp4", 6), fc.read_frames("c.mp4", [0, 1, 1, 2, 3, 3]))  # repeats
    for seed in range(3):
        got = fc.read("a.mp4", 4, train=True, rng=np.random.default_rng(seed))
        assert torch.equal(got, every[sample_indices(12, 4, True, np.random.default_rng(seed))])


def test_shards_are_webdataset_tars(cache):
    with tarfile.open(cache / "shards" / "000000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("v0000000.json").read())
    assert meta == {"id": "a.mp4", "frames": 12}
    assert names[:3] == ["v0000000.json", "v0000000.000000.jpg", "v0000000.000001.jpg"]
    assert "v0000001.json" in names  # c.mp4: two videos per shard


def test_size_and_fps_mismatch_name_both_values(videos, cache, tmp_path):
    with pytest.raises(UsageError, match=r"size 32, but 64 is needed.*--size 64"):
        FrameCache(cache, size=64)
    with pytest.raises(UsageError, match=r"fps 3.0, but 1.0 is needed"):
        FrameCache(cache, fps=1)
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    with pytest.raises(UsageError, match=r"made with --fps 3, this run asks --fps 2"):
        prepare_cli.main([str(videos), "--out", str(own), "--fps", "2", "--size", str(SIZE)])


# -------------------------------------------------------------------------- faults
def _copy_src(videos: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(videos, src)
    return src


def test_resume_after_a_kill_keeps_finished_shards(videos, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real, written = prepare_cli.write_shard, []

    def dies_on_second(tar, idx, items):
        if len(written) == 1:
            raise KeyboardInterrupt  # killed while decoding the second shard
        written.append(tar.name)
        return real(tar, idx, items)

    monkeypatch.setattr(prepare_cli, "write_shard", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_cli.main([str(videos), "--out", str(out), "--fps", "3", "--size", str(SIZE),
                          "--workers", "0", "--videos-per-shard", "1", "--no-progress"])
    with pytest.raises(UsageError, match="incomplete"):
        FrameCache(out)
    first = (out / "shards" / "000000.tar").stat().st_mtime_ns
    written.clear()
    monkeypatch.setattr(prepare_cli, "write_shard", lambda tar, idx, items: written.append(tar.name)
                        or real(tar, idx, items))
    assert prepare(videos, out) == 0
    assert written == ["000001.tar", "000002.tar"]  # shard 0 was not redone
    assert (out / "shards" / "000000.tar").stat().st_mtime_ns == first
    assert not [p for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]
    assert len(FrameCache(out)) == 3


def test_damaged_shard_is_named_and_rebuilt(videos, cache, tmp_path):
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    tar = own / "shards" / "000000.tar"
    data = bytearray(tar.read_bytes())
    data[1024 + 700] ^= 0xFF  # inside the first frame's JPEG (after the json member)
    tar.write_bytes(bytes(data))
    fc = FrameCache(own)
    with pytest.raises(VideoDecodeError, match="000000.tar.*CRC-32"):
        fc.read("a.mp4", 12)
    assert fc.verify() == [str(tar)]
    assert prepare_cli.main([str(videos), "--out", str(own), "--fps", "3", "--size", str(SIZE),
                             "--workers", "0", "--videos-per-shard", "2", "--no-progress"]) == 0
    assert FrameCache(own).verify() == [] and FrameCache(own).read("a.mp4", 12).shape[0] == 12


def test_changed_source_is_detected(videos, tmp_path, capsys):
    src = _copy_src(videos, tmp_path)
    out = tmp_path / "cache"
    assert prepare(src, out) == 0
    shutil.copyfile(src / "c.mp4", src / "a.mp4")  # a.mp4 replaced by another video
    assert FrameCache(out).changed_sources() == [
        f"a.mp4: size {(videos / 'a.mp4').stat().st_size} -> {(src / 'a.mp4').stat().st_size}"]
    capsys.readouterr()
    assert prepare(src, out) == 0
    assert "1 done already" not in capsys.readouterr().out  # 2 of 3 shards kept, a.mp4's redone
    assert FrameCache(out).changed_sources() == [] and FrameCache(out).num_frames("a.mp4") == 4


def test_broken_videos_are_skipped_or_refused_by_name(videos, tmp_path, capsys):
    src = _copy_src(videos, tmp_path)
    (src / "broken.mp4").write_text("not a video\n")
    data = (src / "a.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(data[:600])
    out = tmp_path / "cache"
    capsys.readouterr()
    assert prepare(src, out, "--on-broken", "raise") == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert (out / "shards" / "000000.tar").is_file()  # a.mp4's shard, finished before
    assert prepare(src, out) == 0
    report = capsys.readouterr().out
    assert str(src / "broken.mp4") in report and str(src / "cut.mp4") in report
    fc = FrameCache(out)
    assert fc.videos() == ["a.mp4", "c.mp4", "sub/b.mp4"]
    with pytest.raises(VideoDecodeError, match="skipped by dgl-rs prepare"):
        fc.read("broken.mp4", 4)


def test_prepare_a_dataset_layout(videos, tmp_path):
    root = tmp_path / "msrvtt"
    (root / "videos").mkdir(parents=True)
    for vid, name in (("video7", "a.mp4"), ("video8", "c.mp4"), ("video9", "sub/b.mp4")):
        shutil.copyfile(videos / name, root / "videos" / f"{vid}.mp4")
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo7\nvideo8\n")
    sentences = [{"video_id": v, "caption": f"clip {v}", "sen_id": i} for i, v in enumerate(("video7", "video8"))]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr9,video9,a test\n")
    out = tmp_path / "cache"
    assert main(["prepare", "--dataset", "msrvtt", "--data-root", str(root), "--out", str(out), "--size", "32",
                 "--workers", "0", "--no-progress"]) == 0
    assert FrameCache(out).videos() == ["videos/video7.mp4", "videos/video8.mp4", "videos/video9.mp4"]


# --------------------------------------------------------------- uint8 to the device
def test_uint8_frames_give_the_same_embedding():
    from dgl_rs.backbone.loading import load_clip
    from dgl_rs.methods import DGL

    torch.manual_seed(0)
    model = DGL(load_clip("synthetic-tiny", "none")[0], num_frames=2, generator="linear").eval()
    raw = torch.from_numpy(smooth_frames(4, 64, 64).reshape(2, 2, 64, 64, 3))
    normalised = torch.stack([VideoTransform(64)(v) for v in raw])
    with torch.no_grad():
        assert torch.equal(model.encode_video(raw), model.encode_video(normalised))


def test_train_and_eval_from_the_cache(tmp_path, capsys):
    """`dgl-rs train/eval --frame-cache` on a folder dataset: batches are uint8, the run
    trains and evaluates; a cache at another size than the model's is refused."""
    from dgl_rs.data import write_synthetic_videos
    from dgl_rs.services.config import EvalConfig
    from dgl_rs.services.data import build_data

    data = tmp_path / "data"
    write_synthetic_videos(data, split="static", num_videos=6, num_frames=4, seed=5)
    rows = (data / "captions.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    (data / "test.csv").write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    assert main(["prepare", "--dataset", "folder", "--data-root", str(data), "--out", str(cache), "--size", "64",
                 "--workers", "0", "--no-progress"]) == 0
    cfg = EvalConfig(dataset="folder", data_root=str(data), frame_cache=str(cache), num_frames=2, context_length=8)
    item = build_data(cfg, {"image_size": 64}, train=False).evals["test"][0]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (2, 64, 64, 3)
    common = ["--dataset", "folder", "--data-root", str(data), "--frame-cache", str(cache), "--device", "cpu",
              "--no-progress"]
    assert main(["train", *common, "--model", "synthetic-tiny", "--pretrained", "none", "--num-frames", "2",
                 "--batch-size", "3", "--epochs", "1", "--output-dir", str(tmp_path / "runs"), "--name", "f",
                 "--workers", "0", "--no-tensorboard"]) == 0
    res = json.loads((tmp_path / "runs" / "f" / "results.json").read_text())
    assert res["results"]["test"]["num_videos"] == 6
    assert main(["eval", "--prompts", str(tmp_path / "runs" / "f"), *common]) == 0
    small = tmp_path / "small"
    assert main(["prepare", str(data), "--out", str(small), "--size", "32", "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--prompts", str(tmp_path / "runs" / "f"), *common[:5], str(small), *common[6:],
                 "--out", str(tmp_path / "small.json")]) == 2
    assert "size 32, but 64 is needed" in capsys.readouterr().err
