"""The dgl-rs command line: encode a folder of real videos, search it, and clean errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS
from dgl_rs.cli import main

HAVE_TINY = SYNTHETIC_TINY_WEIGHTS.is_file()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """8 real H.264 mp4 files (static synthetic scenes) in a nested folder, a truncated
    copy of one and a file that is not a video."""
    from dgl_rs.data import write_synthetic_videos

    root = tmp_path_factory.mktemp("videos")
    records = write_synthetic_videos(root / "clips", split="static", num_videos=8, num_frames=8,
                                     image_size=64, seed=3)
    data = Path(records[0].video_path).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "notes.mp4").write_text("this is not a video\n")
    (root / "clips" / "captions.csv").unlink()
    return root, {Path(r.video_path).relative_to(root).as_posix(): r.captions[0] for r in records}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    """A DGL-Linear prompts file + model.json, as `dgl-rs train` exports them."""
    import dgl_rs
    from dgl_rs.backbone.loading import load_clip
    from dgl_rs.train.main import export_prompts
    from dgl_rs.train.params import parse_args

    pretrained = "synthetic-tiny" if HAVE_TINY else "none"
    torch.manual_seed(0)
    clip, _, _ = load_clip("synthetic-tiny", pretrained)
    model = dgl_rs.DGL(clip, num_frames=4, generator="linear", num_text_prompts=(4, 4))
    cfg = parse_args(["--dataset", "synthetic", "--pretrained", pretrained])
    path = tmp_path_factory.mktemp("run") / "prompts.safetensors"
    export_prompts(model, path, cfg)
    return path


def _ranked(out: str):
    return [(float(m.group(2)), m.group(3)) for m in re.finditer(r"^\s*(\d+)\. (-?[\d.]+)  (.+)$", out, re.M)]


def test_encode_then_search(video_dir, prompts_file, tmp_path, capsys):
    root, captions = video_dir
    index = tmp_path / "index"
    rc = main(["encode", str(root), "--prompts", str(prompts_file), "--out", str(index),
               "--device", "cpu", "--batch-size", "4", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "encoded 8 videos" in out and "truncated.mp4" in out and "notes.mp4" in out
    meta = json.loads((index / "index.json").read_text())
    assert sorted(meta["videos"]) == sorted(captions)  # the broken two are left out ...
    assert sorted(meta["skipped"]) == ["notes.mp4", "truncated.mp4"]  # ... and listed
    assert meta["model"] == "synthetic-tiny" and meta["dgl"]["generator"] == "linear"
    emb = np.load(index / "embeddings.npy")
    assert emb.shape[0] == 8 and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert (index / "prompts.safetensors").is_file()  # the index is self-contained

    query = next(iter(captions.values()))
    assert main(["search", str(index), query, "-k", "3", "--device", "cpu"]) == 0
    hits = _ranked(capsys.readouterr().out)
    assert len(hits) == 3
    assert [s for s, _ in hits] == sorted((s for s, _ in hits), reverse=True)
    assert all(Path(p).is_file() and Path(p).is_relative_to(root) for _, p in hits)
    assert main(["search", str(index), query, "another query", "-k", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["query"] for d in doc] == [query, "another query"]
    assert len(doc[0]["results"]) == 8  # k is capped at the index size
    assert doc[0]["results"][:3] == [{"video": p, "score": pytest.approx(s, abs=1e-4)} for s, p in hits]


@pytest.mark.skipif(not HAVE_TINY, reason="the shipped synthetic-tiny weights are not built yet")
def test_zero_shot_search_finds_static_scenes(video_dir, tmp_path, capsys):
    """The shipped tiny CLIP was pretrained on static stills: with mean pooling its top
    hit for a static caption is the right clip most of the time."""
    root, captions = video_dir
    index = tmp_path / "index"
    assert main(["encode", str(root / "clips"), "--zero-shot", "--model", "synthetic-tiny",
                 "--pretrained", "synthetic-tiny", "--num-frames", "4", "--out", str(index),
                 "--device", "cpu", "--no-progress"]) == 0
    assert not (index / "prompts.safetensors").exists()
    capsys.readouterr()
    queries = list(captions.values())
    assert main(["search", str(index), *queries, "-k", "1", "--json", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    correct = sum(Path(d["results"][0]["video"]).name == Path(v).name
                  for d, v in zip(doc, captions))
    assert correct >= 4, doc  # chance: 1 of 8


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "msrvtt", "--data-root", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert "--data-root" in capsys.readouterr().err
    rc = main(["train", "--dataset", "synthetic", "--model", "ViT-Q-99", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown model 'ViT-Q-99'" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # failed before creating a run folder
    rc = main(["train", "--dataset", "synthetic", "--model", "synthetic-tiny", "--pretrained",
               str(tmp_path / "missing.safetensors"), "--output-dir", str(tmp_path)])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "a dog"]) == 2
    assert "not a video index" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "none"), "--zero-shot", "--out", str(tmp_path / "i")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["eval", "--prompts", str(tmp_path / "p.safetensors"), "--dataset", "synthetic"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_offline_weights_error_says_how_to_pass_a_file(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "dgl_rs.cli", "train", "--dataset", "synthetic",
                           "--model", "ViT-B-32-quickgelu", "--pretrained", "openai",
                           "--output-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "dgl-rs train: error: " in proc.stderr and "--pretrained /path/to" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ["train", "eval", "encode", "search", "pretrain-synthetic", "demo"]:
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--resume" in capsys.readouterr().out


def test_train_on_a_folder_of_real_videos(tmp_path, capsys):
    """`dgl-rs train --dataset folder`: decoded mp4s + a captions CSV, broken files skipped
    in training; then `dgl-rs eval` on the run folder."""
    from dgl_rs.data import write_synthetic_videos

    data = tmp_path / "data"
    write_synthetic_videos(data, split="static", num_videos=8, num_frames=4, seed=5)
    (data / "broken.mp4").write_text("not a video")
    rows = (data / "captions.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(rows + ["broken.mp4,a broken clip"]) + "\n")
    (data / "test.csv").write_text("\n".join(rows) + "\n")
    rc = main(["train", "--dataset", "folder", "--data-root", str(data), "--model", "synthetic-tiny",
               "--pretrained", "none", "--num-frames", "2", "--batch-size", "3", "--epochs", "1",
               "--output-dir", str(tmp_path / "runs"), "--name", "f", "--workers", "0",
               "--device", "cpu", "--no-progress", "--no-tensorboard"])
    assert rc == 0
    res = json.loads((tmp_path / "runs" / "f" / "results.json").read_text())
    assert res["results"]["test"]["num_videos"] == 8
    assert "skipped 1 broken samples" in (tmp_path / "runs" / "f" / "out.log").read_text()
    capsys.readouterr()
    assert main(["eval", "--prompts", str(tmp_path / "runs" / "f"), "--dataset", "folder",
                 "--data-root", str(data), "--device", "cpu", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("results: ")
    # evaluation stops on a broken test video, naming it, unless told to skip
    (data / "test.csv").write_text("\n".join(rows + ["broken.mp4,a broken clip"]) + "\n")
    argv = ["eval", "--prompts", str(tmp_path / "runs" / "f"), "--dataset", "folder",
            "--data-root", str(data), "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert main([*argv, "--on-broken", "skip"]) == 0
