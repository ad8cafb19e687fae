"""Saved files from dgl-rs before the issue-17 layout (HEAD dc26b58), and the embeddings
they gave then. Run once at that commit: ``python tests/data/legacy/make_fixtures.py``.
tests/test_legacy_files.py checks that today's code loads every file and gives the
same embeddings."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

import dgl_rs
from dgl_rs.backbones import load_clip
from dgl_rs import checkpoints as ckpt

HERE = Path(__file__).resolve().parent
T = 4
# Small options where a method has them, so the files stay small (and non-default
# options round-trip too); every method of the registry but the full fine-tunings
# (their files hold the whole CLIP: 13 MB each).
OPTIONS = {"efficient-prompt": dict(temporal_layers=1), "visual-text-adapter": dict(adapter_dim=8),
           "video-text-adapter": dict(adapter_dim=8), "vop-c": dict(context_dim=8), "vop-fc": dict(context_dim=8),
           "dgl-linear": dict(temporal_embedding=True), "dgl": dict(generator="linear", num_global=2,
           num_frame_prompts=2, num_text_prompts=(2, 2), pool="global_mean", attention="local")}


def main():
    torch.manual_seed(0)
    clip, cfg, _ = load_clip("synthetic-tiny", "synthetic-tiny")
    frames = torch.randn(2, T, 3, 64, 64)
    tokens = dgl_rs.tokenize(["a red ball moves left", "a blue cube"], context_length=32)
    expected = {}
    for name in dgl_rs.METHODS:
        if name.startswith("full-finetune"):
            continue
        torch.manual_seed(1)
        model = dgl_rs.build_method(clip, name, num_frames=T, **OPTIONS.get(name, {}))
        with torch.no_grad():
            for _, p in model.named_own_parameters():  # away from the init (zero-init adapters)
                p.add_(0.05 * torch.randn_like(p))
            model.eval()
            expected[f"{name}/video"] = model.encode_video(frames).numpy()
            expected[f"{name}/text"] = model.encode_text(tokens).numpy()
        model.save_prompts(str(HERE / f"{name}.safetensors"))
        if name in ("dgl-linear", "vop-f"):
            state = {"epoch": 1, "step_in_epoch": 0, "global_step": 2, "steps_per_epoch": 2, "world_size": 1,
                     "optimizer": {}, "scheduler": {}, "scaler": None, "rng": [ckpt.capture_rng_state()],
                     "config": {"model": "synthetic-tiny", "pretrained": "synthetic-tiny", "method": name},
                     "model_config": model.config, "method": model.method}
            ckpt.save_checkpoint(HERE / f"{name}.ckpt.safetensors", model.prompt_state_dict(), state)
        model.unpatch()
    np.savez_compressed(HERE / "embeddings.npz", frames=frames.numpy(), tokens=tokens.numpy(), **expected)
    print(json.dumps(sorted(expected)), file=sys.stderr)


if __name__ == "__main__":
    main()
