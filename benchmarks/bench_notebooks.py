"""Students' time: every notebook top to bottom in its default configuration, as a student runs it.

Fills each release notebook with the instructor's answers (autograder.intake.samples.fill) and executes it
with nbclient from a fresh kernel, *without* NBGRADER_EXECUTION (the default configuration, not the short
one that grading and CI use), with the reference course_lib. Prints seconds per notebook and its slowest
cell; the README promises at most 60 s on 2 cores. ``BENCH_ASSIGNMENTS=rope,gqa`` picks assignments.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from autograder.course.source import assignments, source_notebooks

from .common import execute, table

LIMIT = 60.0


def run(nb, folder: Path) -> tuple[float, float, int]:
    """(seconds for the whole notebook, slowest cell's seconds, its index), default configuration."""
    from autograder.course.timings import _seconds
    total = execute(nb, folder, NBGRADER_EXECUTION=None, WANDB_MODE="disabled", MPLBACKEND="Agg")
    seconds, index = max(((_seconds(c) or 0.0, i) for i, c in enumerate(nb.cells)), default=(0.0, -1))
    return total, seconds, index


def main() -> None:
    from autograder.intake import samples as subs
    names = [a for a in os.environ.get("BENCH_ASSIGNMENTS", "").split(",") if a] or assignments()
    rows = []
    for name in names:
        for path in source_notebooks(name):
            release, solution = subs.load(name, path.stem)
            with tempfile.TemporaryDirectory() as tmp:
                for entry in path.parent.iterdir():
                    if entry.suffix != ".ipynb" and not entry.name.startswith("."):
                        (shutil.copytree if entry.is_dir() else shutil.copyfile)(entry, Path(tmp) / entry.name)
                total, slow, index = run(subs.fill(release, solution), Path(tmp))
            rows.append([f"{name}/{path.name}", f"{total:.1f}", f"{slow:.1f} (cell {index + 1})",
                         "yes" if total <= LIMIT else "NO"])
    print(f"\nEvery notebook top to bottom, default configuration, fresh kernel ({os.cpu_count()} CPUs)")
    print(table(["notebook", "seconds", "slowest cell (s)", f"within {LIMIT:g} s"], rows))


if __name__ == "__main__":
    main()
