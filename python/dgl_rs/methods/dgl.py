"""``DGL``: an open_clip CLIP patched for video with dynamic global-local prompts, and the
switches that turn it into every prompt method of the paper's Tables 1 and 3.

See DGL-SPEC sections 1-6. The backbone is frozen; the trainable parameters are the
global prompts and the prompt generator (< 1% of ViT-B/32's). The named methods
(``zero-shot``, ``vpt``, ``upt``, ``vop``, ``dgl-divided``, ...) are presets of this
class, made by :func:`dgl_rs.build_method`.
"""

from __future__ import annotations

import json
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from .. import patch
from ..memory import check_memory
from ..attention_maps import GlobalAttentionMap, global_attention_map
from ..files import atomic_write_bytes, safetensors_bytes
from ..prompts import (LINEAR_DIRECTIONS, IndependentPromptGenerator, LinearPromptGenerator,
                       TransformerPromptGenerator, vpt_bound)

GENERATORS = ("transformer", "linear", "independent", None)
POSTFIX = ("before_eot", "after_padding")
#: Table 3a: first global prompt, mean of the global prompts, mean of the frame CLS
#: tokens (CLIP4Clip's meanP), mean of both.
POOLS = ("global", "global_mean", "frame_cls_mean", "global_local_mean")
#: Table 3b, see :class:`dgl_rs.GlobalLocalAttention`.
ATTENTIONS = ("global_local", "local", "global")
#: How the global prompts start (see DGL._init_global).
GLOBAL_INITS = ("random", "cls")
FORMAT = "dgl-rs-prompts/1"


