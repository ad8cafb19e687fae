"""Every exception dgl-rs raises on purpose, in one place.

* ``DglShapeError`` / ``DglDtypeError`` / ``DglDeviceError``: bad tensors given to a
  native op (raised by the Rust core; all are ``ValueError``).
* :class:`UsageError`: a bad flag, a missing dataset root, an unknown model, weights
  that cannot be reached, a file that is not what it claims to be. The CLI prints it as
  one ``dgl-rs COMMAND: error: ...`` line and exits with status 2.
* :class:`VideoDecodeError`: a video that cannot be read.
"""

from __future__ import annotations

import os
from typing import Union

from .._native import DglDeviceError, DglDtypeError, DglShapeError

__all__ = ["DglShapeError", "DglDtypeError", "DglDeviceError", "UsageError", "VideoDecodeError"]


class UsageError(ValueError):
    """A bad flag, a missing dataset root, an unknown model, unreachable weights: the
    CLI prints it argparse-style (no traceback) and exits with status 2."""


class VideoDecodeError(RuntimeError):
    """A video that cannot be read: missing, not a video, truncated, no decodable frames.

    ``path`` and ``reason`` are kept as attributes so data loaders can log and skip.
    """

    def __init__(self, path: Union[str, os.PathLike], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))
