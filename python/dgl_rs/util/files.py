"""The one atomic write: every file dgl-rs writes goes through :func:`atomic_write`.

The data go to a temp file in the destination folder, are fsynced, then ``os.replace``d
over the final name and the folder is fsynced: a write that dies midway leaves no file
under the final name and the previous version untouched. The new file gets the mode an
ordinary ``open()`` would give it (0666 less the umask), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]
TMP_SUFFIX = ".tmp"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_chunks(f, data: bytes, chunk: int = 1 << 22) -> None:
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        f.write(view[start:start + chunk])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` on a temp file next to ``path``, fsync it, then rename it
    over ``path``. On any exception the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            _write_chunks(f, data)

    return atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def is_temp(path: Path) -> bool:
    """True for a temp file of :func:`atomic_write` (``.NAME.XXXX.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file()


def remove_stale_temps(folder: PathLike) -> list[Path]:
    """Delete the temp files an interrupted :func:`atomic_write` left in ``folder``
    (``.NAME.XXXX.tmp``); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if is_temp(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_writable(path: PathLike, flag: str) -> Path:
    """``path`` can be written, checked before any work: the folder it goes in (``path``
    itself when it is a folder; else the first of its parents that exists) is a folder
    this process may write. Else a :class:`UsageError` naming ``flag``, ``path`` and why;
    whether ``path`` may be replaced is the caller's business."""
    path = Path(path)
    here = path.absolute()
    if not here.is_dir():
        here = here.parent
        while not here.exists() and here != here.parent:
            here = here.parent
    if not here.is_dir():
        raise UsageError(f"{flag} {path}: cannot be created, {here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {here} (permission denied)")
    return path


def check_readable(path: PathLike, flag: str, folder: bool = False) -> Path:
    """``path`` is an existing file (a folder with ``folder``) this process may read; else
    a :class:`UsageError` naming ``flag``, ``path`` and what it is not."""
    path = Path(path)
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such {kind}")
    if path.is_dir() != folder:
        raise UsageError(f"{flag} {path}: a {other}, not a {kind}")
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise UsageError(f"{flag} {path}: not readable (permission denied)")
    return path


def read_text(path: PathLike) -> str:
    """The UTF-8 text of ``path``; bytes that are not UTF-8 are a :class:`UsageError`
    naming the file and line (a BOM is dropped)."""
    data = Path(path).read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                         f"{exc.start}); save the file as UTF-8") from None


def read_json(path: PathLike):
    """The JSON document in ``path``; malformed JSON is a :class:`UsageError` naming the
    file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None


_ST_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
              "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def safetensors_bytes(tensors: dict, metadata: Optional[dict] = None) -> bytes:
    """A safetensors file as bytes, byte-reproducible: tensors and metadata keys in sorted
    order (the ``safetensors`` writer orders metadata by hash, so the same content can
    give different files)."""
    import torch

    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        dtype = _ST_DTYPES.get(str(t.dtype).replace("torch.", ""))
        if dtype is None:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} cannot be stored")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(chunks)
