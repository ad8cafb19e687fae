"""What one training step costs at any scale, counted on fake tensors on any machine.

:func:`estimate_step` builds the method around the open_clip backbone with every
parameter, input and intermediate a ``FakeTensor`` (``FakeTensorMode``: shapes, dtypes
and strides, no memory), then runs two training steps as ``dgl-rs train`` does (the
contrastive loss of :mod:`.train`, backward, gradient clipping, AdamW) and reports the
second, so the optimizer state counts:

- **peak bytes of live tensors** and what they were at that moment (:data:`CATEGORIES`):
  every storage an op creates is counted from its creation until it is freed
  (:class:`LiveBytes`; views share their storage's bytes);
- **FLOPs** (``FlopCounterMode`` with dgl-rs's formulas, :mod:`dgl_rs.ops.flops`), and
  the time they take at a stated throughput and utilisation.

It models the CPU autocast policy (it casts the same matmuls as CUDA's), AdamW's
multi-tensor (``foreach``) update (a GPU's default) and no ``GradScaler`` (two scalars,
in-place unscaling). It leaves out the CUDA context (~0.5-1 GiB), the caching allocator's
rounding and fragmentation, and memory inside a kernel that is not a tensor (cuBLAS and
flash workspaces, the scratch of the Rust ops' kernels). On CPU it is checked against a
real step (``tests/test_estimate.py``).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from ..backbone.loading import meta_clip
from ..factory.build import build_method
from ..methods.released import released_way
from ..ops.flops import flop_counter
from .optim import make_optimizer
from .params import TrainConfig
from .train import contrastive_loss

#: What the bytes alive at the peak were: the model's parameters and buffers, gradients,
#: AdamW's state, the batch, tensors the forward made that are still alive (what autograd
#: saved for the backward, mostly), and tensors the backward made (incl. recomputation).
CATEGORIES = ("parameters", "gradients", "optimizer", "inputs", "activations", "backward")
#: --precision -> ``dgl-rs train``'s name (``amp`` is fp16 autocast there).
PRECISIONS = {"fp32": "fp32", "amp_fp16": "amp", "amp_bf16": "amp_bf16"}
#: An H100 SXM's dense peak, TFLOP/s: tensor cores for fp16/bf16, plain fp32 (no TF32).
H100_TFLOPS = {"fp32": 67.0, "amp_fp16": 989.4, "amp_bf16": 989.4}


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages alive while it is active, and their peak.

    Every tensor an op returns is looked at; a storage not seen before is counted from
    then until it is freed (a weak reference's callback). Each new storage is tagged with
    ``phase``, the part of the step that made it; :meth:`reset_peak` starts a new peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.phase = "build"
        self.at_peak: frozenset = frozenset()
        self._serial = WeakIdKeyDictionary()  # storage -> serial number
        self._refs: dict[int, weakref.ref] = {}  # serial -> weak ref, while alive
        self.history: list[tuple[int, str]] = []  # serial -> (bytes, phase), forever

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st in self._serial:
            return
        serial = len(self.history)
        self._serial[st] = serial
        self.history.append((st.nbytes(), self.phase))
        self._refs[serial] = weakref.ref(st, lambda _, s=serial: self._free(s))
        self.live += st.nbytes()
        if self.live > self.peak:
            self.peak, self.at_peak = self.live, frozenset(self._refs)

    def _free(self, serial: int) -> None:
        del self._refs[serial]
        self.live -= self.history[serial][0]

    def reset_peak(self) -> None:
        self.peak, self.at_peak = self.live, frozenset(self._refs)

    def serials(self, tensors) -> set[int]:
        """The serial numbers of the storages of ``tensors`` (those this mode saw)."""
        found = (self._serial.get(t.untyped_storage()) for t in tensors if isinstance(t, torch.Tensor))
        return {s for s in found if s is not None}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


@dataclass
class StepEstimate:
    """One training step's cost (see the module docstring); bytes, FLOPs and seconds."""

    method: str
    model: str
    batch_size: int
    num_frames: int
    precision: str
    checkpoint_blocks: bool
    released: bool
    trainable: int
    peak_bytes: int
    categories: dict[str, int]
    flops: int
    device_tflops: float
    utilisation: float
    seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self.seconds = self.flops / (self.device_tflops * 1e12 * self.utilisation)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _materialise(module: nn.Module) -> nn.Module:
    """Replace every (meta) parameter and buffer by a new tensor of its shape and dtype on
    the CPU: under a ``FakeTensorMode``, a fake one."""
    for mod in module.modules():
        for name, p in mod._parameters.items():
            if p is not None:
                mod._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in mod._buffers.items():
            if b is not None:
                mod._buffers[name] = torch.empty(b.shape, dtype=b.dtype)
    return module


