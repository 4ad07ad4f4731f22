"""The course on a real JupyterHub, end to end (docs/jupyterhub.md), with nbgrader's exchange.

The instructor releases rope (``nbgrader release_assignment``); each student logs in through the hub in
chromium, fetches rope in JupyterLab's Assignments tab, fills it (one complete, one partial: the demo's alice
and bob, written into the fetched notebook as that student), runs it, saves and submits it in the
Assignments tab. The instructor collects (``nbgrader collect``), grades (``python -m autograder grade rope
--submissions <course>/submitted``) and releases the feedback (``python -m autograder hub feedback``); each
student fetches it in the Assignments tab and opens it: their own page and score, not the other's.

A cell put first in each student's notebook tries, from that student's kernel, to read the instructor's
solutions, the reference ``course_lib`` (and its hidden cases), the checkout, the exchange's inbound
submissions and the other student's home and notebook, and imports ``course_lib``, which must be the published
student copy; the test reads its output on the page, then the student deletes the cell before saving (it is
not handed in).
"""
from __future__ import annotations

import csv
import json
import os
import pwd
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.hub, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
COURSE_ID = "genai-lecture4"        # the students' and the instructor's nbgrader_config.py (conftest.py)
ASSIGNMENT = NOTEBOOK = "rope"
SCREENSHOTS = REPO / "build" / "screenshots"
RUN_ALL_TIMEOUT_S = 150
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    # every cell in the DOM (JupyterLab 4 renders only the visible ones by default): the prompts are read
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
PROBE_TAG = "HUB-PROBE "

PROBE = '''# what this student's kernel can reach (the hub test reads this cell's output)
import json, os, sys
import course_lib
probe = {{"course_lib": course_lib.__file__, "executable": sys.executable, "sys_path": sys.path[:4],
         "course_lib_path": list(course_lib.__path__)}}
def attempt(label, fn):
    try:
        got = fn()
        probe[label] = "READ: " + repr(got)[:80]
    except Exception as e:
        probe[label] = type(e).__name__
attempt("solutions", lambda: open({solutions!r}).read(200))
attempt("reference", lambda: open({reference!r}).read(200))
attempt("hidden_cases", lambda: open({hidden!r}).read(200))
attempt("checkout", lambda: os.listdir({checkout!r}))
attempt("inbound", lambda: os.listdir({inbound!r}))
attempt("other_home", lambda: os.listdir({other_home!r}))
attempt("other_notebook", lambda: open({other_notebook!r}).read(200))
attempt("import_exercises_rope", lambda: __import__("course_lib.exercises.rope"))
print({tag!r} + json.dumps(probe))
'''


def _shot(page, name: str):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _context(browser):
    """A browser context that refuses every request off 127.0.0.1 (as on a machine without internet)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.refused = []

    def route(r):
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")):
            r.continue_()
        else:
            context.refused.append(url)
            r.abort()
    context.route("**/*", route)
    return context


def _settings(hub, user: str):
    """The student's JupyterLab settings (no news, every cell rendered), in their home, owned by them."""
    pw = pwd.getpwnam(user)
    for rel, settings in USER_SETTINGS.items():
        p = Path(pw.pw_dir) / ".jupyter" / "lab" / "user-settings" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(settings))
    for folder, _, files in os.walk(Path(pw.pw_dir) / ".jupyter"):
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(Path(folder) / f, pw.pw_uid, pw.pw_gid)


def _login(page, hub, user: str):
    page.goto(f"{hub.base}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")
    # the hub spawns the user's server (as that user), then sends the browser to JupyterLab
    deadline = time.monotonic() + 120
    while f"/user/{user}/lab" not in page.url:
        if f"Error starting server {user}" in hub.log_tail(20000):
            pytest.fail(f"the hub could not start {user}'s server:\n{hub.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{user}'s server did not start within 120 s ({page.url}):\n{hub.log_tail()}")
        page.wait_for_timeout(500)
    page.locator(".jp-LabShell, #jp-main-dock-panel").first.wait_for(state="visible", timeout=120_000)


