"""Instructor: formgrader on a graded OUT lists every student with the right score and opens one submission;
a manual grade entered there appears in the export.

The three RoPE samples (``autograder/samples/rope``) are graded for real into OUT; ``python -m autograder
formgrader OUT --no-browser`` then serves nbgrader's formgrader on 127.0.0.1 (a real ``jupyter lab``, its
state in the temporary folder). Chromium, with every request off the machine refused, clicks through it like
an instructor: Manage Assignments -> the assignment's submissions (each student and score as grades.csv has
them) -> Manage Students; Manual Grading -> rope -> rope -> bob, whose autograded notebook shows our verdicts
under the test cells; a score and a comment typed there are saved through formgrader's API, and
``nbgrader export`` of OUT's gradebook gives bob's new total.
"""
from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.course.source import REPO
from autograder.outputs.grade import grade

pytestmark = [pytest.mark.browser, pytest.mark.autograder]

ASSIGNMENT = NOTEBOOK = "rope"
STUDENTS = ("alice", "bob", "carol")
VERDICT = "Grader's verdict"
# bob's manual grade: partial credit on a test cell the autograder gave 0 (his apply_rope_pairs fails it)
MANUAL_CELL, MANUAL_SCORE = "test_apply_rope_pairs", 1.5
MANUAL_COMMENT_CELL, MANUAL_COMMENT = "apply_rope_pairs", "Pairs are adjacent: half credit for the rotation."

# The one request formgrader's submission page makes off the machine: nbconvert's HTMLExporter default
# ``mathjax_url`` (the classic template's MathJax 2 from cdnjs; nbgrader 0.9.6 does not set it, nor does
# OUT/nbgrader_config.py). Offline it is refused; its two consequences in the console are listed below.
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"
SUBMISSION_PAGE_ERRORS = {
    "Failed to load resource: net::ERR_FAILED",   # that refused MathJax script (checked by its URL below)
    # formgrade.js FormGrader.configureScrolling calls MathJax.Hub...: FormGrader.init stops there, after
    # loadGrades/loadComments (the score and comment inputs work and save) but before its keyboard
    # shortcuts are registered (Tab/Enter/Ctrl-. navigation falls back to the browser's own)
    "MathJax is not defined",
}



def _fmt(x: float) -> str:
    """A score as formgrader's JS writes it (``roundToPrecision(x, 2)`` then Number's toString)."""
    return f"{round(float(x), 2):g}"


@dataclass
class Formgrader:
    base: str
    token: str
    tmp: Path
    out: Path
    env: dict
    log: Path
    expected: dict = field(default_factory=dict)     # student -> (score, max_score) from grades.csv
    final: dict = field(default_factory=dict)        # student -> grades.csv's final ("no": a cell awaits a person)


@pytest.fixture(scope="module")
def fg(tmp_path_factory, browser, servers):
    """OUT graded from the three RoPE samples, and formgrader running on it (the CLI, as an instructor).
    (``browser`` first: without chromium the module skips before it grades.)"""
    tmp = tmp_path_factory.mktemp("formgrader-browser")
    for student in STUDENTS:
        dest = tmp / "subs" / student / f"{NOTEBOOK}.ipynb"
        dest.parent.mkdir(parents=True)
        shutil.copy2(REPO / "autograder" / "samples" / ASSIGNMENT / student / f"{NOTEBOOK}.ipynb", dest)
    out = tmp / "out"
    grade(ASSIGNMENT, tmp / "subs", out, workers=2, quiet=True, sandbox="auto", submission_timeout=300)
    with open(out / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT]
    expected = {r["student"]: (float(r["score"]), float(r["max_score"])) for r in rows}
    final = {r["student"]: r["final"] for r in rows}
    assert sorted(expected) == sorted(STUDENTS), expected

    state = tmp / "jupyter"
    for sub in ("config", "data", "runtime", "ipython"):
        (state / sub).mkdir(parents=True)
    token = secrets.token_hex(24)
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTEST_CURRENT_TEST", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"}}
    env.update(JUPYTER_TOKEN=token, PYTHONUNBUFFERED="1", JUPYTER_CONFIG_DIR=str(state / "config"),
               JUPYTER_DATA_DIR=str(state / "data"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               IPYTHONDIR=str(state / "ipython"))
    port = servers.free_port()
    log = tmp / "formgrader.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autograder", "formgrader", str(out), "--port", str(port), "--no-browser"],
            cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        servers.wait_until_up(proc, base, token, log, "formgrader")
        yield Formgrader(base, token, tmp, out, env, log, expected, final)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):       # the CLI exec'd jupyter lab: its group
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def _open(page, fg: Formgrader, path: str):
    """Open ``path`` logged in with the token, as the server's printed link does.

    Through /login, not ``path?token=``: a formgrader page that takes the token sets jupyter_server's login
    cookie with formgrader's own base_url, "" (nbgrader's BaseHandler strips the "/"), so with no Path: the
    browser scopes it to that page's folder and the page's own API calls (/formgrader/api/...) are answered
    302 to the login page, leaving the table at "Loading, please wait...". /login's cookie has Path=/."""
    page.goto(f"{fg.base}/login?token={fg.token}&next={urllib.parse.quote(path)}")
    assert urllib.parse.urlparse(page.url).path.startswith(path), f"not logged in: {page.url}"


