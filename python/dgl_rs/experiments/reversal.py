"""The reversal metric: does a temporal caption score its own video above that video's
exact time reversal? A model blind to frame order sits at 50%."""

from __future__ import annotations

import numpy as np
import torch

from ..services.evaluate import EVAL_TIE_RTOL, encode_texts, encode_videos


@torch.no_grad()
def reversal_accuracy(model, eval_set, device) -> dict[str, float]:
    """Percentage of temporal test captions that score their own video above its exact
    time reversal (both directions of every (video, reversal) pair in the split), over
    all of them (``"all"``) and per kind of caption (motion, order of events, colour
    change). A model blind to frame order sits at 50%: for mean pooling the reversal's
    frames are the same frames, so the two scores tie up to float rounding, and a tie
    (a difference within :data:`~dgl_rs.services.evaluate.EVAL_TIE_RTOL` of the largest
    ``|score|`` of the caption's row, the rule the ranks use) counts as half a hit."""
    specs = list(eval_set.specs)
    pos = {spec: i for i, spec in enumerate(specs)}
    partner = {i: pos[s.reversed()] for i, s in enumerate(specs) if s.reversed() in pos}
    if not partner:
        return {"all": float("nan")}
    video = encode_videos(model, eval_set.make_loader(batch_size=32), device=device, progress=False)
    text = encode_texts(model, list(eval_set.captions), device=device, progress=False,
                        context_length=model.config["context_length"])
    sim = (text @ video.t()).numpy()
    own = [(c, i) for c, i in enumerate(eval_set.caption_to_video) if i in partner]
    diff = np.array([sim[c, i] - sim[c, partner[i]] for c, i in own])
    tol = EVAL_TIE_RTOL * np.abs(sim[[c for c, _ in own]]).max(axis=1)
    score = 100.0 * np.where(np.abs(diff) <= tol, 0.5, (diff > 0).astype(np.float64))
    kinds = np.array([specs[i].kind for _, i in own])
    return {"all": float(score.mean()), **{k: float(score[kinds == k].mean()) for k in sorted(set(kinds))}}
