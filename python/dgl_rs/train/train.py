"""The epoch loop: deterministic sharded batches, one contrastive step, interrupt checks.

Determinism (what makes interrupt-and-resume exact on CPU):

* :class:`EpochBatchSampler` draws the shuffle order from ``(seed, epoch)`` only, and a
  resumed epoch starts at the step where the interrupted one stopped;
* :class:`SeededDataset` re-seeds python/numpy/torch from ``(seed, epoch, index)`` before
  loading each sample, so the random frame of each segment does not depend on which
  worker process loads it or on what ran before.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..util.errors import UsageError
from ..services.device import autocast_for
from ..nn.losses import symmetric_infonce
from ..util.progress import progress_bar
from .distributed import DistInfo, all_reduce_grads, gather_with_grad

log = logging.getLogger("dgl_rs.train")


# ----------------------------------------------------------------------- sampling
def _mix(*keys: int) -> int:
    """A 63-bit seed that depends only on the non-negative ints ``keys``."""
    state = np.random.SeedSequence(list(keys)).generate_state(2)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of sample ``index`` in ``epoch`` (its random frames, augmentation)."""
    return _mix(seed & 0xFFFFFFFF, epoch, 1, index)


def order_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffle order of ``epoch``."""
    return _mix(seed & 0xFFFFFFFF, epoch, 0)


class EpochBatchSampler:
    """Batches of ``(index, sample_seed)`` for one rank.

    The epoch's order is a permutation drawn from ``(seed, epoch)``. Global step s uses
    positions ``[s*G, (s+1)*G)`` of it with G = batch_size * world_size, and rank r gets
    the r-th block of ``batch_size`` of those, so the rank-ordered concatenation of the
    local batches equals the batch a single process with batch size G sees. The last
    partial global batch is dropped (every rank must contribute the same count).
    Set :attr:`epoch` and :attr:`start_step` before iterating.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)
        gen = torch.Generator().manual_seed(order_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=gen).numpy()

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch)
        g = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            lo = step * g + self.rank * self.batch_size
            yield [(int(i), sample_seed(self.seed, self.epoch, int(i)))
                   for i in order[lo:lo + self.batch_size]]


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a map-style dataset; ``ds[(index, seed)]`` seeds python, numpy and torch
    with ``seed`` and returns ``base[index]``. In the main process (``workers=0``) the
    global RNG states are restored afterwards, so loading leaves training RNG alone."""

    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.base[key]
        index, seed = key
        in_main = torch.utils.data.get_worker_info() is None
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if in_main else None
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        try:
            return self.base[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


# --------------------------------------------------------------------- interrupts
class StopFlag:
    """Turns SIGTERM / SIGINT into a request to stop after the current step.

    The first signal is recorded (:attr:`signum`); the handlers are then restored, so
    a second Ctrl-C kills the process the usual way. Use as a context manager; only the
    main thread can install handlers (elsewhere this is a no-op)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: stopping after this step and saving a checkpoint",
                        signal.Signals(signum).name)
        self._restore()

    def _restore(self) -> None:
        for sig, prev in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev)
        self._previous.clear()

    def __enter__(self) -> "StopFlag":
        with contextlib.suppress(ValueError):  # not the main thread
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def requested(self) -> bool:
        return self.signum is not None


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (keeps ranks in lock-step)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


