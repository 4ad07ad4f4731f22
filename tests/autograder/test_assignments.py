"""Every assignment end to end: a complete submission gets full marks, the release as handed out gets zero
on every exercise, both graded with the illustrative cells skipped (so no graded cell depends on one), and
the feedback shows no hidden test. (The RoPE assignment's failure modes are in
test_grade.py and test_hostile.py.)"""
import csv
import html
import re

import nbformat
import pytest

from autograder.intake import samples as subs
from autograder.course.cells import TAG
from autograder.course.source import REPO, assignments, graded_cells, source_notebooks
from autograder.outputs.grade import grade
from autograder.sandbox.kernel import SKIPPED_NOTE

pytestmark = pytest.mark.autograder

OTHERS = [a for a in assignments() if a != "rope"]


@pytest.mark.parametrize("assignment", OTHERS)
def test_complete_gets_full_marks_and_blank_gets_zero(assignment, tmp_path):
    dirs = tmp_path / "submissions"
    for path in source_notebooks(assignment):
        release, solution = subs.load(assignment, path.stem)
        subs.write(subs.fill(release, solution), dirs / "complete" / path.name)
        subs.write(release, dirs / "blank" / path.name)
    out = tmp_path / "out"
    grade(assignment, dirs, out, workers=2, quiet=True, submission_timeout=300)
    cells = graded_cells(assignment)
    tests = [c for c in cells if c.kind == "test"]
    written = {c.grade_id for c in cells if c.kind == "manual"}
    total = sum(c.max_score for c in tests)
    assert len(tests) >= 3 and all(c.exercises for c in tests), "each autograded cell runs hidden tests"
    with open(out / "details.csv") as f:
        rows = list(csv.DictReader(f))
    complete = [r for r in rows if r["student"] == "complete" and r["grade_id"] not in written]
    blank = [r for r in rows if r["student"] == "blank" and r["grade_id"] not in written]
    assert all(r["status"] == "passed" for r in complete), [r for r in complete if r["status"] != "passed"]
    assert sum(float(r["score"]) for r in complete) == total
    assert all(float(r["score"]) == 0 and r["status"] in ("error", "failed") for r in blank), blank
    # written answers: the complete one awaits a grader (no score), the blank one is nbgrader's 0
    answers = {(r["student"], r["grade_id"]): (r["status"], r["score"]) for r in rows if r["grade_id"] in written}
    assert all(answers[("complete", g)] == ("needs manual grade", "") for g in written), answers
    assert all(answers[("blank", g)] == ("missing", "0") for g in written), answers
    tagged = {path.stem: sum(TAG in c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells)
              for path in source_notebooks(assignment)}
    assert all(tagged.values()), f"{assignment}: a notebook tags no cell illustrative: {tagged}"
    hidden = [line.strip() for path in source_notebooks(assignment)
              for cell in nbformat.read(path, as_version=4).cells
              for line in cell.source.split("### BEGIN HIDDEN TESTS")[-1].split("### END HIDDEN TESTS")[0].splitlines()
              if "### BEGIN HIDDEN TESTS" in cell.source and len(line.strip()) >= 8]
    for page in (out / "feedback").rglob("*.html"):
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert not [h for h in hidden if h in text], page
        # graded with the illustrative cells skipped (what makes these full marks a proof that no graded
        # cell depends on one), and the student is told so
        assert text.count(SKIPPED_NOTE.strip()) == tagged[page.stem], page
    assert (REPO / "notebooks" / assignment).is_dir()
