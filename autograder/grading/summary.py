"""The summary at the top of a feedback page: one row per graded cell, read at a glance.

Each row names the exercise (the function a test cell's hidden tests check, from its
``grading.check("name", ...)``; for a written answer, the heading above it and its grade id made readable:
"Written question: rolling buffer"), the points earned and possible, the status (the words of
``details.csv``: passed, failed, error, timeout, missing, needs manual grade, graded by hand) and the
one-line verdict, and links to its cell (nbgrader's ``<a name="GRADE_ID">``).

Where the rows come from:

* the feedback page (``autograder.grading.preprocessors.FeedbackSummary``, in nbgrader's GenerateFeedback,
  also when ``export`` makes a page again after manual grading): the autograded notebook as nbgrader's
  GetGrades leaves it (``metadata.nbgrader.score``: the gradebook's score, a grader's when there is one;
  ``comment``: the grader's comment), the worker's "Grader's verdict: ..." line under each test cell whose
  hidden tests it verified, else the cell's own error (``worker.cell_status``), and which answers still
  await a grader (``PendingManualGrades``). Every text is scrubbed of the hidden tests' lines with
  ``SanitizeHiddenTests``' own function, and the hidden tests' source never enters a row;
* Gradescope's HTML entry (``rows_of_results``): the rows of ``result.json``.

Both are drawn by ``render``; the page's wrapping rules (verdicts, outputs and comments wrap within the
page's width) are ``CSS``.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from autograder.course.source import _CHECK

NEEDS_MANUAL = "needs manual grade"
GRADED_BY_HAND = "graded by hand"
KNOWN = ("passed", "failed", "error", "timeout", "missing", NEEDS_MANUAL, GRADED_BY_HAND)
VERDICT = re.compile(r"^Grader's verdict: (?P<body>.*?) \((?P<score>[-+0-9.e]+)/(?P<max>[-+0-9.e]+) points\)\s*$", re.M)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_POINTS = re.compile(r"\s*\((?:[^()]*\b)?\d+(?:\.\d+)?\s*points?\)\s*$", re.I)

PENDING_VERDICT = "A person grades this answer: its points are not in the score yet (the 0 is not a grade)."
PASSED_VERDICT = "All checks passed."


@dataclass
class Row:
    grade_id: str
    name: str               # the exercise: a function's name, or the written question
    code: bool              # name is a function's name (shown as code)
    score: float
    max_score: float
    status: str             # one of KNOWN
    verdict: str            # one line (or a grader's comment), never a hidden test's source
    anchor: str | None      # the cell's anchor on the page (None: no link)


def readable(grade_id: str) -> str:
    """``written_rolling_buffer`` -> ``rolling buffer``."""
    words = re.sub(r"^(written|test|answer|question)_", "", grade_id).replace("_", " ").strip()
    return words or grade_id


def question_name(cells, index: int, grade_id: str) -> str:
    """The name of a written answer: the nearest heading above it (its "(2 points)" cut), then its grade
    id made readable: ``Written question: rolling buffer``."""
    heading = ""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            found = _HEADING.findall(cell.source)
            if found:
                heading = _POINTS.sub("", found[-1]).strip()
                break
    words = readable(grade_id)
    if not heading:
        return f"Written answer: {words}"
    return heading if words.lower() in heading.lower() else f"{heading}: {words}"


def exercises_of(source: str) -> list[str]:
    return list(dict.fromkeys(_CHECK.findall(source)))


def parse_verdict(text: str) -> tuple[str, str, float, float] | None:
    """(status, message, score, max) of the worker's last "Grader's verdict: ..." line in ``text``."""
    found = list(VERDICT.finditer(text))
    if not found:
        return None
    m = found[-1]
    body = m.group("body").strip()
    status, _, message = body.partition(": ")
    if status not in KNOWN:
        status, message = "failed", body
    return status, message.strip(), float(m.group("score")), float(m.group("max"))


def one_line(text: str, limit: int = 600) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _status_class(status: str) -> str:
    return {"passed": "ok", NEEDS_MANUAL: "wait", GRADED_BY_HAND: "hand"}.get(status, "bad")


