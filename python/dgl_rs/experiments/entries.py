"""The methods the synthetic benchmark compares, with the learning rate of each."""

from __future__ import annotations

from typing import Optional

#: name -> (method, extra `dgl-rs train` flags, learning rate; None: not trained). Each lr
#: was chosen on validation videos by `dgl-rs benchmark --methods all --seeds 0 1 2
#: --lr-factors 1 0.2` (384 videos, 6 epochs) from the per-kind prior in the comment
#: (the same two candidates for every method: prior and prior / 5).
ENTRIES: dict[str, tuple[str, tuple, Optional[float]]] = {
    "zero-shot": ("zero-shot", (), None),
    "full-finetune": ("full-finetune", ("--backbone-lr-scale", "1"), 2e-6),  # prior 1e-5
    # the new temporal transformer at lr, the backbone at lr / 100 (CLIP4Clip's split of lrs)
    "full-finetune-seqtransf": ("full-finetune-seqtransf", ("--backbone-lr-scale", "0.01"), 1e-3),  # prior 1e-3
    "visual-text-adapter": ("visual-text-adapter", (), 1e-3),  # prior 1e-3
    "video-text-adapter": ("video-text-adapter", (), 1e-3),  # prior 1e-3
    "efficient-prompt": ("efficient-prompt", (), 1e-3),  # prior 1e-3
    "vpt": ("vpt", (), 2e-3),  # prior 1e-2
    "upt": ("upt", (), 1e-3),  # prior 5e-3
    "vop": ("vop", (), 2e-3),  # prior 1e-2
    "vop-f": ("vop-f", (), 1e-2),  # prior 1e-2
    "vop-c": ("vop-c", (), 1e-2),  # prior 1e-2
    "vop-p": ("vop-p", (), 2e-3),  # prior 1e-2
    "vop-fc": ("vop-fc", (), 1e-2),  # prior 1e-2
    "vop-fp": ("vop-fp", (), 1e-2),  # prior 1e-2
    "dgl-divided": ("dgl-divided", (), 1e-2),  # prior 1e-2
    "dgl-linear": ("dgl-linear", (), 1e-2),  # prior 1e-2
    "dgl-linear+temporal": ("dgl-linear", ("--temporal-embedding",), 1e-2),  # prior 1e-2
    "dgl-transformer": ("dgl-transformer", (), 1e-3),  # prior 5e-3
    "dgl-linear+cls": ("dgl-linear", ("--global-init", "cls"), 1e-2),  # prior 1e-2
    "dgl-transformer+cls": ("dgl-transformer", ("--global-init", "cls"), 1e-3),  # prior 5e-3
}
#: What `make demo` runs: zero-shot meanP and a representative set.
#: video-text-adapter: the best of all methods on the temporal split (see the README).
DEMO = ("zero-shot", "vpt", "vop", "upt", "video-text-adapter", "dgl-linear", "dgl-linear+temporal",
        "dgl-transformer")
#: The paper's Table 3 ablations with the switches dgl-rs has: DGL-Transformer (the paper's
#: ablation model) with one switch changed, DGL-Linear for 3e (as in the paper); each at its
#: base method's lr (chosen on validation videos in the pretraining world; no search of its own
#: unless `--lr-factors` asks for one). Name -> (method, flags, lr), as ENTRIES.
ABLATIONS: dict[str, tuple[str, tuple, Optional[float]]] = {
    "dgl-transformer+pool-global_mean": ("dgl-transformer", ("--pool", "global_mean"), 1e-3),
    "dgl-transformer+pool-frame_cls_mean": ("dgl-transformer", ("--pool", "frame_cls_mean"), 1e-3),
    "dgl-transformer+pool-global_local_mean": ("dgl-transformer", ("--pool", "global_local_mean"), 1e-3),
    "dgl-transformer+attention-local": ("dgl-transformer", ("--attention", "local"), 1e-3),
    "dgl-transformer+attention-global": ("dgl-transformer", ("--attention", "global"), 1e-3),
    "dgl-transformer+text-8+0": ("dgl-transformer", ("--num-text-prompts", "8", "0"), 1e-3),
    "dgl-transformer+text-4+0": ("dgl-transformer", ("--num-text-prompts", "4", "0"), 1e-3),
    "dgl-linear+text_to_visual": ("dgl-linear", ("--linear-direction", "text_to_visual"), 1e-2),
}
#: Every name `dgl-rs benchmark --methods` takes ('all' is ENTRIES only).
RUNNABLE = {**ENTRIES, **ABLATIONS}
#: Table 3 of the paper (MSR-VTT 9k, ViT-B/32; t2v / v2t R@1 from the paper's text), row by row:
#: (sub-table, the paper's row, the dgl-rs entry or None where dgl-rs has no such switch,
#: paper t2v R@1, paper v2t R@1; None where the paper's text does not give the number).
TABLE3 = (
    ("3a output", "First Global Prompt", "dgl-transformer", 45.8, 43.5),
    ("3a output", "Avg Global Features", "dgl-transformer+pool-global_mean", 43.5, 43.1),
    ("3a output", "Avg Local Features", "dgl-transformer+pool-frame_cls_mean", 41.5, 41.9),
    ("3a output", "Avg GL Features", "dgl-transformer+pool-global_local_mean", 42.5, 44.3),
    ("3b attention", "global", "dgl-transformer+attention-global", None, None),
    ("3b attention", "local", "dgl-transformer+attention-local", None, None),
    ("3b attention", "global + local, not shared", None, None, None),
    ("3b attention", "global + local, shared", "dgl-transformer", 45.8, 43.5),
    ("3c text prompts", "4+X", "dgl-transformer+text-4+0", 43.9, 42.4),
    ("3c text prompts", "8+X", "dgl-transformer+text-8+0", 45.0, 43.0),
    ("3c text prompts", "4+X+4", "dgl-transformer", 45.8, 43.5),
    ("3e direction (DGL-Linear)", "T->V", "dgl-linear+text_to_visual", 43.4, 43.0),
    ("3e direction (DGL-Linear)", "V->T", "dgl-linear", 44.7, 42.1),
    ("3f prompts", "Baseline (divided)", "dgl-divided", 43.8, 43.9),
    ("3f prompts", "DGL-Transformer (shared)", "dgl-transformer", 45.8, 43.5),
)
#: The entries `dgl-rs benchmark --table 3` trains, in order.
TABLE3_METHODS = tuple(dict.fromkeys(row[2] for row in TABLE3 if row[2]))
#: The synthetic test splits, and the retrieval numbers the table shows for each direction.
SPLITS = ("static", "temporal")
KEYS = ("R@1", "R@5", "R@10", "MnR")
