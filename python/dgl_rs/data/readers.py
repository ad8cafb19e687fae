"""Dataset readers: the public annotation files (as CLIP4Clip and the DGL release use
them) -> lists of :class:`VideoRecord`.

One reader per format: :func:`read_msrvtt`, :func:`read_vatex`, :func:`read_lsmdc`,
:func:`read_activitynet`, :func:`read_msvd`, :func:`read_didemo` and :func:`read_folder`
(a folder of videos plus a caption file); :func:`read_dataset` picks one by name
(:data:`READERS`). A malformed annotation file is a :class:`~dgl_rs.errors.UsageError`
naming the file (and line); a missing video file is logged (and dropped with
``drop_missing=True``). :mod:`dgl_rs.data.datasets` turns the records into tensors.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

from ..util.errors import UsageError
from ..util.files import read_json, read_text
from .video import PathLike

log = logging.getLogger("dgl_rs.data")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class VideoRecord(NamedTuple):
    """One video and its captions. ``video_path`` is a file path (or, for the
    synthetic benchmark, a :class:`~dgl_rs.data.synthetic.VideoSpec`)."""

    video_path: Any
    captions: tuple[str, ...]
    video_id: str


# ------------------------------------------------------------------------ helpers
def _require_dir(path: PathLike, what: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FileNotFoundError(f"{what} {str(p)!r} is a file, not a folder")
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {str(p)!r} (expected a directory)")
    return p


def _require_file(path: Path, what: str) -> Path:
    if path.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    return path


def index_videos(video_dir: PathLike) -> dict[str, str]:
    """``{file stem: path}`` of every video file under ``video_dir`` (recursive).

    With several files of the same stem, the first in sorted order wins (``.avi``
    before ``.mp4``)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(video_dir):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.join(dirpath, name))
    return found


class _VideoFinder:
    """Resolves a video id to a path: ``<video_dir>/<id>.mp4`` if it exists, else any
    video of that stem under ``video_dir`` (indexed lazily, once)."""

    def __init__(self, video_dir: Path, ext: str = ".mp4", aliases: Callable[[str], list] = None):
        self.video_dir = video_dir
        self.ext = ext
        self.aliases = aliases or (lambda vid: [vid])
        self._index: Optional[dict[str, str]] = None

    def __call__(self, video_id: str) -> tuple[str, bool]:
        for name in self.aliases(video_id):
            direct = self.video_dir / f"{name}{self.ext}"
            if direct.is_file():
                return str(direct), True
        if self._index is None:
            self._index = index_videos(self.video_dir)
        for name in self.aliases(video_id):
            if name in self._index:
                return self._index[name], True
        return str(self.video_dir / f"{video_id}{self.ext}"), False


def _finish(records: list[VideoRecord], found: list[bool], name: str,
            drop_missing: bool) -> list[VideoRecord]:
    missing = len(found) - sum(found)
    if missing:
        if drop_missing:
            log.warning("%s: dropped %d of %d videos whose file is missing", name, missing,
                        len(found))
            records = [r for r, ok in zip(records, found) if ok]
        else:
            log.warning("%s: %d of %d video files are missing (they fail when loaded)",
                        name, missing, len(found))
    return records


def _locate(root: PathLike, anno_dir: Optional[PathLike], video_dir: Optional[PathLike],
            name: str) -> tuple[Path, Path, Path]:
    root = _require_dir(root, f"{name} dataset root")
    anno = _require_dir(anno_dir, f"{name} annotation directory") if anno_dir else root
    videos = _require_dir(video_dir if video_dir else root / "videos", f"{name} video directory")
    return root, anno, videos


# ----------------------------------------------------------------------- parsing
# A malformed annotation file is a UsageError naming the file (and line): the CLI prints
# it as one line; the library raises it as a ValueError subclass.
def _string(value: Any, where: str, key: str) -> str:
    """``value`` stripped; null, a number or a list where text belongs is an error."""
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key!r} must be a string, got {json.dumps(value)[:60]}")
    return value.strip()


