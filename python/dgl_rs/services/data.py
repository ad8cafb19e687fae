"""Dataset assembly for every command: training pairs, evaluation and validation sets and
QB-Norm's banks of each dataset format, from the flags of an
:class:`~dgl_rs.services.config.EvalConfig` (:mod:`dgl_rs.data` does the reading)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import data as D
from ..data import collate_skip
from ..data.synthetic import SyntheticVideoDataset
from ..data.video import VideoTransform
from ..util.errors import UsageError
from ..util.files import check_readable
from ..backbone.text import tokenize
from .config import EvalConfig


# ----------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    """What the trainer needs from :mod:`dgl_rs.data`."""
    train: Any  # map-style dataset of one (frames, caption tokens) pair per item
    collate_fn: Any = None  # collate for train batches (drops broken samples)
    evals: dict = field(default_factory=dict)  # name -> EvalSet
    query_bank: Optional[list] = None  # training captions (QB-Norm bank, text->video)
    video_bank: Any = None  # training videos as an EvalSet (QB-Norm bank, video->text)
    vals: dict = field(default_factory=dict)  # name -> EvalSet: validation (--val-split), never test


# Train / test split names of each reader (spec section 7: MSR-VTT 9k / 1k-A, VATEX,
# LSMDC, ActivityNet val_1 as test).
SPLITS = {"msrvtt": ("train", "test"), "vatex": ("train", "test"), "lsmdc": ("train", "test"),
          "activitynet": ("train", "val_1"), "msvd": ("train", "test"), "didemo": ("train", "test")}
# The validation split of each reader (--val-split val). MSR-VTT's 9k training split holds
# its official validation videos and ActivityNet's val_2 has the same videos as val_1 (the
# test): neither has one, so they take --val-split holdout.
VAL_SPLITS = {"vatex": "val", "lsmdc": "val", "msvd": "val", "didemo": "val"}


def _folder_annotations(root: Path, given: Optional[str], stem: str) -> Path:
    flag = {"train": "--train-annotations", "val": "--val-annotations"}.get(stem, "--eval-annotations")
    if given:
        path = Path(given)
        if not path.exists() and (root / path).exists():
            path = root / path
        return check_readable(path, flag)
    for ext in (".csv", ".jsonl"):
        if (root / f"{stem}{ext}").is_file():
            return root / f"{stem}{ext}"
    raise UsageError(f"--dataset folder: no {stem}.csv or {stem}.jsonl in {root}; pass {flag} "
                     "(a CSV with columns video,caption or a JSONL of {video, caption})")


def read_records(cfg: EvalConfig, train: bool):
    """The dataset's VideoRecords for training (``train``) or evaluation."""
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise UsageError(f"--data-root {root}: no such directory")
    try:
        if cfg.dataset == "folder":
            ann = _folder_annotations(root, cfg.train_annotations if train else
                                      cfg.eval_annotations, "train" if train else "test")
            records = D.read_folder(root, ann)
        else:
            records = D.read_dataset(cfg.dataset, root, SPLITS[cfg.dataset][0 if train else 1])
    except FileNotFoundError as exc:
        raise UsageError(f"--dataset {cfg.dataset} --data-root {root}: {exc}") from exc
    if train and cfg.val_split == "holdout":
        records = holdout_split(records, cfg.val_videos)[0]
    limit = cfg.train_limit if train else cfg.eval_limit
    return records[:limit] if limit else records


def data_transform(cfg: EvalConfig, preprocess_cfg):
    """``(VideoTransform, tokenize)`` for the backbone's input size and mean/std, and the
    one tokenizer (:func:`dgl_rs.tokenize`) at ``cfg.context_length``."""
    pre = dict(preprocess_cfg or {})
    context_length = cfg.context_length

    def tok(texts):
        return tokenize(texts, context_length)

    return VideoTransform.from_preprocess_cfg(pre), tok


