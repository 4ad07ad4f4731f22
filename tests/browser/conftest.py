"""Browser tests: Playwright (PyPI) driving Debian's ``chromium`` (installed by ``make``'s set-up when root,
as bubblewrap is). Where either is missing the tests are skipped with a loud reason. Screenshots land in
``build/screenshots/`` for a person to look at. Network traffic goes to 127.0.0.1 and file:// only: a page
that asks for anything else fails its test (``offline_page``)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from autograder.course import REPO

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
