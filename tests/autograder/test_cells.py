"""Which cells grading runs (autograder.course.cells): the instructor's `illustrative` tags decide, never the
student's copy, and no cell that grading runs reads a name that only a skipped cell defines. (That grading
with the cells skipped gives every complete submission full marks and the blank one zero is
test_assignments.py and test_grade.py, which grade with the default, skipping.)"""
import copy

import nbformat
import pytest

from autograder.course.cells import TAG, SkipPlan, dependency_problems, skipped_indices, without_skipped
from autograder.course.source import REPO, UsageError, assignments, source_notebooks
from autograder.release.notebooks import check_illustrative

pytestmark = pytest.mark.autograder

SOURCES = [p for a in assignments() for p in source_notebooks(a)]


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    for i, (source, tags, grade) in enumerate(cells):
        c = nbformat.v4.new_code_cell(source)
        c.id = f"c{i}"
        if tags:
            c.metadata["tags"] = list(tags)
        if grade:
            c.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": f"t{i}", "points": 1,
                                      "locked": True, "schema_version": 3}
        nb.cells.append(c)
    return nb


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_assignment_tags_cells_and_none_feeds_a_graded_cell(path):
    nb = nbformat.read(path, as_version=4)
    plan = SkipPlan(nb)
    skipped = skipped_indices(nb, plan)
    assert skipped, f"{path.name} tags no cell illustrative"
    assert not any(nb.cells[i].metadata.get("nbgrader", {}).get("grade") for i in skipped)
    assert dependency_problems(nb, skipped) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_the_release_keeps_every_illustrative_cell_for_students(path):
    released = nbformat.read(REPO / "notebooks" / path.parent.name / path.name, as_version=4)
    source = nbformat.read(path, as_version=4)
    want = [c.source for c in source.cells if TAG in c.metadata.get("tags", [])]
    have = [c.source for c in released.cells if TAG in c.metadata.get("tags", [])]
    assert have == want


def test_the_students_copy_decides_nothing():
    source = _nb(("import torch", (), False), ("plot(x)", (TAG,), False), ("def f(): ...", (), False),
                 ("assert f() is None", (), True))
    plan = SkipPlan(source)
    sub = copy.deepcopy(source)
    sub.cells[1].metadata["tags"] = []                         # the student removed the tag: still skipped
    sub.cells[2].metadata["tags"] = [TAG]                      # and tagged their own code: still runs
    sub.cells[3].metadata["tags"] = [TAG]                      # and a test cell: still runs
    assert skipped_indices(sub, plan) == {1}
    sub.cells[1].source = "plot(x)\nmy_helper = 1"             # a demo the student rewrote is their code
    assert skipped_indices(sub, plan) == set()
    moved = copy.deepcopy(source)                               # ids lost (an old nbformat): by source
    for c in moved.cells:
        del c["id"]
    assert skipped_indices(moved, plan) == {1}
    graded = _nb(("x = 1", (TAG,), True))                      # a tag on a graded cell is ignored
    assert skipped_indices(graded, SkipPlan(graded)) == set()


@pytest.mark.parametrize("cells, problem", [
    ([("data = load()", (TAG,), False), ("assert f(data)", (), True)], "reads 'data'"),
    ([("def helper(): return 2", (TAG,), False), ("def f():\n    return helper()", (), False)], "reads 'helper'"),
    ([("import numpy as np", (TAG,), False), ("y = [np.pi for _ in range(3)]", (), False)], "reads 'np'"),
    ([("k = 3", (TAG,), False), ("class A:\n    size = k", (), False)], "reads 'k'"),
])
def test_a_name_defined_only_in_a_skipped_cell_is_found(cells, problem):
    nb = _nb(*cells)
    problems = dependency_problems(nb, skipped_indices(nb, SkipPlan(nb)))
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("cells", [
    [("x = 1", (TAG,), False), ("x = 2\nprint(x)", (), False)],                     # redefined before use
    [("x = 1", (), False), ("x = 5", (TAG,), False), ("def f(x):\n    return x", (), False)],   # a local
    [("fig = plot()", (TAG,), False), ("assert 1 + 1 == 2", (), True)],
    [("%matplotlib inline\nimport os", (), False), ("os.getcwd()", (), False)],
])
def test_no_false_alarm(cells):
    nb = _nb(*cells)
    assert dependency_problems(nb, skipped_indices(nb, SkipPlan(nb))) == []


def test_release_refuses_a_tag_that_feeds_a_graded_cell(tmp_path):
    course = tmp_path / "course"
    (course / "solutions" / "demo").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text("c = get_config()\n")
    nbformat.write(_nb(("import math", (), False), ("r = math.pi", (TAG,), False), ("assert r > 3", (), True)),
                   course / "solutions" / "demo" / "demo.ipynb")
    with pytest.raises(UsageError, match=r"demo\.ipynb: cell 3 reads 'r', last defined in the illustrative cell 2"):
        check_illustrative("demo", course)


def test_without_skipped_leaves_only_what_grading_runs():
    nb = _nb(("import torch", (), False), ("plot(x)", (TAG,), False), ("assert 1", (), True))
    kept = without_skipped(nb, SkipPlan(nb))
    assert [c.source for c in kept.cells] == ["import torch", "assert 1"]
    assert len(nb.cells) == 3
