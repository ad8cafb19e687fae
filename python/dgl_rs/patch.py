"""The ONLY code that touches open_clip internals.

Supported: open_clip 3.3.0 ``CLIP`` / ``CustomTextCLIP`` whose visual tower is a
``VisionTransformer`` and whose text tower is a ``TextTransformer`` (or the text
parts of ``CLIP``), with ``ResidualAttentionBlock``s holding an
``nn.MultiheadAttention`` (ViT-B/32, B/16, L/14 and small custom configs). Newer
open_clip replaced that with its own ``Attention``; anything unrecognised fails
loudly here rather than computing something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from .attention import GlobalLocalAttention


@dataclass
class TextTower:
    """The text parts of a CLIP, wherever the model class keeps them."""

    transformer: nn.Module
    token_embedding: nn.Embedding
    positional_embedding: Tensor
    ln_final: nn.Module
    text_projection: Optional[object]
    context_length: int
    width: int


def _fail(what: str) -> None:
    raise TypeError(
        f"dgl_rs needs an open_clip CLIP with a VisionTransformer and a text Transformer built from "
        f"nn.MultiheadAttention resblocks (open_clip 3.3.0); {what}"
    )


def _check_blocks(name: str, transformer: nn.Module) -> None:
    blocks = getattr(transformer, "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        _fail(f"`{name}` has no resblocks")
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if not isinstance(attn, (nn.MultiheadAttention, GlobalLocalAttention)):
            _fail(f"`{name}.resblocks[{i}].attn` is {type(attn).__name__}, not nn.MultiheadAttention")
        if not all(hasattr(blk, a) for a in ("ln_1", "ln_2", "mlp")) or hasattr(blk, "ln_1_kv"):
            _fail(f"`{name}.resblocks[{i}]` is not a self-attention ResidualAttentionBlock")


def vision_tower(clip: nn.Module) -> nn.Module:
    visual = getattr(clip, "visual", None)
    if visual is None:
        _fail(f"{type(clip).__name__} has no `visual` tower")
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "transformer", "patch_size")
    missing = [a for a in needed if not hasattr(visual, a)]
    if missing:
        _fail(f"its visual tower {type(visual).__name__} lacks {missing} (not a VisionTransformer)")
    if getattr(visual, "attn_pool", None) is not None:
        _fail("its visual tower uses attentional pooling")
    _check_blocks("visual.transformer", visual.transformer)
    return visual


def text_tower(clip: nn.Module) -> TextTower:
    owner = clip.text if hasattr(clip, "text") and hasattr(clip.text, "token_embedding") else clip
    needed = ("transformer", "token_embedding", "positional_embedding", "ln_final")
    missing = [a for a in needed if not hasattr(owner, a)]
    if missing:
        _fail(f"its text tower lacks {missing}")
    pool = getattr(owner, "pool_type", getattr(clip, "text_pool_type", "argmax"))
    if pool != "argmax" or getattr(owner, "cls_emb", None) is not None:
        _fail(f"its text tower pools with {pool!r}; DGL needs EOT (argmax) pooling")
    _check_blocks("text transformer", owner.transformer)
    return TextTower(
        transformer=owner.transformer,
        token_embedding=owner.token_embedding,
        positional_embedding=owner.positional_embedding,
        ln_final=owner.ln_final,
        text_projection=getattr(owner, "text_projection", None),
        context_length=owner.positional_embedding.shape[0],
        width=owner.transformer.width,
    )


def blocks(transformer: nn.Module) -> List[nn.Module]:
    return list(transformer.resblocks)


def batch_first(transformer: nn.Module) -> bool:
    return getattr(transformer, "batch_first", True)


QUICK_GELU = 1.702


def _is_quick_gelu_mlp(mlp: nn.Module) -> bool:
    act = getattr(mlp, "gelu", None)
    return (isinstance(getattr(mlp, "c_fc", None), nn.Linear) and isinstance(getattr(mlp, "c_proj", None), nn.Linear)
            and type(act).__name__ == "QuickGELU")


def run_mlp(mlp: nn.Module, x: Tensor) -> Tensor:
    """The block's MLP. A QuickGELU MLP ``c_proj(h * sigmoid(1.702 h))``, ``h = c_fc(x)``, is
    computed as ``c_proj'(silu(h'))`` with the 1.702 folded into the two GEMMs' ``alpha``
    (``h' = 1.702 (x W^T) + 1.702 b``; the output GEMM scaled by 1/1.702): the same
    function, one fused elementwise op forward and one backward instead of about eight
    passes, and one saved tensor instead of three. Gradients reach every weight."""
    if not _is_quick_gelu_mlp(mlp):
        return mlp(x)
    fc, proj = mlp.c_fc, mlp.c_proj
    x2 = x.reshape(-1, x.shape[-1])
    h = torch.addmm(fc.bias * QUICK_GELU, x2, fc.weight.t(), alpha=QUICK_GELU) if fc.bias is not None \
        else torch.mm(x2, fc.weight.t()) * QUICK_GELU
    h = torch.nn.functional.silu(h)
    out = torch.addmm(proj.bias, h, proj.weight.t(), alpha=1.0 / QUICK_GELU) if proj.bias is not None \
        else torch.mm(h, proj.weight.t()) / QUICK_GELU
    return out.view(*x.shape[:-1], out.shape[-1])


def run_block(block: nn.Module, x: Tensor, first: bool, attn_mask: Optional[Tensor] = None,
              post_attention: Optional[Callable[[Tensor], Tensor]] = None,
              attention: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """One resblock on batch-first ``x`` whatever the transformer's layout: open_clip's
    ``x + ls_1(attn(ln_1(x))); x + ls_2(mlp(ln_2(x)))`` with the MLP of :func:`run_mlp`.

    ``post_attention`` maps the attention's output before it joins the residual stream
    (where a Houlsby adapter sits); ``attention`` replaces the block's attention on the
    normalised input (batch-first ``(B, S, D) -> (B, S, D)``)."""
    h = block.ln_1(x)
    if attention is not None:
        a = attention(h)
    elif first:
        a = block.attention(q_x=h, attn_mask=attn_mask)
    else:
        a = block.attention(q_x=h.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    if post_attention is not None:
        a = post_attention(a)
    x = x + block.ls_1(a)
    return x + block.ls_2(run_mlp(block.mlp, block.ln_2(x)))


def attention_weights(block: nn.Module) -> tuple:
    """``(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads)`` of a
    resblock's attention (an nn.MultiheadAttention or a GlobalLocalAttention)."""
    a = block.attn
    return a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias, a.num_heads


def embed_frames(visual: nn.Module, images: Tensor) -> Tensor:
    """Patch embedding, class token, positional embedding, ln_pre: ``(N, 3, H, W) -> (N, 1 + P, D_v)``,
    exactly open_clip's ``VisionTransformer._embeds``."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    return visual.ln_pre(x)


def class_token(visual: nn.Module) -> Tensor:
    """The class token as every frame's sequence starts it: ``ln_pre(class_embedding +
    positional_embedding[0])``, ``(D_v,)``."""
    x = visual.class_embedding + visual.positional_embedding[0].to(visual.class_embedding.dtype)
    return visual.ln_pre(x.view(1, 1, -1)).view(-1)


def project_visual(visual: nn.Module, tokens: Tensor) -> Tensor:
    """ln_post then proj of pooled tokens ``(..., D_v) -> (..., D_out)``."""
    x = visual.ln_post(tokens)
    return x @ visual.proj if visual.proj is not None else x


def visual_output_width(visual: nn.Module) -> int:
    """Width of :func:`project_visual`'s output (the joint embedding's)."""
    return visual.proj.shape[1] if visual.proj is not None else visual.transformer.width


def project_text(tower: TextTower, pooled: Tensor) -> Tensor:
    proj = tower.text_projection
    if proj is None:
        return pooled
    return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


def image_size(visual: nn.Module) -> tuple:
    size = visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def patch_size(visual: nn.Module) -> int:
    p = visual.patch_size
    return p[0] if isinstance(p, (tuple, list)) else int(p)


def num_heads(visual: nn.Module) -> int:
    attn = visual.transformer.resblocks[0].attn
    return attn.num_heads


def apply_dgl(visual: nn.Module, num_global: int, num_frames: int,
              mode: str = "global_local") -> List[GlobalLocalAttention]:
    """Make every visual resblock's attention a GlobalLocalAttention sharing its weights,
    configured for (``num_global``, ``num_frames``, ``mode``). Idempotent and cheap: a
    model calls it before every forward, so several models built on one CLIP each run
    with their own configuration (and one model's ``unpatch`` does not break another)."""
    out = []
    for blk in visual.transformer.resblocks:
        if not isinstance(blk.attn, GlobalLocalAttention):
            blk.attn = GlobalLocalAttention.from_mha(blk.attn, num_global=num_global, num_frames=num_frames)
        blk.attn.num_global, blk.attn.num_frames, blk.attn.mode = num_global, num_frames, mode
        out.append(blk.attn)
    return out


def remove_dgl(visual: nn.Module) -> None:
    """Put the original nn.MultiheadAttention modules back."""
    for blk in visual.transformer.resblocks:
        if isinstance(blk.attn, GlobalLocalAttention):
            blk.attn = blk.attn.to_mha()
