"""The class report and the similarity report, on a generated RoPE class graded for real: complete, two
blank, wrong, partial, a renamed copy of the complete one, one whose function loops (a timeout), a missing
and an unreadable notebook. The oracle is details.csv / grades.csv read with the csv module (and, for the
similarity, how the class was made), never the report's own code."""
import csv
import html
import re
from collections import Counter
from pathlib import Path

import nbformat
import pytest

from autograder.intake import samples as subs
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder

STUDENTS = {"complete", "renamed", "blank", "blank_too", "wrong", "partial", "timeout", "missing", "unreadable"}


def _renamed_copy(nb, solution):
    """``nb`` with every local variable of every solution code cell renamed (a copy made to look new)."""
    for cell in solution.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            nb = subs.edit(nb, meta["grade_id"], subs.rename_locals)
    return nb


def _make_class(dirs: Path) -> None:
    release, solution = subs.load("rope", "rope")
    complete = subs.fill(release, solution)
    subs.write(complete, dirs / "complete" / "rope.ipynb")
    renamed = _renamed_copy(complete, solution)
    assert renamed.cells != complete.cells
    subs.write(renamed, dirs / "renamed" / "rope.ipynb")
    subs.write(release, dirs / "blank" / "rope.ipynb")
    subs.write(release, dirs / "blank_too" / "rope.ipynb")
    subs.write(subs.edit(complete, "apply_rope_pairs", lambda s: s + (      # right but for a hidden case's base
        "\n\n_correct = apply_rope_pairs\n\n\ndef apply_rope_pairs(x, positions, base=10000.0):\n"
        "    return _correct(x, positions)\n")), dirs / "wrong" / "rope.ipynb")
    subs.write(subs.fill(release, solution, only={"rope_thetas", "rope_matrix"}), dirs / "partial" / "rope.ipynb")
    subs.write(subs.edit(complete, "apply_rope_halves", lambda s: s + (
        "\n\ndef apply_rope_halves(x, positions, base=10000.0):\n    while True:\n        pass\n")),
        dirs / "timeout" / "rope.ipynb")
    (dirs / "missing").mkdir()
    (dirs / "missing" / "README.txt").write_text("forgot the notebook")
    (dirs / "unreadable").mkdir()
    (dirs / "unreadable" / "rope.ipynb").write_text('{"cells": [')


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _make_class(root / "subs")
    out = root / "out"
    results = grade("rope", root / "subs", out, workers=2, cell_timeout=15, submission_timeout=300, quiet=True)
    return root, out, results


def test_exercise_counts_and_pass_rates_equal_details_csv(graded):
    _, out, _ = graded
    details = _csv(out / "details.csv")
    assert {d["student"] for d in details} == STUDENTS
    report = {(r["notebook"], r["grade_id"]): r for r in _csv(out / "report" / "exercises.csv")}
    cells = {(d["notebook"], d["grade_id"]) for d in details}
    assert set(report) == cells
    for key in cells:
        rows = [d for d in details if (d["notebook"], d["grade_id"]) == key]
        counts = Counter(d["status"] for d in rows)
        r = report[key]
        assert int(r["students"]) == len(rows) == len(STUDENTS), key
        for status in ("passed", "failed", "error", "timeout", "missing", "needs manual grade", "graded by hand"):
            assert int(r[status]) == counts.get(status, 0), (key, status)
        assert float(r["pass_rate"]) == pytest.approx(counts["passed"] / len(rows), abs=1e-3), key
    # the class as made: apply_rope_pairs is right in complete, renamed and timeout (only its halves loop)
    pairs = [d for d in details if d["grade_id"] == "test_apply_rope_pairs"]
    assert {d["student"] for d in pairs if d["status"] == "passed"} == {"complete", "renamed", "timeout"}
    assert {d["student"] for d in details if d["status"] == "timeout"} == {"timeout"}


def test_page_shows_the_same_numbers(graded):
    _, out, _ = graded
    page = (out / "report.html").read_text()
    details = _csv(out / "details.csv")
    for row in _csv(out / "report" / "exercises.csv"):
        rows = [d for d in details if d["grade_id"] == row["grade_id"]]
        passed = sum(d["status"] == "passed" for d in rows)
        cells = re.search(rf"<tr><td>{row['notebook']}</td><td>{row['grade_id']}</td>(.*?)</tr>", page)
        assert cells, row["grade_id"]
        values = re.findall(r"<td>(.*?)</td>", cells.group(1))
        assert values[1] == str(len(rows)) and values[2] == str(passed), (row["grade_id"], values)
        if row["kind"] != "manual":
            assert f"{passed / len(rows):.0%}" in values


def test_score_histogram_counts_every_student_once(graded):
    _, out, _ = graded
    grades = _csv(out / "grades.csv")
    bins = _csv(out / "report" / "scores.csv")
    assert sum(int(b["students"]) for b in bins) == len(grades)
    for g in grades:
        score = float(g["score"])
        inside = [b for i, b in enumerate(bins) if float(b["low"]) <= score < float(b["high"])
                  or (i == len(bins) - 1 and score == float(b["high"]))]
        assert inside and int(inside[0]["students"]) >= 1, g


