"""Loading the checkpoints released with the DGL paper (OFFICIAL-CHECKPOINT.md).

The files are built here from known values in the documented layout (``clip.`` keys,
``module.`` under DDP, layer-major prompt tables, the transformer table's rows), around the
shipped synthetic-tiny CLIP, and once with ViT-B/32's real shapes. Everything is compared
with a plain-PyTorch reading of the spec, never with dgl_rs's own mapping."""

from __future__ import annotations

import argparse
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

import dgl_rs
from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS, load_clip
from dgl_rs.cli import main
from dgl_rs.util.errors import UsageError
from dgl_rs.factory.official import backbone_name, load_official, official_config, read_official

from references import mha_heads

pytestmark = pytest.mark.skipif(not SYNTHETIC_TINY_WEIGHTS.is_file(), reason="needs the shipped synthetic-tiny")
BLOCK = "PromptTransformer.resblocks.0."


def tiny_clip():
    return load_clip("synthetic-tiny", "synthetic-tiny")[0]


def released_prompts(generator, layers, width, text_width, heads_width=None, T=12, seed=0, scale=0.05):
    """Known prompt tensors, keyed as in the released state_dict (after ``clip.``)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * scale  # noqa: E731
    D, Dt = width, text_width
    p = {"visual.prompt_embeddings": r(1, 4, D)}
    if generator == "transformer":
        p["unified_prompt_embedding.weight"] = r(8 + 4 * T, layers * D)
        shapes = {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.in_proj_weight": (3 * D, D),
                  "attn.in_proj_bias": (3 * D,), "attn.out_proj.weight": (D, D), "attn.out_proj.bias": (D,),
                  "ln_2.weight": (D,), "ln_2.bias": (D,), "mlp.c_fc.weight": (4 * D, D), "mlp.c_fc.bias": (4 * D,),
                  "mlp.c_proj.weight": (D, 4 * D), "mlp.c_proj.bias": (D,)}
        for k, s in shapes.items():
            p[BLOCK + k] = r(*s) + (1.0 if k.startswith("ln") and k.endswith("weight") else 0.0)
        p.update({"unified_prompt_mlp.c_fc.weight": r(2 * D, D), "unified_prompt_mlp.c_fc.bias": r(2 * D),
                  "unified_prompt_mlp.c_proj.weight": r(Dt, 2 * D), "unified_prompt_mlp.c_proj.bias": r(Dt)})
    else:
        p["visual_prompt_embedding"] = r(1, 4, layers * D)
        for side in ("prefix", "postfix"):
            p[f"{side}_text_prompt_proj_layer.weight"] = r(Dt, D)
            p[f"{side}_text_prompt_proj_layer.bias"] = r(Dt)
    return p


def write_released(path, backbone_sd, prompts, ddp=True, extra=None):
    sd = {"clip." + k: v for k, v in backbone_sd.items()}
    sd["clip.visual.position_ids"] = torch.arange(backbone_sd["visual.positional_embedding"].shape[0])[None]
    sd.update({"clip." + k: v for k, v in prompts.items()})
    if ddp:
        sd = {"module." + k: v for k, v in sd.items()}
    ckpt = {"epoch": 5, "global_step": 1234, "arch": "CLIp4Clip", "state_dict": sd, "best_acc1": 45.8,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def tiny_sd():
    return {k: v.clone() for k, v in tiny_clip().state_dict().items()}


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def spec_transformer_prompts(p, layers, D, heads, T):
    """OFFICIAL-CHECKPOINT.md, literally: layer l reads columns l*D..(l+1)*D of the table,
    one pre-LN block (heads, no mask, QuickGELU MLP 4x), rows 0-7 through the text MLP,
    frame t's prompts are rows 8+4t..8+4t+3."""
    U, b = p["unified_prompt_embedding.weight"], lambda k: p[BLOCK + k]  # noqa: E731
    text, frames = [], []
    for lay in range(layers):
        x = U[:, lay * D:(lay + 1) * D].unsqueeze(0)
        h = F.layer_norm(x, (D,), b("ln_1.weight"), b("ln_1.bias"))
        q, k, v = F.linear(h, b("attn.in_proj_weight"), b("attn.in_proj_bias")).split(D, dim=-1)
        x = x + F.linear(mha_heads(q, k, v, heads), b("attn.out_proj.weight"), b("attn.out_proj.bias"))
        h = F.layer_norm(x, (D,), b("ln_2.weight"), b("ln_2.bias"))
        x = (x + F.linear(quick_gelu(F.linear(h, b("mlp.c_fc.weight"), b("mlp.c_fc.bias"))),
                          b("mlp.c_proj.weight"), b("mlp.c_proj.bias")))[0]
        t = F.linear(quick_gelu(F.linear(x[:8], p["unified_prompt_mlp.c_fc.weight"], p["unified_prompt_mlp.c_fc.bias"])),
                     p["unified_prompt_mlp.c_proj.weight"], p["unified_prompt_mlp.c_proj.bias"])
        text.append(t)
        frames.append(torch.stack([x[8 + 4 * f: 8 + 4 * f + 4] for f in range(T)]))
    return torch.stack(text), torch.stack(frames)


