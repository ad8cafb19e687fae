"""torch.distributed plumbing for prompt tuning (torchrun env vars; gloo on CPU, nccl on CUDA).

Gradient strategy. The model is NOT wrapped in ``DistributedDataParallel``. Every rank
computes the loss of the whole global batch from embeddings gathered with
:func:`gather_with_grad` (own shard = the local, differentiable tensor; the other
shards are constants), so the backward of rank r yields the part of the global gradient
that flows through r's samples. The true gradient is the SUM of these parts, which
:func:`all_reduce_grads` computes with one all-reduce over the flattened prompt grads.
DDP would average instead (a factor of 1/world to undo), only hooks backward when the
wrapper's ``forward`` is called (the trainer calls ``encode_text``/``encode_video``),
and buys nothing here: the trainable parameters are a few prompt tensors (<10M values),
so overlapping their communication with backward is not worth the coupling.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..services.device import resolve_device


@dataclass
class DistInfo:
    distributed: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def is_using_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Resolve the device and, under torchrun (``WORLD_SIZE`` > 1), join the process
    group. ``device`` is ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``;
    under torchrun the cuda index is the local rank."""
    dev = resolve_device(device)
    info = DistInfo(device=dev)
    if is_using_distributed():
        info.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                    timeout=datetime.timedelta(seconds=timeout_s))
        info.distributed = True
        info.rank = dist.get_rank()
        info.world_size = dist.get_world_size()
        info.device = dev
    elif dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return info


def cleanup_distributed(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B_local, ...) of all ranks in rank order -> (world*B_local, ...).

    The own slice is the local tensor itself, so gradients flow into this rank's graph;
    the other ranks' slices are detached copies. Identity without a process group.
    Local sizes may differ (a rank that skipped broken videos has fewer).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world, rank = dist.get_world_size(), dist.get_rank()
    # Local batches can differ in size (broken videos are skipped): gather the sizes,
    # pad to the largest, gather, cut.
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0],) + x.shape[1:])])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[:n] for p, n in zip(parts, sizes)]
    parts[rank] = x
    return torch.cat(parts, dim=0)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of ``params`` over ranks (one flat all-reduce). A missing grad
    counts as zeros so every rank reduces the same buffer."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a python float over ranks (for logging)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def all_gather_object(obj):
    """List of ``obj`` from every rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
