"""Every method of Tables 1 and 3 (``dgl_rs.build_method``) and DGL's ablation switches:
gradients only where declared, equivalences that pin each one down, exact counts, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dgl_rs
from dgl_rs import DGL, METHODS, build_method, load_method

from test_model import CAPTIONS, frames_for, ref_text, ref_video, tiny_clip

open_clip = pytest.importorskip("open_clip")

#: What each method trains (parameter names; full-finetune: the whole CLIP).
DECLARED = {
    "zero-shot": set(),
    "vpt": {"generator.frame_prompts"},
    "upt": {"generator.table", "generator.block.", "generator.text_mlp."},
    "vop": {"generator.frame_prompts", "generator.text_prompts"},
    "dgl-linear": {"global_prompts", "generator.frame_prompts", "generator.pre.", "generator.post."},
    "dgl-transformer": {"global_prompts", "generator.table", "generator.block.", "generator.text_mlp."},
    "dgl-divided": {"global_prompts", "generator.frame_prompts", "generator.text_prompts"},
    "dgl": {"global_prompts", "generator.table", "generator.block.", "generator.text_mlp."},
    "full-finetune": {"clip."},
    "full-finetune-seqtransf": {"clip.", "temporal."},
    "visual-text-adapter": {"text_adapters.", "visual_adapters."},
    "video-text-adapter": {"text_adapters.", "visual_adapters."},
    "efficient-prompt": {"generator.text_prompts", "temporal."},
    "vop-f": {"generator.frame_prompts", "generator.text_prompts"},
    "vop-c": {"generator.frame_prompts", "generator.text_prompts", "context."},
    "vop-p": {"generator.frame_prompts", "generator.text_prompts"},
    "vop-fc": {"generator.frame_prompts", "generator.text_prompts", "context."},
    "vop-fp": {"generator.frame_prompts", "generator.text_prompts"},
}


def _declared(name: str, param: str) -> bool:
    return any(param == d or (d.endswith(".") and param.startswith(d)) for d in DECLARED[name])


def small(method, clip=None, **options):
    """``method`` on the tiny CLIP, with small prompt counts where the method takes them."""
    clip = clip if clip is not None else tiny_clip()
    spec = METHODS[method]
    defaults = dict(num_frame_prompts=2, num_text_prompts=(2, 2), context_length=12, num_global=2,
                    adapter_dim=8, context_dim=4)
    if method == "vpt" or not method.startswith("dgl"):
        defaults.pop("num_global")
    if spec.pinned.get("generator") is None and "generator" in spec.pinned:
        defaults.pop("num_frame_prompts"), defaults.pop("num_text_prompts")
    defaults = {k: v for k, v in defaults.items() if k in spec.cls.options() and k not in spec.pinned}
    return build_method(clip, method, num_frames=3, **{**defaults, **options})


def test_registry_lists_every_method_of_the_issue():
    assert set(METHODS) == set(DECLARED)


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_forward_backward_only_declared_parameters(name):
    model = small(name)
    assert model.method == name
    frames, tokens = frames_for(model.clip), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    trainable = dict(model.named_trainable_parameters())
    assert all(_declared(name, n) for n in trainable), sorted(trainable)
    for d in DECLARED[name]:  # every declared group is there
        assert any(n == d or (d.endswith(".") and n.startswith(d)) for n in trainable), d
    if name == "zero-shot":
        assert model.num_trainable() == 0
        return
    loss = dgl_rs.symmetric_infonce(model(frames, tokens))
    loss.backward()
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
    if not name.startswith("full-finetune"):
        assert all(p.grad is None and not p.requires_grad for p in model.clip.parameters())


def test_full_finetune_gets_attention_weight_gradients_from_the_fused_op():
    model = small("full-finetune")
    frames = frames_for(model.clip)
    model.encode_video(frames).sum().backward()
    blk = model.clip.visual.transformer.resblocks[0]
    assert isinstance(blk.attn, torch.nn.MultiheadAttention)  # never replaced: the fused op reads its weights
    assert blk.attn.in_proj_weight.grad is not None and blk.attn.in_proj_weight.grad.abs().sum() > 0
    # the same gradient as open_clip's own per-frame encoding (independent reference)
    ref_clip = tiny_clip()
    for p in ref_clip.parameters():
        p.requires_grad_(True)
    ref = F.normalize(ref_clip.encode_image(frames.flatten(0, 1)), dim=-1).reshape(2, 3, -1).mean(1)
    ref.sum().backward()
    torch.testing.assert_close(blk.attn.in_proj_weight.grad,
                               ref_clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad,
                               rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["zero-shot", "vpt", "vop"])
def test_meanp_methods_without_prompts_equal_mean_of_encode_image(name):
    """VPT and VoP with zero prompts are zero-shot meanP: the mean of open_clip's own
    normalised per-frame embeddings (and its own text encoder)."""
    options = {} if name == "zero-shot" else dict(num_frame_prompts=0)
    if name == "vop":
        options["num_text_prompts"] = (0, 0)
    model = small(name, **options)
    frames = frames_for(model.clip)
    tokens = dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    with torch.no_grad():
        video, text = model.encode_video(frames), model.encode_text(tokens)
        model.unpatch()
        ref = F.normalize(model.clip.encode_image(frames.flatten(0, 1)), dim=-1).reshape(2, 3, -1).mean(1)
        ref_t = model.clip.encode_text(open_clip.tokenize(CAPTIONS[:2], context_length=20))
    torch.testing.assert_close(video, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(text, ref_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["vpt", "vop", "upt"])
def test_prompt_methods_match_the_spec_reference(name):
    """Frames encoded alone with their prompts (G = 0), meanP; text prompts per the spec."""
    model = small(name)
    frames, tokens = frames_for(model.clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
    with torch.no_grad():
        text_p, frame_p = model.generate_prompts()
        empty = torch.zeros(0, model.clip.visual.transformer.width, dtype=torch.float64)
        ref = ref_video(model.clip, frames, empty, frame_p, model.num_frame_prompts, pool="frame_cls_mean")
        torch.testing.assert_close(model.encode_video(frames), ref, rtol=1e-9, atol=1e-10)
        n_pre, n_post = model.num_text_prompts
        if n_pre + n_post:
            torch.testing.assert_close(model.encode_text(tokens),
                                       ref_text(model.clip, tokens, text_p, n_pre, n_post, "before_eot"),
                                       rtol=1e-9, atol=1e-10)


def test_dgl_divided_with_dgl_prompts_equals_dgl():
    clip = tiny_clip()
    dgl = small("dgl-linear", clip)
    divided = small("dgl-divided", clip)
    with torch.no_grad():
        text_p, frame_p = dgl.generate_prompts()
        divided.global_prompts.copy_(dgl.global_prompts)
        divided.generator.text_prompts.copy_(text_p)
        divided.generator.frame_prompts.copy_(frame_p[:, 0])
        frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
        torch.testing.assert_close(divided.encode_video(frames), dgl.encode_video(frames), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(divided.encode_text(tokens), dgl.encode_text(tokens), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["dgl-transformer", "vop-fc"])
def test_prompt_gradients_match_the_spec_reference(name):
    """The prompt slots are written in place into each block's output: the gradients
    must be those of the out-of-place spec reference."""
    clip = tiny_clip(vision_layers=3, text_layers=3)
    model = small(name, clip)
    frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
    wv, wt = torch.randn(2, 24, dtype=torch.float64), torch.randn(3, 24, dtype=torch.float64)
    params = model.trainable_parameters()
    if name == "vop-fc":  # the context prompts depend on the hidden states: compare without them
        model.context = None
        params = model.trainable_parameters()
    got = torch.autograd.grad((model.encode_video(frames) * wv).sum() + (model.encode_text(tokens) * wt).sum(),
                              params, allow_unused=True)
    text_p, frame_p = model.generate_prompts()
    g = getattr(model, "global_prompts", None)
    g = g if g is not None else torch.zeros(0, 32, dtype=torch.float64)
    pool = "global" if model.num_global else "frame_cls_mean"
    ref = (ref_video(clip, frames, g, frame_p, 2, pool=pool) * wv).sum() + \
        (ref_text(clip, tokens, text_p, 2, 2, "before_eot") * wt).sum()
    want = torch.autograd.grad(ref, params, allow_unused=True)
    for p, a, e in zip(params, got, want):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("pool", ["global", "global_mean", "frame_cls_mean", "global_local_mean"])
def test_visual_output_options_match_direct_computation(pool):
    model = small("dgl-transformer", pool=pool)
    frames = frames_for(model.clip)
    with torch.no_grad():
        _, frame_p = model.generate_prompts()
        ref = ref_video(model.clip, frames, model.global_prompts, frame_p, 2, pool=pool)
        torch.testing.assert_close(model.encode_video(frames), ref, rtol=1e-9, atol=1e-10)


def test_prompt_depth_overwrites_only_the_first_k_layers():
    clip = tiny_clip(vision_layers=3, text_layers=3)
    model = small("dgl-linear", clip, prompt_depth=2)
    assert model.generator.frame_prompts.shape[0] == 2
    frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
    with torch.no_grad():
        text_p, frame_p = model.generate_prompts()
        ref = ref_video(clip, frames, model.global_prompts, frame_p, 2, depth=2)
        torch.testing.assert_close(model.encode_video(frames), ref, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(model.encode_text(tokens), ref_text(clip, tokens, text_p, 2, 2, "before_eot", depth=2),
                                   rtol=1e-9, atol=1e-10)
        assert not torch.allclose(model.encode_video(frames),
                                  ref_video(clip, frames, model.global_prompts, torch.cat([frame_p, frame_p[-1:]]), 2),
                                  atol=1e-6)  # layer 2 really keeps the hidden states
    with pytest.raises(ValueError, match="prompt_depth"):
        small("dgl-linear", clip, prompt_depth=0)


def test_dgl_linear_is_blind_to_frame_order_and_temporal_embedding_fixes_it():
    clip = tiny_clip()
    plain = small("dgl-linear", clip)
    frames = frames_for(clip)
    rev = frames.flip(1)
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_video(frames), plain.encode_video(rev), rtol=1e-9, atol=1e-10)
        timed = small("dgl-linear", clip, temporal_embedding=True)
        timed.load_prompt_state_dict({**plain.prompt_state_dict(),
                                      "frame_position": torch.zeros_like(timed.frame_position)})
        # zero at the start: the same model as without it
        torch.testing.assert_close(timed.encode_video(frames), plain.encode_video(frames), rtol=1e-10, atol=1e-10)
        timed.frame_position.normal_()
        assert not torch.allclose(timed.encode_video(frames), timed.encode_video(rev), atol=1e-6)
    assert timed.num_trainable() == plain.num_trainable() + 3 * clip.visual.transformer.width
    with pytest.raises(ValueError, match="frame positions"):
        timed.generate_prompts(num_frames=4)


def test_text_prompt_positions_and_linear_direction():
    clip = tiny_clip()
    for n_pre, n_post in [(4, 0), (8, 0), (4, 4), (0, 3)]:
        m = small("dgl-transformer", clip, num_text_prompts=(n_pre, n_post))
        text_p, _ = m.generate_prompts()
        assert text_p.shape[1] == n_pre + n_post
        tokens = dgl_rs.tokenize(CAPTIONS, context_length=12)
        with torch.no_grad():
            torch.testing.assert_close(m.encode_text(tokens), ref_text(clip, tokens, text_p, n_pre, n_post, "before_eot"),
                                       rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="num_text_prompts"):
        small("dgl-linear", clip, num_text_prompts=(4, 0))
    t2v = small("dgl-linear", clip, linear_direction="text_to_visual")
    text_p, frame_p = t2v.generate_prompts()
    assert text_p.shape == (2, 4, 16) and frame_p.shape == (2, 3, 2, 32)
    torch.testing.assert_close(text_p[:, :2], t2v.generator.text_prompts)  # the learned table is the prefix
    loss = dgl_rs.symmetric_infonce(t2v(frames_for(clip), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)))
    loss.backward()
    assert all(p.grad is not None for p in t2v.trainable_parameters())


@pytest.mark.parametrize("mode", ["local", "global"])
def test_attention_modes(mode):
    clip = tiny_clip()
    base = small("dgl-transformer", clip)
    other = small("dgl-transformer", clip, attention=mode)
    other.load_prompt_state_dict(base.prompt_state_dict())
    frames = frames_for(clip)
    with torch.no_grad():
        assert not torch.allclose(other.encode_video(frames), base.encode_video(frames), atol=1e-6)
    # with no global tokens, "local" is per-frame attention: the zero-shot baseline
    if mode == "local":
        zs = small("zero-shot", clip)
        loc = build_method(clip, "dgl-divided", num_frames=3, num_global=0, num_frame_prompts=0,
                           num_text_prompts=(0, 0), pool="frame_cls_mean", attention="local", context_length=12)
        with torch.no_grad():
            torch.testing.assert_close(loc.encode_video(frames), zs.encode_video(frames), rtol=1e-10, atol=1e-10)
    other.encode_video(frames).sum().backward()
    assert other.global_prompts.grad is not None


def test_vit_b32_counts():
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    counts = dgl_rs.factory.trainable_counts(clip, num_frames=12)
    assert counts["vpt"] == 12 * 20 * 768 == 184_320
    assert counts["dgl-linear"] == 827_392 and counts["dgl-transformer"] == 9_575_168
    assert counts["upt"] == 9_575_168 - 4 * 768
    assert counts["vop"] == 12 * 8 * 768 + 12 * 8 * 512
    assert counts["dgl-divided"] == 4 * 768 + 12 * 4 * 768 + 12 * 8 * 512
    assert counts["zero-shot"] == 0
    houlsby_v, houlsby_t = 2 * 768 * 368 + 368 + 768, 2 * 512 * 368 + 368 + 512
    assert counts["visual-text-adapter"] == 12 * (houlsby_v + houlsby_t)
    assert counts["video-text-adapter"] == 12 * (houlsby_v + 368 * 3 + 368 + houlsby_t)
    block = 4 * 512 * 512 + 4 * 512 + 2 * 2 * 512 + 2 * 4 * 512 * 512 + 4 * 512 + 512  # width 512, 8 heads
    assert counts["efficient-prompt"] == 16 * 512 + 12 * 512 + 2 * block
    assert counts["vop-f"] == 12 * 12 * 8 * 768 + 12 * 8 * 512
    assert counts["full-finetune"] == sum(p.numel() for p in clip.parameters())
    assert all(not p.requires_grad for p in clip.parameters())  # left frozen and unpatched
    assert isinstance(clip.visual.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)


def test_build_method_refuses_pinned_and_unknown_options():
    clip = tiny_clip()
    with pytest.raises(ValueError, match="fixes `generator`"):
        build_method(clip, "vpt", generator="linear")
    with pytest.raises(TypeError, match="unknown option"):  # VPT is not DGL: no global prompts
        build_method(clip, "vpt", num_global=4)
    with pytest.raises(ValueError, match="`method` must be one of"):
        build_method(clip, "vpt-deep")
    with pytest.raises(TypeError, match="num_global"):
        build_method(clip, "dgl-linear", num_global=True, context_length=12)
    with pytest.raises(TypeError, match="num_text_prompts"):
        build_method(clip, "dgl-transformer", num_text_prompts="44", context_length=12)


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_save_load_round_trip_any_method(name, tmp_path):
    clip = tiny_clip()
    model = small(name, clip)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "m.safetensors"
    model.save_prompts(str(path))
    first = path.read_bytes()
    model.save_prompts(str(path))
    assert path.read_bytes() == first  # byte-reproducible
    frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
    with torch.no_grad():
        want_v, want_t = model.encode_video(frames), model.encode_text(tokens)
    fresh = tiny_clip()
    loaded = load_method(path, fresh)
    assert type(loaded) is type(model) and loaded.method == name and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(frames), want_v, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(loaded.encode_text(tokens), want_t, rtol=1e-10, atol=1e-10)


def test_two_models_on_one_clip_each_compute_their_own():
    """Issue 9.1: a second model on an already patched CLIP (both orders), and unpatch."""
    clip = tiny_clip()
    frames = frames_for(clip, t=2)
    ref_clip = tiny_clip()
    with torch.no_grad():
        want = build_method(ref_clip, "zero-shot", num_frames=2, context_length=12).encode_video(frames)
        dgl = build_method(clip, "dgl-linear", num_frames=2, num_global=4, context_length=12)
        dgl_out = dgl.encode_video(frames)
        zs = build_method(clip, "zero-shot", num_frames=2, context_length=12)
        torch.testing.assert_close(zs.encode_video(frames), want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(dgl.encode_video(frames), dgl_out, rtol=1e-10, atol=1e-10)
        zs.unpatch()
        torch.testing.assert_close(dgl.encode_video(frames), dgl_out, rtol=1e-10, atol=1e-10)
        dgl.unpatch()
        assert all(isinstance(b.attn, torch.nn.MultiheadAttention) for b in clip.visual.transformer.resblocks)


def test_prompt_file_records_method_and_refuses_nan(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = small("vop")
    path = tmp_path / "p.safetensors"
    model.save_prompts(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["method"] == "vop" and json.loads(meta["config"])["generator"] == "independent"
    state["generator.frame_prompts"][0, 0, 0] = float("nan")
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ValueError, match="NaN"):
        load_method(path, tiny_clip())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="p.safetensors"):
        load_method(path, tiny_clip())


def test_any_directly_built_dgl_saves_and_loads(tmp_path):
    clip = tiny_clip()
    m = DGL(clip, num_frames=3, generator="independent", num_global=0, num_frame_prompts=2, num_text_prompts=(1, 0),
            pool="frame_cls_mean", context_length=12)
    assert m.method == "dgl-divided"  # the registered DGL method fixing generator="independent"
    m.save_prompts(str(tmp_path / "p.safetensors"))
    again = load_method(tmp_path / "p.safetensors", tiny_clip())
    assert again.config == m.config and again.method == "dgl-divided"
    linear = DGL(clip, num_frames=3, generator="linear", num_global=0, num_frame_prompts=2, num_text_prompts=(2, 2),
                 pool="frame_cls_mean", context_length=12)
    assert linear.method == "dgl-linear"
    assert DGL(clip, num_frames=3, generator=None, num_global=1, context_length=12).method == "dgl"
    with pytest.raises(ValueError, match="no registered method"):  # a base class with no preset of its own
        dgl_rs.methods.TemporalPooling(clip, num_frames=3, context_length=12).method


def test_dgl_keeps_its_public_constructor():
    """``DGL(clip, generator="linear", ...)`` builds exactly what ``build_method(clip,
    "dgl-linear", ...)`` builds: the same configuration, the same trainable tensors (from
    the same seed) and the same embeddings."""
    clip = tiny_clip()
    options = dict(num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2), context_length=12)
    torch.manual_seed(0)
    m = DGL(clip, num_frames=3, generator="linear", **options)
    torch.manual_seed(0)
    want = build_method(clip, "dgl-linear", num_frames=3, **options)
    assert m.method == "dgl-linear" and type(m) is type(want) is DGL
    assert m.config == want.config
    assert {k: m.config[k] for k in ("num_frames", "generator", "num_global", "num_text_prompts", "pool",
                                     "attention")} == {"num_frames": 3, "generator": "linear", "num_global": 2,
                                                       "num_text_prompts": [2, 2], "pool": "global",
                                                       "attention": "global_local"}
    got, expected = dict(m.named_trainable_parameters()), dict(want.named_trainable_parameters())
    assert {k: tuple(v.shape) for k, v in got.items()} == {
        "global_prompts": (2, 32), "generator.frame_prompts": (2, 2, 32),  # 2 blocks x 2 prompts x width 32
        "generator.pre.weight": (16, 32), "generator.pre.bias": (16,),
        "generator.post.weight": (16, 32), "generator.post.bias": (16,)}
    assert m.num_trainable() == 2 * 32 + 2 * 2 * 32 + 2 * (16 * 32 + 16)
    assert all(torch.equal(got[k], expected[k]) for k in got)
    frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    with torch.no_grad():
        assert torch.equal(m.encode_video(frames), want.encode_video(frames))
        assert torch.equal(m.encode_text(tokens), want.encode_text(tokens))


# ---- the rest of Table 1 (issue 12) -------------------------------------------------------------

@pytest.mark.parametrize("name", ["visual-text-adapter", "video-text-adapter"])
def test_adapters_start_as_zero_shot_meanp(name):
    clip = tiny_clip()
    model = small(name, clip)
    zs = small("zero-shot", clip)
    frames, tokens = frames_for(clip), dgl_rs.tokenize(CAPTIONS, context_length=12)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(frames), zs.encode_video(frames), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.encode_text(tokens), zs.encode_text(tokens), rtol=1e-10, atol=1e-10)
        for a in list(model.visual_adapters) + list(model.text_adapters):
            a.up.weight.normal_()
        assert not torch.allclose(model.encode_video(frames), zs.encode_video(frames), atol=1e-6)
        assert not torch.allclose(model.encode_text(tokens), zs.encode_text(tokens), atol=1e-6)


def test_st_adapter_sees_the_neighbouring_frames_only():
    from dgl_rs.nn.adapters import STAdapter

    torch.manual_seed(0)
    st = STAdapter(8, 4).double()
    torch.nn.init.normal_(st.up.weight)
    x = torch.randn(2, 6, 3, 3, 8, dtype=torch.float64)
    y = st(x)
    x2 = x.clone()
    x2[:, 2, 1, 1] += 1.0  # one patch of frame 2
    changed = (st(x2) - y).abs().amax(dim=-1) > 1e-12  # (B, T, h, w)
    assert changed[:, 1:4, 1, 1].all() and changed.sum() == 2 * 3  # frames 1, 2, 3 at that patch only


def test_vop_f_with_one_set_of_prompts_equals_vop_and_vop_p_without_exchange_equals_vop():
    clip = tiny_clip(vision_layers=4)
    vop, vopf = small("vop", clip), small("vop-f", clip)
    vopp = small("vop-p", clip)
    assert vopp.exchange_layers == [2, 3]  # the upper half of 4 blocks
    off = build_method(clip, "vop-p", num_frames=3, num_frame_prompts=2, num_text_prompts=(2, 2),
                       context_length=12, exchange_layers=[])
    with torch.no_grad():
        vopf.generator.frame_prompts.copy_(vop.generator.frame_prompts.unsqueeze(1).expand(-1, 3, -1, -1))
        vopf.generator.text_prompts.copy_(vop.generator.text_prompts)
        for m in (vopp, off):
            m.load_prompt_state_dict(vop.prompt_state_dict())
        frames = frames_for(clip)
        want = vop.encode_video(frames)
        torch.testing.assert_close(vopf.encode_video(frames), want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(off.encode_video(frames), want, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(vopp.encode_video(frames), want, atol=1e-6)  # the exchange does something


def test_vop_p_exchange_mask():
    from dgl_rs.methods.vop import exchange_mask

    m = exchange_mask(t=2, L=4, nf=2, g=0, device="cpu")  # frame: [CLS, p, p, patch]
    for q in range(4):  # every token of frame 0: its own frame and frame 1's prompts only
        assert m[q, :4].all() and m[q, 5:7].all() and not m[q, 4] and not m[q, 7]


def test_vop_c_prompts_depend_on_the_video():
    clip = tiny_clip()
    model = small("vop-c", clip)
    with torch.no_grad():
        for c in model.context:
            c.up.weight.normal_()
        frames = frames_for(clip)
        single = torch.stack([model.encode_video(frames[i:i + 1])[0] for i in range(2)])
        torch.testing.assert_close(model.encode_video(frames), single, rtol=1e-10, atol=1e-10)  # per video
        other = frames.clone()
        other[:, 2] = torch.randn_like(other[:, 2])
        # frame 0's prompts read the whole video: changing frame 2 changes frame 0's embedding
        model._pool_frames = lambda emb: emb[:, 0]  # frame 0's own embedding
        assert not torch.allclose(model.encode_video(other), model.encode_video(frames), atol=1e-6)
        plain = small("vop", clip)
        plain.load_prompt_state_dict({k: v for k, v in model.prompt_state_dict().items() if not k.startswith("context")})
        plain._pool_frames = lambda emb: emb[:, 0]
        torch.testing.assert_close(plain.encode_video(other), plain.encode_video(frames), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["efficient-prompt", "full-finetune-seqtransf"])
def test_temporal_heads_respect_frame_order(name):
    clip = tiny_clip()
    model = small(name, clip)
    meanp = small("zero-shot", clip)
    frames = frames_for(clip)
    perm = frames[:, [2, 0, 1]]
    with torch.no_grad():
        torch.testing.assert_close(meanp.encode_video(perm), meanp.encode_video(frames), rtol=1e-10, atol=1e-10)
        assert not torch.allclose(model.encode_video(perm), model.encode_video(frames), atol=1e-6)
    assert len(model.temporal.blocks) == (2 if name == "efficient-prompt" else 4)


def test_seqtransf_starts_from_the_text_tower():
    """CLIP4Clip: the temporal blocks are copies of the text tower's first blocks (when the
    text width is the embedding width, as in ViT-B/32), the frame positions its first
    positional embeddings."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    clip = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
                text_cfg=CLIPTextCfg(context_length=20, vocab_size=49408, width=16, heads=2, layers=4),
                quick_gelu=True).double()
    model = build_method(clip, "full-finetune-seqtransf", num_frames=3, context_length=12)
    for blk, src in zip(model.temporal.blocks, clip.transformer.resblocks):
        torch.testing.assert_close(blk.attn.in_proj_weight, src.attn.in_proj_weight)
        torch.testing.assert_close(blk.mlp.c_proj.weight, src.mlp.c_proj.weight)
        assert blk.attn.in_proj_weight is not src.attn.in_proj_weight  # a copy, trained on its own
    torch.testing.assert_close(model.temporal.position, clip.positional_embedding[:3])


