"""Build the student release ``notebooks/<assignment>/`` from the instructor's ``solutions/<assignment>/``
with nbgrader's own generate_assignment (solutions and hidden tests removed, outputs cleared)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from autograder.course.source import REPO, UsageError, assignments, check_assignment, source_notebooks

from autograder.course.nbgrader import generate


def release(assignment: str | None = None, dest: Path | None = None, repo: Path = REPO) -> list[Path]:
    """Regenerate ``dest/<assignment>/`` (default ``notebooks/``) for one assignment or all of them.

    Files in ``dest/<assignment>/`` that nbgrader did not produce are removed, so the release is exactly
    what the solutions generate. Returns the notebooks written.
    """
    dest = Path(dest) if dest is not None else repo / "notebooks"
    names = [assignment] if assignment else assignments(repo)
    for name in names:
        check_assignment(name, repo)
        check_illustrative(name, repo)
    written = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"release-{name}-") as tmp:
            built = generate(name, Path(tmp), repo)
            target = dest / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(built, target)
        written += sorted(target.glob("*.ipynb"))
    return written


def check_illustrative(assignment: str, repo: Path = REPO) -> None:
    """Refuse (one line) a release whose ``illustrative`` cells feed a cell that grading runs."""
    import nbformat

    from autograder.course.cells import SkipPlan, dependency_problems, skipped_indices
    for path in source_notebooks(assignment, repo):
        nb = nbformat.read(path, as_version=4)
        problems = dependency_problems(nb, skipped_indices(nb, SkipPlan(nb)))
        if problems:
            raise UsageError(f"solutions/{assignment}/{path.name}: {problems[0]}: grading would fail there; "
                             f"untag that cell or define the name in a cell that runs"
                             + (f" ({len(problems) - 1} more)" if len(problems) > 1 else ""))
