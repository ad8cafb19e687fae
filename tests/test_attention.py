"""The fused global-local attention against the spec reference, gradcheck, drop-in, errors."""

import itertools

import pytest
import torch
from torch import nn

import dgl_rs
from dgl_rs import GlobalLocalAttention, global_local_attention
from dgl_rs.ops.reference import naive_global_local_attention

from conftest import TOL, devices, max_rel_err
from references import attention_mode_spec, global_local_attention_spec

MODES = ["global_local", "local", "global"]


def make_inputs(b, g, t, L, heads, hd, dtype=torch.float64, device="cpu", weights_grad=True, bias=True):
    d = heads * hd
    x = torch.randn(b, g + t * L, d, dtype=dtype, device=device, requires_grad=True)
    mk = lambda *s, scale=1.0: (torch.randn(*s, dtype=dtype, device=device) * scale).requires_grad_(weights_grad)  # noqa: E731
    w_in = mk(3 * d, d, scale=d ** -0.5)
    w_out = mk(d, d, scale=d ** -0.5)
    b_in = mk(3 * d, scale=0.1) if bias else None
    b_out = mk(d, scale=0.1) if bias else None
    return x, w_in, b_in, w_out, b_out


def check_against_spec(b, g, t, L, heads, hd, dtype, backend="auto", mode="global_local"):
    args = make_inputs(b, g, t, L, heads, hd, dtype)
    leaves = [a for a in args if a is not None]
    out = global_local_attention(*args, heads, g, t, backend=backend, mode=mode)
    ref = attention_mode_spec(*args, heads, g, t, mode)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    gout = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, gout)
    exp = torch.autograd.grad(ref, leaves, gout)
    for name, a, e in zip(["x", "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"], got, exp):
        # Gradients sum over the batch and the tokens: scale the tolerance by the magnitude.
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol * max(1.0, e.abs().max().item()), msg=f"grad {name}")


GRID = list(itertools.product([0, 1, 4], [1, 3, 12], [1, 5, 54], [1, 4, 12]))


@pytest.mark.parametrize("g,t,L,heads", GRID)
def test_float64_matches_spec_on_grid(g, t, L, heads):
    check_against_spec(2, g, t, L, heads, 4, torch.float64)


@pytest.mark.parametrize("g,t,L,heads", GRID[::3])
def test_float32_matches_spec_on_grid(g, t, L, heads):
    check_against_spec(2, g, t, L, heads, 8, torch.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", ["flash", "math"])
def test_backends_agree(backend, mode):
    check_against_spec(3, 4, 3, 7, 4, 8, torch.float64, backend=backend, mode=mode)


@pytest.mark.parametrize("weights_grad", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(weights_grad, bias):
    args = make_inputs(2, 2, 3, 3, 2, 3, torch.float64, weights_grad=weights_grad, bias=bias)

    def f(*a):
        return global_local_attention(*a, 2, 2, 3)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


# --- attention modes (paper, Table 3b ablation) ---------------------------------

MODE_GRID = list(itertools.product(MODES, [0, 2], [1, 3], [1, 5], [1, 2]))


@pytest.mark.parametrize("mode,g,t,L,heads", MODE_GRID)
def test_modes_float64_match_spec(mode, g, t, L, heads):
    """Forward and all five gradients of every mode vs its plain float64 reference."""
    check_against_spec(2, g, t, L, heads, 4, torch.float64, mode=mode)


@pytest.mark.parametrize("mode", ["local", "global"])
def test_modes_float32_match_spec(mode):
    check_against_spec(2, 4, 3, 5, 4, 8, torch.float32, mode=mode)


@pytest.mark.parametrize("mode", ["local", "global"])
@pytest.mark.parametrize("weights_grad", [True, False])
def test_modes_gradcheck_float64(mode, weights_grad):
    args = make_inputs(2, 2, 3, 3, 2, 3, torch.float64, weights_grad=weights_grad)

    def f(*a):
        return global_local_attention(*a, 2, 2, 3, mode=mode)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def _out_and_grads(args, heads, g, t, mode, gout):
    leaves = [a for a in args if a is not None]
    out = global_local_attention(*args, heads, g, t, mode=mode)
    return (out, *torch.autograd.grad(out, leaves, gout))


def _assert_modes_equal(args, heads, g, t, modes):
    gout = torch.randn(args[0].shape, dtype=args[0].dtype)
    first, *rest = [_out_and_grads(args, heads, g, t, m, gout) for m in modes]
    for mode, got in zip(modes[1:], rest):
        for name, a, e in zip(["out", "x", "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"],
                              got, first):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=f"{mode} vs {modes[0]}: {name}")


def test_local_equals_global_local_without_global_tokens():
    _assert_modes_equal(make_inputs(2, 0, 3, 5, 2, 4), 2, 0, 3, ["global_local", "local"])


@pytest.mark.parametrize("g", [0, 2])
def test_all_modes_equal_with_one_frame(g):
    _assert_modes_equal(make_inputs(2, g, 1, 5, 2, 4), 2, g, 1, MODES)


def test_global_mode_is_mha_over_the_packed_sequence():
    mha = nn.MultiheadAttention(24, 3, batch_first=True).double()
    x = torch.randn(2, 2 + 3 * 5, 24, dtype=torch.float64, requires_grad=True)
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=3, mode="global")
    out = attn(x)[0]
    ref = mha(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    gout = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, gout)[0], torch.autograd.grad(ref, x, gout)[0],
                               rtol=1e-10, atol=1e-10)


