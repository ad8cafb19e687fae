"""dgl-rs: DGL (Dynamic Global-Local prompt tuning, AAAI 2024) for text-video retrieval.

Python trains; Rust computes. The native core (``dgl_rs._native``) holds the fused
global-local attention, the prompt generators and the retrieval metrics.
"""

# torch first: it loads libtorch, which the native module links against.
import torch as _torch

from ._version import __version__

try:
    from . import _native
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "dgl_rs: the native extension dgl_rs._native could not be loaded "
        f"({exc}). Build it with `make build` (or `maturin develop --release` with "
        "LIBTORCH_USE_PYTORCH=1 inside the venv)."
    ) from exc


def _check_native() -> None:
    if _native.__version__ != __version__:
        raise ImportError(
            f"dgl_rs: the native extension is version {_native.__version__} but the "
            f"Python package is {__version__}; rebuild it with `make build`."
        )
    built = _native.__torch_version__
    if built != "unknown" and built.split("+")[0] != _torch.__version__.split("+")[0]:
        raise ImportError(
            f"dgl_rs: the native extension was built against torch {built} but torch "
            f"{_torch.__version__} is installed; rebuild it with `make build`."
        )


_check_native()

from .nn.attention import GlobalLocalAttention  # noqa: E402
from .ops.attention import global_local_attention  # noqa: E402
from .nn.prompts import IndependentPromptGenerator, LinearPromptGenerator, TransformerPromptGenerator  # noqa: E402
from .util.errors import DglDeviceError, DglDtypeError, DglShapeError, UsageError, VideoDecodeError  # noqa: E402
from .nn.losses import symmetric_infonce  # noqa: E402
from .backbone.text import tokenize  # noqa: E402
from .backbone import Backbone, load_clip  # noqa: E402
from .methods import DGL, METHODS, FullFinetune, PromptedCLIP  # noqa: E402
from .factory.build import build_method, load_method, load_model  # noqa: E402
from .factory.official import load_official  # noqa: E402  (also registers --prompts official:PATH)
from .ops import metrics  # noqa: E402
from . import _compat  # noqa: E402

_compat.install()

__all__ = [
    "__version__",
    "GlobalLocalAttention",
    "global_local_attention",
    "IndependentPromptGenerator",
    "LinearPromptGenerator",
    "TransformerPromptGenerator",
    "DglDeviceError",
    "DglDtypeError",
    "DglShapeError",
    "UsageError",
    "VideoDecodeError",
    "Backbone",
    "DGL",
    "FullFinetune",
    "PromptedCLIP",
    "load_clip",
    "METHODS",
    "build_method",
    "load_method",
    "load_model",
    "load_official",
    "symmetric_infonce",
    "tokenize",
    "metrics",
]