def render(rows: list[Row], title: str, score: float, max_score: float, late_penalty: float = 0.0,
           links: bool = True, inline: bool = False) -> str:
    """The summary as an HTML fragment. ``inline``: styles in ``style`` attributes (Gradescope's HTML
    entry, which carries no style sheet); else the classes of ``CSS``."""
    e = html.escape
    pending = sum(r.max_score for r in rows if r.status == NEEDS_MANUAL)
    counts = {s: sum(r.status == s for r in rows) for s in KNOWN}
    lost = [r for r in rows if r.status not in ("passed", NEEDS_MANUAL, GRADED_BY_HAND)]

    def st(css: str) -> str:
        return f' style="{css}"' if inline else ""
    head = f"{e(title)}: {_fmt(score)} / {_fmt(max_score)} points"
    notes = []
    if pending:
        notes.append(f"{_fmt(pending)} points await a grader")
    if late_penalty:
        notes.append(f"late submission penalty: −{_fmt(late_penalty)}")
    parts = [f'<section class="fs-summary" id="feedback-summary" aria-label="Summary of your grades"'
             f'{st("margin: 0 0 1em 0; max-width: 100%;")}>',
             f'<h4 class="fs-title"{st("margin: .2em 0 .4em 0;")}>{head}'
             + (f' <span class="fs-note">({e("; ".join(notes))})</span>' if notes else "") + "</h4>"]
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lead = (f"{len(lost)} of {len(rows)} graded cells lost points" if lost else
            "No graded cell lost points")
    parts.append(f'<p class="fs-lead"{st("margin: 0 0 .4em 0;")}>{e(lead)} ({e(tally)}).'
                 + (" Each name links to its cell." if links else "") + "</p>")
    cell = "border: 1px solid #ccc; padding: .25em .5em; vertical-align: top; text-align: left;"
    parts.append(f'<table class="fs-table"{st("border-collapse: collapse; width: 100%; table-layout: fixed;")}>'
                 f'<colgroup><col class="fs-c-name"{st("width: 26%;")}><col class="fs-c-points"{st("width: 9%;")}>'
                 f'<col class="fs-c-status"{st("width: 15%;")}><col class="fs-c-verdict"{st("width: 50%;")}></colgroup>'
                 f'<thead><tr><th{st(cell)}>Exercise</th><th{st(cell)}>Points</th><th{st(cell)}>Status</th>'
                 f'<th{st(cell)}>Verdict</th></tr></thead><tbody>')
    colour = {"ok": "#2e7d32", "bad": "#c62828", "wait": "#8a6d00", "hand": "#1565c0"}
    for r in rows:
        kind = _status_class(r.status)
        name = f"<code>{e(r.name)}</code>" if r.code else e(r.name)
        if links and r.anchor:
            name = f'<a class="fs-link" href="#{e(r.anchor, quote=True)}">{name}</a>'
        wrap = "overflow-wrap: anywhere; word-break: break-word; white-space: normal;"
        parts.append(
            f'<tr class="fs-row fs-{kind}" data-grade-id="{e(r.grade_id, quote=True)}" data-status="{e(r.status, quote=True)}">'
            f'<td class="fs-name"{st(cell + wrap)}>{name}</td>'
            f'<td class="fs-points"{st(cell)}>{_fmt(r.score)} / {_fmt(r.max_score)}</td>'
            f'<td class="fs-status"{st(cell + wrap + "font-weight: bold; color: " + colour[kind] + ";")}>{e(r.status)}</td>'
            f'<td class="fs-verdict"{st(cell + wrap)}>{e(r.verdict)}</td></tr>')
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def rows_of_notebook(nb, states: dict[str, str], scrub) -> list[Row]:
    """The rows of an autograded notebook as nbgrader's GetGrades leaves it (see the module's docstring).
    ``states``: {grade id: "pending" | "manual" | "auto"} of the gradebook (``PendingManualGrades``);
    ``scrub(text)``: the text without any line that quotes a hidden test."""
    from autograder.grading.worker import cell_status

    rows = []
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if not (meta.get("grade") or meta.get("task")):
            continue
        gid = meta.get("grade_id", "")
        score = float(meta.get("score") or 0.0)
        max_score = float(meta.get("points") or 0.0)
        state = states.get(gid, "auto")
        manual = bool(meta.get("solution") or meta.get("task") or cell.cell_type != "code")
        anchor = gid if meta.get("grade") else f"comment-{gid}"
        if manual:
            name, code = question_name(nb.cells, index, gid), False
            comment = one_line(scrub(meta.get("comment") or ""))
            if state == "pending":
                status, verdict = NEEDS_MANUAL, PENDING_VERDICT
            elif state == "manual":
                status, verdict = GRADED_BY_HAND, comment or "Graded by a person (no comment)."
            elif score >= max_score:
                status, verdict = "passed", comment
            else:
                status = "missing"
                verdict = "Not answered: the cell is as you received it" + (f" ({comment})" if comment else ".")
        else:
            names = exercises_of(cell.source)
            name, code = (", ".join(names), True) if names else (readable(gid), False)
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            found = parse_verdict(text)
            if found is not None:
                status, message, auto, _ = found
            else:
                status, message = cell_status(cell)
                auto = score
                if status == "passed" and score < max_score:
                    status, message = "failed", "nbgrader gave less than full marks"
            verdict = one_line(scrub(message))
            if not verdict and message:          # the whole line quoted a hidden test: its error's name alone
                head = message.split(":", 1)[0].strip()
                verdict = head if re.fullmatch(r"[A-Za-z_][\w.]*", head) else "the hidden tests failed"
            verdict = verdict or (PASSED_VERDICT if status == "passed" else "")
            if state == "manual" and score != auto:
                verdict = (verdict + "; " if verdict else "") + f"a grader set the score to {_fmt(score)}"
        rows.append(Row(gid, name, code, score, max_score, status, verdict, anchor))
    return rows


