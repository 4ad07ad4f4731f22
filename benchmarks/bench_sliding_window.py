"""Sliding-window attention (Lecture 4) three ways, and PyTorch's SDPA with a band mask: time and peak memory
against the sequence length n, for w = 512 (a window of ½w + 1 = 257 tokens), d = 64, 4 heads, batch 1.

* naive          full n×n scores + the sliding-window mask (``core.attention``): O(n²) time and memory;
* for-loop       one query at a time against its window: O(n·w) work, n small steps in Python;
* sliding chunks blocks of ½w queries against key chunks of w (overlap ½w): O(n·w) time and memory;
* SDPA band      ``F.scaled_dot_product_attention`` with the boolean n×n band mask (built inside the call).

Peak memory is measured honestly per configuration: each (method, n) runs in a **fresh Python subprocess**
(``python -m benchmarks.bench_sliding_window --worker METHOD N``) that builds q, k, v, warms the kernels up
on a short sequence, reads ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set
size so far), runs the method once and reads ``ru_maxrss`` again. The difference is the extra peak memory of
one call, inputs excluded, as the operating system sees it (every allocation: PyTorch's allocator, oneDNN
scratch space, the Python heap). Then the same process times the call (best of a few runs).

Threads: PyTorch's default (one per core); ``BENCH_THREADS=1`` pins every worker to one thread. On a machine
shared with other busy processes, two-thread timings of many small operations are dominated by waits for the
second thread at each parallel region; one thread gives stable numbers there.

Prints a markdown table and writes build/bench/sliding_window.png.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from course_lib.attention.sliding_window import (sliding_window_allowed, sliding_window_chunks, sliding_window_loop,
                                                 sliding_window_naive)

from .common import OUT, best_time, table

B, H, D, W = 1, 4, 64, 512
LENGTHS = [512, 1024, 2048, 4096, 8192]
METHODS = ["naive", "for-loop", "sliding chunks", "SDPA band mask"]
LOOP_BUDGET_S = 60.0          # skip the for-loop at the next n once a call is predicted to take longer
WORKER_TIMEOUT_S = 900
REPO = Path(__file__).resolve().parent.parent


def sdpa_band(q, k, v, w):
    """PyTorch's fused attention with the lecture's window as a boolean (n, n) mask, built in the call."""
    allowed = sliding_window_allowed(q.shape[-2], w, device=q.device)          # (n, n) bool
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


FUNCTIONS = {"naive": sliding_window_naive, "for-loop": sliding_window_loop,
             "sliding chunks": sliding_window_chunks, "SDPA band mask": sdpa_band}


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024          # bytes on macOS, KiB on Linux


def worker(method: str, n: int) -> dict:
    """Runs in a fresh process: peak memory of one call (ru_maxrss after − before), then its time."""
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    fn = FUNCTIONS[method]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for _ in range(3))           # (B, h, n, d) each
    small = [x[..., :W // 2, :].contiguous() for x in (q, k, v)]
    fn(*small, W)                                                                # load the kernels
    before = _maxrss_bytes()
    start = time.perf_counter()
    fn(q, k, v, W)
    first = time.perf_counter() - start
    peak = max(0, _maxrss_bytes() - before)
    if first > 2.0:                      # slow: one more call is enough
        start = time.perf_counter()
        fn(q, k, v, W)
        seconds = min(first, time.perf_counter() - start)
    else:
        seconds = best_time(lambda: fn(q, k, v, W), repeat=3, min_seconds=0.2)
    return {"method": method, "n": n, "seconds": seconds, "peak_bytes": peak, "threads": torch.get_num_threads()}


def _run_worker(method: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_sliding_window", "--worker", method, str(n)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} n={n} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(x: float) -> str:
    return f"{x / 2**20:.1f}"


def main() -> None:
    results: dict[tuple[str, int], dict] = {}
    for method in METHODS:
        for n in LENGTHS:
            prev = results.get((method, n // 2))
            if method == "for-loop" and prev and 2 * prev["seconds"] > LOOP_BUDGET_S:
                continue                                       # it would take too long: left out
            results[method, n] = _run_worker(method, n)
            r = results[method, n]
            print(f"  {method:15s} n={n:5d}: {r['seconds'] * 1e3:10.1f} ms, peak {_mb(r['peak_bytes']):>8s} MiB",
                  file=sys.stderr)

    header = ["n", *(f"{m} ms" for m in METHODS), *(f"{m} MiB" for m in METHODS),
              "naive / chunks time", "naive / chunks memory", "SDPA / chunks time"]
    rows = []
    for n in LENGTHS:
        get = lambda m, key: results[m, n][key] if (m, n) in results else math.nan   # noqa: E731
        chunks_t, chunks_m = get("sliding chunks", "seconds"), get("sliding chunks", "peak_bytes")
        rows.append([n,
                     *(f"{get(m, 'seconds') * 1e3:.1f}" if (m, n) in results else "—" for m in METHODS),
                     *(_mb(get(m, "peak_bytes")) if (m, n) in results else "—" for m in METHODS),
                     f"{get('naive', 'seconds') / chunks_t:.1f}x",
                     f"{get('naive', 'peak_bytes') / max(chunks_m, 1):.1f}x",
                     f"{get('SDPA band mask', 'seconds') / chunks_t:.1f}x"])
    used = {r["threads"] for r in results.values()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"\nSliding-window attention, w = {W} (window of {W // 2 + 1} tokens), q, k, v of shape "
          f"({B}, {H}, n, {D}) float32, CPU with {os.cpu_count()} cores, {'/'.join(map(str, sorted(used)))} "
          f"thread(s) per run, torch {torch.__version__}, load average {load:.1f} at the end.")
    print("Time: best of a few calls. Peak memory: extra peak RSS of one call (ru_maxrss after − before), each "
          "configuration in a fresh subprocess; inputs excluded.\n")
    print(_markdown(header, rows))
    print()
    print(table(header, rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for method in METHODS:
        ns = [n for n in LENGTHS if (method, n) in results]
        ax1.plot(ns, [results[method, n]["seconds"] * 1e3 for n in ns], marker="o", label=method)
        ax2.plot(ns, [results[method, n]["peak_bytes"] / 2**20 for n in ns], marker="o", label=method)
    for ax, label in ((ax1, "time per call (ms)"), (ax2, "extra peak memory (MiB, ru_maxrss)")):
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=label)
        ax.set_xticks(LENGTHS, [str(n) for n in LENGTHS])
        ax.set_xticks([], minor=True)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax1.set_title(f"time: w = {W}, d = {D}, {H} heads, {'/'.join(map(str, sorted(used)))} thread(s)")
    ax2.set_title("peak memory (fresh subprocess per point)")
    fig.savefig(OUT / "sliding_window.png", dpi=120)
    print(f"plot: {OUT / 'sliding_window.png'}")


def _markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
