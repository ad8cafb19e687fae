"""``dgl-rs train``: prompt-tune DGL on a frozen open_clip backbone.

``main(argv)`` parses flags (:mod:`.params`), joins torch.distributed when launched by
torchrun, builds backbone + DGL + data, then runs epochs (:mod:`.train`) with
checkpoints (:mod:`.checkpoint`), evaluation (:mod:`dgl_rs.evaluate`) and logging
(:mod:`.logger`) from the master rank. Returns a process exit status: 0 when training
finished, 128 + signal number when it stopped on SIGTERM/SIGINT after saving a
checkpoint (continue with ``--resume latest``).

Run folder ``OUTPUT_DIR/NAME/``: ``params.txt`` and ``config.json`` (every flag),
``out.log``, ``metrics.jsonl``, ``tensorboard/``, ``loss.png``, ``recall.png``,
``checkpoints/step_*.safetensors``, ``prompts.safetensors`` + ``model.json`` (the tuned
prompts and what they sit on), ``results.json`` (last evaluation).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .distributed import (DistInfo, all_gather_object, barrier, broadcast_object,
                          cleanup_distributed, init_distributed)
from .logger import RunLogger, setup_logging
from .params import TrainConfig, UsageError, parse_args
from .scheduler import WarmupCosine
from .train import EpochBatchSampler, SeededDataset, StopFlag, train_one_epoch

log = logging.getLogger("dgl_rs.train")


# ------------------------------------------------------------------------- helpers
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> amp_bf16 on CUDA with bf16 support (amp otherwise), fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "amp_bf16" if torch.cuda.is_bf16_supported() else "amp"
    if precision != "fp32" and device.type != "cuda":
        raise UsageError(f"--precision {precision} needs a CUDA device (CPU runs in fp32)")
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserve_rng():
    """Run a block (evaluation) without disturbing the global RNG streams."""
    state = ckpt.capture_rng_state()
    try:
        yield
    finally:
        ckpt.restore_rng_state(state)


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on >= 2-D tensors, none on biases and 1-D params."""
    decay, no_decay = [], []
    for name, p in model.named_trainable_parameters():
        (no_decay if p.ndim < 2 or name.endswith("bias") else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.wd)
    if not groups:
        raise UsageError("the model has no trainable parameters (choose a --generator)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def broadcast_trainable(model, info: DistInfo) -> None:
    """Start every rank from rank 0's prompts."""
    if info.distributed:
        for p in model.trainable_parameters():
            torch.distributed.broadcast(p.data, src=0)


# ---------------------------------------------------------------- backbone & model
def build_backbone(cfg: TrainConfig, device: torch.device):
    """``(clip, preprocess_cfg, tokenizer)`` via :func:`dgl_rs.backbones.load_clip`,
    with unknown models and unreachable weights turned into :class:`UsageError`."""
    from dgl_rs.backbones import load_clip

    return load_backbone(load_clip, cfg.model, cfg.pretrained, device)


def load_backbone(load_clip, model_name: str, pretrained: str, device):
    """``load_clip`` with errors as :class:`UsageError`. The backbone's initialisation
    runs under a fixed seed, isolated from the global RNG: with ``--pretrained none``
    (random weights) training, evaluation and search all see the same backbone."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return load_clip(model_name, pretrained, device=device, precision="fp32")
    except UsageError:
        raise
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise UsageError(f"cannot load backbone --model {model_name} --pretrained "
                         f"{pretrained}: {exc}") from exc


def build_model(cfg: TrainConfig, clip) -> torch.nn.Module:
    import dgl_rs

    return dgl_rs.DGL(clip, num_frames=cfg.num_frames, generator=cfg.generator,
                      num_global=cfg.num_global, num_frame_prompts=cfg.num_frame_prompts,
                      num_text_prompts=tuple(cfg.num_text_prompts), postfix=cfg.postfix,
                      context_length=cfg.context_length, pool="global")


# ----------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    """What the trainer needs from :mod:`dgl_rs.data`."""
    train: Any  # map-style dataset of one (frames, caption tokens) pair per item
    collate_fn: Any = None  # collate for train batches (drops broken samples)
    evals: dict = field(default_factory=dict)  # name -> EvalSet
    query_bank: Optional[list] = None  # training captions (QB-Norm bank)


# Train / test split names of each reader (spec section 7: MSR-VTT 9k / 1k-A, VATEX,
# LSMDC, ActivityNet val_1 as test).
SPLITS = {"msrvtt": ("train", "test"), "vatex": ("train", "test"), "lsmdc": ("train", "test"),
          "activitynet": ("train", "val_1")}


def _folder_annotations(root: Path, given: Optional[str], stem: str) -> Path:
    if given:
        path = Path(given)
        if not path.is_file() and (root / path).is_file():
            path = root / path
        if not path.is_file():
            raise UsageError(f"annotation file {given} not found")
        return path
    for ext in (".csv", ".jsonl"):
        if (root / f"{stem}{ext}").is_file():
            return root / f"{stem}{ext}"
    raise UsageError(f"--dataset folder: no {stem}.csv or {stem}.jsonl in {root}; pass "
                     f"--{'train' if stem == 'train' else 'eval'}-annotations "
                     "(a CSV with columns video,caption or a JSONL of {video, caption})")


def read_records(cfg: TrainConfig, train: bool):
    """The dataset's VideoRecords for training (``train``) or evaluation."""
    from dgl_rs.data import datasets as D

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
    limit = cfg.train_limit if train else cfg.eval_limit
    return records[:limit] if limit else records


def data_transform(cfg: TrainConfig, preprocess_cfg):
    """``(VideoTransform, tokenize)`` for the backbone's input size and mean/std."""
    from dgl_rs.data.video import VideoTransform
    from dgl_rs.evaluate import tokenize

    pre = dict(preprocess_cfg or {})
    context_length = cfg.context_length

    def tok(texts):
        return tokenize(texts, context_length)

    return VideoTransform.from_preprocess_cfg(pre), tok


def build_data(cfg: TrainConfig, preprocess_cfg, tokenizer, info: DistInfo,
               train: bool = True) -> DataBundle:
    """Training pairs (``train``), evaluation set(s) and (with --qb-norm) the query bank
    (the training captions)."""
    from dgl_rs.data import datasets as D

    transform, tok = data_transform(cfg, preprocess_cfg)
    train_err = cfg.on_broken or "skip"
    eval_err = cfg.on_broken or "raise"
    if cfg.dataset == "synthetic":
        return build_synthetic_data(cfg, transform, tok, train_err, eval_err)
    evals = {"test": D.EvalSet(read_records(cfg, False), cfg.num_frames, transform,
                               tokenizer=tok, on_error=eval_err)}
    if not train:
        bank = None
        if cfg.qb_norm:
            bank = [c for r in read_records(cfg, True) for c in r.captions]
        return DataBundle(train=None, evals=evals, query_bank=bank)
    pairs = D.TrainPairs(read_records(cfg, True), cfg.num_frames, transform, tok,
                         on_error=train_err)
    return DataBundle(train=pairs, collate_fn=D.collate_skip, evals=evals,
                      query_bank=pairs.captions if cfg.qb_norm else None)


SYNTHETIC_EVAL_SEED_OFFSET = 1000  # test videos come from another seed than training


def build_synthetic_data(cfg: TrainConfig, transform, tok, train_err: str,
                         eval_err: str) -> DataBundle:
    """The synthetic benchmark: train on the chosen split(s) ("both" = the ``mixed``
    split, half static, half temporal), evaluate on each split separately, on videos
    drawn from another seed. (Rendering never fails, so ``on_broken`` is moot.)"""
    from dgl_rs.data import collate_skip
    from dgl_rs.data.synthetic import SyntheticVideoDataset

    splits = ["static", "temporal"] if cfg.synthetic_split == "both" else [cfg.synthetic_split]
    kw = dict(num_frames=cfg.num_frames, image_size=transform.image_size,
              mean=transform.mean, std=transform.std, tokenizer=tok)
    train_split = "mixed" if len(splits) == 2 else splits[0]
    train = SyntheticVideoDataset(train_split, cfg.synthetic_videos * len(splits),
                                  seed=cfg.synthetic_seed, train=True, **kw)
    evals = {split: SyntheticVideoDataset(split, cfg.synthetic_eval_videos,
                                          seed=cfg.synthetic_seed + SYNTHETIC_EVAL_SEED_OFFSET,
                                          train=False, **kw)
             for split in splits}
    return DataBundle(train=train, collate_fn=collate_skip, evals=evals,
                      query_bank=train.captions if cfg.qb_norm else None)


def make_train_loader(bundle: DataBundle, sampler: EpochBatchSampler, cfg: TrainConfig,
                      info: DistInfo) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        SeededDataset(bundle.train), batch_sampler=sampler, num_workers=cfg.workers,
        collate_fn=bundle.collate_fn, pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        # Own generator: iterating the loader must not draw from the global torch RNG
        # (a resumed run starts iterating mid-epoch). Worker seeds do not matter:
        # SeededDataset re-seeds every sample.
        generator=torch.Generator().manual_seed(cfg.seed + info.rank))


