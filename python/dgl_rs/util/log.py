"""Logging for every command: stderr (and a log file) from the master rank."""

from __future__ import annotations

import logging
import os


def setup_logging(log_file: str | os.PathLike | None, level: int = logging.INFO,
                  is_master: bool = True) -> None:
    """Log to stderr (and ``log_file``) from the master rank; other ranks log warnings
    and errors only. Handlers added by an earlier call in the same process are
    replaced, so ``main(argv)`` can be called repeatedly from tests."""
    root = logging.getLogger("dgl_rs")
    for handler in list(root.handlers):
        if getattr(handler, "_dgl_rs", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level if is_master else logging.WARNING)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file and is_master:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._dgl_rs = True  # type: ignore[attr-defined]
        root.addHandler(handler)
