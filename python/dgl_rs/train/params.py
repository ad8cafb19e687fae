"""Training configuration: one dataclass, kebab-case flags, per-dataset recipe defaults.

Every field of :class:`TrainConfig` is a flag (``num_frames`` -> ``--num-frames``) and a
key of the JSON written to ``params.txt``/``config.json``. Fields whose default is
``None`` in the dataclass come from the dataset's recipe (:data:`RECIPES`, spec section
6) unless given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..errors import UsageError
from ..factory import DEFAULT_MODEL, DEFAULT_PRETRAINED
from ..methods import METHODS, Option, settable_options


DATASETS = ("msrvtt", "vatex", "lsmdc", "activitynet", "msvd", "didemo", "folder", "synthetic")
#: --generator picks the default --method dgl-GENERATOR among these.
DEFAULT_METHOD_GENERATORS = ("transformer", "linear")
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
#: Flags of their own (recipe defaults), not generated from the methods' options.
RECIPE_OPTIONS = ("num_frames", "context_length")


def _method_options() -> tuple[dict[str, Option], dict[str, list]]:
    options: dict[str, Option] = {}
    users: dict[str, list] = {}
    for name in METHODS:
        for key, opt in settable_options(name).items():
            if key not in RECIPE_OPTIONS:
                options.setdefault(key, opt)
                users.setdefault(key, []).append(name)
    return options, users


#: Every option any method lets a user set -> its declaration; and -> the methods that take it.
METHOD_OPTIONS, OPTION_USERS = _method_options()


def _f(help: str, default: Any = None, *, flag: Optional[str] = None, **kw: Any):
    """A dataclass field carrying its argparse help text (and extra argparse kwargs)."""
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


@dataclass
class _TrainFields:
    # data
    dataset: str = _f("dataset format to train on (sets the recipe defaults)", "synthetic",
                      choices=DATASETS, required=True)
    data_root: Optional[str] = _f("dataset root folder (videos + annotation files); "
                                  "not needed for --dataset synthetic")
    train_annotations: Optional[str] = _f("--dataset folder: CSV or JSONL of (video, caption) "
                                          "pairs for training (default DATA_ROOT/train.csv|jsonl)")
    eval_annotations: Optional[str] = _f("--dataset folder: CSV or JSONL of (video, caption) "
                                         "pairs for evaluation (default DATA_ROOT/test.csv|jsonl)")
    train_limit: int = _f("use only the first N training videos (0 = all)", 0, type=int)
    eval_limit: int = _f("use only the first N evaluation videos (0 = all)", 0, type=int)
    synthetic_split: str = _f("--dataset synthetic: caption split(s) to train and evaluate on",
                              "both", choices=("static", "temporal", "both"))
    synthetic_videos: int = _f("--dataset synthetic: training videos per split", 512, type=int)
    synthetic_eval_videos: int = _f("--dataset synthetic: test videos per split", 256, type=int)
    synthetic_seed: int = _f("--dataset synthetic: seed of the training videos (test videos "
                             "use seed + 1000, validation videos seed + 2000)", 0, type=int)
    val_split: Optional[str] = _f(
        "choose the best epoch on a validation split, never the test split: 'val' (the dataset's "
        "own: MSVD val_list.txt, DiDeMo val_data.json, LSMDC LSMDC16_annos_val.csv, VATEX "
        "val_list.txt, folder --val-annotations, synthetic fresh videos) or 'holdout' (--val-videos "
        "training videos held out; MSR-VTT and ActivityNet have no split apart from their test). "
        "Validated after every epoch; best/ gets the prompts with the highest validation t2v R@1",
        choices=("val", "holdout"))
    val_videos: int = _f("validation videos: with --val-split holdout how many training videos to "
                         "hold out (required); synthetic: videos per split (default --synthetic-eval-"
                         "videos); otherwise use only the first N (0 = all)", 0, type=int)
    val_annotations: Optional[str] = _f("--dataset folder --val-split val: CSV or JSONL of (video, "
                                        "caption) pairs for validation (default DATA_ROOT/val.csv|jsonl)")
    workers: int = _f("data-loader worker processes per rank", 2, type=int)
    on_broken: Optional[str] = _f(
        "what a broken or missing video does: 'skip' it (counted in the log) or 'raise' an "
        "error naming it. Default: skip in training, raise in evaluation",
        choices=("skip", "raise"))
    # model
    model: Optional[str] = _f(f"open_clip model name (default {DEFAULT_MODEL}; synthetic-tiny "
                              "for --dataset synthetic)")
    pretrained: Optional[str] = _f(f"backbone weights: 'openai', a local checkpoint file, "
                                   f"'synthetic-tiny' (the shipped tiny CLIP) or 'none' "
                                   f"(default {DEFAULT_PRETRAINED}; synthetic-tiny for "
                                   "--dataset synthetic)")
    method: Optional[str] = _f("what to train: a method of the paper's Tables 1 and 3 (`dgl-rs "
                               "methods` lists them; default: dgl-GENERATOR)", choices=sorted(METHODS))
    num_frames: Optional[int] = _f("frames per video T (default: recipe)", type=int)
    context_length: Optional[int] = _f("text context length in tokens (default: recipe)", type=int)
    # optimisation (spec section 6)
    epochs: Optional[int] = _f("training epochs (default: recipe)", type=int)
    batch_size: Optional[int] = _f("videos per rank per micro-batch; the contrastive batch of one "
                                   "optimizer step is batch-size x accum-steps x world-size "
                                   "(default: recipe)", type=int)
    accum_steps: int = _f("micro-batches per optimizer step (gradient accumulation). The loss is that "
                          "of the whole batch, as if it had been one (gradient caching: every "
                          "micro-batch is embedded once without a graph, then again with one), so "
                          "the gradient equals the larger batch's; memory: one micro-batch", 1, type=int)
    lr: Optional[float] = _f("peak learning rate (default: recipe)", type=float)
    wd: float = _f("AdamW weight decay (not applied to biases and 1-D params)", 0.2, type=float)
    beta1: float = _f("AdamW beta1", 0.9, type=float)
    beta2: float = _f("AdamW beta2", 0.98, type=float)
    eps: float = _f("AdamW epsilon", 1e-6, type=float)
    warmup: float = _f("linear warm-up: a fraction of all steps if < 1, else a step count",
                       0.1, type=float)
    grad_clip: float = _f("clip the global gradient norm to this (0 = off)", 1.0, type=float)
    precision: str = _f("'auto' = amp_bf16 on CUDA (amp = fp16 with a grad scaler), fp32 on CPU",
                        "auto", choices=PRECISIONS)
    seed: int = _f("random seed (prompt init, shuffle order, frame sampling)", 0, type=int)
    # evaluation
    eval_every: int = _f("evaluate every N epochs (and after the last; 0 = only after the last)",
                         1, type=int)
    eval_batch_size: int = _f("videos per batch when computing evaluation embeddings", 32,
                              type=int)
    qb_norm: bool = _f("also report QB-Norm, both directions (banks: the training captions and "
                       "training videos), as its paper sets it and as the DGL release's script does", False,
                       action="store_true")
    dsl: bool = _f("also report dual-softmax (DSL) post-processing", False, action="store_true")
    # run
    device: str = _f("'auto', 'cpu', 'cuda' or 'cuda:N' (under torchrun: the local rank)", "auto")
    dist_backend: Optional[str] = _f("torch.distributed backend (default nccl on CUDA, gloo on CPU)")
    output_dir: str = _f("folder holding one sub-folder per run", "runs")
    name: Optional[str] = _f("run name (default DATE-DATASET-GENERATOR); required with "
                             "--resume latest")
    resume: Optional[str] = _f("continue from a checkpoint: a file, a run folder, or 'latest' "
                               "(newest checkpoint of --name; a fresh start if there is none)")
    save_every: int = _f("also checkpoint every N steps (0 = at the end of each epoch only)",
                         0, type=int)
    keep_checkpoints: int = _f("keep the newest N checkpoints (0 = all)", 2, type=int)
    log_every: int = _f("log train loss / lr / throughput every N steps", 10, type=int)
    no_tensorboard: bool = _f("do not write TensorBoard events", False, action="store_true")
    no_progress: bool = _f("no progress bars (drawn only when stderr is a terminal anyway; a log "
                           "file gets one line per epoch)", False, action="store_true")


def _option_field(opt: Option):
    return field(default=None, metadata={"option": opt})


#: The configuration of ``dgl-rs train``: the fields above plus one per method option
#: (:data:`METHOD_OPTIONS`, None: the method's default), each a flag and a key of config.json.
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(k, Any, _option_field(o)) for k, o in METHOD_OPTIONS.items()], bases=(_TrainFields,),
    namespace={"to_dict": lambda self: _plain(dataclasses.asdict(self)),
               "to_json": lambda self: json.dumps(self.to_dict(), indent=2, sort_keys=True),
               "__module__": __name__})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (tuple, list, range)) else value


def add_arguments(parser: argparse.ArgumentParser, cls=TrainConfig,
                  include: Optional[Sequence[str]] = None,
                  defaults: Optional[dict[str, Any]] = None) -> None:
    """One kebab-case flag per dataclass field (or per field in ``include``), with the
    field's help text; ``defaults`` overrides field defaults."""
    group = None
    for f in dataclasses.fields(cls):
        if include is not None and f.name not in include:
            continue
        if "option" in f.metadata:
            group = group or parser.add_argument_group("method options (dgl-rs methods --options NAME)")
            users = OPTION_USERS[f.name]
            f.metadata["option"].add_flag(group, () if len(users) == len(METHODS) else users)
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


