"""Fused global-local attention vs the naive two-call way (the released code's).

Forward + backward w.r.t. x with frozen weights, at the ViT-B/32 shape
(D=768, 12 heads, G=4, T=12, L=54). Reports the median time and the memory
held for backward (bytes of the distinct tensors autograd saves, from
``torch.autograd.graph.saved_tensors_hooks``, the frozen weights excluded since
both keep them), as ratios measured in the same run.

    python benches/bench_attention.py [--device cuda] [--batch 8] [--dtype float32] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import dgl_rs
from dgl_rs.ops.reference import naive_global_local_attention


def saved_bytes(fn, exclude):
    """Bytes of the distinct storages autograd saves while running ``fn``."""
    seen = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            if st.data_ptr() not in exclude:
                seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_pair(fns, x, gout, device, reps, warmup=2):
    """Median seconds of forward+backward for each fn, interleaved rep by rep so that
    a machine whose load changes during the run affects both the same way."""
    times = [[] for _ in fns]
    for i in range(warmup + reps):
        for j, fn in enumerate(fns):
            x.grad = None
            sync(device)
            t0 = time.perf_counter()
            fn().backward(gout)
            sync(device)
            if i >= warmup:
                times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--json", default=None, help="also write the row as JSON here")
    a = p.parse_args(argv)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    D, H, G, T, L = 768, 12, 4, 12, 54
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(D, H, batch_first=True).to(device, dtype).requires_grad_(False)
    fused = dgl_rs.GlobalLocalAttention.from_mha(mha, num_global=G, num_frames=T)
    x = torch.randn(a.batch, G + T * L, D, device=device, dtype=dtype, requires_grad=True)
    gout = torch.randn_like(x)
    params = {p.untyped_storage().data_ptr() for p in mha.parameters()}
    params.add(x.untyped_storage().data_ptr())  # the input is alive anyway in all of them

    fused_rc = dgl_rs.GlobalLocalAttention.from_mha(mha, num_global=G, num_frames=T, recompute_qkv=True)
    runs = {
        "naive (2 x nn.MultiheadAttention)": lambda: naive_global_local_attention(mha, x, G, T),
        "fused (saves q/k/v)": lambda: fused(x)[0],
        "fused, recompute_qkv=True (saves x)": lambda: fused_rc(x)[0],
    }
    with torch.no_grad():
        outs = [f().float() for f in runs.values()]
    err = max((o - outs[0]).abs().max().item() for o in outs[1:])
    mem = [saved_bytes(f, params)[1] for f in runs.values()]
    times = bench_pair(list(runs.values()), x, gout, device, a.reps)
    # FLOPs of the fused op, forward + backward w.r.t. x (matmuls only): projections
    # 2*S*D*(3D + D) forward, twice that backward; attention 4*rows*keys*D forward, 2.5x backward
    # (recomputed forward + backward).
    S = G + T * L
    proj = 2 * a.batch * S * D * 4 * D
    att = 4 * a.batch * (T * L * (G + L) + G * S) * D
    flops = 3 * proj + 3.5 * att
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
               + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
    print(f"\n{a.device} {a.dtype}, B={a.batch}, D={D}, H={H}, G={G}, T={T}, L={L}; {machine}; max |diff| {err:.2e}\n")
    print("| method | fwd+bwd median | speed-up | saved for backward | saving |")
    print("|---|---|---|---|---|")
    rows = []
    for (name, _), t, m in zip(runs.items(), times, mem):
        rows.append(dict(method=name, ms=t * 1e3, speedup=times[0] / t, saved_mb=m / 2**20, saving=1 - m / mem[0]))
        print(f"| {name} | {t * 1e3:.1f} ms | {times[0] / t:.2f}x | {m / 2**20:.1f} MiB | {100 * (1 - m / mem[0]):.0f}% |")
    print(f"\nfused: {flops / times[1] / 1e12:.3f} TFLOP/s (matmul FLOPs / median time)")
    row = dict(device=str(device), dtype=a.dtype, batch=a.batch, machine=machine, max_abs_diff=err, rows=rows,
               fused_tflops=flops / times[1] / 1e12)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(row, f, indent=2)
    return row


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("DGL_BENCH_THREADS", os.cpu_count() or 1)))
    sys.exit(0 if main() else 1)
