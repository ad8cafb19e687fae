"""The MSVD and DiDeMo readers, on small files written in their released formats (as
CLIP4Clip's loaders read them), and ``--dataset msvd|didemo`` end to end through the
trainer's data bundle."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from dgl_rs.data import EvalSet, TrainPairs, VideoTransform, read_dataset, read_didemo, read_msvd
from dgl_rs.util.errors import UsageError
from dgl_rs.services.data import build_data
from dgl_rs.train.distributed import DistInfo
from dgl_rs.train.params import RECIPES, parse_args

PRE = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the readers only locate files; decoding is tested elsewhere


# --------------------------------------------------------------------------- MSVD
def write_msvd(root):
    """msvd_data as CLIP4Clip / collaborative-experts ship it: split lists, a pickle of
    {video_id: [[word, ...], ...]}, YouTube clips as .avi, and youtube_mapping.txt."""
    captions = {
        "-4wsuPCjDBc_5_15": [["a", "squirrel", "is", "eating", "a", "peanut"], ["a", "squirrel", "eats"]],
        "-7KMZQEsJW4_205_208": [["a", "man", "is", "singing"]],
        "zzqCDuDFoqo_1_9": [["a", "woman", "slices", "an", "onion"], ["someone", "is", "cooking"],
                            ["onion", "being", "cut"]],
        "vid1969": [["a", "cat", "plays"]],
    }
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    (root / "train_list.txt").write_text("-4wsuPCjDBc_5_15\n-7KMZQEsJW4_205_208\n")
    (root / "val_list.txt").write_text("zzqCDuDFoqo_1_9\n")
    (root / "test_list.txt").write_text("vid1969\n\n")
    (root / "youtube_mapping.txt").write_text(
        "-4wsuPCjDBc_5_15 vid1\n-7KMZQEsJW4_205_208 vid2\nzzqCDuDFoqo_1_9 vid3\nabcdefghijk_0_4 vid1969\n")
    _touch(root / "videos" / "-4wsuPCjDBc_5_15.avi")  # named by clip
    _touch(root / "videos" / "sub" / "-7KMZQEsJW4_205_208.mp4")  # converted, in a subfolder
    _touch(root / "videos" / "vid3.avi")  # named vid<N>: found through the mapping
    _touch(root / "videos" / "abcdefghijk_0_4.avi")  # the clip of split id vid1969
    return captions


def test_read_msvd_all_splits(tmp_path):
    write_msvd(tmp_path)
    train = read_msvd(tmp_path, "train")
    assert [r.video_id for r in train] == ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208"]  # list order
    assert train[0].captions == ("a squirrel is eating a peanut", "a squirrel eats")
    assert train[0].video_path == str(tmp_path / "videos" / "-4wsuPCjDBc_5_15.avi")
    assert train[1].video_path == str(tmp_path / "videos" / "sub" / "-7KMZQEsJW4_205_208.mp4")
    (val,) = read_msvd(tmp_path, "val")
    assert val.captions == ("a woman slices an onion", "someone is cooking", "onion being cut")
    assert val.video_path == str(tmp_path / "videos" / "vid3.avi")
    (test,) = read_dataset("msvd", tmp_path, "test")
    assert test.video_path == str(tmp_path / "videos" / "abcdefghijk_0_4.avi")
    assert len(TrainPairs(train, 2, VideoTransform(16), lambda t: t)) == 3  # every caption a pair
    ev = EvalSet([val], 2, VideoTransform(16))
    assert ev.captions == list(val.captions) and ev.caption_to_video.tolist() == [0, 0, 0]


def test_read_msvd_errors_are_clear(tmp_path):
    write_msvd(tmp_path)
    (tmp_path / "train_list.txt").write_text("-4wsuPCjDBc_5_15\nnot_a_video\n")
    with pytest.raises(UsageError, match="no captions for train video 'not_a_video'"):
        read_msvd(tmp_path, "train")
    with pytest.raises(ValueError, match="MSVD split"):
        read_msvd(tmp_path, "dev")
    os.remove(tmp_path / "raw-captions.pkl")
    with pytest.raises(FileNotFoundError, match="raw-captions.pkl"):
        read_msvd(tmp_path, "val")


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_read_msvd_never_runs_code_from_the_pickle(tmp_path):
    write_msvd(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "raw-captions.pkl", "wb") as f:
        pickle.dump({"-4wsuPCjDBc_5_15": [_Payload(str(marker))]}, f)
    with pytest.raises(UsageError, match="posix.mkdir|only plain data"):
        read_msvd(tmp_path, "train")
    assert not marker.exists()
    (tmp_path / "raw-captions.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="not a pickle of plain data"):
        read_msvd(tmp_path, "train")


# ------------------------------------------------------------------------- DiDeMo
def _moment(video, description, times=((0, 0), (0, 1))):
    return {"annotation_id": hash(description) % 10000, "description": description,
            "times": [list(t) for t in times], "video": video, "num_segments": 6,
            "dl_link": f"https://www.flickr.com/video_download.gne?id={video.split('_')[1]}"}


A = "10015567@N08_3655084291_d8b58466fa.mov"
B = "49503015@N00_3486419011_bb3d2a9ef8.m4v"
C = "88040409@N00_2399574286_e2c0f7d6b9.mp4"


def write_didemo(root, with_lists=True):
    """DiDeMo's {train,val,test}_data.json (lists of moments) and CLIP4Clip's split lists."""
    root.mkdir(parents=True, exist_ok=True)
    train = [_moment(A, "a girl in a red dress "), _moment(B, "the dog jumps"),
             _moment(A, " the girl waves at the camera"), _moment(C, "not in the train list"),
             _moment(A, "camera pans left", times=((2, 3), (3, 3)))]
    (root / "train_data.json").write_text(json.dumps(train))
    (root / "val_data.json").write_text(json.dumps([_moment(C, "a car drives by")]))
    (root / "test_data.json").write_text(json.dumps([_moment(B, "first dog moment"), _moment(B, "then it sits")]))
    if with_lists:
        (root / "train_list.txt").write_text(f"{A}\n{B}\n")
        (root / "val_list.txt").write_text(f"{C}\n")
        (root / "test_list.txt").write_text(f"{B}\n")
    _touch(root / "videos" / A)  # the original file name
    _touch(root / "videos" / "49503015@N00_3486419011_bb3d2a9ef8.mp4")  # B converted to mp4
    _touch(root / "videos" / f"{C}")


def test_read_didemo_paragraphs(tmp_path):
    write_didemo(tmp_path)
    train = read_didemo(tmp_path, "train")
    assert [r.video_id for r in train] == [A, B]  # file order, the list's videos only
    assert train[0].captions == ("a girl in a red dress the girl waves at the camera camera pans left",)
    assert train[0].video_path == str(tmp_path / "videos" / A)
    assert train[1].video_path == str(tmp_path / "videos" / "49503015@N00_3486419011_bb3d2a9ef8.mp4")
    (test,) = read_dataset("didemo", tmp_path, "test")
    assert test.captions == ("first dog moment then it sits",)  # one query per video
    (val,) = read_didemo(tmp_path, "val")
    assert val.video_id == C and val.captions == ("a car drives by",)


def test_read_didemo_without_lists_and_bad_files(tmp_path):
    write_didemo(tmp_path, with_lists=False)
    assert [r.video_id for r in read_didemo(tmp_path, "train")] == [A, B, C]
    (tmp_path / "val_data.json").write_text(json.dumps([{"video": C}]))
    with pytest.raises(UsageError, match="val_data.json: item 0: no 'description'"):
        read_didemo(tmp_path, "val")
    (tmp_path / "val_data.json").write_text(json.dumps({C: "a car"}))
    with pytest.raises(UsageError, match="expected a json list"):
        read_didemo(tmp_path, "val")
    os.remove(tmp_path / "test_data.json")
    with pytest.raises(FileNotFoundError, match="test_data.json"):
        read_didemo(tmp_path, "test")


# ------------------------------------------------------------------ the trainer
def test_dataset_flags_recipes_and_validation(tmp_path):
    write_msvd(tmp_path / "msvd")
    write_didemo(tmp_path / "didemo")
    cfg = parse_args(["--dataset", "msvd", "--data-root", str(tmp_path / "msvd"), "--val-split", "val",
                      "--num-frames", "2"])
    assert (cfg.lr, cfg.batch_size, cfg.context_length, cfg.generator) == (5e-3, 64, 32, "linear")
    b = build_data(cfg, PRE)
    assert len(b.train) == 3 and [r.video_id for r in b.evals["test"].records] == ["vid1969"]
    assert b.vals["val"].video_ids == ["zzqCDuDFoqo_1_9"] and len(b.vals["val"].captions) == 3

    cfg = parse_args(["--dataset", "didemo", "--data-root", str(tmp_path / "didemo"), "--val-split", "val"])
    assert (cfg.num_frames, cfg.context_length, cfg.batch_size) == (64, 64, 16) == tuple(
        RECIPES["didemo"][k] for k in ("num_frames", "context_length", "batch_size"))
    b = build_data(cfg, PRE)
    assert len(b.train) == 2  # one paragraph per training video
    assert b.evals["test"].captions == ["first dog moment then it sits"]
    assert b.vals["val"].video_ids == [C]
