"""End-to-end grading of the RoPE assignment with nbgrader: one fixture submission per failure mode,
graded once (in parallel) for the whole module."""
import csv
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.intake import samples as subs
from autograder.course import timings
from autograder.course.source import REPO, graded_cells
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder

CELLS = [c for c in graded_cells("rope") if c.kind == "test"]      # written answers are graded by hand
TOTAL = sum(c.max_score for c in CELLS)                            # what the autograder gives
MAX = sum(c.max_score for c in graded_cells("rope"))              # the notebook's points
POINTS = {c.grade_id: c.max_score for c in CELLS}
CELL_TIMEOUT = 15


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Grade every fixture submission once; yield (out folder, {student: {grade_id: row}}, grades)."""
    root = tmp_path_factory.mktemp("grading")
    dirs = root / "submissions"
    release, solution = subs.load("rope", "rope")
    complete = subs.fill(release, solution)
    subs.write(complete, dirs / "complete" / "rope.ipynb")
    subs.write(release, dirs / "blank" / "rope.ipynb")
    loop = subs.edit(complete, "apply_rope_halves", lambda s: s + (
        "\n\ndef apply_rope_halves(x, positions, base=10000.0):\n    while True:\n        pass\n"))
    subs.write(loop, dirs / "infinite_loop" / "rope.ipynb")
    all_loop = complete
    for name in ("rope_thetas", "rope_matrix", "apply_rope_pairs", "apply_rope_halves"):
        all_loop = subs.edit(all_loop, name, lambda s, name=name: s + (
            f"\n\ndef {name}(*args, **kwargs):\n    while True:\n        pass\n"))
    subs.write(all_loop, dirs / "all_loop" / "rope.ipynb")
    subs.write(subs.delete(complete, "test_rope_matrix"), dirs / "deleted_test" / "rope.ipynb")
    syntax = subs.edit(complete, "rope_matrix", lambda s: s + "\n    return return\n")
    subs.write(syntax, dirs / "syntax_error" / "rope.ipynb")
    noisy = subs.edit(complete, "rope_thetas", lambda s: s.replace(
        "def rope_thetas(", "import sys, warnings\n\ndef _noise():\n    warnings.warn('a harmless warning')\n"
        "    print('debug: on stderr', file=sys.stderr)\n\n\ndef rope_thetas(", 1).replace(
        '    """\n', '    """\n    _noise()\n', 1))
    subs.write(noisy, dirs / "writes_stderr" / "rope.ipynb")
    ignores_base = subs.edit(complete, "apply_rope_pairs", lambda s: s + (
        "\n\n_correct = apply_rope_pairs\n\n\ndef apply_rope_pairs(x, positions, base=10000.0):\n"
        "    return _correct(x, positions)          # forgets the base: only a hidden case notices\n"))
    subs.write(ignores_base, dirs / "ignores_base" / "rope.ipynb")
    peek = subs.fill(release, solution)
    peek.cells.append(nbformat.v4.new_code_cell("print(_ih)\nprint(In)"))
    subs.write(peek, dirs / "prints_history" / "rope.ipynb")
    (dirs / "invalid_json").mkdir()
    (dirs / "invalid_json" / "rope.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
    (dirs / "missing_notebook").mkdir()
    (dirs / "missing_notebook" / "notes.txt").write_text("I forgot to upload it")

    before = _digest(dirs)
    out = root / "out"
    results = grade("rope", dirs, out, workers=2, cell_timeout=CELL_TIMEOUT, submission_timeout=300, quiet=True)
    assert _digest(dirs) == before, "grading modified the submissions folder"
    rows = {}                # the autograded cells' rows; the written answers' are checked on their own
    with open(out / "details.csv") as f:
        for row in csv.DictReader(f):
            if row["grade_id"] in POINTS:
                rows.setdefault(row["student"], {})[row["grade_id"]] = row
    with open(out / "grades.csv") as f:
        grades = {r["student"]: r for r in csv.DictReader(f)}
    yield out, rows, grades, results


def test_output_files_and_columns(graded):
    out, rows, grades, _ = graded
    with open(out / "grades.csv") as f:
        assert next(csv.reader(f)) == ["student", "assignment", "score", "max_score", "final"]
    with open(out / "details.csv") as f:
        assert next(csv.reader(f))[:6] == ["student", "notebook", "grade_id", "score", "max_score", "status"]
    assert set(grades) == set(rows) == {"complete", "blank", "infinite_loop", "all_loop", "deleted_test", "syntax_error",
                                        "prints_history", "invalid_json", "missing_notebook",
                                        "writes_stderr", "ignores_base"}
    for student, by_id in rows.items():
        assert set(by_id) == set(POINTS), student
        assert (out / "feedback" / student / "rope" / "rope.html").is_file(), student
        assert float(grades[student]["max_score"]) == MAX


def test_complete_submission_gets_full_marks(graded):
    _, rows, grades, _ = graded
    assert float(grades["complete"]["score"]) == TOTAL
    assert all(r["status"] == "passed" for r in rows["complete"].values())


def test_warnings_and_stderr_cost_nothing(graded):
    """nbgrader alone scores a test cell that wrote to stderr as 0; a student's warning must not."""
    _, rows, grades, _ = graded
    assert float(grades["writes_stderr"]["score"]) == TOTAL
    assert all(r["status"] == "passed" for r in rows["writes_stderr"].values())