def apply_recipe(cfg: TrainConfig) -> TrainConfig:
    """Fill the ``None`` fields from the dataset's recipe and check the values."""
    recipe = dict(RECIPES[cfg.dataset])
    resolve_method(cfg, recipe.pop("generator"))
    recipe.update(METHODS[cfg.method].recipe)
    for key, value in recipe.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.model is None:
        cfg.model = DEFAULT_MODEL
    if cfg.pretrained is None:
        cfg.pretrained = DEFAULT_PRETRAINED
    validate(cfg)
    return cfg


def resolve_method(cfg: TrainConfig, recipe_generator: str) -> None:
    """``--method`` (default ``dgl-GENERATOR``) and ``--generator``, made consistent."""
    if cfg.method is None:
        gen = cfg.generator or recipe_generator
        if gen not in DEFAULT_METHOD_GENERATORS:
            raise UsageError(f"--generator {gen} needs a --method that takes it (e.g. --method dgl)")
        cfg.method, cfg.generator = f"dgl-{gen}", gen
        return
    pinned = METHODS[cfg.method].pinned.get("generator", ...)
    if pinned is ...:  # a method without a generator, or one that lets the flag set it
        return
    if cfg.generator is not None and cfg.generator != pinned:
        raise UsageError(f"--method {cfg.method} uses generator {pinned!r}; drop --generator {cfg.generator}")
    cfg.generator = pinned


