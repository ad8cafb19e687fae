"""Stubs of the compiled module dgl_rs._native (private: use the dgl_rs API)."""

from typing import List, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

__version__: str
__torch_version__: str

class DglShapeError(ValueError): ...
class DglDtypeError(ValueError): ...
class DglDeviceError(ValueError): ...

# ---- fused global-local attention --------------------------------------------------

#: (in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)
_Weights = Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]
#: (num_heads, num_global, num_frames, mode, backend)
_Config = Tuple[int, int, int, str, str]

def attention_forward(
    x: Tensor, weights: _Weights, config: _Config, need_weights: bool = False
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """(out (B, S, D), qkv (B, S, 3D), weights (B, H, G, S) or None); mode is "global_local",
    "local" or "global"; weights are the global queries' probabilities, only with need_weights."""

def attention_backward(
    grad_out: Tensor,
    x: Optional[Tensor],
    qkv: Optional[Tensor],
    weights: _Weights,
    config: _Config,
    needs: Tuple[bool, bool, bool, bool, bool],
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of (x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias); the
    output projection's bias in ``weights`` is not read."""

# ---- prompt generators ---------------------------------------------------------------

def linear_prompts(
    frame_prompts: Tensor, pre_weight: Tensor, pre_bias: Tensor, post_weight: Tensor, post_bias: Tensor, num_frames: int
) -> Tuple[Tensor, Tensor]:
    """(text (layers, 2 n_f, D_t), frames (layers, num_frames, n_f, D_v))."""

def transformer_prompts(
    table: Tensor, block: List[Tensor], mlp: List[Tensor], shape: Tuple[int, int, int], num_frames: int
) -> Tuple[Tensor, Tensor]:
    """(text (layers, num_text, D_t), frames (layers, num_frames, n_f, D_v)); shape is
    (num_layers, num_heads, num_text)."""

# ---- retrieval metrics -----------------------------------------------------------------
# A `sim`/`bank` that is not a 2-D float32/float64 array raises DglDtypeError/DglShapeError
# naming the argument and what it got (TypeError when it is not a numpy array at all).

_FloatMatrix = Union[NDArray[np.float32], NDArray[np.float64]]

def ranks_t2v(sim: _FloatMatrix, caption_to_video: Optional[NDArray[np.int64]]) -> NDArray[np.int64]: ...
def ranks_v2t(sim: _FloatMatrix, caption_to_video: Optional[NDArray[np.int64]]) -> NDArray[np.int64]: ...
def ranks_t2v_tensor(sim: Tensor, caption_to_video: Optional[NDArray[np.int64]], chunk: int) -> NDArray[np.int64]: ...
def ranks_v2t_tensor(sim: Tensor, caption_to_video: Optional[NDArray[np.int64]], chunk: int) -> NDArray[np.int64]: ...
def ranks_chunked(
    text_emb: Tensor, video_emb: Tensor, caption_to_video: Optional[NDArray[np.int64]], chunk: int
) -> Tuple[NDArray[np.int64], NDArray[np.int64]]: ...
def similarity_chunked(text_emb: Tensor, video_emb: Tensor, out: Tensor, chunk: int) -> None: ...
def summarize_ranks(ranks: NDArray[np.int64]) -> Tuple[float, float, float, float, float, float]:
    """(R@1, R@5, R@10, R@50, MdR, MnR) of 1-based ranks."""

def dual_softmax(sim: _FloatMatrix, temperature: float, axis: int) -> _FloatMatrix:
    """Same dtype as `sim`."""

def qb_norm(sim: _FloatMatrix, bank: _FloatMatrix, k: int, beta: float, min_count: int = 1) -> _FloatMatrix:
    """Same dtype as `sim`; `bank` must have that dtype too."""
