"""The ONLY code that reads open_clip's model internals: :class:`Backbone`, the one view
of a CLIP that every dgl-rs method uses (shapes, the frame and text embeddings, and the
two towers' forward passes with hooks), plus :func:`apply_dgl` / :func:`remove_dgl` for
users who want the drop-in attention modules in their own CLIP.

A method never writes into the CLIP: the visual attention's configuration
(:class:`VideoAttention`: global tokens, frames, pattern) is an argument of every
:meth:`Backbone.run_visual` call, so several models can share one CLIP.

Supported: open_clip 3.3.0 ``CLIP`` / ``CustomTextCLIP`` whose visual tower is a
``VisionTransformer`` and whose text tower is a ``TextTransformer`` (or the text
parts of ``CLIP``), with ``ResidualAttentionBlock``s holding an
``nn.MultiheadAttention`` (ViT-B/32, B/16, L/14 and small custom configs). Newer
open_clip replaced that with its own ``Attention``; anything unrecognised fails
loudly here rather than computing something else.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.attention import GlobalLocalAttention
from ..ops.attention import check_mode, global_local_attention

# open_clip.constants.OPENAI_DATASET_MEAN / _STD, repeated so that decoding and this module
# work without importing open_clip (slow to import); tests check that they agree.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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


def _rows_of(x: Tensor, rows: Tensor) -> Tensor:
    """Row ``rows[b]`` of each sample of batch-first ``x``: ``(B, 1, D)``."""
    return x[torch.arange(x.shape[0], device=x.device), rows].unsqueeze(1)


def _plain_attention(block: nn.Module) -> bool:
    """The block's attention is an ``nn.MultiheadAttention`` with one packed projection."""
    mha = getattr(block, "attn", None)
    return isinstance(mha, nn.MultiheadAttention) and mha._qkv_same_embed_dim


