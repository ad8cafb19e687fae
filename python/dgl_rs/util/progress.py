"""Progress bars only where someone watches them: the one place dgl-rs makes a tqdm bar.

A bar redraws itself with carriage returns; in a log file, a CI log or a pipe that is
thousands of lines of ``\\r`` noise. :func:`progress_bar` therefore draws only when the
stream it writes to (stderr by default) is a terminal, or inside a Jupyter kernel (whose
output area renders bars). Elsewhere it is a silent pass-through, and the trainer's one
log line per epoch (``epoch N done: mean loss ...``) is the progress record.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional, TextIO

from tqdm.auto import tqdm


def interactive(stream: Optional[TextIO] = None) -> bool:
    """True when ``stream`` (default ``sys.stderr``) is a terminal or the process is a
    Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    return "ipykernel" in sys.modules


def progress_bar(iterable: Optional[Iterable] = None, *, enabled: bool = True,
                 file: Optional[TextIO] = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` that draws only when ``enabled`` (e.g. not
    ``--no-progress``, the master rank) and :func:`interactive` says someone watches
    ``file`` (default stderr); otherwise a disabled bar that yields the items and writes
    nothing (``update``/``set_postfix``/``close`` are no-ops)."""
    stream = sys.stderr if file is None else file
    show = enabled and interactive(stream)
    return tqdm(iterable, disable=not show, file=stream, **kwargs)