def method_options(cfg: TrainConfig) -> dict[str, Any]:
    """The method options the flags set, exactly as given (the rest: the method's defaults);
    a flag the method does not take is a :class:`UsageError` naming it."""
    settable = settable_options(cfg.method)
    out = {}
    for key, opt in METHOD_OPTIONS.items():
        value = getattr(cfg, key)
        if value is None or (key == "generator" and METHODS[cfg.method].pinned.get(key) == value):
            continue
        if key not in settable:
            raise UsageError(f"{opt.flag} is not an option of --method {cfg.method} (its options: "
                             f"{', '.join(settable[k].flag for k in settable)})")
        try:
            out[key] = opt.from_flag(value)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return out


#: The range of every number flag: (field, lowest, lowest allowed?, highest (excluded) or
#: None). NaN and inf are never allowed.
BOUNDS = (
    *((key, 1, True, None) for key in ("epochs", "batch_size", "num_frames", "context_length",
                                       "eval_batch_size", "log_every",
                                       "synthetic_videos", "synthetic_eval_videos", "accum_steps")),
    *((key, 0, True, None) for key in ("workers", "train_limit", "eval_limit", "val_videos", "save_every",
                                       "keep_checkpoints", "eval_every", "grad_clip", "wd", "warmup")),
    *((key, o.low if o.kind != "pair" else 0, o.kind != "float", None) for key, o in METHOD_OPTIONS.items()
      if o.kind in ("int", "float", "pair")),
    ("lr", 0, False, None), ("eps", 0, False, None),
    ("beta1", 0, True, 1), ("beta2", 0, True, 1),
)


