"""The DGL model: prompt generators, patched towers against a spec reference, counts, save/load, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

import dgl_rs
from dgl_rs import DGL, LinearPromptGenerator, TransformerPromptGenerator

from references import global_local_attention_spec, mha_heads

open_clip = pytest.importorskip("open_clip")


def tiny_clip(dtype=torch.float64, vision_layers=2, text_layers=2):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=24,
        vision_cfg=CLIPVisionCfg(layers=vision_layers, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=20, vocab_size=49408, width=16, heads=2, layers=text_layers),
        quick_gelu=True,
    )
    return clip.to(dtype).eval()


CAPTIONS = ["a red circle moves left", "a blue square", "two green triangles appear then vanish quickly"]


def frames_for(clip, b=2, t=3, dtype=torch.float64):
    s = clip.visual.image_size
    s = s[0] if isinstance(s, (tuple, list)) else s
    return torch.randn(b, t, 3, s, s, dtype=dtype)


def tiny_step(method, options, dtype=torch.float64, **build):
    """``(model, frames, tokens)`` of ``method`` on the tiny CLIP, T=3, context 12: one
    training step's inputs (``build``: more keywords of ``build_method``)."""
    clip = tiny_clip(dtype)
    torch.manual_seed(0)
    model = dgl_rs.build_method(clip, method, num_frames=3, context_length=12, **build, **options)
    return model, frames_for(clip, dtype=dtype), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)


def step_loss(model, frames, tokens):
    return dgl_rs.symmetric_infonce(model(frames, tokens))


# ---- prompt generators (Rust) vs their plain-PyTorch math -------------------------------

@pytest.mark.parametrize("gen", ["linear", "transformer"])
def test_generators_match_plain_pytorch_with_gradients(gen):
    torch.manual_seed(1)
    if gen == "linear":
        m = LinearPromptGenerator(3, 2, 16, 8, 0.1).double()
    else:
        m = TransformerPromptGenerator(3, 4, 2, (2, 3), 16, 8, heads=4).double()
    text, frames = m(4)
    rtext, rframes = m.reference(4)
    torch.testing.assert_close(text, rtext, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(frames, rframes, rtol=1e-10, atol=1e-10)
    gt, gf = torch.randn_like(text), torch.randn_like(frames)
    params = list(m.parameters())
    got = torch.autograd.grad((text * gt).sum() + (frames * gf).sum(), params)
    exp = torch.autograd.grad((rtext * gt).sum() + (rframes * gf).sum(), params)
    for p, a, e in zip(params, got, exp):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_generator_gradcheck_float64():
    torch.manual_seed(2)
    m = TransformerPromptGenerator(2, 2, 1, (1, 1), 8, 4, heads=2).double()
    table = m.table.detach().clone().requires_grad_(True)

    def f(tab):
        mlp = [m.text_mlp[0].weight, m.text_mlp[0].bias, m.text_mlp[2].weight, m.text_mlp[2].bias]
        t, fr = dgl_rs._native.transformer_prompts(tab, m.block.tensors(), mlp, (2, 2, 2), 2)
        return t, fr

    assert torch.autograd.gradcheck(f, (table,), eps=1e-6, atol=1e-7)


def test_frame_prompts_differ_per_frame_for_transformer_and_not_for_linear():
    clip = tiny_clip()
    tr = DGL(clip, num_frames=3, generator="transformer", num_frame_prompts=2, num_text_prompts=(2, 2), context_length=12)
    _, f = tr.generate_prompts()
    assert f.shape == (2, 3, 2, 32)
    assert not torch.allclose(f[:, 0], f[:, 1])
    tr.unpatch()
    lin = DGL(clip, num_frames=3, generator="linear", num_frame_prompts=2, num_text_prompts=(2, 2), context_length=12)
    _, f = lin.generate_prompts()
    assert torch.equal(f[:, 0], f[:, 1]) and torch.equal(f[:, 1], f[:, 2])


# ---- exact parameter counts ---------------------------------------------------------------

@pytest.mark.parametrize("gen,count", [("linear", 827_392), ("transformer", 9_575_168)])
def test_vit_b32_trainable_counts(gen, count):
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    model = DGL(clip, num_frames=12, generator=gen)
    assert model.num_trainable() == count
    assert all(not p.requires_grad for p in clip.parameters())
    assert not clip.logit_scale.requires_grad
    assert count / sum(p.numel() for p in clip.parameters()) < 0.08


# ---- equivalences with open_clip -------------------------------------------------------------

def test_text_without_prompts_equals_open_clip():
    clip = tiny_clip()
    model = DGL(clip, num_frames=2, generator=None, num_global=0, pool="frame_cls_mean", context_length=12)
    tokens12 = dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    tokens_full = open_clip.tokenize(CAPTIONS[:2], context_length=20)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens12), clip.encode_text(tokens_full), rtol=1e-10, atol=1e-10)


