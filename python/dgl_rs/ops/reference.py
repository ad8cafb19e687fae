"""The naive global-local attention, the way the released DGL code computes it.

Two calls of the same ``nn.MultiheadAttention``: local attention with keys
``[G repeated per frame ; frame]`` (built with a Python loop over frames, so the
frame tokens' keys and values are projected twice), and global attention with
keys = the whole sequence. It is the baseline of the benchmarks and of the
"naive" model; tests compare it with the fused op.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def naive_global_local_attention(mha: nn.MultiheadAttention, x: Tensor, num_global: int, num_frames: int) -> Tensor:
    """``x``: ``(batch, G + frames * tokens, dim)``, batch first. Returns the same shape."""
    b, s, d = x.shape
    g, t = num_global, num_frames
    tokens = (s - g) // t
    glob, frames = x[:, :g], x[:, g:].reshape(b * t, tokens, d)
    q_first = not mha.batch_first

    def call(q, kv):
        if q_first:
            return mha(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
        return mha(q, kv, kv, need_weights=False)[0]

    # Local: G repeated for every frame (as the released code does, with a loop).
    g_rep = torch.cat([glob.unsqueeze(1) for _ in range(t)], dim=1).reshape(b * t, g, d)
    local = call(frames, torch.cat([g_rep, frames], dim=1)).reshape(b, t * tokens, d)
    if g == 0:
        return local
    global_out = call(glob, x)
    return torch.cat([global_out, local], dim=1)
