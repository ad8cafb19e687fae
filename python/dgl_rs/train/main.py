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
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..backbone.memory import check_memory
from ..factory import checkpoints as ckpt
from ..factory import runs
from ..factory.build import build_method, load_backbone
from ..util.files import atomic_write_text, check_writable, remove_stale_temps
from ..methods import METHODS
from ..services.data import DataBundle, build_data
from ..services.device import resolve_precision
from ..services.evaluate import evaluate_sets, flatten_report, write_results
from .distributed import (DistInfo, all_gather_object, barrier, broadcast_object,
                          cleanup_distributed, init_distributed)
from ..util.log import setup_logging
from .logger import RunLogger
from .optim import make_optimizer
from .params import TrainConfig, UsageError, method_options, parse_args
from .scheduler import WarmupCosine
from .selection import Selector
from .train import EpochBatchSampler, SeededDataset, StopFlag, train_one_epoch

log = logging.getLogger("dgl_rs.train")


# ------------------------------------------------------------------------- helpers
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


def broadcast_trainable(model, info: DistInfo) -> None:
    """Start every rank from rank 0's prompts."""
    if info.distributed:
        for p in model.trainable_parameters():
            torch.distributed.broadcast(p.data, src=0)


# ---------------------------------------------------------------- backbone & model
def build_backbone(cfg: TrainConfig, device: torch.device):
    """``(clip, preprocess_cfg, tokenizer)`` (:func:`dgl_rs.factory.load_backbone`)."""
    return load_backbone(cfg.model, cfg.pretrained, device)


def build_model(cfg: TrainConfig, clip) -> torch.nn.Module:
    """``--method`` with the options the flags set, around ``clip``; a training batch of
    ``--batch-size`` videos beyond the machine's memory is refused here, before any data."""
    try:
        model = build_method(clip, cfg.method, num_frames=cfg.num_frames, context_length=cfg.context_length,
                             checkpoint_blocks=cfg.checkpoint_blocks, **method_options(cfg))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--method {cfg.method}: {exc}") from exc
    check_memory(model.backbone, model.config, cfg.batch_size, "--batch-size")
    return model


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
    if not info.is_master:
        return {}
    with preserve_rng():
        return evaluate_sets(model, bundle.evals, cfg, info.device, precision, bundle=bundle)


def run_validation(model, bundle: DataBundle, cfg: TrainConfig, info: DistInfo,
                   precision: str) -> dict[str, Any]:
    """Evaluate the validation sets only (master rank; others get ``{}``): raw scores,
    no QB-Norm or DSL; what the best epoch is chosen on (:mod:`.selection`)."""
    if not info.is_master:
        return {}
    with preserve_rng():
        return evaluate_sets(model, bundle.vals, cfg, info.device, precision, raw_only=True, prefix="val ")


def log_results(results: dict[str, Any]) -> None:
    for name, res in results.items():
        for kind in ("raw", "qb_norm", "qb_norm_released", "dsl"):
            if kind not in res:
                continue
            for direction, r in res[kind].items():
                log.info("eval %-9s %-7s %s  R@1 %.1f  R@5 %.1f  R@10 %.1f  MdR %.1f  MnR %.1f",
                         name, kind, direction, r["R@1"], r["R@5"], r["R@10"], r["MdR"], r["MnR"])


def export_prompts(model, path: Path, cfg: TrainConfig) -> None:
    """The run's prompts and its ``model.json`` (:func:`dgl_rs.factory.runs.export_prompts`)."""
    runs.export_prompts(model, path, cfg.model, cfg.pretrained)


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


@dataclass
class Session:
    """Everything one training run holds."""
    cfg: TrainConfig
    info: DistInfo
    precision: str
    run_dir: Path
    model: Any
    bundle: DataBundle
    sampler: EpochBatchSampler
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: Any
    run_logger: RunLogger
    selector: Any = None  # Selector: the best epoch on the validation split (--val-split)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / runs.CHECKPOINTS


def _run_dir(cfg: TrainConfig) -> tuple[Path, Optional[Path]]:
    """``(run folder, checkpoint to resume or None)``; a fresh run never reuses a folder
    that holds checkpoints, nor writes into a non-empty folder (:func:`runs.check_run_dir`)."""
    if cfg.name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.name = broadcast_object(f"{stamp}-{cfg.dataset}-{cfg.method}")
    run_dir = check_writable(Path(cfg.output_dir) / cfg.name, "--output-dir/--name")
    ckpt_dir = run_dir / runs.CHECKPOINTS
    resume_path = runs.resolve_resume(cfg.resume, ckpt_dir) if cfg.resume else None
    if resume_path is None and ckpt.list_checkpoints(ckpt_dir):
        raise UsageError(f"run folder {run_dir} already has checkpoints: continue it with "
                         f"--resume latest, or pick another --name")
    continuing = cfg.resume == "latest" or (
        resume_path is not None and run_dir.resolve() in resume_path.resolve().parents)
    problem = broadcast_object(runs.check_run_dir(run_dir, continuing))  # rank 0 may have made it already
    if problem:
        raise UsageError(problem)
    return run_dir, resume_path