def _assignments_tab(page):
    """Nbgrader > Assignment List: the Assignments tab, its lists loaded."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Nbgrader$")).click()
    page.locator('.lm-Menu-item[data-command="nbgrader:open-assignment-list"]').click()
    page.locator("#released_assignments_list").wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => ['released', 'fetched', 'submitted'].every(k => "
                           "document.getElementById(k + '_assignments_list_loading')?.hidden)", timeout=60_000)


def _item(page, which: str):
    return page.locator(f"#{which}_assignments_list > .list_item", has_text=ASSIGNMENT)


def _click_and_wait(page, button, endpoint: str, timeout_s: float = 120):
    """Click ``button`` and wait for the POST to nbgrader's ``endpoint`` it makes; returns its JSON."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith(endpoint),
                              timeout=timeout_s * 1000) as info:
        button.click()
    response = info.value
    assert response.ok, (endpoint, response.status, response.text()[:2000])
    return response.json()


_PROMPTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')).map(p => p.textContent.trim())"""


def _press(page, section: str, button: str, endpoint: str, then: str) -> None:
    """In the Assignments tab: press ``button`` of the assignment listed in ``section``, wait for the server's
    answer (it must say success) and for the assignment to show in the section ``then``."""
    _assignments_tab(page)
    reply = _click_and_wait(page, _item(page, section).get_by_role("button", name=button), endpoint)
    assert reply.get("success"), reply
    _item(page, then).wait_for(state="visible", timeout=30_000)


def _run_all_and_save(page, hub, user: str, n_code: int):
    page.goto(f"{hub.base}/user/{user}/lab/tree/{ASSIGNMENT}/{NOTEBOOK}.ipynb")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").filter(has=page.locator(".jp-Cell")).first
    panel.wait_for(state="visible", timeout=90_000)
    page.wait_for_function("n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-CodeCell').length >= n", arg=n_code, timeout=60_000)
    panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(state="attached", timeout=90_000)
    page.wait_for_function(
        "() => /\\(ipykernel\\) \\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
        timeout=90_000)
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    clicked_at = None
    while True:
        prompts = page.evaluate(_PROMPTS_JS)
        if len(prompts) >= n_code and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            break
        started = any(p != "[ ]:" for p in prompts)
        # a partial notebook: Run All stops at the first cell that raises, as it does for the student
        if (started and "[*]:" not in prompts and panel.locator(".jp-OutputArea-output[data-mime-type="
                                                                "'application/vnd.jupyter.error'], .jp-OutputArea-output"
                                                                "[data-mime-type='application/vnd.jupyter.stderr']").count()
                and panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count()):
            break
        if not started and (clicked_at is None or time.monotonic() - clicked_at > 20):
            # Run > Run All Cells (again when the first click found the kernel not ready: nothing started)
            panel.locator(".jp-Cell").first.click()
            page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
            page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
            clicked_at = time.monotonic()
        if time.monotonic() > deadline:
            _shot(page, f"hub-run-all-timeout-{user}")
            pytest.fail(f"{user}: Run All not done after {RUN_ALL_TIMEOUT_S} s: prompts {prompts}")
        page.wait_for_timeout(500)
    # the probe's verdict, read from the page; then the student deletes that cell (Edit > Delete Cell):
    # it is not part of what they hand in
    first = panel.locator(".jp-Notebook .jp-Cell").first
    probe = first.locator(".jp-OutputArea-output").inner_text()
    assert PROBE_TAG in probe, probe[:2000]
    first.locator(".jp-InputPrompt").click()
    page.wait_for_function("el => el.classList.contains('jp-mod-active')", arg=first.element_handle(),
                           timeout=10_000)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Edit$")).click()
    page.locator('.lm-Menu-item[data-command="notebook:delete-cell"]').click()
    page.wait_for_function("n => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-CodeCell').length === n", arg=n_code - 1, timeout=30_000)
    assert PROBE_TAG not in panel.locator(".jp-Notebook .jp-Cell").first.inner_text()
    # File > Save Notebook: done when the server answered the PUT (not after a fixed time)
    with page.expect_response(lambda r: r.request.method == "PUT"
                              and r.url.split("?")[0].endswith(f"/api/contents/{ASSIGNMENT}/{NOTEBOOK}.ipynb"),
                              timeout=60_000) as info:
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^File$")).click()
        page.locator('.lm-Menu-item[data-command="docmanager:save"]').click()
    assert info.value.ok, info.value.status
    return json.loads(probe.split(PROBE_TAG, 1)[1].strip().splitlines()[0])