# ----------------------------------------------------------------------- evaluation
def run_evaluation(model, bundle: DataBundle, cfg: TrainConfig, info: DistInfo,
                   precision: str) -> dict[str, Any]:
    """Evaluate on every eval set (master rank only; others get ``{}``)."""
    from dgl_rs import evaluate as ev

    if not info.is_master:
        return {}
    results = {}
    with preserve_rng():
        for name, eval_set in bundle.evals.items():
            results[name] = ev.evaluate(
                model, eval_set, device=info.device, batch_size=cfg.eval_batch_size,
                workers=cfg.workers, precision=precision, context_length=cfg.context_length,
                query_bank=bundle.query_bank if cfg.qb_norm else None, dsl=cfg.dsl,
                progress=not cfg.no_progress, name=name)
    return results


def log_results(results: dict[str, Any]) -> None:
    for name, res in results.items():
        for kind in ("raw", "qb_norm", "dsl"):
            if kind not in res:
                continue
            for direction, r in res[kind].items():
                log.info("eval %-9s %-7s %s  R@1 %.1f  R@5 %.1f  R@10 %.1f  MdR %.1f  MnR %.1f",
                         name, kind, direction, r["R@1"], r["R@5"], r["R@10"], r["MdR"], r["MnR"])


# ------------------------------------------------------------------- prompts export
def export_prompts(model, path: Path, cfg: TrainConfig) -> None:
    """``prompts.safetensors`` (``model.save_prompts``) plus ``model.json`` beside it:
    the backbone (model name, weights) and DGL config needed to rebuild the model."""
    ckpt.atomic_write(path, lambda tmp: model.save_prompts(str(tmp)))
    pretrained = cfg.pretrained
    if pretrained and os.path.isfile(pretrained):
        pretrained = os.path.abspath(pretrained)
    meta = {"model": cfg.model, "pretrained": pretrained, "dgl": model.config,
            "prompts": path.name}
    ckpt.atomic_write_text(path.with_name("model.json"), json.dumps(meta, indent=2) + "\n")


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``dgl-rs train`` (flags: ``dgl-rs train --help``)."""
    return run(parse_args(argv))


def run(cfg: TrainConfig, on_step=None) -> int:
    info = init_distributed(cfg.device, cfg.dist_backend)
    try:
        return _run(cfg, info, on_step)
    finally:
        cleanup_distributed(info)


def _run(cfg: TrainConfig, info: DistInfo, on_step) -> int:
    precision = resolve_precision(cfg.precision, info.device)
    if cfg.name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.name = broadcast_object(f"{stamp}-{cfg.dataset}-{cfg.generator}")
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_dir = run_dir / "checkpoints"
    resume_path = ckpt.resolve_resume(cfg.resume, ckpt_dir) if cfg.resume else None
    if resume_path is None and ckpt.list_checkpoints(ckpt_dir):
        raise UsageError(f"run folder {run_dir} already has checkpoints: continue it with "
                         f"--resume latest, or pick another --name")
    # Same seed on every rank for the prompt init; rank-specific streams afterwards.
    seed_everything(cfg.seed)
    # The backbone first: an unknown model or unreachable weights fail before the run
    # folder exists.
    clip, preprocess_cfg, tokenizer = build_backbone(cfg, info.device)
    if info.is_master:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    setup_logging(run_dir / "out.log", is_master=info.is_master)
    if info.is_master:
        params_txt = "".join(f"{k}: {v}\n" for k, v in sorted(cfg.to_dict().items()))
        ckpt.atomic_write_text(run_dir / "params.txt", params_txt)
        ckpt.atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
    log.info("run %s on %s (%s), world size %d, precision %s", cfg.name, info.device,
             "distributed" if info.distributed else "single process", info.world_size, precision)
    model = build_model(cfg, clip).to(info.device)
    broadcast_trainable(model, info)
    seed_everything(cfg.seed + info.rank)
    log.info("trainable parameters: %s", f"{model.num_trainable():,}")

    bundle = build_data(cfg, preprocess_cfg, tokenizer, info)
    sampler = EpochBatchSampler(len(bundle.train), cfg.batch_size, seed=cfg.seed,
                                rank=info.rank, world_size=info.world_size)
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch < 1:
        raise UsageError(f"{len(bundle.train)} training pairs are fewer than one global batch "
                         f"({cfg.batch_size} x {info.world_size}); lower --batch-size")
    total_steps = steps_per_epoch * cfg.epochs
    loader = make_train_loader(bundle, sampler, cfg, info)
    optimizer = make_optimizer(model, cfg)
    scheduler = WarmupCosine(optimizer, cfg.lr, total_steps, cfg.warmup)
    scaler = torch.amp.GradScaler("cuda") if precision == "amp" else None
    run_logger = RunLogger(run_dir, enabled=info.is_master, tensorboard=not cfg.no_tensorboard)

    start_epoch, start_step, global_step = 0, 0, 0
    if resume_path is not None:
        start_epoch, start_step, global_step = _restore(resume_path, model, optimizer,
                                                        scheduler, scaler, cfg, info,
                                                        steps_per_epoch)
        run_logger.truncate_after(global_step)

    def save(epoch: int, step_in_epoch: int) -> None:
        """Checkpoint "``step_in_epoch`` steps of ``epoch`` done" (all ranks call it)."""
        rng = all_gather_object(ckpt.capture_rng_state())
        if info.is_master:
            gstep = epoch * steps_per_epoch + step_in_epoch
            state = {
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": gstep,
                "steps_per_epoch": steps_per_epoch, "world_size": info.world_size,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng, "config": cfg.to_dict(), "model_config": model.config,
            }
            path = ckpt.save_checkpoint(ckpt_dir / ckpt.checkpoint_name(gstep),
                                        model.prompt_state_dict(), state)
            ckpt.prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
            log.info("saved checkpoint %s", path)
        barrier()

    log.info("%d training pairs, %d steps per epoch (global batch %d), %d epochs", len(bundle.train),
             steps_per_epoch, cfg.batch_size * info.world_size, cfg.epochs)
    results: dict[str, Any] = {}
    with StopFlag() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.epoch = epoch
            sampler.start_step = start_step if epoch == start_epoch else 0
            res = train_one_epoch(model, loader, sampler, optimizer, scheduler, scaler,
                                  epoch=epoch, global_step=global_step, cfg=cfg, info=info,
                                  precision=precision, stop=stop, run_logger=run_logger,
                                  on_step=on_step, save_step=save)
            global_step = res.global_step
            if res.interrupted:
                save(epoch, res.steps_done)
                log.info("interrupted at epoch %d step %d: resume with --name %s --resume latest",
                         epoch + 1, res.steps_done, cfg.name)
                run_logger.plot()
                run_logger.close()
                return 128 + int(stop.signum)
            save(epoch + 1, 0)
            log.info("epoch %d done: mean loss %.4f, %.1f samples/s", epoch + 1, res.mean_loss,
                     res.samples_per_s)
            last = epoch + 1 == cfg.epochs
            due = cfg.eval_every and (epoch + 1) % cfg.eval_every == 0
            if bundle.evals and (last or due) and not stop.requested:
                from dgl_rs.evaluate import flatten_report

                results = run_evaluation(model, bundle, cfg, info, precision)
                log_results(results)
                run_logger.log(global_step, flatten_report(results, "eval/"), epoch=epoch + 1)
            run_logger.plot()
            barrier()
            if stop.requested:
                log.info("stopped after epoch %d: resume with --name %s --resume latest",
                         epoch + 1, cfg.name)
                run_logger.close()
                return 128 + int(stop.signum)
    if not results and bundle.evals:
        # e.g. resumed after a stop that came during the last epoch's evaluation
        results = run_evaluation(model, bundle, cfg, info, precision)
        log_results(results)
    if info.is_master:
        export_prompts(model, run_dir / "prompts.safetensors", cfg)
        if results:
            from dgl_rs.evaluate import write_results

            write_results(run_dir / "results.json", {
                "config": cfg.to_dict(), "trainable": model.num_trainable(),
                "world_size": info.world_size, "global_batch": cfg.batch_size * info.world_size,
                "results": results})
        log.info("done: %s", run_dir)
    run_logger.close()
    barrier()
    return 0


def _restore(path: Path, model, optimizer, scheduler, scaler, cfg: TrainConfig,
             info: DistInfo, steps_per_epoch: int) -> tuple[int, int, int]:
    prompts, state = ckpt.load_checkpoint(path)
    if state["model_config"] != model.config:
        raise UsageError(f"--resume {path}: the checkpoint's model config "
                         f"{state['model_config']} differs from this run's {model.config}")
    if state["steps_per_epoch"] != steps_per_epoch:
        raise UsageError(f"--resume {path}: {state['steps_per_epoch']} steps per epoch in the "
                         f"checkpoint, {steps_per_epoch} now (same data and global batch needed)")
    model.load_prompt_state_dict({k: v.to(info.device) for k, v in prompts.items()})
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    if state["world_size"] == info.world_size:
        ckpt.restore_rng_state(rng[info.rank])
    else:
        log.warning("resuming with %d ranks from a %d-rank checkpoint: RNG streams re-seeded",
                    info.world_size, state["world_size"])
        seed_everything(cfg.seed + info.rank + state["global_step"])
    epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
    log.info("resumed from %s (epoch %d, step %d of %d)", path, epoch + 1, step, steps_per_epoch)
    return epoch, step, int(state["global_step"])
