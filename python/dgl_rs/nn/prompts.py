"""DGL's local prompt generators (DGL-SPEC section 5).

The parameters are ``nn.Parameter``s owned here, so any torch optimizer trains
them; the math runs in Rust (:mod:`dgl_rs.ops.prompts`) on the same tensors, with
libtorch autograd recording it. Each generator is called ONCE per forward and
returns prompts for every layer, shared by the whole batch:

- ``text``: ``(layers, n_pre + n_post, D_t)`` (prefix first, then postfix);
- ``frames``: ``(layers, frames, n_f, D_v)``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..ops.prompts import linear_prompts, transformer_prompts


def vpt_bound(patch_size: int, width: int) -> float:
    """VPT's uniform init bound sqrt(6 / (3 p^2 + D_v))."""
    return math.sqrt(6.0 / (3 * patch_size ** 2 + width))


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


LINEAR_DIRECTIONS = ("visual_to_text", "text_to_visual")


class LinearPromptGenerator(nn.Module):
    """DGL-Linear: frame prompts F ``(layers, n_f, D_v)``, the same for every frame,
    and two linear maps D_v -> D_t shared by all layers: prefix = W_pre F_i,
    postfix = W_post F_i (so n_pre = n_post = n_f).

    ``direction="text_to_visual"`` (paper Table 3e) mirrors it: the learned table is the
    text prefix P ``(layers, n_f, D_t)``; postfix = W_post P_i (D_t -> D_t) and frame
    prompts = W_f P_i (D_t -> D_v). That direction is plain PyTorch (an ablation).
    """

    def __init__(self, num_layers: int, num_frame_prompts: int, vision_width: int, text_width: int, init_bound: float,
                 direction: str = "visual_to_text"):
        super().__init__()
        if direction not in LINEAR_DIRECTIONS:
            raise ValueError(f"`linear_direction` must be one of {LINEAR_DIRECTIONS}, got {direction!r}")
        self.num_layers, self.num_frame_prompts, self.direction = num_layers, num_frame_prompts, direction
        self.num_text_prompts = (num_frame_prompts, num_frame_prompts)
        if direction == "visual_to_text":
            self.frame_prompts = nn.Parameter(torch.empty(num_layers, num_frame_prompts, vision_width).uniform_(-init_bound, init_bound))
            self.pre = nn.Linear(vision_width, text_width)
            self.post = nn.Linear(vision_width, text_width)
        else:
            self.text_prompts = nn.Parameter(torch.empty(num_layers, num_frame_prompts, text_width).uniform_(-init_bound, init_bound))
            self.post = nn.Linear(text_width, text_width)
            self.frames = nn.Linear(text_width, vision_width)

    def forward(self, num_frames: int) -> Tuple[Tensor, Tensor]:
        if self.direction == "text_to_visual":
            return self.reference(num_frames)
        return linear_prompts(
            self.frame_prompts, self.pre.weight, self.pre.bias, self.post.weight, self.post.bias, num_frames
        )

    def reference(self, num_frames: int) -> Tuple[Tensor, Tensor]:
        """The same math in plain PyTorch."""
        if self.direction == "text_to_visual":
            p = self.text_prompts
            f = self.frames(p)
            return torch.cat([p, self.post(p)], dim=1), f.unsqueeze(1).expand(-1, num_frames, -1, -1)
        f = self.frame_prompts
        text = torch.cat([self.pre(f), self.post(f)], dim=1)
        return text, f.unsqueeze(1).expand(-1, num_frames, -1, -1)