def video_source(cache_path: Optional[str], transform: VideoTransform, data_root=None) -> dict:
    """How a dataset gets its frames: ``{"transform", "load_video"}`` for
    :class:`~dgl_rs.data.EvalSet` / :class:`~dgl_rs.data.TrainPairs`. From a frame cache
    (``cache_path``): uint8 frames, normalised on the device by the model; else decoded at
    the model's size (only the sampled frames converted and resized, in uint8) and normalised here."""
    if not cache_path:
        return {"transform": transform, "load_video": functools.partial(D.decode_frames, size=transform.image_size)}
    cache = D.FrameCache(cache_path, size=transform.image_size)
    return {"transform": transform.resize_crop, "load_video": D.CachedVideos(cache, data_root)}


def check_cache_sources(sets, data_root, cache_flag: str) -> None:
    """Datasets reading a frame cache: no source video of theirs changed since ``dgl-rs
    prepare`` (size, mtime), else a :class:`UsageError` naming one."""
    cache, keys = None, set()
    for s in sets:
        if s is not None and isinstance(getattr(s, "load_video", None), D.CachedVideos):
            cache = s.load_video.cache
            keys.update(k for k in (cache.key(r.video_path, data_root) for r in s.records) if k is not None)
    changed = cache.changed_sources(sorted(keys)) if cache is not None else []
    if changed:
        raise UsageError(f"--frame-cache {cache_flag}: {len(changed)} source videos changed since dgl-rs prepare "
                         f"(e.g. {changed[0]}); run the same dgl-rs prepare again (it redoes only their shards)")


def build_data(cfg: EvalConfig, preprocess_cfg, train: bool = True) -> DataBundle:
    """Training pairs (``train``), evaluation set(s) and (with --qb-norm) QB-Norm's banks:
    the training captions and the training videos (never the test split's)."""
    bundle = _build_data(cfg, preprocess_cfg, train)
    check_cache_sources([bundle.train, *bundle.evals.values(), *bundle.vals.values(), bundle.video_bank],
                        cfg.data_root, cfg.frame_cache)
    return bundle


def _build_data(cfg: EvalConfig, preprocess_cfg, train: bool) -> DataBundle:
    transform, tok = data_transform(cfg, preprocess_cfg)
    train_err = cfg.on_broken or "skip"
    eval_err = cfg.on_broken or "raise"
    if cfg.dataset == "synthetic":
        return build_synthetic_data(cfg, transform, tok, train_err, eval_err)
    source = video_source(cfg.frame_cache, transform, cfg.data_root)
    evals = {"test": D.EvalSet(read_records(cfg, False), cfg.num_frames, **source,
                               tokenizer=tok, on_error=eval_err)}
    if not train:
        bank = video_bank = None
        if cfg.qb_norm:
            records = read_records(cfg, True)
            bank = [c for r in records for c in r.captions]
            video_bank = D.EvalSet(records, cfg.num_frames, **source, tokenizer=tok, on_error="skip")
        return DataBundle(train=None, evals=evals, query_bank=bank, video_bank=video_bank)
    pairs = D.TrainPairs(read_records(cfg, True), cfg.num_frames, tokenizer=tok, on_error=train_err, **source)
    return DataBundle(train=pairs, collate_fn=D.collate_skip, evals=evals,
                      vals=build_val_sets(cfg, source, tok, eval_err, evals["test"].video_ids),
                      query_bank=pairs.captions if cfg.qb_norm else None,
                      video_bank=D.EvalSet(pairs.records, cfg.num_frames, **source, tokenizer=tok,
                                           on_error="skip") if cfg.qb_norm else None)


SYNTHETIC_EVAL_SEED_OFFSET = 1000  # test videos come from another seed than training