def test_local_mode_never_mixes_frames():
    """In "local" mode a frame's outputs depend on no other frame's tokens (G aside)."""
    x, w_in, b_in, w_out, b_out = make_inputs(1, 2, 3, 4, 2, 4, weights_grad=False)
    out = global_local_attention(x, w_in, b_in, w_out, b_out, 2, 2, 3, mode="local")
    gx = torch.autograd.grad(out[:, 2 + 4:2 + 8].sum(), x)[0]  # frame 1's outputs
    assert gx[:, 2 + 4:2 + 8].abs().sum() > 0 and gx[:, :2].abs().sum() > 0
    assert gx[:, 2:2 + 4].abs().sum() == 0 and gx[:, 2 + 8:].abs().sum() == 0


@pytest.mark.parametrize("mode", MODES)
def test_module_carries_mode(mode):
    mha = nn.MultiheadAttention(16, 2, batch_first=True).double()
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=3, mode=mode)
    assert attn.mode == mode and f"mode={mode!r}" in repr(attn)
    x = torch.randn(2, 2 + 3 * 4, 16, dtype=torch.float64)
    ref = attention_mode_spec(x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias,
                              2, 2, 3, mode)
    torch.testing.assert_close(attn(x)[0], ref, rtol=1e-10, atol=1e-10)
    assert GlobalLocalAttention(16, 2, mode=mode).mode == mode
    assert GlobalLocalAttention.from_mha(mha).mode == "global_local"


def test_bad_mode_raises():
    args = _base()
    with pytest.raises(ValueError, match=r"`mode` must be one of \('global_local', 'local', 'global'\), got 'joint'"):
        global_local_attention(*args, 2, 2, 2, mode="joint")
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        GlobalLocalAttention.from_mha(mha, mode="Local")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        GlobalLocalAttention(8, 2, mode=None)
    # the native op checks it too (parsed in the binding)
    x, w_in, b_in, w_out, b_out = args
    with pytest.raises(ValueError, match=r"`mode`: expected one of 'global_local', 'local', 'global', got \"joint\""):
        dgl_rs._native.attention_forward(x, (w_in, b_in, w_out, b_out), (2, 2, 2, "joint", "auto"))


