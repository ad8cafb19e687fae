"""Native ops with their autograd wiring, and plain-PyTorch references."""

from .attention import global_local_attention

__all__ = ["global_local_attention"]
