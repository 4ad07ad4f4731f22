"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

OUT = Path(__file__).resolve().parent.parent / "build" / "bench"


def best_time(fn: Callable[[], object], repeat: int = 5, min_seconds: float = 0.05) -> float:
    """Best of ``repeat`` runs of the mean time of ``fn()`` over enough calls to last ``min_seconds``."""
    fn()                                                     # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def table(header: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def threads() -> str:
    return f"{torch.get_num_threads()} thread(s), torch {torch.__version__}"


def execute(nb, folder, **env) -> float:
    """Run ``nb`` with nbclient (what `jupyter nbconvert --execute` does) from a fresh kernel in ``folder``,
    with ``env`` set (a value of None unsets it) and per-cell timings recorded; return the seconds, kernel
    start included."""
    import os
    import time

    from nbclient import NotebookClient
    saved = dict(os.environ)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=1200, kernel_name="python3", allow_errors=True, record_timing=True,
                       resources={"metadata": {"path": str(folder)}}).execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