def test_frozen_weights_get_no_gradient():
    x, w_in, b_in, w_out, b_out = make_inputs(1, 4, 2, 5, 2, 4, torch.float32, weights_grad=False)
    global_local_attention(x, w_in, b_in, w_out, b_out, 2, 4, 2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(w.grad is None for w in (w_in, b_in, w_out, b_out))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("recompute_qkv", [False, True])
@pytest.mark.parametrize("weights_grad", [False, True])
def test_saved_for_backward_is_small(recompute_qkv, weights_grad, mode):
    """What autograd keeps: the q/k/v projection (or only x with recompute_qkv), plus x only when
    in_proj_weight needs its gradient; never the attention output or a score matrix."""
    b, g, t, L, h, hd = 2, 4, 3, 6, 2, 8
    x, w_in, b_in, w_out, b_out = make_inputs(b, g, t, L, h, hd, torch.float32, weights_grad=weights_grad)
    params = {p.data_ptr() for p in (w_in, b_in, w_out, b_out)}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        out = global_local_attention(x, w_in, b_in, w_out, b_out, h, g, t, mode=mode, recompute_qkv=recompute_qkv)
    shapes = sorted(tuple(s.shape) for s in saved if s.data_ptr() not in params)
    d, s_len = h * hd, g + t * L
    expected = [] if recompute_qkv else [(b, s_len, 3 * d)]
    if recompute_qkv or weights_grad:
        expected.append((b, s_len, d))
    assert shapes == sorted(expected)
    # and both policies give the same gradients
    gx = torch.autograd.grad(out.sum(), x)[0]
    gx2 = torch.autograd.grad(global_local_attention(x, w_in, b_in, w_out, b_out, h, g, t, mode=mode,
                                                     recompute_qkv=not recompute_qkv).sum(), x)[0]
    torch.testing.assert_close(gx, gx2, rtol=1e-5, atol=1e-6)


def test_matches_mha_when_no_global_and_one_frame():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).double()
    x = torch.randn(3, 11, 32, dtype=torch.float64)
    attn = GlobalLocalAttention.from_mha(mha, num_global=0, num_frames=1)
    torch.testing.assert_close(attn(x, x, x)[0], mha(x, x, x, need_weights=False)[0], rtol=1e-10, atol=1e-10)


def test_local_part_is_per_frame_self_attention():
    mha = nn.MultiheadAttention(16, 2, batch_first=True).double()
    b, t, L = 2, 4, 5
    x = torch.randn(b, t * L, 16, dtype=torch.float64)
    out = GlobalLocalAttention.from_mha(mha, num_global=0, num_frames=t)(x)[0]
    per_frame = mha(*(x.reshape(b * t, L, 16),) * 3, need_weights=False)[0].reshape(b, t * L, 16)
    torch.testing.assert_close(out, per_frame, rtol=1e-10, atol=1e-10)


def test_naive_two_call_baseline_agrees():
    mha = nn.MultiheadAttention(24, 3, batch_first=True).double()
    x = torch.randn(2, 4 + 3 * 5, 24, dtype=torch.float64)
    fused = GlobalLocalAttention.from_mha(mha, num_global=4, num_frames=3)(x)[0]
    torch.testing.assert_close(fused, naive_global_local_attention(mha, x, 4, 3), rtol=1e-10, atol=1e-10)


def test_from_mha_shares_weights_and_state_dict_keys():
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=3)
    assert attn.in_proj_weight is mha.in_proj_weight and attn.out_proj.weight is mha.out_proj.weight
    assert set(attn.state_dict()) == set(mha.state_dict())
    assert attn.to_mha() is mha
    assert len(list(attn.parameters())) == len(list(mha.parameters()))


def test_num_frames_per_call_and_sequence_first():
    mha = nn.MultiheadAttention(16, 2, batch_first=False).double()
    attn = GlobalLocalAttention.from_mha(mha, num_global=1, num_frames=2)
    x = torch.randn(1 + 4 * 3, 2, 16, dtype=torch.float64)  # (seq, batch, dim)
    out = attn(x, x, x, num_frames=4)[0]
    ref = global_local_attention_spec(
        x.transpose(0, 1), mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias, 2, 1, 4
    ).transpose(0, 1)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_drop_in_open_clip_resblock():
    """Replacing a ViT-B-32-quickgelu resblock's attn and packing T frames (G=0) gives each frame's block output."""
    open_clip = pytest.importorskip("open_clip")
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    block = model.visual.transformer.resblocks[0].double()
    t, L = 3, 50
    frames = torch.randn(2 * t, L, 768, dtype=torch.float64)
    with torch.no_grad():
        expected = block(frames)
        block.attn = GlobalLocalAttention.from_mha(block.attn, num_global=0, num_frames=t)
        got = block(frames.reshape(2, t * L, 768)).reshape(2 * t, L, 768)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_within_reference_error(dtype, mode):
    """err(native in dtype) <= 2 * err(reference in dtype) + floor, both against the float64 reference."""
    args64 = make_inputs(2, 4, 3, 9, 4, 16, torch.float64)
    ref64 = attention_mode_spec(*args64, 4, 4, 3, mode)
    low = [a.detach().to(dtype).requires_grad_(True) if a is not None else None for a in args64]
    out = global_local_attention(*low, 4, 4, 3, mode=mode)
    ref_low = attention_mode_spec(*low, 4, 4, 3, mode)
    assert out.dtype == dtype
    assert max_rel_err(out, ref64) <= 2 * max_rel_err(ref_low, ref64) + 1e-3
    g = torch.randn_like(ref64)
    gx64 = torch.autograd.grad(ref64, args64[0], g)[0]
    gx = torch.autograd.grad(out, low[0], g.to(dtype))[0]
    gx_ref = torch.autograd.grad(ref_low, low[0], g.to(dtype))[0]
    assert max_rel_err(gx, gx64) <= 2 * max_rel_err(gx_ref, gx64) + 1e-3


