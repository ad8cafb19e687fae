"""``DeepPrompts``: deep frame and text prompts from a prompt generator (DGL-SPEC 2-5).

VPT and UPT are presets of this class; VoP, Efficient Prompt and DGL build on it. Frame
prompts sit right after each frame's CLS token (no positional embedding), text prompts
after SOT (n_pre) and after the last word or after the padding (n_post); both are
overwritten before every block up to ``prompt_depth``. The generator runs ONCE per
forward and its prompts are shared by the batch.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..backbone.openclip import Backbone
from ..nn.prompts import (LINEAR_DIRECTIONS, IndependentPromptGenerator, LinearPromptGenerator,
                       TransformerPromptGenerator, vpt_bound)
from .base import PromptedCLIP
from .options import Option

GENERATORS = ("transformer", "linear", "independent", None)
POSTFIX = ("before_eot", "after_padding")


class DeepPrompts(PromptedCLIP):
    """A frozen CLIP with deep frame and text prompts, frames encoded alone, meanP.

    Options:
        generator: ``"transformer"`` (one unified prompt transformer: UPT, DGL-Transformer),
            ``"linear"`` (DGL-Linear: text prompts linear maps of the frame prompts),
            ``"independent"`` (text and frame prompts learned separately: VPT, VoP) or
            ``None`` (no prompts).
        num_frame_prompts: n_f prompts after each frame's CLS token, every layer.
        num_text_prompts: (n_pre, n_post); the linear generator needs (n_f, n_f).
        postfix: ``"before_eot"`` (the paper's figure: right after the last word) or
            ``"after_padding"`` (the released code: EOT never sees them).
        prompt_depth: prompts in the first k layers only (None: every layer); deeper
            layers carry the prompt tokens' hidden states on, as VPT-shallow does.
        per_frame_prompts: ``generator="independent"`` only: a different set of frame
            prompts for every frame position (fixes T).
        linear_direction: the linear generator's ``"visual_to_text"`` (default) or
            ``"text_to_visual"`` (Table 3e).
    With ``generator=None`` the prompt counts are ignored (0).
    """

    OPTIONS = (
        Option("generator", "choice", "transformer", "local prompt generator (without --method, linear or "
               "transformer picks --method dgl-GENERATOR)", choices=GENERATORS,
               attr="generator_name"),
        Option("num_frame_prompts", "int", 4, "frame prompts per frame n_f", low=0),
        Option("num_text_prompts", "pair", (4, 4), "text prefix and postfix prompts (n_pre, n_post), Table 3c"),
        Option("postfix", "choice", "before_eot", "where text postfix prompts sit (spec section 4)", choices=POSTFIX),
        Option("prompt_depth", "int", None, "prompts in the first K layers only (default: every layer)", low=1,
               nullable=True),
        Option("per_frame_prompts", "bool", False, "independent generator: a different set of frame prompts per "
               "frame position"),
        Option("linear_direction", "choice", "visual_to_text", "the linear generator's projection direction "
               "(Table 3e)", choices=LINEAR_DIRECTIONS),
    )

    @classmethod
    def _validate(cls, values: Dict[str, Any], backbone: Backbone) -> None:
        super()._validate(values, backbone)
        gen = values["generator"]
        if not gen:
            values["num_frame_prompts"], values["num_text_prompts"] = 0, (0, 0)
        n_f = values["num_frame_prompts"]
        if gen == "linear" and values["num_text_prompts"] != (n_f, n_f):
            raise ValueError(
                f"DGL-Linear maps each frame prompt to one prefix and one postfix prompt: `num_text_prompts` must "
                f"be ({n_f}, {n_f}), got {values['num_text_prompts']}")
        if values["per_frame_prompts"] and gen != "independent":
            raise ValueError("`per_frame_prompts` needs generator='independent' (DGL-Transformer's are per frame "
                             "already)")

    @property
    def fixed_num_frames(self) -> bool:
        return self.generator_name == "transformer" or self.per_frame_prompts

    def _build(self, backbone: Backbone) -> None:
        super()._build(backbone)
        # One generator feeds both towers; with towers of different depth (ViT-L/14:
        # 24 vision, 12 text layers) it makes max(N_v, N_t) layers and each tower
        # reads its first ones. With a prompt depth k, only the first k.
        layers = max(backbone.vision_layers, backbone.text_layers)
        self._prompt_layers = layers if self.prompt_depth is None else min(layers, self.prompt_depth)
        self.generator = self._make_generator(backbone, self._prompt_layers)

    def _make_generator(self, backbone: Backbone, layers: int):
        d_v, d_t, n_f, n_t = backbone.vision_width, backbone.text_width, self.num_frame_prompts, self.num_text_prompts
        bound = vpt_bound(backbone.patch_size, d_v)
        if self.generator_name == "linear":
            return LinearPromptGenerator(layers, n_f, d_v, d_t, bound, self.linear_direction)
        if self.generator_name == "transformer":
            return TransformerPromptGenerator(layers, self.num_frames, n_f, n_t, d_v, d_t, backbone.num_heads)
        if self.generator_name == "independent":
            return IndependentPromptGenerator(layers, n_f, n_t, d_v, d_t, bound,
                                              self.num_frames if self.per_frame_prompts else None)
        return None

    # ---- prompts ---------------------------------------------------------------------
    def generate_prompts(self, num_frames: Optional[int] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(text (layers, n_pre + n_post, D_t), frames (layers, T, n_f, D_v))``, ONCE per
        forward (either may be None)."""
        if self.generator is None:
            return None, None
        return self.generator(num_frames or self.num_frames)

    # ---- video -----------------------------------------------------------------------
    def _pack_video(self, frames: Tensor, frame_prompts: Optional[Tensor]) -> Tensor:
        """Each frame's tokens with layer 0's n_f prompts right after its CLS token."""
        b, t = frames.shape[:2]
        x = self.backbone.embed_frames(frames.flatten(0, 1))  # (B*T, 1+P, D)
        d, nf = x.shape[-1], self.num_frame_prompts
        if nf:
            fp = frame_prompts[0].to(x.dtype).unsqueeze(0).expand(b, -1, -1, -1).reshape(b * t, nf, d)
            x = torch.cat([x[:, :1], fp, x[:, 1:]], dim=1)
        return x.reshape(b, -1, d)

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

    # ---- text ------------------------------------------------------------------------
    def _text_layout(self, tokens: Tensor):
        """Where each word token and each prompt sits in the sequence with prompts.

        Returns (token_pos (B, C), prompt_pos (B, n_pre + n_post), eot_pos (B,)).
        """
        b, c = tokens.shape
        n_pre, n_post = self.num_text_prompts
        dev = tokens.device
        eot = tokens.argmax(dim=-1)  # EOT has the largest id (CLIP's argmax pooling)
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

    def _text_input(self, tokens: Tensor, text_prompts: Optional[Tensor]):
        if not sum(self.num_text_prompts):
            return super()._text_input(tokens, text_prompts)
        x = self.backbone.embed_text(tokens)
        (b, c), d = tokens.shape, x.shape[-1]
        token_pos, prompt_pos, eot_pos = self._text_layout(tokens)
        s = c + sum(self.num_text_prompts)
        x = torch.zeros(b, s, d, dtype=x.dtype, device=x.device).scatter(1, token_pos.unsqueeze(-1).expand(-1, -1, d), x)
        prompt_idx = prompt_pos.unsqueeze(-1).expand(-1, -1, d)

        def before(i: int, x: Tensor) -> Tensor:
            # Deep text prompts: (over)write the prompt slots with layer i's prompts.
            if i >= self._prompt_layers:
                return x
            return x.scatter_(1, prompt_idx, text_prompts[i].to(x.dtype).unsqueeze(0).expand(b, -1, -1))
        return x, eot_pos, before
