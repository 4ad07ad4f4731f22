"""Student: JupyterLab on a release notebook. Run All on a filled copy gives no error output and renders
the figures; nbgrader's Validate button passes it (and does not pass the unfilled release).

A real ``jupyter lab`` (the venv's, with nbgrader's lab and server extensions) runs on 127.0.0.1 over a
temporary folder holding the RoPE release filled with the instructor's answers (``rope.ipynb``) and the
unfilled release (``rope_release.ipynb``). Its kernels get ``NBGRADER_EXECUTION=ci`` (the notebook's short
configuration, as in CI) and ``WANDB_MODE=disabled``; ``MPLBACKEND`` is unset, so figures are inline.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from autograder.intake import samples as subs
from autograder.course.source import REPO

pytestmark = pytest.mark.browser

RUN_ALL_TIMEOUT_S = 120
VALIDATE_TIMEOUT_S = 180
SUCCESS = "Success! Your notebook passes all the tests."     # nbgrader/labextension: validation-success
FAILED_CELL = "The following cell failed:"                     # nbgrader/labextension: validation-failed

# Test-only JupyterLab user settings (in the temporary JUPYTER_CONFIG_DIR, never the user's): no news or
# update toasts over the toolbar (and no request for them), and every cell kept in the DOM (no windowing),
# so that the prompts of all cells can be read.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}



@pytest.fixture(scope="module")
def course_folder(tmp_path_factory) -> Path:
    """The student's folder: the filled release, the solution folder's other files, the unfilled release."""
    tmp = tmp_path_factory.mktemp("student_lab")
    home = tmp / "home"
    home.mkdir()
    release, solution = subs.load("rope", "rope")
    subs.write(subs.fill(release, solution), home / "rope.ipynb")
    for f in (REPO / "solutions" / "rope").iterdir():      # data the notebook may read
        if f.suffix != ".ipynb" and f.name not in {".ipynb_checkpoints", "__pycache__"}:
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, home / f.name)
    shutil.copy2(REPO / "notebooks" / "rope" / "rope.ipynb", home / "rope_release.ipynb")
    # nbgrader's validate handler reads nbgrader_config.py from the server's working directory
    shutil.copy2(REPO / "nbgrader_config.py", home / "nbgrader_config.py")
    return home


@pytest.fixture(scope="module")
def lab(course_folder, servers):
    """A running JupyterLab over ``course_folder``: yields (base url, token, folder)."""
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.fail(f"no jupyter next to {sys.executable}")
    state = course_folder.parent / "jupyter"
    for sub in ("config", "data", "runtime", "ipython"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    for rel, settings in USER_SETTINGS.items():
        p = state / "config" / "lab" / "user-settings" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(settings))

    env = {k: v for k, v in os.environ.items()
           if k not in {"MPLBACKEND", "PYTEST_CURRENT_TEST", "JUPYTERLAB_SETTINGS_DIR",
                        "JUPYTERLAB_WORKSPACES_DIR"}}
    env.update(NBGRADER_EXECUTION="ci", WANDB_MODE="disabled", PYTHONUNBUFFERED="1",
               JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_DATA_DIR=str(state / "data"),
               JUPYTER_RUNTIME_DIR=str(state / "runtime"), IPYTHONDIR=str(state / "ipython"))
    # the venv's share/jupyter (nbgrader's labextension, the python3 kernel) is found through sys.prefix
    port, token = servers.free_port(), secrets.token_hex(24)
    log = course_folder.parent / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={course_folder}", "--ServerApp.open_browser=False",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
            + (["--allow-root"] if os.geteuid() == 0 else []),   # containers often run the suite as root
            cwd=course_folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        servers.wait_until_up(proc, base, token, log, "jupyter lab")
        yield base, token, course_folder
    finally:
        if proc.poll() is None:
            try:   # shuts its kernels down too (they run in sessions of their own)
                urllib.request.urlopen(urllib.request.Request(
                    f"{base}/api/shutdown?token={token}", method="POST", data=b""), timeout=5)
                proc.wait(timeout=20)
            except Exception:
                pass
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def _open_notebook(page, lab, name: str, workspace: str):
    """Open ``name`` in its own JupyterLab workspace (so one test's open tabs are not restored in the next)
    and wait for its panel and an idle kernel. Returns the notebook panel's locator."""
    base, token, _ = lab
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?token={token}")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").filter(
        has=page.locator(".jp-Cell")).first
    panel.wait_for(state="visible", timeout=60_000)
    # The kernel must be connected, not merely "not busy": Run All before the connection silently runs
    # nothing (JupyterLab clears the prompts). So wait for the server's session of this notebook to have an
    # idle kernel, then for the status bar's "Python 3 (ipykernel) | Idle" (the page's session context)
    # and the toolbar's execution indicator.
    deadline = time.monotonic() + 90
    while True:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r:
            sessions = json.load(r)
        if any(s.get("path") == name and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no idle kernel for {name} after 90 s: {sessions}")
        page.wait_for_timeout(500)   # (not time.sleep: the route handler must run)
    page.wait_for_function(
        "() => /\\(ipykernel\\) \\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
        timeout=60_000)
    panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(
        state="attached", timeout=60_000)
    return panel


def _wait_all_cells(page, panel, path: Path) -> int:
    """Wait until every code cell of the notebook at ``path`` is in the DOM (JupyterLab renders a long
    notebook in batches); returns how many there are."""
    import nbformat
    n = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    page.wait_for_function("([panel, n]) => panel.querySelectorAll('.jp-CodeCell').length >= n",
                           arg=[panel.element_handle(), n], timeout=30_000)
    return n


_PROMPTS_JS = """panel => Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
                             .map(p => p.textContent.trim())"""


def _page_text(page, n: int = 3000) -> str:
    try:
        return page.inner_text(".jp-NotebookPanel:not(.lm-mod-hidden)")[-n:]
    except Exception:
        return "(no notebook text)"


def test_run_all_renders_figures_without_errors(offline_page, lab, screenshot):
    page = offline_page
    panel = _open_notebook(page, lab, "rope.ipynb", "student-run-all")
    handle = panel.element_handle()
    n_code = _wait_all_cells(page, panel, lab[2] / "rope.ipynb")
    assert n_code >= 10, n_code

    # the student's way: the menu bar's Run > Run All Cells
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()

    # done when every code cell has a number, or (Run All stops at an error) nothing is queued any more
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    started = False
    while True:
        prompts = page.evaluate(_PROMPTS_JS, handle)
        numbered = [bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts]
        busy = any(p == "[*]:" for p in prompts)
        started = started or busy or any(numbered)
        if not started and time.monotonic() > deadline - RUN_ALL_TIMEOUT_S + 30:
            screenshot(page, "student-lab-run-all-timeout")
            pytest.fail(f"Run All started no cell within 30 s; prompts {prompts}")
        if all(numbered) or (started and not busy and
                             panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count()):
            break
        if time.monotonic() > deadline:
            screenshot(page, "student-lab-run-all-timeout")
            pytest.fail(f"Run All not done after {RUN_ALL_TIMEOUT_S} s\n{_page_text(page)}\nprompts {prompts}")
        page.wait_for_timeout(500)   # (not time.sleep: the route handler must run)

    # error outputs (output_type "error": the traceback of an exception) are rendered as stderr text with a
    # traceback; stderr without one (a warning) is not an error
    stderr = panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    errors = [t for t in stderr.all_inner_texts()
              if "Traceback" in t or re.search(r"^\w*(Error|Exception)\b", t, re.M)]
    assert not errors, f"error output after Run All:\n{errors[0][-3000:]}"
    assert panel.locator('[data-mime-type="application/vnd.jupyter.error"]').count() == 0
    prompts = page.evaluate(_PROMPTS_JS, handle)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), f"cells not run: {prompts}"
    numbers = [int(p[1:-2]) for p in prompts]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers

    # the figures: inline PNGs that the browser decoded
    images = panel.locator(".jp-RenderedImage img")
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    drawn = [s for s in sizes if s[0] > 0 and s[1] > 0]
    assert len(drawn) >= 5, f"expected the notebook's figures, got images of sizes {sizes}"

    images.nth(1).scroll_into_view_if_needed()
    screenshot(page, "student-lab-run-all")
    assert not page.console_errors, f"console errors: {page.console_errors}"
    assert not page.refused, f"requests off 127.0.0.1: {page.refused}"


