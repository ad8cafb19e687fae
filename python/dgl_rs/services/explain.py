"""Explain a match: where the global prompt looks in a video (the paper's Figure 5).

* :func:`plot_global_attention`: the frames with the global prompt's attention as a heat
  map over their patches, and its mass per frame as bars under them (matplotlib, the
  optional ``plot`` extra: ``pip install "dgl-rs[plot]"``).
* :func:`explain_video`: one video file and a caption -> their cosine similarity and the
  attention map (what ``dgl-rs explain`` draws).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.attention_maps import GlobalAttentionMap
from ..data.video import OPENAI_MEAN, OPENAI_STD, VideoTransform, decode_frames
from ..util.errors import UsageError
from ..util.files import atomic_write_bytes
from ..backbone.text import tokenize


def _matplotlib():
    try:
        from matplotlib.figure import Figure  # optional dependency: the `plot` extra
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'dgl-rs[plot]' (or matplotlib)") from exc
    return Figure


def denormalise(frames: Tensor, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD) -> np.ndarray:
    """CLIP-normalised ``(T, 3, H, W)`` -> RGB in [0, 1], ``(T, H, W, 3)`` numpy."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (frames.detach().float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_global_attention(frames: Tensor, attention: GlobalAttentionMap, *, titles: Optional[Sequence[str]] = None,
                          mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD,
                          alpha: float = 0.5, cmap: str = "jet", frame_inches: float = 1.3):
    """A matplotlib ``Figure``: for each video of the batch, its T frames with the global
    prompt's attention on each patch as a heat map (one colour scale per video, so frames
    compare), and under them the attention mass on each frame as bars (one y scale for
    all videos). ``frames``: the normalised ``(B, T, 3, H, W)`` (or one ``(T, 3, H, W)``)
    the map was computed from; ``titles``: one line per video (e.g. caption and score).
    Uses no pyplot state: safe headless and in threads; ``fig.savefig(path)`` writes it."""
    Figure = _matplotlib()
    frames = frames.unsqueeze(0) if frames.dim() == 4 else frames
    b, t = attention.frames.shape
    if tuple(frames.shape[:2]) != (b, t):
        raise ValueError(f"`frames` is {tuple(frames.shape)}: expected ({b}, {t}, 3, H, W), the map's videos and frames")
    titles = list(titles) if titles is not None else [None] * b
    if len(titles) != b:
        raise ValueError(f"`titles`: {len(titles)} for {b} videos")
    heat, mass = attention.patch_grid().float().cpu().numpy(), attention.frames.float().cpu().numpy()
    width = max(6.0, frame_inches * t)
    fig = Figure(figsize=(width, 0.3 + (width / t + 1.2) * b), layout="constrained")
    top = 1.05 * float(mass.max()) if mass.size else 1.0
    for i, sub in enumerate(np.atleast_1d(fig.subfigures(b, 1))):
        rows = sub.add_gridspec(2, t, height_ratios=[1.0, 0.9])
        _draw_video(sub, rows, denormalise(frames[i], mean, std), heat[i], alpha, cmap)
        _draw_bars(sub.add_subplot(rows[1, :]), mass[i], float(attention.on_global[i]), top)
        if titles[i]:
            sub.suptitle(titles[i], fontsize=9, x=0.01, ha="left")
    query = attention.query if attention.query == "mean" else f"global prompt {attention.query}"
    fig.suptitle(f"{query}, visual block {attention.layer}: attention over the frames", fontsize=9)
    return fig


def _draw_video(fig, rows, images: np.ndarray, heat: np.ndarray, alpha: float, cmap: str) -> None:
    vmax = float(heat.max()) or 1.0
    for f, (img, h) in enumerate(zip(images, heat)):
        ax = fig.add_subplot(rows[0, f])
        height, width = img.shape[:2]
        ax.imshow(img)
        ax.imshow(h, cmap=cmap, alpha=alpha, vmin=0.0, vmax=vmax, interpolation="bilinear",
                  extent=(0, width, height, 0))
        ax.set_axis_off()