def _field(obj: Any, key: str, where: str) -> Any:
    """``obj[key]`` of a JSON object, with an error naming ``where`` when it is missing."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object, got {json.dumps(obj)[:60]}")
    if key not in obj:
        raise UsageError(f"{where}: no {key!r} key (keys: {sorted(obj)[:8]})")
    return obj[key]


def _strings(value: Any, where: str, key: str) -> list[str]:
    """A JSON list of strings, stripped, blanks dropped."""
    if not isinstance(value, list):
        raise UsageError(f"{where}: {key!r} must be a list of strings, got {json.dumps(value)[:60]}")
    return [s for s in (_string(v, where, key) for v in value) if s]


def _csv_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header holding ``columns``; a row too short to have
    a value for each of them is an error naming its line."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = []
    try:
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise UsageError(f"{path}: expected a CSV header with columns {', '.join(columns)}, "
                             f"got {reader.fieldnames}")
        for row in reader:
            missing = [c for c in columns if row.get(c) is None]
            if missing:
                raise UsageError(f"{path}:{reader.line_num}: no {missing[0]!r} value (the row "
                                 f"has fewer fields than the header)")
            rows.append(row)
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: not a valid CSV row ({exc})") from None
    return rows


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """``("path:line", object)`` for every non-blank line of a JSONL file."""
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


# ----------------------------------------------------------------------- readers
MSRVTT_SPLITS = {"train": "MSRVTT_train.9k.csv", "train9k": "MSRVTT_train.9k.csv",
                 "train7k": "MSRVTT_train.7k.csv", "test": "MSRVTT_JSFUSION_test.csv"}


def _msrvtt_captions(json_path: Path) -> dict[str, list[str]]:
    sentences = _field(read_json(json_path), "sentences", str(json_path))
    if not isinstance(sentences, list):
        raise UsageError(f"{json_path}: 'sentences' must be a list of {{video_id, caption}}")
    by_video: dict[str, list[str]] = {}
    for i, s in enumerate(sentences):
        where = f"{json_path}: sentences[{i}]"
        vid = _string(_field(s, "video_id", where), where, "video_id")
        by_video.setdefault(vid, []).append(_string(_field(s, "caption", where), where, "caption"))
    return by_video


def read_msrvtt(root: PathLike, split: str = "train", *, anno_dir: Optional[PathLike] = None,
                video_dir: Optional[PathLike] = None,
                drop_missing: bool = False) -> list[VideoRecord]:
    """MSR-VTT as CLIP4Clip packs it (``msrvtt_data``).

    - ``train`` / ``train9k`` / ``train7k``: ``MSRVTT_train.9k.csv`` (or ``.7k``; column
      ``video_id``) selects the videos, ``MSRVTT_data.json`` (``"sentences"``: list of
      ``{"video_id", "caption"}``) gives all of their captions (~20 each).
    - ``test``: the 1k-A split ``MSRVTT_JSFUSION_test.csv`` (columns
      ``key, vid_key, video_id, sentence``): 1000 videos, one caption each.

    Annotation files live in ``anno_dir`` (default ``root``), videos in ``video_dir``
    (default ``root/videos``) as ``<video_id>.mp4``.
    """
    if split not in MSRVTT_SPLITS:
        raise ValueError(f"MSR-VTT split must be one of {sorted(MSRVTT_SPLITS)}, got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "MSR-VTT")
    csv_path = _require_file(anno / MSRVTT_SPLITS[split],
                             f"MSR-VTT {split} split file {MSRVTT_SPLITS[split]}")
    rows = _csv_rows(csv_path, ("video_id", "sentence") if split == "test" else ("video_id",))
    find = _VideoFinder(videos)
    records, found = [], []
    if split == "test":
        for row in rows:
            path, ok = find(row["video_id"])
            records.append(VideoRecord(path, (row["sentence"].strip(),), row["video_id"]))
            found.append(ok)
        return _finish(records, found, "MSR-VTT test", drop_missing)
    json_path = _require_file(anno / "MSRVTT_data.json", "MSR-VTT captions MSRVTT_data.json")
    by_video = _msrvtt_captions(json_path)
    for row in rows:
        vid = row["video_id"]
        caps = by_video.get(vid)
        if not caps:
            raise UsageError(f"{json_path}: no captions for train video {vid!r}")
        path, ok = find(vid)
        records.append(VideoRecord(path, tuple(caps), vid))
        found.append(ok)
    return _finish(records, found, f"MSR-VTT {split}", drop_missing)


VATEX_FILES = {"train": "vatex_training_v1.0.json", "val": "vatex_validation_v1.0.json",
               "test": "vatex_validation_v1.0.json"}


def read_vatex(root: PathLike, split: str = "train", *, anno_dir: Optional[PathLike] = None,
               video_dir: Optional[PathLike] = None, annotation_file: Optional[PathLike] = None,
               id_list: Optional[PathLike] = None, drop_missing: bool = False) -> list[VideoRecord]:
    """VATEX (official json: a list of ``{"videoID", "enCap": [10 English captions]}``).

    ``train`` reads ``vatex_training_v1.0.json``; ``val``/``test`` read
    ``vatex_validation_v1.0.json`` (the retrieval test set is drawn from it; the public
    test file has no English captions). ``annotation_file`` overrides the file. The
    video ids are restricted to ``id_list`` (one id per line) when given, else to
    ``<anno_dir>/<split>_list.txt`` when that file exists (the usual 1500-video test
    list). Every caption is kept: for training each is a pair, for evaluation each is a
    query. Videos: ``<video_dir>/<videoID>.mp4`` (or any video of that stem).
    """
    if split not in VATEX_FILES and annotation_file is None:
        raise ValueError(f"VATEX split must be one of {sorted(VATEX_FILES)}, got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "VATEX")
    path = Path(annotation_file) if annotation_file else anno / VATEX_FILES[split]
    _require_file(path, f"VATEX {split} annotation file")
    data = read_json(path)
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a json list of {{'videoID', 'enCap'}}")
    keep = None
    list_path = Path(id_list) if id_list else anno / f"{split}_list.txt"
    if id_list:
        _require_file(list_path, "VATEX video id list")
    if list_path.is_file():
        keep = {line.strip() for line in read_text(list_path).splitlines() if line.strip()}
    find = _VideoFinder(videos)
    records, found = [], []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        vid = _string(_field(item, "videoID", where), where, "videoID")
        if keep is not None and vid not in keep:
            continue
        caps = tuple(_strings(item.get("enCap", []), where, "enCap"))
        if not caps:
            raise UsageError(f"{path}: video {vid!r} has no English captions ('enCap')")
        p, ok = find(vid)
        records.append(VideoRecord(p, caps, vid))
        found.append(ok)
    return _finish(records, found, f"VATEX {split}", drop_missing)


LSMDC_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def read_lsmdc(root: PathLike, split: str = "train", *, anno_dir: Optional[PathLike] = None,
               video_dir: Optional[PathLike] = None,
               drop_missing: bool = False) -> list[VideoRecord]:
    """LSMDC (tab-separated, no header: ``clip_id, start, end, start, end, sentence``).

    ``train``: ``LSMDC16_annos_training.csv``; ``val``: ``LSMDC16_annos_val.csv``;
    ``test``: ``LSMDC16_challenge_1000_publictect.csv``. As CLIP4Clip does, the clip id
    is the first field and the sentence the last. Videos are found by clip id anywhere
    under ``video_dir`` (``<movie>/<clip_id>.avi`` or ``.mp4``).
    """
    if split not in LSMDC_FILES:
        raise ValueError(f"LSMDC split must be one of {sorted(LSMDC_FILES)}, got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "LSMDC")
    path = _require_file(anno / LSMDC_FILES[split], f"LSMDC {split} file {LSMDC_FILES[split]}")
    by_clip: dict[str, list[str]] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise UsageError(f"{path}:{lineno}: expected tab-separated "
                             f"'clip_id ... sentence', got {line[:80]!r}")
        by_clip.setdefault(fields[0].strip(), []).append(fields[-1].strip())
    find = _VideoFinder(videos, ext=".avi")
    records, found = [], []
    for clip_id, caps in by_clip.items():
        p, ok = find(clip_id)
        records.append(VideoRecord(p, tuple(caps), clip_id))
        found.append(ok)
    return _finish(records, found, f"LSMDC {split}", drop_missing)


ACTIVITYNET_FILES = {"train": "train.json", "val": "val_1.json", "test": "val_1.json",
                     "val_1": "val_1.json", "val_2": "val_2.json"}


def read_activitynet(root: PathLike, split: str = "train", *,
                     anno_dir: Optional[PathLike] = None, video_dir: Optional[PathLike] = None,
                     drop_missing: bool = False) -> list[VideoRecord]:
    """ActivityNet Captions as paragraph-to-video retrieval.

    ``train.json`` / ``val_1.json`` (``test`` = ``val_1``): ``{video_id: {"duration",
    "timestamps", "sentences": [...]}}``. A video's sentences, stripped, are joined with
    ``" "`` into one paragraph query over the whole video. Videos are found by id under
    ``video_dir`` as ``v_<id>.<ext>`` or ``<id>.<ext>`` (with or without the ``v_``).
    """
    if split not in ACTIVITYNET_FILES:
        raise ValueError(f"ActivityNet split must be one of {sorted(ACTIVITYNET_FILES)}, "
                         f"got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "ActivityNet")
    path = _require_file(anno / ACTIVITYNET_FILES[split],
                         f"ActivityNet {split} file {ACTIVITYNET_FILES[split]}")
    data = read_json(path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a json object {{video_id: {{'sentences': ...}}}}")

    def aliases(vid: str) -> list:
        bare = vid[2:] if vid.startswith("v_") else vid
        return [vid, bare, f"v_{bare}"]

    find = _VideoFinder(videos, aliases=aliases)
    records, found = [], []
    for vid, item in data.items():
        where = f"{path}: video {vid!r}"
        sentences = _strings(_field(item, "sentences", where), where, "sentences")
        if not sentences:
            raise UsageError(f"{path}: video {vid!r} has no sentences")
        p, ok = find(vid)
        records.append(VideoRecord(p, (" ".join(sentences),), vid))
        found.append(ok)
    return _finish(records, found, f"ActivityNet {split}", drop_missing)


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, strings, numbers): a pickle that names any
    class or function, i.e. one that would run code, is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only plain data is read")


def _data_pickle(path: Path) -> Any:
    try:
        return _DataOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise UsageError(f"{path}: not a pickle of plain data ({exc})") from None


def _id_list(path: Path) -> list[str]:
    """The ids of a ``*_list.txt`` file (one per line, blanks dropped), first occurrence kept."""
    return list(dict.fromkeys(line.strip() for line in read_text(path).splitlines() if line.strip()))


def _msvd_caption(cap: Any, where: str) -> str:
    """CLIP4Clip's ``raw-captions.pkl`` holds each caption as a list of words, joined with
    ``" "`` (as its loader does); a plain string is taken as it is."""
    if isinstance(cap, (list, tuple)) and all(isinstance(w, str) for w in cap):
        return " ".join(cap).strip()
    return _string(cap, where, "caption")


def _youtube_aliases(anno: Path) -> Callable[[str], list]:
    """Video-file aliases from ``youtube_mapping.txt`` (lines ``<youtube clip> vid<N>``):
    a clip id also finds ``vid<N>.avi`` and ``vid<N>`` finds the clip's file."""
    path = anno / "youtube_mapping.txt"
    pairs: dict[str, str] = {}
    if path.is_file():
        for lineno, line in enumerate(read_text(path).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise UsageError(f"{path}:{lineno}: expected '<youtube clip> vid<N>', got {line[:80]!r}")
            pairs[fields[0]], pairs[fields[1]] = fields[1], fields[0]
    return lambda vid: [vid] + ([pairs[vid]] if vid in pairs else [])


def read_msvd(root: PathLike, split: str = "train", *, anno_dir: Optional[PathLike] = None,
              video_dir: Optional[PathLike] = None, drop_missing: bool = False) -> list[VideoRecord]:
    """MSVD as CLIP4Clip reads it (``msvd_data``, from collaborative-experts).

    ``<split>_list.txt`` (``train`` 1200 / ``val`` 100 / ``test`` 670 video ids, one per
    line) selects the videos in that order; ``raw-captions.pkl`` (``{video_id: [caption,
    ...]}``, each caption a list of words) gives every caption of each (~40; all are
    queries / pairs). The pickle is read as plain data only: one that would run code is
    refused. Videos: ``<video_dir>/<video_id>.avi`` (the YouTubeClips), or any video of
    that stem; with ``youtube_mapping.txt`` (``<youtube clip> vid<N>`` per line) beside the
    annotations, a clip name also finds ``vid<N>.*`` and ``vid<N>`` the clip's file.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"MSVD split must be one of ['test', 'train', 'val'], got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "MSVD")
    ids = _id_list(_require_file(anno / f"{split}_list.txt", f"MSVD {split} split file {split}_list.txt"))
    pkl = _require_file(anno / "raw-captions.pkl", "MSVD captions raw-captions.pkl")
    captions = _data_pickle(pkl)
    if not isinstance(captions, dict):
        raise UsageError(f"{pkl}: expected a dict {{video_id: [caption, ...]}}, got {type(captions).__name__}")
    find = _VideoFinder(videos, ext=".avi", aliases=_youtube_aliases(anno))
    records, found = [], []
    for vid in ids:
        caps = captions.get(vid)
        if not isinstance(caps, (list, tuple)):
            raise UsageError(f"{pkl}: no captions for {split} video {vid!r}")
        caps = tuple(c for c in (_msvd_caption(c, f"{pkl}: video {vid!r}") for c in caps) if c)
        if not caps:
            raise UsageError(f"{pkl}: video {vid!r} has no captions")
        p, ok = find(vid)
        records.append(VideoRecord(p, caps, vid))
        found.append(ok)
    return _finish(records, found, f"MSVD {split}", drop_missing)


DIDEMO_FILES = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}


def _didemo_descriptions(path: Path, keep: Optional[set]) -> dict[str, list[str]]:
    """``{video: [description, ...]}`` in file order, from a list of ``{"video",
    "description", "times", ...}`` moments, restricted to the ids in ``keep``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a json list of {{'video', 'description', 'times'}}")
    by_video: dict[str, list[str]] = {}
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        vid = _string(_field(item, "video", where), where, "video")
        if keep is not None and vid not in keep:
            continue
        text = _string(_field(item, "description", where), where, "description")
        by_video.setdefault(vid, [])
        if text:
            by_video[vid].append(text)
    return by_video


def read_didemo(root: PathLike, split: str = "train", *, anno_dir: Optional[PathLike] = None,
                video_dir: Optional[PathLike] = None, drop_missing: bool = False) -> list[VideoRecord]:
    """DiDeMo as paragraph-to-video retrieval, as CLIP4Clip reads it.

    ``train_data.json`` / ``val_data.json`` / ``test_data.json``: lists of moments
    ``{"video", "description", "times", ...}``; all descriptions of a video, stripped and in
    file order, are joined with ``" "`` into one query over the whole video (the moment
    ``times`` are not used, as in CLIP4Clip). ``<split>_list.txt`` restricts the videos
    when it exists (CLIP4Clip requires it). The ``video`` value is a file name with its
    extension (``<flickr id>.mov``): the file is ``<video_dir>/<video>``, or any video
    whose stem is ``<video>`` or ``<video>`` without its extension (e.g. converted to mp4).
    """
    if split not in DIDEMO_FILES:
        raise ValueError(f"DiDeMo split must be one of {sorted(DIDEMO_FILES)}, got {split!r}")
    _, anno, videos = _locate(root, anno_dir, video_dir, "DiDeMo")
    path = _require_file(anno / DIDEMO_FILES[split], f"DiDeMo {split} file {DIDEMO_FILES[split]}")
    list_path = anno / f"{split}_list.txt"
    keep = set(_id_list(list_path)) if list_path.is_file() else None
    find = _VideoFinder(videos, ext="", aliases=lambda vid: list(dict.fromkeys([vid, os.path.splitext(vid)[0]])))
    records, found = [], []
    for vid, texts in _didemo_descriptions(path, keep).items():
        if not texts:
            raise UsageError(f"{path}: video {vid!r} has no description")
        p, ok = find(vid)
        records.append(VideoRecord(p, (" ".join(texts),), vid))
        found.append(ok)
    return _finish(records, found, f"DiDeMo {split}", drop_missing)


def _caption_file(root: Path, annotations: Optional[PathLike]) -> Path:
    """The folder's caption file: ``annotations`` (relative to ``root`` if not found as
    given), else ``root/captions.csv`` or ``root/captions.jsonl``."""
    if annotations is None:
        candidates = [root / "captions.csv", root / "captions.jsonl"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"no caption file in {str(root)!r}: expected captions.csv "
                                    "(columns video,caption) or captions.jsonl, or pass "
                                    "annotations=...")
        return path
    path = Path(annotations)
    if not path.is_absolute() and not path.is_file() and (root / path).is_file():
        path = root / path
    return _require_file(path, "caption file (CSV video,caption or JSONL)")


def _caption_pairs(path: Path) -> list[tuple[str, str]]:
    """``(video, caption)`` of every row of a CSV (header video,caption) or JSONL file."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        return [(row["video"], row["caption"]) for row in _csv_rows(path, ("video", "caption"))]
    return [(_string(_field(obj, "video", where), where, "video"),
             _string(_field(obj, "caption", where), where, "caption"))
            for where, obj in _jsonl(path)]


def read_folder(root: PathLike, annotations: Optional[PathLike] = None, *,
                video_dir: Optional[PathLike] = None,
                drop_missing: bool = False) -> list[VideoRecord]:
    """A folder of videos plus a caption file.

    ``annotations`` is a CSV with a header containing ``video,caption`` or a JSONL file
    of ``{"video": ..., "caption": ...}`` objects (default: ``root/captions.csv``, else
    ``root/captions.jsonl``). ``video`` is a path relative to ``video_dir`` (default
    ``root``) or absolute; several rows for one video give it several captions. A
    malformed file (bad UTF-8, a bad JSON line, a short CSV row, a caption that is not a
    string) is a :class:`~dgl_rs.errors.UsageError` naming the file and line.
    """
    root = _require_dir(root, "video folder")
    videos = _require_dir(video_dir, "video directory") if video_dir else root
    path = _caption_file(root, annotations)
    by_video: dict[str, list[str]] = {}
    for video, caption in _caption_pairs(path):
        if caption.strip():
            by_video.setdefault(video.strip(), []).append(caption.strip())
    records, found = [], []
    for video, caps in by_video.items():
        p = Path(video) if os.path.isabs(video) else videos / video
        records.append(VideoRecord(str(p), tuple(caps), video))
        found.append(p.is_file())
    return _finish(records, found, f"folder {path.name}", drop_missing)


READERS: dict[str, Callable[..., list[VideoRecord]]] = {
    "msrvtt": read_msrvtt, "vatex": read_vatex, "lsmdc": read_lsmdc,
    "activitynet": read_activitynet, "msvd": read_msvd, "didemo": read_didemo, "folder": read_folder,
}


def read_dataset(name: str, root: PathLike, split: str = "train", **kwargs) -> list[VideoRecord]:
    """Records of dataset ``name`` (a key of :data:`READERS`). For ``folder`` the
    ``split`` argument is the caption file (or ``"train"``/``"test"`` for the default
    ``captions.csv``)."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}")
    if name == "folder":
        annotations = kwargs.pop("annotations", None)
        if annotations is None and split not in ("train", "test", "val", None):
            annotations = split
        return read_folder(root, annotations, **kwargs)
    return READERS[name](root, split, **kwargs)