def _validate(page, panel, screenshot_name: str, screenshot):
    """Click the toolbar's Validate (nbgrader) and return the result dialog's locator once it shows."""
    button = panel.locator(".jp-Toolbar .validate-button")
    button.wait_for(state="visible", timeout=30_000)
    button.locator("jp-button, button").first.click()
    dialog = page.locator(".jp-Dialog", has_text="Validation")
    try:
        dialog.wait_for(state="visible", timeout=VALIDATE_TIMEOUT_S * 1000)
    except Exception:
        screenshot(page, screenshot_name + "-timeout")
        raise
    screenshot(page, screenshot_name)
    return dialog


def test_validate_passes_filled_notebook_and_not_the_release(offline_page, lab, screenshot):
    page = offline_page
    panel = _open_notebook(page, lab, "rope.ipynb", "student-validate")
    dialog = _validate(page, panel, "student-lab-validate", screenshot)
    body = dialog.inner_text()
    assert dialog.locator(".validation-success").count() == 1 and SUCCESS in body, body[-3000:]
    dialog.get_by_role("button", name="Ok").click()
    dialog.wait_for(state="hidden")

    # cross-check independent of the instructor's answers: the unfilled release must not pass
    panel = _open_notebook(page, lab, "rope_release.ipynb", "student-validate-release")
    dialog = _validate(page, panel, "student-lab-validate-release", screenshot)
    body = dialog.inner_text()
    assert SUCCESS not in body, body[-3000:]
    assert dialog.locator(".validation-failed").count() == 1 and FAILED_CELL in body, body[-3000:]
    assert "NotImplementedError" in body, body[-3000:]
    dialog.get_by_role("button", name="Ok").click()

    assert not page.console_errors, f"console errors: {page.console_errors}"
    assert not page.refused, f"requests off 127.0.0.1: {page.refused}"
