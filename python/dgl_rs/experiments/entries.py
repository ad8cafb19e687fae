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
#: The synthetic test splits, and the retrieval numbers the table shows for each direction.
SPLITS = ("static", "temporal")
KEYS = ("R@1", "R@5", "R@10", "MnR")
