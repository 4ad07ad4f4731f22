"""Test cells' time limits from the reference's timings (autograder.course.timings): the rule (factor × the
reference's seconds, at least the floor, at most the cell timeout), its overrides, and the measurement
itself (nbclient's own per-cell timestamps). That a looping function costs only the limits of its test
cells, with the verdict saying so, is test_grade.py's infinite-loop case."""
import json

import nbformat
import pytest

from autograder.course import timings
from autograder.course.source import REPO, UsageError, graded_cells

pytestmark = pytest.mark.autograder


def _course(tmp_path, entry):
    (tmp_path / "timings.json").write_text(json.dumps({"demo": entry}))
    return tmp_path


def test_the_rule_factor_floor_and_cap(tmp_path):
    repo = _course(tmp_path, {"notebooks": {"nb": {"fast": 0.01, "mid": 1.5, "slow": 30.0}}})
    got, rule = timings.limits("demo", 60, repo=repo)
    assert got == {"nb": {"fast": 10.0, "mid": 10.0, "slow": 60.0}}      # 7.5 s: the floor
    assert "5× the reference's time, at least 10 s, at most 60 s" in rule


def test_per_assignment_and_command_line_overrides(tmp_path):
    repo = _course(tmp_path, {"factor": 4, "floor": 2, "notebooks": {"nb": {"a": 0.1, "b": 3.0}}})
    assert timings.limits("demo", 60, repo=repo)[0] == {"nb": {"a": 2.0, "b": 12.0}}
    assert timings.limits("demo", 60, repo=repo, factor=2, floor=1)[0] == {"nb": {"a": 1.0, "b": 6.0}}
    fixed, rule = timings.limits("demo", 60, repo=repo, fixed=7)
    assert fixed == {"nb": {"a": 7.0, "b": 7.0}} and "--test-cell-timeout" in rule


def test_without_timings_every_cell_keeps_the_cell_timeout(tmp_path):
    got, rule = timings.limits("demo", 60, repo=tmp_path)
    assert got == {} and "no reference timings for demo" in rule and "60 s" in rule
    (tmp_path / "timings.json").write_text("{not json")
    with pytest.raises(UsageError, match="timings.json: not valid JSON"):
        timings.limits("demo", 60, repo=tmp_path)


def test_only_test_cells_get_a_limit():
    nb = nbformat.read(REPO / "solutions" / "rope" / "rope.ipynb", as_version=4)
    keys = {timings.cell_key(c) for c in nb.cells} - {None}
    assert keys == {c.grade_id for c in graded_cells("rope") if c.kind == "test"}


def test_the_committed_timings_cover_every_test_cell_of_every_assignment():
    data = timings.load(REPO)
    from autograder.course.source import assignments
    for name in assignments():
        have = {k for cells in (data.get(name) or {}).get("notebooks", {}).values() for k in cells}
        want = {c.grade_id for c in graded_cells(name) if c.kind == "test"}
        assert have == want, f"{name}: run `python -m autograder release {name} --timings`"


def test_measuring_runs_the_notebook_as_grading_does(tmp_path):
    """A notebook whose test cell sleeps 1 s: measured at about 1 s (nbclient's timestamps), the
    illustrative cell (which would sleep 30 s) not run."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time, os"),
                nbformat.v4.new_code_cell("time.sleep(30)"),
                nbformat.v4.new_code_cell("time.sleep(1.0)\nassert os.environ['NBGRADER_EXECUTION'] == 'autograde'")]
    nb.cells[1].metadata["tags"] = ["illustrative"]
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1,
                                        "locked": True, "schema_version": 3}
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    got = timings.measure_notebook(path, timeout=20)
    assert set(got) == {"t"} and 0.9 <= got["t"] < 10, got
