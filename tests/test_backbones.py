"""load_clip and the shipped synthetic-tiny backbone; pretrain-synthetic."""

import json
import time

import pytest
import torch

from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS, load_clip


@pytest.fixture(scope="module")
def tiny():
    return load_clip("synthetic-tiny")


def test_synthetic_tiny_loads_with_shapes(tiny):
    model, pp, tok = tiny
    assert pp["image_size"] == 64 and len(pp["mean"]) == 3 and len(pp["std"]) == 3
    tokens = tok(["a red circle in the top left", "a blue square"])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    with torch.no_grad():
        img = model.encode_image(torch.zeros(3, 3, 64, 64))
        txt = model.encode_text(tokens)
    assert img.shape == (3, 64) and txt.shape == (2, 64)
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
