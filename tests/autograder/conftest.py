"""Fixtures several test modules share: what they read from the instructor's notebooks, independently of
the grader's code."""
import nbformat
import pytest

from autograder.course import REPO


@pytest.fixture(scope="session")
def rope_hidden_lines() -> list[str]:
    """Every line between ### BEGIN HIDDEN TESTS and ### END HIDDEN TESTS of rope's solution (8+ characters)."""
    nb = nbformat.read(REPO / "solutions" / "rope" / "rope.ipynb", as_version=4)
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if "### BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "### END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= 8:
                lines.append(line.strip())
    assert lines
    return lines
