"""The summary at the top of a feedback page, as a student opens it in chromium at 1100 px, offline (issue 28).

One sliding_window class is graded for real, once for the module: ``failing`` (one exercise passes, one
raises, one loops past its cell's limit, one modifies its input in place, the written answer awaits a
grader) and ``blank`` (the release as handed out: every exercise an error, the written answer missing).
A copy of the class then gets a grader's entries (a score and a long comment on ``failing``'s written
answer, a changed score on a test cell) and ``export`` makes its pages again (``graded``).

The oracles are independent of the page: the exercises' names from the solution notebook
(``graded_cells``: ``grading.check("name", ...)``), each row's points, status and message from
``details.csv`` (the worker's rows, with the graders' entries), the hidden lines from the solution. The
layout is measured in the browser: no verdict, output or comment is wider than its container."""
import csv
import shutil
from pathlib import Path

import pytest

from autograder.course.source import graded_cells
from autograder.grading.preprocessors import secrets_of
from autograder.grading.summary import PASSED_VERDICT, one_line
from autograder.intake import samples as subs

pytestmark = [pytest.mark.browser, pytest.mark.autograder]

ASSIGNMENT = "sliding_window"
WIDTH = 1100
CELLS = graded_cells(ASSIGNMENT)
NAMES = {c.grade_id: ", ".join(c.exercises) if c.exercises else None for c in CELLS}
WRITTEN = next(c for c in CELLS if c.kind == "manual")
COMMENT = ("Right about the overwritten slot; the order argument is missing. See "
           + "slot_i_mod_W_holds_position_i_minus_W_" * 6 + " (one long word, as graders sometimes paste).")
LOOP_SCORE = 1.0            # a grader's score for test_sliding_window_loop (the autograder gave 0)


def _failing(release, solution):
    nb = subs.fill(release, solution)
    nb = subs.edit(nb, "rolling_buffer_decode_step", subs.replace(          # writes into the caller's caches
        "k_cache, v_cache = k_cache.clone(), v_cache.clone()", "pass"))
    nb = subs.edit(nb, "sliding_window_loop", lambda s: s + (
        "\n\n_ok = sliding_window_loop\n\n\ndef sliding_window_loop(q, k, v, w):\n"
        "    if q.dtype == torch.float64:\n        raise RuntimeError('float64 is not supported by my loop')\n"
        "    return _ok(q, k, v, w)\n"))
    nb = subs.edit(nb, "sliding_window_chunks", lambda s: s + (
        "\n\n_okc = sliding_window_chunks\n\n\ndef sliding_window_chunks(q, k, v, w):\n"
        "    if q.shape[-2] > 50:\n        while True:\n            pass\n    return _okc(q, k, v, w)\n"))
    return nb


def _details(out: Path) -> dict[str, dict[str, dict]]:
    with open(out / "details.csv") as f:
        rows = {}
        for r in csv.DictReader(f):
            rows.setdefault(r["student"], {})[r["grade_id"]] = r
    return rows


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """{"failing", "blank", "graded"}: (page, details rows of that student); and the hidden lines, the
    class report, the results."""
    from nbgrader.api import Gradebook

    from autograder.outputs.export import export
    from autograder.outputs.grade import grade
    tmp = tmp_path_factory.mktemp("feedback-summary")
    release, solution = subs.load(ASSIGNMENT, ASSIGNMENT)
    subs.write(_failing(release, solution), tmp / "subs" / "failing" / f"{ASSIGNMENT}.ipynb")
    subs.write(release, tmp / "subs" / "blank" / f"{ASSIGNMENT}.ipynb")
    out = tmp / "out"
    results = grade(ASSIGNMENT, tmp / "subs", out, workers=2, quiet=True, sandbox="auto", submission_timeout=300)
    after = tmp / "after"                                   # the same class after a grader's entries
    shutil.copytree(out, after)
    with Gradebook(f"sqlite:///{after / 'gradebook.db'}") as gb:
        g = gb.find_grade(WRITTEN.grade_id, ASSIGNMENT, ASSIGNMENT, "failing")
        g.manual_score, g.needs_manual_grade = 1.5, False
        gb.find_comment(WRITTEN.grade_id, ASSIGNMENT, ASSIGNMENT, "failing").manual_comment = COMMENT
        gb.find_grade("test_sliding_window_loop", ASSIGNMENT, ASSIGNMENT, "failing").manual_score = LOOP_SCORE
        gb.db.commit()
    export(after)
    page = lambda root, s: root / "feedback" / s / ASSIGNMENT / f"{ASSIGNMENT}.html"   # noqa: E731
    before, later = _details(out), _details(after)
    return dict(failing=(page(out, "failing"), before["failing"]), blank=(page(out, "blank"), before["blank"]),
                graded=(page(after, "failing"), later["failing"]), secrets=secrets_of(solution),
                report=out / "report.html", out=out, results=results)


