"""The global queries' attention probabilities from the fused op (``need_weights``), against
plain-PyTorch references written from their definition."""

import math

import pytest
import torch
from torch import nn

from dgl_rs import GlobalLocalAttention, global_local_attention

from conftest import devices

MODES = ["global_local", "local", "global"]


def inputs(b=2, g=3, t=4, L=5, heads=2, hd=4, dtype=torch.float64):
    d = heads * hd
    x = torch.randn(b, g + t * L, d, dtype=dtype)
    w_in = torch.randn(3 * d, d, dtype=dtype) * d ** -0.5
    b_in = torch.randn(3 * d, dtype=dtype) * 0.1
    w_out = torch.randn(d, d, dtype=dtype) * d ** -0.5
    b_out = torch.randn(d, dtype=dtype) * 0.1
    return x, w_in, b_in, w_out, b_out


def qkv_heads(x, w_in, b_in, heads):
    b, s, d = x.shape
    q, k, v = torch.nn.functional.linear(x, w_in, b_in).split(d, dim=-1)
    return [z.reshape(b, s, heads, d // heads).transpose(1, 2) for z in (q, k, v)]


def softmax_rows(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def weights_spec(x, w_in, b_in, heads, g, t, mode):
    """(batch, heads, G, seq), from the definitions: G's softmax over every key; for
    "local" the mean over frames of G's softmax over [G ; frame t], placed on the
    sequence (G's keys averaged, frame t's keys weighted 1/T)."""
    q, k, _ = qkv_heads(x, w_in, b_in, heads)
    if mode != "local":
        return softmax_rows(q[:, :, :g], k)
    b, h, s, _ = q.shape
    L = (s - g) // t
    w = torch.zeros(b, h, g, s, dtype=x.dtype)
    for f in range(t):
        sl = slice(g + f * L, g + (f + 1) * L)
        p = softmax_rows(q[:, :, :g], torch.cat([k[:, :, :g], k[:, :, sl]], dim=2))
        w[..., :g] += p[..., :g] / t
        w[..., sl] += p[..., g:] / t
    return w


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 2, 4), (1, 1, 12, 1, 4, 2), (3, 4, 1, 7, 1, 8), (2, 4, 3, 50, 12, 8)])
def test_weights_equal_softmax_reference(mode, shape):
    b, g, t, L, heads, hd = shape
    x, w_in, b_in, w_out, b_out = inputs(b, g, t, L, heads, hd)
    plain = global_local_attention(x, w_in, b_in, w_out, b_out, heads, g, t, mode=mode)
    out, w = global_local_attention(x, w_in, b_in, w_out, b_out, heads, g, t, mode=mode, need_weights=True)
    assert w.shape == (b, heads, g, g + t * L) and w.dtype == x.dtype
    assert torch.equal(out, plain)  # asking for them leaves the output unchanged
    torch.testing.assert_close(w, weights_spec(x, w_in, b_in, heads, g, t, mode), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones(b, heads, g, dtype=x.dtype), rtol=1e-12, atol=1e-12)
    assert (w >= 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_weights_times_values_is_the_global_tokens_result(mode):
    x, w_in, b_in, _, _ = inputs()
    d, heads, g, t = x.shape[-1], 2, 3, 4
    eye = torch.eye(d, dtype=x.dtype)
    out, w = global_local_attention(x, w_in, b_in, eye, None, heads, g, t, mode=mode, need_weights=True)
    _, _, v = qkv_heads(x, w_in, b_in, heads)
    got = (w @ v).transpose(1, 2).reshape(x.shape[0], g, d)
    torch.testing.assert_close(got, out[:, :g], rtol=1e-10, atol=1e-10)


def test_gradients_unchanged_and_weights_carry_none():
    x, w_in, b_in, w_out, b_out = inputs()
    x.requires_grad_(True)
    gout = torch.randn(x.shape, dtype=x.dtype)
    ref = torch.autograd.grad(global_local_attention(x, w_in, b_in, w_out, b_out, 2, 3, 4), x, gout)[0]
    out, w = global_local_attention(x, w_in, b_in, w_out, b_out, 2, 3, 4, need_weights=True)
    assert not w.requires_grad
    torch.testing.assert_close(torch.autograd.grad(out, x, gout)[0], ref, rtol=0, atol=0)


def test_no_global_tokens_gives_empty_weights():
    x, w_in, b_in, w_out, b_out = inputs(g=0)
    out, w = global_local_attention(x, w_in, b_in, w_out, b_out, 2, 0, 4, need_weights=True)
    assert w.shape == (2, 2, 0, 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_weights(dtype):
    x, w_in, b_in, w_out, b_out = (a.to(dtype) for a in inputs())
    _, w = global_local_attention(x, w_in, b_in, w_out, b_out, 2, 3, 4, need_weights=True)
    ref = weights_spec(*(a.double() for a in (x, w_in, b_in)), 2, 3, 4, "global_local")
    assert w.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(w.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_first", [True, False])
def test_module_follows_mha_convention(batch_first):
    """In mode "global" the op is plain self-attention: its G rows are nn.MultiheadAttention's."""
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).double()
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=3, mode="global")
    x = torch.randn(2, 2 + 3 * 5, 16, dtype=torch.float64)
    xin = x if batch_first else x.transpose(0, 1)
    for average in (True, False):
        out, w = attn(xin, xin, xin, need_weights=True, average_attn_weights=average)
        ref_out, ref_w = mha(xin, xin, xin, need_weights=True, average_attn_weights=average)
        torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(w, ref_w[..., :2, :], rtol=1e-10, atol=1e-10)
    assert attn(xin, xin, xin)[1] is None


def test_record_weights_keeps_them_from_calls_that_ask_for_none():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    attn = GlobalLocalAttention.from_mha(mha, num_global=2, num_frames=2)
    x = torch.randn(1, 2 + 2 * 3, 8, dtype=torch.float64)
    plain = attn(x, x, x)[0]
    with attn.record_weights() as rec:
        out, none = attn(x, x, x, need_weights=False)
        with pytest.raises(RuntimeError, match="already active"):
            with attn.record_weights():
                pass
    assert none is None and torch.equal(out, plain)
    assert len(rec) == 1 and rec[0].shape == (1, 2, 2, 8)
    _, w = attn(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(rec[0], w, rtol=0, atol=0)
    attn(x, x, x)
    assert len(rec) == 1  # recording stopped with the block


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cuda_weights_match_cpu(mode, dtype):
    if "cuda" not in devices():
        pytest.skip("needs CUDA")
    args = inputs(2, 4, 3, 54, 12, 64)
    ref = weights_spec(*args[:3], 12, 4, 3, mode)
    dev = [a.to("cuda", dtype) for a in args]
    _, w = global_local_attention(*dev, 12, 4, 3, mode=mode, need_weights=True)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(w.double().cpu(), ref, rtol=tol, atol=tol)
