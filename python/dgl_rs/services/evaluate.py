"""Retrieval evaluation: embed every text and every video once, then rank.

DGL's similarity is a plain cosine (no query-dependent re-weighting), so the
(captions x videos) score matrix is one matrix product of embeddings computed once per
caption and once per video. Metrics come from :mod:`dgl_rs.metrics`
(``retrieval_report``); QB-Norm (both directions: banks of training captions and training
videos, only when given; the paper's setting and the released script's variant) and dual
softmax (DSL) are reported separately from the raw scores, never mixed in.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..ops import metrics
from ..backbone.text import tokenize
from ..util.errors import UsageError
from ..util.files import atomic_write_text
from ..util.progress import progress_bar
from .device import autocast_for

log = logging.getLogger("dgl_rs.evaluate")


def _frames_of(item) -> torch.Tensor:
    if isinstance(item, dict):
        return item["frames"]
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


@torch.no_grad()
def encode_videos(model, videos, *, device: torch.device | str = "cpu", batch_size: int = 32,
                  workers: int = 0, precision: str = "fp32", progress: bool = True,
                  collate_fn: Optional[Callable] = None, desc: str = "videos",
                  return_indices: bool = False):
    """L2-normalised video embeddings (N, D) float32 on CPU, in dataset order.

    ``videos`` is a map-style dataset whose items are frames (T, 3, H, W) (or a dict with
    ``frames``, or a tuple starting with them), or an iterable of already-batched
    (B, T, 3, H, W) tensors/dicts (e.g. a ``DataLoader``; a ``VideoLoader`` that skips
    broken videos). With ``return_indices`` also returns the dataset index of each row
    (from the batches' ``video_index`` when present), so skipped videos can be found.
    """
    device = torch.device(device)
    if isinstance(videos, torch.utils.data.DataLoader) or not hasattr(videos, "__getitem__"):
        batches = videos
        total = len(videos) if hasattr(videos, "__len__") else None
    else:
        batches = torch.utils.data.DataLoader(
            videos, batch_size=batch_size, shuffle=False, num_workers=workers,
            collate_fn=collate_fn, persistent_workers=False)
        total = len(batches)
    was_training = model.training
    model.eval()
    out, indices = [], []
    seen = 0
    try:
        for batch in progress_bar(batches, total=total, desc=f"encode {desc}", unit="batch",
                                  enabled=progress, leave=False, dynamic_ncols=True):
            frames = _frames_of(batch).to(device, non_blocking=True)
            with autocast_for(precision, device):
                emb = model.encode_video(frames)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
            n = emb.shape[0]
            if isinstance(batch, dict) and "video_index" in batch:
                indices.append(torch.as_tensor(batch["video_index"]).reshape(-1).long())
            else:
                indices.append(torch.arange(seen, seen + n))
            seen += n
    finally:
        model.train(was_training)
    if not out:
        skipped = getattr(batches, "num_skipped", 0)
        why = f"all {skipped} {desc} were unreadable and skipped" if skipped else f"no {desc} to encode"
        raise UsageError(f"encode_videos: {why}")
    emb = torch.cat(out)
    return (emb, torch.cat(indices).numpy()) if return_indices else emb


@torch.no_grad()
def encode_texts(model, texts: Sequence[str] | torch.Tensor, *, context_length: int = 32,
                 device: torch.device | str = "cpu", batch_size: int = 256,
                 precision: str = "fp32", progress: bool = True,
                 desc: str = "captions") -> torch.Tensor:
    """L2-normalised text embeddings (N, D) float32 on CPU. ``texts`` are strings
    (tokenized with ``context_length``) or token ids (N, context_length)."""
    device = torch.device(device)
    tokens = texts if isinstance(texts, torch.Tensor) else tokenize(texts, context_length)
    was_training = model.training
    model.eval()
    out = []
    try:
        starts = range(0, tokens.shape[0], batch_size)
        for lo in progress_bar(starts, desc=f"encode {desc}", unit="batch", enabled=progress,
                               leave=False, dynamic_ncols=True):
            chunk = tokens[lo:lo + batch_size].to(device)
            with autocast_for(precision, device):
                emb = model.encode_text(chunk)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("encode_texts: no captions to encode")
    return torch.cat(out)


def similarity(text_emb: torch.Tensor, video_emb: torch.Tensor) -> np.ndarray:
    """Cosine score matrix (captions x videos) as float32 numpy."""
    sim = metrics.similarity(text_emb.float().contiguous(), video_emb.float().contiguous())
    return sim.cpu().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)


#: QB-Norm as its paper sets it (cosine similarities): k=1, beta=20, every top-1 of a
#: bank query activates its item.
QB_NORM = dict(k=1, beta=20.0, min_count=(1, 1))
#: The DGL authors' released evaluation script (``search_for_best_r1_with_qb_norm.py``): on
#: logits (``logit_scale * cosine``), k=1, beta=0.87, an item activated only when it is the
#: top-1 of at least 3 (text->video) / 5 (video->text) bank queries. Those are the script's
#: defaults, used as fixed constants here; the script itself picks beta by sweeping R@1 on
#: the TEST split, which dgl-rs never does.
QB_NORM_RELEASED = dict(k=1, beta=0.87, min_count=(3, 5))
#: Every evaluation ranks near-ties as ties (pessimistically, as exact ties): a score within
#: 1e-5 of the largest |score| the query compares counts as equal to the true one
#: (:func:`dgl_rs.metrics.ranks`'s ``tie_rtol``). An order-blind model scores a video and
#: its time reversal equal up to summation-order rounding (~1e-7), which would otherwise
#: break those ties differently on every machine; 1e-5 is 100x that noise and below any
#: difference a trained model's scores show on purpose.
EVAL_TIE_RTOL = 1e-5


def report_from_embeddings(text_emb: torch.Tensor, video_emb: torch.Tensor,
                           caption_to_video: np.ndarray, *,
                           bank_emb: Optional[torch.Tensor] = None,
                           dsl: bool = False, logit_scale: float = 100.0,
                           video_bank_emb: Optional[torch.Tensor] = None,
                           keep_ranks: bool = False) -> dict[str, Any]:
    """``{"raw": report, ["qb_norm": report, "qb_norm_released": report], ["dsl": report],
    ["ranks": {"t2v": [...], "v2t": [...]}]}`` from normalised embeddings (``ranks``: the
    raw 1-based rank of every query, with ``keep_ranks``). Near-ties rank as ties
    (:data:`EVAL_TIE_RTOL`).

    ``report`` is ``dgl_rs.metrics.retrieval_report``'s dict (``{"t2v": {"R@1", ...},
    "v2t": {...}}``).

    * QB-Norm (only with a bank; both banks come from the TRAINING split): text->video
      re-scores each test caption's row with ``bank_emb`` (training captions),
      video->text each test video's row with ``video_bank_emb`` (training videos);
      a direction without its bank is left out (:func:`dgl_rs.metrics.qb_norm_report`).
      ``qb_norm`` uses :data:`QB_NORM` on cosines, ``qb_norm_released`` the released
      script's variant :data:`QB_NORM_RELEASED` on the logits ``logit_scale * sim``.
    * DSL: dual softmax on the logits ``logit_scale * sim`` (temperature 1, as in the
      public DSL inference code), softmax over captions for t2v and over videos for v2t.
    """
    c2v = np.asarray(caption_to_video, dtype=np.int64)
    sim = similarity(text_emb, video_emb)
    raw = metrics.ranks(sim, c2v, tie_rtol=EVAL_TIE_RTOL)
    out: dict[str, Any] = {"raw": metrics.report_from_ranks(raw)}
    if keep_ranks:
        out["ranks"] = {d: r.tolist() for d, r in raw.items()}
    if bank_emb is not None or video_bank_emb is not None:
        banks = {"text_bank": None if bank_emb is None else similarity(bank_emb, video_emb),
                 "video_bank": None if video_bank_emb is None else similarity(video_bank_emb, text_emb)}
        out["qb_norm"] = metrics.qb_norm_report(sim, c2v, **banks, **QB_NORM, tie_rtol=EVAL_TIE_RTOL)
        scale = np.float32(logit_scale)
        logits = {k: None if v is None else v * scale for k, v in banks.items()}
        out["qb_norm_released"] = metrics.qb_norm_report(sim * scale, c2v, **logits, **QB_NORM_RELEASED,
                                                         tie_rtol=EVAL_TIE_RTOL)
    if dsl:
        logits = (sim * np.float32(logit_scale)).astype(np.float32)
        out["dsl"] = metrics.dual_softmax_report(logits, c2v, temperature=1.0, tie_rtol=EVAL_TIE_RTOL)
    return out


def _kept_captions(eval_set, kept: np.ndarray, name: str):
    """``(captions, caption_to_video, videos skipped)`` over the videos the loader kept
    (broken ones are skipped with ``on_error="skip"``: rank only what is left)."""
    captions = list(eval_set.captions)
    c2v = np.asarray(eval_set.caption_to_video, dtype=np.int64)
    num_videos = int(c2v.max()) + 1 if len(c2v) else 0
    skipped = num_videos - len(kept)
    if skipped > 0 or not np.array_equal(kept, np.arange(len(kept))):
        pos = {int(v): i for i, v in enumerate(kept)}
        keep_caps = [i for i, v in enumerate(c2v) if int(v) in pos]
        log.warning("%s: %d of %d videos could not be read and were left out, with their "
                    "%d captions", name, skipped, num_videos, len(c2v) - len(keep_caps))
        captions = [captions[i] for i in keep_caps]
        c2v = np.array([pos[int(c2v[i])] for i in keep_caps], dtype=np.int64)
    return captions, c2v, skipped


def evaluate(model, eval_set, *, device: torch.device | str = "cpu", batch_size: int = 32,
             workers: int = 0, precision: str = "fp32", context_length: int = 32,
             query_bank: Optional[Sequence[str]] = None, dsl: bool = False,
             progress: bool = True, video_loader=None, name: str = "test",
             video_bank=None, keep_ranks: bool = False) -> dict[str, Any]:
    """Embed ``eval_set`` once and return :func:`report_from_embeddings`'s dict plus
    ``num_videos`` / ``num_captions``.

    ``eval_set``: a :class:`dgl_rs.data.EvalSet` (videos via its ``make_loader``), or any
    object with ``captions``, ``caption_to_video`` and ``videos`` (a dataset of frames);
    ``video_loader`` overrides where the videos come from. Videos the loader skipped
    (broken, with ``on_error="skip"``) are left out together with their captions.
    ``query_bank`` (training captions) and ``video_bank`` (the training videos, an
    ``EvalSet`` or a dataset of frames) are QB-Norm's banks; ``keep_ranks`` keeps every
    query's raw rank."""
    if video_loader is not None:
        videos = video_loader
    elif hasattr(eval_set, "make_loader"):  # dgl_rs.data.EvalSet: skips/raises on broken videos
        videos = eval_set.make_loader(batch_size=batch_size, workers=workers,
                                       pin_memory=torch.device(device).type == "cuda")
    else:
        videos = getattr(eval_set, "videos", eval_set)
    video_emb, kept = encode_videos(model, videos, device=device, batch_size=batch_size,
                                    workers=workers, precision=precision, progress=progress,
                                    desc=f"{name} videos", return_indices=True)
    captions, c2v, skipped = _kept_captions(eval_set, kept, name)
    text_emb = encode_texts(model, captions, context_length=context_length,
                            device=device, precision=precision, progress=progress,
                            desc=f"{name} captions")
    bank_emb = None
    if query_bank is not None:
        bank_emb = encode_texts(model, list(query_bank), context_length=context_length,
                                device=device, precision=precision, progress=progress,
                                desc="query bank")
    video_bank_emb = None
    if video_bank is not None:
        bank_videos = (video_bank.make_loader(batch_size=batch_size, workers=workers,
                                       pin_memory=torch.device(device).type == "cuda")
                       if hasattr(video_bank, "make_loader") else video_bank)
        video_bank_emb = encode_videos(model, bank_videos, device=device, batch_size=batch_size,
                                       workers=workers, precision=precision, progress=progress,
                                       desc="video bank")
    scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
    out = report_from_embeddings(text_emb, video_emb, c2v, bank_emb=bank_emb, dsl=dsl,
                                 logit_scale=scale, video_bank_emb=video_bank_emb, keep_ranks=keep_ranks)
    out["num_videos"] = int(video_emb.shape[0])
    out["num_captions"] = int(text_emb.shape[0])
    if skipped > 0:
        out["num_skipped_videos"] = int(skipped)
    return out


