"""Issue 18: the user gets the model asked for, or a one-line refusal up front: every int
option at its smallest legal value reaches the built model, a contrastive step has at
least 2 pairs, batches and frame counts beyond the machine are refused before anything is
allocated, and a saved file alone rebuilds its model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import dgl_rs
from dgl_rs.backbone.memory import machine_memory
from dgl_rs.methods import METHODS, settable_options
from dgl_rs.train import main as train_main
from dgl_rs.train.distributed import DistInfo
from dgl_rs.train.params import RECIPE_OPTIONS, parse_args
from dgl_rs.train.train import _too_small
from dgl_rs.util.errors import UsageError

#: What another option must be for a smallest value to be legal (the method's checks say so).
COMPANIONS = {("num_global", 0): ["--pool", "frame_cls_mean"],
              ("num_frame_prompts", 0): ["--num-text-prompts", "0", "0"],
              ("num_text_prompts", 0): ["--num-frame-prompts", "0"],  # DGL-Linear: (n_f, n_f)
              ("num_text_prompts", 1): ["--num-frame-prompts", "1"]}


@pytest.fixture(scope="module")
def clip():
    return dgl_rs.load_clip("synthetic-tiny", "synthetic-tiny")[0]


def _smallest(method, name, opt, clip):
    """The built model for the smallest legal value of an int (or pair) option, through
    the command line's path (parse_args -> build_model): (value, model)."""
    low = int(opt.low or 0)
    for value in (low, low + 1):
        flag = [opt.flag, *([str(value)] * (2 if opt.kind == "pair" else 1))]
        extra = COMPANIONS.get((name, value), [])
        if extra and extra[0][2:].replace("-", "_") not in settable_options(method):
            extra = []
        cfg = parse_args(["--dataset", "synthetic", "--method", method, *flag, *extra])
        try:
            return (value, value) if opt.kind != "pair" else ((value, value), [value, value]), \
                train_main.build_model(cfg, clip)
        except UsageError:
            continue  # e.g. vop-c needs a frame prompt: 1 is its smallest legal value
    raise AssertionError(f"{method}: no legal value for {name} at {low} or {low + 1}")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_int_option_at_its_smallest_legal_value_reaches_the_model(method, clip):
    for name, opt in settable_options(method).items():
        if opt.kind not in ("int", "pair") or name in RECIPE_OPTIONS:
            continue
        (value, saved), model = _smallest(method, name, opt, clip)
        assert getattr(model, opt.attribute) == value, (method, name)
        assert model.config[name] == saved, (method, name)
        if name == "num_global" and value == 0:
            assert model.global_prompts is None
        if name == "num_frame_prompts" and value == 0:
            assert model.generate_prompts()[1] is None or model.generate_prompts()[1].shape[2] == 0


def test_zero_global_prompts_from_the_cli_trains_a_model_without_them(clip):
    cfg = parse_args(["--dataset", "synthetic", "--method", "dgl-linear", "--num-global", "0",
                      "--pool", "frame_cls_mean"])
    model = train_main.build_model(cfg, clip)
    assert model.num_global == 0 and "global_prompts" not in dict(model.named_trainable_parameters())


def test_a_batch_of_one_pair_is_refused_up_front():
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "synthetic", "--batch-size", "1"])
    assert parse_args(["--dataset", "synthetic", "--batch-size", "1", "--accum-steps", "2"]).batch_size == 1


def test_a_step_left_with_one_pair_is_skipped_and_logged(caplog):
    one = {"frames": torch.zeros(1, 2, 3, 4, 4), "batch_size": 1, "num_skipped": 3}
    two = {"frames": torch.zeros(2, 2, 3, 4, 4), "batch_size": 2}
    with caplog.at_level(logging.WARNING, logger="dgl_rs"):
        assert _too_small(one, 0, 5, DistInfo()) and not _too_small(two, 0, 6, DistInfo())
    assert "epoch 1 step 5: 1 pair(s) left" in caplog.text


def _beyond_machine() -> int:
    return int(machine_memory(torch.device("cpu")) or 2**40)


def test_a_batch_beyond_the_machine_is_refused_naming_the_flag(clip):
    cfg = parse_args(["--dataset", "synthetic", "--batch-size", str(10**9)])
    with pytest.raises(UsageError, match=r"^--batch-size 1000000000 .* GiB \(estimate\), more than"):
        train_main.build_model(cfg, clip)


def test_encode_refuses_a_batch_beyond_the_machine(tmp_path, capsys):
    from dgl_rs.cli import main

    (tmp_path / "videos").mkdir()
    argv = ["encode", str(tmp_path / "videos"), "--zero-shot", "--model", "synthetic-tiny", "--pretrained",
            "synthetic-tiny", "--out", str(tmp_path / "index"), "--batch-size", str(10**9)]
    assert main(argv) == 2
    assert "--batch-size 1000000000" in capsys.readouterr().err and not (tmp_path / "index").exists()


def test_readers_refuse_frame_counts_beyond_the_machine(tmp_path):
    from dgl_rs.data import EvalSet, VideoRecord, VideoTransform
    from dgl_rs.data.video import decode_frames, write_video

    huge = _beyond_machine() // (224 * 224 * 3 * 4) + 1
    with pytest.raises(UsageError, match=f"num_frames={huge} at 224 px"):
        EvalSet([VideoRecord(str(tmp_path / "v.mp4"), ("a caption",), "v")], huge, VideoTransform(224))
    path = write_video(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(UsageError, match="GiB"):
        decode_frames(path, _beyond_machine() // (16 * 16 * 3) + 1)


def test_a_saved_file_alone_rebuilds_its_model(tmp_path, clip):
    """The shipped DGL-Transformer file records its backbone: no --model/--pretrained, no
    model.json, offline."""
    from dgl_rs.backbone.loading import PACKAGE_DIR
    from dgl_rs.factory import load_model

    model, _, meta = load_model(PACKAGE_DIR / "assets" / "synthetic-tiny-dgl-transformer.safetensors")
    assert (meta["model"], meta["pretrained"], meta["method"]) == ("synthetic-tiny", "synthetic-tiny",
                                                                    "dgl-transformer")
    mine = dgl_rs.build_method(clip, "vpt", num_frames=4)
    mine.save_prompts(str(tmp_path / "p.safetensors"))
    again, _, meta = load_model(tmp_path / "p.safetensors")
    assert (meta["model"], meta["pretrained"]) == ("synthetic-tiny", "synthetic-tiny")
    frames = torch.randn(1, 4, 3, 64, 64)
    torch.testing.assert_close(again.encode_video(frames), mine.encode_video(frames), rtol=0, atol=0)


def test_load_prompts_of_another_methods_file_names_it_and_load_method(tmp_path, clip):
    dgl_rs.build_method(clip, "vop-c", num_frames=4).save_prompts(str(tmp_path / "vop.safetensors"))
    with pytest.raises(ValueError, match=r"'vop-c' model, which dgl_rs.load_method\(path, clip\) rebuilds"):
        dgl_rs.DGL.load_prompts(tmp_path / "vop.safetensors", clip)


def test_none_is_a_given_value_too(clip):
    """`--generator none` (a legal value of `dgl`) reaches the model: no local prompts."""
    cfg = parse_args(["--dataset", "synthetic", "--method", "dgl", "--generator", "none", "--num-global", "2"])
    model = train_main.build_model(cfg, clip)
    assert model.generator_name is None and model.generator is None and model.num_global == 2
