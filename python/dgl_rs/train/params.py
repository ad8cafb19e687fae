"""Training configuration: one dataclass, kebab-case flags, per-dataset recipe defaults.

Every field of :class:`TrainConfig` is a flag (``num_frames`` -> ``--num-frames``) and a
key of the JSON written to ``params.txt``/``config.json``. Fields whose default is
``None`` in the dataclass come from the dataset's recipe (:data:`RECIPES`, spec section
6) unless given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..util.errors import UsageError
from ..factory.build import DEFAULT_MODEL, DEFAULT_PRETRAINED
from ..methods import METHODS, Option, settable_options
from ..services.config import (BOUNDS as DATA_BOUNDS, RECIPES, EvalConfig, add_arguments, check_bounds,
                               check_data_root, flag_field)


#: --generator picks the default --method dgl-GENERATOR among these.
DEFAULT_METHOD_GENERATORS = ("transformer", "linear")
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


@dataclass
class _TrainFields(EvalConfig):
    method: Optional[str] = flag_field("what to train: a method of the paper's Tables 1 and 3 (`dgl-rs "
                               "methods` lists them; default: dgl-GENERATOR)", choices=sorted(METHODS))
    # optimisation (spec section 6)
    epochs: Optional[int] = flag_field("training epochs (default: recipe)", type=int)
    batch_size: Optional[int] = flag_field("videos per rank per micro-batch; the contrastive batch of one "
                                   "optimizer step is batch-size x accum-steps x world-size "
                                   "(default: recipe)", type=int)
    accum_steps: int = flag_field("micro-batches per optimizer step (gradient accumulation). The loss is that "
                          "of the whole batch, as if it had been one (gradient caching: every "
                          "micro-batch is embedded once without a graph, then again with one), so "
                          "the gradient equals the larger batch's; memory: one micro-batch", 1, type=int)
    lr: Optional[float] = flag_field("peak learning rate (default: recipe)", type=float)
    wd: float = flag_field("AdamW weight decay (not applied to biases and 1-D params)", 0.2, type=float)
    beta1: float = flag_field("AdamW beta1", 0.9, type=float)
    beta2: float = flag_field("AdamW beta2", 0.98, type=float)
    eps: float = flag_field("AdamW epsilon", 1e-6, type=float)
    warmup: float = flag_field("linear warm-up: a fraction of all steps if < 1, else a step count",
                       0.1, type=float)
    grad_clip: float = flag_field("clip the global gradient norm to this (0 = off)", 1.0, type=float)
    checkpoint_blocks: bool = flag_field(
        "activation checkpointing: recompute each backbone block in the backward instead of keeping its "
        "activations (one more forward of the blocks, most of a step's memory saved; gradients unchanged)",
        False, action="store_true")
    seed: int = flag_field("random seed (prompt init, shuffle order, frame sampling)", 0, type=int)
    # evaluation
    eval_every: int = flag_field("evaluate every N epochs (and after the last; 0 = only after the last)",
                         1, type=int)
    # run
    dist_backend: Optional[str] = flag_field("torch.distributed backend (default nccl on CUDA, gloo on CPU)")
    output_dir: str = flag_field("folder holding one sub-folder per run", "runs")
    name: Optional[str] = flag_field("run name (default DATE-DATASET-GENERATOR); required with "
                             "--resume latest")
    resume: Optional[str] = flag_field("continue from a checkpoint: a file, a run folder, or 'latest' "
                               "(newest checkpoint of --name; a fresh start if there is none)")
    save_every: int = flag_field("also checkpoint every N steps (0 = at the end of each epoch only)",
                         0, type=int)
    keep_checkpoints: int = flag_field("keep the newest N checkpoints (0 = all)", 2, type=int)
    log_every: int = flag_field("log train loss / lr / throughput every N steps", 10, type=int)
    no_tensorboard: bool = flag_field("do not write TensorBoard events", False, action="store_true")



def _option_field(opt: Option, users: list):
    return field(default=None, metadata={"option": opt, "users": () if len(users) == len(METHODS) else users})


#: The configuration of ``dgl-rs train``: the fields above plus one per method option
#: (:data:`METHOD_OPTIONS`, None: the method's default), each a flag and a key of config.json.
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(k, Any, _option_field(o, OPTION_USERS[k])) for k, o in METHOD_OPTIONS.items()], bases=(_TrainFields,),
    namespace={"__module__": __name__})


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
        if getattr(cfg, key) is None:
            continue
        try:
            value = opt.from_flag(getattr(cfg, key))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if key == "generator" and METHODS[cfg.method].pinned.get(key, ...) == value:
            continue  # what resolve_method recorded
        if key not in settable:
            raise UsageError(f"{opt.flag} is not an option of --method {cfg.method} (its options: "
                             f"{', '.join(settable[k].flag for k in settable)})")
        out[key] = value
    return out


#: The range of every number flag (see :data:`dgl_rs.services.config.BOUNDS`).
BOUNDS = (
    *DATA_BOUNDS,
    *((key, 1, True, None) for key in ("epochs", "batch_size", "log_every", "accum_steps")),
    *((key, 0, True, None) for key in ("save_every", "keep_checkpoints", "eval_every", "grad_clip", "wd",
                                       "warmup")),
    *((key, o.low if o.kind != "pair" else 0, o.kind != "float", None) for key, o in METHOD_OPTIONS.items()
      if o.kind in ("int", "float", "pair")),
    ("lr", 0, False, None), ("eps", 0, False, None),
    ("beta1", 0, True, 1), ("beta2", 0, True, 1),
)


def validate(cfg: TrainConfig) -> None:
    check_bounds(cfg, bounds=BOUNDS)
    check_batch(cfg)
    check_data_root(cfg)
    check_val_split(cfg)
    if cfg.resume == "latest" and not cfg.name:
        raise UsageError("--resume latest needs --name (the run to continue)")


def check_batch(cfg: TrainConfig) -> None:
    """A contrastive step needs at least 2 pairs: the loss of one pair is exactly 0."""
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    pairs = cfg.batch_size * cfg.accum_steps * ranks
    if pairs < 2:
        raise UsageError(f"--batch-size {cfg.batch_size}: a contrastive step needs at least 2 pairs (batch-size x "
                         f"accum-steps x ranks = {pairs}); the loss of one pair is 0 and trains nothing")


def check_val_split(cfg: TrainConfig) -> None:
    """--val-split holdout needs --val-videos and a real dataset; --val-annotations
    belongs to --dataset folder --val-split val."""
    if cfg.val_split == "holdout" and cfg.dataset == "synthetic":
        raise UsageError("--dataset synthetic draws its validation videos: use --val-split val")
    if cfg.val_split == "holdout" and cfg.val_videos < 1:
        raise UsageError("--val-split holdout needs --val-videos N (the training videos to hold out)")
    if cfg.val_annotations and not (cfg.dataset == "folder" and cfg.val_split == "val"):
        raise UsageError("--val-annotations is for --dataset folder --val-split val")


def build_parser(prog: str = "dgl-rs train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Prompt-tune DGL on a frozen open_clip backbone "
        "(torchrun --nproc-per-node N for data parallel).",
    )
    add_arguments(parser, TrainConfig)
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
