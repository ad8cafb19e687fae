"""load_clip and the shipped synthetic-tiny backbone; pretrain-synthetic."""

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS, load_clip


@pytest.fixture(scope="module")
def tiny():
    return load_clip("synthetic-tiny")


def _block(x, w, prefix, heads, mask=None):
    """One pre-LN CLIP residual block written out: attention, then a QuickGELU MLP."""
    p = lambda name: w[f"{prefix}.{name}"]  # noqa: E731
    b, n, d = x.shape
    h = F.layer_norm(x, (d,), p("ln_1.weight"), p("ln_1.bias"))
    q, k, v = (h @ p("attn.in_proj_weight").T + p("attn.in_proj_bias")).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    att = (scores + (0 if mask is None else mask)).softmax(dim=-1) @ v
    x = x + att.transpose(1, 2).reshape(b, n, d) @ p("attn.out_proj.weight").T + p("attn.out_proj.bias")
    h = F.layer_norm(x, (d,), p("ln_2.weight"), p("ln_2.bias")) @ p("mlp.c_fc.weight").T + p("mlp.c_fc.bias")
    return x + (h * torch.sigmoid(1.702 * h)) @ p("mlp.c_proj.weight").T + p("mlp.c_proj.bias")


def _reference_clip(w, images, tokens):
    """CLIP's two towers computed from the shipped weights alone (float64, no open_clip):
    the config says 4 blocks each, 4 visual heads of 32, 2 text heads of 32, patch 16."""
    x = F.conv2d(images, w["visual.conv1.weight"], stride=16).flatten(2).transpose(1, 2)
    x = torch.cat([w["visual.class_embedding"].expand(len(x), 1, -1), x], dim=1) + w["visual.positional_embedding"]
    x = F.layer_norm(x, (128,), w["visual.ln_pre.weight"], w["visual.ln_pre.bias"])
    for i in range(4):
        x = _block(x, w, f"visual.transformer.resblocks.{i}", heads=4)
    img = F.layer_norm(x[:, 0], (128,), w["visual.ln_post.weight"], w["visual.ln_post.bias"]) @ w["visual.proj"]
    t = w["token_embedding.weight"][tokens] + w["positional_embedding"]
    causal = torch.full((32, 32), float("-inf"), dtype=t.dtype).triu(1)
    for i in range(4):
        t = _block(t, w, f"transformer.resblocks.{i}", heads=2, mask=causal)
    t = F.layer_norm(t, (64,), w["ln_final.weight"], w["ln_final.bias"])
    return img, t[torch.arange(len(t)), tokens.argmax(dim=-1)] @ w["text_projection"]


