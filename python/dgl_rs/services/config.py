"""What every command that loads a model and a dataset shares: the dataset, backbone,
evaluation and device flags (:class:`EvalConfig`, whose fields are flags and JSON keys),
the per-dataset recipes, and the flag machinery (:func:`add_arguments`,
:func:`check_bounds`). ``dgl-rs train``'s config extends :class:`EvalConfig`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..util.errors import UsageError
from ..factory.build import DEFAULT_MODEL, DEFAULT_PRETRAINED

DATASETS = ("msrvtt", "vatex", "lsmdc", "activitynet", "msvd", "didemo", "folder", "synthetic")
PRECISIONS = ("auto", "fp32", "amp_bf16", "amp")

# Spec section 6: lr / epochs / batch per GPU / words / frames / generator. The paper's
# text says 5e-3 for MSR-VTT; the released recipe (used here) 2e-3. "folder" (your own
# data) takes the VATEX recipe; "synthetic" is sized for the tiny CLIP on 2 CPU cores.
# The paper has no MSVD or DiDeMo recipe: MSVD (short YouTube clips, ~40 captions each)
# takes VATEX's, DiDeMo (paragraph-to-video, like ActivityNet) ActivityNet's, with
# CLIP4Clip's 64 words and 64 frames for DiDeMo.
RECIPES: dict[str, dict[str, Any]] = {
    "msrvtt": dict(lr=2e-3, epochs=5, batch_size=128, context_length=32, num_frames=12,
                   generator="transformer"),
    "vatex": dict(lr=5e-3, epochs=10, batch_size=64, context_length=32, num_frames=12,
                  generator="linear"),
    "lsmdc": dict(lr=1e-2, epochs=10, batch_size=64, context_length=32, num_frames=12,
                  generator="linear"),
    "activitynet": dict(lr=1e-2, epochs=10, batch_size=16, context_length=64, num_frames=64,
                        generator="linear"),
    "msvd": dict(lr=5e-3, epochs=10, batch_size=64, context_length=32, num_frames=12,
                 generator="linear"),
    "didemo": dict(lr=1e-2, epochs=10, batch_size=16, context_length=64, num_frames=64,
                   generator="linear"),
    "folder": dict(lr=5e-3, epochs=10, batch_size=64, context_length=32, num_frames=12,
                   generator="linear"),
    "synthetic": dict(lr=1e-2, epochs=6, batch_size=32, context_length=32, num_frames=8,
                      generator="linear", model="synthetic-tiny", pretrained="synthetic-tiny"),
}
def flag_field(help: str, default: Any = None, *, flag: Optional[str] = None, **kw: Any):
    """A dataclass field carrying its argparse help text (and extra argparse kwargs)."""
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


@dataclass
class EvalConfig:
    # data
    dataset: str = flag_field("dataset format to train on (sets the recipe defaults)", "synthetic",
                      choices=DATASETS, required=True)
    data_root: Optional[str] = flag_field("dataset root folder (videos + annotation files); "
                                  "not needed for --dataset synthetic")
    train_annotations: Optional[str] = flag_field("--dataset folder: CSV or JSONL of (video, caption) "
                                          "pairs for training (default DATA_ROOT/train.csv|jsonl)")
    eval_annotations: Optional[str] = flag_field("--dataset folder: CSV or JSONL of (video, caption) "
                                         "pairs for evaluation (default DATA_ROOT/test.csv|jsonl)")
    train_limit: int = flag_field("use only the first N training videos (0 = all)", 0, type=int)
    eval_limit: int = flag_field("use only the first N evaluation videos (0 = all)", 0, type=int)
    synthetic_split: str = flag_field("--dataset synthetic: caption split(s) to train and evaluate on",
                              "both", choices=("static", "temporal", "both"))
    synthetic_videos: int = flag_field("--dataset synthetic: training videos per split", 512, type=int)
    synthetic_eval_videos: int = flag_field("--dataset synthetic: test videos per split", 256, type=int)
    synthetic_world: str = flag_field("--dataset synthetic: 'pretraining' (the world of the tiny CLIP's "
                                      "pretraining stills) or 'shifted' (the same videos with a domain shift: "
                                      "textured backdrops, clutter, camera motion, lighting drift, noise, "
                                      "compression, new sizes, paraphrased captions)", "pretraining",
                                      choices=("pretraining", "shifted"))
    synthetic_seed: int = flag_field("--dataset synthetic: seed of the training videos (test videos "
                             "use seed + 1000, validation videos seed + 2000)", 0, type=int)
    val_split: Optional[str] = flag_field(
        "choose the best epoch on a validation split, never the test split: 'val' (the dataset's "
        "own: MSVD val_list.txt, DiDeMo val_data.json, LSMDC LSMDC16_annos_val.csv, VATEX "
        "val_list.txt, folder --val-annotations, synthetic fresh videos) or 'holdout' (--val-videos "
        "training videos held out; MSR-VTT and ActivityNet have no split apart from their test). "
        "Validated after every epoch; best/ gets the prompts with the highest validation t2v R@1",
        choices=("val", "holdout"))
    val_videos: int = flag_field("validation videos: with --val-split holdout how many training videos to "
                         "hold out (required); synthetic: videos per split (default --synthetic-eval-"
                         "videos); otherwise use only the first N (0 = all)", 0, type=int)
    val_annotations: Optional[str] = flag_field("--dataset folder --val-split val: CSV or JSONL of (video, "
                                        "caption) pairs for validation (default DATA_ROOT/val.csv|jsonl)")
    frame_cache: Optional[str] = flag_field(
        "read frames from this frame cache (made by `dgl-rs prepare`) instead of decoding the videos: uint8 "
        "frames to the device, normalised there; refused when made at another --size than the model's input",
        metavar="CACHE")
    workers: int = flag_field("data-loader worker processes per rank", 2, type=int)
    on_broken: Optional[str] = flag_field(
        "what a broken or missing video does: 'skip' it (counted in the log) or 'raise' an "
        "error naming it. Default: skip in training, raise in evaluation",
        choices=("skip", "raise"))
    # model
    model: Optional[str] = flag_field(f"open_clip model name (default {DEFAULT_MODEL}; synthetic-tiny "
                              "for --dataset synthetic)")
    pretrained: Optional[str] = flag_field(f"backbone weights: 'openai', a local checkpoint file, "
                                   f"'synthetic-tiny' (the shipped tiny CLIP) or 'none' "
                                   f"(default {DEFAULT_PRETRAINED}; synthetic-tiny for "
                                   "--dataset synthetic)")
    # model
    model: Optional[str] = flag_field(f"open_clip model name (default {DEFAULT_MODEL}; synthetic-tiny "
                              "for --dataset synthetic)")
    pretrained: Optional[str] = flag_field(f"backbone weights: 'openai', a local checkpoint file, "
                                   f"'synthetic-tiny' (the shipped tiny CLIP) or 'none' "
                                   f"(default {DEFAULT_PRETRAINED}; synthetic-tiny for "
                                   "--dataset synthetic)")
    num_frames: Optional[int] = flag_field("frames per video T (default: recipe)", type=int)
    context_length: Optional[int] = flag_field("text context length in tokens (default: recipe)", type=int)
    # evaluation
    precision: str = flag_field("'auto' = amp_bf16 on CUDA (amp = fp16 with a grad scaler), fp32 on CPU",
                        "auto", choices=PRECISIONS)
    eval_batch_size: int = flag_field("videos per batch when computing evaluation embeddings", 32,
                              type=int)
    qb_norm: bool = flag_field("also report QB-Norm, both directions (banks: the training captions and "
                       "training videos), as its paper sets it and as the DGL release's script does", False,
                       action="store_true")
    dsl: bool = flag_field("also report dual-softmax (DSL) post-processing", False, action="store_true")
    # run
    device: str = flag_field("'auto', 'cpu', 'cuda' or 'cuda:N' (under torchrun: the local rank)", "auto")
    no_progress: bool = flag_field("no progress bars (drawn only when stderr is a terminal anyway; a log "
                           "file gets one line per epoch)", False, action="store_true")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _plain(value):
    """Tuples (and ranges) as lists, all the way down: what the JSON of a config holds."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (tuple, list, range)) else value