def build_synthetic_data(cfg: EvalConfig, transform, tok, train_err: str,
                         eval_err: str) -> DataBundle:
    """The synthetic benchmark: train on the chosen split(s) ("both" = the ``mixed``
    split, half static, half temporal), evaluate on each split separately, on videos
    drawn from another seed, all in ``--synthetic-world``. (Rendering never fails, so
    ``on_broken`` is moot.)"""
    splits = ["static", "temporal"] if cfg.synthetic_split == "both" else [cfg.synthetic_split]
    kw = dict(num_frames=cfg.num_frames, image_size=transform.image_size,
              mean=transform.mean, std=transform.std, tokenizer=tok, world=cfg.synthetic_world)
    train_split = "mixed" if len(splits) == 2 else splits[0]
    train = SyntheticVideoDataset(train_split, cfg.synthetic_videos * len(splits),
                                  seed=cfg.synthetic_seed, train=True, **kw)
    evals = {split: SyntheticVideoDataset(split, cfg.synthetic_eval_videos,
                                          seed=cfg.synthetic_seed + SYNTHETIC_EVAL_SEED_OFFSET,
                                          train=False, **kw)
             for split in splits}
    return DataBundle(train=train, collate_fn=collate_skip, evals=evals,
                      vals=synthetic_val_sets(cfg, splits, kw),
                      query_bank=train.captions if cfg.qb_norm else None,
                      video_bank=SyntheticVideoDataset(train_split, cfg.synthetic_videos * len(splits),
                                                       seed=cfg.synthetic_seed, train=False, **kw)
                      if cfg.qb_norm else None)


# ----------------------------------------------------------------------- validation
SYNTHETIC_VAL_SEED_OFFSET = 2000  # validation videos: neither the training nor the test seed
HOLDOUT_SEED = 0  # the same held-out videos for every run (and --seed) on a dataset


def holdout_split(records: list, n: int) -> tuple[list, list]:
    """``(training, held out)``: ``n`` videos (with all their captions) drawn by a fixed
    permutation of the reader's order, kept in that order on both sides."""
    if not 0 < n < len(records):
        raise UsageError(f"--val-videos {n}: hold out at least 1 and fewer than the {len(records)} "
                         "training videos")
    held = set(np.random.default_rng(HOLDOUT_SEED).permutation(len(records))[:n].tolist())
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


def read_val_records(cfg: EvalConfig) -> list:
    """The validation videos of ``--val-split`` (a real dataset)."""
    if cfg.val_split == "holdout":
        whole = dataclasses.replace(cfg, val_split=None, train_limit=0)
        return holdout_split(read_records(whole, True), cfg.val_videos)[1]
    root = Path(cfg.data_root)
    if cfg.dataset != "folder" and cfg.dataset not in VAL_SPLITS:
        raise UsageError(f"--dataset {cfg.dataset} has no validation split apart from its test split: "
                         "use --val-split holdout --val-videos N")
    try:
        if cfg.dataset == "folder":
            records = D.read_folder(root, _folder_annotations(root, cfg.val_annotations, "val"))
        else:
            records = D.read_dataset(cfg.dataset, root, VAL_SPLITS[cfg.dataset])
    except FileNotFoundError as exc:
        raise UsageError(f"--val-split val --dataset {cfg.dataset} --data-root {root}: {exc}") from exc
    return records[:cfg.val_videos] if cfg.val_videos else records


def build_val_sets(cfg: EvalConfig, source: dict, tok, eval_err: str, test_ids) -> dict:
    """``{"val": EvalSet}`` for ``--val-split`` (``{}`` without it). A validation video that
    is also a test video is an error: selection must never see the test split."""
    if not cfg.val_split:
        return {}
    records = read_val_records(cfg)
    shared = sorted({r.video_id for r in records} & set(test_ids))
    if shared:
        raise UsageError(f"--val-split {cfg.val_split}: {len(shared)} validation videos are test videos "
                         f"too (e.g. {shared[:3]}); the best epoch must be chosen without the test split"
                         + (" (VATEX: put the validation ids in val_list.txt)" if cfg.dataset == "vatex" else ""))
    return {"val": D.EvalSet(records, cfg.num_frames, **source, tokenizer=tok, on_error=eval_err)}


def synthetic_val_sets(cfg: EvalConfig, splits: list, kw: dict) -> dict:
    """One validation set per evaluated split, drawn from seed + 2000 (training: seed, test:
    seed + 1000), ``--val-videos`` videos each (default ``--synthetic-eval-videos``)."""
    if not cfg.val_split:
        return {}
    n = cfg.val_videos or cfg.synthetic_eval_videos
    return {split: SyntheticVideoDataset(split, n, seed=cfg.synthetic_seed + SYNTHETIC_VAL_SEED_OFFSET,
                                         train=False, **kw) for split in splits}
