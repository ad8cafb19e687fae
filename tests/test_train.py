"""The trainer: recipe pieces (optimizer groups, schedule, sampler) and short end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dgl_rs.train import main as train_main
from dgl_rs.train.params import RECIPES, UsageError, parse_args
from dgl_rs.train.scheduler import WarmupCosine, warmup_cosine_lr
from dgl_rs.train.train import EpochBatchSampler, SeededDataset


# ----------------------------------------------------------------- stand-ins
class StandInDGL(nn.Module):
    """The DGL interface on a toy frozen 'backbone' (random projections) with a small
    learnable video adapter and a text prompt vector: fast, CPU-exact, and trainable."""

    def __init__(self, clip=None, num_frames=4, dim=16, pixels=3 * 8 * 8, vocab=64, context_length=8):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.frame_proj = nn.Parameter(torch.randn(pixels, dim, generator=g) / pixels ** 0.5, requires_grad=False)
        self.token_emb = nn.Parameter(torch.randn(vocab, dim, generator=g), requires_grad=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)), requires_grad=False)
        self.adapter = nn.Linear(dim, dim)  # trainable: weight (decayed) + bias (not decayed)
        nn.init.eye_(self.adapter.weight)
        nn.init.zeros_(self.adapter.bias)
        self.text_prompt = nn.Parameter(torch.zeros(dim))
        self.num_frames = num_frames
        self.method = "stand-in"
        self.config = {"num_frames": num_frames, "dim": dim, "context_length": context_length}

    def encode_video(self, frames):
        b, t = frames.shape[:2]
        x = frames.reshape(b, t, -1) @ self.frame_proj
        return self.adapter(x.mean(1))

    def encode_text(self, tokens):
        mask = (tokens > 0).float().unsqueeze(-1)
        x = (self.token_emb[tokens] * mask).sum(1) / mask.sum(1).clamp_min(1)
        return x + self.text_prompt

    def forward(self, frames, tokens):
        v = nn.functional.normalize(self.encode_video(frames), dim=-1)
        t = nn.functional.normalize(self.encode_text(tokens), dim=-1)
        return self.logit_scale.exp() * t @ v.t()

    def named_trainable_parameters(self):
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_parameters(self):
        return [p for _, p in self.named_trainable_parameters()]

    def num_trainable(self):
        return sum(p.numel() for p in self.trainable_parameters())

    def prompt_state_dict(self):
        return {n: p.detach().clone() for n, p in self.named_trainable_parameters()}

    def load_prompt_state_dict(self, sd):
        with torch.no_grad():
            for n, p in self.named_trainable_parameters():
                p.copy_(sd[n])

    def save_prompts(self, path):
        from safetensors.torch import save_file

        save_file(self.prompt_state_dict(), str(path), metadata={"config": json.dumps(self.config)})


class ToyPairs(torch.utils.data.Dataset):
    """Video i shows the pattern of class i % K plus noise drawn from the GLOBAL numpy
    RNG (like random frame sampling): only SeededDataset makes it reproducible."""

    def __init__(self, n, classes=8, frames=4, size=8, noise=0.5, seed=0, vocab=64):
        g = np.random.default_rng(seed)
        self.patterns = g.normal(size=(classes, 3, size, size)).astype(np.float32)
        self.words = g.integers(1, vocab, size=(classes, 3))
        self.n, self.k, self.t, self.noise = n, classes, frames, noise

    def __len__(self):
        return self.n

    def video(self, i, rng=np.random):
        c = i % self.k
        x = self.patterns[c][None] + self.noise * rng.normal(size=(self.t,) + self.patterns.shape[1:])
        return torch.from_numpy(x.astype(np.float32))

    def tokens(self, i):
        out = torch.zeros(8, dtype=torch.long)
        out[:3] = torch.from_numpy(self.words[i % self.k])
        return out

    def __getitem__(self, i):
        return {"frames": self.video(i), "tokens": self.tokens(i)}


class ToyEvalSet:
    def __init__(self, pairs, n):
        rng = np.random.default_rng(99)
        self.videos = [pairs.video(i, rng) for i in range(n)]
        self.tokens = torch.stack([pairs.tokens(i) for i in range(n)])
        self.captions = [f"caption {i}" for i in range(n)]
        self.caption_to_video = np.arange(n, dtype=np.int64)


def toy_report(sim, caption_to_video=None):
    """Tiny numpy stand-in for dgl_rs.metrics.retrieval_report (pessimistic ties)."""
    sim = np.asarray(sim, dtype=np.float64)
    c2v = np.arange(sim.shape[0]) if caption_to_video is None else np.asarray(caption_to_video)

    def ranks(s, gt):
        pos = s[np.arange(len(gt)), gt][:, None]
        return (s >= pos).sum(1)  # 1-based, ties pessimistic

    def summary(r):
        return {"R@1": 100 * np.mean(r <= 1), "R@5": 100 * np.mean(r <= 5), "R@10": 100 * np.mean(r <= 10),
                "R@50": 100 * np.mean(r <= 50), "MdR": float(np.median(r)), "MnR": float(np.mean(r))}

    nv = sim.shape[1]
    v2t = np.full((nv, nv), -np.inf)
    for c, v in enumerate(c2v):
        v2t[v] = np.maximum(v2t[v], sim[c])
    return {"t2v": summary(ranks(sim, c2v)), "v2t": summary(ranks(v2t, np.arange(nv)))}


def metrics_or_toy():
    try:
        from dgl_rs import metrics

        return metrics
    except ImportError:
        import types

        return types.SimpleNamespace(
            retrieval_report=toy_report,
            similarity=lambda t, v, **kw: (t @ v.t()).numpy())


def patch_standins(monkeypatch, n_train=64, n_eval=32, tokenizer_tokens=True):
    """Point dgl_rs.train.main at the stand-in model and toy data."""
    pairs = ToyPairs(n_train)
    evalset = ToyEvalSet(pairs, n_eval)

    monkeypatch.setattr(train_main, "build_backbone", lambda cfg, device: (None, None, None))
    monkeypatch.setattr(train_main, "build_model",
                        lambda cfg, clip: StandInDGL(num_frames=cfg.num_frames))
    monkeypatch.setattr(train_main, "build_data", lambda cfg, pre: train_main.DataBundle(
        train=pairs, evals={"toy": evalset}))
    import dgl_rs.services.evaluate as ev

    monkeypatch.setattr(ev, "metrics", metrics_or_toy())
    monkeypatch.setattr(ev, "tokenize", lambda texts, context_length: evalset.tokens[
        [int(t.split()[-1]) for t in texts]])
    return pairs, evalset


def toy_argv(tmp_path, *extra):
    return ["--dataset", "synthetic", "--output-dir", str(tmp_path), "--name", "run",
            "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--num-frames", "4",
            "--workers", "0", "--device", "cpu", "--no-progress", "--no-tensorboard",
            "--log-every", "1", *extra]


# ------------------------------------------------------------------- unit tests
def test_recipe_defaults_and_overrides(tmp_path):
    cfg = parse_args(["--dataset", "msrvtt", "--data-root", str(tmp_path)])
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.num_frames, cfg.generator) == (2e-3, 5, 128, 12, "transformer")
    assert cfg.model == "ViT-B-32-quickgelu" and cfg.pretrained == "openai"
    cfg = parse_args(["--dataset", "activitynet", "--data-root", str(tmp_path), "--lr", "3e-3"])
    assert (cfg.lr, cfg.num_frames, cfg.context_length, cfg.generator) == (3e-3, 64, 64, "linear")
    assert RECIPES["lsmdc"]["lr"] == 1e-2 and RECIPES["vatex"]["batch_size"] == 64


def test_bad_flags_exit_like_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "msrvtt"])  # no --data-root
    assert e.value.code == 2
    assert "--data-root is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "synthetic", "--batch-size", "0"])


def test_warmup_then_cosine():
    lrs = [warmup_cosine_lr(1.0, s, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # non-increasing after warm-up
    assert lrs[-1] < 1e-3
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0)
    sched = WarmupCosine(opt, 0.5, total_steps=50, warmup=0.1)
    assert sched.warmup_steps == 5
    assert sched.step() == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_optimizer_groups_follow_recipe():
    model = StandInDGL()
    cfg = parse_args(["--dataset", "synthetic"])
    opt = train_main.make_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.adapter.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.adapter.bias), id(model.text_prompt)}
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    frozen = {id(model.frame_proj), id(model.token_emb), id(model.logit_scale)}
    assert not frozen & {id(p) for g in opt.param_groups for p in g["params"]}


def test_sampler_shards_one_global_batch():
    one = EpochBatchSampler(50, 8, seed=3)
    two = [EpochBatchSampler(50, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    assert one.steps_per_epoch == 6 == two[0].steps_per_epoch
    for s in [one, *two]:
        s.epoch = 1
    merged = [a + b for a, b in zip(*two)]
    assert merged == list(one)
    assert list(one) != [b for b in (setattr(one, "epoch", 2) or one)]  # new order per epoch
    one.epoch, one.start_step = 1, 4
    assert list(one) == merged[4:] and len(one) == 2


def test_seeded_dataset_is_order_independent():
    ds = SeededDataset(ToyPairs(10))
    a = ds[(3, 77)]["frames"]
    _ = ds[(5, 1)]
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    assert torch.equal(ds[(3, 77)]["frames"], a)
    assert np.array_equal(np.random.get_state()[1], state)  # main-process RNG untouched
    assert not torch.equal(ds[(3, 78)]["frames"], a)


# ----------------------------------------------------------------- end to end
def test_train_end_to_end_standin(tmp_path, monkeypatch):
    patch_standins(monkeypatch)
    rc = train_main.main(toy_argv(tmp_path))
    assert rc == 0
    run = tmp_path / "run"
    for name in ["params.txt", "config.json", "out.log", "metrics.jsonl", "loss.png", "recall.png",
                 "prompts.safetensors", "model.json", "results.json"]:
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert all(r["train/samples_per_s"] > 0 for r in records if "train/loss" in r)
    res = json.loads((run / "results.json").read_text())
    assert res["results"]["toy"]["raw"]["t2v"]["R@1"] > 3 * 100 / 32  # chance: 1/32
    assert "lr: 0.05" in (run / "params.txt").read_text()


# ------------------------------------------------------- end to end, real DGL
def _have_tiny():
    from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS

    return SYNTHETIC_TINY_WEIGHTS.is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _have_tiny(), reason="the shipped synthetic-tiny weights are not built yet")
def test_train_dgl_on_synthetic_static_split(tmp_path, capsys):
    """dgl_rs.DGL (DGL-Linear) on the frozen shipped tiny CLIP, synthetic static split:
    the loss falls and test R@1 is far above chance; `dgl-rs eval` on the run's prompts
    reproduces the final numbers and adds QB-Norm and DSL."""
    from dgl_rs.cli import main as cli

    argv = ["train", "--dataset", "synthetic", "--synthetic-split", "static",
            "--synthetic-videos", "96", "--synthetic-eval-videos", "48", "--num-frames", "4",
            "--batch-size", "16", "--epochs", "3", "--lr", "1e-2", "--generator", "linear",
            "--output-dir", str(tmp_path), "--name", "run", "--workers", "0", "--device", "cpu",
            "--no-progress", "--log-every", "1", "--eval-every", "0"]
    assert cli(argv) == 0
    run = tmp_path / "run"
    losses = [json.loads(x)["train/loss"] for x in open(run / "metrics.jsonl") if "train/loss" in x]
    assert len(losses) == 18
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    res = json.loads((run / "results.json").read_text())
    r1 = res["results"]["static"]["raw"]["t2v"]["R@1"]
    assert r1 > 5 * 100 / 48, res["results"]  # chance: 1 in 48
    assert res["trainable"] > 0 and res["global_batch"] == 16

    capsys.readouterr()
    assert cli(["eval", "--prompts", str(run), "--dataset", "synthetic", "--synthetic-split", "static",
                "--synthetic-videos", "96",  # the run's training split: QB-Norm's banks
                "--synthetic-eval-videos", "48", "--device", "cpu", "--no-progress", "--qb-norm", "--dsl",
                "--out", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"results: {tmp_path / 'eval.json'}"
    ev = json.loads((tmp_path / "eval.json").read_text())["results"]["static"]
    from dgl_rs.services.evaluate import flatten_report

    assert flatten_report(ev["raw"]) == pytest.approx(flatten_report(res["results"]["static"]["raw"]))
    assert set(ev) >= {"raw", "qb_norm", "qb_norm_released", "dsl"}
    assert set(ev["qb_norm"]) == set(ev["qb_norm_released"]) == {"t2v", "v2t"}
