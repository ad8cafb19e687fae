"""Native ops with their autograd wiring, and plain-PyTorch references."""

from .attention import GlobalLocalAttentionFunction, global_local_attention

__all__ = ["GlobalLocalAttentionFunction", "global_local_attention"]
