"""After manual grading: the final grades, and the feedback with the graders' scores and comments.

``python -m autograder export OUT [--db URL]`` (``make export OUT=...``) reads the class gradebook that
graders filled in formgrader (OUT's ``gradebook.db``, or grading's ``--db``) and

* rewrites ``grades.csv``, ``details.csv`` and ``canvas.csv`` with the final scores: a written answer a
  grader scored counts (status ``graded by hand``); one still waiting keeps ``needs manual grade``, and its
  student's total stays not final (``final`` no, empty in canvas.csv); a test cell whose score a grader
  changed counts with the grader's score (nbgrader's rule: a manual score replaces the automatic one;
  extra credit is added), its message says so;
* writes the class report again (``autograder.outputs.report``: ``report.html``, ``report/*.csv``);
* regenerates the feedback pages of every student a grader scored or commented, with nbgrader's own
  GenerateFeedback and the course's feedback preprocessors (its GetGrades puts the grader's score and
  comment under each cell; hidden tests stay out, as in grading's own pages). A page says in an HTML
  comment which entries it shows, so a page is made again only when they change, and the copy kept in
  ``OUT/.cache`` is what a later rerun restores.

Every grading run ends with the same step (``finish``): grading again after manual grading keeps the
grades, totals and comments in every file. The class graded last is in ``OUT/.cache/.class.json``.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from autograder.batch.cache import DIR
from autograder.batch.run import course_folders
from autograder.course.nbgrader import nbgrader_api, nbgrader_config
from autograder.course.source import REPO, UsageError
from autograder.grading.records import GRADED_BY_HAND, NEEDS_MANUAL, StudentResult
from autograder.intake.layouts import write_canvas_csv
from autograder.outputs import gradebook, report
from autograder.outputs.tables import is_final, write_csvs

CLASS = ".class.json"                      # OUT/.cache/.class.json: what export needs of the last run
STAMP = "<!-- graders' entries: {} -->"    # in a regenerated page: the hash of the entries it shows


def save_class(out: Path, assignment: str, results: list[StudentResult], names: dict, id_column: str) -> None:
    """Keep what ``export`` needs of a grading run: the rows as the autograder gave them."""
    kept = [{k: v for k, v in r.to_json().items() if k in ("student", "rows", "late", "seconds", "cached", "outcome")}
            for r in results]
    path = Path(out) / DIR / CLASS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(assignment=assignment, names=names, id_column=id_column, results=kept)))
    tmp.replace(path)


def load_class(out: Path) -> dict:
    path = Path(out) / DIR / CLASS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"no graded class in {out}: grade into it first (python -m autograder grade ... --out {out})")
    return data


def with_manual(results: list[StudentResult], grades: dict) -> list[StudentResult]:
    """``results`` with the grades people gave (``gradebook.manual_grades``'s first dict) in their rows and
    totals. The autograder's own rows are not changed."""
    final = []
    for r in results:
        rows = []
        for row in r.rows:
            manual, extra = grades.get((r.student, row.notebook, row.grade_id), (None, None))
            extra = extra or 0.0
            if row.status == NEEDS_MANUAL:
                if manual is not None:
                    row = replace(row, score=manual + extra, status=GRADED_BY_HAND,
                                  message=f"graded by hand: {manual + extra:g} of {row.max_score:g} points")
            elif manual is not None or extra:
                score = (manual if manual is not None else row.score) + extra
                if score != row.score:
                    row = replace(row, score=score, message=f"{row.message}; a grader set the score to {score:g}"
                                  if row.message else f"a grader set the score to {score:g}")
            rows.append(row)
        final.append(replace(r, rows=rows))
    return final


def _stamps(grades: dict, comments: dict) -> dict[str, str]:
    """{student: hash of what graders entered for them}, for the students with any entry."""
    by = {}
    for (student, nb, cell), value in [*grades.items(), *comments.items()]:
        by.setdefault(student, []).append([nb, cell, value])
    return {s: hashlib.sha256(json.dumps(sorted(v, key=str)).encode()).hexdigest()[:16] for s, v in by.items()}


def refresh_feedback(out: Path, url: str, assignment: str, stamps: dict[str, str], repo: Path = REPO) -> list[str]:
    """Make again the feedback pages whose graders' entries changed since they were made (``stamps``:
    {student: hash}; a student with none shows none). Returns the students whose pages were made."""
    out = Path(out)
    todo = []
    for graded in sorted((out / "autograded").glob(f"*/{assignment}")):
        student = graded.parent.name
        notebooks = sorted(graded.glob("*.ipynb"))
        feedback = course_folders(out, student, assignment)["feedback"]
        want = STAMP.format(stamps[student]) if student in stamps else None
        for nb in notebooks:
            page = feedback / f"{nb.stem}.html"
            last = (page.read_text(errors="replace").rstrip().splitlines() or [""])[-1] if page.is_file() else ""
            if (last if last.startswith(STAMP.split("{")[0]) else None) != want:
                todo.append(student)
                break
    if not todo:
        return []
    with tempfile.TemporaryDirectory(prefix="feedback-", dir=out / DIR) as made:
        api = nbgrader_api(nbgrader_config(out, repo, CourseDirectory__db_url=url,   # pages made aside: nbgrader
                                           CourseDirectory__feedback_directory=made))  # empties the folder first
        for student in todo:
            res = api.generate_feedback(assignment, student, force=True)
            pages = sorted((Path(made) / student / assignment).glob("*.html"))
            if not res.get("success") or not pages:     # the pages grading made stay
                why = ((res.get("error") or res.get("log") or "no page made").strip().splitlines() or ["?"])[-1]
                print(f"feedback of {student} not made again: nbgrader: {why}", file=sys.stderr)
                continue
            folders = course_folders(out, student, assignment)
            kept = out / DIR / student / "feedback"
            for page in pages:
                text = page.read_text()
                if student in stamps:
                    text = text.rstrip("\n") + "\n" + STAMP.format(stamps[student]) + "\n"
                (folders["feedback"] / page.name).write_text(text)
                if kept.is_dir():     # what a rerun restores for an unchanged submission
                    (kept / page.name).write_text(text)
    return todo


def finish(out: Path, url: str, assignment: str, results: list[StudentResult], names: dict | None = None,
           id_column: str = "SIS Login ID", repo: Path = REPO) -> list[StudentResult]:
    """The last step of grading and all of ``export``: the graders' entries into the rows, the CSVs and
    the feedback pages. Returns the results with the final scores."""
    grades, comments = gradebook.manual_grades(url, assignment, {r.student for r in results})
    final = with_manual(results, grades)
    write_csvs(final, out, assignment)
    write_canvas_csv([{"student": r.student, "max_score": r.max_score,
                       "score": r.score if is_final(r) else None} for r in final],   # no partial total
                     out / "canvas.csv", assignment, names or {}, id_column=id_column)
    refresh_feedback(out, url, assignment, _stamps(grades, comments), repo)
    try:                                       # the class report: never a reason for grading to fail
        report.write(out, assignment, final)
    except Exception as e:                     # noqa: BLE001 (the grades are written; say what is missing)
        print(f"class report not made: {type(e).__name__}: {e}", file=sys.stderr)
    return final


def export(out: Path, db: str | None = None, repo: Path = REPO) -> list[StudentResult]:
    out = Path(out)
    if not out.is_dir():
        raise UsageError(f"not a folder: {out}")
    data = load_class(out)
    url = gradebook.url_of(out, db)
    gradebook.check(url)
    results = [StudentResult.from_json(r) for r in data["results"]]
    return finish(out, url, data["assignment"], results, data.get("names"),
                  data.get("id_column", "SIS Login ID"), repo)

