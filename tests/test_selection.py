"""The best epoch is chosen on the validation split, never the test split (--val-split)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dgl_rs.factory import checkpoints as ckpt
from dgl_rs.train import main as train_main
from dgl_rs.train import selection
from dgl_rs.train.params import parse_args

from test_train import ToyEvalSet, ToyPairs, patch_standins, toy_argv

# Validation and test R@1 after each epoch: validation peaks at epoch 2, the test split
# at epoch 3. Selection must pick epoch 2.
VAL_R1 = {1: 30.0, 2: 50.0, 3: 40.0}
TEST_R1 = {1: 10.0, 2: 20.0, 3: 90.0}
BEST_TEST_R1 = 77.0  # what the test split says about the best model, after the choice


def _report(r1):
    one = {"R@1": r1, "R@5": r1, "R@10": r1, "R@50": r1, "MdR": 1.0, "MnR": 1.0}
    return {"raw": {"t2v": dict(one), "v2t": dict(one)}, "num_videos": 4, "num_captions": 4}


class Recorder:
    """Stands in for dgl_rs.services.evaluate.evaluate: records which set each call evaluates, in
    which phase (after which epoch), with which prompts; returns scripted scores."""

    def __init__(self, val_set, test_set):
        self.val_set, self.test_set = val_set, test_set
        self.epoch = None  # epochs trained so far (set by on_step)
        self.finished = False
        self.calls = []

    def on_step(self, epoch, step):
        self.epoch = epoch + 1

    def __call__(self, model, eval_set, **kw):
        which = "val" if eval_set is self.val_set else "test" if eval_set is self.test_set else "?"
        self.calls.append((which, self.epoch, model.prompt_state_dict()))
        if which == "val":
            return _report(VAL_R1[self.epoch])
        after_training = any(c[:2] == ("val", 3) for c in self.calls)  # the last validation is done
        return _report(BEST_TEST_R1 if after_training else TEST_R1[self.epoch])


def _setup(monkeypatch):
    pairs, test_set = patch_standins(monkeypatch)
    val_set = ToyEvalSet(ToyPairs(64, seed=5), 16)
    monkeypatch.setattr(train_main, "build_data", lambda cfg, pre: train_main.DataBundle(
        train=pairs, evals={"toy": test_set}, vals={"val": val_set}))
    rec = Recorder(val_set, test_set)
    import dgl_rs.services.evaluate as ev

    monkeypatch.setattr(ev, "evaluate", rec)
    return rec


def _argv(d, *extra):
    return [*toy_argv(d), "--keep-checkpoints", "0", *extra]


def _step_prompts(run, step):
    return ckpt.load_checkpoint(run / "checkpoints" / ckpt.checkpoint_name(step))[0]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_epoch_is_chosen_on_validation_only(tmp_path, monkeypatch):
    rec = _setup(monkeypatch)
    seen_by_selection = []
    real_record = selection.Selector.record
    monkeypatch.setattr(selection.Selector, "record", lambda self, e, g, val, save: (
        seen_by_selection.append(val), real_record(self, e, g, val, save))[1])
    assert train_main.run(parse_args(_argv(tmp_path)), on_step=rec.on_step) == 0
    run = tmp_path / "run"
    # Each epoch: the test evaluation (logged) and the validation; then the best model's test.
    assert [(w, e) for w, e, _ in rec.calls] == [("test", 1), ("val", 1), ("test", 2), ("val", 2),
                                                ("test", 3), ("val", 3), ("test", 3)]
    assert seen_by_selection == [{"val": _report(VAL_R1[e])} for e in (1, 2, 3)]  # validation only
    res = json.loads((run / "results.json").read_text())
    assert res["results"]["toy"]["raw"]["t2v"]["R@1"] == TEST_R1[3]  # the final model
    best = res["best"]
    assert (best["epoch"], best["global_step"], best["score"]) == (2, 8, VAL_R1[2])
    assert best["results"]["toy"]["raw"]["t2v"]["R@1"] == BEST_TEST_R1
    assert best["prompts"] == "best/prompts.safetensors" and "t2v R@1" in best["metric"]
    assert [h["score"] for h in res["validation"]["epochs"]] == [VAL_R1[e] for e in (1, 2, 3)]
    # best/ holds epoch 2's prompts; the last test call evaluated exactly those
    epoch2 = _step_prompts(run, 8)
    assert _same(load_file(str(run / "best" / "prompts.safetensors")), epoch2)
    assert _same(rec.calls[-1][2], epoch2)
    assert json.loads((run / "best" / "model.json").read_text())["prompts"] == "prompts.safetensors"
    # the run's own prompts stay the final model's
    assert _same(load_file(str(run / "prompts.safetensors")), _step_prompts(run, 12))
    sel = json.loads((run / "best" / "selection.json").read_text())
    assert sel["best"]["epoch"] == 2 and [h["epoch"] for h in sel["epochs"]] == [1, 2, 3]


def test_selection_survives_a_stop_before_validating(tmp_path, monkeypatch):
    """Ctrl-C on the last step of epoch 2: neither evaluated nor validated before the stop;
    the resumed run validates epoch 2 first, and picks the same best as an unbroken run."""
    rec = _setup(monkeypatch)
    assert train_main.run(parse_args(_argv(tmp_path / "ref")), on_step=rec.on_step) == 0
    ref = tmp_path / "ref" / "run"

    rec = _setup(monkeypatch)
    cut = tmp_path / "cut"

    def stop_at_end_of_epoch_2(epoch, step):
        rec.on_step(epoch, step)
        if (epoch, step) == (1, 4):
            signal.raise_signal(signal.SIGINT)

    assert train_main.run(parse_args(_argv(cut)), on_step=stop_at_end_of_epoch_2) == 128 + signal.SIGINT
    assert [h["epoch"] for h in json.loads((cut / "run" / "best" / "selection.json").read_text())["epochs"]] == [1]
    rec.epoch = 2  # what the resumed process validates first: the model after epoch 2
    assert train_main.run(parse_args(_argv(cut, "--resume", "latest")), on_step=rec.on_step) == 0
    sel = json.loads((cut / "run" / "best" / "selection.json").read_text())
    assert [h["epoch"] for h in sel["epochs"]] == [1, 2, 3] and sel["best"]["epoch"] == 2
    assert _same(load_file(str(cut / "run" / "best" / "prompts.safetensors")),
                 load_file(str(ref / "best" / "prompts.safetensors")))
    res = json.loads((cut / "run" / "results.json").read_text())
    assert res["best"]["epoch"] == 2 and res["best"]["results"]["toy"]["raw"]["t2v"]["R@1"] == BEST_TEST_R1


def test_resuming_before_the_best_epoch_drops_it(tmp_path, monkeypatch):
    """Resuming from a checkpoint older than the best epoch: the best's prompts are of a
    trajectory being redone, so they are dropped and the choice is made again."""
    rec = _setup(monkeypatch)
    assert train_main.run(parse_args(_argv(tmp_path)), on_step=rec.on_step) == 0
    run = tmp_path / "run"
    s = selection.Selector(run)
    s.resume(4)  # after epoch 1; the best (epoch 2) is later
    assert s.best is None and [h["epoch"] for h in s.history] == [1]
    assert not (run / "best" / "prompts.safetensors").exists()
    s = selection.Selector(run)
    s.resume(4)
    assert s.validated(4) and not s.validated(8)


def test_selection_score_is_mean_t2v_r1_and_ties_keep_the_earlier(tmp_path):
    assert selection.selection_score({"static": _report(40.0), "temporal": _report(20.0)}) == 30.0
    saved = []
    s = selection.Selector(tmp_path)
    assert s.record(1, 4, {"v": _report(50.0)}, saved.append)
    assert not s.record(2, 8, {"v": _report(50.0)}, saved.append)  # a tie: keep epoch 1
    assert not s.record(3, 12, {"v": _report(float("nan"))}, saved.append)
    assert s.best["epoch"] == 1 and len(saved) == 1
    assert not selection.Selector(tmp_path / "x", enabled=False).record(1, 1, {"v": _report(1.0)}, saved.append)


# --------------------------------------------------------------- validation data
def test_synthetic_validation_is_drawn_apart_from_train_and_test():
    from dgl_rs.services.data import build_data
    from dgl_rs.train.distributed import DistInfo

    cfg = parse_args(["--dataset", "synthetic", "--synthetic-split", "both", "--synthetic-videos", "16",
                      "--synthetic-eval-videos", "8", "--num-frames", "2", "--val-split", "val",
                      "--val-videos", "6"])
    pre = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    b = build_data(cfg, pre)
    assert set(b.vals) == set(b.evals) == {"static", "temporal"}
    train = set(map(repr, b.train.specs))
    for split in ("static", "temporal"):
        val, test = set(map(repr, b.vals[split].specs)), set(map(repr, b.evals[split].specs))
        assert len(b.vals[split]) == 6 and not val & test and not val & train
    cfg.val_split = None
    assert build_data(cfg, pre).vals == {}


def _msrvtt(root, n=10):
    (root / "videos").mkdir(parents=True)
    ids = [f"video{i}" for i in range(n)]
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(ids) + "\n")
    sentences = [{"video_id": v, "caption": f"caption of {v}"} for v in ids]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nr,m,video99,a test\n")


def test_holdout_validation_comes_out_of_training(tmp_path):
    from dgl_rs.services.data import build_data, read_records
    from dgl_rs.train.distributed import DistInfo

    _msrvtt(tmp_path)
    base = ["--dataset", "msrvtt", "--data-root", str(tmp_path), "--num-frames", "2"]
    with pytest.raises(SystemExit):
        parse_args([*base, "--val-split", "holdout"])  # --val-videos is required
    cfg = parse_args([*base, "--val-split", "holdout", "--val-videos", "3"])
    pre = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    b = build_data(cfg, pre)
    train_ids = {r.video_id for r in b.train.records}
    val_ids = b.vals["val"].video_ids
    assert len(val_ids) == 3 and len(train_ids) == 7 and not train_ids & set(val_ids)
    assert train_ids | set(val_ids) == {f"video{i}" for i in range(10)}
    # the same videos for every --seed; without holdout all 10 train
    assert build_data(parse_args([*base, "--val-split", "holdout", "--val-videos", "3", "--seed", "7"]),
                      pre).vals["val"].video_ids == val_ids
    assert len(read_records(parse_args(base), True)) == 10
    with pytest.raises(train_main.UsageError, match="--val-split holdout"):
        build_data(parse_args([*base, "--val-split", "val"]), pre)


def test_a_validation_split_that_holds_test_videos_is_refused(tmp_path):
    from dgl_rs.services.data import build_data
    from dgl_rs.train.distributed import DistInfo

    (tmp_path / "videos").mkdir()
    data = [{"videoID": f"v{i}", "enCap": [f"caption {i}"]} for i in range(6)]
    (tmp_path / "vatex_training_v1.0.json").write_text(json.dumps(data[:4]))
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps(data))
    (tmp_path / "test_list.txt").write_text("v4\n")
    cfg = parse_args(["--dataset", "vatex", "--data-root", str(tmp_path), "--num-frames", "2",
                      "--val-split", "val"])
    pre = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with pytest.raises(train_main.UsageError, match="validation videos are test videos too.*val_list.txt"):
        build_data(cfg, pre)  # no val_list.txt: the whole file, test included
    (tmp_path / "val_list.txt").write_text("v5\n")
    assert build_data(cfg, pre).vals["val"].video_ids == ["v5"]
    assert np.array_equal(build_data(cfg, pre).evals["test"].video_ids, ["v4"])


def test_folder_validation_annotations(tmp_path):
    from dgl_rs.services.data import build_data
    from dgl_rs.train.distributed import DistInfo

    for stem, names in (("train", "ab"), ("test", "c"), ("val", "d")):
        (tmp_path / f"{stem}.csv").write_text("video,caption\n" + "".join(f"{n}.mp4,clip {n}\n" for n in names))
    pre = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    base = ["--dataset", "folder", "--data-root", str(tmp_path), "--num-frames", "2", "--val-split", "val"]
    assert build_data(parse_args(base), pre).vals["val"].video_ids == ["d.mp4"]
    (tmp_path / "other.csv").write_text("video,caption\ne.mp4,clip e\n")
    cfg = parse_args([*base, "--val-annotations", "other.csv"])
    assert build_data(cfg, pre).vals["val"].video_ids == ["e.mp4"]
    (tmp_path / "val.csv").unlink()
    with pytest.raises(train_main.UsageError, match="no val.csv or val.jsonl.*--val-annotations"):
        build_data(parse_args(base), pre)
    with pytest.raises(SystemExit):
        parse_args([*base[:-2], "--val-annotations", "other.csv"])  # without --val-split val