def _draw_bars(ax, mass: np.ndarray, on_global: float, top: float) -> None:
    x = np.arange(1, len(mass) + 1)
    ax.bar(x, mass, color="tab:orange", width=0.8)
    ax.set_xlim(0.5, len(mass) + 0.5)
    ax.set_ylim(0, top)
    ax.set_xticks(x)
    ax.set_xlabel(f"frame (mass on the global tokens: {on_global:.1%})", fontsize=8)
    ax.set_ylabel("mass", fontsize=8)
    ax.tick_params(labelsize=7)


#: The formats matplotlib 3 writes (with Pillow), for when it is not installed to ask.
FIGURE_FORMATS = ("eps", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg", "svgz", "tif", "tiff",
                  "webp")
#: The most pixels a saved figure may have (512 MiB of RGBA): a larger one is a typo in the dpi.
MAX_PIXELS = 2**27


def figure_format(path: Union[str, "os.PathLike[str]"]) -> str:
    """The image format of ``path`` from its suffix (PNG without one); a suffix matplotlib
    cannot write is a :class:`UsageError` naming those it can (checked before any work)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        formats = sorted(_matplotlib()().canvas.get_supported_filetypes())
    except ImportError:
        formats = list(FIGURE_FORMATS)
    if fmt not in formats:
        raise UsageError(f"{path}: matplotlib cannot write .{fmt} images; name it .png or .{', .'.join(formats)}")
    return fmt


def save_figure(fig, path: Union[str, "os.PathLike[str]"], dpi: int = 150) -> str:
    """Write ``fig`` as an image (format from the suffix, PNG by default), atomically; a
    suffix matplotlib cannot write or an image over :data:`MAX_PIXELS` is a :class:`UsageError`."""
    fmt = figure_format(path)
    width, height = (int(v) for v in fig.get_size_inches() * dpi)
    if width * height > MAX_PIXELS:
        raise UsageError(f"dpi {dpi} makes a {width:,} x {height:,} pixel image, over {MAX_PIXELS:,} pixels; "
                         "lower --dpi")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return str(atomic_write_bytes(path, buf.getvalue()))


@dataclass(frozen=True)
class Explanation:
    """A video and a caption: the normalised ``frames (1, T, 3, H, W)``, their cosine
    ``similarity`` and the global prompt's ``attention`` map."""

    frames: Tensor
    caption: str
    similarity: float
    attention: GlobalAttentionMap

    def title(self) -> str:
        return f'"{self.caption}"  cosine {self.similarity:.4f}'


@torch.no_grad()
def explain_frames(model, frames: Tensor, caption: str, *, layer: int = -1, query=0) -> Explanation:
    """:class:`Explanation` of normalised frames ``(T, 3, H, W)`` or ``(1, T, 3, H, W)``."""
    frames = frames.unsqueeze(0) if frames.dim() == 4 else frames
    device = next(model.parameters()).device
    frames = frames.to(device)
    video = F.normalize(model.encode_video(frames).float(), dim=-1)
    text = F.normalize(model.encode_text(tokenize([caption], model.config["context_length"]).to(device)).float(), dim=-1)
    attention = model.global_attention(frames, layer=layer, query=query)
    return Explanation(frames.cpu(), caption, float(text @ video.T), attention)


def explain_video(model, path: Union[str, "os.PathLike[str]"], caption: str, preprocess_cfg: dict, *,
                  layer: int = -1, query=0) -> Explanation:
    """Decode ``model.num_frames`` frames of the video at ``path`` (segment centres, as
    evaluation does) and explain them against ``caption``."""
    frames = VideoTransform.from_preprocess_cfg(preprocess_cfg)(decode_frames(path, model.num_frames))
    return explain_frames(model, frames, caption, layer=layer, query=query)


__all__ = ["Explanation", "denormalise", "explain_frames", "explain_video", "plot_global_attention", "save_figure"]