def _int(name: str, value, low: int = 0) -> int:
    """``value`` as an int >= ``low``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}")
    return int(value)


def _choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")


def method_name(config: dict) -> str:
    """The registry name of a DGL configuration built directly with ``DGL(...)`` (what a
    saved file records): the preset it matches, else ``"dgl"`` (any options)."""
    gen, g = config["generator"], config["num_global"]
    if gen is None and g == 0:
        return "zero-shot"
    if gen == "independent" and g > 0:
        return "dgl-divided"
    if gen in ("linear", "transformer"):
        return f"dgl-{gen}"
    return "dgl"


class DGL(nn.Module):
    """Dynamic Global-Local prompt tuning around a frozen open_clip CLIP.

    Args:
        clip_model: an open_clip ``CLIP`` with a ``VisionTransformer`` and a text
            ``Transformer`` of ``nn.MultiheadAttention`` blocks. Every parameter is
            frozen (``logit_scale`` too) and the visual attention is replaced by
            :class:`dgl_rs.GlobalLocalAttention` (shared weights; see :meth:`unpatch`).
            Several models may be built on one CLIP (they share its weights): each one
            sets the attention's configuration to its own at every forward.
        num_frames: T, frames per video.
        generator: ``"transformer"`` (DGL-Transformer), ``"linear"`` (DGL-Linear),
            ``"independent"`` (text and frame prompts learned separately: VPT, VoP,
            DGL-divided) or ``None`` (no local prompts: with ``num_global=0`` and
            ``pool="frame_cls_mean"`` the zero-shot mean-pooling baseline).
        num_global: n_g global prompts, prepended once per video.
        num_frame_prompts: n_f prompts after each frame's CLS token, every layer.
        num_text_prompts: (n_pre, n_post); DGL-Linear needs (n_f, n_f).
        postfix: ``"before_eot"`` (the paper's figure: right after the last word) or
            ``"after_padding"`` (the released code: EOT never sees them).
        context_length: word tokens kept (positional embedding cut to it).
        pool: the video embedding (Table 3a): ``"global"`` (ln_post + proj of the first
            global prompt), ``"global_mean"``, ``"frame_cls_mean"`` (CLIP4Clip's meanP) or
            ``"global_local_mean"``; every mean is over L2-normalised token embeddings.
        attention: ``"global_local"`` (default), ``"local"`` or ``"global"`` (Table 3b).
        linear_direction: DGL-Linear's ``"visual_to_text"`` (default) or
            ``"text_to_visual"`` (Table 3e).
        prompt_depth: prompts in the first k layers only (default: every layer); deeper
            layers carry the prompt tokens' hidden states on, as VPT-shallow does.
        temporal_embedding: add a learned per-frame-position vector (zero at start) to
            every frame's prompts, so that prompts shared by all frames can tell frame
            order (fixes T).
        per_frame_prompts: ``generator="independent"`` only: a different set of frame
            prompts for every frame position (fixes T).
        global_init: ``"random"`` (VPT's uniform, the paper's) or ``"cls"`` (each global
            prompt starts as the class token after ``ln_pre``, plus small noise).

    With ``generator=None`` there are no local prompts and ``num_frame_prompts`` /
    ``num_text_prompts`` are ignored.
    """

    #: The constructor's options (what ``config`` records and ``build_method`` accepts).
    OPTIONS = ("num_frames", "generator", "num_global", "num_frame_prompts", "num_text_prompts", "postfix",
               "context_length", "pool", "attention", "linear_direction", "prompt_depth", "temporal_embedding",
               "per_frame_prompts", "global_init")

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
        attention: str = "global_local",
        linear_direction: str = "visual_to_text",
        prompt_depth: Optional[int] = None,
        temporal_embedding: bool = False,
        per_frame_prompts: bool = False,
        global_init: str = "random",
    ) -> None:
        super().__init__()
        visual, text = patch.vision_tower(clip_model), patch.text_tower(clip_model)
        self._set_config(locals(), text.context_length)
        check_memory(clip_model, DGL.config.fget(self))  # before any allocation: a typo must not OOM the machine
        self.clip = clip_model
        self.freeze_backbone()
        # Plain references (not submodules): the towers are already registered under `clip`.
        object.__setattr__(self, "_visual", visual)
        self._text = text
        self._vision_layers = len(patch.blocks(visual.transformer))
        self._text_layers = len(patch.blocks(text.transformer))
        self._build_prompts(visual, text)
        self._place_prompts()
        self._attn = patch.apply_dgl(visual, self.num_global, self.num_frames, self.attention)

    # ---- construction ----------------------------------------------------------------

    def _set_config(self, args: dict, max_context: int) -> None:
        """Check every option (TypeError / ValueError naming it) and store it."""
        _choice("generator", args["generator"], GENERATORS)
        _choice("postfix", args["postfix"], POSTFIX)
        _choice("pool", args["pool"], POOLS)
        _choice("attention", args["attention"], ATTENTIONS)
        _choice("linear_direction", args["linear_direction"], LINEAR_DIRECTIONS)
        self.num_frames = _int("num_frames", args["num_frames"], 1)
        self.num_global = _int("num_global", args["num_global"], 0)
        self.context_length = _int("context_length", args["context_length"], 1)
        if self.context_length > max_context:
            raise ValueError(f"`context_length` must be in [1, {max_context}], got {self.context_length}")
        if self.num_global == 0 and args["pool"] in ("global", "global_mean", "global_local_mean"):
            raise ValueError(f"`num_global` must be >= 1 with pool={args['pool']!r}, got 0")
        gen = args["generator"]
        n_f = _int("num_frame_prompts", args["num_frame_prompts"], 0) if gen else 0
        text = args["num_text_prompts"] if gen else (0, 0)
        if isinstance(text, (str, bytes)) or not isinstance(text, Sequence) or len(text) != 2:
            raise TypeError(f"`num_text_prompts` must be a pair (n_pre, n_post), got {text!r}")
        text = (_int("num_text_prompts[0]", text[0]), _int("num_text_prompts[1]", text[1]))
        if gen == "linear" and text != (n_f, n_f):
            raise ValueError(
                f"DGL-Linear maps each frame prompt to one prefix and one postfix prompt: `num_text_prompts` must be "
                f"({n_f}, {n_f}), got {text}")
        depth = args["prompt_depth"]
        self.prompt_depth = None if depth is None else _int("prompt_depth", depth, 1)
        for flag in ("temporal_embedding", "per_frame_prompts"):
            if not isinstance(args[flag], bool):
                raise TypeError(f"`{flag}` must be a bool, got {args[flag]!r}")
        if args["per_frame_prompts"] and gen != "independent":
            raise ValueError("`per_frame_prompts` needs generator='independent' (DGL-Transformer's are per frame already)")
        if args["temporal_embedding"] and not n_f:
            raise ValueError("`temporal_embedding` is added to the frame prompts: it needs num_frame_prompts >= 1")
        self.generator_name, self.num_frame_prompts, self.num_text_prompts = gen, n_f, text
        self.postfix, self.pool, self.attention = args["postfix"], args["pool"], args["attention"]
        self.linear_direction = args["linear_direction"]
        _choice("global_init", args["global_init"], GLOBAL_INITS)
        self.global_init = args["global_init"]
        self.temporal_embedding, self.per_frame_prompts = args["temporal_embedding"], args["per_frame_prompts"]

    def _build_prompts(self, visual: nn.Module, text: patch.TextTower) -> None:
        # One generator feeds both towers; with towers of different depth (ViT-L/14:
        # 24 vision, 12 text layers) it makes max(N_v, N_t) layers and each tower
        # reads its first ones. With a prompt depth k, only the first k.
        layers = max(self._vision_layers, self._text_layers)
        if self.prompt_depth is not None:
            layers = min(layers, self.prompt_depth)
        self._prompt_layers = layers
        d_v, d_t = visual.transformer.width, text.width
        bound = vpt_bound(patch.patch_size(visual), d_v)
        g, n_f, n_t, t = self.num_global, self.num_frame_prompts, self.num_text_prompts, self.num_frames
        self.global_prompts = nn.Parameter(self._init_global(visual, g, d_v, bound)) if g else None
        if self.generator_name == "linear":
            self.generator = LinearPromptGenerator(layers, n_f, d_v, d_t, bound, self.linear_direction)
        elif self.generator_name == "transformer":
            self.generator = TransformerPromptGenerator(layers, t, n_f, n_t, d_v, d_t, patch.num_heads(visual))
        elif self.generator_name == "independent":
            self.generator = IndependentPromptGenerator(layers, n_f, n_t, d_v, d_t, bound,
                                                        t if self.per_frame_prompts else None)
        else:
            self.generator = None
        self.frame_position = nn.Parameter(torch.zeros(t, d_v)) if self.temporal_embedding else None

    def _init_global(self, visual: nn.Module, g: int, d_v: int, bound: float) -> Tensor:
        """VPT's uniform init (``"random"``), or ``"cls"``: every global prompt starts as a
        frame's class token after ``ln_pre`` (plus VPT-uniform noise scaled by 0.1 so the
        G prompts are not interchangeable), so at step 0 the first global prompt reads the
        whole video the way CLS reads a frame, and its output is near CLIP's space."""
        noise = torch.empty(g, d_v).uniform_(-bound, bound)
        if self.global_init == "random":
            return noise
        with torch.no_grad():
            cls = patch.class_token(visual).float().cpu()
        return cls.expand(g, -1) + 0.1 * noise

    def _place_prompts(self) -> None:
        """Prompts live on the backbone's device, in its dtype if that is float32/float64;
        for a half-precision backbone they stay float32 master weights, cast at use."""
        ref = next(self.clip.parameters())
        dtype = ref.dtype if ref.dtype in (torch.float32, torch.float64) else torch.float32
        for _, p in self.named_own_parameters():
            p.data = p.data.to(ref.device, dtype)

    def freeze_backbone(self) -> None:
        """Every CLIP parameter frozen, the CLIP in eval mode (no dropout, ever)."""
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.clip.eval()

    # ---- configuration and parameters ------------------------------------------------

    @property
    def config(self) -> dict:
        return dict(
            num_frames=self.num_frames, generator=self.generator_name, num_global=self.num_global,
            num_frame_prompts=self.num_frame_prompts, num_text_prompts=list(self.num_text_prompts),
            postfix=self.postfix, context_length=self.context_length, pool=self.pool,
            attention=self.attention, linear_direction=self.linear_direction,
            prompt_depth=self.prompt_depth, temporal_embedding=self.temporal_embedding,
            per_frame_prompts=self.per_frame_prompts, global_init=self.global_init,
        )

    @property
    def method(self) -> str:
        """The method's registry name (recorded in saved files)."""
        return getattr(self, "_method", None) or method_name(self.config)

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale

    def train(self, mode: bool = True) -> "DGL":
        super().train(mode)
        self.clip.eval()  # the backbone is frozen: no dropout or norm-statistics updates, ever
        return self

    def named_own_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """The parameters this method adds to the CLIP (trained or not)."""
        for name, p in self.named_parameters():
            if not name.startswith("clip."):
                yield name, p

    def named_trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if p.requires_grad:
                yield name, p

    def lr_scale(self, name: str) -> float:
        """The factor on the schedule's lr for trainable parameter ``name`` (the trainer's
        optimizer groups read it): 1 for all of them here."""
        return 1.0

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def prompt_state_dict(self) -> Dict[str, Tensor]:
        """What training changes (the file :meth:`save_prompts` writes)."""
        return {n: p.detach().clone() for n, p in self.named_trainable_parameters()}

    def load_prompt_state_dict(self, state: Dict[str, Tensor]) -> None:
        own = dict(self.named_trainable_parameters())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"prompt state does not match this {self.method} config: missing {missing}, "
                             f"unexpected {unexpected}")
        for name, p in own.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"prompt `{name}` has shape {tuple(state[name].shape)}, this model expects {tuple(p.shape)}")
            if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
                raise ValueError(f"prompt `{name}` holds NaN or inf values")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(state[name].to(p.device, p.dtype))

    def backbone_signature(self) -> dict:
        v = self._visual
        return dict(vision_width=v.transformer.width, vision_layers=self._vision_layers,
                    image_size=list(patch.image_size(v)), patch_size=patch.patch_size(v),
                    text_width=self._text.width, text_layers=self._text_layers)

    def save_prompts(self, path: str) -> None:
        """Only the trained parameters plus the method, its options and the backbone's
        shape, in safetensors (keys in a fixed order: the same model gives the same
        bytes). Written atomically."""
        meta = {"format": FORMAT, "method": self.method, "config": json.dumps(self.config, sort_keys=True),
                "backbone": json.dumps(self.backbone_signature(), sort_keys=True)}
        atomic_write_bytes(path, safetensors_bytes(self.prompt_state_dict(), meta))

    @classmethod
    def load_prompts(cls, path: str, clip_model: nn.Module, **overrides) -> "DGL":
        """Build a model around ``clip_model`` from a file written by :meth:`save_prompts`
        (any method: :func:`dgl_rs.load_method` picks the class)."""
        meta, state = read_prompt_file(path)
        config = {**json.loads(meta["config"]), **overrides}
        model = cls(clip_model, **config)
        model._method = meta.get("method")
        model.check_backbone(json.loads(meta["backbone"]), path)
        model.load_prompt_state_dict(state)
        return model

    def check_backbone(self, saved: dict, path) -> None:
        have = self.backbone_signature()
        if saved != have:
            diff = {k: (saved.get(k), have.get(k)) for k in set(saved) | set(have) if saved.get(k) != have.get(k)}
            self.unpatch()
            raise ValueError(f"{path} was made for another backbone: (file, this model) differ in {diff}")

    def unpatch(self) -> nn.Module:
        """Give the CLIP its original attention modules back and return it."""
        patch.remove_dgl(self._visual)
        self._attn = []
        return self.clip

    # ---- prompts ---------------------------------------------------------------------

    def generate_prompts(self, num_frames: Optional[int] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(text (layers, n_pre + n_post, D_t), frames (layers, T, n_f, D_v))``, ONCE per
        forward (either may be None)."""
        if self.generator is None:
            return None, None
        t = num_frames or self.num_frames
        if self.frame_position is not None and t != self.frame_position.shape[0]:
            raise ValueError(f"the temporal embedding is learned for {self.frame_position.shape[0]} frame positions; "
                             f"got num_frames={t}")
        text, frames = self.generator(t)
        if frames is not None and self.frame_position is not None:
            frames = frames + self.frame_position.to(frames.dtype)[None, :, None, :]
        return text, frames

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

    @torch.no_grad()
    def global_attention(self, frames: Tensor, layer: int = -1, query=0) -> GlobalAttentionMap:
        """Where global prompt ``query`` (an index, or ``"mean"`` over all G) looks in visual
        block ``layer`` (paper Fig. 5), heads averaged: ``.frames (B, T)``, the attention
        mass on each frame; ``.patches (B, T, P)``, on each patch; ``.on_global (B,)``, on
        the global tokens (see :class:`dgl_rs.attention_maps.GlobalAttentionMap`). The
        fused op returns only the G query rows. ``frames`` as for :meth:`encode_video`."""
        self._check_frames(frames)
        n = self._vision_layers
        if not self.num_global:
            raise ValueError(f"{self.method} has no global prompts (num_global=0): nothing to show")
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"`layer` must be an int in [{-n}, {n}) (the visual blocks), got {layer!r}")
        attn = patch.apply_dgl(self._visual, self.num_global, self.num_frames, self.attention)[layer]
        with attn.record_weights() as rec:
            self.encode_video(frames)
        if not rec:
            raise ValueError(f"{self.method} replaces the attention of visual block {layer % n}: no global-local weights")
        grid = tuple(s // patch.patch_size(self._visual) for s in patch.image_size(self._visual))
        return global_attention_map(rec[-1], self.num_frames, self.num_frame_prompts, grid, query, layer % n)

    def _pack_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        """The packed sequence ``(B, G + T*L, D)`` before block 0 (DGL-SPEC section 2)."""
        visual = self._visual
        b, t = frames.shape[:2]
        x = patch.embed_frames(visual, frames.flatten(0, 1).to(visual.conv1.weight.dtype))  # (B*T, 1+P, D)
        d, nf = x.shape[-1], self.num_frame_prompts
        if nf:
            fp = frame_prompts[0].to(x.dtype).unsqueeze(0).expand(b, -1, -1, -1).reshape(b * t, nf, d)
            x = torch.cat([x[:, :1], fp, x[:, 1:]], dim=1)
        x = x.reshape(b, -1, d)
        if self.num_global:
            x = torch.cat([self.global_prompts.to(x.dtype).unsqueeze(0).expand(b, -1, -1), x], dim=1)
        return x

    def _encode_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        b, t = frames.shape[:2]
        x = self._pack_video(frames, frame_prompts)
        L = (x.shape[1] - self.num_global) // t
        self._attn = patch.apply_dgl(self._visual, self.num_global, t, self.attention)
        first = patch.batch_first(self._visual.transformer)
        for i, blk in enumerate(patch.blocks(self._visual.transformer)):
            x = self._before_block(i, x, frame_prompts, b, t, L)
            x = patch.run_block(blk, x, first, post_attention=self._post_attention("visual", i),
                                attention=self._attention_override(i, b, t, L))
        return self._pool(x, b, t, L)

    def _before_block(self, i: int, x: Tensor, frame_prompts: Optional[Tensor], b: int, t: int, L: int) -> Tensor:
        """Deep frame prompts: before block i (0 < i < depth) every frame's prompt slots are
        overwritten with layer i's (``(T, n_f, D)``, or ``(B, T, n_f, D)`` per video).

        Written in place into the previous block's output (a fresh tensor nothing has
        saved yet), instead of rebuilding the packed sequence with two concatenations per
        layer; autograd routes the slots' gradient to the prompts."""
        g, nf = self.num_global, self.num_frame_prompts
        if not (0 < i < self._prompt_layers and nf):
            return x
        x = x.contiguous()
        x.narrow(1, g, t * L).view(b, t, L, -1)[:, :, 1:1 + nf] = frame_prompts[i].to(x.dtype)
        return x

    def _post_attention(self, tower: str, i: int):
        """What maps block i's attention output before the residual add (adapters)."""
        return None

    def _attention_override(self, i: int, b: int, t: int, L: int):
        """Another attention for visual block i (None: the global-local op)."""
        return None

    def _pool(self, x: Tensor, b: int, t: int, L: int) -> Tensor:
        """The video embedding from the last layer's packed sequence (Table 3a)."""
        visual, g = self._visual, self.num_global
        if self.pool == "global":
            return patch.project_visual(visual, x[:, 0])
        if self.pool == "frame_cls_mean":
            return self._pool_frames(patch.project_visual(visual, x[:, g:].reshape(b, t, L, -1)[:, :, 0]))
        tokens = [x[:, :g]]
        if self.pool == "global_local_mean":
            tokens.append(x[:, g:].reshape(b, t, L, -1)[:, :, 0])
        return F.normalize(patch.project_visual(visual, torch.cat(tokens, dim=1)), dim=-1).mean(dim=1)

    def _pool_frames(self, frame_emb: Tensor) -> Tensor:
        """``(B, T, D_out)`` frame embeddings -> the video's: CLIP4Clip's meanP (the mean of
        the L2-normalised frame embeddings)."""
        return F.normalize(frame_emb, dim=-1).mean(dim=1)

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
            if n_prompts and i < self._prompt_layers:
                # Deep text prompts: (over)write the prompt slots with layer i's prompts.
                x = x.scatter_(1, prompt_idx, text_prompts[i].to(x.dtype).unsqueeze(0).expand(b, -1, -1))
            x = patch.run_block(blk, x, first, attn_mask=mask, post_attention=self._post_attention("text", i))
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


def read_prompt_file(path) -> Tuple[dict, Dict[str, Tensor]]:
    """``(metadata, tensors)`` of a file written by :meth:`DGL.save_prompts`, with a
    clear ``ValueError`` naming the file when it is not one (or is damaged)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a dgl-rs prompt file (format {meta.get('format')!r})")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable dgl-rs prompt file ({exc})") from exc
    for key in ("config", "backbone"):
        try:
            json.loads(meta[key])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: damaged metadata `{key}` ({exc})") from exc
    return meta, state
