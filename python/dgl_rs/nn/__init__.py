"""nn modules on the native ops: the drop-in global-local attention, the prompt generators,
adapters, the temporal transformer, the contrastive loss and attention-map readers."""

from .attention import GlobalLocalAttention
from .losses import symmetric_infonce
from .prompts import IndependentPromptGenerator, LinearPromptGenerator, TransformerPromptGenerator

__all__ = ["GlobalLocalAttention", "IndependentPromptGenerator", "LinearPromptGenerator",
           "TransformerPromptGenerator", "symmetric_infonce"]