def test_video_mean_pooling_equals_mean_of_encode_image():
    clip = tiny_clip()
    model = DGL(clip, num_frames=3, generator=None, num_global=0, pool="frame_cls_mean", context_length=12)
    frames = frames_for(clip, b=2, t=3)
    with torch.no_grad():
        got = model.encode_video(frames)
        model.unpatch()
        per_frame = F.normalize(clip.encode_image(frames.flatten(0, 1)), dim=-1).reshape(2, 3, -1)
    torch.testing.assert_close(got, per_frame.mean(1), rtol=1e-10, atol=1e-10)


def test_unpatch_restores_original_outputs_and_keys():
    clip = tiny_clip()
    keys = set(clip.state_dict())
    images = frames_for(clip, b=1, t=2).flatten(0, 1)
    with torch.no_grad():
        before = clip.encode_image(images)
    model = DGL(clip, num_frames=2, generator="linear", num_frame_prompts=2, num_text_prompts=(2, 2), context_length=12)
    assert {k[len("clip."):] for k in model.state_dict() if k.startswith("clip.")} == keys
    model.unpatch()
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), before, rtol=0, atol=0)
    assert set(clip.state_dict()) == keys


# ---- the whole patched forward against a reference written from the spec ----------------------

def ref_block(blk, x, attn_fn):
    h = F.layer_norm(x, (x.shape[-1],), blk.ln_1.weight, blk.ln_1.bias, 1e-5)
    x = x + attn_fn(h)
    h = F.layer_norm(x, (x.shape[-1],), blk.ln_2.weight, blk.ln_2.bias, 1e-5)
    h = F.linear(h, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)


def ref_pool(v, x, g, T, L, pool):
    """The video embedding from the last hidden states ``x`` (1, S, D) (Table 3a)."""
    def emb(tok):
        return F.layer_norm(tok, (tok.shape[-1],), v.ln_post.weight, v.ln_post.bias, 1e-5) @ v.proj

    if pool == "global":
        return emb(x[0, 0])
    toks = []
    if pool in ("global_mean", "global_local_mean"):
        toks += [x[0, j] for j in range(g)]
    if pool in ("frame_cls_mean", "global_local_mean"):
        toks += [x[0, g + t * L] for t in range(T)]
    return torch.stack([F.normalize(emb(tok), dim=-1) for tok in toks]).mean(0)


def ref_video(clip, frames, G, frame_prompts, nf, pool="global", depth=None):
    """DGL-SPEC section 2, one video at a time (``depth``: prompts overwritten in the
    first ``depth`` layers only)."""
    v = clip.visual
    outs = []
    for video in frames:
        seqs = []
        for t, img in enumerate(video):
            e = v.conv1(img.unsqueeze(0)).flatten(2).transpose(1, 2)[0]  # (P, D)
            e = torch.cat([v.class_embedding.unsqueeze(0), e]) + v.positional_embedding
            e = F.layer_norm(e, (e.shape[-1],), v.ln_pre.weight, v.ln_pre.bias, 1e-5)
            seqs.append(torch.cat([e[:1], frame_prompts[0, t], e[1:]]))  # [CLS, prompts, patches]
        L = seqs[0].shape[0]
        x = torch.cat([G] + seqs).unsqueeze(0)
        g, T = G.shape[0], len(seqs)
        for i, blk in enumerate(v.transformer.resblocks):
            if 0 < i < (depth or len(v.transformer.resblocks)):
                for t in range(T):
                    s0 = g + t * L + 1
                    x = torch.cat([x[:, :s0], frame_prompts[i, t].unsqueeze(0), x[:, s0 + nf:]], dim=1)
            a = blk.attn
            x = ref_block(blk, x, lambda h: global_local_attention_spec(
                h, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias, a.num_heads, g, T))
        outs.append(ref_pool(v, x, g, T, L, pool))
    return torch.stack(outs)


