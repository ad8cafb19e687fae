"""DGL prompt tuning: trainer, distributed plumbing, checkpoints, logging.

Layout after open_clip's ``training/``: :mod:`.params` (config dataclass + flags),
:mod:`.main` (``main(argv)``), :mod:`.train` (the epoch loop), :mod:`.distributed`,
:mod:`.scheduler`, :mod:`.checkpoint`, :mod:`.logger`.
"""

from .params import RECIPES, TrainConfig, UsageError, parse_args

__all__ = ["RECIPES", "TrainConfig", "UsageError", "parse_args"]