@pytest.mark.parametrize("ddp", [True, False])
def test_transformer_file_lands_where_the_spec_says(tmp_path, tiny_sd, ddp):
    p = released_prompts("transformer", 4, 128, 64)
    path = write_released(tmp_path / "ckpt.best.pth.tar", tiny_sd, p, ddp=ddp)
    model = load_official(path)
    assert model.method == "dgl-transformer" and not model.training
    cfg = model.config
    assert (cfg["num_frames"], cfg["num_global"], cfg["num_frame_prompts"], cfg["num_text_prompts"]) == (12, 4, 4, [4, 4])
    assert (cfg["postfix"], cfg["context_length"], cfg["pool"], cfg["attention"]) == \
        ("after_padding", 32, "global", "global_local")
    torch.testing.assert_close(model.global_prompts, p["visual.prompt_embeddings"][0], rtol=0, atol=0)
    text, frames = model.generate_prompts()
    ref_text, ref_frames = spec_transformer_prompts(p, 4, 128, 4, 12)
    # layer 3's frame prompt 2 of frame 5 is row 8 + 4*5 + 2 of layer 3's block output
    torch.testing.assert_close(frames[3, 5, 2], ref_frames[3, 5, 2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(frames, ref_frames, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(text, ref_text, rtol=1e-5, atol=1e-6)  # rows 0-3 prefix, 4-7 postfix
    # the frozen backbone is the file's own
    for k, v in model.clip.state_dict().items():
        torch.testing.assert_close(v, tiny_sd[k].float(), rtol=0, atol=0, msg=k)


def test_linear_file_lands_where_the_spec_says(tmp_path, tiny_sd):
    p = released_prompts("linear", 4, 128, 64, seed=1)
    model = load_official(write_released(tmp_path / "ckpt.pth.tar", tiny_sd, p), num_frames=6)
    assert model.method == "dgl-linear" and model.num_frames == 6
    text, frames = model.generate_prompts()
    vpe = p["visual_prompt_embedding"]
    for layer, t, j in [(3, 5, 2), (0, 0, 0), (2, 1, 3)]:
        torch.testing.assert_close(frames[layer, t, j], vpe[0, j, layer * 128:(layer + 1) * 128], rtol=0, atol=0)
    layer2 = vpe[0, :, 2 * 128:3 * 128]
    pre = F.linear(layer2, p["prefix_text_prompt_proj_layer.weight"], p["prefix_text_prompt_proj_layer.bias"])
    post = F.linear(layer2, p["postfix_text_prompt_proj_layer.weight"], p["postfix_text_prompt_proj_layer.bias"])
    torch.testing.assert_close(text[2], torch.cat([pre, post]), rtol=1e-6, atol=1e-7)


def test_transformer_table_for_64_frames(tmp_path, tiny_sd):
    """ActivityNet's file: 8 + 4*64 rows, T=64 and a context of 64 (tiny's text tower has 32
    positions: capped there)."""
    p = released_prompts("transformer", 4, 128, 64, T=64, seed=2)
    assert p["unified_prompt_embedding.weight"].shape == (264, 512)
    model = load_official(write_released(tmp_path / "anet.pth.tar", tiny_sd, p))
    assert model.num_frames == 64 and model.config["context_length"] == 32
    b32 = {"visual.prompt_embeddings": torch.zeros(1, 4, 768),
           "unified_prompt_embedding.weight": torch.zeros(264, 12 * 768)}
    assert official_config(b32, 768, 12)["options"]["context_length"] == 64
    assert official_config(b32, 768, 12, context_length=40)["options"]["context_length"] == 40
    _, frames = model.generate_prompts()
    _, ref = spec_transformer_prompts(p, 4, 128, 4, 64)
    torch.testing.assert_close(frames[1, 63, 3], ref[1, 63, 3], rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="T=64"):
        load_official(tmp_path / "anet.pth.tar", num_frames=12)


def _set_directly(model, p):
    """The same prompts put into a dgl-rs model by hand (its documented parameters)."""
    gen = model.generator
    with torch.no_grad():
        model.global_prompts.copy_(p["visual.prompt_embeddings"][0])
        gen.table.copy_(p["unified_prompt_embedding.weight"])
        blk = gen.block
        for name in ("ln_1", "ln_2"):
            getattr(blk, name).weight.copy_(p[BLOCK + name + ".weight"])
            getattr(blk, name).bias.copy_(p[BLOCK + name + ".bias"])
        blk.attn.in_proj_weight.copy_(p[BLOCK + "attn.in_proj_weight"])
        blk.attn.in_proj_bias.copy_(p[BLOCK + "attn.in_proj_bias"])
        blk.attn.out_proj.weight.copy_(p[BLOCK + "attn.out_proj.weight"])
        blk.attn.out_proj.bias.copy_(p[BLOCK + "attn.out_proj.bias"])
        for name in ("c_fc", "c_proj"):
            getattr(blk.mlp, name).weight.copy_(p[BLOCK + f"mlp.{name}.weight"])
            getattr(blk.mlp, name).bias.copy_(p[BLOCK + f"mlp.{name}.bias"])
            lin = gen.text_mlp[0 if name == "c_fc" else 2]
            lin.weight.copy_(p[f"unified_prompt_mlp.{name}.weight"])
            lin.bias.copy_(p[f"unified_prompt_mlp.{name}.bias"])


def test_loaded_model_equals_dgl_given_the_same_prompts(tmp_path, tiny_sd):
    p = released_prompts("transformer", 4, 128, 64, T=4, seed=3)
    loaded = load_official(write_released(tmp_path / "c.pth.tar", tiny_sd, p))
    direct = dgl_rs.build_method(tiny_clip(), "dgl-transformer", num_frames=4, postfix="after_padding",
                                 context_length=32)
    _set_directly(direct, p)
    frames = torch.randn(2, 4, 3, 64, 64)
    tokens = dgl_rs.tokenize(["a red circle moves from left to right", "a blue square"], 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(frames), direct.encode_video(frames), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(tokens), direct.encode_text(tokens), rtol=0, atol=0)
        torch.testing.assert_close(loaded(frames, tokens), direct(frames, tokens), rtol=0, atol=0)


def _expanded(sd):
    """The tensors of a state_dict as zero-stride views of one number: the real shapes,
    a few bytes on disk."""
    return {k: torch.full((), 0.01).expand(v.shape) if v.is_floating_point() else v for k, v in sd.items()}


def test_vit_b32_file_with_real_shapes(tmp_path):
    with torch.device("meta"):
        meta = open_clip.create_model("ViT-B-32-quickgelu", device="meta").state_dict()
    assert len(meta) == 302
    p = released_prompts("transformer", 12, 768, 512, scale=0.02)
    assert p["unified_prompt_embedding.weight"].shape == (56, 9216)
    path = write_released(tmp_path / "msrvtt_b32.pth.tar", _expanded(meta), p)
    model = load_official(path)
    assert model.backbone_signature()["patch_size"] == 32 and model.num_trainable() == 9_575_168
    _, frames = model.generate_prompts()
    _, ref = spec_transformer_prompts(p, 12, 768, 12, 12)
    torch.testing.assert_close(frames[3, 5, 2], ref[3, 5, 2], rtol=1e-4, atol=1e-5)


def test_b16_is_recognised_from_its_shapes():
    with torch.device("meta"):
        sd = open_clip.create_model("ViT-B-16-quickgelu", device="meta").state_dict()
    assert backbone_name(sd) == "ViT-B-16-quickgelu"
    del sd["visual.ln_post.bias"]
    with pytest.raises(ValueError, match="none of"):
        backbone_name(sd)


def _broken(tmp_path, tiny_sd, name, **changes):
    p = released_prompts("transformer", 4, 128, 64, T=2)
    sd = dict(tiny_sd)
    for k, v in changes.items():
        target = p if k in p or k.startswith(("unified", "visual_prompt", "Prompt")) else sd
        if v is None:
            target.pop(k)
        else:
            target[k] = v
    return write_released(tmp_path / name, sd, p)


@pytest.mark.parametrize("case,match", [
    ("not_a_dict", "expected a dict with a 'state_dict'"),
    ("needs_code", "needs code to unpickle"),
    ("not_torch", "torch.load cannot read it"),
    ("no_clip_prefix", "under 'clip.'"),
    ("both_generators", "found both"),
    ("bad_rows", "8 \\+ 4 x T rows"),
    ("bad_columns", "4 layers x 128"),
    ("missing_block_tensor", "missing dgl-transformer tensors"),
    ("backbone_key_missing", "none of"),
    ("nan_prompt", "NaN or inf"),
])
def test_malformed_files_are_refused(tmp_path, tiny_sd, case, match):
    path = tmp_path / f"{case}.pth.tar"
    if case == "not_a_dict":
        torch.save(torch.zeros(3), path)
    elif case == "needs_code":
        torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1.0)}, path)
    elif case == "not_torch":
        path.write_bytes(b"definitely not a checkpoint")
    elif case == "no_clip_prefix":
        torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}}, path)
    elif case == "both_generators":
        _broken(tmp_path, tiny_sd, path.name, visual_prompt_embedding=torch.zeros(1, 4, 512))
    elif case == "bad_rows":
        _broken(tmp_path, tiny_sd, path.name, **{"unified_prompt_embedding.weight": torch.zeros(17, 512)})
    elif case == "bad_columns":
        _broken(tmp_path, tiny_sd, path.name, **{"unified_prompt_embedding.weight": torch.zeros(16, 500)})
    elif case == "missing_block_tensor":
        _broken(tmp_path, tiny_sd, path.name, **{BLOCK + "ln_2.bias": None})
    elif case == "backbone_key_missing":
        _broken(tmp_path, tiny_sd, path.name, **{"visual.proj": None})
    elif case == "nan_prompt":
        _broken(tmp_path, tiny_sd, path.name, **{"visual.prompt_embeddings": torch.full((1, 4, 128), float("nan"))})
    with pytest.raises(UsageError, match=match) as e:
        load_official(path)
    assert str(path) in str(e.value)


