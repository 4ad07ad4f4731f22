"""Grading throughput against --workers, and the sandbox's overhead per notebook.

Grades N copies of the complete RoPE sample (autograder/samples/rope/alice) with 1, 2 and 4 workers in
the sandbox, and with the sandbox off at the fastest worker count; prints a markdown table (submissions
per minute) and writes build/bench/grading.png.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from autograder.course import REPO
from autograder.grade import grade
from autograder.sandbox import check

from .common import OUT, table

N = 8


def main() -> None:
    sample = REPO / "autograder" / "samples" / "rope" / "alice" / "rope.ipynb"
    sandbox = "on" if check() is None else "off"
    rows, per_minute = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        for i in range(N):
            (subs / f"s{i:02d}").mkdir(parents=True)
            shutil.copy(sample, subs / f"s{i:02d}" / "rope.ipynb")
        runs = [(w, sandbox) for w in (1, 2, 4)] + ([(2, "off")] if sandbox == "on" else [])
        for workers, mode in runs:
            start = time.perf_counter()
            results = grade("rope", subs, Path(tmp) / f"out-{workers}-{mode}", workers=workers, quiet=True,
                            sandbox=mode)
            seconds = time.perf_counter() - start
            assert all(r["score"] == r["max_score"] for r in results), "a complete submission lost points"
            per_minute[(workers, mode)] = 60 * N / seconds
            rows.append([workers, mode, f"{seconds:.1f}", f"{seconds / N:.1f}", f"{60 * N / seconds:.1f}"])
    print(f"\nGrading {N} complete RoPE submissions (2 CPU cores here)")
    print(table(["workers", "sandbox", "seconds", "s / submission", "submissions / min"], rows))
    if (2, "off") in per_minute and (2, "on") in per_minute:
        overhead = 60 / per_minute[(2, "on")] - 60 / per_minute[(2, "off")]
        print(f"sandbox overhead at 2 workers: {overhead:+.2f} s per notebook")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ws = [w for w, m in per_minute if m == sandbox]
    ax.plot(ws, [per_minute[(w, sandbox)] for w in ws], marker="o", label=f"sandbox {sandbox}")
    if (2, "off") in per_minute and sandbox == "on":
        ax.plot([2], [per_minute[(2, "off")]], marker="s", linestyle="", label="sandbox off")
    ax.set(xlabel="--workers", ylabel="submissions per minute", title="Grading throughput (RoPE notebook)")
    ax.set_xticks(ws)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "grading.png", dpi=120)
    print(f"plot: {OUT / 'grading.png'}")


if __name__ == "__main__":
    main()