def add_arguments(parser: argparse.ArgumentParser, cls=EvalConfig,
                  include: Optional[Sequence[str]] = None,
                  defaults: Optional[dict[str, Any]] = None) -> None:
    """One kebab-case flag per dataclass field (or per field in ``include``), with the
    field's help text; ``defaults`` overrides field defaults. A field of a method option
    (metadata ``option``, ``users``) gets that option's flag."""
    group = None
    for f in dataclasses.fields(cls):
        if include is not None and f.name not in include:
            continue
        if "option" in f.metadata:
            group = group or parser.add_argument_group("method options (dgl-rs methods --options NAME)")
            f.metadata["option"].add_flag(group, f.metadata["users"])
            continue
        meta = dict(f.metadata)
        flag = meta.pop("flag", None) or "--" + f.name.replace("_", "-")
        help_text = meta.pop("help")
        default = (defaults or {}).get(f.name, f.default)
        if ("action" not in meta and not meta.get("required") and default is not None
                and "(default" not in help_text):
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            help_text += f" (default {shown})"
        parser.add_argument(flag, dest=f.name, default=default, help=help_text, **meta)


#: The range of every number flag of :class:`EvalConfig`: (field, lowest, lowest allowed?,
#: highest (excluded) or None). NaN and inf are never allowed.
BOUNDS = (
    *((key, 1, True, None) for key in ("num_frames", "context_length", "eval_batch_size", "synthetic_videos",
                                       "synthetic_eval_videos")),
    *((key, 0, True, None) for key in ("workers", "train_limit", "eval_limit", "val_videos")),
)


