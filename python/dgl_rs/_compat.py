"""Old module paths, kept importable: ``dgl_rs.patch`` is now ``dgl_rs.backbone.openclip``,
and so on (:data:`MOVED`). Importing an old path gives the new module with a
DeprecationWarning naming it; :data:`ALIASES` are documented paths that stay, silently."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module -> its new place (deprecated).
MOVED = {
    "dgl_rs.patch": "dgl_rs.backbone.openclip",
    "dgl_rs.backbones": "dgl_rs.backbone.loading",
    "dgl_rs.memory": "dgl_rs.backbone.memory",
    "dgl_rs.text": "dgl_rs.backbone.text",
    "dgl_rs.methods.pooling": "dgl_rs.methods.temporal",
    "dgl_rs.evaluate": "dgl_rs.services.evaluate",
    "dgl_rs.train.data": "dgl_rs.services.data",
    "dgl_rs.errors": "dgl_rs.util.errors",
    "dgl_rs.files": "dgl_rs.util.files",
    "dgl_rs.progress": "dgl_rs.util.progress",
    "dgl_rs.attention": "dgl_rs.nn.attention",
    "dgl_rs.prompts": "dgl_rs.nn.prompts",
    "dgl_rs.adapters": "dgl_rs.nn.adapters",
    "dgl_rs.temporal": "dgl_rs.nn.temporal",
    "dgl_rs.attention_maps": "dgl_rs.nn.attention_maps",
    "dgl_rs.losses": "dgl_rs.nn.losses",
    "dgl_rs.official": "dgl_rs.factory.official",
    "dgl_rs.checkpoints": "dgl_rs.factory.checkpoints",
    "dgl_rs.index": "dgl_rs.services.index",
    "dgl_rs.explain": "dgl_rs.services.explain",
}
#: documented module paths that name a module of another layer (no warning).
ALIASES: dict[str, str] = {"dgl_rs.metrics": "dgl_rs.ops.metrics"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED or fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED.get(spec.name) or ALIASES[spec.name]
        if spec.name in MOVED:
            warnings.warn(f"{spec.name} is deprecated: import {new}", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
