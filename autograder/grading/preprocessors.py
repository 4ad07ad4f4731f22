"""nbgrader preprocessors of the course (configured in nbgrader_config.py).

``StderrAsStdout`` (autograding, right after execution): nbgrader gives 0 points to a test cell that
wrote anything to stderr, so a harmless warning raised by a student's code (a deprecation, a torch
notice) would cost the whole exercise. It turns stderr streams into stdout streams: the text stays in
the feedback, and only errors decide the score.

``SanitizeHiddenTests`` (feedback): feedback that never shows hidden tests.

``PendingManualGrades`` (feedback, in place of nbgrader's GetGrades): says under an answer that awaits a
grader that it does.

``FeedbackSummary`` (feedback, between the two above): the summary at the top of the page, one row per
graded cell (exercise, points, status, one-line verdict, a link to the cell), in place of nbgrader's list of
"Test cell (Score: ...)" (``autograder.grading.summary``); ``FeedbackExporter`` puts it there, with the
style sheet that wraps verdicts, outputs and comments within the page's width.

nbgrader 0.9.6's feedback keeps the hidden tests in the source of test cells (its GenerateFeedback runs
no ClearHiddenTests; nbgrader #917) and, even when they are cleared, the traceback of a failing test
prints the lines around the failure, hidden ones included (#1363). ``SanitizeHiddenTests`` runs in
``GenerateFeedback.preprocessors`` (see nbgrader_config.py) and, for every cell of the autograded notebook:

* cuts the ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` block out of the source;
* drops, from the traceback of an error in such a cell, every frame of the cell itself (IPython shows two
  lines of context around the failing line, which can be hidden lines) and keeps the error's one-line
  message, which ``course_lib.grading`` writes for the student;
* removes any line of any output, in any cell, that quotes a hidden line (a student's cell could print
  ``In`` or ``_ih``, the kernel's input history).
"""
from __future__ import annotations

import re

from nbconvert.exporters import HTMLExporter, TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbconvert.preprocessors import Preprocessor
from nbgrader.preprocessors import GetGrades
from traitlets import Bool, Unicode

from autograder.course.source import BEGIN, END, split_hidden

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def secrets_of(nb) -> set[str]:
    """The hidden lines of a notebook, stripped (blank and very short lines, which reveal nothing and
    would match everywhere, are left out)."""
    found = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and BEGIN in cell.source:
            found |= {line.strip() for line in split_hidden(cell.source)[1] if len(line.strip()) >= 8}
    return found


def _reveals(text: str, secrets: set[str]) -> bool:
    plain = _ANSI.sub("", text)
    return any(s in plain for s in secrets)


def _scrub_text(text: str, secrets: set[str]) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not _reveals(line, secrets))


class SanitizeHiddenTests(Preprocessor):
    """Remove hidden tests from a graded notebook before it becomes feedback (see module docstring)."""

    enabled = Bool(True).tag(config=True)   # nbconvert's Preprocessor is off unless enabled
    placeholder = Unicode("# (hidden tests ran here: their verdict is below)").tag(config=True)

    def preprocess(self, nb, resources):
        self._secrets = secrets_of(nb)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if BEGIN in cell.source:
            visible, _ = split_hidden(cell.source)
            cell.source = "\n".join(visible + [self.placeholder])
            own_frame = re.compile(rf"^\s*(Cell In\s*\[{cell.get('execution_count')}\]|Input In\s*\[)")
        else:
            own_frame = None
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                kept = []
                for entry in out.get("traceback", []):
                    plain = _ANSI.sub("", entry)
                    if own_frame is not None and own_frame.match(plain):
                        continue
                    if _reveals(entry, self._secrets):
                        entry = _scrub_text(entry, self._secrets)
                    kept.append(entry)
                out.traceback = kept
                out.evalue = _scrub_text(out.get("evalue", ""), self._secrets)
            elif out.output_type == "stream":
                out.text = _scrub_text(out.text, self._secrets)
            elif out.output_type in ("execute_result", "display_data"):
                for mime, value in list(out.get("data", {}).items()):
                    if isinstance(value, str) and _reveals(value, self._secrets):
                        out.data[mime] = _scrub_text(value, self._secrets)
        return cell, resources


class StderrAsStdout(Preprocessor):
    """Turn every stderr stream output into a stdout one (see module docstring)."""

    enabled = Bool(True).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["name"] = "stdout"
        return cell, resources


PENDING_NOTE = ("**Graded by hand.** This answer awaits a grader: its points are not in the score yet "
                "(the 0 above is not a grade).")


