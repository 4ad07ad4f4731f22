"""Build the student release ``notebooks/<assignment>/`` from the instructor's ``solutions/<assignment>/``
with nbgrader's own generate_assignment (solutions and hidden tests removed, outputs cleared)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .course import REPO, assignments, check_assignment, generate


def release(assignment: str | None = None, dest: Path | None = None, repo: Path = REPO) -> list[Path]:
    """Regenerate ``dest/<assignment>/`` (default ``notebooks/``) for one assignment or all of them.

    Files in ``dest/<assignment>/`` that nbgrader did not produce are removed, so the release is exactly
    what the solutions generate. Returns the notebooks written.
    """
    dest = Path(dest) if dest is not None else repo / "notebooks"
    names = [assignment] if assignment else assignments(repo)
    for name in names:
        check_assignment(name, repo)
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
