"""Stubs of the compiled module dgl_rs._native (private: use the dgl_rs API)."""

from typing import List, Optional, Tuple

from torch import Tensor

__version__: str
__torch_version__: str

class DglShapeError(ValueError): ...
class DglDtypeError(ValueError): ...
class DglDeviceError(ValueError): ...

# ---- fused global-local attention --------------------------------------------------

def attention_forward(
    x: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Optional[Tensor],
    out_proj_weight: Tensor,
    out_proj_bias: Optional[Tensor],
    num_heads: int,
    num_global: int,
    num_frames: int,
    mode: str,
    backend: str,
    need_weights: bool = False,
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(out (B, S, D), qkv (B, S, 3D), weights (B, H, G, S) or None); mode is "global_local",
    "local" or "global"; weights are the global queries' probabilities, only with need_weights."""

def attention_backward(
    grad_out: Tensor,
    x: Optional[Tensor],
    qkv: Optional[Tensor],
    in_proj_weight: Tensor,
    in_proj_bias: Optional[Tensor],
    out_proj_weight: Tensor,
    num_heads: int,
    num_global: int,
    num_frames: int,
    mode: str,
    needs: Tuple[bool, bool, bool, bool, bool],
    backend: str,
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of (x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)."""

# ---- prompt generators ---------------------------------------------------------------

def linear_prompts(
    frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor, post_bias: Tensor, num_frames: int
) -> Tuple[Tensor, Tensor]:
    """(text (layers, 2 n_f, D_t), frames (layers, num_frames, n_f, D_v))."""

def transformer_prompts(
    table: Tensor, block: List[Tensor], mlp: List[Tensor], num_layers: int, num_heads: int, num_text: int, num_frames: int
) -> Tuple[Tensor, Tensor]:
    """(text (layers, num_text, D_t), frames (layers, num_frames, n_f, D_v))."""

# ---- retrieval metrics -----------------------------------------------------------------

import numpy as np
import torch
from numpy.typing import NDArray

def ranks_t2v(sim: NDArray[np.float32] | NDArray[np.float64], caption_to_video: NDArray[np.int64] | None) -> NDArray[np.int64]: ...
def ranks_v2t(sim: NDArray[np.float32] | NDArray[np.float64], caption_to_video: NDArray[np.int64] | None) -> NDArray[np.int64]: ...
def ranks_t2v_tensor(sim: torch.Tensor, caption_to_video: NDArray[np.int64] | None, chunk: int) -> NDArray[np.int64]: ...
def ranks_v2t_tensor(sim: torch.Tensor, caption_to_video: NDArray[np.int64] | None, chunk: int) -> NDArray[np.int64]: ...
def ranks_chunked(
    text_emb: torch.Tensor, video_emb: torch.Tensor, caption_to_video: NDArray[np.int64] | None, chunk: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]: ...
def similarity_chunked(text_emb: torch.Tensor, video_emb: torch.Tensor, out: torch.Tensor, chunk: int) -> None: ...
def summarize_ranks(ranks: NDArray[np.int64]) -> tuple[float, float, float, float, float, float]: ...
def dual_softmax(sim: NDArray[np.floating], temperature: float, axis: int) -> NDArray[np.floating]: ...
def qb_norm(sim: NDArray[np.floating], bank: NDArray[np.floating], k: int, beta: float, min_count: int = 1) -> NDArray[np.floating]: ...
