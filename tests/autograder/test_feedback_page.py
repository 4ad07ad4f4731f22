"""The feedback page's exporter (autograder.grading.preprocessors.FeedbackExporter) makes the page nbconvert's own
HTMLExporter makes, without its BeautifulSoup round trip: the oracle is HTMLExporter itself, on nbgrader's
feedback template, for a notebook with code, markdown, errors and images with and without alternative text."""
import base64
import copy

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbconvert.exporters import HTMLExporter
from traitlets.config import Config

from autograder.course.source import REPO

from autograder.course.nbgrader import nbgrader_config
from autograder.grading.preprocessors import NO_ALT, FeedbackExporter

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
    assert str(BeautifulSoup(ours, features="html.parser")) == theirs
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
