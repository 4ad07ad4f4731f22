"""The feedback page's exporter (autograder.grading.preprocessors.FeedbackExporter) makes the page nbconvert's own
HTMLExporter makes, without its BeautifulSoup round trip: the oracle is HTMLExporter itself, on nbgrader's
feedback template, for a notebook with code, markdown, errors and images with and without alternative text."""
import base64
import copy
import re

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbconvert.exporters import HTMLExporter
from traitlets.config import Config

from autograder.course.source import REPO

from autograder.course.nbgrader import nbgrader_config
from autograder.grading.preprocessors import (GRADE_STATES, NO_ALT, FeedbackExporter, FeedbackSummary,
                                              SanitizeHiddenTests)

pytestmark = pytest.mark.autograder

PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                     "1f15c4890000000d4944415478da63f8ffffff7f0009fb03fd2a86e38a0000"
                                     "000049454e44ae426082")).decode()


def _notebook():
    nb = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python", "pygments_lexer": "ipython3"}})
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\nSome $x^2$ math and ![a figure](data:image/png;base64," + PNG + ")"),
        nbformat.v4.new_code_cell("def f(x):\n    return x ** 2  # a > b\n\nprint(f(3))", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="9\n")]),
        nbformat.v4.new_code_cell("plot()", outputs=[
            nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
            nbformat.v4.new_output("display_data", data={"text/html": '<img src="x.png" alt="mine"> <b>bold</b>'})]),
        nbformat.v4.new_code_cell("1 / 0", outputs=[nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero",
            traceback=["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])]),
    ]
    return nb


def _config(tmp_path) -> Config:
    """What nbgrader's GenerateFeedback gives its exporter: the course's config, the feedback template."""
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    config = nbgrader_config(tmp_path, REPO)
    feedback = GenerateFeedback(coursedir=CourseDirectory(config=config), config=config)
    return feedback.config


def test_the_course_uses_it_for_feedback(tmp_path):
    assert _config(tmp_path).GenerateFeedback.exporter_class == "autograder.grading.preprocessors.FeedbackExporter"


def test_same_page_as_nbconvert_html_exporter(tmp_path):
    config = _config(tmp_path)
    def resources():        # what nbgrader's GetGrades leaves for the template
        return {"nbgrader": {"notebook": "hw", "score": 3.0, "max_score": 5.0, "late_penalty": 0.0}}
    nb = _notebook()
    ours, _ = FeedbackExporter(config=config, offline_math=False).from_notebook_node(copy.deepcopy(nb), resources())
    theirs, _ = HTMLExporter(config=config).from_notebook_node(copy.deepcopy(nb), resources())
    assert "feedback" in config.HTMLExporter.template_name
    style = re.compile(r'<style type="text/css" id="course-feedback-style">.*?</style>\n', re.S)
    assert len(style.findall(ours)) == 1, "the course's style sheet (wrapping verdicts) is not in the page's head"
    assert str(BeautifulSoup(style.sub("", ours), features="html.parser")) == theirs
    alts = [img.get("alt") for img in BeautifulSoup(ours, features="html.parser").find_all("img")]
    assert sorted(alts) == sorted(["a figure", NO_ALT, "mine"])     # markdown's, the placeholder, the output's


def test_equations_are_mathml_and_no_script_loads_mathjax(tmp_path):
    """The page's TeX becomes the MathML that latex2mathml (the oracle) makes of it; code keeps its dollars;
    nothing is fetched from a CDN."""
    from latex2mathml.converter import convert
    config = _config(tmp_path)
    nb = _notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "Rotation $\\mathbf{R}_{\\Theta,m}$, escaped \\$5, `code $y$` and\n\n$$\n\\sum_{i=1}^{n} i^2\n$$"))
    nb.cells.append(nbformat.v4.new_code_cell("show()", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/markdown": "| a | $\\theta_i$ |\n| --- | --- |", "text/plain": "md"})]))
    page, _ = FeedbackExporter(config=config).from_notebook_node(nb, {"nbgrader": {
        "notebook": "hw", "score": 3.0, "max_score": 5.0, "late_penalty": 0.0}})
    soup = BeautifulSoup(page, features="html.parser")
    maths = [str(m) for m in soup.find_all("math")]
    for tex, display in ((r"\mathbf{R}_{\Theta,m}", "inline"), ("x^2", "inline"), (r"\sum_{i=1}^{n} i^2", "block"),
                         (r"\theta_i", "inline")):
        expected = str(BeautifulSoup(convert(tex, display=display), features="html.parser").find("math"))
        assert expected in maths, f"{tex}: not on the page as latex2mathml writes it"
    assert "cdnjs" not in page and "MathJax" not in page
    text = soup.get_text()
    assert "$y$" in text and "$5" in text                   # code and an escaped dollar stay as written
    assert "\\mathbf" not in text and "\\sum" not in text    # no raw TeX left to read


@pytest.mark.parametrize("path", sorted((REPO / "solutions").glob("*/*.ipynb")), ids=lambda p: p.stem)
def test_every_equation_of_the_course_converts(path):
    from autograder.grading.mathml import notebook_to_mathml
    nb = nbformat.read(path, as_version=4)
    failed = notebook_to_mathml(nb)
    assert not failed, f"{path.name}: latex2mathml cannot convert {failed[:3]}"
    left = [c.source for c in nb.cells if c.cell_type == "markdown" and ("$" in c.source.replace("\\$", "")
                                                                      .split("`")[0])]
    assert not left, f"{path.name}: TeX left in {left[0][:120]!r}"


# ------------------------------------------------------------------------------------- the summary on top
def _graded_notebook():
    """An autograded notebook as nbgrader's GetGrades leaves it (scores, points and comments in the cells'
    metadata), with the worker's verdict line under one test cell and a bare error under another."""
    def grade(gid, points, score, **more):
        return {"nbgrader": dict(grade=True, grade_id=gid, points=points, score=score, locked=True,
                                 solution=False, schema_version=3, **more)}
    new, code, md = nbformat.v4.new_output, nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python"}})
    nb.cells = [
        md("## 1. The mask (Exercise 1, 2 points)"),
        code("# Visible tests of f_one.\nassert f_one(1) == 1\n### BEGIN HIDDEN TESTS\n"
             "grading.check(\"f_one\", f_one, cases=SECRET_CASES_OF_F_ONE)\n### END HIDDEN TESTS",
             metadata=grade("test_f_one", 2, 0.0), execution_count=3, outputs=[new(
                 "stream", name="stdout", text="Grader's verdict: failed: f_one: case 'T=7 (odd)' on cpu: your "
                 "function modified its input tensor (argument 5) in place; return a new tensor instead (0/2 points)\n")]),
        code("assert f_two(2) == 4\n### BEGIN HIDDEN TESTS\nassert f_two(secret_value_of_the_case) == 42\n"
             "### END HIDDEN TESTS", metadata=grade("test_f_two", 3, 0.0), execution_count=4, outputs=[new(
                 "error", ename="AssertionError", evalue="assert f_two(secret_value_of_the_case) == 42",
                 traceback=["AssertionError: assert f_two(secret_value_of_the_case) == 42"])]),
        code("### BEGIN HIDDEN TESTS\ngrading.check(\"f_three\", f_three)\n### END HIDDEN TESTS",
             metadata=grade("test_f_three", 1, 1.0), execution_count=5,
             outputs=[new("stream", name="stdout", text="Grader's verdict: passed (1/1 points)\n")]),
        md("## Written question (2 points)\n\nWhy does it work?"),
        md("It works because.", metadata=grade("written_why", 2, 0.0, comment=None) | {}),
        md("## Another question (1 point)"),
        md("Because.", metadata=grade("written_how_it_works", 1, 0.5, comment="Half right: see `slot % W`.")),
    ]
    for cell in nb.cells[5], nb.cells[7]:
        cell.metadata["nbgrader"].update(solution=True, locked=False)
    return nb


def test_the_summary_runs_between_grades_and_sanitizer(tmp_path):
    names = [p if isinstance(p, str) else p.__name__ for p in _config(tmp_path).GenerateFeedback.preprocessors]
    short = [n.rsplit(".", 1)[-1] for n in names]
    assert short.index("PendingManualGrades") < short.index("FeedbackSummary") < short.index("SanitizeHiddenTests")


def test_summary_names_points_status_and_verdict_of_each_cell(tmp_path):
    """The rows of the summary, against what this notebook says by construction; the nbgrader list of
    "Test cell" entries is gone; no hidden line is in the summary (nor on the page)."""
    nb = _graded_notebook()
    resources = {"nbgrader": {"notebook": "hw", "score": 1.5, "max_score": 9.0, "late_penalty": 0.5},
                 GRADE_STATES: {"test_f_one": "auto", "test_f_two": "auto", "test_f_three": "auto",
                                "written_why": "pending", "written_how_it_works": "manual"}}
    nb, resources = FeedbackSummary().preprocess(nb, resources)
    nb, resources = SanitizeHiddenTests().preprocess(nb, resources)
    page, _ = FeedbackExporter(config=_config(tmp_path)).from_notebook_node(nb, resources)
    soup = BeautifulSoup(page, features="html.parser")
    summary = soup.find(id="feedback-summary")
    rows = [(tr["data-grade-id"], tr.select_one(".fs-name").get_text(strip=True),
             tr.select_one(".fs-points").get_text(strip=True), tr.select_one(".fs-status").get_text(strip=True),
             tr.select_one(".fs-verdict").get_text(strip=True), (tr.select_one("a.fs-link") or {}).get("href"))
            for tr in summary.select("tr.fs-row")]
    assert rows == [
        ("test_f_one", "f_one", "0 / 2", "failed", "f_one: case 'T=7 (odd)' on cpu: your function modified its input "
         "tensor (argument 5) in place; return a new tensor instead", "#test_f_one"),
        ("test_f_two", "f two", "0 / 3", "failed", "AssertionError", "#test_f_two"),
        ("test_f_three", "f_three", "1 / 1", "passed", "All checks passed.", "#test_f_three"),
        ("written_why", "Written question: why", "0 / 2", "needs manual grade",
         "A person grades this answer: its points are not in the score yet (the 0 is not a grade).", "#written_why"),
        ("written_how_it_works", "Another question: how it works", "0.5 / 1", "graded by hand",
         "Half right: see `slot % W`.", "#written_how_it_works"),
    ]
    title = summary.select_one("h4").get_text(" ", strip=True)
    assert title.startswith("hw: 1.5 / 9 points") and "2 points await a grader" in title and "0.5" in title
    assert "Test cell" not in soup.get_text() and soup.find(id="toc") is None
    for anchor in ("test_f_one", "test_f_two", "written_why"):     # each link has its target on the page
        assert soup.find("a", attrs={"name": anchor}) is not None, anchor
    text = summary.get_text()
    assert "secret_value_of_the_case" not in text and "SECRET_CASES" not in text
    assert "secret_value_of_the_case" not in soup.get_text()