# ------------------------------------------------------------------------ the step
def embed_pair(model, frames: torch.Tensor, tokens: torch.Tensor, precision: str,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ``(video, text)`` embeddings of a (local) batch, in float32 (float64
    for a float64 model: the loss is computed at least in float32, never below)."""
    with autocast_for(precision, device):
        if hasattr(model, "generate_prompts"):
            prompts = model.generate_prompts()  # once per forward, shared by both towers
            video = model.encode_video(frames, prompts)
            text = model.encode_text(tokens, prompts)
        else:
            video = model.encode_video(frames)
            text = model.encode_text(tokens)
    wide = (lambda x: x if x.dtype == torch.float64 else x.float())  # noqa: E731
    return F.normalize(wide(video), dim=-1), F.normalize(wide(text), dim=-1)


def loss_from_embeddings(model, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the GLOBAL batch: the local normalised embeddings are
    gathered from all ranks (gradient through the local shard only), compared all-to-all."""
    video, text = gather_with_grad(video), gather_with_grad(text)
    logits = model.logit_scale.exp().to(text.dtype) * text @ video.t()
    return symmetric_infonce(logits)


def contrastive_loss(model, frames: torch.Tensor, tokens: torch.Tensor, precision: str,
                     device: torch.device) -> torch.Tensor:
    """The loss of one batch embedded in one pass (:func:`loss_from_embeddings`)."""
    return loss_from_embeddings(model, *embed_pair(model, frames, tokens, precision, device))


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def accumulate_gradients(model, frames: torch.Tensor, tokens: torch.Tensor, micro_batch: int,
                         precision: str, device: torch.device, scaler=None,
                         where: str = "") -> float:
    """Backpropagate the contrastive loss of the whole (local) batch ``frames, tokens``
    while holding the graph of only ``micro_batch`` videos at a time; returns the loss.

    With a contrastive loss, summing the losses of micro-batches is NOT the loss of the
    large batch (each would only contrast its own few pairs). This is gradient caching
    (GradCache, as open_clip's ``--accum-freq``): (1) embed every micro-batch without a
    graph; (2) the loss of the whole batch from those embeddings (gathered across ranks,
    once per step), backpropagated to the embeddings only; (3) embed each micro-batch
    again, with its graph, and backpropagate its slice of those embedding gradients. The
    parameter gradients are those of the one large batch (to float round-off); each
    micro-batch replays the RNG state of its first pass, so even a stochastic forward
    gives the same embeddings twice. Cost: one more forward per micro-batch. Inputs may
    live on the host: each micro-batch is moved to ``device`` when it is used.
    """
    chunks = list(zip(frames.split(micro_batch), tokens.split(micro_batch)))
    states, videos, texts = [], [], []
    with torch.no_grad():
        for f, t in chunks:
            states.append(_rng_state(device))
            v, x = embed_pair(model, f.to(device, non_blocking=True), t.to(device, non_blocking=True),
                              precision, device)
            videos.append(v)
            texts.append(x)
    video = torch.cat(videos).requires_grad_()
    text = torch.cat(texts).requires_grad_()
    loss = loss_from_embeddings(model, video, text)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at {where}")
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grads = zip(video.grad.split(micro_batch), text.grad.split(micro_batch))
    for (f, t), state, (gv, gt) in zip(chunks, states, grads):
        _set_rng_state(state, device)
        v, x = embed_pair(model, f.to(device, non_blocking=True), t.to(device, non_blocking=True),
                          precision, device)
        torch.autograd.backward([v, x], [gv, gt])
    return loss.item()


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames, token ids) from a collated batch: a dict with ``frames`` and ``tokens``
    (or ``text``), or a tuple whose first two items are those."""
    if isinstance(batch, dict):
        tokens = batch.get("tokens", batch.get("text"))
        return batch["frames"], tokens
    return batch[0], batch[1]


@dataclass
class EpochResult:
    steps_done: int  # steps of this epoch completed (incl. those before a resume)
    global_step: int
    interrupted: bool
    mean_loss: float
    samples_per_s: float
    skipped: int = 0
    losses: list = field(default_factory=list)
    skipped_steps: int = 0  # steps left with fewer than 2 pairs


def _optimizer_step(model, params, optimizer, scaler, frames, tokens, cfg, info: DistInfo,
                    precision: str, where: str) -> float:
    """One optimizer step on the batch (loss, backward, DDP all-reduce, clipping,
    update): the loss. With ``cfg.accum_steps`` > 1 the batch is ``accum_steps``
    micro-batches of ``cfg.batch_size`` (:func:`accumulate_gradients`)."""
    optimizer.zero_grad(set_to_none=True)
    if cfg.accum_steps > 1:
        value = accumulate_gradients(model, frames, tokens, cfg.batch_size, precision, info.device,
                                     scaler, where)
    else:
        loss = contrastive_loss(model, frames, tokens, precision, info.device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at {where}")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        value = loss.item()
    all_reduce_grads(params)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return value


def _pairs(batch) -> int:
    """Pairs in a collated local batch (broken videos already dropped)."""
    if isinstance(batch, dict):
        return int(batch["batch_size"]) if "batch_size" in batch else int(batch["frames"].shape[0])
    return int(batch[0].shape[0])


def _too_small(batch, epoch: int, step: int, info: DistInfo) -> bool:
    """True when this step's global batch holds fewer than 2 pairs (broken videos were
    skipped): a contrastive loss of one pair is exactly 0 and would train nothing, so the
    step is skipped (the caller counts it). Every rank decides alike."""
    local = _pairs(batch)
    if info.distributed and any_rank(local == 0, info):
        raise RuntimeError(f"every video of a rank's batch at epoch {epoch + 1} step {step} is broken; "
                           "fix or drop them")
    total = local
    if info.distributed:
        t = torch.tensor([float(local)], device=info.device)
        torch.distributed.all_reduce(t)
        total = int(t.item())
    if total >= 2:
        return False
    log.warning("epoch %d step %d: %d pair(s) left after skipping broken videos (a contrastive step needs "
                ">= 2); step skipped", epoch + 1, step, total)
    return True


class _Throughput:
    """Samples per second since the last log line."""

    def __init__(self) -> None:
        self.t, self.n = time.perf_counter(), 0

    def take(self) -> float:
        now = time.perf_counter()
        rate = self.n / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return rate


def train_one_epoch(model, loader, sampler: EpochBatchSampler, optimizer, scheduler,
                    scaler, *, epoch: int, global_step: int, cfg, info: DistInfo,
                    precision: str, stop: StopFlag, run_logger=None,
                    on_step: Optional[Callable[[int, int], None]] = None,
                    save_step: Optional[Callable[[int, int], None]] = None) -> EpochResult:
    """Train from ``sampler.start_step`` to the end of the epoch (or until a stop is
    requested on any rank). ``on_step(epoch, step)`` runs after each optimizer step
    (tests use it to deliver signals); ``save_step(epoch, steps_done)`` is called every
    ``cfg.save_every`` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    step, total = sampler.start_step, sampler.steps_per_epoch
    # A bar only on a terminal; in a log file the epoch's one line is logged by the caller.
    bar = progress_bar(total=total, initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       dynamic_ncols=True, leave=False, enabled=info.is_master and not cfg.no_progress)
    losses: list[float] = []
    samples, skipped, small, interrupted = 0, 0, 0, False
    t_epoch, rate = time.perf_counter(), _Throughput()
    for batch in loader:
        skipped += int(batch.get("num_skipped", 0)) if isinstance(batch, dict) else 0
        if _too_small(batch, epoch, step, info):
            scheduler.step()
            step, global_step, small = step + 1, global_step + 1, small + 1
            continue
        frames, tokens = split_batch(batch)
        if cfg.accum_steps == 1:  # else each micro-batch moves to the device when it is used
            frames, tokens = frames.to(info.device, non_blocking=True), tokens.to(info.device, non_blocking=True)
        lr = scheduler.step()
        value = _optimizer_step(model, params, optimizer, scaler, frames, tokens, cfg, info, precision,
                                f"epoch {epoch} step {step}")
        step, global_step = step + 1, global_step + 1
        losses.append(value)
        n = frames.shape[0] * info.world_size
        samples, rate.n = samples + n, rate.n + n
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if run_logger is not None and (step % cfg.log_every == 0 or step == total):
            run_logger.log(global_step, {"train/loss": value, "train/lr": lr,
                                         "train/samples_per_s": rate.take()}, epoch=epoch)
        if on_step is not None:
            on_step(epoch, step)
        if any_rank(stop.requested, info):
            interrupted = step < total
            break
        if save_step is not None and cfg.save_every and global_step % cfg.save_every == 0 and step < total:
            save_step(epoch, step)
    bar.close()
    if skipped or small:
        log.warning("epoch %d: skipped %d broken samples; %d steps left with fewer than 2 pairs were skipped",
                    epoch + 1, skipped, small)
    if not losses and step > sampler.start_step and not interrupted:
        raise UsageError(f"epoch {epoch + 1}: every training video was unreadable ({skipped} skipped, each "
                         "one named in the log): no step trained")
    return EpochResult(
        steps_done=step, global_step=global_step, interrupted=interrupted,
        mean_loss=float(np.mean(losses)) if losses else math.nan,
        samples_per_s=samples / max(time.perf_counter() - t_epoch, 1e-9), skipped=skipped, losses=losses,
        skipped_steps=small)
