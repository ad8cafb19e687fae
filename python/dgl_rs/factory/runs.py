"""The run folder: the one place that knows where ``dgl-rs train`` puts what, and how a
saved model is found again (``--prompts`` a file, a checkpoint or a run folder; ``--resume``).

``OUTPUT_DIR/NAME/``::

    params.txt, config.json   every flag of the run
    out.log, metrics.jsonl    the log; one JSON line per logged step / evaluation
    tensorboard/              TensorBoard events
    loss.png, recall.png      the curves
    checkpoints/step_*.safetensors
    prompts.safetensors       the trained method (``save_prompts``) ...
    model.json                ... and the backbone it sits on (beside any prompt file)
    best/                     prompts.safetensors + model.json + selection.json (--val-split)
    results.json              the last evaluation
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from ..util.errors import UsageError
from ..util.files import atomic_write_text, check_readable, is_temp, read_json
from . import checkpoints as ckpt

PathLike = Union[str, "os.PathLike[str]"]
PROMPTS, MODEL_JSON, RESULTS = "prompts.safetensors", "model.json", "results.json"
CONFIG, PARAMS, LOG, METRICS = "config.json", "params.txt", "out.log", "metrics.jsonl"
CHECKPOINTS, BEST, SELECTION, TENSORBOARD = "checkpoints", "best", "selection.json", "tensorboard"


def export_prompts(model, path: Path, model_name: str, pretrained: Optional[str], **extra) -> None:
    """``path`` (``model.save_prompts``) plus :data:`MODEL_JSON` beside it: the backbone
    (model name, weights) and method config needed to rebuild the model."""
    model.save_prompts(str(path))
    if pretrained and os.path.isfile(pretrained):
        pretrained = os.path.abspath(pretrained)
    meta = {"model": model_name, "pretrained": pretrained, "method": model.method, "dgl": model.config,
            "prompts": Path(path).name, **extra}
    atomic_write_text(Path(path).with_name(MODEL_JSON), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def model_json(prompts: Path) -> dict:
    """What the :data:`MODEL_JSON` beside a prompt file records (``{}`` when there is none)."""
    side = Path(prompts).with_name(MODEL_JSON)
    return read_json(side) if side.is_file() else {}


def resolve_prompts_path(path: PathLike) -> Path:
    """A prompts file, a training checkpoint, or a run folder (its :data:`PROMPTS`, else
    its newest checkpoint)."""
    p = Path(path)
    if p.is_dir():
        if (p / PROMPTS).is_file():
            return p / PROMPTS
        found = ckpt.list_checkpoints(p / CHECKPOINTS) or ckpt.list_checkpoints(p)
        if not found:
            raise FileNotFoundError(f"--prompts {p}: no {PROMPTS} or checkpoint in it")
        return found[-1]
    return check_readable(p, "--prompts")


def resolve_resume(resume: str, checkpoint_dir: PathLike) -> Optional[Path]:
    """``--resume`` value -> checkpoint file. ``latest`` means the newest checkpoint in
    ``checkpoint_dir`` (None when there is none yet, so a fresh run starts); a directory
    means its newest checkpoint (or that of its :data:`CHECKPOINTS` folder)."""
    if resume == "latest":
        found = ckpt.list_checkpoints(checkpoint_dir)
        return ckpt.newest_intact(found) if found else None
    path = Path(resume)
    if path.is_dir():
        found = ckpt.list_checkpoints(path) or ckpt.list_checkpoints(path / CHECKPOINTS)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint in {path}")
        return ckpt.newest_intact(found)
    check_readable(path, "--resume")
    if not ckpt.is_checkpoint(path):  # before the run folder is opened
        raise UsageError(f"--resume {path}: not a dgl-rs training checkpoint (checkpoints/step_*.safetensors "
                         "of a run)")
    return path


def check_run_dir(run_dir: Path, continuing: bool) -> Optional[str]:
    """Why ``run_dir`` cannot take this run (None when it can): it must be new or empty,
    or be the dgl-rs run being continued; a run never writes over files it did not make."""
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        return f"--output-dir/--name: {run_dir} exists and is not a folder"
    is_run = (run_dir / CONFIG).is_file() or bool(ckpt.list_checkpoints(run_dir / CHECKPOINTS))
    if all(is_temp(p) for p in run_dir.iterdir()) or (continuing and is_run):
        return None
    hint = "" if continuing else ", or continue that run with --resume latest"
    return (f"run folder {run_dir} already exists and is not "
            f"{'a dgl-rs run' if continuing else 'empty'}: pick another --name or --output-dir{hint}")
