"""Retrieval evaluation: embed every text and every video once, then rank.

DGL's similarity is a plain cosine (no query-dependent re-weighting), so the
(captions x videos) score matrix is one matrix product of embeddings computed once per
caption and once per video. Metrics come from :mod:`dgl_rs.metrics`
(``retrieval_report``); QB-Norm (query bank = training captions, only when given) and
dual softmax (DSL) are reported separately from the raw scores, never mixed in.
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

log = logging.getLogger("dgl_rs.evaluate")


def tokenize(texts: Sequence[str], context_length: int) -> torch.Tensor:
    """Token ids (N, context_length) with the open_clip tokenizer (``dgl_rs.tokenize``)."""
    import dgl_rs

    fn = getattr(dgl_rs, "tokenize", None)
    if fn is not None:
        return fn(list(texts), context_length=context_length)
    import open_clip

    return open_clip.tokenize(list(texts), context_length=context_length)


def _autocast(precision: str, device: torch.device):
    from .train.train import autocast_for

    return autocast_for(precision, device)


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
        from tqdm.auto import tqdm

        for batch in tqdm(batches, total=total, desc=f"encode {desc}", unit="batch",
                          disable=not progress, leave=False, dynamic_ncols=True):
            frames = _frames_of(batch).to(device, non_blocking=True)
            with _autocast(precision, device):
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
        raise ValueError("encode_videos: no videos to encode")
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
        from tqdm.auto import tqdm

        starts = range(0, tokens.shape[0], batch_size)
        for lo in tqdm(starts, desc=f"encode {desc}", unit="batch", disable=not progress,
                       leave=False, dynamic_ncols=True):
            chunk = tokens[lo:lo + batch_size].to(device)
            with _autocast(precision, device):
                emb = model.encode_text(chunk)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("encode_texts: no captions to encode")
    return torch.cat(out)


def _metrics():
    from . import metrics  # lands with the metrics issue

    return metrics


def similarity(text_emb: torch.Tensor, video_emb: torch.Tensor) -> np.ndarray:
    """Cosine score matrix (captions x videos) as float32 numpy."""
    m = _metrics()
    sim = m.similarity(text_emb.float().contiguous(), video_emb.float().contiguous())
    return sim.cpu().numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)


def report_from_embeddings(text_emb: torch.Tensor, video_emb: torch.Tensor,
                           caption_to_video: np.ndarray, *,
                           bank_emb: Optional[torch.Tensor] = None,
                           dsl: bool = False, logit_scale: float = 100.0) -> dict[str, Any]:
    """``{"raw": report, ["qb_norm": report], ["dsl": report]}`` from normalised embeddings.

    ``report`` is ``dgl_rs.metrics.retrieval_report``'s dict (``{"t2v": {"R@1", ...},
    "v2t": {...}}``).

    * QB-Norm (only when ``bank_emb``, the embeddings of the query bank = the training
      captions, is given): ``qb_norm(sim, bank @ videos.T)`` re-scores each caption row,
      so rows end up on different scales and only text->video is defined; the
      ``qb_norm`` report has ``t2v`` only (a video->text QB-Norm would need a bank of
      training videos).
    * DSL: dual softmax on the logits ``logit_scale * sim`` (temperature 1, as in the
      public DSL inference code), softmax over captions for t2v and over videos for v2t.
    """
    m = _metrics()
    c2v = np.asarray(caption_to_video, dtype=np.int64)
    sim = similarity(text_emb, video_emb)
    out: dict[str, Any] = {"raw": m.retrieval_report(sim, caption_to_video=c2v)}
    if bank_emb is not None:
        bank_sim = similarity(bank_emb, video_emb)
        out["qb_norm"] = {"t2v": m.t2v(m.qb_norm(sim, bank_sim), c2v)}
    if dsl:
        logits = (sim * np.float32(logit_scale)).astype(np.float32)
        out["dsl"] = m.dual_softmax_report(logits, c2v, temperature=1.0)
    return out


def evaluate(model, eval_set, *, device: torch.device | str = "cpu", batch_size: int = 32,
             workers: int = 0, precision: str = "fp32", context_length: int = 32,
             query_bank: Optional[Sequence[str]] = None, dsl: bool = False,
             progress: bool = True, video_loader=None, name: str = "test") -> dict[str, Any]:
    """Embed ``eval_set`` once and return :func:`report_from_embeddings`'s dict plus
    ``num_videos`` / ``num_captions``.

    ``eval_set``: a :class:`dgl_rs.data.EvalSet` (videos via its ``make_loader``), or any
    object with ``captions``, ``caption_to_video`` and ``videos`` (a dataset of frames);
    ``video_loader`` overrides where the videos come from. Videos the loader skipped
    (broken, with ``on_error="skip"``) are left out together with their captions."""
    if video_loader is not None:
        videos = video_loader
    elif hasattr(eval_set, "make_loader"):  # dgl_rs.data.EvalSet: skips/raises on broken videos
        videos = eval_set.make_loader(batch_size=batch_size, workers=workers)
    else:
        videos = getattr(eval_set, "videos", eval_set)
    video_emb, kept = encode_videos(model, videos, device=device, batch_size=batch_size,
                                    workers=workers, precision=precision, progress=progress,
                                    desc=f"{name} videos", return_indices=True)
    captions = list(eval_set.captions)
    c2v = np.asarray(eval_set.caption_to_video, dtype=np.int64)
    num_videos = int(c2v.max()) + 1 if len(c2v) else 0
    skipped = num_videos - len(kept)
    if skipped > 0 or not np.array_equal(kept, np.arange(len(kept))):
        # Broken videos were skipped (on_error="skip"): rank only what is left.
        pos = {int(v): i for i, v in enumerate(kept)}
        keep_caps = [i for i, v in enumerate(c2v) if int(v) in pos]
        log.warning("%s: %d of %d videos could not be read and were left out, with their "
                    "%d captions", name, skipped, num_videos, len(c2v) - len(keep_caps))
        captions = [captions[i] for i in keep_caps]
        c2v = np.array([pos[int(c2v[i])] for i in keep_caps], dtype=np.int64)
    text_emb = encode_texts(model, captions, context_length=context_length,
                            device=device, precision=precision, progress=progress,
                            desc=f"{name} captions")
    bank_emb = None
    if query_bank is not None:
        bank_emb = encode_texts(model, list(query_bank), context_length=context_length,
                                device=device, precision=precision, progress=progress,
                                desc="query bank")
    scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
    out = report_from_embeddings(text_emb, video_emb, c2v, bank_emb=bank_emb, dsl=dsl,
                                 logit_scale=scale)
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
    from .train.checkpoint import atomic_write_text

    return atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ model loading
#: DGL kwargs of the zero-shot mean-pooling baseline (CLIP4Clip meanP, no training).
ZERO_SHOT_MEANP = dict(generator=None, num_global=0, num_frame_prompts=0,
                       num_text_prompts=(0, 0), pool="frame_cls_mean")


def resolve_prompts_path(path: str | os.PathLike) -> Path:
    """A prompts file, a training checkpoint, or a run folder (its ``prompts.safetensors``,
    else its newest checkpoint)."""
    from .train import checkpoint as ckpt

    p = Path(path)
    if p.is_dir():
        if (p / "prompts.safetensors").is_file():
            return p / "prompts.safetensors"
        found = ckpt.list_checkpoints(p / "checkpoints") or ckpt.list_checkpoints(p)
        if not found:
            raise FileNotFoundError(f"--prompts {p}: no prompts.safetensors or checkpoint in it")
        return found[-1]
    if not p.is_file():
        raise FileNotFoundError(f"--prompts {p}: no such file")
    return p


def load_dgl(prompts: Optional[str | os.PathLike] = None, *, model_name: Optional[str] = None,
             pretrained: Optional[str] = None, device: torch.device | str = "cpu",
             num_frames: Optional[int] = None, context_length: Optional[int] = None):
    """Rebuild a DGL model on its frozen backbone: ``(model, preprocess_cfg, meta)``.

    ``prompts``: a ``prompts.safetensors`` written by training (the backbone is read
    from the ``model.json`` beside it), a training checkpoint (it records the run's
    config), or a run folder; ``None`` gives the zero-shot mean-pooling baseline.
    ``model_name`` / ``pretrained`` override the recorded backbone; ``num_frames`` the
    frames per video (not for DGL-Transformer, whose prompt table is sized by T).
    ``meta`` is ``{"model", "pretrained", "dgl", "prompts"}``: what an index records.
    """
    import dgl_rs

    from .backbones import load_clip
    from .train import checkpoint as ckpt
    from .train.main import load_backbone
    from .train.params import DEFAULT_MODEL, DEFAULT_PRETRAINED, UsageError

    source = None
    recorded: dict[str, Any] = {}
    state_dict = None
    if prompts is not None:
        source = resolve_prompts_path(prompts)
        if ckpt.is_checkpoint(source):
            state_dict, state = ckpt.load_checkpoint(source)
            recorded = {"model": state["config"]["model"],
                        "pretrained": state["config"]["pretrained"],
                        "dgl": state["model_config"]}
        elif source.with_name("model.json").is_file():
            recorded = json.loads(source.with_name("model.json").read_text())
    name = model_name or recorded.get("model") or DEFAULT_MODEL
    weights = pretrained or recorded.get("pretrained") or DEFAULT_PRETRAINED
    clip, preprocess_cfg, _ = load_backbone(load_clip, name, weights, device)
    try:
        if prompts is None:
            model = dgl_rs.DGL(clip, num_frames=num_frames or 12,
                               context_length=context_length or 32, **ZERO_SHOT_MEANP)
        elif state_dict is not None:
            model = dgl_rs.DGL(clip, **recorded["dgl"])
            model.load_prompt_state_dict(state_dict)
        else:
            model = dgl_rs.DGL.load_prompts(str(source), clip)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc} (pass the --model/--pretrained it was trained "
                         "with)") from exc
    if num_frames and prompts is not None and num_frames != model.num_frames:
        if model.config.get("generator") == "transformer":
            raise UsageError(f"DGL-Transformer prompts are made for {model.num_frames} frames; "
                             f"--num-frames {num_frames} cannot change that")
        model.num_frames = num_frames
    model = model.to(device).eval()
    if isinstance(weights, str) and os.path.isfile(weights):
        weights = os.path.abspath(weights)
    meta = {"model": name, "pretrained": weights, "dgl": model.config,
            "prompts": str(source) if source else None}
    return model, preprocess_cfg, meta


# -------------------------------------------------------------------- dgl-rs eval
EVAL_FIELDS = ("dataset", "data_root", "train_annotations", "eval_annotations", "eval_limit",
               "synthetic_split", "synthetic_videos", "synthetic_eval_videos",
               "synthetic_seed", "workers", "on_broken", "model", "pretrained",
               "num_frames", "eval_batch_size", "qb_norm", "dsl", "device", "precision",
               "no_progress")


def build_eval_parser(prog: str = "dgl-rs eval"):
    import argparse

    from .train.params import add_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluate tuned prompts (or the zero-shot mean-pooling "
        "baseline) on a test split: t2v and v2t R@1/5/10/50, MdR, MnR; QB-Norm and DSL "
        "reported separately.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompts.safetensors of a run, a training checkpoint, "
                     "or a run folder")
    src.add_argument("--zero-shot", action="store_true",
                     help="evaluate the frozen backbone with mean pooling of frame features")
    parser.add_argument("--out", help="write the results JSON here (default: "
                        "eval-DATASET.json beside the prompts, or in the current folder)")
    add_arguments(parser, include=EVAL_FIELDS,
                  defaults={"model": None, "pretrained": None, "num_frames": None})
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dgl-rs eval``: returns 0 and writes the results JSON."""
    from .train.distributed import init_distributed
    from .train.logger import setup_logging
    from .train.main import build_data, resolve_precision
    from .train.params import RECIPES, TrainConfig, UsageError, check_data_root

    parser = build_eval_parser()
    ns = parser.parse_args(argv)
    args = {k: v for k, v in vars(ns).items() if k in EVAL_FIELDS}
    cfg = TrainConfig(**args)
    try:
        check_data_root(cfg)
    except UsageError as exc:
        parser.error(str(exc))
    setup_logging(None)
    info = init_distributed(cfg.device)
    precision = resolve_precision(cfg.precision, info.device)
    recipe = RECIPES[cfg.dataset]
    model_name, pretrained = cfg.model, cfg.pretrained
    if ns.zero_shot:
        model_name = model_name or recipe.get("model")
        pretrained = pretrained or recipe.get("pretrained")
    model, preprocess_cfg, meta = load_dgl(
        ns.prompts, model_name=model_name, pretrained=pretrained, device=info.device,
        num_frames=cfg.num_frames or (recipe["num_frames"] if ns.zero_shot else None),
        context_length=recipe["context_length"] if ns.zero_shot else None)
    cfg.num_frames = model.num_frames
    cfg.context_length = model.config["context_length"]
    bundle = build_data(cfg, preprocess_cfg, None, info, train=False)
    results = {}
    for name, eval_set in bundle.evals.items():
        results[name] = evaluate(model, eval_set, device=info.device,
                                 batch_size=cfg.eval_batch_size, workers=cfg.workers,
                                 precision=precision, context_length=cfg.context_length,
                                 query_bank=bundle.query_bank, dsl=cfg.dsl,
                                 progress=not cfg.no_progress, name=name)
    from .metrics import format_table

    table = {f"{name} {kind}": rep for name, res in results.items()
             for kind, rep in res.items() if isinstance(rep, dict)}
    print(format_table(table))
    if ns.out:
        out = Path(ns.out)
    elif ns.prompts:
        out = Path(meta["prompts"]).with_name(f"eval-{cfg.dataset}.json")
    else:
        out = Path(f"eval-{cfg.dataset}-zero-shot.json")
    write_results(out, {"backbone": meta, "trainable": model.num_trainable(),
                        "config": {k: v for k, v in cfg.to_dict().items() if k in EVAL_FIELDS},
                        "results": results})
    print(f"results: {out}")
    return 0
