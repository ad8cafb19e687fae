"""Pretrain the tiny CLIP (``synthetic-tiny``) on synthetic still frames.

``dgl-rs pretrain-synthetic`` calls :func:`main`. The model (config
``dgl_rs/configs/synthetic-tiny.json``: a 4-layer ViT on 64 px frames, a 4-layer text
transformer, 64-d embeddings, nn.MultiheadAttention towers as DGL expects) is trained
contrastively on single frames of the synthetic benchmark and their static captions
(:func:`dgl_rs.data.sample_stills`: colour, shape and place of every visible object),
so that as a FROZEN backbone it gives per-frame features that know shape, colour and
position. It never sees a video or a temporal caption.

Loss: symmetric InfoNCE with a learnable temperature, where every item of the batch with
the same caption counts as a positive (the caption space is small, so duplicates are
common). AdamW, linear warm-up then cosine. Weights are written as fp16 safetensors
plus a json of metadata, both atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..backbone.loading import OPEN_CLIP_VERSION, SYNTHETIC_TINY, load_clip
from ..backbone.memory import machine_memory
from ..backbone.openclip import Backbone
from ..data import VideoTransform, sample_stills
from ..util.errors import UsageError
from ..util.files import atomic_write, atomic_write_text, check_writable
from ..nn.losses import symmetric_infonce
from ..util.progress import progress_bar
from ..services.device import resolve_device
from .optim import param_groups
from .scheduler import warmup_cosine_lr

log = logging.getLogger("dgl_rs.pretrain")
#: Bytes of one rendered still (64 x 64 RGB, uint8): what --pool-size and --eval-samples cost.
STILL_BYTES = 64 * 64 * 3


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dgl-rs pretrain-synthetic",
        description="Pretrain the tiny CLIP 'synthetic-tiny' on synthetic still frames "
                    "and write fp16 safetensors weights plus a json of metadata.")
    p.add_argument("--out", default="synthetic-tiny.safetensors",
                   help="output weights (.safetensors); metadata goes to the same name "
                        "with .json")
    p.add_argument("--steps", type=int, default=800, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=128, help="image-caption pairs per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--wd", type=float, default=0.1,
                   help="weight decay (not on biases, norms, embeddings, logit scale)")
    p.add_argument("--warmup", type=float, default=0.05,
                   help="fraction of the steps spent in linear warm-up")
    p.add_argument("--pool-size", type=int, default=16000,
                   help="training stills rendered up front and sampled from")
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="held-out stills for the zero-shot check (0 to skip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the init")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace --out and its .json if they exist")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "pool_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.eval_samples < 0:
        p.error("--eval-samples must be >= 0")
    if not 0 <= args.warmup < 1:
        p.error("--warmup must be in [0, 1)")
    if not (math.isfinite(args.lr) and args.lr > 0) or not (math.isfinite(args.wd) and args.wd >= 0):
        p.error("--lr must be finite and > 0, --wd finite and >= 0")
    _check_sizes(p, args)
    _check_out(p, args)
    return args


def _check_sizes(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A batch drawn from the pool, and stills that fit in memory (they are rendered first)."""
    if args.batch_size > args.pool_size:
        p.error(f"--batch-size {args.batch_size} is more than the --pool-size {args.pool_size} stills "
                "a step draws from")
    have = machine_memory(torch.device("cpu"))
    for flag, count in (("--pool-size", args.pool_size), ("--eval-samples", args.eval_samples)):
        if have is not None and count * STILL_BYTES > have:
            p.error(f"{flag} {count}: the stills alone need {count * STILL_BYTES / 2**30:,.1f} GiB, more than "
                    f"the {have / 2**30:,.1f} GiB of memory here")