class PendingManualGrades(GetGrades):
    """nbgrader's GetGrades (feedback), and under each cell a person grades that still needs its manual
    grade, a note that says so: nbgrader's feedback template prints a missing score as 0 ("Score: 0.0 /
    2.0"), which reads as a grade (nbgrader meant feedback to be made after manual grading)."""

    def _get_score(self, cell, resources):
        super()._get_score(cell, resources)
        gid = cell.metadata["nbgrader"]["grade_id"]
        grade = self.gradebook.find_grade(gid, self.notebook_id, self.assignment_id, self.student_id)
        if grade.needs_manual_grade and grade.manual_score is None:
            self._pending.add(id(cell))
            self._states[gid] = "pending"
        else:
            self._states[gid] = "manual" if grade.manual_score is not None else "auto"

    def preprocess(self, nb, resources):
        from nbformat.v4 import new_markdown_cell
        self._pending = set()
        self._states = {}
        nb, resources = super().preprocess(nb, resources)
        resources[GRADE_STATES] = dict(self._states)     # for FeedbackSummary
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            if id(cell) in self._pending:
                cells.append(new_markdown_cell(PENDING_NOTE))
        nb.cells = cells
        return nb, resources


GRADE_STATES = "course_grade_states"     # resources: {grade id: "pending" | "manual" | "auto"}
SUMMARY = "course_feedback_summary"     # resources: the summary's HTML, which FeedbackExporter puts on top


class FeedbackSummary(Preprocessor):
    """The summary at the top of the page (``autograder.grading.summary``): one row per graded cell, with
    the exercise's name, its points, status and one-line verdict, linking to the cell. Runs after
    ``PendingManualGrades`` (nbgrader's scores and comments in the cells, which answers await a grader) and
    before ``SanitizeHiddenTests`` (it reads the exercise's name from ``grading.check("name", ...)``, which
    is in the hidden tests); every text of the summary is scrubbed of the hidden lines with
    ``SanitizeHiddenTests``' own function, and no source line of a test cell enters it."""

    enabled = Bool(True).tag(config=True)

    def preprocess(self, nb, resources):
        from autograder.grading.summary import render, rows_of_notebook
        secrets = secrets_of(nb)
        rows = rows_of_notebook(nb, resources.get(GRADE_STATES, {}), lambda text: _scrub_text(text, secrets))
        info = resources.get("nbgrader", {})
        resources[SUMMARY] = render(rows, str(info.get("notebook", "")),
                                    float(info.get("score") or 0.0), float(info.get("max_score") or 0.0),
                                    float(info.get("late_penalty") or 0.0))
        return nb, resources


# ---------------------------------------------------------------------------------------------- exporter
_TOC = re.compile(r'<h4>[^<]*</h4>\s*<div id="toc">.*?</div>', re.S)     # nbgrader's "Test cell (Score: ...)" list


def with_summary(page: str, summary: str | None) -> str:
    """The page with the course's style sheet in its head and ``summary`` in place of nbgrader's list."""
    from autograder.grading.summary import CSS
    style = f'<style type="text/css" id="course-feedback-style">{CSS}</style>\n'
    page = page.replace("</head>", style + "</head>", 1) if "</head>" in page else style + page
    if summary:
        page, found = _TOC.subn(lambda m: summary, page, count=1)
        if not found:                          # another template: the summary goes first in the body
            page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + summary, page, count=1)
    return page

_IMG = re.compile(r"<img\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.I)   # a start tag, quoted values may hold '>'
_HAS_ALT = re.compile(r"\salt\s*=", re.I)
NO_ALT = "No description has been provided for this image"


def _with_alt(html: str) -> str:
    """Every ``<img>`` without an ``alt`` attribute gets nbconvert's placeholder text."""
    def add(m):
        tag = m.group(0)
        if _HAS_ALT.search(tag):
            return tag
        end = len(tag) - (2 if tag.endswith("/>") else 1)
        return f'{tag[:end].rstrip()} alt="{NO_ALT}"{tag[end:]}'
    return _IMG.sub(add, html) if "<img" in html.lower() else html


class FeedbackExporter(HTMLExporter):
    """nbconvert's HTMLExporter, its page as it is, without the BeautifulSoup pass over it: nbconvert 7.17
    parses and reprints every page to give images an alternative text and JupyterLab-template cells a
    ``tabindex``, 2.4 s of a 4 s feedback page here. Feedback pages use the classic template, which has no
    such cells; the images' alternative text is added by ``_with_alt``. Its equations are MathML
    (``autograder.grading.mathml``; ``offline_math``), not MathJax from a CDN. (GenerateFeedback.exporter_class in
    nbgrader_config.py.)"""

    offline_math = Bool(True, help="equations as MathML (autograder.grading.mathml) instead of MathJax from a CDN: "
                                   "the page renders them without internet").tag(config=True)

    def from_notebook_node(self, nb, resources=None, **kw):
        if self.offline_math:
            import copy

            from autograder.grading.mathml import notebook_to_mathml
            nb = copy.deepcopy(nb)
            notebook_to_mathml(nb)
        langinfo = nb.metadata.get("language_info", {})
        lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
        self.register_filter("highlight_code", self.filters.get(
            "highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self)))
        resources = self._init_resources(resources)
        self.register_filter("filter_data_type", WidgetsDataTypeFilter(
            notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        if self.offline_math:
            from autograder.grading.mathml import without_mathjax
            html = without_mathjax(html)
        return with_summary(_with_alt(html), resources.get(SUMMARY)), resources
