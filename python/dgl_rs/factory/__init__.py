"""The factory: backbones and methods by name, saved files of any method, training
checkpoints, the paper's released checkpoints (``official:PATH``) and the run-folder
layout. :mod:`.build` holds the entry points re-exported here."""

from .build import (DEFAULT_MODEL, DEFAULT_PRETRAINED, SOURCES, build_method, file_method, load_backbone,
                    load_method, load_model, method_spec, resolve_prompts_path, set_num_frames, trainable_counts)
from . import official  # noqa: F401  (registers official:PATH in SOURCES)

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "SOURCES", "build_method", "file_method", "load_backbone",
           "load_method", "load_model", "method_spec", "resolve_prompts_path", "set_num_frames",
           "trainable_counts"]