def test_full_finetune_trains_the_backbone_at_clip4clips_lower_lr():
    """CLIP4Clip's recipe: the new temporal transformer at --lr (1e-4), the pretrained CLIP
    at --lr x backbone_lr_scale (1e-3, so 1e-7). One AdamW step from zero moments moves
    every element by ~lr (|m / sqrt(v)| = 1), so the medians of |change| are the lrs."""
    from dgl_rs.train.optim import make_optimizer
    from dgl_rs.train.params import parse_args
    from dgl_rs.train.scheduler import WarmupCosine

    model = small("full-finetune-seqtransf")
    assert model.config["backbone_lr_scale"] == 1e-3
    cfg = parse_args(["--dataset", "synthetic", "--method", "full-finetune-seqtransf", "--wd", "0"])
    assert cfg.lr == 1e-4
    opt = make_optimizer(model, cfg)
    WarmupCosine(opt, cfg.lr, total_steps=100, warmup=0).step()
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1e-7, 1e-4])
    before = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    model(frames_for(model.clip, 2, 3), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)).sum().backward()
    opt.step()

    def median_step(prefix):  # over the elements whose gradient dwarfs AdamW's eps (1e-6)
        return torch.cat([(p.detach() - before[n]).abs()[p.grad.abs() > 1e-4] for n, p in
                          model.named_trainable_parameters() if n.startswith(prefix)]).median().item()

    assert median_step("clip.") == pytest.approx(1e-7, rel=0.05)
    assert median_step("temporal.") == pytest.approx(1e-4, rel=0.05)
    for bad, error in ((0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), (True, TypeError),
                       ("1e-3", TypeError)):
        with pytest.raises(error, match="backbone_lr_scale"):
            small("full-finetune-seqtransf", backbone_lr_scale=bad)


