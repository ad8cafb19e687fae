"""Plain-PyTorch references of the native ops: the naive global-local attention, the way the
released DGL code computes it, and the prompt generators. Tests compare the native ops
with them; the prompt generators' custom ops take their backward from them.

The naive attention is two calls of the same ``nn.MultiheadAttention``: local attention with keys
``[G repeated per frame ; frame]`` (built with a Python loop over frames, so the
frame tokens' keys and values are projected twice), and global attention with
keys = the whole sequence. It is the baseline of the benchmarks and of the
"naive" model; tests compare it with the fused op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


# ---- the prompt generators (DGL-SPEC section 5), the same math as src/prompts ----------------

def linear_prompts_ref(frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor,
                       post_bias: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """DGL-Linear: ``(text (layers, 2 n_f, D_t), frames (layers, T, n_f, D_v))``."""
    f = frame_prompts
    text = torch.cat([F.linear(f, pre_weight, pre_bias), F.linear(f, post_weight, post_bias)], dim=1)
    return text, f.unsqueeze(1).expand(-1, num_frames, -1, -1)


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


def transformer_prompts_ref(table: Tensor, block: list[Tensor], mlp: list[Tensor], num_layers: int, num_heads: int,
                            num_text: int, num_frames: int) -> tuple[Tensor, Tensor]:
    """DGL-Transformer: the table ``(n_text + T n_f, layers D_v)`` read as ``layers``
    sequences of width D_v, one pre-LN block over each (QuickGELU MLP), the first
    ``num_text`` rows through the text MLP."""
    ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b, fc_w, fc_b, pr_w, pr_b = block
    rows, width = table.shape
    d = width // num_layers
    x = table.view(rows, num_layers, d).transpose(0, 1)
    q, k, v = F.linear(F.layer_norm(x, (d,), ln1_w, ln1_b), in_w, in_b).split(d, dim=-1)
    heads = lambda z: z.reshape(num_layers, rows, num_heads, d // num_heads).transpose(1, 2)  # noqa: E731
    a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    x = x + F.linear(a.transpose(1, 2).reshape(num_layers, rows, d), out_w, out_b)
    x = x + F.linear(_quick_gelu(F.linear(F.layer_norm(x, (d,), ln2_w, ln2_b), fc_w, fc_b)), pr_w, pr_b)
    text = F.linear(_quick_gelu(F.linear(x[:, :num_text], mlp[0], mlp[1])), mlp[2], mlp[3])
    return text, x[:, num_text:].reshape(num_layers, num_frames, (rows - num_text) // num_frames, d)