def _open_run_dir(run_dir: Path, cfg: TrainConfig, info: DistInfo) -> None:
    if info.is_master:
        run_dir.mkdir(parents=True, exist_ok=True)
        for folder in (run_dir, run_dir / runs.CHECKPOINTS):
            remove_stale_temps(folder)  # left by a run killed mid-write
    barrier()
    setup_logging(run_dir / runs.LOG, is_master=info.is_master)
    if info.is_master:
        params_txt = "".join(f"{k}: {v}\n" for k, v in sorted(cfg.to_dict().items()))
        atomic_write_text(run_dir / runs.PARAMS, params_txt)
        atomic_write_text(run_dir / runs.CONFIG, cfg.to_json() + "\n")


def _setup(cfg: TrainConfig, info: DistInfo, run_dir: Path) -> Session:
    precision = resolve_precision(cfg.precision, info.device)
    # Same seed on every rank for the prompt init; rank-specific streams afterwards.
    seed_everything(cfg.seed)
    # Backbone, model, data and optimizer first: an unknown model, unreachable weights or
    # a malformed annotation file fail before the run folder exists.
    clip, preprocess_cfg, _ = build_backbone(cfg, info.device)
    model = build_model(cfg, clip).to(info.device)
    broadcast_trainable(model, info)
    seed_everything(cfg.seed + info.rank)
    bundle = build_data(cfg, preprocess_cfg)
    # One optimizer step = accum_steps micro-batches per rank: the sampler deals whole steps.
    sampler = EpochBatchSampler(len(bundle.train), cfg.batch_size * cfg.accum_steps, seed=cfg.seed,
                                rank=info.rank, world_size=info.world_size)
    if sampler.steps_per_epoch < 1:
        raise UsageError(f"{len(bundle.train)} training pairs are fewer than one global batch "
                         f"({cfg.batch_size} x {cfg.accum_steps} x {info.world_size}); lower "
                         "--batch-size or --accum-steps")
    optimizer = make_optimizer(model, cfg)
    _open_run_dir(run_dir, cfg, info)
    log.info("run %s on %s (%s), world size %d, precision %s", cfg.name, info.device,
             "distributed" if info.distributed else "single process", info.world_size, precision)
    log.info("method %s, trainable parameters: %s", model.method,
             f"{model.num_trainable():,}")
    return Session(
        cfg=cfg, info=info, precision=precision, run_dir=run_dir, model=model, bundle=bundle,
        sampler=sampler, loader=make_train_loader(bundle, sampler, cfg, info), optimizer=optimizer,
        scheduler=WarmupCosine(optimizer, cfg.lr, sampler.steps_per_epoch * cfg.epochs, cfg.warmup),
        scaler=torch.amp.GradScaler("cuda") if precision == "amp" else None,
        run_logger=RunLogger(run_dir, enabled=info.is_master, tensorboard=not cfg.no_tensorboard),
        selector=Selector(run_dir, enabled=info.is_master and bool(bundle.vals)))