def ref_text(clip, tokens, text_prompts, n_pre, n_post, postfix, depth=None):
    """DGL-SPEC section 4, one caption at a time (``depth``: prompts overwritten in the
    first ``depth`` layers only)."""
    outs = []
    for row in tokens:
        c = row.shape[0]
        e = int(row.argmax())
        emb = clip.token_embedding(row) + clip.positional_embedding[:c]

        def layout(i):
            pre, post = text_prompts[i, :n_pre], text_prompts[i, n_pre:]
            if postfix == "before_eot":
                return [emb[:1], pre, emb[1:e], post, emb[e:]], 1, e + n_pre
            return [emb[:1], pre, emb[1:], post], 1, c + n_pre

        parts, pre_at, post_at = layout(0)
        x = torch.cat(parts).unsqueeze(0)
        s = x.shape[1]
        mask = torch.triu(torch.full((s, s), float("-inf"), dtype=x.dtype), 1)
        for i, blk in enumerate(clip.transformer.resblocks):
            if 0 < i < (depth or len(clip.transformer.resblocks)):
                x = x.clone()
                x[0, pre_at:pre_at + n_pre] = text_prompts[i, :n_pre]
                x[0, post_at:post_at + n_post] = text_prompts[i, n_pre:]
            a = blk.attn

            def attn(h, a=a):
                q, k, v = F.linear(h, a.in_proj_weight, a.in_proj_bias).split(h.shape[-1], -1)
                hd = h.shape[-1] // a.num_heads
                sp = lambda t: t.reshape(1, s, a.num_heads, hd).transpose(1, 2)  # noqa: E731
                w = torch.softmax(sp(q) @ sp(k).transpose(-2, -1) / math.sqrt(hd) + mask, -1)
                return F.linear((w @ sp(v)).transpose(1, 2).reshape(1, s, -1), a.out_proj.weight, a.out_proj.bias)

            x = ref_block(blk, x, attn)
        eot = e + n_pre + (n_post if postfix == "before_eot" else 0)
        pooled = F.layer_norm(x[0, eot], (x.shape[-1],), clip.ln_final.weight, clip.ln_final.bias, 1e-5)
        outs.append(pooled @ clip.text_projection)
    return torch.stack(outs)


@pytest.mark.parametrize("gen", ["linear", "transformer"])
@pytest.mark.parametrize("postfix", ["before_eot", "after_padding"])
def test_whole_forward_matches_spec_reference(gen, postfix):
    clip = tiny_clip()
    nf = 2
    model = DGL(clip, num_frames=3, generator=gen, num_global=2, num_frame_prompts=nf, num_text_prompts=(nf, nf),
                postfix=postfix, context_length=12)
    frames = frames_for(clip, b=2, t=3)
    tokens = dgl_rs.tokenize(CAPTIONS, context_length=12)
    with torch.no_grad():
        text_p, frame_p = model.generate_prompts()
        torch.testing.assert_close(model.encode_video(frames), ref_video(clip, frames, model.global_prompts, frame_p, nf),
                                   rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(model.encode_text(tokens), ref_text(clip, tokens, text_p, nf, nf, postfix),
                                   rtol=1e-9, atol=1e-10)


def test_towers_of_different_depth():
    clip = tiny_clip(vision_layers=3, text_layers=2)
    model = DGL(clip, num_frames=2, generator="linear", num_global=1, num_frame_prompts=1, num_text_prompts=(1, 1),
                context_length=12)
    text_p, frame_p = model.generate_prompts()
    assert text_p.shape[0] == frame_p.shape[0] == 3
    logits = model(frames_for(clip, b=2, t=2), dgl_rs.tokenize(CAPTIONS[:2], context_length=12))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


# ---- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gen", ["linear", "transformer"])
def test_gradients_reach_prompts_and_not_backbone(gen):
    clip = tiny_clip()
    model = DGL(clip, num_frames=2, generator=gen, num_global=2, num_frame_prompts=2, num_text_prompts=(2, 2),
                context_length=12)
    loss = dgl_rs.symmetric_infonce(model(frames_for(clip, b=3, t=2), dgl_rs.tokenize(CAPTIONS, context_length=12)))
    loss.backward()
    for name, p in model.named_trainable_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in clip.parameters())


