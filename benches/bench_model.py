"""One DGL training step vs the released code's way, as ratios in one run, and against the
floor its matrix FLOPs set at this machine's fp32 matmul throughput (measured in the same
run: "fused at floor" = floor time / step time).

A training step = forward + backward of both towers of a patched ViT-B-32-quickgelu
(random weights: no download), prompts trainable, backbone frozen, symmetric InfoNCE,
B videos x T frames. "naive" is the same model built the way the released code
computes it (:func:`dgl_rs.methods.released.released_way`): the visual attention as two
calls of the block's nn.MultiheadAttention (local with G repeated per frame, global over
everything) and the prompts generated once PER SAMPLE (B generator passes whose results
all stay in the graph).

Each configuration runs in its own process; the peak memory is the peak RSS during
the steps minus the RSS before them (CPU), or torch.cuda.max_memory_allocated (CUDA).
Step times of a configuration and its naive twin are interleaved rep by rep.

    python benches/bench_model.py [--device cuda --batch 128 --amp bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch



def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(generator, naive, device, batch):
    import open_clip

    import dgl_rs
    from dgl_rs.methods.released import released_way

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).to(device)
    model = dgl_rs.DGL(clip, num_frames=12, generator=generator)
    return released_way(model, batch) if naive else model


def matmul_gflops(device, n=2048, reps=5) -> float:
    """The machine's fp32 matmul throughput: the best of ``reps`` (n x n) @ (n x n)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def step_flops(model, step) -> int:
    """FLOPs of one step, dgl-rs's custom ops and the CPU flash kernels included."""
    from dgl_rs.ops.flops import flop_counter

    with flop_counter() as counter:
        step(model)
    return counter.get_total_flops()


def one_config(args):
    import dgl_rs

    device = torch.device(args.device)
    model = build(args.generator, False, device, args.batch)
    naive = build(args.generator, True, device, args.batch)
    frames = torch.randn(args.batch, 12, 3, 224, 224, device=device)
    tokens = dgl_rs.tokenize(["a person is cooking in a kitchen"] * args.batch, context_length=32).to(device)
    amp = getattr(torch, args.amp) if args.amp else None

    def step(m):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = dgl_rs.symmetric_infonce(m(frames, tokens))
        loss.backward()
        for p in m.trainable_parameters():
            p.grad = None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    result = {}
    for name, m in (("naive", naive), ("fused", model)):  # peak memory, each alone
        step(m)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(m)
            sync()
            result[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    times = {"naive": [], "fused": []}
    for _ in range(args.reps):
        for name, m in (("naive", naive), ("fused", model)):
            sync()
            t0 = time.perf_counter()
            step(m)
            sync()
            times[name].append(time.perf_counter() - t0)
    for name in times:
        result[f"{name}_s"] = statistics.median(times[name])
    result["trainable"] = model.num_trainable()
    result["gflop"] = step_flops(model, step) / 1e9
    result["matmul_gflops"] = matmul_gflops(device)
    result["floor_s"] = result["gflop"] / result["matmul_gflops"]
    return result


def peak_rss_config(args, naive):
    """Peak RSS growth of steps of ONE model (fresh process state for a clean peak)."""
    import dgl_rs

    m = build(args.generator, naive, torch.device("cpu"), args.batch)
    frames = torch.randn(args.batch, 12, 3, 224, 224)
    tokens = dgl_rs.tokenize(["a person is cooking in a kitchen"] * args.batch, context_length=32)
    before = rss_mb()
    for _ in range(2):
        dgl_rs.symmetric_infonce(m(frames, tokens)).backward()
        for p in m.trainable_parameters():
            p.grad = None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--amp", default=None, choices=[None, "bfloat16", "float16"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--generator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--peak-of", default=None, choices=["naive", "fused"], help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.generator and a.peak_of:
        print(json.dumps({"peak_mb": peak_rss_config(a, a.peak_of == "naive")}))
        return 0
    if a.generator:
        print(json.dumps(one_config(a)))
        return 0
    rows = []
    for gen in ("linear", "transformer"):
        base = [sys.executable, __file__, "--device", a.device, "--batch", str(a.batch), "--reps", str(a.reps),
                "--generator", gen] + (["--amp", a.amp] if a.amp else [])
        r = json.loads(subprocess.run(base, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        if a.device == "cpu":
            for which in ("naive", "fused"):
                out = subprocess.run(base + ["--peak-of", which], check=True, capture_output=True, text=True)
                r[f"{which}_peak_mb"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        r["generator"] = gen
        rows.append(r)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if a.device != "cpu":
        machine += f", {torch.cuda.get_device_name()}"
    print(f"\nViT-B-32 training step, B={a.batch}, T=12, {a.device}{', ' + a.amp if a.amp else ''}; {machine}\n")
    print("| generator | trainable | naive step | fused step | speed-up | step GFLOP | matmul GFLOP/s | "
          "floor | fused at floor | naive peak | fused peak | memory saving |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| DGL-{r['generator'].capitalize()} | {r['trainable']:,} | {r['naive_s']:.2f} s | {r['fused_s']:.2f} s | "
              f"{r['naive_s'] / r['fused_s']:.2f}x | {r['gflop']:.0f} | {r['matmul_gflops']:.0f} | "
              f"{r['floor_s']:.2f} s | {100 * r['floor_s'] / r['fused_s']:.0f}% | {r['naive_peak_mb']:.0f} MiB | "
              f"{r['fused_peak_mb']:.0f} MiB | {100 * (1 - r['fused_peak_mb'] / r['naive_peak_mb']):.0f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("DGL_BENCH_THREADS", os.cpu_count() or 1)))
    sys.exit(main())