def test_release_as_handed_out_gets_zero(graded):
    _, rows, grades, _ = graded
    assert float(grades["blank"]["score"]) == 0
    assert {r["status"] for r in rows["blank"].values()} == {"error"}
    assert all("NotImplementedError" in r["message"] for r in rows["blank"].values())


def test_infinite_loop_costs_only_that_exercise(graded):
    _, rows, grades, results = graded
    r = rows["infinite_loop"]
    assert r["test_apply_rope_halves"]["status"] == "timeout" and float(r["test_apply_rope_halves"]["score"]) == 0
    others = [g for g in POINTS if g != "test_apply_rope_halves"]
    assert all(r[g]["status"] == "passed" for g in others)
    assert float(grades["infinite_loop"]["score"]) == TOTAL - POINTS["test_apply_rope_halves"]
    # the test cell's own limit (timings.json: 5x the reference's time, at least 10 s), not the 15 s cell timeout
    limit = timings.limits("rope", CELL_TIMEOUT)[0]["rope"]["test_apply_rope_halves"]
    assert limit < CELL_TIMEOUT
    assert r["test_apply_rope_halves"]["message"].startswith(f"did not finish within {limit:g} s (this cell's limit"), r
    seconds = next(x["seconds"] for x in results if x["student"] == "infinite_loop")
    complete = next(x["seconds"] for x in results if x["student"] == "complete")
    assert seconds < complete + 3 * CELL_TIMEOUT, f"an infinite loop took {seconds:.0f} s to grade ({complete:.0f} s complete)"


def test_every_function_looping_costs_one_limit_per_test_cell(graded):
    """Each test cell stops at its own limit and says so; the loops cost about the sum of those limits, not
    one cell timeout per cell (`python -m benchmarks grading` measures it on every assignment)."""
    _, rows, grades, results = graded
    limits = timings.limits("rope", CELL_TIMEOUT)[0]["rope"]
    r = rows["all_loop"]
    for gid, limit in limits.items():
        assert r[gid]["status"] == "timeout" and float(r[gid]["score"]) == 0, r[gid]
        assert r[gid]["message"].startswith(f"did not finish within {limit:g} s"), r[gid]
    seconds = next(x["seconds"] for x in results if x["student"] == "all_loop")
    complete = next(x["seconds"] for x in results if x["student"] == "complete")
    # what the loops cost beyond a complete submission: their limits, not one cell timeout each
    assert seconds - complete < len(limits) * CELL_TIMEOUT, f"{seconds:.0f} s, against {complete:.0f} s complete"


def test_deleted_test_cell_is_restored_and_graded(graded):
    _, rows, grades, _ = graded
    row = rows["deleted_test"]["test_rope_matrix"]
    assert row["status"] == "passed" and float(row["score"]) == POINTS["test_rope_matrix"]
    assert "restored" in row["message"]
    assert float(grades["deleted_test"]["score"]) == TOTAL


def test_syntax_error_fails_that_exercise_only(graded):
    _, rows, _, _ = graded
    r = rows["syntax_error"]
    assert r["test_rope_matrix"]["status"] == "error" and float(r["test_rope_matrix"]["score"]) == 0
    assert "NameError" in r["test_rope_matrix"]["message"]
    assert all(r[g]["status"] == "passed" for g in POINTS if g != "test_rope_matrix")


def test_unreadable_and_missing_notebooks_are_reported(graded):
    out, rows, grades, _ = graded
    assert float(grades["invalid_json"]["score"]) == 0
    assert {r["status"] for r in rows["invalid_json"].values()} == {"error"}
    assert "not a readable notebook" in next(iter(rows["invalid_json"].values()))["message"]
    assert {r["status"] for r in rows["missing_notebook"].values()} == {"missing"}
    assert "could not be graded" in (out / "feedback" / "invalid_json" / "rope" / "rope.html").read_text()