def _save(s: Session, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint "``step_in_epoch`` steps of ``epoch`` done" (all ranks call it)."""
    rng = all_gather_object(ckpt.capture_rng_state())
    if s.info.is_master:
        spe = s.sampler.steps_per_epoch
        gstep = epoch * spe + step_in_epoch
        state = {
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": gstep,
            "steps_per_epoch": spe, "world_size": s.info.world_size,
            "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict() if s.scaler is not None else None,
            "rng": rng, "config": s.cfg.to_dict(), "model_config": s.model.config,
            "method": s.model.method,
        }
        path = ckpt.save_checkpoint(s.ckpt_dir / ckpt.checkpoint_name(gstep),
                                    s.model.prompt_state_dict(), state)
        ckpt.prune_checkpoints(s.ckpt_dir, s.cfg.keep_checkpoints)
        log.info("saved checkpoint %s", path)
    barrier()


def _stop(s: Session, signum: int, message: str, *args) -> int:
    log.info(message, *args)
    s.run_logger.plot()
    s.run_logger.close()
    return 128 + int(signum)


def _evaluate_epoch(s: Session, epoch: int, global_step: int, stop: StopFlag) -> dict[str, Any]:
    """Evaluate after ``epoch`` when due (every ``--eval-every`` epochs and after the last)."""
    last = epoch + 1 == s.cfg.epochs
    due = s.cfg.eval_every and (epoch + 1) % s.cfg.eval_every == 0
    if not s.bundle.evals or not (last or due) or stop.requested:
        return {}
    results = run_evaluation(s.model, s.bundle, s.cfg, s.info, s.precision)
    log_results(results)
    s.run_logger.log(global_step, flatten_report(results, "eval/"), epoch=epoch + 1)
    return results


def _select_epoch(s: Session, epochs_done: int, global_step: int) -> None:
    """With --val-split: validate after ``epochs_done`` epochs and keep the prompts in
    best/ when they are the best so far (never reads the test split)."""
    if not s.bundle.vals:
        return
    val = run_validation(s.model, s.bundle, s.cfg, s.info, s.precision)
    if s.info.is_master:
        s.run_logger.log(global_step, flatten_report(val, "val/"), epoch=epochs_done)
        s.selector.record(epochs_done, global_step, val, lambda path: export_prompts(s.model, path, s.cfg))


def _train_epochs(s: Session, start: tuple[int, int, int], on_step) -> tuple[Optional[int], dict]:
    """Epochs from ``start`` = (epoch, step in epoch, global step); returns ``(exit status
    if stopped by a signal else None, last evaluation results)``."""
    start_epoch, start_step, global_step = start
    results: dict[str, Any] = {}
    with StopFlag() as stop:
        for epoch in range(start_epoch, s.cfg.epochs):
            s.sampler.epoch = epoch
            s.sampler.start_step = start_step if epoch == start_epoch else 0
            res = train_one_epoch(s.model, s.loader, s.sampler, s.optimizer, s.scheduler, s.scaler,
                                  epoch=epoch, global_step=global_step, cfg=s.cfg, info=s.info,
                                  precision=s.precision, stop=stop, run_logger=s.run_logger,
                                  on_step=on_step, save_step=lambda e, k: _save(s, e, k))
            global_step = res.global_step
            if res.interrupted:
                _save(s, epoch, res.steps_done)
                return _stop(s, stop.signum, "interrupted at epoch %d step %d: resume with --name %s "
                             "--resume latest", epoch + 1, res.steps_done, s.cfg.name), results
            _save(s, epoch + 1, 0)
            log.info("epoch %d done: mean loss %.4f, %.1f samples/s", epoch + 1, res.mean_loss,
                     res.samples_per_s)
            results = _evaluate_epoch(s, epoch, global_step, stop) or results
            if not stop.requested:  # else validated when resumed
                _select_epoch(s, epoch + 1, global_step)
            s.run_logger.plot()
            barrier()
            if stop.requested:
                s.run_logger.close()
                log.info("stopped after epoch %d: resume with --name %s --resume latest", epoch + 1, s.cfg.name)
                return 128 + int(stop.signum), results
    return None, results


def _finish(s: Session, results: dict[str, Any]) -> int:
    if not results and s.bundle.evals:
        # e.g. resumed after a stop that came during the last epoch's evaluation
        results = run_evaluation(s.model, s.bundle, s.cfg, s.info, s.precision)
        log_results(results)
    if s.info.is_master:
        export_prompts(s.model, s.run_dir / runs.PROMPTS, s.cfg)
        selection = s.selector.report(s.model, results, s.sampler.steps_per_epoch * s.cfg.epochs,
                                      lambda: run_evaluation(s.model, s.bundle, s.cfg, s.info, s.precision))
        if results:
            write_results(s.run_dir / runs.RESULTS, {
                "config": s.cfg.to_dict(), "method": s.model.method,
                "trainable": s.model.num_trainable(), "world_size": s.info.world_size,
                "global_batch": s.cfg.batch_size * s.cfg.accum_steps * s.info.world_size,
                "results": results, **selection})
        log.info("done: %s", s.run_dir)
    s.run_logger.close()
    barrier()
    return 0


def _run(cfg: TrainConfig, info: DistInfo, on_step) -> int:
    run_dir, resume_path = _run_dir(cfg)
    s = _setup(cfg, info, run_dir)
    start = (0, 0, 0)
    if resume_path is not None:
        start = _restore(resume_path, s.model, s.optimizer, s.scheduler, s.scaler, cfg, info,
                         s.sampler.steps_per_epoch)
        s.run_logger.truncate_after(start[2])
        s.selector.resume(start[2])
        if start[1] == 0 and start[0] > 0 and not s.selector.validated(start[2]):
            _select_epoch(s, start[0], start[2])  # stopped before validating that epoch
    log.info("%d training pairs, %d steps per epoch (global batch %d = %d x %d accumulated x %d ranks), "
             "%d epochs", len(s.bundle.train), s.sampler.steps_per_epoch,
             cfg.batch_size * cfg.accum_steps * info.world_size, cfg.batch_size, cfg.accum_steps,
             info.world_size, cfg.epochs)
    status, results = _train_epochs(s, start, on_step)
    return status if status is not None else _finish(s, results)


def _restore(path: Path, model, optimizer, scheduler, scaler, cfg: TrainConfig,
             info: DistInfo, steps_per_epoch: int) -> tuple[int, int, int]:
    prompts, state = ckpt.load_checkpoint(path)
    try:
        saved = METHODS[state.get("method") or model.method].cls.upgrade_config(state["model_config"], path)
    except (KeyError, ValueError):
        saved = state["model_config"]
    if saved != model.config:
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