def _in_range(value, low, closed: bool, high) -> bool:
    return (math.isfinite(value) and (value >= low if closed else value > low)
            and (high is None or value < high))


def check_bounds(cfg, fields: Optional[Sequence[str]] = None, bounds: Sequence[tuple] = BOUNDS) -> None:
    """Every number flag (of ``fields``, default all) finite and in its range
    (``bounds``: :data:`BOUNDS`), else a :class:`UsageError` naming the flag."""
    for key, low, closed, high in bounds:
        value = getattr(cfg, key, None)
        if value is None or (fields is not None and key not in fields):
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        if not all(_in_range(v, low, closed, high) for v in values):
            wanted = f"{'>=' if closed else '>'} {low}" + (f" and < {high}" if high is not None else "")
            shown = " ".join(map(str, values))
            raise UsageError(f"--{key.replace('_', '-')} must be finite and {wanted}, got {shown}")


def check_data_root(cfg) -> None:
    """A real dataset needs an existing --data-root, and --frame-cache a cache folder
    (checked before any model loads)."""
    cache = getattr(cfg, "frame_cache", None)
    if cache and cfg.dataset == "synthetic":
        raise UsageError("--frame-cache: --dataset synthetic renders its frames, there are no videos to cache")
    if cache and not os.path.isfile(os.path.join(cache, "manifest.json")):
        raise UsageError(f"--frame-cache {cache}: not a frame cache (no manifest.json); make one with "
                         f"`dgl-rs prepare --dataset {cfg.dataset} --data-root ROOT --out {cache}`")
    if cfg.dataset == "synthetic":
        return
    if not cfg.data_root:
        raise UsageError(f"--data-root is required for --dataset {cfg.dataset}")
    if not os.path.isdir(cfg.data_root):
        raise UsageError(f"--data-root {cfg.data_root}: no such directory (the {cfg.dataset} "
                         "dataset root: annotation files and a videos/ folder)")
