"""``DGL``: an open_clip CLIP patched for video with dynamic global-local prompts.

See DGL-SPEC sections 1-6. The backbone is frozen; the trainable parameters are
the global prompts and the prompt generator (< 1% of ViT-B/32's).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import patch
from .prompts import LinearPromptGenerator, TransformerPromptGenerator, vpt_bound

GENERATORS = ("transformer", "linear", None)
POSTFIX = ("before_eot", "after_padding")
POOLS = ("global", "frame_cls_mean")
_FORMAT = "dgl-rs-prompts/1"


def tokenize(texts, context_length: int = 32) -> Tensor:
    """open_clip's tokenizer: ``[SOT, words..., EOT, 0...]``, ``(len(texts), context_length)`` int64.
    Captions longer than the context are cut and still end with EOT."""
    import open_clip

    if isinstance(texts, str):
        texts = [texts]
    return open_clip.tokenize(list(texts), context_length=context_length)


def symmetric_infonce(logits: Tensor) -> Tensor:
    """Mean of the cross-entropy over rows (text -> video) and columns (video -> text);
    ``logits`` ``(B, B)``, the matching pairs on the diagonal."""
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"`logits` must be a square (B, B) matrix, got {tuple(logits.shape)}")
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class DGL(nn.Module):
    """Dynamic Global-Local prompt tuning around a frozen open_clip CLIP.

    Args:
        clip_model: an open_clip ``CLIP`` with a ``VisionTransformer`` and a text
            ``Transformer`` of ``nn.MultiheadAttention`` blocks. Every parameter is
            frozen (``logit_scale`` too) and the visual attention is replaced by
            :class:`dgl_rs.GlobalLocalAttention` (shared weights; see :meth:`unpatch`).
        num_frames: T, frames per video.
        generator: ``"transformer"`` (DGL-Transformer), ``"linear"`` (DGL-Linear) or
            ``None`` (no local prompts: with ``num_global=0`` and
            ``pool="frame_cls_mean"`` this is the zero-shot mean-pooling baseline).
        num_global: n_g global prompts, prepended once per video.
        num_frame_prompts: n_f prompts after each frame's CLS token, every layer.
        num_text_prompts: (n_pre, n_post); DGL-Linear needs (n_f, n_f).
        postfix: ``"before_eot"`` (the paper's figure: right after the last word) or
            ``"after_padding"`` (the released code: EOT never sees them).
        context_length: word tokens kept (positional embedding cut to it).
        pool: ``"global"`` (ln_post + proj of the first global prompt) or
            ``"frame_cls_mean"`` (mean over frames of the L2-normalised per-frame CLS
            embeddings, CLIP4Clip's meanP).

    With ``generator=None`` there are no local prompts and ``num_frame_prompts`` /
    ``num_text_prompts`` are ignored.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        num_frames: int = 12,
        generator: Optional[str] = "transformer",
        num_global: int = 4,
        num_frame_prompts: int = 4,
        num_text_prompts: Sequence[int] = (4, 4),
        postfix: str = "before_eot",
        context_length: int = 32,
        pool: str = "global",
    ) -> None:
        super().__init__()
        if generator not in GENERATORS:
            raise ValueError(f"`generator` must be one of {GENERATORS}, got {generator!r}")
        if postfix not in POSTFIX:
            raise ValueError(f"`postfix` must be one of {POSTFIX}, got {postfix!r}")
        if pool not in POOLS:
            raise ValueError(f"`pool` must be one of {POOLS}, got {pool!r}")
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive int, got {num_frames!r}")
        if num_global < 0 or (pool == "global" and num_global < 1):
            raise ValueError(f"`num_global` must be >= 1 with pool='global' (>= 0 otherwise), got {num_global}")
        if generator is None:
            num_frame_prompts, num_text_prompts = 0, (0, 0)
        num_text_prompts = tuple(int(n) for n in num_text_prompts)
        if len(num_text_prompts) != 2 or min(num_text_prompts) < 0 or num_frame_prompts < 0:
            raise ValueError(f"`num_text_prompts` must be (n_pre, n_post) >= 0, got {num_text_prompts}")
        if generator == "linear" and num_text_prompts != (num_frame_prompts, num_frame_prompts):
            raise ValueError(
                f"DGL-Linear maps each frame prompt to one prefix and one postfix prompt: `num_text_prompts` must be "
                f"({num_frame_prompts}, {num_frame_prompts}), got {num_text_prompts}"
            )

        visual = patch.vision_tower(clip_model)
        text = patch.text_tower(clip_model)
        if not 1 <= context_length <= text.context_length:
            raise ValueError(f"`context_length` must be in [1, {text.context_length}], got {context_length}")
        self.clip = clip_model
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()

        self.num_frames = num_frames
        self.generator_name = generator
        self.num_global = num_global
        self.num_frame_prompts = num_frame_prompts
        self.num_text_prompts = num_text_prompts
        self.postfix = postfix
        self.context_length = context_length
        self.pool = pool

        # Plain references (not submodules): the towers are already registered under `clip`.
        object.__setattr__(self, "_visual", visual)
        self._text = text
        self._vision_layers = len(patch.blocks(visual.transformer))
        self._text_layers = len(patch.blocks(text.transformer))
        # One generator feeds both towers; with towers of different depth (ViT-L/14:
        # 24 vision, 12 text layers) it makes max(N_v, N_t) layers and each tower
        # reads its first ones.
        layers = max(self._vision_layers, self._text_layers)
        d_v, d_t = visual.transformer.width, text.width
        bound = vpt_bound(patch.patch_size(visual), d_v)
        self.global_prompts = nn.Parameter(torch.empty(num_global, d_v).uniform_(-bound, bound)) if num_global else None
        if generator == "linear":
            self.generator = LinearPromptGenerator(layers, num_frame_prompts, d_v, d_t, bound)
        elif generator == "transformer":
            self.generator = TransformerPromptGenerator(
                layers, num_frames, num_frame_prompts, num_text_prompts, d_v, d_t, patch.num_heads(visual)
            )
        else:
            self.generator = None
        # Prompts live on the backbone's device, in its dtype if that is float32/float64;
        # for a half-precision backbone they stay float32 master weights, cast at use.
        ref = next(self.clip.parameters())
        dtype = ref.dtype if ref.dtype in (torch.float32, torch.float64) else torch.float32
        for p in self.trainable_parameters():
            p.data = p.data.to(ref.device, dtype)
        self._attn = patch.apply_dgl(visual, num_global, num_frames)

    # ---- configuration and parameters ------------------------------------------------

    @property
    def config(self) -> dict:
        return dict(
            num_frames=self.num_frames, generator=self.generator_name, num_global=self.num_global,
            num_frame_prompts=self.num_frame_prompts, num_text_prompts=list(self.num_text_prompts),
            postfix=self.postfix, context_length=self.context_length, pool=self.pool,
        )

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale

    def train(self, mode: bool = True) -> "DGL":
        super().train(mode)
        self.clip.eval()  # the backbone is frozen: no dropout or norm-statistics updates, ever
        return self

    def named_trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("clip."):
                yield name, p

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def prompt_state_dict(self) -> Dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.named_trainable_parameters()}

    def load_prompt_state_dict(self, state: Dict[str, Tensor]) -> None:
        own = dict(self.named_trainable_parameters())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"prompt state does not match this DGL config: missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"prompt `{name}` has shape {tuple(state[name].shape)}, this model expects {tuple(p.shape)}")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(state[name].to(p.device, p.dtype))

    def _backbone_signature(self) -> dict:
        v = self._visual
        return dict(vision_width=v.transformer.width, vision_layers=self._vision_layers,
                    image_size=list(patch.image_size(v)), patch_size=patch.patch_size(v),
                    text_width=self._text.width, text_layers=self._text_layers)

    def save_prompts(self, path: str) -> None:
        """Only the prompt parameters (a few MB) plus a small JSON config, in safetensors.
        Written atomically: a temp file in the same folder, then renamed."""
        from safetensors.torch import save_file

        meta = {"format": _FORMAT, "config": json.dumps(self.config), "backbone": json.dumps(self._backbone_signature())}
        tensors = {n: t.contiguous().cpu() for n, t in self.prompt_state_dict().items()}
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".prompts-", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load_prompts(cls, path: str, clip_model: nn.Module, **overrides) -> "DGL":
        """Build a DGL around ``clip_model`` from a file written by :meth:`save_prompts`."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a dgl-rs prompt file (format {meta.get('format')!r})")
            state = {k: f.get_tensor(k) for k in f.keys()}
        config = {**json.loads(meta["config"]), **overrides}
        model = cls(clip_model, **config)
        saved, have = json.loads(meta["backbone"]), model._backbone_signature()
        if saved != have:
            diff = {k: (saved.get(k), have.get(k)) for k in set(saved) | set(have) if saved.get(k) != have.get(k)}
            model.unpatch()
            raise ValueError(f"{path} was made for another backbone: (file, this model) differ in {diff}")
        model.load_prompt_state_dict(state)
        return model

    def unpatch(self) -> nn.Module:
        """Give the CLIP its original attention modules back and return it."""
        patch.remove_dgl(self._visual)
        self._attn = []
        return self.clip

    # ---- prompts ---------------------------------------------------------------------

    def generate_prompts(self, num_frames: Optional[int] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(text (layers, n_pre + n_post, D_t), frames (layers, T, n_f, D_v))``, ONCE per forward."""
        if self.generator is None:
            return None, None
        return self.generator(num_frames or self.num_frames)

    # ---- video -----------------------------------------------------------------------

    def _check_frames(self, frames: Tensor) -> None:
        if not isinstance(frames, Tensor):
            raise TypeError(f"`frames` must be a torch.Tensor, got {type(frames).__name__}")
        h, w = patch.image_size(self._visual)
        if frames.dim() != 5 or frames.shape[2] != 3 or tuple(frames.shape[3:]) != (h, w) or frames.shape[0] == 0:
            raise ValueError(f"`frames` must have shape (batch >= 1, frames, 3, {h}, {w}), got {tuple(frames.shape)}")
        if frames.shape[1] != self.num_frames:
            raise ValueError(
                f"`frames` has {frames.shape[1]} frames but the model is set to num_frames={self.num_frames} "
                "(set `model.num_frames` to change it)"
            )
        if not frames.is_floating_point():
            raise TypeError(f"`frames` must be a normalised floating tensor, got dtype {frames.dtype}")

    def encode_video(self, frames: Tensor, prompts: Optional[Tuple] = None) -> Tensor:
        """``frames`` ``(B, T, 3, H, W)`` normalised -> ``(B, D_out)`` (not L2-normalised)."""
        self._check_frames(frames)
        frame_prompts = (prompts if prompts is not None else self.generate_prompts())[1]
        return self._encode_video(frames, frame_prompts)

    def _encode_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        visual = self._visual
        b, t = frames.shape[:2]
        dtype = visual.conv1.weight.dtype
        x = patch.embed_frames(visual, frames.flatten(0, 1).to(dtype))  # (B*T, 1+P, D)
        d = x.shape[-1]
        nf, g = self.num_frame_prompts, self.num_global
        if nf:
            fp = frame_prompts[0].to(x.dtype).unsqueeze(0).expand(b, -1, -1, -1).reshape(b * t, nf, d)
            x = torch.cat([x[:, :1], fp, x[:, 1:]], dim=1)
        L = x.shape[1]
        x = x.reshape(b, t * L, d)
        if g:
            x = torch.cat([self.global_prompts.to(x.dtype).unsqueeze(0).expand(b, -1, -1), x], dim=1)
        for attn in self._attn:
            attn.num_frames = t
        first = patch.batch_first(visual.transformer)
        for i, blk in enumerate(patch.blocks(visual.transformer)):
            if i > 0 and nf:
                # Deep frame prompts: overwrite every frame's prompt slots with layer i's.
                xf = x[:, g:].reshape(b, t, L, d)
                fp = frame_prompts[i].to(x.dtype).unsqueeze(0).expand(b, -1, -1, -1)
                xf = torch.cat([xf[:, :, :1], fp, xf[:, :, 1 + nf:]], dim=2).reshape(b, t * L, d)
                x = torch.cat([x[:, :g], xf], dim=1)
            x = patch.run_block(blk, x, first)
        if self.pool == "global":
            return patch.project_visual(visual, x[:, 0])
        cls = x[:, g:].reshape(b, t, L, d)[:, :, 0]
        return F.normalize(patch.project_visual(visual, cls), dim=-1).mean(dim=1)

    # ---- text ------------------------------------------------------------------------

    def _check_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"`token_ids` must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 2 or tokens.shape[0] == 0:
            raise ValueError(f"`token_ids` must have shape (batch >= 1, <= {self.context_length}), got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`token_ids` must be int64 token ids, got {tokens.dtype}")
        if tokens.shape[1] > self.context_length:
            raise ValueError(
                f"`token_ids` has {tokens.shape[1]} positions but context_length is {self.context_length}; "
                f"tokenize with dgl_rs.tokenize(texts, context_length={self.context_length})"
            )
        if tokens.shape[1] < self.context_length:
            tokens = F.pad(tokens, (0, self.context_length - tokens.shape[1]))
        return tokens.long()

    def _text_layout(self, tokens: Tensor):
        """Where each word token and each prompt sits in the sequence with prompts.

        Returns (token_pos (B, C), prompt_pos (B, n_pre + n_post), eot_pos (B,)).
        """
        b, c = tokens.shape
        n_pre, n_post = self.num_text_prompts
        dev = tokens.device
        eot = tokens.argmax(dim=-1)  # EOT has the largest id (open_clip's argmax pooling)
        j = torch.arange(c, device=dev).unsqueeze(0).expand(b, -1)
        pre = torch.arange(1, 1 + n_pre, device=dev).unsqueeze(0).expand(b, -1)
        k = torch.arange(n_post, device=dev).unsqueeze(0)
        if self.postfix == "before_eot":
            # [SOT, pre, words, post, EOT, pads]
            token_pos = torch.where(j == 0, j, torch.where(j < eot.unsqueeze(1), j + n_pre, j + n_pre + n_post))
            post = eot.unsqueeze(1) + n_pre + k
            eot_pos = eot + n_pre + n_post
        else:
            # [SOT, pre, words, EOT, pads, post]: EOT never sees post under the causal mask
            token_pos = torch.where(j == 0, j, j + n_pre)
            post = (c + n_pre + k).expand(b, -1)
            eot_pos = eot + n_pre
        return token_pos, torch.cat([pre, post], dim=1), eot_pos

    def encode_text(self, token_ids: Tensor, prompts: Optional[Tuple] = None) -> Tensor:
        """``token_ids`` ``(B, <= context_length)`` -> ``(B, D_out)`` (not L2-normalised)."""
        tokens = self._check_tokens(token_ids)
        text_prompts = (prompts if prompts is not None else self.generate_prompts())[0]
        return self._encode_text(tokens, text_prompts)

    def _encode_text(self, tokens: Tensor, text_prompts: Optional[Tensor]) -> Tensor:
        tower = self._text
        b, c = tokens.shape
        x = tower.token_embedding(tokens)
        x = x + tower.positional_embedding[:c].to(x.dtype)
        d = x.shape[-1]
        n_prompts = sum(self.num_text_prompts)
        s = c + n_prompts
        if n_prompts:
            token_pos, prompt_pos, eot_pos = self._text_layout(tokens)
            prompt_idx = prompt_pos.unsqueeze(-1).expand(-1, -1, d)
            x = torch.zeros(b, s, d, dtype=x.dtype, device=x.device).scatter(1, token_pos.unsqueeze(-1).expand(-1, -1, d), x)
        else:
            eot_pos = tokens.argmax(dim=-1)
        mask = torch.full((s, s), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        first = patch.batch_first(tower.transformer)
        for i, blk in enumerate(patch.blocks(tower.transformer)):
            if n_prompts:
                # Deep text prompts: (over)write the prompt slots with layer i's prompts.
                x = x.scatter(1, prompt_idx, text_prompts[i].to(x.dtype).unsqueeze(0).expand(b, -1, -1))
            x = patch.run_block(blk, x, first, attn_mask=mask)
        x = tower.ln_final(x)
        pooled = x[torch.arange(b, device=x.device), eot_pos]
        return patch.project_text(tower, pooled)

    # ---- both ------------------------------------------------------------------------

    def forward(self, frames: Tensor, token_ids: Tensor) -> Tensor:
        """Similarity logits ``(B_text, B_video)``: ``logit_scale.exp()`` times the cosine."""
        self._check_frames(frames)
        tokens = self._check_tokens(token_ids)
        text_prompts, frame_prompts = self.generate_prompts()  # once, shared by both towers and the batch
        video = F.normalize(self._encode_video(frames, frame_prompts), dim=-1)
        text = F.normalize(self._encode_text(tokens, text_prompts), dim=-1)
        return self.logit_scale.exp() * text @ video.t()