def _check_out(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--out and its .json: new files (or replaced with --overwrite) in a folder we may write."""
    if not str(args.out).endswith(".safetensors"):
        p.error("--out must end with .safetensors")
    targets = (Path(args.out), Path(args.out).with_suffix(".json"))
    folders = [f for f in targets if f.is_dir()]
    if folders:
        p.error(f"--out: {folders[0]} is a folder, not a file")
    existing = [f for f in targets if f.exists()]
    if existing and not args.overwrite:
        p.error(f"--out: {existing[0]} exists; pass --overwrite to replace it")
    try:
        check_writable(args.out, "--out")
    except UsageError as exc:
        p.error(str(exc))


def _tokens(tokenizer, captions: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """Token ids of the unique captions and each caption's row in them."""
    unique, inverse = np.unique(np.array(captions, dtype=object), return_inverse=True)
    return tokenizer([str(c) for c in unique]), inverse.astype(np.int64)


@torch.no_grad()
def _embed(model, pixels: torch.Tensor, tokens: torch.Tensor, device, batch: int = 512):
    model = Backbone(model)
    img = torch.cat([F.normalize(model.encode_image(pixels[i:i + batch].to(device)), dim=-1)
                     for i in range(0, len(pixels), batch)])
    txt = torch.cat([F.normalize(model.encode_text(tokens[i:i + batch].to(device)), dim=-1)
                     for i in range(0, len(tokens), batch)])
    return img, txt


@torch.no_grad()
def zero_shot(model, transform, tokenizer, num: int, seed: int, device) -> dict[str, float]:
    """Retrieval on held-out stills (a different seed than training).

    ``i2t_R@1``: each still ranks the K distinct captions of the set (chance 1/K);
    ``t2i_R@1``: each distinct caption ranks the stills, a hit when the top still has
    that caption (chance: the mean share of stills per caption)."""
    was = model.training
    model.eval()
    frames, captions = sample_stills(num, seed=seed)
    tokens, label = _tokens(tokenizer, captions)
    img, txt = _embed(model, transform(frames), tokens, device)
    sim = (img @ txt.t()).cpu()  # (stills, captions)
    label_t = torch.from_numpy(label)
    i2t = (sim.argmax(dim=1) == label_t).float().mean().item()
    t2i = (label_t[sim.argmax(dim=0)] == torch.arange(len(tokens))).float().mean().item()
    counts = np.bincount(label, minlength=len(tokens))
    model.train(was)
    return {"i2t_R@1": 100 * i2t, "i2t_chance": 100 / len(tokens),
            "t2i_R@1": 100 * t2i, "t2i_chance": 100 * float(np.mean(counts / num)),
            "num_stills": num, "num_captions": int(len(tokens))}


def _no_decay(name: str, p) -> bool:
    """CLIP pretraining's rule: no decay on 1-D params, embeddings, norms and the scale."""
    return p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name


def save_weights(model, out: Path, meta: dict) -> None:
    """fp16 safetensors + json metadata, each written atomically."""
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else
                 v.detach().cpu()).contiguous() for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "model": meta["model"]}))
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")


def train_tiny(model, transform, tokens, label, frames, args, device) -> float:
    """``args.steps`` contrastive steps on the stills; returns the final loss (EMA)."""
    clip = Backbone(model)
    opt = torch.optim.AdamW(param_groups(model.named_parameters(), args.wd, _no_decay), lr=args.lr,
                            betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, int(args.warmup * args.steps))
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(frames), generator=gen)
    pos, ema = 0, None
    bar = progress_bar(range(args.steps), desc="pretrain synthetic-tiny", enabled=not args.no_progress,
                       dynamic_ncols=True)
    for step in bar:
        if pos + args.batch_size > len(order):
            order, pos = torch.randperm(len(frames), generator=gen), 0
        idx = order[pos:pos + args.batch_size]
        pos += args.batch_size
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(args.lr, step, warm, args.steps)
        lab = label[idx]
        img = F.normalize(clip.encode_image(transform(frames[idx]).to(device)), dim=-1)
        txt = F.normalize(clip.encode_text(tokens[lab].to(device)), dim=-1)
        loss = symmetric_infonce(clip.logit_scale.exp() * img @ txt.t(), lab.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", scale=f"{clip.logit_scale.exp().item():.1f}")
    return ema


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``dgl-rs pretrain-synthetic`` (flags: ``--help``). Returns 0."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()
    model, pp, tokenizer = load_clip(SYNTHETIC_TINY, None, device=device)
    model.train()
    transform = VideoTransform.from_preprocess_cfg(pp)

    frames, captions = sample_stills(args.pool_size, seed=args.seed)
    tokens, label = _tokens(tokenizer, captions)
    label = torch.from_numpy(label)
    log.info("pool: %d stills, %d distinct captions (%.1fs)", len(frames), len(tokens),
             time.time() - t0)
    ema = train_tiny(model, transform, tokens, label, frames, args, device)
    train_time = time.time() - t0

    result = {}
    if args.eval_samples:
        result = zero_shot(model, transform, tokenizer, args.eval_samples, args.seed + 1000,
                           device)
        print(f"zero-shot on {result['num_stills']} held-out stills "
              f"({result['num_captions']} distinct captions): "
              f"image->caption R@1 {result['i2t_R@1']:.1f}% (chance {result['i2t_chance']:.2f}%), "
              f"caption->image R@1 {result['t2i_R@1']:.1f}% (chance {result['t2i_chance']:.2f}%)")
    meta = {"model": SYNTHETIC_TINY, "config": f"configs/{SYNTHETIC_TINY}.json",
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "wd": args.wd,
            "pool_size": args.pool_size, "seed": args.seed, "final_loss": ema,
            "logit_scale": float(Backbone(model).logit_scale.exp().item()),
            "train_seconds": round(train_time, 1), "device": str(device),
            "threads": args.threads, "dtype": "float16", "zero_shot": result,
            "torch": torch.__version__, "open_clip": OPEN_CLIP_VERSION}
    out = Path(args.out)
    save_weights(model, out, meta)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out.with_suffix('.json')}: "
          f"{args.steps} steps in {train_time:.0f}s, final loss {ema:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
