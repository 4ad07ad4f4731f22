"""The student release (notebooks/) is exactly what nbgrader generates from solutions/, and holds no
solution or hidden-test text and no outputs. (That it runs up to the first exercise, with the student
bundle's course_lib, is tests/notebooks/test_bundle.py.)"""
import re
from pathlib import Path

import nbformat
import pytest

from autograder.course.source import REPO, assignments
from autograder.release.notebooks import release

pytestmark = pytest.mark.notebooks

RELEASED = sorted((REPO / "notebooks").glob("*/*.ipynb"))
SOLUTIONS = sorted((REPO / "solutions").glob("*/*.ipynb"))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(scope="session")
def regenerated(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("release")
    release(dest=dest)
    return dest


def test_every_assignment_is_released():
    assert assignments(), "solutions/ holds no assignment"
    for path in SOLUTIONS:
        assert (REPO / "notebooks" / path.parent.name / path.name).exists(), \
            f"{_id(path)} has no release: run `make release`"


@pytest.mark.parametrize("path", RELEASED, ids=_id)
def test_release_in_sync_with_solutions(path, regenerated):
    committed = nbformat.read(path, as_version=4)
    fresh = nbformat.read(regenerated / path.parent.name / path.name, as_version=4)
    assert len(committed.cells) == len(fresh.cells), f"{_id(path)} is stale: run `make release`"
    for i, (a, b) in enumerate(zip(committed.cells, fresh.cells)):
        assert (a.cell_type, a.source) == (b.cell_type, b.source), \
            f"{_id(path)} cell {i} differs from what solutions/ generates: run `make release`"
        assert a.metadata.get("nbgrader") == b.metadata.get("nbgrader"), f"{_id(path)} cell {i}: nbgrader metadata"


@pytest.mark.parametrize("path", RELEASED, ids=_id)
def test_release_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{_id(path)} cell {i} has outputs"


def _inside(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) >= 12:   # short lines (`return y`) also occur in the prose
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("path", RELEASED, ids=_id)
def test_release_leaks_no_solution_or_hidden_test(path):
    text = path.read_text()
    assert not re.search(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)", text)
    solution = nbformat.read(REPO / "solutions" / path.parent.name / path.name, as_version=4)
    released = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    secret = []
    for cell in solution.cells:
        secret += _inside(cell.source, "### BEGIN SOLUTION", "### END SOLUTION")
        secret += _inside(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
    assert secret, "the solution notebook has no solution or hidden tests?"
    leaked = [line for line in secret if line in released]
    assert not leaked, f"{_id(path)} shows solution/hidden-test lines: {leaked[:3]}"


def _functions_defined(cell) -> list[str]:
    return re.findall(r"^def (\w+)\(", cell.source, flags=re.M)


@pytest.mark.parametrize("path", SOLUTIONS, ids=_id)
def test_each_test_cell_grades_only_its_own_exercise(path):
    """A test cell that called another exercise's function would take points away for someone else's
    mistake: each exercise is graded on its own."""
    nb = nbformat.read(path, as_version=4)
    exercises = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            for name in _functions_defined(cell):
                exercises[name] = meta["grade_id"]
    assert exercises
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            own = {name for name, gid in exercises.items() if f"test_{gid}" == meta["grade_id"] or
                   re.search(rf"\b{name}\b", cell.source.split("### BEGIN HIDDEN TESTS")[-1])}
            others = [name for name in exercises if name not in own and re.search(rf"\b{name}\(", visible)]
            assert not others, f"{_id(path)} {meta['grade_id']} calls {others}, graded elsewhere"
