"""The class's results as tables: ``grades.csv`` and ``details.csv`` in OUT, and the table printed at the end of
a run. Rows are :class:`autograder.grading.records.StudentResult` records.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from autograder.grading.records import NEEDS_MANUAL, StudentResult


# The column of Canvas's gradebook import that the student ids of each layout fill (autograder.intake.layouts)
CANVAS_ID = {"canvas": "ID", "gradescope": "SIS User ID", "exchange": "SIS Login ID", "folders": "SIS Login ID"}

DETAIL_COLUMNS = ["student", "notebook", "grade_id", "score", "max_score", "status", "message"]


def write_csvs(results: list[StudentResult], out: Path, assignment: str) -> None:
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "score", "max_score", "final"])   # final: no cell awaits a person
        for r in results:
            w.writerow([r.student, assignment, f"{r.score:g}", f"{r.max_score:g}",
                        "yes" if is_final(r) else "no"])
    with open(out / "details.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=DETAIL_COLUMNS)
        w.writeheader()
        for r in results:
            for row in r.rows:
                w.writerow({**{k: getattr(row, k) for k in DETAIL_COLUMNS[1:]}, "student": r.student,
                            "score": "" if row.status == NEEDS_MANUAL else f"{row.score:g}",
                            "max_score": f"{row.max_score:g}"})


def is_final(result: StudentResult) -> bool:
    """True when no cell of the result awaits a manual grade (its score is the grade)."""
    return not any(row.status == NEEDS_MANUAL for row in result.rows)


def print_table(results: list[StudentResult], out: Path, file=sys.stdout) -> None:
    width = max([len("student")] + [len(r.student) for r in results])
    print(f"\n{'student':<{width}}  {'score':>6}  {'max':>5}  note", file=file)
    for r in results:
        statuses = sorted({row.status for row in r.rows} - {"passed"})
        note = ", ".join(f"{s}: {sum(row.status == s for row in r.rows)}" for s in statuses)
        print(f"{r.student:<{width}}  {r.score:>6g}  {r.max_score:>5g}  {note}", file=file)
    print(f"\ngrades:   {out / 'grades.csv'}\ndetails:  {out / 'details.csv'}\ncanvas:   {out / 'canvas.csv'}\n"
          f"feedback: {out / 'feedback'}/<student>/<assignment>/<notebook>.html\n"
          f"report:   {out / 'report.html'} (the class; report/similarity.html: who handed in the same code)", file=file)

