"""Fair time limits per cell, from the time the reference solution takes on it.

``python -m autograder release [ASSIGNMENT] --timings`` (``make release``) runs each source notebook of the
assignment as grading runs it (solutions and hidden tests in, the cells tagged illustrative out,
``NBGRADER_EXECUTION=autograde``) and writes, into the course's ``timings.json``, the seconds every cell
took, for every test cell (keyed by its nbgrader ``grade_id``, which students' copies keep). Grading gives
each test cell

    limit = clamp(factor × reference seconds, floor, --cell-timeout), rounded up to whole seconds

(``factor`` 5 and ``floor`` 10 s by default; per assignment in ``timings.json`` under ``"factor"`` and
``"floor"``, which re-measuring keeps; on the command line ``--time-factor`` / ``--time-floor``, or
``--test-cell-timeout S`` for one fixed limit). Every other cell (setup, solution, a student's own cell)
keeps ``--cell-timeout``; the submission's budget stays the last resort. A function that loops forever
then costs the limits of the cells that call it, not a minute each.

The timings are measured on the instructor's machine, at release; the factor is there for slower graders
and for several kernels at once. Without ``timings.json`` (or an entry for the assignment) every cell keeps
``--cell-timeout``, and ``grade`` says so.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from autograder.course.source import REPO, env_for_kernels, source_notebooks

FILE = "timings.json"
# The floor: hidden test cells run three passes (values, gradients, the device on meta) and the first one of a
# kernel imports torch._dynamo (which the meta device needs); on a grader running several kernels per core a
# cell measured at 0.8 s took over 5 s. 10 s keeps a correct submission clear of that and still stops an
# endless loop in seconds.
FACTOR, FLOOR = 5.0, 10.0


def cell_key(cell) -> str | None:
    """The name a test cell's reference time is kept under (its nbgrader grade_id); None for other cells,
    which keep the cell timeout (a student's solution cell may legitimately take its time)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if isinstance(meta, dict) and meta.get("grade") and not meta.get("solution") and meta.get("grade_id"):
        return str(meta["grade_id"])
    return None


def _seconds(cell) -> float | None:
    times = cell.get("metadata", {}).get("execution", {})
    start, end = times.get("iopub.execute_input"), times.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))   # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


def measure_notebook(path: Path, timeout: int = 600) -> dict[str, float]:
    """{grade_id: seconds} of the test cells of one source notebook, executed as grading runs it."""
    from nbclient import NotebookClient

    from autograder.course.cells import SkipPlan, without_skipped
    nb = nbformat.read(path, as_version=4)
    nb = without_skipped(nb, SkipPlan(nb))
    with tempfile.TemporaryDirectory(prefix="timings-") as work:
        for entry in path.parent.iterdir():             # the files the notebook opens beside it
            if entry.suffix != ".ipynb" and not entry.name.startswith("."):
                (shutil.copytree if entry.is_dir() else shutil.copyfile)(entry, Path(work) / entry.name)
        env = {**env_for_kernels(), "NBGRADER_EXECUTION": "autograde", "WANDB_MODE": "disabled",
               "COURSE_GRADING_RECORD": str(Path(work) / ".grading"), "MPLBACKEND": "Agg"}
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True, allow_errors=False,
                           resources={"metadata": {"path": work}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {key: round(s, 3) for cell in nb.cells if cell.cell_type == "code"
            for key, s in [(cell_key(cell), _seconds(cell))] if key and s is not None}


def load(repo: Path = REPO) -> dict:
    path = Path(repo) / FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        from autograder.course.source import UsageError
        raise UsageError(f"{FILE}: not valid JSON ({e})")
    return data if isinstance(data, dict) else {}


def measure(assignment: str, repo: Path = REPO) -> dict:
    """Measure every notebook of ``assignment`` and store it in ``timings.json`` (keeping its overrides)."""
    data = load(repo)
    entry = dict(data.get(assignment) or {})
    start = time.monotonic()
    entry["notebooks"] = {p.stem: measure_notebook(p) for p in source_notebooks(assignment, repo)}
    entry["measured"] = dict(at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             host=f"{platform.machine()}, {os.cpu_count()} CPUs", seconds=round(time.monotonic() - start, 1))
    data[assignment] = entry
    path = Path(repo) / FILE
    path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")
    return entry


def limits(assignment: str, cell_timeout: int, *, repo: Path = REPO, factor: float | None = None,
           floor: float | None = None, fixed: float | None = None) -> tuple[dict[str, dict[str, float]], str]:
    """({notebook: {cell key: limit in seconds}}, one line saying how they were set)."""
    entry = load(repo).get(assignment) or {}
    measured = entry.get("notebooks") or {}
    if not measured:
        return {}, (f"no reference timings for {assignment} in {FILE} (`python -m autograder release {assignment} "
                    f"--timings`): every cell has the {cell_timeout} s cell timeout")
    factor = float(factor if factor is not None else entry.get("factor", FACTOR))
    floor = float(floor if floor is not None else entry.get("floor", FLOOR))
    if fixed is not None:
        out = {nb: {key: float(min(fixed, cell_timeout)) for key in cells} for nb, cells in measured.items()}
        return out, f"every cell of the reference: {min(fixed, cell_timeout):g} s (--test-cell-timeout)"
    out = {nb: {key: float(math.ceil(min(float(cell_timeout), max(floor, factor * float(s))))) for key, s in cells.items()}
           for nb, cells in measured.items()}       # whole seconds, as nbclient's timeout is
    return out, (f"each cell: {factor:g}× the reference's time, at least {floor:g} s, at most {cell_timeout} s "
                 f"(measured {entry.get('measured', {}).get('at', '?')})")