def _in_range(value, low, closed: bool, high) -> bool:
    return (math.isfinite(value) and (value >= low if closed else value > low)
            and (high is None or value < high))


def check_bounds(cfg, fields: Optional[Sequence[str]] = None) -> None:
    """Every number flag (of ``fields``, default all) finite and in its range
    (:data:`BOUNDS`), else a :class:`UsageError` naming the flag."""
    for key, low, closed, high in BOUNDS:
        value = getattr(cfg, key, None)
        if value is None or (fields is not None and key not in fields):
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        if not all(_in_range(v, low, closed, high) for v in values):
            wanted = f"{'>=' if closed else '>'} {low}" + (f" and < {high}" if high is not None else "")
            shown = " ".join(map(str, values))
            raise UsageError(f"--{key.replace('_', '-')} must be finite and {wanted}, got {shown}")


def validate(cfg: TrainConfig) -> None:
    check_bounds(cfg)
    check_data_root(cfg)
    check_val_split(cfg)
    if cfg.resume == "latest" and not cfg.name:
        raise UsageError("--resume latest needs --name (the run to continue)")


def check_val_split(cfg: TrainConfig) -> None:
    """--val-split holdout needs --val-videos and a real dataset; --val-annotations
    belongs to --dataset folder --val-split val."""
    if cfg.val_split == "holdout" and cfg.dataset == "synthetic":
        raise UsageError("--dataset synthetic draws its validation videos: use --val-split val")
    if cfg.val_split == "holdout" and cfg.val_videos < 1:
        raise UsageError("--val-split holdout needs --val-videos N (the training videos to hold out)")
    if cfg.val_annotations and not (cfg.dataset == "folder" and cfg.val_split == "val"):
        raise UsageError("--val-annotations is for --dataset folder --val-split val")


def check_data_root(cfg) -> None:
    """A real dataset needs an existing --data-root (checked before any model loads)."""
    if cfg.dataset == "synthetic":
        return
    if not cfg.data_root:
        raise UsageError(f"--data-root is required for --dataset {cfg.dataset}")
    if not os.path.isdir(cfg.data_root):
        raise UsageError(f"--data-root {cfg.data_root}: no such directory (the {cfg.dataset} "
                         "dataset root: annotation files and a videos/ folder)")


def build_parser(prog: str = "dgl-rs train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Prompt-tune DGL on a frozen open_clip backbone "
        "(torchrun --nproc-per-node N for data parallel).",
    )
    add_arguments(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Flags -> :class:`TrainConfig` with the recipe applied. Invalid values exit with an
    argparse error (status 2)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    cfg = TrainConfig(**vars(ns))
    try:
        return apply_recipe(cfg)
    except UsageError as exc:
        parser.error(str(exc))
        raise  # unreachable
