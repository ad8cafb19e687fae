"""The paper's Table 1 memory column at the paper's scale, estimated on fake tensors
(`dgl-rs estimate`, no GPU needed): every method, ViT-B/32 and ViT-B/16, B=128 videos per
GPU, T=12, fp16 autocast; peak GiB of live tensors with and without activation
checkpointing of the backbone blocks, FLOPs and time per step at 40% of an H100 SXM's
dense fp16 peak; next to the paper's GB (its own GPUs, its own code). The released code's
way of computing DGL (two-call attention, per-sample prompts) is estimated the same way.

    python benches/bench_memory.py [--models ViT-B-32-quickgelu] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from dgl_rs.methods import METHODS
from dgl_rs.train.estimate import estimate_step

#: The paper's Table 1 "Memory Usage (GB)" (MSR-VTT; "-" where it has none).
PAPER_GB = {("ViT-B-32-quickgelu", "full-finetune"): 20.80, ("ViT-B-32-quickgelu", "visual-text-adapter"): 30.71,
            ("ViT-B-32-quickgelu", "video-text-adapter"): 31.59, ("ViT-B-32-quickgelu", "vpt"): 20.98,
            ("ViT-B-32-quickgelu", "upt"): 23.46, ("ViT-B-32-quickgelu", "dgl-linear"): 18.75,
            ("ViT-B-32-quickgelu", "dgl-transformer"): 20.69, ("ViT-B-16-quickgelu", "full-finetune"): 25.70,
            ("ViT-B-16-quickgelu", "dgl-linear"): 22.86}
RELEASED = ("dgl-linear", "dgl-transformer")


def rows(model: str, batch: int, frames: int, precision: str):
    for name in (m for m in METHODS if m != "zero-shot"):
        for released in ((False, True) if name in RELEASED else (False,)):
            plain = estimate_step(name, model, batch, frames, precision, released=released)
            ckpt = estimate_step(name, model, batch, frames, precision, released=released, checkpoint_blocks=True)
            label = f"{name} (released code's way)" if released else name
            paper = PAPER_GB.get((model, name)) if not released else None
            yield label, plain, ckpt, paper
            print(f"  {model} {label}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ViT-B-32-quickgelu", "ViT-B-16-quickgelu"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--precision", default="amp_fp16")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    doc = {"settings": vars(a), "torch": torch.__version__, "machine": platform.machine(), "rows": []}
    print(f"One training step per GPU: B={a.batch}, T={a.frames}, {a.precision}; peak GiB of live tensors "
          f"(fake tensors, `dgl-rs estimate`); time at 40% of an H100 SXM's 989 TFLOP/s\n")
    print("| model | method | trainable | peak GiB | checkpointed GiB | TFLOP | checkpointed TFLOP | "
          "H100 ms | paper GB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in a.models:
        for label, plain, ckpt, paper in rows(model, a.batch, a.frames, a.precision):
            print(f"| {model.replace('-quickgelu', '')} | {label} | {plain.trainable:,} | "
                  f"{plain.peak_bytes / 2**30:.2f} | {ckpt.peak_bytes / 2**30:.2f} | {plain.flops / 1e12:.1f} | "
                  f"{ckpt.flops / 1e12:.1f} | {plain.seconds * 1e3:.0f} | {'-' if paper is None else paper} |",
                  flush=True)
            doc["rows"].append({"model": model, "method": label, "paper_gb": paper, "plain": plain.as_dict(),
                                "checkpointed": ckpt.as_dict()})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
