"""``dgl-rs eval``: evaluate a saved method (or the zero-shot baseline) on a test split."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from ..backbone.memory import check_memory
from ..util.errors import UsageError
from ..factory.build import load_model
from ..factory.official import PREFIX
from ..factory.runs import resolve_prompts_path
from ..util.files import check_writable, read_json
from ..ops.metrics import format_table
from ..services.config import RECIPES, EvalConfig, add_arguments, check_bounds, check_data_root
from ..services.data import build_data
from ..services.device import resolve_device, resolve_precision
from ..services.evaluate import evaluate_sets, write_results
from ..util.log import setup_logging

EVAL_FIELDS = ("dataset", "data_root", "train_annotations", "eval_annotations", "eval_limit",
               "synthetic_split", "synthetic_videos", "synthetic_eval_videos",
               "synthetic_seed", "synthetic_world", "frame_cache", "workers", "on_broken", "model", "pretrained",
               "num_frames", "eval_batch_size", "qb_norm", "dsl", "device", "precision",
               "no_progress")
#: What makes two evaluations the same one: the data they rank and the model.
SAME_DATA = ("dataset", "data_root", "eval_annotations", "eval_limit", "synthetic_split",
             "synthetic_eval_videos", "synthetic_seed", "synthetic_world", "num_frames", "frame_cache")
SAME_MODEL = ("model", "pretrained", "prompts")


def build_eval_parser(prog: str = "dgl-rs eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluate a trained method (or the zero-shot mean-pooling "
        "baseline) on a test split: t2v and v2t R@1/5/10/50, MdR, MnR; QB-Norm and DSL "
        "reported separately.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompts.safetensors of a run (any method), a training "
                     "checkpoint, a run folder, or official:PATH (a checkpoint released with the DGL paper)")
    src.add_argument("--zero-shot", action="store_true",
                     help="evaluate the frozen backbone with mean pooling of frame features")
    parser.add_argument("--out", help="write the results JSON here (default: eval-DATASET.json, "
                        "eval-DATASET-ANNOTATIONS.json with --eval-annotations, beside the prompts or "
                        "in the current folder). Results of another evaluation are never replaced "
                        "without --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even when it holds "
                        "the results of another evaluation (never a file that is not a result)")
    add_arguments(parser, EvalConfig, include=EVAL_FIELDS,
                  defaults={"model": None, "pretrained": None, "num_frames": None})
    return parser


def _load(ns: argparse.Namespace, cfg: EvalConfig, device):
    recipe = RECIPES[cfg.dataset]
    model_name, pretrained = cfg.model, cfg.pretrained
    if ns.zero_shot:
        model_name = model_name or recipe.get("model")
        pretrained = pretrained or recipe.get("pretrained")
    return load_model(
        ns.prompts, model_name=model_name, pretrained=pretrained, device=device,
        num_frames=cfg.num_frames or (recipe["num_frames"] if ns.zero_shot else None),
        context_length=recipe["context_length"] if ns.zero_shot else None)


def _out_path(ns: argparse.Namespace, cfg: EvalConfig) -> Path:
    """--out, else a name from the dataset beside the prompts (known before they load)."""
    if ns.out:
        return Path(ns.out)
    stem = f"eval-{cfg.dataset}" + (f"-{Path(cfg.eval_annotations).stem}" if cfg.eval_annotations else "")
    if ns.prompts and ns.prompts.startswith(PREFIX):
        return Path(os.path.abspath(ns.prompts[len(PREFIX):])).with_name(f"{stem}.json")
    if ns.prompts:
        return resolve_prompts_path(ns.prompts).with_name(f"{stem}.json")
    return Path(f"{stem}-zero-shot.json")


def _identity(config: dict, backbone: dict) -> dict:
    return {**{k: config.get(k) for k in SAME_DATA}, **{k: backbone.get(k) for k in SAME_MODEL}}


def check_results_target(out: Path, config: dict, backbone: dict, overwrite: bool) -> None:
    """``out`` may take these results: it is new, or the results of the same evaluation,
    or (with ``overwrite``) of another one; never a file that is not a results file."""
    if not out.exists():
        return
    try:
        old = read_json(out) if out.is_file() else None
    except (UsageError, OSError):
        old = None
    if not (isinstance(old, dict) and isinstance(old.get("config"), dict)
            and isinstance(old.get("backbone"), dict) and "results" in old):
        raise UsageError(f"--out {out}: exists and is not a dgl-rs results file; pick another --out")
    was, now = _identity(old["config"], old["backbone"]), _identity(config, backbone)
    if was != now and not overwrite:
        diff = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in now if was[k] != now[k])
        raise UsageError(f"{out} holds the results of another evaluation ({diff}): pass --out FILE "
                         "to keep both, or --overwrite to replace them")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dgl-rs eval``: returns 0 and writes the results JSON."""
    parser = build_eval_parser()
    ns = parser.parse_args(argv)
    cfg = EvalConfig(**{k: v for k, v in vars(ns).items() if k in EVAL_FIELDS})
    try:
        check_bounds(cfg, EVAL_FIELDS)
        check_data_root(cfg)
    except UsageError as exc:
        parser.error(str(exc))
    setup_logging(None)
    out = check_writable(_out_path(ns, cfg), "--out")  # before any model loads
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    model, preprocess_cfg, meta = _load(ns, cfg, device)
    check_memory(model.backbone, model.config, cfg.eval_batch_size, "--eval-batch-size")
    cfg.num_frames = model.num_frames
    cfg.context_length = model.config["context_length"]
    config = {k: v for k, v in cfg.to_dict().items() if k in EVAL_FIELDS}
    check_results_target(out, config, meta, ns.overwrite)  # before the long part
    bundle = build_data(cfg, preprocess_cfg, train=False)
    results = evaluate_sets(model, bundle.evals, cfg, device, precision, bundle=bundle)
    print(format_table({f"{name} {kind}": rep for name, res in results.items()
                        for kind, rep in res.items() if isinstance(rep, dict)}))
    write_results(out, {"backbone": meta, "method": model.method, "trainable": model.num_trainable(),
                        "config": config, "results": results})
    print(f"results: {out}")
    return 0