# ---- the command line: --method end to end ---------------------------------------------------

def _train_argv(tmp_path, method, *extra):
    return ["train", "--dataset", "synthetic", "--method", method, "--num-frames", "2", "--batch-size", "8",
            "--epochs", "1", "--synthetic-videos", "16", "--synthetic-eval-videos", "8",
            "--synthetic-split", "static", "--output-dir", str(tmp_path / "runs"), "--name", method,
            "--workers", "0", "--device", "cpu", "--no-progress", "--no-tensorboard", *extra]


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"zero-shot"}))
def test_cli_train_then_eval_every_method(name, tmp_path, capsys):
    from dgl_rs.cli import main

    assert main(_train_argv(tmp_path, name)) == 0
    run = tmp_path / "runs" / name
    res = json.loads((run / "results.json").read_text())
    assert res["method"] == name and res["trainable"] > 0
    assert json.loads((run / "model.json").read_text())["method"] == name
    capsys.readouterr()
    assert main(["eval", "--prompts", str(run), "--dataset", "synthetic", "--synthetic-split", "static",
                 "--synthetic-eval-videos", "8", "--device", "cpu", "--no-progress"]) == 0
    out = json.loads((run / "eval-synthetic.json").read_text())
    assert out["method"] == name
    # the same numbers as the run's own evaluation: the file rebuilds the same model
    assert out["results"]["static"]["raw"] == res["results"]["static"]["raw"]


