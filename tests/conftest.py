"""Shared pytest configuration for the whole test suite.

* Hypothesis runs under the reproducible ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another one
  (``dev`` below, or Hypothesis' own ``default``).
* Tests marked ``cuda`` are skipped, with a reason, where ``torch.cuda.is_available()`` is False.
* The ``device`` fixture runs a test on the CPU and (marked ``cuda``) on CUDA.
* wandb never talks to the network from a test.
* Browser fixtures (``browser``, ``offline_page``, ``screenshot``): Playwright (PyPI) driving Debian's
  ``chromium`` (installed by ``make``'s set-up when root, as bubblewrap is); where either is missing the
  tests that use them are skipped with a loud reason. Screenshots land in ``build/screenshots/`` for a
  person to look at. Network traffic goes to 127.0.0.1 and file:// only: a page that asks for anything
  else fails its test (``offline_page``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["WANDB_MODE"] = "disabled"  # before anything can import wandb
# The suite grades the same assignments dozens of times: nbgrader's generate_assignment runs once per source
# (autograder.course.generate), the template kept in this private folder (removed by the root conftest.py).
os.environ.setdefault("COURSE_TEMPLATE_CACHE", os.path.join(__import__("tempfile").gettempdir(),
                                                            f"course-test-templates-{os.geteuid()}"))

import pytest
from hypothesis import HealthCheck, settings

# tests/course_lib/verdicts.py: the checks of a grading verdict that the hidden-case tests share (those of
# tests/course_lib and tests/notebooks/test_alternatives.py, which imports them)
sys.path.insert(0, str(Path(__file__).resolve().parent / "course_lib"))

settings.register_profile(
    "ci",
    deadline=None,            # the first call into torch (lazy init, CPU dispatch) can be slow
    max_examples=40,
    derandomize=True,         # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",                    # HYPOTHESIS_PROFILE=dev: more, random examples when hunting for bugs
    deadline=None,
    max_examples=300,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of course_lib
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``cuda`` (directly, or through the ``device`` fixture's cuda param) when
    there is no CUDA device."""
    _one_worker_per_shared_fixture(items)
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in cuda_items:
        item.add_marker(skip)


# The slowest single test (a JupyterHub, three users, chromium): sent first. Modules whose shared fixture is
# cheap beside their many slow tests (each runs a notebook): spread over the workers.
FIRST = ("tests/hub/test_hub.py",)
SPREAD = ("tests/course_lib/", "tests/notebooks/test_bundle.py")


def _one_worker_per_shared_fixture(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``-n 3 --dist loadgroup``), the tests that share a fixture their own
    module defines for the module or the session (a graded class, a running server) go to one worker, so
    the fixture is made once and not once per worker (a fixture parametrized, e.g. by sandbox tier: one
    group per parameter). Those groups are sent first, JupyterHub's first, and the many short tests fill
    the workers in at the end."""
    def group(item: pytest.Item) -> str | None:
        module = item.nodeid.split("::")[0]
        info = getattr(item, "_fixtureinfo", None)
        if info is None or module.startswith(SPREAD):
            return None
        params = getattr(getattr(item, "callspec", None), "params", {})
        own = sorted(name for name, defs in info.name2fixturedefs.items()
                     for d in defs[-1:] if d.baseid == module and str(d.scope).endswith(("module", "session")))
        if not own:
            return None
        return module + "".join(f"[{name}={params[name]}]" for name in own if name in params)

    rank = {}
    for item in items:
        name = group(item)
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name=name))
            rank[item.nodeid] = 1
        if item.nodeid.startswith(FIRST):
            rank[item.nodeid] = 0
    items.sort(key=lambda item: rank.get(item.nodeid, 2))     # stable: the order within each kept


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest):
    """The device to run on, as a ``torch.device``: the CPU always, CUDA only where it is available (the
    ``cuda`` param carries the ``cuda`` marker, so the hook above skips it otherwise)."""
    import torch

    return torch.device(request.param)


class Servers:
    """What tests need to start a Jupyter server of their own on 127.0.0.1 (browser tests, formgrader's API)."""

    @staticmethod
    def free_port() -> int:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @staticmethod
    def log_tail(path: Path, n: int = 4000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no server log)"

    @classmethod
    def wait_until_up(cls, proc, base: str, token: str, log: Path, what: str, seconds: float = 60) -> None:
        """Until ``base``'s /api/status answers; the test fails with the server's log when it exits or
        does not answer within ``seconds``."""
        import time
        import urllib.error
        import urllib.request
        deadline = time.monotonic() + seconds
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited ({proc.returncode}):\n{cls.log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer /api/status within {seconds:g} s:\n{cls.log_tail(log)}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def servers():
    return Servers


# ----------------------------------------------------------------------------------------------- browsers
import shutil  # noqa: E402
import warnings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "build" / "screenshots"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    path = _chromium()
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "the playwright package is not installed (make setup installs it)"
    if why is None and path is None:
        why = "Debian's chromium is not installed (make browser-deps: apt-get install chromium, as root)"
    if why:
        warnings.warn(f"BROWSER TESTS SKIPPED: {why}")
        pytest.skip(f"BROWSER TESTS SKIPPED: {why}")
    with sync_playwright() as p:
        # --no-sandbox: chromium's own sandbox needs user namespaces a container may not give root
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def offline_page(browser):
    """A page whose console errors and requests are recorded; any request off 127.0.0.1 / file:// is
    refused (and recorded), as on a machine without internet."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.refused = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))

    def route(r):
        url = r.request.url
        if url.startswith(("file://", "data:", "blob:", "http://127.0.0.1", "ws://127.0.0.1", "about:")):
            r.continue_()
        else:
            page.refused.append(url)
            r.abort()
    page.route("**/*", route)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot():
    """``screenshot(page, name)`` -> build/screenshots/NAME.png (what a person looks at after the run)."""
    def take(page, name: str, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path
    return take
