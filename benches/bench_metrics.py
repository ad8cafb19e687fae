"""Benchmark: dgl_rs retrieval ranks vs the usual sort-based numpy code.

    python benches/bench_metrics.py [--sizes 1000 5000 20000] [--numpy-timeout 300]

Every case computes the ranks of both directions (text->video and video->text) of
an N x N float32 similarity (one caption per video), in its own subprocess:

* ``numpy argsort``: the usual code, ``order = np.argsort(-sim, axis=1)`` then
  ``np.where(order == arange(N)[:, None])[1] + 1``, once on ``sim`` and once on
  ``sim.T``.
* ``dgl_rs (numpy)``: ``dgl_rs.metrics.ranks(sim)``, Rust + rayon on the numpy
  buffer (no copy, no sort).
* ``dgl_rs (torch CPU)``: the tch tensor path (what CUDA tensors take) on
  ``torch.from_numpy(sim)``, 1024 rows/columns per chunk. (``dgl_rs.metrics.ranks``
  itself sends CPU float tensors to the numpy path through a zero-copy view.)

Memory is the peak resident set size of the subprocess *above* its resident size
just before the call (the input matrix and the imports already counted): the kernel
high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs`` right before
the call and read right after. This sees every allocation (numpy, Rust, libtorch),
unlike tracemalloc which sees only Python-allocator and numpy allocations.

Prints a markdown table and writes it to benches/results/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "metrics.md"
IMPLS = ("numpy argsort", "dgl_rs (numpy)", "dgl_rs (torch CPU)")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the VmHWM high-water mark to the current RSS


def _numpy_argsort_ranks(sim):
    import numpy as np

    n = sim.shape[0]
    target = np.arange(n)[:, None]
    t2v = np.where(np.argsort(-sim, axis=1) == target)[1] + 1
    v2t = np.where(np.argsort(-sim.T, axis=1) == target)[1] + 1
    return t2v, v2t


def worker(impl: str, n: int, repeats: int) -> None:
    import numpy as np
    import torch

    from dgl_rs import _native
    from dgl_rs import metrics as M

    fns = {
        "numpy argsort": _numpy_argsort_ranks,
        "dgl_rs (numpy)": lambda s: M.ranks(s),
        # The tch tensor path (what CUDA tensors take), driven on a CPU tensor. Through
        # dgl_rs.metrics a CPU float tensor goes to the numpy path by a zero-copy view.
        "dgl_rs (torch CPU)": lambda s: {
            "t2v": _native.ranks_t2v_tensor(s, None, M.DEFAULT_CHUNK),
            "v2t": _native.ranks_v2t_tensor(s, None, M.DEFAULT_CHUNK),
        },
    }
    fn = fns[impl]
    small = np.random.default_rng(1).standard_normal((64, 64), dtype=np.float32)
    sim = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    if impl == "dgl_rs (torch CPU)":
        small, sim = torch.from_numpy(small), torch.from_numpy(sim)  # no copy
    fn(small)  # warm up: thread pools, lazy init
    rss0 = _status_kib("VmRSS")
    _reset_peak()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(sim)
        times.append(time.perf_counter() - t0)
        del out
    peak = _status_kib("VmHWM")
    print(json.dumps({"time_s": min(times), "repeats": repeats, "peak_extra_mib": max(0, peak - rss0) / 1024}))


def run_case(impl: str, n: int, repeats: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, str(n), str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"skipped": f"> {timeout:.0f} s, killed"}
    except subprocess.CalledProcessError as exc:
        return {"skipped": f"failed: {exc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numpy
    import torch

    return (
        f"{cpu}, {os.cpu_count()} logical cores, Linux {platform.release()}; "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}"
    )


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description="dgl_rs metrics benchmark (see the module docstring).")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="N of the N x N matrices")
    p.add_argument(
        "--numpy-timeout", type=float, default=300.0, help="seconds before a numpy case is killed and reported as skipped"
    )
    p.add_argument("--no-write", action="store_true", help="print only; do not write benches/results/metrics.md")
    args = p.parse_args(argv)

    # the two implementations agree (no ties in continuous random scores)
    import numpy as np

    from dgl_rs import metrics as M

    check = np.random.default_rng(2).standard_normal((1000, 1000), dtype=np.float32)
    ours = M.ranks(check)
    theirs = _numpy_argsort_ranks(check)
    assert np.array_equal(ours["t2v"], theirs[0]) and np.array_equal(ours["v2t"], theirs[1])

    rows = []
    for n in args.sizes:
        repeats = 5 if n <= 1000 else (3 if n <= 5000 else 1)
        res = {}
        for impl in IMPLS:
            reps = 1 if (impl == "numpy argsort" and n > 5000) else repeats
            timeout = args.numpy_timeout if impl == "numpy argsort" else 600.0
            res[impl] = run_case(impl, n, reps, timeout)
            print(f"N={n} {impl}: {res[impl]}", file=sys.stderr)
        base = res["numpy argsort"]
        for impl in IMPLS:
            r = res[impl]
            if "skipped" in r:
                rows.append(f"| {n:,} | {impl} | {r['skipped']} | | | |")
                continue
            speed = mem = ""
            if impl != "numpy argsort" and "skipped" not in base:
                speed = f"{base['time_s'] / r['time_s']:.0f}x"
                page = 4 / 1024  # the resolution of VmHWM: one 4 KiB page
                floor = "≥ " if r["peak_extra_mib"] < page else ""
                mem = f"{floor}{base['peak_extra_mib'] / max(r['peak_extra_mib'], page):,.0f}x"
            rows.append(
                f"| {n:,} | {impl} | {r['time_s']:.4g} (best of {r['repeats']}) | {speed} "
                f"| {r['peak_extra_mib']:,.2f} | {mem} |"
            )
    input_mib = ", ".join(f"N={n:,}: {n * n * 4 / 2**20:.0f} MiB" for n in args.sizes)
    table = "\n".join(
        [
            "# Retrieval ranks: dgl_rs vs sort-based numpy",
            "",
            f"Command: `{' '.join(['python benches/bench_metrics.py', *(argv or sys.argv[1:])])}`  ",
            f"Machine: {machine()}  ",
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            "Both directions (t2v and v2t ranks) of an N x N float32 similarity, one subprocess per case.",
            "Peak extra memory = kernel RSS high-water mark (VmHWM, reset via /proc/self/clear_refs",
            f"right before the call) minus the RSS just before it; the input itself is not counted ({input_mib}).",
            "Ratios are numpy / dgl_rs (higher is better for dgl_rs); \"≥\" where dgl_rs stayed under one 4 KiB page.",
            "",
            "| N | implementation | time (s) | speed-up | peak extra memory (MiB) | memory ratio |",
            "|---:|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Notes:",
            "- Both implementations return identical ranks (checked on a 1,000 x 1,000 matrix before timing).",
            "- numpy argsort allocates -sim (4 B/entry), the int64 argsort (8 B/entry) and a bool mask per",
            "  direction; dgl_rs (numpy) counts scores >= the true one per row, O(N) extra memory.",
            "- dgl_rs (torch CPU) is the tch tensor path (built for CUDA tensors): one (1024 x N) bool block",
            "  at a time; libtorch's CPU compare-and-sum is far slower than the Rust loop on this machine,",
            "  so dgl_rs.metrics ranks CPU float tensors through a zero-copy numpy view instead.",
            f"- numpy cases are killed after {args.numpy_timeout:.0f} s and then reported as skipped.",
            "- The machine is shared: timings are single runs under whatever load other jobs put on it.",
        ]
    )
    print(table)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table + "\n")
    return table


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
