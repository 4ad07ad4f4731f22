"""The course as the instructor wrote it: where its assignments and notebooks are, their graded cells, and
the markers around hidden tests.

The course repository holds ``solutions/<assignment>/*.ipynb`` (nbgrader source) and
``notebooks/<assignment>/*.ipynb`` (the release). Grading never runs in the repository itself: each
operation gets a private course root (a temporary folder) with its own gradebook, so that nothing is
written into the working tree, parallel graders cannot clash, and no student file is ever modified.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]

# nbgrader runs `alembic` from PATH when it opens a gradebook: make this interpreter's scripts findable
# even when the virtual environment is not activated (`.venv/bin/python -m autograder ...`).
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


_CHECK = re.compile(r"""grading\.check\(\s*["'](\w+)["']""")


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


@dataclass(frozen=True)
class GradedCell:
    notebook: str      # notebook name without .ipynb
    grade_id: str
    max_score: float
    kind: str          # "test" (autograded code) or "manual"
    exercises: tuple[str, ...] = ()   # the course_lib.grading exercises its hidden tests check


def solutions_dir(repo: Path = REPO) -> Path:
    return repo / "solutions"


def assignments(repo: Path = REPO) -> list[str]:
    """Assignment names: the folders of ``solutions/`` that hold at least one notebook."""
    root = solutions_dir(repo)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))


def check_assignment(name: str, repo: Path = REPO) -> Path:
    known = assignments(repo)
    if name not in known:
        raise UsageError(f"unknown assignment {name!r}: solutions/ holds {', '.join(known) or 'no assignment'}")
    return solutions_dir(repo) / name


def source_notebooks(assignment: str, repo: Path = REPO) -> list[Path]:
    return sorted(check_assignment(assignment, repo).glob("*.ipynb"))


def graded_cells(assignment: str, repo: Path = REPO) -> list[GradedCell]:
    """Every graded cell of the assignment, in notebook order, read from the nbgrader source."""
    cells = []
    for path in source_notebooks(assignment, repo):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") or meta.get("task"):     # a task cell is graded by hand, like an answer
                kind = "manual" if meta.get("solution") or meta.get("task") or cell.cell_type != "code" else "test"
                checked = tuple(_CHECK.findall(cell.source)) if kind == "test" else ()
                cells.append(GradedCell(path.stem, meta["grade_id"], float(meta.get("points", 0)), kind, checked))
    return cells


BEGIN, END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"     # nbgrader's markers around hidden tests


def split_hidden(source: str) -> tuple[list[str], list[str]]:
    """(visible lines, hidden lines) of a cell's source."""
    visible, hidden, inside = [], [], False
    for line in source.splitlines():
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif inside:
            hidden.append(line)
        else:
            visible.append(line)
    return visible, hidden


@contextlib.contextmanager
def private_tmp():
    """A folder of this user's in the temporary folder (mode 0700), for grading's scratch: nothing in it
    shows in a listing of /tmp (a kernel of the uid tier can list /tmp). Removed at the end when empty."""
    base = Path(tempfile.gettempdir()) / f"course-grader-{os.geteuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
            raise OSError("not ours")
    except OSError:
        base = Path(tempfile.mkdtemp(prefix="course-grader-"))
    try:
        yield base
    finally:
        try:
            base.rmdir()
        except OSError:                          # another run is using it
            pass


def env_for_kernels() -> dict[str, str]:
    """The environment that graded kernels get: ours, with W&B off and a non-interactive backend."""
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    return env
