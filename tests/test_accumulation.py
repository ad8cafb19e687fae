"""Gradient accumulation (--accum-steps): the gradient of the large contrastive batch,
micro-batch by micro-batch; training with it equals training with the large batch, and
interrupt-and-resume stays exact."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dgl_rs.factory import checkpoints as ckpt
from dgl_rs.train import main as train_main
from dgl_rs.train.params import parse_args
from dgl_rs.train.train import accumulate_gradients

from test_train import StandInDGL, ToyPairs, _have_tiny, patch_standins, toy_argv


def reference_grads(model, frames, tokens):
    """The full-batch symmetric InfoNCE, written out (no dgl_rs loss code), and its
    gradient w.r.t. every trainable parameter."""
    v = F.normalize(model.encode_video(frames), dim=-1)
    t = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * t @ v.t()
    target = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    params = model.trainable_parameters()
    return loss.item(), torch.autograd.grad(loss, params)


def _toy_batch(n, dtype=torch.float64):
    pairs = ToyPairs(n)
    frames = torch.stack([pairs.video(i) for i in range(n)]).to(dtype)
    tokens = torch.stack([pairs.tokens(i) for i in range(n)])
    return frames, tokens


@pytest.mark.parametrize("micro", [1, 4, 10])  # 4: micro-batches of 4, 4 and 2
def test_accumulated_gradient_equals_the_full_batch(micro):
    model = StandInDGL().double()
    with torch.no_grad():  # away from the identity start, so every gradient is non-trivial
        for p in model.trainable_parameters():
            p.add_(0.3 * torch.randn_like(p))
    frames, tokens = _toy_batch(10)
    want_loss, want = reference_grads(model, frames, tokens)
    loss = accumulate_gradients(model, frames, tokens, micro, "fp32", torch.device("cpu"))
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for p, g in zip(model.trainable_parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
        assert g.abs().max() > 1e-6


def test_summing_micro_batch_losses_would_not_be_the_same():
    """Why gradient caching: the mean of per-micro-batch losses contrasts fewer pairs."""
    model = StandInDGL().double()
    frames, tokens = _toy_batch(8)
    full, _ = reference_grads(model, frames, tokens)
    halves = [reference_grads(model, frames[i:i + 4], tokens[i:i + 4])[0] for i in (0, 4)]
    assert abs(sum(halves) / 2 - full) > 1e-3


class _Noisy(StandInDGL):
    """A stochastic forward (dropout on the video adapter's input)."""

    def encode_video(self, frames):
        b, t = frames.shape[:2]
        x = F.dropout((frames.reshape(b, t, -1) @ self.frame_proj).mean(1), 0.3, training=True)
        return self.adapter(x)


def test_a_stochastic_forward_sees_the_same_noise_in_both_passes():
    model = _Noisy().double()
    frames, tokens = _toy_batch(8)
    torch.manual_seed(5)
    accumulate_gradients(model, frames, tokens, 8, "fp32", torch.device("cpu"))  # one micro-batch
    whole = [p.grad.clone() for p in model.trainable_parameters()]
    torch.manual_seed(5)
    _, want = reference_grads(model, frames, tokens)  # the same dropout mask: first draw after the seed
    for g, w in zip(whole, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.skipif(not _have_tiny(), reason="the shipped synthetic-tiny weights are not built yet")
def test_accumulation_on_real_dgl_matches_its_forward():
    """dgl_rs.DGL (DGL-Transformer) on the tiny CLIP, fp32: accumulated gradients equal the
    gradient of the model's own forward (logits) on the whole batch."""
    import dgl_rs
    from dgl_rs.data.synthetic import SyntheticVideoDataset
    from dgl_rs.factory import load_backbone
    from dgl_rs.backbone.text import tokenize

    clip, pre, _ = load_backbone("synthetic-tiny", "synthetic-tiny")
    model = dgl_rs.DGL(clip, num_frames=4, generator="transformer")
    ds = SyntheticVideoDataset("temporal", 6, seed=3, num_frames=4, image_size=pre["image_size"],
                               mean=pre["mean"], std=pre["std"], tokenizer=lambda t: tokenize(t, 32))
    frames = torch.stack([ds[i]["frames"] for i in range(6)])
    tokens = tokenize([ds.captions[i] for i in range(6)], 32)
    logits = model(frames, tokens)
    target = torch.arange(6)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    params = [p for p in model.parameters() if p.requires_grad]
    want = torch.autograd.grad(loss, params)
    got_loss = accumulate_gradients(model, frames, tokens, 4, "fp32", torch.device("cpu"))
    assert got_loss == pytest.approx(loss.item(), rel=1e-5)
    for p, w in zip(params, want):
        scale = w.abs().max().clamp_min(1e-12)
        assert ((p.grad - w).abs().max() / scale).item() < 1e-4


# ------------------------------------------------------------------ end to end
def _prompts(run):
    return load_file(str(run / "prompts.safetensors"))


def _losses(run):
    return [json.loads(x)["train/loss"] for x in open(run / "metrics.jsonl") if "train/loss" in x]


@pytest.mark.slow
def test_training_with_accumulation_equals_the_larger_batch_and_resumes_exactly(tmp_path, monkeypatch):
    patch_standins(monkeypatch)
    assert train_main.main(toy_argv(tmp_path / "big")) == 0  # batch 16
    argv = lambda d, *x: [*toy_argv(d, *x), "--batch-size", "8", "--accum-steps", "2"]  # noqa: E731
    assert train_main.main(argv(tmp_path / "acc")) == 0
    big, acc = tmp_path / "big" / "run", tmp_path / "acc" / "run"
    assert len(_losses(acc)) == len(_losses(big)) == 12  # 64 pairs / 16 per step x 3 epochs
    assert _losses(acc) == pytest.approx(_losses(big), rel=1e-5)
    for k, v in _prompts(big).items():
        torch.testing.assert_close(_prompts(acc)[k], v, rtol=1e-4, atol=1e-5)
    cfg = json.loads((acc / "config.json").read_text())
    assert cfg["accum_steps"] == 2 and json.loads((acc / "results.json").read_text())["global_batch"] == 16

    # interrupted mid-epoch 2, resumed with 2 workers: bitwise the uninterrupted accumulated run
    cut = tmp_path / "cut"

    def stop(epoch, step):
        if (epoch, step) == (1, 2):
            signal.raise_signal(signal.SIGTERM)

    assert train_main.run(parse_args(argv(cut)), on_step=stop) == 128 + signal.SIGTERM
    latest = ckpt.list_checkpoints(cut / "run" / "checkpoints")[-1]
    assert ckpt.load_checkpoint(latest)[1]["global_step"] == 6  # optimizer steps, not micro-batches
    assert train_main.main(argv(cut, "--resume", "latest", "--workers", "2")) == 0
    for k, v in _prompts(acc).items():
        assert torch.equal(_prompts(cut / "run")[k], v), k
    assert _losses(cut / "run") == _losses(acc)


def test_accum_steps_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "synthetic", "--accum-steps", "0"])
    assert "--accum-steps must be" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_ranks_with_accumulation_match_one_large_batch(tmp_path):
    """DDP semantics kept: 2 ranks x 2 micro-batches of 4 = one process with batch 16
    (the embeddings of all micro-batches are gathered once per optimizer step)."""
    from test_distributed import run_one_and_two_ranks

    run_one_and_two_ranks(tmp_path, 4, "--accum-steps", "2")
    a, b = _prompts(tmp_path / "one" / "run"), _prompts(tmp_path / "two" / "run")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    la, lb = _losses(tmp_path / "one" / "run"), _losses(tmp_path / "two" / "run")
    assert len(la) == len(lb) == 8 and lb == pytest.approx(la, rel=1e-5)
    assert json.loads((tmp_path / "two" / "run" / "results.json").read_text())["global_batch"] == 16