def _wait_table(page):
    """formgrader's list pages fill #main-table from its API (Backbone), then set ``models.loaded``."""
    page.wait_for_function("() => window.models !== undefined && window.models.loaded === true",
                           timeout=20_000)


def _rows(page, cols: list[str]) -> list[dict]:
    return page.evaluate("""cols => [...document.querySelectorAll('#main-table tr')].map(tr =>
        Object.fromEntries(cols.map(c => [c, (tr.querySelector('td.' + c) || {}).innerText || ''])))""", cols)


def _export(fg: Formgrader, name: str) -> dict[str, dict]:
    """``nbgrader export`` of OUT's gradebook, as an instructor runs it: student -> row."""
    to = fg.tmp / name
    subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--CourseDirectory.root={fg.out}",
                    f"--CourseDirectory.db_url=sqlite:///{fg.out / 'gradebook.db'}", f"--to={to}"],
                   check=True, cwd=fg.tmp, env=fg.env, capture_output=True, timeout=120)
    with open(to, newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}


def _bob_grade(fg: Formgrader):
    """bob's grade and comment rows as the gradebook has them now: (manual_score, auto_score, manual_comment)."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{fg.out / 'gradebook.db'}") as gb:
        g = gb.find_grade(MANUAL_CELL, NOTEBOOK, ASSIGNMENT, "bob")
        c = gb.find_comment(MANUAL_COMMENT_CELL, NOTEBOOK, ASSIGNMENT, "bob")
        return g.manual_score, g.auto_score, c.manual_comment


def test_formgrader_lists_every_student_with_the_graded_score(fg, offline_page, screenshot):
    page = offline_page
    # /formgrader redirects to Manage Assignments; the rope row's submission count links to its submissions
    _open(page, fg, "/formgrader")
    page.wait_for_url("**/formgrader/manage_assignments", timeout=20_000)
    _wait_table(page)
    page.locator("#main-table tr", has_text=ASSIGNMENT).locator("td.num-submissions a").click()
    page.wait_for_url(f"**/formgrader/manage_submissions/{ASSIGNMENT}", timeout=20_000)
    _wait_table(page)
    rows = {r["student-id"]: r for r in _rows(page, ["student-id", "status", "score"])}
    assert sorted(rows) == sorted(STUDENTS), rows
    for student, (score, max_score) in fg.expected.items():
        assert rows[student]["score"] == f"{_fmt(score)} / {_fmt(max_score)}", (student, rows[student])
        # autograded (not "needs autograding"); a cell a person grades still open <=> grades.csv not final
        status = "graded" if fg.final[student] == "yes" else "needs manual grading"
        assert rows[student]["status"] == status, (student, fg.final[student], rows[student])
    page.locator("#main-table").scroll_into_view_if_needed()
    screenshot(page, "formgrader-students")

    # the sidebar's Manage Students: each student's total over the gradebook's assignments (rope only)
    page.get_by_role("link", name="Manage Students").click()
    page.wait_for_url("**/formgrader/manage_students", timeout=20_000)
    _wait_table(page)
    totals = {r["id"]: r["score"] for r in _rows(page, ["id", "score"])}
    assert totals == {s: f"{_fmt(a)} / {_fmt(b)}" for s, (a, b) in fg.expected.items()}, totals

    assert not page.refused, f"formgrader's list pages asked for {page.refused} (offline they get nothing)"
    assert not page.console_errors, page.console_errors


def test_manual_grade_in_formgrader_reaches_the_export(fg, offline_page, screenshot, servers):
    before = _export(fg, "export-before.csv")
    assert float(before["bob"]["score"]) == fg.expected["bob"][0], before["bob"]
    manual, auto, _ = _bob_grade(fg)
    assert manual is None and auto is not None, (manual, auto)

    page = offline_page
    failed = []       # the console's "Failed to load resource" lines name their URL only in the location
    page.on("console", lambda m: failed.append(m.location.get("url")) if m.type == "error"
            and m.text.startswith("Failed to load resource") else None)

    # Manual Grading -> rope -> rope -> Show All Names -> bob
    _open(page, fg, "/formgrader/gradebook")
    _wait_table(page)
    page.locator("#main-table a", has_text=ASSIGNMENT).first.click()
    page.wait_for_url(f"**/formgrader/gradebook/{ASSIGNMENT}", timeout=20_000)
    _wait_table(page)
    page.locator("#main-table a", has_text=NOTEBOOK).first.click()
    page.wait_for_url(f"**/formgrader/gradebook/{ASSIGNMENT}/{NOTEBOOK}", timeout=20_000)
    _wait_table(page)
    assert not page.console_errors and not page.refused, (page.console_errors, page.refused)
    page.locator("#toggle_names").click()
    page.locator("#main-table a.name-shown", has_text="bob").click()
    page.wait_for_url("**/formgrader/submissions/*/", timeout=20_000)
    page.wait_for_load_state("load")
    assert page.locator(".live-notebook a.name-shown").inner_text().strip() == "bob"   # the nav's name
    assert page.title() == NOTEBOOK
    # the grades and comments are fetched after load; each GradeUI then sets its input's placeholder
    page.wait_for_function("() => window.formgrader && formgrader.grades && formgrader.grades.loaded"
                           " && formgrader.comments && formgrader.comments.loaded", timeout=20_000)
    score_input = page.locator(f"input.score#{MANUAL_CELL}")
    score_input.wait_for(state="visible")
    assert score_input.get_attribute("placeholder") == _fmt(auto), \
        score_input.get_attribute("placeholder")

    # the autograded notebook, our verdict under the test cell being graded (its output area)
    cell = page.locator(".cell.code_cell", has=page.locator(f"#{MANUAL_CELL}"))
    assert cell.count() == 1
    assert VERDICT in cell.locator(".output_wrapper").inner_text(), cell.inner_text()[-2000:]
    assert page.locator(".output_wrapper", has_text=VERDICT).count() >= 4     # one per test cell

    # the grader's way: type the score, Tab (the input's change event saves it, PUT /formgrader/api/grade/…);
    # then the comment, Tab (PUT /formgrader/api/comment/…). Each is waited for by its PUT's response: the
    # server has written the gradebook when it answers (a fixed wait failed on a busy machine: the score
    # saved, the comment not yet)
    def put_to(kind: str):
        return page.expect_response(
            lambda r: r.request.method == "PUT" and f"/formgrader/api/{kind}/" in r.url, timeout=120_000)

    score_input.click()
    score_input.fill(_fmt(MANUAL_SCORE))
    with put_to("grade") as grade_put:
        score_input.press("Tab")
    comment = page.locator(f"textarea.comment#{MANUAL_COMMENT_CELL}-comment")
    comment.click()
    comment.fill(MANUAL_COMMENT)
    with put_to("comment") as comment_put:
        comment.press("Tab")
    for what, info in (("grade", grade_put), ("comment", comment_put)):
        if not info.value.ok:
            screenshot(page, "formgrader-submission-not-saved")
            pytest.fail(f"formgrader's PUT of the {what} answered {info.value.status}: {info.value.text()[:500]}\n"
                        f"{servers.log_tail(fg.log)}")
    saved_grade, saved_comment = grade_put.value.json(), comment_put.value.json()
    assert float(saved_grade["manual_score"]) == MANUAL_SCORE, saved_grade
    assert saved_comment["manual_comment"] == MANUAL_COMMENT, saved_comment
    manual, auto_after, text = _bob_grade(fg)
    assert text == MANUAL_COMMENT, (manual, text)
    assert manual == MANUAL_SCORE and auto_after == auto, (manual, auto_after, auto)
    # the picture: bob's comment, then the graded test cell with its 1.5 / 3 and our verdict below
    # (a viewport tall enough for the test cell's source and its output)
    page.wait_for_function("() => $(':animated').length === 0")    # formgrade scrolls to a focused input
    top, bottom = page.evaluate(f"""() => [
        document.getElementById('{MANUAL_COMMENT_CELL}-comment').getBoundingClientRect().top + window.scrollY,
        document.getElementById('{MANUAL_CELL}').closest('.cell').querySelector('.output_wrapper')
                .getBoundingClientRect().bottom + window.scrollY]""")
    page.set_viewport_size({"width": 1280, "height": min(2400, max(900, int(bottom - top) + 140))})
    page.evaluate(f"() => window.scrollTo(0, {top} - 90)")          # below formgrade's fixed nav bar
    screenshot(page, "formgrader-submission")

    # nbgrader: a manual score replaces that cell's autograded one
    after = _export(fg, "export-after.csv")
    old, new = float(before["bob"]["score"]), float(after["bob"]["score"])
    assert new == pytest.approx(old - auto + MANUAL_SCORE), (old, auto, MANUAL_SCORE, new)
    for student in STUDENTS:
        if student != "bob":
            assert after[student]["score"] == before[student]["score"], (student, before, after)

    # offline, the submission page asks for MathJax from cdnjs and nothing else (see MATHJAX_CDN)
    assert set(page.refused) <= {MATHJAX_CDN}, page.refused
    assert set(page.console_errors) <= SUBMISSION_PAGE_ERRORS, page.console_errors
    assert set(failed) <= {MATHJAX_CDN}, failed