def test_autocast_casts_inputs_and_gradients_flow():
    x, w_in, b_in, w_out, b_out = make_inputs(1, 2, 2, 4, 2, 8, torch.float32, weights_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = global_local_attention(x, w_in, b_in, w_out, b_out, 2, 2, 2)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32


# --- errors -----------------------------------------------------------------

def _base():
    return make_inputs(1, 2, 2, 3, 2, 4, torch.float32, weights_grad=False)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: (a[0][0],) + a[1:], ValueError, r"`x` must have shape"),
        (lambda a: (a[0][:, :-1],) + a[1:], ValueError, r"num_global \+ num_frames \* tokens"),
        (lambda a: (a[0][:0],) + a[1:], ValueError, r"at least one video"),
        (lambda a: (a[0], a[1][:, :-1]) + a[2:], ValueError, r"`in_proj_weight` must have shape \[24, 8\]"),
        (lambda a: a[:3] + (a[3].T[:4],) + a[4:], ValueError, r"`out_proj_weight` must have shape"),
        (lambda a: a[:2] + (a[2][:5],) + a[3:], ValueError, r"`in_proj_bias` must have shape"),
        (lambda a: (a[0].double(),) + a[1:], ValueError, r"`in_proj_weight` must have dtype float64"),
        (lambda a: (a[0].long(),) + a[1:], ValueError, r"`x` must have dtype float32, float64"),
        (lambda a: ("not a tensor",) + a[1:], TypeError, r"`x` must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise(mutate, exc, match):
    args = mutate(_base())
    with pytest.raises(exc, match=match):
        global_local_attention(*args, 2, 2, 2)


def test_bad_sizes_raise():
    args = _base()
    with pytest.raises(ValueError, match="multiple of num_heads"):
        global_local_attention(*args, 3, 2, 2)
    with pytest.raises(ValueError, match="num_frames"):
        global_local_attention(*args, 2, 2, 0)
    with pytest.raises(ValueError, match="backend"):
        global_local_attention(*args, 2, 2, 2, backend="cudnn")
    with pytest.raises(NotImplementedError, match="needs a CUDA tensor"):
        # forcing the CUDA kernel on CPU
        global_local_attention(*args, 2, 2, 2, backend="efficient")


def test_module_rejects_unsupported_calls():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=2)
    x = torch.randn(1, 8, 8)
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, x, x, attn_mask=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="`key` must be None or the same tensor"):
        attn(x, x.clone(), x)
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        GlobalLocalAttention.from_mha(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="dropout"):
        GlobalLocalAttention.from_mha(nn.MultiheadAttention(8, 2, dropout=0.1))


def test_device_mismatch_raises():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x, w_in, b_in, w_out, b_out = _base()
    with pytest.raises(ValueError, match="`in_proj_weight` must be on device"):
        global_local_attention(x.cuda(), w_in, b_in, w_out, b_out, 2, 2, 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_cuda_matches_cpu(dtype, mode):
    if "cuda" not in devices():
        pytest.skip("needs CUDA")
    args = make_inputs(2, 4, 3, 54, 12, 64, torch.float64)
    ref = attention_mode_spec(*args, 12, 4, 3, mode)
    dev = [a.detach().to("cuda", dtype).requires_grad_(True) for a in args]
    out = global_local_attention(*dev, 12, 4, 3, mode=mode)
    low = attention_mode_spec(*dev, 12, 4, 3, mode)
    assert max_rel_err(out.cpu(), ref) <= 2 * max_rel_err(low.cpu(), ref) + 1e-6
    g = torch.randn_like(ref)
    gx = torch.autograd.grad(out, dev[0], g.to("cuda", dtype))[0]
    gl = torch.autograd.grad(low, dev[0], g.to("cuda", dtype))[0]
    g64 = torch.autograd.grad(ref, args[0], g)[0]
    assert max_rel_err(gx.cpu(), g64) <= 2 * max_rel_err(gl.cpu(), g64) + 1e-6