class IndependentPromptGenerator(nn.Module):
    """Prompts learned directly, text and frames each their own table (no shared latent
    space): VPT (frames only), VoP (both), DGL's "divided" baseline (Table 3f).

    ``text``: ``(layers, n_pre + n_post, D_t)`` (None when there are no text prompts);
    ``frames``: ``(layers, frames, n_f, D_v)``, the same n_f prompts for every frame, or a
    different set per frame position with ``per_frame=True`` (then T is fixed).
    Both tables VPT-initialised (uniform +-``init_bound``).
    """

    def __init__(self, num_layers: int, num_frame_prompts: int, num_text_prompts: Tuple[int, int],
                 vision_width: int, text_width: int, init_bound: float, num_frames: Optional[int] = None):
        super().__init__()
        self.num_layers, self.num_frame_prompts = num_layers, num_frame_prompts
        self.num_text_prompts = tuple(num_text_prompts)
        self.num_frames = num_frames  # None: shared by all frames (any T)
        n_text = sum(self.num_text_prompts)
        self.text_prompts = nn.Parameter(
            torch.empty(num_layers, n_text, text_width).uniform_(-init_bound, init_bound)) if n_text else None
        shape = (num_layers, num_frame_prompts, vision_width) if num_frames is None else \
            (num_layers, num_frames, num_frame_prompts, vision_width)
        self.frame_prompts = nn.Parameter(torch.empty(shape).uniform_(-init_bound, init_bound)) if num_frame_prompts else None

    def forward(self, num_frames: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        frames = self.frame_prompts
        if frames is not None:
            if self.num_frames is None:
                frames = frames.unsqueeze(1).expand(-1, num_frames, -1, -1)
            elif num_frames != self.num_frames:
                raise ValueError(f"these prompts are learned for each of {self.num_frames} frame positions; "
                                 f"got num_frames={num_frames}")
        return self.text_prompts, frames

    reference = forward


class PromptBlock(nn.Module):
    """The generator's one transformer block: pre-LN, no mask, QuickGELU MLP 4x."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def tensors(self):
        a = self.attn
        return [self.ln_1.weight, self.ln_1.bias, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias,
                self.ln_2.weight, self.ln_2.bias, self.mlp.c_fc.weight, self.mlp.c_fc.bias,
                self.mlp.c_proj.weight, self.mlp.c_proj.bias]

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TransformerPromptGenerator(nn.Module):
    """DGL-Transformer: a unified table U ``(n_pre + n_post + T*n_f, layers * D_v)`` read
    as ``layers`` sequences of width D_v, ONE transformer block over each, the text
    part through an MLP D_v -> 2 D_v -> D_t, and a different set of n_f frame prompts
    for every frame position."""

    def __init__(self, num_layers: int, num_frames: int, num_frame_prompts: int, num_text_prompts: Tuple[int, int],
                 vision_width: int, text_width: int, heads: int):
        super().__init__()
        self.num_layers, self.num_frames, self.num_frame_prompts = num_layers, num_frames, num_frame_prompts
        self.num_text_prompts = tuple(num_text_prompts)
        self.heads = heads
        rows = sum(self.num_text_prompts) + num_frames * num_frame_prompts
        # "PyTorch's defaults" for a table that feeds a Linear-like block: nn.Linear's
        # default bound 1/sqrt(fan_in) with fan_in = D_v (the width of each row).
        bound = 1.0 / math.sqrt(vision_width)
        self.table = nn.Parameter(torch.empty(rows, num_layers * vision_width).uniform_(-bound, bound))
        self.block = PromptBlock(vision_width, heads)
        self.text_mlp = nn.Sequential(nn.Linear(vision_width, 2 * vision_width), QuickGELU(), nn.Linear(2 * vision_width, text_width))

    def _check_frames(self, num_frames: int) -> None:
        if num_frames != self.num_frames:
            raise ValueError(
                f"DGL-Transformer learns prompts for each of its {self.num_frames} frame positions; "
                f"got num_frames={num_frames}. Sample {self.num_frames} frames (or use generator='linear')."
            )

    def forward(self, num_frames: int) -> Tuple[Tensor, Tensor]:
        self._check_frames(num_frames)
        mlp = [self.text_mlp[0].weight, self.text_mlp[0].bias, self.text_mlp[2].weight, self.text_mlp[2].bias]
        return transformer_prompts(
            self.table, self.block.tensors(), mlp, self.num_layers, self.heads, sum(self.num_text_prompts), num_frames
        )

    def reference(self, num_frames: int) -> Tuple[Tensor, Tensor]:
        """The same math in plain PyTorch."""
        self._check_frames(num_frames)
        rows, width = self.table.shape
        x = self.block(self.table.view(rows, self.num_layers, width // self.num_layers).transpose(0, 1))
        n_text = sum(self.num_text_prompts)
        return self.text_mlp(x[:, :n_text]), x[:, n_text:].reshape(self.num_layers, num_frames, self.num_frame_prompts, -1)