def test_synthetic_tiny_computes_clip_from_the_shipped_weights(tiny):
    """The loaded model is CLIP on the shipped weights: its image and text embeddings equal
    an independent computation from the safetensors file; preprocessing is OpenAI CLIP's
    and the tokenizer is the package's (``[SOT, words, EOT, 0...]``, 32 ids)."""
    from safetensors.torch import load_file

    from dgl_rs.data import OPENAI_MEAN, OPENAI_STD
    from dgl_rs.backbone.text import tokenize

    model, pp, tok = tiny
    assert pp == {"image_size": 64, "mean": tuple(OPENAI_MEAN), "std": tuple(OPENAI_STD)}
    captions = ["a red circle in the top left", "a blue square"]
    tokens = tok(captions)
    assert torch.equal(tokens, tokenize(captions, context_length=32))
    assert tokens[:, 0].tolist() == [49406] * 2 and tokens[0, 8] == tokens[1, 4] == 49407  # SOT, 7 / 3 words, EOT
    assert not tokens[0, 9:].any() and not tokens[1, 5:].any()
    torch.manual_seed(0)
    images = torch.randn(3, 3, 64, 64)
    images[2] = images[0]
    with torch.no_grad():
        img, txt = model.encode_image(images), model.encode_text(tokens)
    w = {k: v.double() for k, v in load_file(str(SYNTHETIC_TINY_WEIGHTS)).items()}
    want_img, want_txt = _reference_clip(w, images.double(), tokens)
    torch.testing.assert_close(img.double(), want_img, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(txt.double(), want_txt, rtol=1e-4, atol=1e-4)
    assert torch.equal(img[0], img[2]) and not torch.allclose(img[0], img[1], atol=1e-3)
    assert not torch.allclose(txt[0], txt[1], atol=1e-3)
    assert not model.training


def test_synthetic_tiny_towers_use_multihead_attention(tiny):
    """DGL patches nn.MultiheadAttention-based open_clip transformers."""
    model = tiny[0]
    for tower in (model.visual.transformer, model.transformer):
        assert all(isinstance(b.attn, torch.nn.MultiheadAttention) for b in tower.resblocks)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 4


def test_synthetic_tiny_weights_are_the_shipped_file(tiny):
    from safetensors.torch import load_file

    shipped = load_file(str(SYNTHETIC_TINY_WEIGHTS))
    state = tiny[0].state_dict()
    for key in ("visual.conv1.weight", "token_embedding.weight", "logit_scale"):
        assert torch.equal(state[key], shipped[key].float())
    meta = json.loads(SYNTHETIC_TINY_WEIGHTS.with_suffix(".json").read_text())
    assert meta["model"] == "synthetic-tiny" and meta["steps"] > 0


def test_synthetic_tiny_is_a_useful_frozen_backbone(tiny):
    """Zero-shot on held-out stills, far above chance (shape, colour and place)."""
    from dgl_rs.data import VideoTransform
    from dgl_rs.train.pretrain import zero_shot

    model, pp, tok = tiny
    res = zero_shot(model, VideoTransform.from_preprocess_cfg(pp), tok, 200, seed=4242,
                    device="cpu")
    assert res["i2t_R@1"] > 10 * res["i2t_chance"], res
    assert res["t2i_R@1"] > 10 * res["t2i_chance"], res


def test_mean_of_frame_features_equals_for_reversed_video(tiny):
    from dgl_rs.data import VideoTransform, make_specs, render_video

    model, pp, _ = tiny
    tr = VideoTransform.from_preprocess_cfg(pp)
    spec = make_specs("temporal", 1, seed=3)[0]
    with torch.no_grad():
        f = model.encode_image(tr(render_video(spec, 8)))
        r = model.encode_image(tr(render_video(spec.reversed(), 8)))
    assert torch.allclose(f.mean(0), r.mean(0), atol=1e-5)
    assert not torch.allclose(f, r, atol=1e-3)


def test_random_init_and_file_path(tmp_path, tiny):
    model, _, _ = load_clip("synthetic-tiny", None)
    assert not torch.equal(model.visual.conv1.weight, tiny[0].visual.conv1.weight)
    again, _, _ = load_clip("synthetic-tiny", str(SYNTHETIC_TINY_WEIGHTS))
    assert torch.equal(again.visual.conv1.weight, tiny[0].visual.conv1.weight)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_clip("synthetic-tiny", str(tmp_path / "nope.safetensors"))


def test_unknown_model_or_tag_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model 'ViT-Q-99'.*ViT"):
        load_clip("ViT-Q-99", None)
    with pytest.raises(ValueError, match="unknown pretrained tag 'bogus'.*openai"):
        load_clip("ViT-B-32-quickgelu", "bogus")
    with pytest.raises(ValueError, match="needs model_name='synthetic-tiny'"):
        load_clip("ViT-B-32-quickgelu", "synthetic-tiny")


def test_openai_weights_offline_fail_fast_with_hint(monkeypatch, tmp_path):
    """No network here (and none forced in CI): the download fails within seconds and
    the error says how to pass local weights."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    try:
        load_clip("ViT-B-32-quickgelu", "openai", cache_dir=str(tmp_path))
    except RuntimeError as exc:
        msg = str(exc)
    else:  # pragma: no cover - only where the weights sit in tmp_path's cache
        pytest.skip("the OpenAI weights are available offline")
    assert time.time() - start < 30
    assert "could not fetch the 'openai' weights" in msg
    assert "--pretrained /path/to/ViT-B-32.pt" in msg


def test_pretrain_writes_a_loadable_checkpoint(tmp_path, capsys):
    from dgl_rs.train import pretrain

    out = tmp_path / "tiny.safetensors"
    assert pretrain.main(["--out", str(out), "--steps", "5", "--batch-size", "16",
                          "--pool-size", "64", "--eval-samples", "20", "--no-progress"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["steps"] == 5 and meta["seed"] == 0 and meta["final_loss"] > 0
    assert "zero-shot" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))
    model, _, _ = load_clip("synthetic-tiny", str(out))
    assert model.visual.conv1.weight.dtype == torch.float32


def test_pretrain_flags_are_checked():
    from dgl_rs.train import pretrain

    with pytest.raises(SystemExit):
        pretrain.main(["--steps", "0"])
    with pytest.raises(SystemExit):
        pretrain.main(["--out", "weights.pt"])