def _categorise(live: LiveBytes, model, optimizer, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """The bytes alive at ``live``'s peak by :data:`CATEGORIES`."""
    known = {"parameters": live.serials([*model.parameters(), *model.buffers()]),
             "gradients": live.serials(p.grad for p in model.parameters()),
             "optimizer": live.serials(tree_leaves(list(optimizer.state.values()))),
             "inputs": live.serials(inputs)}
    by_phase = {"build": "parameters", "inputs": "inputs", "forward": "activations", "backward": "backward",
                "optimizer": "optimizer"}
    out = dict.fromkeys(CATEGORIES, 0)
    for serial in live.at_peak:
        nbytes, phase = live.history[serial]
        kind = next((k for k, serials in known.items() if serial in serials), by_phase[phase])
        out[kind] += nbytes
    return out


def _train_step(model, optimizer, frames, tokens, precision: str, grad_clip: float, live: LiveBytes) -> None:
    """One step of ``dgl-rs train`` (without its loss checks, which read the value)."""
    optimizer.zero_grad(set_to_none=True)
    live.phase = "forward"
    loss = contrastive_loss(model, frames, tokens, precision, torch.device("cpu"))
    live.phase = "backward"
    loss.backward()
    live.phase = "optimizer"
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(list(model.trainable_parameters()), grad_clip)
    optimizer.step()


def estimate_step(method: str, model_name: str = "ViT-B-32-quickgelu", batch_size: int = 128, num_frames: int = 12,
                  precision: str = "amp_bf16", checkpoint_blocks: bool = False, released: bool = False,
                  context_length: int = 32, device_tflops: Optional[float] = None, utilisation: float = 0.4,
                  **options: Any) -> StepEstimate:
    """The cost of one training step of ``method`` (after the first optimizer step); no
    tensor of the model's or the batch's size is allocated. ``released``: a DGL method
    computed the released code's way (:func:`dgl_rs.methods.released.released_way`).
    ``device_tflops`` defaults to an H100's peak for ``precision`` (:data:`H100_TFLOPS`)."""
    _check_args(precision, batch_size, num_frames, context_length, utilisation, device_tflops)
    cfg = dataclasses.replace(TrainConfig(), method=method, lr=1e-3)
    clip = meta_clip(model_name)
    live, frames_shape = LiveBytes(), (batch_size, num_frames, 3)
    with FakeTensorMode(), live:
        model = build_method(_materialise(clip), method, num_frames=num_frames, context_length=context_length,
                             checkpoint_blocks=checkpoint_blocks, **options).train()
        if released:
            released_way(model, batch_size)
        optimizer = make_optimizer(model, cfg)
        for group in optimizer.param_groups:
            group["foreach"] = True
        live.phase = "inputs"
        frames = torch.empty(*frames_shape, *model.backbone.image_size)
        tokens = torch.zeros(batch_size, context_length, dtype=torch.long)
        step = lambda: _train_step(model, optimizer, frames, tokens, PRECISIONS[precision],  # noqa: E731
                                   cfg.grad_clip, live)
        step()
        live.reset_peak()
        step()
        peak, categories = live.peak, _categorise(live, model, optimizer, (frames, tokens))
        with flop_counter() as flops:  # a step of its own: the counter's module hooks hold tensors
            step()
    return StepEstimate(method, model_name, batch_size, num_frames, precision, checkpoint_blocks, released,
                        model.num_trainable(), peak, categories, flops.get_total_flops(),
                        device_tflops or H100_TFLOPS[precision], utilisation)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def _check_args(precision, batch_size, num_frames, context_length, utilisation, device_tflops) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {precision!r}")
    for name, value in (("batch_size", batch_size), ("num_frames", num_frames), ("context_length", context_length)):
        _positive_int(name, value)
    if not 0 < utilisation <= 1:
        raise ValueError(f"`utilisation` must be in (0, 1], got {utilisation!r}")
    if device_tflops is not None and not 0 < device_tflops < float("inf"):
        raise ValueError(f"`device_tflops` must be a positive number, got {device_tflops!r}")
