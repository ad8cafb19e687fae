"""Plain-PyTorch references written from DGL-SPEC, independent of dgl_rs's code."""

import math

import torch


def mha_heads(q, k, v, num_heads):
    """Multi-head softmax attention: q (n, m, D), k/v (n, s, D) -> (n, m, D)."""
    n, m, d = q.shape
    hd = d // num_heads
    split = lambda t: t.reshape(n, t.shape[1], num_heads, hd).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-2, -1) / math.sqrt(hd), dim=-1)
    return (w @ split(v)).transpose(1, 2).reshape(n, m, d)


def global_local_attention_spec(x, w_in, b_in, w_out, b_out, num_heads, num_global, num_frames):
    """DGL-SPEC section 3, literally: one frame at a time, then the global tokens."""
    b, s, d = x.shape
    g, t = num_global, num_frames
    L = (s - g) // t
    q, k, v = torch.nn.functional.linear(x, w_in, b_in).split(d, dim=-1)
    pieces = []
    if g:
        pieces.append(mha_heads(q[:, :g], k, v, num_heads))  # global: G attends to all
    for f in range(t):
        sl = slice(g + f * L, g + (f + 1) * L)
        kf = torch.cat([k[:, :g], k[:, sl]], dim=1)  # local: [G ; frame f]
        vf = torch.cat([v[:, :g], v[:, sl]], dim=1)
        pieces.append(mha_heads(q[:, sl], kf, vf, num_heads))
    return torch.nn.functional.linear(torch.cat(pieces, dim=1), w_out, b_out)


def attention_mode_spec(x, w_in, b_in, w_out, b_out, num_heads, num_global, num_frames, mode):
    """The attention modes of the Table 3b ablation, each written from its definition.

    - "global_local": DGL-SPEC section 3 (``global_local_attention_spec``).
    - "local": each frame's ``[G ; frame_t]`` does self-attention within itself;
      frame tokens keep their frame's result, G gets the mean over the frames of
      its per-frame results.
    - "global": every query attends to all G + T*L tokens.
    """
    if mode == "global_local":
        return global_local_attention_spec(x, w_in, b_in, w_out, b_out, num_heads, num_global, num_frames)
    _, s, d = x.shape
    g, t = num_global, num_frames
    L = (s - g) // t
    q, k, v = torch.nn.functional.linear(x, w_in, b_in).split(d, dim=-1)
    if mode == "global":
        attended = mha_heads(q, k, v, num_heads)
    elif mode == "local":
        g_results, frame_results = [], []
        for f in range(t):
            sl = slice(g + f * L, g + (f + 1) * L)
            q_f, k_f, v_f = (torch.cat([z[:, :g], z[:, sl]], dim=1) for z in (q, k, v))
            o = mha_heads(q_f, k_f, v_f, num_heads)  # (b, g + L, d)
            g_results.append(o[:, :g])
            frame_results.append(o[:, g:])
        g_mean = sum(g_results) / t
        attended = torch.cat([g_mean] + frame_results, dim=1)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return torch.nn.functional.linear(attended, w_out, b_out)