def _text(html_path: Path) -> str:
    import html
    raw = re.sub(r"<style.*?</style>", "", html_path.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_feedback_never_shows_hidden_tests(graded, rope_hidden_lines):
    out, _, _, _ = graded
    hidden = rope_hidden_lines
    for page in sorted((out / "feedback").rglob("*.html")):
        text = _text(page)
        assert "HIDDEN TESTS" not in text, page
        shown = [line for line in hidden if line in text]
        assert not shown, f"{page.relative_to(out)} shows hidden-test lines: {shown}"


def test_feedback_shows_the_grading_message(graded):
    """A failing hidden test's verdict (the one-line message of course_lib.grading, naming the case, the
    device and the largest error) reaches the student, under the test cell and in details.csv."""
    out, rows, _, _ = graded
    row = rows["ignores_base"]["test_apply_rope_pairs"]
    assert row["status"] == "failed" and float(row["score"]) == 0
    assert re.match(r"apply_rope_pairs, case \d+/\d+ '.*base=500000' on cpu: output values differ: largest error",
                    row["message"]), row["message"]
    text = _text(out / "feedback" / "ignores_base" / "rope" / "rope.html")
    assert "Grader's verdict: failed: " + row["message"] in text
    assert "NotImplementedError" in _text(out / "feedback" / "blank" / "rope" / "rope.html")
    assert "Grader's verdict: passed" in _text(out / "feedback" / "complete" / "rope" / "rope.html")


def test_grade_table_printed_by_the_cli(tmp_path):
    """`python -m autograder grade` on two of the bundled samples (complete, partial) prints a table and
    where feedback is. (carol's syntax error and deleted test cell are graded in the fixture above.)"""
    import shutil
    out, dirs = tmp_path / "out", tmp_path / "samples"
    for student in ("alice", "bob"):
        shutil.copytree(REPO / "autograder" / "samples" / "rope" / student, dirs / student)
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "rope", "--submissions",
                           str(dirs), "--out", str(out), "--workers", "2",
                           "--quiet"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["student", "score", "max"])
    table = {line.split()[0]: line.split()[1:3] for line in lines[header + 1:] if line.strip() and
             not line.startswith(("grades:", "details:", "canvas:", "feedback:", "report:", "graded "))}
    assert table["alice"] == [f"{TOTAL:g}", f"{MAX:g}"]        # the written answer awaits a grader
    assert 0 < float(table["bob"][0]) < TOTAL and set(table) == {"alice", "bob"}
    assert "feedback:" in proc.stdout and (out / "grades.csv").exists() and (out / "canvas.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["grade", "nosuch", "--submissions", ".", "--out", "/tmp/x"], "unknown assignment 'nosuch'"),
    (["grade", "rope", "--submissions", "/nonexistent/dir", "--out", "/tmp/x"], "submissions folder not found"),
    (["grade", "rope", "--out", "/tmp/x"], "--submissions"),
    (["grade", "rope", "--submissions", "autograder/samples/rope", "--out", "/tmp/x", "--workers", "0"],
     "--workers must be at least 1"),
    (["release", "nosuch"], "unknown assignment 'nosuch'"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_command_line_gives_one_line_error(argv, message):
    proc = subprocess.run([sys.executable, "-m", "autograder", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autograder: error:") and message in err[0], proc.stderr


def test_written_answers_await_a_grader(graded):
    out, rows, grades, _ = graded
    written = {c.grade_id for c in graded_cells("rope") if c.kind == "manual"}
    with open(out / "details.csv") as f:
        found = {(r["student"], r["grade_id"]): r for r in csv.DictReader(f) if r["grade_id"] in written}
    for gid in written:
        assert found[("complete", gid)]["status"] == "needs manual grade" and found[("complete", gid)]["score"] == ""
        assert found[("blank", gid)]["status"] == "missing" and found[("blank", gid)]["score"] == "0"
    assert grades["complete"]["final"] == ("no" if written else "yes")
    assert grades["blank"]["final"] == "yes"


def test_feedback_made_again_after_manual_grading_still_hides_the_hidden_tests(graded, rope_hidden_lines, tmp_path):
    """export remakes a page with nbgrader's GenerateFeedback from the autograded notebook (which holds
    the hidden tests): the grader's comment and the verdicts are on it, no hidden-test line is."""
    import shutil

    from nbgrader.api import Gradebook

    from autograder.outputs.export import export
    out = tmp_path / "out"
    shutil.copytree(graded[0], out)
    written = next(c for c in graded_cells("rope") if c.kind == "manual")
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for student in ("complete", "ignores_base"):
            g = gb.find_grade(written.grade_id, "rope", "rope", student)
            g.manual_score, g.needs_manual_grade = written.max_score, False
            gb.find_comment(written.grade_id, "rope", "rope", student).manual_comment = f"Well argued, {student}."
        gb.db.commit()
    results = {r["student"]: r for r in export(out)}
    assert results["complete"]["score"] == MAX
    for student in ("complete", "ignores_base"):
        text = _text(out / "feedback" / student / "rope" / "rope.html")
        assert f"Well argued, {student}." in text
        assert "HIDDEN TESTS" not in text and not [line for line in rope_hidden_lines if line in text]
    assert "Grader's verdict: failed: " + graded[1]["ignores_base"]["test_apply_rope_pairs"]["message"] in \
        _text(out / "feedback" / "ignores_base" / "rope" / "rope.html")
