"""A feedback page as a student opens it, offline: a complete and a partial RoPE submission graded for real,
their pages opened from file:// in chromium with every request off the machine refused. The lecture's
equations render (MathML with a size, no raw TeX in the text a person reads), nothing is fetched, no
console error, and the hidden tests' source is nowhere on the page."""
import re

import pytest

from autograder.intake import samples as subs
from autograder.outputs.grade import grade
from autograder.grading.preprocessors import secrets_of

pytestmark = [pytest.mark.browser, pytest.mark.autograder]

TEX = re.compile(r"\$[^$\s][^$]*\$|\\(mathbf|frac|theta|Theta|sum|cdot|begin)\b")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("feedback-browser")
    release, solution = subs.load("rope", "rope")
    subs.write(subs.fill(release, solution), tmp / "subs" / "complete" / "rope.ipynb")
    subs.write(subs.fill(release, solution, only={"rope_thetas"}), tmp / "subs" / "partial" / "rope.ipynb")
    grade("rope", tmp / "subs", tmp / "out", workers=2, quiet=True, sandbox="auto", submission_timeout=300)
    found = {s: next((tmp / "out" / "feedback" / s).rglob("rope.html")) for s in ("complete", "partial")}
    return found, secrets_of(solution)


@pytest.mark.parametrize("student", ["complete", "partial"])
def test_feedback_renders_offline_with_its_equations(pages, student, offline_page, screenshot):
    found, secrets = pages
    page = offline_page
    page.goto(found[student].as_uri())
    page.wait_for_load_state("load")
    maths = page.locator("math")
    assert maths.count() > 10, "the RoPE notebook's equations should be on the page as MathML"
    sizes = page.evaluate("[...document.querySelectorAll('math')].map(m => m.getBoundingClientRect().width)")
    assert all(w > 0 for w in sizes), "an equation takes no room: it is not rendered"
    text = page.inner_text("body")
    raw = TEX.findall(text)
    assert not raw, f"raw TeX a person would read on the page: {raw[:5]}"
    assert not page.refused, f"the page asked for {page.refused[:3]} (offline it gets nothing)"
    assert not page.console_errors, page.console_errors[:3]
    assert not [s for s in secrets if s in text], "a hidden test's source is on the feedback page"
    assert "Grader's verdict" in text
    page.locator("math").nth(3).scroll_into_view_if_needed()
    screenshot(page, f"feedback-{student}")
