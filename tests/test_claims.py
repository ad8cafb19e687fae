"""The claims table's decision procedure (paired bootstrap over test queries) on synthetic
inputs whose answer is known, and the Table 3 entries of `dgl-rs benchmark --table 3`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dgl_rs.experiments import claims as C
from dgl_rs.experiments.entries import ABLATIONS, ENTRIES, RUNNABLE, TABLE3, TABLE3_METHODS
from dgl_rs.experiments.report import table3_markdown


def _hits(rng, rate, seeds=3, queries=200):
    return (rng.random((seeds, queries)) < rate).astype(np.int64)


def test_clear_win_holds_clear_loss_does_not():
    rng = np.random.default_rng(0)
    a, b = _hits(rng, 0.6), _hits(rng, 0.3)
    diff, low, high = C.paired_bootstrap(a, b)
    assert 20 < diff < 40 and low > 0 and low < diff < high
    assert C.verdict(low, high) == "holds"
    diff, low, high = C.paired_bootstrap(b, a)
    assert high < 0 and C.verdict(low, high) == "does not hold"


def test_noise_is_inconclusive():
    rng = np.random.default_rng(1)
    outcomes = []
    for _ in range(20):  # two entries of equal skill: almost never a verdict either way
        diff, low, high = C.paired_bootstrap(_hits(rng, 0.4), _hits(rng, 0.4))
        outcomes.append(C.verdict(low, high))
    assert outcomes.count("inconclusive") >= 17


def test_pairing_uses_the_same_queries():
    """a is b with a few queries fixed: a paired test sees a small sure gain."""
    rng = np.random.default_rng(2)
    b = _hits(rng, 0.4)
    a = b.copy()
    a[:, :12] = 1  # 12 more hits per seed at most, all on the same queries
    diff, low, high = C.paired_bootstrap(a, b)
    assert 0 < low <= diff <= high and C.verdict(low, high) == "holds"


def test_non_inferiority_margin():
    assert C.verdict(-1.5, 3.0, margin=2.0) == "holds"  # never more than 2 points worse
    assert C.verdict(-3.0, 1.0, margin=2.0) == "inconclusive"
    assert C.verdict(-6.0, -2.5, margin=2.0) == "does not hold"
    assert C.verdict(-1.5, 3.0) == "inconclusive"  # the same interval: no superiority


def test_deterministic():
    rng = np.random.default_rng(3)
    a, b = _hits(rng, 0.5), _hits(rng, 0.45)
    assert C.paired_bootstrap(a, b) == C.paired_bootstrap(a, b)


def test_bad_input():
    with pytest.raises(ValueError, match="hits_a"):
        C.paired_bootstrap(np.ones((3, 5)), np.ones((2, 5)))
    with pytest.raises(ValueError, match="alpha"):
        C.paired_bootstrap(np.ones((3, 5)), np.ones((3, 5)), alpha=1.5)


def _runs(rate, seeds, rng, queries=100):
    return [{"seed": s, "ranks": {split: {"t2v": np.where(rng.random(queries) < rate, 1, 5).tolist()}
                                  for split in ("static", "temporal")}} for s in seeds]


def _doc(path, runs, world="shifted", factors=(1.0,)):
    setup = {"world": world, "videos": 384, "eval_videos": 100, "epochs": 6, "num_frames": 8, "batch_size": 32,
             "pretrained": "synthetic-tiny", "lr_factors": list(factors)}
    path.write_text(json.dumps({"setup": setup, "runs": runs}))
    return path


def test_claims_table_from_documents(tmp_path):
    rng = np.random.default_rng(4)
    first = _doc(tmp_path / "a.json", {"dgl-transformer": _runs(0.7, [0, 1, 2], rng), "vpt": _runs(0.2, [0, 1, 2], rng),
                                       "upt": _runs(0.7, [0, 1], rng)})
    second = _doc(tmp_path / "b.json", {"dgl-divided": _runs(0.95, [0, 1, 2], rng)})  # same protocol: pooled
    searched = _doc(tmp_path / "c.json", {"dgl-transformer": _runs(0.1, [0, 1, 2], rng),
                                          "vop-fc": _runs(0.9, [0, 1, 2], rng)}, factors=(1.0, 0.2))
    groups, setup = C.load_runs([first, second, searched])
    assert setup["world"] == "shifted"
    assert [(label, set(r)) for label, r in groups] == [
        ("lr factors 1", {"dgl-transformer", "vpt", "upt", "dgl-divided"}),
        ("lr factors 1 0.2", {"dgl-transformer", "vop-fc"})]
    records, table = C.claims_table(groups)
    by = {(r["a"], r["b"]): r for r in records}
    assert by[("dgl-transformer", "vpt")]["static"]["verdict"] == "holds"
    assert by[("dgl-transformer", "dgl-divided")]["temporal"]["verdict"] == "does not hold"
    assert by[("dgl-transformer", "dgl-divided")]["source"] == "lr factors 1"
    # decided within the searched group, where dgl-transformer is weak
    assert by[("dgl-transformer", "vop-fc")]["source"] == "lr factors 1 0.2"
    assert by[("dgl-transformer", "vop-fc")]["static"]["verdict"] == "does not hold"
    assert by[("dgl-transformer", "upt")]["static"]["verdict"] == "not run"  # 2 seeds only
    assert by[("dgl-linear", "full-finetune")]["static"] == {"verdict": "not run",
                                                            "missing": ["dgl-linear", "full-finetune"]}
    assert len(table.splitlines()) == 2 + len(C.CLAIMS)
    with pytest.raises(ValueError, match="one setup"):
        C.load_runs([first, _doc(tmp_path / "d.json", {}, world="pretraining")])


def test_table3_entries():
    assert all(name in RUNNABLE for name in TABLE3_METHODS)
    assert not set(ABLATIONS) & set(ENTRIES)  # the ablations are not in 'all'
    assert all(name in RUNNABLE for _, a, b, _ in C.CLAIMS for name in (a, b))
    entry = {"static": {"t2v": {"R@1": 40.0}, "v2t": {"R@1": 30.0}, "t2v_R@1_std": 1.0},
             "temporal": {"t2v": {"R@1": 10.0}, "v2t": {"R@1": 12.0}, "t2v_R@1_std": 0.5}, "reversal": 55.0}
    table = table3_markdown({"dgl-transformer": entry}, [0, 1, 2])
    lines = table.splitlines()
    assert len(lines) == 2 + len(TABLE3)
    assert "| 3a output | First Global Prompt | `dgl-transformer` | 45.8 | 43.5 | 40.0 ±1.0 | 30.0 |" in table
    assert "(no such switch)" in table


def test_benchmark_table3_defaults():
    from dgl_rs.cli.benchmark import TABLE3_DEFAULTS, build_parser

    args = build_parser("dgl-rs benchmark", TABLE3_METHODS, TABLE3_DEFAULTS).parse_args(["--table", "3"])
    assert args.methods == list(TABLE3_METHODS) and args.seeds == [0, 1, 2] and args.world == "shifted"
    assert (args.videos, args.epochs) == (384, 6)