def rows_of_results(rows, cells_by_id: dict, scrub=lambda text: text) -> list[Row]:
    """The rows of ``result.json`` (``CellResult``), for Gradescope: no links (its page has no cells)."""
    found = []
    for r in rows:
        cell = cells_by_id.get((r.notebook, r.grade_id))
        exercises = list(getattr(cell, "exercises", ()) or ())
        if r.kind == "manual":
            name, code = f"Written answer: {readable(r.grade_id)}", False
        else:
            name, code = (", ".join(exercises), True) if exercises else (readable(r.grade_id), False)
        verdict = one_line(scrub(r.message)) or (PASSED_VERDICT if r.status == "passed" else "")
        if r.status == NEEDS_MANUAL:
            verdict = PENDING_VERDICT
        found.append(Row(r.grade_id, name, code, float(r.score), float(r.max_score), r.status, verdict, None))
    return found


CSS = """
/* autograder.grading.summary: the summary at the top, and nothing wider than the page */
section.fs-summary { margin: 0 0 1em 0; max-width: 100%; }
section.fs-summary h4.fs-title { margin: .2em 0 .4em 0; }
section.fs-summary .fs-note { font-weight: normal; color: #8a6d00; }
section.fs-summary p.fs-lead { margin: 0 0 .5em 0; }
table.fs-table { border-collapse: collapse; width: 100%; table-layout: fixed; background: white; }
table.fs-table th, table.fs-table td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top;
  text-align: left; overflow-wrap: anywhere; word-break: break-word; white-space: normal; }
table.fs-table col.fs-c-name { width: 26%; } table.fs-table col.fs-c-points { width: 9%; }
table.fs-table col.fs-c-status { width: 15%; } table.fs-table col.fs-c-verdict { width: 50%; }
table.fs-table td.fs-points { white-space: nowrap; }
table.fs-table a.fs-link code { color: inherit; background: none; padding: 0; }
table.fs-table tr.fs-ok td.fs-status { color: #2e7d32; font-weight: bold; }
table.fs-table tr.fs-bad td.fs-status { color: #c62828; font-weight: bold; }
table.fs-table tr.fs-bad { background: #fff5f5; }
table.fs-table tr.fs-wait td.fs-status { color: #8a6d00; font-weight: bold; }
table.fs-table tr.fs-hand td.fs-status { color: #1565c0; font-weight: bold; }
div.panel-heading:has(> section.fs-summary) { height: auto; }
/* outputs (the verdict lines, errors) and the graders' comments wrap within the page */
div.output_area pre, div.output_subarea pre, div.output_text pre, div.panel-footer pre {
  white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; }
div.panel-footer, div.panel-footer p, div.text_cell_render { overflow-wrap: anywhere; word-break: break-word; }
div.panel-footer pre, div.text_cell_render pre { white-space: pre-wrap; }
"""