def _open(page, path: Path):
    page.set_viewport_size({"width": WIDTH, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page


def _summary(page) -> list[dict]:
    return page.evaluate("""[...document.querySelectorAll('#feedback-summary tr.fs-row')].map(tr => ({
        grade_id: tr.dataset.gradeId, name: tr.querySelector('.fs-name').innerText.trim(),
        points: tr.querySelector('.fs-points').innerText.trim(), status: tr.querySelector('.fs-status').innerText.trim(),
        verdict: tr.querySelector('.fs-verdict').innerText.trim(),
        href: (tr.querySelector('a.fs-link') || {}).hash || null}))""")


def _too_wide(page, selector: str) -> list[str]:
    """The elements of ``selector`` wider than their own box (content hidden to the right)."""
    return page.evaluate("""sel => [...document.querySelectorAll(sel)]
        .filter(e => e.scrollWidth > e.clientWidth + 1)
        .map(e => e.tagName + '.' + e.className + ' ' + e.scrollWidth + '>' + e.clientWidth + ': '
                  + e.innerText.slice(0, 100))""", selector)


def _page_scrolls_sideways(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth + 1")


@pytest.mark.parametrize("student", ["failing", "blank", "graded"])
def test_summary_names_every_exercise_with_its_points_and_verdict(graded, student, offline_page):
    path, details = graded[student]
    page = _open(offline_page, path)
    rows = _summary(page)
    assert [r["grade_id"] for r in rows] == [c.grade_id for c in CELLS], "one row per graded cell, in notebook order"
    for r in rows:
        want = details[r["grade_id"]]
        name = NAMES[r["grade_id"]] or "Written question: rolling buffer"
        assert r["name"] == name, r
        assert r["points"] == f"{float(want['score'] or 0):g} / {float(want['max_score']):g}", (r, want)
        assert r["status"] == want["status"], (r, want)
        if want["status"] == "needs manual grade":
            assert "not in the score yet" in r["verdict"], r
        elif want["status"] == "graded by hand":
            assert r["verdict"] == " ".join(COMMENT.split()), r
        elif want["status"] == "missing":
            assert r["verdict"].startswith("Not answered"), r
        elif want["status"] == "passed":
            assert r["verdict"] == PASSED_VERDICT, r
        else:                      # the worker's one-line message (and the grader's change, after export)
            assert r["verdict"] == one_line(want["message"]), (r, want)
    summary = page.inner_text("#feedback-summary")
    assert "Test cell" not in summary, "nbgrader's anonymous list is still there"
    assert not [s for s in graded["secrets"] if s in summary], "a hidden test's line is in the summary"
    top = page.evaluate("document.querySelector('#feedback-summary').getBoundingClientRect().top")
    assert 0 <= top < 100, f"the summary should open the page, it starts {top:.0f} px down"
    assert not page.refused and not page.console_errors, (page.refused[:3], page.console_errors[:3])


def test_each_status_appears(graded):
    """The class covers every status a page can show (else the test above proves less than it says)."""
    seen = {r["status"] for s in ("failing", "blank", "graded") for r in graded[s][1].values()}
    assert {"passed", "failed", "error", "timeout", "missing", "needs manual grade", "graded by hand"} <= seen, seen
    loop = graded["graded"][1]["test_sliding_window_loop"]
    assert float(loop["score"]) == LOOP_SCORE and "a grader set the score" in loop["message"]


@pytest.mark.parametrize("student", ["failing", "graded"])
def test_summary_links_reach_their_cells(graded, student, offline_page):
    page = _open(offline_page, graded[student][0])
    rows = _summary(page)
    assert all(r["href"] == f"#{r['grade_id']}" for r in rows), rows
    for r in rows:
        page.evaluate("window.scrollTo(0, 0)")
        page.click(f"#feedback-summary tr[data-grade-id='{r['grade_id']}'] a.fs-link")
        page.wait_for_function(f"location.hash === '#{r['grade_id']}'")
        box = page.evaluate("""id => { const a = document.getElementsByName(id)[0];
            const panel = a.nextElementSibling || a.parentElement; const b = panel.getBoundingClientRect();
            return {top: b.top, height: innerHeight, scrolled: scrollY}; }""", r["grade_id"])
        assert box["scrolled"] > 0 and -2 <= box["top"] < box["height"] - 40, (r["grade_id"], box)


@pytest.mark.parametrize("student", ["failing", "blank", "graded"])
def test_verdicts_and_comments_wrap_within_the_page(graded, student, offline_page, screenshot):
    page = _open(offline_page, graded[student][0])
    assert not _page_scrolls_sideways(page), "the page scrolls sideways at 1100 px"
    for selector in ("#feedback-summary", "#feedback-summary td", "div.output_subarea pre", "div.output_subarea",
                     "div.panel-footer", "div.panel-footer *"):
        wide = _too_wide(page, selector)
        assert not wide, f"{selector}: wider than its box at {WIDTH} px: {wide[:3]}"
    text = page.inner_text("body")
    verdicts = [line for line in text.splitlines() if line.startswith("Grader's verdict")]
    assert verdicts, "no verdict line under the test cells"
    name = {"failing": "feedback-summary-top", "blank": "feedback-summary-blank", "graded": "feedback-summary-graded"}
    screenshot(page, name[student])
    if student == "failing":                    # the verdict of the failing exercise, as it wraps under its cell
        page.locator("pre", has_text="Grader's verdict: failed").first.scroll_into_view_if_needed()
        screenshot(page, "feedback-summary-verdict")
    if student == "graded":
        page.locator("div.panel-footer").first.scroll_into_view_if_needed()
        screenshot(page, "feedback-summary-comment")


def test_class_report_verdicts_wrap(graded, offline_page):
    page = _open(offline_page, graded["report"])
    assert not _page_scrolls_sideways(page), "the class report scrolls sideways at 1100 px"
    wide = _too_wide(page, "td")
    assert not wide, f"report cells wider than their box: {wide[:3]}"
    assert "timeout" in page.inner_text("body")


def test_gradescope_entry_opens_with_the_same_summary(graded, offline_page, tmp_path):
    """feedback_html (the HTML entry of results.json) starts with the page's summary (the autograded rows:
    written answers are Gradescope's own questions), and wraps inside a 700 px column."""
    from autograder.outputs.gradescope import feedback_html
    page_path, details = graded["failing"]
    res = next(r for r in graded["results"] if r.student == "failing")
    rows = [r for r in res.rows if r.kind != "manual"]
    cells = {(c.notebook, c.grade_id): c for c in CELLS}
    entry = feedback_html(page_path, ASSIGNMENT, rows, cells, f"{ASSIGNMENT}.ipynb", graded["secrets"])
    assert entry.lstrip().startswith('<section class="fs-summary"'), entry[:200]
    doc = tmp_path / "gradescope.html"
    doc.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                   f"<div id='gs' style='width: 700px'>{entry}</div></body></html>")
    page = _open(offline_page, doc)
    got = {r["grade_id"]: r for r in _summary(page)}
    assert list(got) == [r.grade_id for r in rows]
    for r in rows:
        assert got[r.grade_id]["name"] == NAMES[r.grade_id]
        assert got[r.grade_id]["status"] == details[r.grade_id]["status"]
        assert got[r.grade_id]["points"] == f"{r.score:g} / {r.max_score:g}"
    html_rows = _summary(_open(offline_page, page_path))
    same = {r["grade_id"]: (r["name"], r["points"], r["status"], r["verdict"]) for r in html_rows}
    assert all(same[g] == (v["name"], v["points"], v["status"], v["verdict"]) for g, v in got.items()), \
        "the Gradescope entry's summary differs from the page's"
    page = _open(offline_page, doc)
    wide = page.evaluate("""() => { const box = document.getElementById('gs').getBoundingClientRect().right;
        return [...document.querySelectorAll('#gs *')].filter(e => e.getBoundingClientRect().right > box + 1
                 || e.scrollWidth > e.clientWidth + 1).map(e => e.tagName + ': ' + e.innerText.slice(0, 80)); }""")
    assert not wide, f"the Gradescope entry is wider than its column: {wide[:3]}"
    assert not [s for s in graded["secrets"] if s in entry]