def row_attention(mha: nn.MultiheadAttention, h: Tensor, rows: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
    """``mha``'s self-attention over batch-first ``h`` ``(B, S, D)`` for the query at row
    ``rows[b]`` of each sample only: ``(B, 1, D)``. Keys and values are every row's;
    ``attn_mask`` (additive ``(S, S)``) contributes its ``rows`` rows."""
    b, s, d = h.shape
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    q = F.linear(_rows_of(h, rows), w[:d], None if bias is None else bias[:d])
    k, v = F.linear(h, w[d:], None if bias is None else bias[d:]).chunk(2, dim=-1)
    heads = lambda z: z.reshape(b, z.shape[1], mha.num_heads, d // mha.num_heads).transpose(1, 2)  # noqa: E731
    mask = None if attn_mask is None else attn_mask.to(h.dtype)[rows][:, None, None, :]
    a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
    return mha.out_proj(a.transpose(1, 2).reshape(b, 1, d))


def run_block_rows(block: nn.Module, x: Tensor, rows: Tensor, attn_mask: Optional[Tensor] = None,
                   post_attention: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """:func:`run_block` for the outputs at row ``rows[b]`` of each sample only
    (``(B, 1, D)``): every row's keys and values, the query, output projection and MLP
    of the rows that are read. Exact: a block's output at a row depends on the other rows
    only through their keys and values."""
    a = row_attention(block.attn, block.ln_1(x), rows, attn_mask)
    if post_attention is not None:
        a = post_attention(a)
    x = _rows_of(x, rows) + block.ls_1(a)
    return x + block.ls_2(run_mlp(block.mlp, block.ln_2(x)))


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


# ------------------------------------------------------------------------ the adapter
@dataclass(frozen=True)
class VideoAttention:
    """How the visual blocks attend over a packed video ``(B, G + T*L, D)``: ``num_global``
    leading global tokens, ``num_frames`` frames, ``mode`` (Table 3b). Passed to every
    :meth:`Backbone.run_visual` call; nothing is stored in the CLIP."""

    num_global: int
    num_frames: int
    mode: str = "global_local"

    def __post_init__(self) -> None:
        check_mode(self.mode)


BlockHook = Optional[Callable[[int], Optional[Callable[[Tensor], Tensor]]]]


@dataclass(frozen=True)
class Hooks:
    """What a method changes in a tower's forward, block by block (all optional):

    * ``before(i, x) -> x``: the residual stream entering block i (deep prompts, ST-Adapters);
    * ``post_attention(i)``: a map of block i's attention output before the residual add
      (Houlsby adapters), or None;
    * ``attention(i)``: a replacement of block i's attention on the normalised input
      (batch-first ``(B, S, D) -> (B, S, D)``), or None for the tower's own."""

    before: Optional[Callable[[int, Tensor], Tensor]] = None
    post_attention: BlockHook = None
    attention: BlockHook = None


NO_HOOKS = Hooks()


@dataclass(frozen=True, eq=False)
class Backbone:
    """The one view of an open_clip CLIP that dgl-rs methods use (checked at construction:
    anything unrecognised is a TypeError naming what is missing). Holds no state of its
    own: two Backbones of one CLIP are interchangeable."""

    clip: nn.Module
    visual: nn.Module = field(init=False, repr=False)
    text: TextTower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "visual", vision_tower(self.clip))
        object.__setattr__(self, "text", text_tower(self.clip))

    # ---- shapes
    @property
    def vision_width(self) -> int:
        return self.visual.transformer.width

    @property
    def text_width(self) -> int:
        return self.text.width

    @property
    def vision_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    @property
    def text_layers(self) -> int:
        return len(self.text.transformer.resblocks)

    @property
    def image_size(self) -> tuple:
        size = self.visual.image_size
        return tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    @property
    def patch_size(self) -> int:
        p = self.visual.patch_size
        return p[0] if isinstance(p, (tuple, list)) else int(p)

    @property
    def grid(self) -> tuple:
        """Patches per side ``(h, w)``."""
        return tuple(s // self.patch_size for s in self.image_size)

    @property
    def num_heads(self) -> int:
        return self.visual.transformer.resblocks[0].attn.num_heads

    @property
    def output_width(self) -> int:
        """Width of :meth:`project_visual`'s output (the joint embedding's)."""
        proj = self.visual.proj
        return proj.shape[1] if proj is not None else self.vision_width

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def text_positions(self) -> Tensor:
        """The text tower's positional embedding ``(context, D_t)``."""
        return self.text.positional_embedding

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale

    @property
    def origin(self) -> Optional[dict]:
        """``{"model", "pretrained"}`` the CLIP was loaded with (by :func:`~.loading.load_clip`
        or from a released checkpoint); None for a CLIP built elsewhere."""
        return getattr(self.clip, "dgl_rs_origin", None)

    @property
    def mean_std(self) -> tuple:
        """``(mean, std)`` of the image normalisation the CLIP was trained with (open_clip's
        ``visual.preprocess_cfg``; OpenAI's when the model records none)."""
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        return (tuple(cfg.get("mean") or OPENAI_MEAN), tuple(cfg.get("std") or OPENAI_STD))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def signature(self) -> dict:
        """The shape a saved method file records and checks on load."""
        return dict(vision_width=self.vision_width, vision_layers=self.vision_layers,
                    image_size=list(self.image_size), patch_size=self.patch_size,
                    text_width=self.text_width, text_layers=self.text_layers)

    # ---- visual tower
    def embed_frames(self, images: Tensor) -> Tensor:
        """Patch embedding, class token, positional embedding, ln_pre, in the backbone's
        dtype: ``(N, 3, H, W) -> (N, 1 + P, D_v)``, exactly open_clip's
        ``VisionTransformer._embeds``."""
        v = self.visual
        x = v.conv1(images.to(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(v.patch_dropout(x))

    def class_token(self) -> Tensor:
        """The class token as every frame's sequence starts it: ``ln_pre(class_embedding +
        positional_embedding[0])``, ``(D_v,)``."""
        v = self.visual
        x = v.class_embedding + v.positional_embedding[0].to(v.class_embedding.dtype)
        return v.ln_pre(x.view(1, 1, -1)).view(-1)

    def project_visual(self, tokens: Tensor) -> Tensor:
        """ln_post then proj of pooled tokens ``(..., D_v) -> (..., D_out)``."""
        x = self.visual.ln_post(tokens)
        return x @ self.visual.proj if self.visual.proj is not None else x

    def attention_weights(self, i: int) -> tuple:
        """``(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads)`` of
        visual block i's attention (an nn.MultiheadAttention or a GlobalLocalAttention)."""
        a = self.visual.transformer.resblocks[i].attn
        return a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias, a.num_heads

    def block_attention(self, i: int) -> nn.Module:
        """Visual block i's own attention module (an ``nn.MultiheadAttention``), for code
        that calls it the way open_clip does (the released DGL code's two-call attention)."""
        return self.visual.transformer.resblocks[i].attn

    def visual_attention(self, i: int, h: Tensor, attention: VideoAttention, need_weights: bool = False):
        """Visual block i's attention weights applied to the normalised packed video ``h``
        as the fused global-local op (``(out, weights)`` with ``need_weights``)."""
        w_in, b_in, w_out, b_out, heads = self.attention_weights(i)
        return global_local_attention(h, w_in, b_in, w_out, b_out, heads, attention.num_global,
                                      attention.num_frames, mode=attention.mode, need_weights=need_weights)

    def masked_attention(self, i: int, h: Tensor, mask: Tensor) -> Tensor:
        """Visual block i's attention weights as plain multi-head attention of ``h``
        ``(B, S, D)`` under a boolean ``(S, S)`` mask (True: may attend)."""
        return masked_attention(h, self.attention_weights(i), mask)

    def run_visual(self, x: Tensor, attention: VideoAttention, hooks: Hooks = NO_HOOKS,
                   checkpoint: bool = False, read_global: Optional[int] = None) -> Tensor:
        """Every visual block over the packed video ``x`` ``(B, G + T*L, D_v)``, batch first;
        ``checkpoint``: each block recomputed in the backward instead of saving its
        activations (:func:`_run_blocks`). ``read_global=j``: only global token j is read
        after the last block, which computes just it (a global token attends to every
        token unless ``mode`` is ``"local"``) -> ``(B, 1, D_v)``."""
        own = lambda i: lambda h: self.visual_attention(i, h, attention)  # noqa: E731
        rows = None
        if read_global is not None:
            if not 0 <= read_global < attention.num_global:
                raise ValueError(f"`read_global` must index one of the {attention.num_global} global tokens, "
                                 f"got {read_global!r}")
            rows = torch.full((x.shape[0],), read_global, dtype=torch.long, device=x.device)
            if attention.mode == "local":  # its global tokens average per-frame attentions
                return _run_blocks(self.visual.transformer, x, hooks, own_attention=own,
                                   checkpoint=checkpoint)[:, read_global:read_global + 1]
        return _run_blocks(self.visual.transformer, x, hooks, own_attention=own, checkpoint=checkpoint, rows=rows)

    # ---- text tower
    def embed_text(self, tokens: Tensor) -> Tensor:
        """Token plus positional embedding ``(B, C) -> (B, C, D_t)``."""
        x = self.text.token_embedding(tokens)
        return x + self.text.positional_embedding[:tokens.shape[1]].to(x.dtype)

    def run_text(self, x: Tensor, attn_mask: Tensor, hooks: Hooks = NO_HOOKS, checkpoint: bool = False,
                 eot_pos: Optional[Tensor] = None) -> Tensor:
        """Every text block over ``x`` ``(B, S, D_t)`` under ``attn_mask`` (additive ``(S, S)``);
        with ``eot_pos`` ``(B,)`` the last block computes only the EOT token it reads ->
        ``(B, 1, D_t)``."""
        return _run_blocks(self.text.transformer, x, hooks, attn_mask=attn_mask, checkpoint=checkpoint, rows=eot_pos)

    def pool_text(self, x: Tensor, eot_pos: Optional[Tensor] = None) -> Tensor:
        """``ln_final``, the token at ``eot_pos`` of each row (``None``: ``x`` is ``(B, 1, D_t)``,
        that token already), the text projection: ``(B, D_out)``."""
        x = x[:, 0] if eot_pos is None else x[torch.arange(x.shape[0], device=x.device), eot_pos]
        pooled = self.text.ln_final(x)
        proj = self.text.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def text_block(self, i: int) -> nn.Module:
        """Text block i (to copy its weights, as CLIP4Clip's seqTransf does)."""
        return self.text.transformer.resblocks[i]

    def remove_dgl(self) -> None:
        """Undo :func:`apply_dgl` on this CLIP (methods never apply it)."""
        remove_dgl(self.visual)

    # ---- the plain CLIP (pretraining the backbone itself)
    def encode_image(self, images: Tensor) -> Tensor:
        return self.clip.encode_image(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.clip.encode_text(tokens)


def _run_blocks(transformer: nn.Module, x: Tensor, hooks: Hooks, attn_mask: Optional[Tensor] = None,
                own_attention=None, checkpoint: bool = False, rows: Optional[Tensor] = None) -> Tensor:
    """Every block of ``transformer`` over batch-first ``x`` with ``hooks``; a block's
    attention is the hook's replacement, else ``own_attention(i)``, else the block's own.
    With ``checkpoint`` (and a graph being recorded) each block, the ``before`` hook aside,
    keeps only its input for the backward and is run again there (activation
    checkpointing, non-reentrant: frozen or trainable weights, custom ops, autocast).
    ``rows`` ``(B,)``: only row ``rows[b]`` of each sample is read after the last block,
    which then computes just those (:func:`run_block_rows`; the caller vouches that the
    block's own attention is plain self-attention at those rows) -> ``(B, 1, D)``."""
    first = batch_first(transformer)
    last = len(transformer.resblocks) - 1
    for i, blk in enumerate(transformer.resblocks):
        if hooks.before is not None:
            x = hooks.before(i, x)
        attn = hooks.attention(i) if hooks.attention is not None else None
        post = hooks.post_attention(i) if hooks.post_attention is not None else None
        if i == last and rows is not None and attn is None and _plain_attention(blk):
            step = functools.partial(run_block_rows, blk, rows=rows, attn_mask=attn_mask, post_attention=post)
            rows = None  # done
        else:
            if attn is None and own_attention is not None:
                attn = own_attention(i)
            step = functools.partial(run_block, blk, first=first, attn_mask=attn_mask, post_attention=post,
                                     attention=attn)
        if checkpoint and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(step, x, use_reentrant=False)
        else:
            x = step(x)
    return x if rows is None else _rows_of(x, rows)


def masked_attention(h: Tensor, weights: tuple, mask: Tensor) -> Tensor:
    """Multi-head self-attention of ``h`` ``(B, S, D)`` with a resblock's weights
    (:func:`attention_weights`) under a boolean mask (plain PyTorch)."""
    w_in, b_in, w_out, b_out, heads = weights
    bsz, s, d = h.shape
    q, k, v = torch.nn.functional.linear(h, w_in.to(h.dtype), None if b_in is None else b_in.to(h.dtype)).chunk(3, -1)
    split = lambda z: z.reshape(bsz, s, heads, d // heads).transpose(1, 2)  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask,
                                                           scale=1.0 / math.sqrt(d // heads))
    return torch.nn.functional.linear(out.transpose(1, 2).reshape(bsz, s, d), w_out.to(h.dtype),
                                      None if b_out is None else b_out.to(h.dtype))
