"""A DGL model computed the way the released DGL code computes it, for comparisons.

The same weights and the same outputs (to float round-off) as the fused model, with the
released code's costs: each visual block's attention is two calls of the block's own
``nn.MultiheadAttention`` (local: every frame's tokens with the G global prompts
repeated for it; global: G over everything), so the frame tokens' keys and values are
projected twice and the local keys are a concatenated copy; and the prompts are
generated once PER SAMPLE (B generator passes, all kept in the graph). ``benches/`` and
``dgl-rs estimate --released`` measure dgl-rs against it.
"""

from __future__ import annotations

import torch

from ..ops.reference import naive_global_local_attention
from .dgl import DGL


def released_way(model: DGL, batch_size: int) -> DGL:
    """Switch ``model`` (a DGL method with ``attention="global_local"``) to the released
    code's way of computing, for batches of ``batch_size`` videos; returns it."""
    if not isinstance(model, DGL):
        raise TypeError(f"`model` must be a DGL method, got {type(model).__name__}")
    if model.attention != "global_local":
        raise ValueError(f"the released code's attention is global-local; got attention={model.attention!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    backbone, g = model.backbone, model.num_global

    def two_calls(i: int, b: int, t: int, L: int):
        mha = backbone.block_attention(i)
        return lambda h: naive_global_local_attention(mha, h, g, t)

    generate = model.generate_prompts

    def per_sample(num_frames=None):
        outs = [generate(num_frames) for _ in range(batch_size)]  # all kept in the graph
        return tuple(None if o[0] is None else torch.stack(o).mean(0) for o in zip(*outs))

    model._attention_override = two_calls
    model.generate_prompts = per_sample
    return model


__all__ = ["released_way"]