def _score(html: str) -> tuple[float, float]:
    """The notebook's total as its feedback page states it: our summary line ("rope: 10 / 12 points") or,
    without it, nbgrader's title ("rope (Score: 10.0 / 12.0)")."""
    for pattern in (rf"{NOTEBOOK}:\s*([\d.]+)\s*/\s*([\d.]+)\s*points", rf"{NOTEBOOK} \(Score:\s*([\d.]+)\s*/\s*([\d.]+)\)"):
        m = re.search(pattern, html)
        if m:
            return float(m.group(1)), float(m.group(2))
    raise AssertionError(f"no total on the feedback page: {html[:2000]}")


def test_course_on_jupyterhub_end_to_end(hub, browser):
    project = REPO         # the checkout conftest.py closed to the students
    a, b = list(hub.students)
    samples = {a: "alice", b: "bob"}                      # complete, partial
    other = {a: b, b: a}
    n_code = None
    t0 = time.monotonic()

    def lap(what: str):
        print(f"[hub test] {time.monotonic() - t0:6.1f} s  {what}")

    # the instructor releases rope through the exchange
    r = hub.as_user(hub.instructor, [sys.executable, "-m", "nbgrader", "release_assignment", ASSIGNMENT], hub.course)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (hub.exchange / COURSE_ID / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()
    lap("released")

    contexts, pages, probes = {}, {}, {}
    try:
        for student in (a, b):
            _settings(hub, student)
            contexts[student] = _context(browser)
            page = pages[student] = contexts[student].new_page()
            _login(page, hub, student)
            lap(f"{student} logged in")
            _press(page, "released", "fetch", "assignments/fetch", then="fetched")
            lap(f"{student} fetched")
            home = hub.students[student]
            fetched = home / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
            assert fetched.is_file(), sorted(str(p) for p in home.rglob("*.ipynb"))

            # the student's answers, typed into the fetched notebook (as that student), and the probe cell
            nb = nbformat.read(REPO / "autograder" / "samples" / ASSIGNMENT / samples[student] / f"{NOTEBOOK}.ipynb",
                               as_version=4)
            oh = hub.students[other[student]]
            nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE.format(
                solutions=str(project / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"),
                reference=str(project / "course_lib" / "attention" / "rope.py"),
                hidden=str(project / "course_lib" / "exercises" / "rope.py"),
                checkout=str(project), inbound=str(hub.exchange / COURSE_ID / "inbound"),
                other_home=str(oh), other_notebook=str(oh / ASSIGNMENT / f"{NOTEBOOK}.ipynb"), tag=PROBE_TAG)))
            n_code = sum(c.cell_type == "code" for c in nb.cells)
            nbformat.write(nb, fetched)
            pw = pwd.getpwnam(student)
            os.chown(fetched, pw.pw_uid, pw.pw_gid)

            probes[student] = _run_all_and_save(page, hub, student, n_code)
            lap(f"{student} ran and saved")
            _press(page, "fetched", "Submit", "assignments/submit", then="submitted")
            lap(f"{student} submitted")
            if student == a:
                _shot(page, "hub-assignments-tab")

        # from each student's kernel: nothing of the instructor's, nothing of the other student's
        for student in (a, b):
            probe = probes[student]
            assert probe["course_lib"] == str(hub.lib / "course_lib" / "__init__.py"), probe
            for key in ("solutions", "reference", "hidden_cases", "checkout", "inbound", "other_home",
                        "other_notebook"):
                assert probe[key] == "PermissionError", (student, key, probe)
            assert probe["import_exercises_rope"] == "ModuleNotFoundError", probe

        # the instructor collects, grades, releases the feedback
        r = hub.as_user(hub.instructor, [sys.executable, "-m", "nbgrader", "collect", ASSIGNMENT], hub.course)
        assert r.returncode == 0, r.stderr[-3000:]
        for student in (a, b):
            assert (hub.course / "submitted" / student / ASSIGNMENT / "submission_secret.txt").is_file()
            handed_in = (hub.course / "submitted" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_text()
            assert PROBE_TAG not in handed_in, [c.source[:80] for c in nbformat.reads(handed_in, 4).cells[:3]]
        out = hub.course / "graded"
        r = hub.as_user(hub.instructor, [sys.executable, "-m", "autograder", "grade", ASSIGNMENT, "--submissions",
                                         str(hub.course / "submitted"), "--out", str(out), "--workers", "2"],
                        hub.course, timeout=400)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        lap("collected and graded")
        with open(out / "grades.csv", newline="") as f:
            grades = {row["student"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}
        assert sorted(grades) == sorted([a, b]), grades
        with open(out / "details.csv", newline="") as f:
            statuses = {}
            for row in csv.DictReader(f):
                statuses.setdefault(row["student"], set()).add(row["status"])
        # complete: every test passed (a written answer awaits a grader); partial: some failed
        assert statuses[a] == {"passed", "needs manual grade"}, statuses
        assert "passed" in statuses[b] and statuses[b] & {"failed", "error"}, statuses
        assert 0 < grades[b][0] < grades[a][0] < grades[a][1], grades
        r = hub.as_user(hub.instructor, [sys.executable, "-m", "autograder", "hub", "feedback", str(out),
                                         "--course", str(hub.course)], hub.course)
        assert r.returncode == 0, r.stderr[-3000:]

        # each student fetches the feedback in the Assignments tab and opens it: their own
        for student in (a, b):
            page = pages[student]
            page.goto(f"{hub.base}/user/{student}/lab")
            page.locator("#jp-main-dock-panel").wait_for(state="visible", timeout=60_000)
            _assignments_tab(page)
            submitted = _item(page, "submitted")
            reply = _click_and_wait(page, submitted.get_by_role("button", name="Fetch Feedback"),
                                    "assignments/fetch_feedback")
            assert reply.get("success"), reply
            page.locator("#submitted_assignments_list", has_text="(view feedback)").wait_for(timeout=30_000)
            if student == a:
                _shot(page, "hub-assignments-feedback")
            pages_got = sorted((hub.students[student] / ASSIGNMENT / "feedback").glob("*/*.html"))
            assert [p.name for p in pages_got] == [f"{NOTEBOOK}.html"], pages_got
            stamp = pages_got[0].parent.name
            expected = (out / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html").read_bytes()
            assert pages_got[0].read_bytes() == expected, f"{student} got a page that is not theirs"
            assert expected != (out / "feedback" / other[student] / ASSIGNMENT / f"{NOTEBOOK}.html").read_bytes()
            page.goto(f"{hub.base}/user/{student}/files/{ASSIGNMENT}/feedback/{stamp}/{NOTEBOOK}.html")
            page.wait_for_load_state("load")
            text = page.inner_text("body")
            assert _score(text) == grades[student], (student, _score(text), grades)
            assert "Grader's verdict" in text, text[:3000]
            _shot(page, f"hub-feedback-{samples[student]}")
            lap(f"{student} saw the feedback")
        for student, context in contexts.items():
            assert not context.refused, (student, context.refused)
    except BaseException:
        for student, page in pages.items():
            try:
                _shot(page, f"hub-failure-{samples[student]}")
            except Exception:
                pass
        print(hub.log_tail())
        raise
    finally:
        for context in contexts.values():
            context.close()