def flatten_report(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"raw": {"t2v": {"R@1": x}}}`` -> ``{"raw/t2v/R@1": x}`` (scalars only)."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_report(value, name + "/"))
        elif isinstance(value, (int, float)):
            flat[name] = float(value)
    return flat


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Write ``results`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")




def evaluate_sets(model, sets: dict, cfg, device, precision: str, *, bundle=None, raw_only: bool = False,
                  prefix: str = "", keep_ranks: bool = False) -> dict[str, Any]:
    """:func:`evaluate` on every set of ``sets`` (name -> eval set) with the evaluation
    flags of ``cfg`` (an :class:`~dgl_rs.services.config.EvalConfig`): ``{name: results}``.
    QB-Norm (with ``cfg.qb_norm``, banks from ``bundle``: a :class:`~.data.DataBundle`)
    and DSL (``cfg.dsl``) are reported beside the raw scores unless ``raw_only``
    (validation); ``keep_ranks``: every query's raw rank too. What training, validation,
    ``dgl-rs eval`` and the benchmark all run."""
    qb = not raw_only and cfg.qb_norm and bundle is not None
    return {name: evaluate(model, eval_set, device=device, batch_size=cfg.eval_batch_size, workers=cfg.workers,
                           precision=precision, context_length=cfg.context_length,
                           query_bank=bundle.query_bank if qb else None, video_bank=bundle.video_bank if qb else None,
                           dsl=cfg.dsl and not raw_only, progress=not cfg.no_progress, name=f"{prefix}{name}",
                           keep_ranks=keep_ranks)
            for name, eval_set in sets.items()}