def test_read_official_strips_prefixes(tmp_path, tiny_sd):
    path = write_released(tmp_path / "x.pth.tar", tiny_sd, released_prompts("linear", 4, 128, 64))
    sd = read_official(path)
    assert "visual.conv1.weight" in sd and "visual_prompt_embedding" in sd
    assert not any(k.startswith(("module.", "clip.")) for k in sd)


@pytest.fixture(scope="module")
def released_file(tmp_path_factory, tiny_sd):
    p = released_prompts("transformer", 4, 128, 64, T=4, seed=4)
    return write_released(tmp_path_factory.mktemp("released") / "ckpt.best.pth.tar", tiny_sd, p)


def test_cli_eval_with_official_prefix(released_file, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main(["eval", "--prompts", f"official:{released_file}", "--dataset", "synthetic",
               "--synthetic-split", "temporal", "--synthetic-eval-videos", "8", "--device", "cpu",
               "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    doc = json.loads(out.read_text())
    assert doc["method"] == "dgl-transformer" and doc["backbone"]["model"] == "synthetic-tiny"
    assert doc["backbone"]["pretrained"] == f"official:{released_file}"
    assert set(doc["results"]["temporal"]["raw"]) == {"t2v", "v2t"}


def test_cli_encode_search_with_official_prefix(released_file, tmp_path, capsys):
    from dgl_rs.data import write_synthetic_videos
    write_synthetic_videos(tmp_path / "v", split="temporal", num_videos=3, num_frames=4, image_size=64, seed=1)
    index = tmp_path / "index"
    assert main(["encode", str(tmp_path / "v"), "--prompts", f"official:{released_file}", "--out", str(index),
                 "--device", "cpu", "--no-progress"]) == 0
    meta = json.loads((index / "index.json").read_text())
    assert meta["pretrained"] == f"official:{released_file}" and meta["dgl"]["postfix"] == "after_padding"
    assert main(["search", str(index), "a red circle", "-k", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count(". ") >= 2


def test_convert_writes_prompts_and_backbone(released_file, tmp_path, capsys):
    out = tmp_path / "conv" / "dgl.safetensors"
    assert main(["convert", str(released_file), str(out)]) == 0
    assert (tmp_path / "conv" / "dgl.backbone.safetensors").is_file()
    assert json.loads((tmp_path / "conv" / "model.json").read_text())["model"] == "synthetic-tiny"
    converted, _, _ = dgl_rs.load_model(str(out))
    official = load_official(released_file)
    frames = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted.encode_video(frames), official.encode_video(frames), rtol=0, atol=0)
    assert converted.config == official.config
    assert main(["convert", str(released_file), str(out)]) == 2  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(released_file), str(out), "--overwrite"]) == 0


def test_cli_refuses_a_broken_official_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": {"module.clip.x": torch.zeros(1)}}, bad)
    assert main(["eval", "--prompts", f"official:{bad}", "--dataset", "synthetic", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dgl-rs eval: error:") and "not a released DGL checkpoint" in err[0]
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.safetensors")]) == 2


def test_cli_explain_with_official_prefix(released_file, tmp_path, capsys):
    from dgl_rs.data import write_synthetic_videos
    rec = write_synthetic_videos(tmp_path / "v", split="temporal", num_videos=1, num_frames=4, image_size=64)[0]
    out = tmp_path / "fig.png"
    assert main(["explain", rec.video_path, rec.captions[0], "--prompts", f"official:{released_file}",
                 "--out", str(out), "--device", "cpu"]) == 0, capsys.readouterr()
    assert out.read_bytes()[:4] == b"\x89PNG"