def test_cli_method_flags(tmp_path, capsys):
    from dgl_rs.cli import main

    assert main(_train_argv(tmp_path, "zero-shot")) == 2
    assert "no trainable parameters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_train_argv(tmp_path, "vpt", "--generator", "linear"))
    assert "--method vpt uses generator" in capsys.readouterr().err
    assert main(_train_argv(tmp_path, "vpt", "--num-global", "2")) == 2
    assert "--num-global is not an option of --method vpt" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "vpt").exists()  # refused before the run folder exists
    assert main(_train_argv(tmp_path, "dgl-linear", "--temporal-embedding", "--pool", "global_mean",
                            "--attention", "local", "--prompt-depth", "1", "--name", "ablation")) == 0
    cfg = json.loads((tmp_path / "runs" / "ablation" / "model.json").read_text())["dgl"]
    assert (cfg["temporal_embedding"], cfg["pool"], cfg["attention"], cfg["prompt_depth"]) == \
        (True, "global_mean", "local", 1)
    assert main(["methods", "--model", "synthetic-tiny", "--num-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS) and "0.18" in out


@pytest.mark.parametrize("name", ["vpt", "full-finetune", "video-text-adapter", "vop-fc"])
def test_cli_train_method_on_a_folder_of_real_videos(name, tmp_path):
    from dgl_rs.cli import main
    from dgl_rs.data import write_synthetic_videos

    data = tmp_path / "data"
    write_synthetic_videos(data, split="static", num_videos=6, num_frames=4, seed=5)
    rows = (data / "captions.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    (data / "test.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--dataset", "folder", "--data-root", str(data), "--method", name,
                 "--model", "synthetic-tiny", "--pretrained", "none", "--num-frames", "2", "--batch-size", "3",
                 "--epochs", "1", "--output-dir", str(tmp_path / "runs"), "--name", "f", "--workers", "0",
                 "--device", "cpu", "--no-progress", "--no-tensorboard"]) == 0
    res = json.loads((tmp_path / "runs" / "f" / "results.json").read_text())
    assert res["method"] == name and res["results"]["test"]["num_videos"] == 6


def test_quick_gelu_mlp_refactoring_is_exact_with_all_gradients():
    """patch.run_mlp folds QuickGELU's 1.702 into the GEMMs: same values and gradients
    (input and every weight) as open_clip's own MLP, float64."""
    from dgl_rs.backbone import openclip as patch

    clip = tiny_clip()
    mlp = clip.visual.transformer.resblocks[0].mlp
    assert patch._is_quick_gelu_mlp(mlp)
    for p in mlp.parameters():
        p.requires_grad_(True)
    x = torch.randn(2, 5, 32, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 32, dtype=torch.float64)
    leaves = [x, *mlp.parameters()]
    got = torch.autograd.grad(patch.run_mlp(mlp, x), leaves, g)
    want = torch.autograd.grad(mlp(x), leaves, g)
    torch.testing.assert_close(patch.run_mlp(mlp, x), mlp(x), rtol=1e-12, atol=1e-13)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_benchmark_json_has_every_method_and_column(tmp_path, capsys):
    """`dgl-rs benchmark` (the demo's machinery) on a fast configuration: one table, JSON,
    Markdown and PNG, every requested method with every column."""
    from dgl_rs.cli import main
    from dgl_rs.experiments.entries import ENTRIES

    argv = ["benchmark", "--methods", "zero-shot", "vpt", "dgl-linear+temporal", "--videos", "8",
            "--eval-videos", "8", "--epochs", "1", "--batch-size", "8", "--num-frames", "2",
            "--output-dir", str(tmp_path), "--no-progress", "--seeds", "0", "1", "--lr-factors", "1", "0.5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    path = Path(out.strip().splitlines()[-1].split("results: ")[1])
    doc = json.loads(path.read_text())
    assert list(doc["methods"]) == ["zero-shot", "vpt", "dgl-linear+temporal"]
    for name, e in doc["methods"].items():
        assert {"trainable", "step_s", "peak_mib", "reversal", "static", "temporal"} <= set(e)
        for split in ("static", "temporal"):
            for d in ("t2v", "v2t"):
                assert set(e[split][d]) == {"R@1", "R@5", "R@10", "MnR"}
        assert len(doc["runs"][name]) == 2  # both seeds kept
    assert doc["methods"]["vpt"]["step_s"] > 0 and doc["methods"]["zero-shot"]["step_s"] is None
    # the lr search: both factors tried with seed 0, the best validation score chosen,
    # and every seed of the method trained with the chosen lr
    assert set(doc["lr_search"]) == {"vpt", "dgl-linear+temporal"}
    for name, record in doc["lr_search"].items():
        base = ENTRIES[name][2]
        assert [t["lr"] for t in record["tried"]] == [base, pytest.approx(base / 2)]
        best = max(record["tried"], key=lambda t: t["val_t2v_R@1"])
        assert record["chosen_lr"] == best["lr"] == doc["methods"][name]["lr"]
        assert [r["lr"] for r in doc["runs"][name]] == [best["lr"]] * 2
        assert all((path.parent / t["run"] / "prompts.safetensors").is_file() for t in record["tried"])
    assert doc["methods"]["zero-shot"]["lr"] is None
    # reversal per kind of temporal caption; mean pooling ties every pair: exactly 50
    zero_shot = doc["methods"]["zero-shot"]
    assert set(zero_shot["reversal_by_kind"]) == {"motion", "order", "colour"}
    assert zero_shot["reversal"] == 50.0 and set(zero_shot["reversal_by_kind"].values()) == {50.0}
    assert (path.parent / "benchmark.md").read_text().count("\n") == 5
    assert (path.parent / "benchmark.png").stat().st_size > 1000
    assert "| dgl-linear+temporal |" in out
    with pytest.raises(SystemExit):
        main(["benchmark", "--methods", "nope"])
    with pytest.raises(SystemExit):
        main(["benchmark", "--lr-factors", "0"])


def test_global_prompts_can_start_as_the_class_token():
    from dgl_rs.backbone import openclip as patch

    clip = tiny_clip()
    model = small("dgl-transformer", clip, global_init="cls")
    cls = patch.Backbone(clip).class_token()
    manual = F.layer_norm(clip.visual.class_embedding + clip.visual.positional_embedding[0], (32,),
                          clip.visual.ln_pre.weight, clip.visual.ln_pre.bias)
    torch.testing.assert_close(cls, manual)
    assert model.global_prompts.shape == (2, 32)
    from dgl_rs.nn.prompts import vpt_bound

    assert (model.global_prompts - cls).abs().max() <= 0.1 * vpt_bound(8, 32) + 1e-12  # the class token + small noise
    assert not torch.equal(model.global_prompts[0], model.global_prompts[1])  # not interchangeable
    assert model.config["global_init"] == "cls"
    with pytest.raises(ValueError, match="global_init"):
        small("dgl-transformer", clip, global_init="zeros")
