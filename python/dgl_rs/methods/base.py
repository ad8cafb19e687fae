"""``PromptedCLIP``: what every method is, the base of them all (and the zero-shot baseline).

A frozen open_clip CLIP seen through :class:`~dgl_rs.backbone.Backbone`; options declared
once (:mod:`.options`); a video forward (frames encoded alone: the fused op with no global
tokens) and a text forward whose blocks a method changes through hooks
(:meth:`_before_block`, :meth:`_post_attention`, :meth:`_attention_override`); meanP
pooling (CLIP4Clip: the mean of the L2-normalised frame embeddings); and the saved-file
format (only what training changes, plus the method, its options and the backbone's
shape). Subclasses add parameters in :meth:`_build` and cross-option checks in
:meth:`_validate`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from ..backbone.memory import check_memory
from ..backbone.openclip import Backbone, Hooks, VideoAttention
from ..data.video import normalize_frames
from ..util.files import atomic_write_bytes, safetensors_bytes
from .options import Option, class_options

FORMAT = "dgl-rs-prompts/1"
#: name -> MethodSpec of every registered method (filled by :mod:`dgl_rs.methods`): what
#: :attr:`PromptedCLIP.method` reads to name a model built directly from its class.
SPECS: Dict[str, Any] = {}

NUM_FRAMES = Option("num_frames", "int", 12, "frames per video T", low=1)
CONTEXT_LENGTH = Option("context_length", "int", 32, "word tokens kept (the positional embedding is cut to it)",
                        low=1)
#: Files written before the methods were split out of one DGL class record every DGL option;
#: a method without that option reads it only at this value (None: any value, it had no effect).
LEGACY_NEUTRAL = {"generator": None, "num_global": 0, "num_frame_prompts": 0, "num_text_prompts": [0, 0],
                  "pool": "frame_cls_mean", "attention": "global_local", "prompt_depth": None,
                  "temporal_embedding": False, "per_frame_prompts": False, "postfix": ...,
                  "linear_direction": ..., "global_init": ...}


class PromptedCLIP(nn.Module):
    """A frozen open_clip CLIP for video: each frame encoded alone, meanP; the zero-shot
    baseline as it stands, and the base of every method. Options (keyword only):
    ``num_frames`` (T) and ``context_length``; subclasses declare theirs in ``OPTIONS``."""

    OPTIONS = (NUM_FRAMES, CONTEXT_LENGTH)
    #: Leading global tokens of the packed video (DGL's; none here).
    num_global = 0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _signature(cls)

    def __init__(self, clip_model: nn.Module, checkpoint_blocks: bool = False, **options: Any) -> None:
        super().__init__()
        if not isinstance(checkpoint_blocks, bool):
            raise TypeError(f"`checkpoint_blocks` must be a bool, got {checkpoint_blocks!r}")
        #: Recompute each backbone block in the backward instead of saving its activations
        #: (less memory for one more forward of the blocks). How to run, not what the model
        #: is: not an option, not saved; set it on a built model too.
        self.checkpoint_blocks = checkpoint_blocks
        backbone = Backbone(clip_model)
        values = self.resolve_options(options, backbone)
        check_memory(backbone, values)  # before any allocation: a typo must not OOM the machine
        self.clip = clip_model
        object.__setattr__(self, "backbone", backbone)  # a view, not a submodule
        for name, opt in class_options(type(self)).items():
            setattr(self, opt.attribute, values[name])
        self.freeze_backbone()
        self._build(backbone)
        self._place_prompts()

    # ---- options ---------------------------------------------------------------------
    @classmethod
    def options(cls) -> Dict[str, Option]:
        return class_options(cls)

    @classmethod
    def resolve_options(cls, given: Dict[str, Any], backbone: Backbone) -> Dict[str, Any]:
        """Defaults filled in, every value checked (TypeError / ValueError naming it)."""
        declared = cls.options()
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown option(s) {unknown}; options are {list(declared)}")
        values = {name: opt.check(given.get(name, opt.default)) for name, opt in declared.items()}
        cls._validate(values, backbone)
        return values

    @classmethod
    def _validate(cls, values: Dict[str, Any], backbone: Backbone) -> None:
        """Checks between options, and against the backbone; may normalise ``values``."""
        if values["context_length"] > backbone.context_length:
            raise ValueError(f"`context_length` must be in [1, {backbone.context_length}], "
                             f"got {values['context_length']}")

    @classmethod
    def upgrade_config(cls, config: Dict[str, Any], path: Any = "the file") -> Dict[str, Any]:
        """A saved ``config`` as this class takes it: the keys a file written before the
        methods had their own classes records for every method are dropped where they hold
        their neutral value (:data:`LEGACY_NEUTRAL`); any other unknown key is an error."""
        declared, out = cls.options(), {}
        for key, value in config.items():
            if key in declared:
                out[key] = value
            elif key not in LEGACY_NEUTRAL or LEGACY_NEUTRAL[key] not in (..., value):
                raise ValueError(f"{path}: {cls.__name__} has no option "
                                 f"`{key}` (the file sets it to {value!r})")
        return out

    @property
    def config(self) -> dict:
        """Every option's value, as a saved file records it."""
        return {name: opt.to_json(getattr(self, opt.attribute)) for name, opt in self.options().items()}

    @property
    def method(self) -> str:
        """The method's registry name (recorded in saved files): the one ``build_method``
        gave, else the registered method of this class whose fixed options this model has
        (the one fixing the most, e.g. ``DGL(clip, generator="linear")`` is dgl-linear)."""
        given = getattr(self, "_method", None)
        if given:
            return given
        config = self.config
        fits = [s for s in SPECS.values() if s.cls is type(self)
                and all(config.get(k) == _json(self.options()[k], v) for k, v in s.pinned.items())]
        if not fits:
            raise ValueError(f"no registered method is a {type(self).__name__} with {config}: build it with "
                             "dgl_rs.build_method")
        return max(fits, key=lambda s: len(s.pinned)).name

    @property
    def fixed_num_frames(self) -> bool:
        """Whether something is learned per frame position (then T cannot change)."""
        return False

    # ---- construction ----------------------------------------------------------------
    def _build(self, backbone: Backbone) -> None:
        """Add this method's parameters (subclasses; call ``super()._build`` first)."""

    def _place_prompts(self) -> None:
        """Own parameters live on the backbone's device, in its dtype if that is float32/float64;
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

    def train(self, mode: bool = True) -> "PromptedCLIP":
        super().train(mode)
        self.clip.eval()  # the backbone is frozen: no dropout or norm-statistics updates, ever
        return self

    def unpatch(self) -> nn.Module:
        """The CLIP (models never change its modules; this also undoes :func:`apply_dgl`)."""
        self.backbone.remove_dgl()
        return self.clip

    # ---- parameters ------------------------------------------------------------------
    @property
    def logit_scale(self) -> Tensor:
        return self.backbone.logit_scale

    def named_own_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """The parameters this method adds to the CLIP (trained or not)."""
        return ((n, p) for n, p in self.named_parameters() if not n.startswith("clip."))

    def named_trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def lr_scale(self, name: str) -> float:
        """The factor on the schedule's lr for trainable parameter ``name`` (the trainer's
        optimizer groups read it): 1 unless a method says otherwise."""
        return 1.0

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
                raise ValueError(f"prompt `{name}` has shape {tuple(state[name].shape)}, this model expects "
                                 f"{tuple(p.shape)}")
            if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
                raise ValueError(f"prompt `{name}` holds NaN or inf values")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(state[name].to(p.device, p.dtype))

    # ---- saved files -----------------------------------------------------------------
    def backbone_signature(self) -> dict:
        return self.backbone.signature()

    def save_prompts(self, path: str) -> None:
        """Only the trained parameters plus the method, its options, the backbone's shape
        and (when known) the name and weights it was loaded from, in safetensors (keys in a
        fixed order: the same model gives the same bytes). Written atomically."""
        meta = {"format": FORMAT, "method": self.method, "config": json.dumps(self.config, sort_keys=True),
                "backbone": json.dumps(self.backbone_signature(), sort_keys=True)}
        if self.backbone.origin:  # the CLIP's name and weights: the file alone rebuilds the model
            meta["origin"] = json.dumps(self.backbone.origin, sort_keys=True)
        atomic_write_bytes(path, safetensors_bytes(self.prompt_state_dict(), meta))

    @classmethod
    def load_prompts(cls, path: str, clip_model: nn.Module, **overrides) -> "PromptedCLIP":
        """Build a model of this class around ``clip_model`` from a file written by
        :meth:`save_prompts` (:func:`dgl_rs.load_method` picks the class for any file)."""
        meta, state = read_prompt_file(path)
        try:
            config = {**cls.upgrade_config(json.loads(meta["config"]), path), **overrides}
        except ValueError as exc:
            raise ValueError(f"{exc}: the file holds a {meta.get('method')!r} model, which "
                             "dgl_rs.load_method(path, clip) rebuilds") from None
        model = cls(clip_model, **config)
        model._method = meta.get("method")
        model.check_backbone(json.loads(meta["backbone"]), path)
        model.load_prompt_state_dict(state)
        return model

    def check_backbone(self, saved: dict, path) -> None:
        have = self.backbone_signature()
        if saved != have:
            diff = {k: (saved.get(k), have.get(k)) for k in set(saved) | set(have) if saved.get(k) != have.get(k)}
            raise ValueError(f"{path} was made for another backbone: (file, this model) differ in {diff}")

    # ---- prompts (none here) ---------------------------------------------------------
    def generate_prompts(self, num_frames: Optional[int] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(text prompts, frame prompts)`` for one forward (None: the method has none)."""
        return None, None

    # ---- video -----------------------------------------------------------------------
    def _check_frames(self, frames: Tensor) -> None:
        if not isinstance(frames, Tensor):
            raise TypeError(f"`frames` must be a torch.Tensor, got {type(frames).__name__}")
        h, w = self.backbone.image_size
        if frames.dim() != 5 or frames.shape[2] != 3 or tuple(frames.shape[3:]) != (h, w) or frames.shape[0] == 0:
            raise ValueError(f"`frames` must have shape (batch >= 1, frames, 3, {h}, {w}), got {tuple(frames.shape)}")
        if frames.shape[1] != self.num_frames:
            raise ValueError(
                f"`frames` has {frames.shape[1]} frames but the model is set to num_frames={self.num_frames} "
                "(set `model.num_frames` to change it)")
        if not frames.is_floating_point():
            raise TypeError(f"`frames` must be a normalised floating tensor (B, T, 3, H, W) or uint8 RGB "
                            f"(B, T, H, W, 3), got dtype {frames.dtype}")

    def _video_input(self, frames: Tensor) -> Tensor:
        """``frames`` checked; uint8 RGB ``(B, T, H, W, 3)`` (a loader's batch, copied to the
        device as uint8) is first normalised with the backbone's mean/std on its device."""
        if isinstance(frames, Tensor) and frames.dtype == torch.uint8 and frames.dim() == 5 and frames.shape[-1] == 3:
            frames = normalize_frames(frames, *self.backbone.mean_std)
        self._check_frames(frames)
        return frames

    def encode_video(self, frames: Tensor, prompts: Optional[Tuple] = None) -> Tensor:
        """``frames`` ``(B, T, 3, H, W)`` normalised, or uint8 RGB ``(B, T, H, W, 3)`` (normalised
        here, on its device) -> ``(B, D_out)`` (not L2-normalised)."""
        frames = self._video_input(frames)
        frame_prompts = (prompts if prompts is not None else self.generate_prompts())[1]
        return self._encode_video(frames, frame_prompts)

    def _pack_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        """The packed sequence ``(B, G + T*L, D)`` before block 0: here the frames' tokens."""
        b = frames.shape[0]
        x = self.backbone.embed_frames(frames.flatten(0, 1))
        return x.reshape(b, -1, x.shape[-1])

    def _encode_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        b, t = frames.shape[:2]
        x = self._pack_video(frames, frame_prompts)
        L = (x.shape[1] - self.num_global) // t
        hooks = Hooks(before=lambda i, x: self._before_block(i, x, frame_prompts, b, t, L),
                      post_attention=lambda i: self._post_attention("visual", i),
                      attention=lambda i: self._attention_override(i, b, t, L))
        x = self.backbone.run_visual(x, self._video_attention(t), hooks, checkpoint=self.checkpoint_blocks,
                                     read_global=self._read_global())
        return self._pool(x, b, t, L)

    def _read_global(self) -> Optional[int]:
        """The one global token :meth:`_pool` reads of the last block's output (it is then
        the only one computed there), or None: the pool reads more."""
        return None

    def _video_attention(self, t: int) -> VideoAttention:
        return VideoAttention(self.num_global, t)

    def _before_block(self, i: int, x: Tensor, frame_prompts: Optional[Tensor], b: int, t: int, L: int) -> Tensor:
        """The packed video entering visual block i (deep prompts, ST-Adapters)."""
        return x

    def _post_attention(self, tower: str, i: int):
        """What maps block i's attention output before the residual add (adapters)."""
        return None

    def _attention_override(self, i: int, b: int, t: int, L: int):
        """Another attention for visual block i (None: the global-local op)."""
        return None

    def _frame_cls(self, x: Tensor, b: int, t: int, L: int) -> Tensor:
        """The frames' class tokens ``(B, T, D)`` of a packed sequence."""
        return x[:, self.num_global:].reshape(b, t, L, -1)[:, :, 0]

    def _pool(self, x: Tensor, b: int, t: int, L: int) -> Tensor:
        """The video embedding from the last layer's packed sequence: meanP."""
        return self._pool_frames(self.backbone.project_visual(self._frame_cls(x, b, t, L)))

    def _pool_frames(self, frame_emb: Tensor) -> Tensor:
        """``(B, T, D_out)`` frame embeddings -> the video's: CLIP4Clip's meanP (the mean of
        the L2-normalised frame embeddings)."""
        return F.normalize(frame_emb, dim=-1).mean(dim=1)

    # ---- text ------------------------------------------------------------------------
    def _check_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"`token_ids` must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dim() != 2 or tokens.shape[0] == 0:
            raise ValueError(f"`token_ids` must have shape (batch >= 1, <= {self.context_length}), "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`token_ids` must be int64 token ids, got {tokens.dtype}")
        if tokens.shape[1] > self.context_length:
            raise ValueError(
                f"`token_ids` has {tokens.shape[1]} positions but context_length is {self.context_length}; "
                f"tokenize with dgl_rs.tokenize(texts, context_length={self.context_length})")
        if tokens.shape[1] < self.context_length:
            tokens = F.pad(tokens, (0, self.context_length - tokens.shape[1]))
        return tokens.long()

    def encode_text(self, token_ids: Tensor, prompts: Optional[Tuple] = None) -> Tensor:
        """``token_ids`` ``(B, <= context_length)`` -> ``(B, D_out)`` (not L2-normalised)."""
        tokens = self._check_tokens(token_ids)
        text_prompts = (prompts if prompts is not None else self.generate_prompts())[0]
        return self._encode_text(tokens, text_prompts)

    def _text_input(self, tokens: Tensor, text_prompts: Optional[Tensor]):
        """``(x (B, S, D_t), eot position (B,), hook before each block or None)``: the
        text sequence entering block 0 (here the words alone; EOT has the largest id)."""
        return self.backbone.embed_text(tokens), tokens.argmax(dim=-1), None

    def _encode_text(self, tokens: Tensor, text_prompts: Optional[Tensor]) -> Tensor:
        x, eot_pos, before = self._text_input(tokens, text_prompts)
        s = x.shape[1]
        mask = torch.full((s, s), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        hooks = Hooks(before=before, post_attention=lambda i: self._post_attention("text", i))
        x = self.backbone.run_text(x, mask, hooks, checkpoint=self.checkpoint_blocks, eot_pos=eot_pos)
        return self.backbone.pool_text(x)  # the last block computed the EOT token only

    # ---- both ------------------------------------------------------------------------
    def forward(self, frames: Tensor, token_ids: Tensor) -> Tensor:
        """Similarity logits ``(B_text, B_video)``: ``logit_scale.exp()`` times the cosine."""
        frames = self._video_input(frames)
        tokens = self._check_tokens(token_ids)
        text_prompts, frame_prompts = self.generate_prompts()  # once, shared by both towers and the batch
        video = F.normalize(self._encode_video(frames, frame_prompts), dim=-1)
        text = F.normalize(self._encode_text(tokens, text_prompts), dim=-1)
        return self.logit_scale.exp() * text @ video.t()


def _json(opt: Option, value: Any) -> Any:
    return opt.to_json(opt.check(value))


def _signature(cls) -> inspect.Signature:
    """``cls(clip_model, *, option=default, ...)`` for help() and editors."""
    params = [inspect.Parameter("clip_model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("checkpoint_blocks", inspect.Parameter.KEYWORD_ONLY, default=False)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o.default)
               for n, o in class_options(cls).items()]
    return inspect.Signature(params)


PromptedCLIP.__signature__ = _signature(PromptedCLIP)


def read_prompt_file(path) -> Tuple[dict, Dict[str, Tensor]]:
    """``(metadata, tensors)`` of a file written by :meth:`PromptedCLIP.save_prompts`, with
    a clear ``ValueError`` naming the file when it is not one (or is damaged)."""
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