def test_verdicts_are_grouped_by_case_and_device(graded):
    _, out, _ = graded
    details = _csv(out / "details.csv")
    verdicts = _csv(out / "report" / "verdicts.csv")
    # every verdict that is not a pass is counted once, in the group of its exercise and status
    for (gid, status), n in Counter((d["grade_id"], d["status"]) for d in details
                                    if d["status"] not in ("passed", "needs manual grade")).items():
        assert sum(int(v["students"]) for v in verdicts if v["grade_id"] == gid and v["status"] == status) == n
    # wrong forgets the base: it fails a named hidden case on the CPU: the group says which, and who
    wrong = next(d for d in details if d["student"] == "wrong" and d["grade_id"] == "test_apply_rope_pairs")
    case = re.match(r"apply_rope_pairs, case (\d+/\d+ '[^']*') on (\w+): ", wrong["message"])
    assert case, wrong["message"]
    group = next(v for v in verdicts if v["grade_id"] == "test_apply_rope_pairs" and "wrong" in v["who"].split())
    assert (group["case"], group["device"]) == case.groups()
    # the blank submissions' not-implemented verdict is one group of three (blank, blank_too, partial)
    thetas = [v for v in verdicts if v["grade_id"] == "test_apply_rope_halves" and v["status"] == "error"]
    assert any(set(v["who"].split()) >= {"blank", "blank_too", "partial"} for v in thetas), thetas


def test_slowest_submissions_and_missing_notebooks(graded):
    _, out, results = graded
    times = _csv(out / "report" / "times.csv")
    assert {t["student"] for t in times} == STUDENTS
    seconds = {r["student"]: r["seconds"] for r in results}
    for t in times:
        assert float(t["seconds"]) == pytest.approx(seconds[t["student"]], rel=1e-3, abs=1e-3)
    assert [float(t["seconds"]) for t in times] == sorted((float(t["seconds"]) for t in times), reverse=True)
    page = html.unescape((out / "report.html").read_text())
    assert f"<td>{times[0]['student']}</td><td>{float(times[0]['seconds']):.1f}</td>" in page
    trouble = {(p["student"], p["status"]) for p in _csv(out / "report" / "problems.csv")}
    assert trouble == {("missing", "missing"), ("unreadable", "error")}


def test_nothing_in_the_reports_shows_a_hidden_test(graded, rope_hidden_lines):
    _, out, _ = graded
    assert len(list((out / "report").glob("figure-*.png"))) >= 4
    for path in [out / "report.html", *sorted(p for p in (out / "report").iterdir() if p.suffix != ".png")]:
        text = html.unescape(path.read_text())
        assert "HIDDEN TESTS" not in text, path.name
        shown = [line for line in rope_hidden_lines if line in text]
        assert not shown, f"{path.name} shows hidden-test lines: {shown[:3]}"


def test_renamed_copy_ranks_first_and_blanks_are_not_flagged(graded):
    _, out, _ = graded
    pairs = _csv(out / "report" / "similarity.csv")
    assert pairs, "no pair shares any code: the renamed copy was not found"
    top = pairs[0]
    assert {top["student_a"], top["student_b"]} == {"complete", "renamed"}, pairs[:3]
    assert top["flagged"] == "yes" and float(top["similarity_a"]) > 0.9 and float(top["similarity_b"]) > 0.9
    for p in pairs:
        if {p["student_a"], p["student_b"]} & {"blank", "blank_too", "missing", "unreadable"}:
            assert p["flagged"] == "no", p
        if {p["student_a"], p["student_b"]} == {"blank", "blank_too"}:
            pytest.fail("the two blank submissions (the template as released) share code after it is taken out")
    side = (out / "report" / "similarity.html").read_text()
    assert "<mark>" in side and "complete" in side and "renamed" in side
    assert "report/similarity.html" in (out / "report.html").read_text()


def test_rerun_refreshes_the_report(graded):
    """One blank submission becomes complete: the rerun grades it alone, and the report counts it."""
    root, out, _ = graded
    release, solution = subs.load("rope", "rope")
    subs.write(subs.fill(release, solution), root / "subs" / "blank_too" / "rope.ipynb")
    before = {r["grade_id"]: r for r in _csv(out / "report" / "exercises.csv")}
    results = grade("rope", root / "subs", out, workers=2, cell_timeout=15, submission_timeout=300, quiet=True)
    assert sum(not r.get("cached") for r in results) == 1
    after = {r["grade_id"]: r for r in _csv(out / "report" / "exercises.csv")}
    details = _csv(out / "details.csv")
    for gid, row in after.items():
        assert int(row["passed"]) == sum(d["status"] == "passed" for d in details if d["grade_id"] == gid)
    assert int(after["test_rope_thetas"]["passed"]) == int(before["test_rope_thetas"]["passed"]) + 1
    times = {t["student"]: t["reused"] for t in _csv(out / "report" / "times.csv")}
    assert times["blank_too"] == "no" and times["complete"] == "yes"
    pairs = _csv(out / "report" / "similarity.csv")      # blank_too now hands in complete's code
    assert any(p["flagged"] == "yes" and {p["student_a"], p["student_b"]} == {"blank_too", "complete"} for p in pairs)


@pytest.mark.browser
def test_report_opens_offline_with_every_figure(graded, offline_page, screenshot):
    _, out, _ = graded
    page = offline_page
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) >= 4, images
    for alt, complete, w, h in images:
        assert complete and w > 100 and h > 100, f"figure not rendered: {alt}"
        assert alt, "a figure without a title"
    text = page.inner_text("body")
    assert "Pass rate per autograded exercise" in text and "Most common verdicts" in text
    assert not page.refused, f"the report asked for {page.refused[:3]} (offline it gets nothing)"
    assert not page.console_errors, page.console_errors[:3]
    screenshot(page, "class-report", full_page=True)
    page.click("text=The similarity report")
    page.wait_for_load_state("load")
    assert "similarity.html" in page.url
    assert page.locator("mark").count() > 0
    assert not page.refused and not page.console_errors, (page.refused[:3], page.console_errors[:3])
    screenshot(page, "similarity-report")
