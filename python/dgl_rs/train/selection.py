"""Choosing the best epoch on a validation split, never on the test split.

With ``--val-split``, the model is evaluated on the validation set(s) only (the
``DataBundle.vals``; raw scores, no QB-Norm or DSL) after every epoch. The selection
metric is the raw text->video R@1 on the validation set, averaged over the validation
sets when there are several (the synthetic benchmark has one per split). A strictly
higher score makes a new best; a tie keeps the earlier epoch (fewer steps, same score).

The run folder gets ``best/``: ``prompts.safetensors`` + ``model.json`` of the best epoch
(so ``dgl-rs eval --prompts RUN/best`` evaluates it) and ``selection.json``, the record:
the metric, every validated epoch with its score and validation results, the best one.
After training, the test split is evaluated for the final model (``results.json``
``results``, as without validation) and for the best one (``best.results``): the test
split is read only after the choice is made and never feeds back into it.

Resume: ``selection.json`` is the state. Epochs validated after the checkpoint being
resumed are forgotten (they are trained again); when a resumed epoch boundary was not
validated yet (the run stopped before it could), it is validated first.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from safetensors.torch import load_file

from ..factory import runs
from ..util.files import atomic_write_text, read_json, remove_stale_temps

log = logging.getLogger("dgl_rs.train")

METRIC = "validation t2v R@1 (raw scores; mean over the validation sets)"


def selection_score(val_results: dict[str, Any]) -> float:
    """The selection metric of one validation: mean over sets of the raw t2v R@1."""
    return float(np.mean([res["raw"]["t2v"]["R@1"] for res in val_results.values()]))


class Selector:
    """Tracks the best validated epoch of a run (master rank; ``enabled=False``: inert)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.dir = Path(run_dir) / runs.BEST
        self.history: list[dict[str, Any]] = []
        self.best: Optional[dict[str, Any]] = None
        if enabled and self.dir.is_dir():
            remove_stale_temps(self.dir)

    @property
    def prompts_path(self) -> Path:
        return self.dir / runs.PROMPTS

    def _write(self) -> None:
        record = {"metric": METRIC, "best": self.best, "epochs": self.history}
        atomic_write_text(self.dir / runs.SELECTION, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def record(self, epoch: int, global_step: int, val_results: dict[str, Any],
               save_prompts: Callable[[Path], None]) -> bool:
        """Record the validation after ``epoch`` epochs (1-based); when it is the best so
        far, ``save_prompts(best/prompts.safetensors)``. Returns whether it was."""
        if not self.enabled:
            return False
        score = selection_score(val_results)
        entry = {"epoch": epoch, "global_step": global_step, "score": score, "val": val_results}
        self.history = [h for h in self.history if h["global_step"] != global_step] + [entry]
        better = math.isfinite(score) and (self.best is None or score > self.best["score"])
        self.dir.mkdir(parents=True, exist_ok=True)
        if better:
            save_prompts(self.prompts_path)  # before the record that points at it
            self.best = {k: entry[k] for k in ("epoch", "global_step", "score")}
        self._write()
        best = self.best or {"score": math.nan, "epoch": 0}
        log.info("validation after epoch %d: %s %.2f (best %.2f, epoch %d)", epoch, "t2v R@1", score,
                 best["score"], best["epoch"])
        return better

    def validated(self, global_step: int) -> bool:
        return any(h["global_step"] == global_step for h in self.history)

    def resume(self, global_step: int) -> None:
        """Continue the record of a run resumed at ``global_step``."""
        path = self.dir / runs.SELECTION
        if not self.enabled or not path.is_file():
            return
        record = read_json(path)
        self.history = [h for h in record.get("epochs", []) if h["global_step"] <= global_step]
        best = record.get("best")
        if best is not None and best["global_step"] > global_step:
            log.warning("the best epoch so far (%d) comes after the checkpoint resumed from; its "
                        "prompts are dropped and the selection restarts here", best["epoch"])
            for name in (runs.PROMPTS, runs.MODEL_JSON):
                (self.dir / name).unlink(missing_ok=True)
            best = None
        self.best = best
        self._write()

    def report(self, model, final_results: dict, final_step: int,
               evaluate_test: Callable[[], dict]) -> dict[str, Any]:
        """``{"validation": record, "best": {epoch, global_step, score, metric, prompts,
        results}}`` with the test results of the best epoch's prompts (the final ones when
        the last epoch is the best); ``{}`` without a validation."""
        if not self.enabled or self.best is None:
            return {}
        best = dict(self.best, metric=METRIC, prompts=str(Path(runs.BEST) / self.prompts_path.name))
        if self.best["global_step"] == final_step and final_results:
            best["results"] = final_results
        else:
            final = model.prompt_state_dict()
            model.load_prompt_state_dict(load_file(str(self.prompts_path)))
            try:
                best["results"] = evaluate_test()
            finally:
                model.load_prompt_state_dict(final)
        log.info("best epoch %d by %s = %.2f; its test results are results.json's best.results",
                 best["epoch"], METRIC, best["score"])
        return {"validation": {"metric": METRIC, "epochs": self.history}, "best": best}