@pytest.mark.parametrize("gen", ["linear", "transformer"])
def test_after_padding_postfix_gets_zero_gradient(gen):
    clip = tiny_clip()
    model = DGL(clip, num_frames=2, generator=gen, num_global=1, num_frame_prompts=2, num_text_prompts=(2, 2),
                postfix="after_padding", context_length=12)
    tokens = dgl_rs.tokenize(CAPTIONS, context_length=12)
    text_p, _ = model.generate_prompts()
    text_p.retain_grad()
    model.encode_text(tokens, prompts=(text_p, None)).sum().backward()
    assert text_p.grad[:, 2:].abs().max() == 0  # postfix slots: EOT never sees them
    assert text_p.grad[:, :2].abs().max() > 0
    if gen == "linear":
        post = model.generator.post
        assert post.weight.grad.abs().max() == 0 and post.bias.grad.abs().max() == 0


# ---- save / load ------------------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    clip = tiny_clip()
    model = DGL(clip, num_frames=2, generator="transformer", num_global=2, num_frame_prompts=2,
                num_text_prompts=(1, 2), context_length=12)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "prompts.safetensors"
    model.save_prompts(str(path))
    frames, tokens = frames_for(clip, b=2, t=2), dgl_rs.tokenize(CAPTIONS[:2], context_length=12)
    with torch.no_grad():
        expect = model(frames, tokens)
    model.unpatch()
    fresh = tiny_clip()
    loaded = DGL.load_prompts(str(path), fresh)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames, tokens), expect, rtol=0, atol=0)
    # Only the prompts are stored: float64 values plus a small header, nothing of the backbone.
    prompt_bytes = 8 * model.num_trainable()
    assert prompt_bytes <= path.stat().st_size < prompt_bytes + 4096


def test_load_refuses_other_config(tmp_path):
    clip = tiny_clip()
    model = DGL(clip, num_frames=2, generator="linear", num_global=1, num_frame_prompts=1, num_text_prompts=(1, 1),
                context_length=12)
    path = str(tmp_path / "p.safetensors")
    model.save_prompts(path)
    other = tiny_clip(vision_layers=3)
    with pytest.raises(ValueError, match="another backbone"):
        DGL.load_prompts(path, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(Exception):
        DGL.load_prompts(str(tmp_path / "junk.safetensors"), tiny_clip())
    with pytest.raises(ValueError, match="missing"):
        model.load_prompt_state_dict({})


# ---- bad input ----------------------------------------------------------------------------------------

def test_bad_inputs():
    clip = tiny_clip()
    model = DGL(clip, num_frames=3, generator="linear", num_global=1, num_frame_prompts=1, num_text_prompts=(1, 1),
                context_length=12)
    with pytest.raises(ValueError, match="3 frames|num_frames=3"):
        model.encode_video(frames_for(clip, b=1, t=2))
    with pytest.raises(ValueError, match=r"\(batch >= 1, frames, 3, 32, 32\)"):
        model.encode_video(torch.randn(1, 3, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="context_length is 12"):
        model.encode_text(dgl_rs.tokenize(CAPTIONS, context_length=20))
    with pytest.raises(TypeError, match="int64"):
        model.encode_text(torch.zeros(2, 12))
    with pytest.raises(TypeError, match="VisionTransformer|visual"):
        DGL(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_text_prompts"):
        DGL(tiny_clip(), num_frames=3, generator="linear", num_frame_prompts=2, num_text_prompts=(4, 4), context_length=12)
    with pytest.raises(ValueError, match="generator"):
        DGL(tiny_clip(), generator="lstm")
    tr = DGL(tiny_clip(), num_frames=3, generator="transformer", num_global=1, num_frame_prompts=1,
             num_text_prompts=(1, 1), context_length=12)
    tr.num_frames = 2
    with pytest.raises(ValueError, match="frame positions"):
        tr.encode_video(frames_for(tr.clip, b=1, t=2))


def test_prompt_custom_ops_gradcheck_in_float64():
    """The generators' custom ops (native forward, the reference's vjp as backward) against
    finite differences, every input."""
    from dgl_rs.ops.prompts import linear_prompts, transformer_prompts

    torch.manual_seed(0)
    d = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *a: linear_prompts(*a, 3), (d(2, 2, 4), d(3, 4), d(3), d(3, 4), d(3)))
    gen = TransformerPromptGenerator(2, 2, 1, (1, 1), 4, 3, 2).double()
    block, mlp = gen.block.tensors(), [p for p in gen.text_mlp.parameters()]

    def run(table, *rest):
        return transformer_prompts(table, list(rest[:12]), list(rest[12:]), 2, 2, 2, 2)

    inputs = [gen.table.detach().clone().requires_grad_()] + [t.detach().clone().requires_grad_() for t in block + mlp]
    assert torch.autograd.gradcheck(run, tuple(inputs))
