"""Text-video datasets: annotation readers, training pairs, evaluation sets, loaders.

Readers turn the public annotation files (as CLIP4Clip and the DGL release use them)
into :class:`VideoRecord` lists; :class:`TrainPairs` and :class:`EvalSet` turn records
into tensors:

- ``TrainPairs``: one (video, caption) pair per item. Items are dicts
  ``{"frames": float32 (frames, 3, S, S), "text": int64 (context_length,),
  "video_index": int, "caption_index": int}``.
- ``EvalSet``: every video once (items ``{"frames", "video_index"}``) plus all
  captions (``captions``) and ``caption_to_video`` (int64, one video index per caption),
  so each text and each video is embedded once.

A broken or missing video raises :class:`~dgl_rs.data.video.VideoDecodeError`
(``on_error="raise"``, the evaluation default) or makes ``__getitem__`` return ``None``
(``on_error="skip"``, the training default); :func:`collate_skip` drops the ``None``s and
reports how many it dropped in the batch (``batch["num_skipped"]``), and
:class:`VideoLoader` sums them (``loader.num_skipped``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import UsageError
from ..files import read_json, read_text
from .video import PathLike, VideoDecodeError, VideoTransform, decode_frames

log = logging.getLogger("dgl_rs.data")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
ON_ERROR = ("skip", "raise")

# (source, num_frames, train, rng) -> uint8 (frames, H, W, 3)
VideoLoaderFn = Callable[[Any, int, bool, Optional[np.random.Generator]], torch.Tensor]
Tokenizer = Callable[[Sequence[str]], torch.Tensor]


class VideoRecord(NamedTuple):
    """One video and its captions. ``video_path`` is a file path (or, for the
    synthetic benchmark, a :class:`~dgl_rs.data.synthetic.VideoSpec`)."""

    video_path: Any
    captions: tuple[str, ...]
    video_id: str


# ------------------------------------------------------------------------ helpers
def _require_dir(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {str(p)!r} (expected a directory)")
    return p


def _require_file(path: Path, what: str) -> Path:
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


# ---------------------------------------------------------------------- datasets
def _item_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's RNG: reproducible under a seeded
    DataLoader (worker seeds come from its generator) or a seeded main process."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


class _VideoDataset(Dataset):
    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], on_error: str,
                 load_video: Optional[VideoLoaderFn]) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.records = list(records)
        if not self.records:
            raise ValueError("no videos: the record list is empty")
        self.num_frames = int(num_frames)
        self.transform = transform
        self.on_error = _check_on_error(on_error)
        self.load_video = load_video or decode_frames

    def _frames(self, video_index: int, train: bool) -> Optional[torch.Tensor]:
        rec = self.records[video_index]
        try:
            frames = self.load_video(rec.video_path, self.num_frames, train,
                                     _item_rng() if train else None)
        except VideoDecodeError as exc:
            if self.on_error == "raise":
                raise
            log.warning("skipping broken video: %s", exc)
            return None
        out = self.transform(frames)
        if not torch.isfinite(out).all():  # cannot happen with uint8 input; never pass NaN on
            raise ValueError(f"non-finite frames from {rec.video_path!r}")
        return out


class TrainPairs(_VideoDataset):
    """One (video, caption) item per caption of every record.

    ``tokenizer``: texts -> LongTensor (N, context_length), e.g. the one
    :func:`dgl_rs.backbones.load_clip` returns. Frames are sampled with one random frame
    per segment (from torch's RNG, so seed the loader). ``on_error="skip"`` (default)
    returns ``None`` for a broken video (dropped by :func:`collate_skip`).
    """

    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], tokenizer: Tokenizer, *,
                 on_error: str = "skip", load_video: Optional[VideoLoaderFn] = None) -> None:
        super().__init__(records, num_frames, transform, on_error, load_video)
        self.tokenizer = tokenizer
        self.pairs = np.array([(v, c) for v, r in enumerate(self.records)
                               for c in range(len(r.captions))], dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def captions(self) -> list[str]:
        """Every training caption, in item order (e.g. the QB-Norm query bank)."""
        return [self.records[v].captions[c] for v, c in self.pairs]

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        v, c = (int(x) for x in self.pairs[index])
        frames = self._frames(v, train=True)
        if frames is None:
            return None
        text = self.tokenizer([self.records[v].captions[c]])[0]
        return {"frames": frames, "text": text, "video_index": v, "caption_index": c}


class EvalSet(_VideoDataset):
    """Every video once (items ``{"frames", "video_index"}``, segment-centre frames)
    plus ``captions`` (all captions, flattened) and ``caption_to_video`` (int64,
    caption -> index of its video). ``on_error="raise"`` by default: a missing test
    video changes the benchmark, so it should fail loudly."""

    def __init__(self, records: Sequence[VideoRecord], num_frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], *,
                 tokenizer: Optional[Tokenizer] = None, on_error: str = "raise",
                 load_video: Optional[VideoLoaderFn] = None) -> None:
        super().__init__(records, num_frames, transform, on_error, load_video)
        self.tokenizer = tokenizer
        self.captions: list[str] = [c for r in self.records for c in r.captions]
        self.caption_to_video = np.array([v for v, r in enumerate(self.records)
                                          for _ in r.captions], dtype=np.int64)
        self.video_ids = [r.video_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[dict[str, Any]]:
        frames = self._frames(int(index), train=False)
        if frames is None:
            return None
        return {"frames": frames, "video_index": int(index)}

    def tokenized_captions(self, tokenizer: Optional[Tokenizer] = None) -> torch.Tensor:
        """All captions as token ids (num_captions, context_length)."""
        tok = tokenizer or self.tokenizer
        if tok is None:
            raise ValueError("EvalSet.tokenized_captions: no tokenizer given")
        return tok(self.captions)

    def make_loader(self, batch_size: int = 32, workers: int = 0, **kwargs) -> "VideoLoader":
        """The videos in order, batched (see :func:`make_loader`)."""
        return make_loader(self, batch_size, shuffle=False, num_workers=workers, **kwargs)

    def restrict(self, kept_videos: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """After skipping broken videos: ``(caption_indices, caption_to_kept)``, the
        captions whose video was kept and their video's position in ``kept_videos``."""
        pos = {int(v): i for i, v in enumerate(kept_videos)}
        caps = np.array([i for i, v in enumerate(self.caption_to_video) if int(v) in pos],
                        dtype=np.int64)
        return caps, np.array([pos[int(self.caption_to_video[i])] for i in caps],
                              dtype=np.int64)


# ----------------------------------------------------------------------- loading
def collate_skip(batch: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Collate dict items, dropping ``None`` (skipped broken videos).

    The batch gets ``num_skipped`` (how many were dropped) and ``batch_size`` (how many
    remain; 0 when every item was skipped, then no other keys)."""
    kept = [b for b in batch if b is not None]
    out: dict[str, Any] = default_collate(kept) if kept else {}
    out["num_skipped"] = len(batch) - len(kept)
    out["batch_size"] = len(kept)
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch
    seed (which the loader's generator determines)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class VideoLoader(DataLoader):
    """A DataLoader that drops empty batches and counts skipped samples
    (``num_skipped``: total since creation)."""

    num_skipped: int = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, dict) and "num_skipped" in batch:
                self.num_skipped += int(batch["num_skipped"])
                if batch["batch_size"] == 0:
                    continue
            yield batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False,
                num_workers: int = 0, seed: int = 0, *, drop_last: bool = False,
                sampler=None, pin_memory: bool = False, persistent_workers: bool = False,
                prefetch_factor: Optional[int] = None) -> VideoLoader:
    """A :class:`VideoLoader` over ``dataset`` with :func:`collate_skip`, a generator
    seeded with ``seed`` (shuffling and worker seeds) and :func:`seed_worker`.

    Pass a ``sampler`` (e.g. ``DistributedSampler``) instead of ``shuffle`` for DDP.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sampler is not None and shuffle:
        raise ValueError("pass either shuffle=True or a sampler, not both")
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return VideoLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                       num_workers=num_workers, collate_fn=collate_skip,
                       generator=torch.Generator().manual_seed(int(seed)),
                       worker_init_fn=seed_worker, drop_last=drop_last,
                       pin_memory=pin_memory, **kwargs)
