"""One assignment graded, the whole way through: ``python -m autograder grade ASSIGNMENT --submissions DIR
--out OUT``.

DIR is ``DIR/<student>/<notebook>.ipynb``, or an LMS's download of them (a Canvas zip, a Gradescope export,
nbgrader's ``submitted/``): ``autograder.intake.layouts`` copies them into that layout. The class is graded by
``autograder.batch.run`` (each student in a process and sandbox of its own); then its results go out.

Writes into OUT, an nbgrader course root (formgrader and ``nbgrader export`` read it):
  grades.csv                      student, assignment, score, max_score, final
  details.csv                     student, notebook, grade_id, score, max_score, status, message
                                  (status: passed / failed / error / timeout / missing / needs manual grade /
                                  graded by hand)
  canvas.csv                      the scores in the form of Canvas's gradebook import
  gradebook.db                    nbgrader's gradebook of the class (manual grades given in it are kept and
                                  counted in the CSVs and the feedback: ``autograder.outputs.export``)
  submitted/<student>/<assignment>/<nb>.ipynb    a copy of what the student handed in
  autograded/<student>/<assignment>/<nb>.ipynb   as graded, the verdicts under the test cells
  feedback/<student>/<assignment>/<nb>.html      what the student sees: scores, their code, visible tests
                                  and the one-line verdict of the hidden tests (never their source)
  logs/<student>.log              nbgrader's log, for the instructor
  report.html, report/*.csv       what the class did: scores, pass rates and verdicts per exercise, grading
                                  times, missing notebooks (``autograder.outputs.report``); report/similarity.html
                                  and .csv: who handed in the same code (``autograder.outputs.similarity``)

DIR is only read.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from autograder.batch.options import Options, options as make_options
from autograder.batch.run import Job, grade_class, students_in
from autograder.course.source import REPO, UsageError, check_assignment, graded_cells, private_tmp
from autograder.grading.records import StudentResult
from autograder.intake import layouts
from autograder.outputs import export, gradebook
from autograder.outputs.tables import CANVAS_ID, is_final


def grade(assignment: str, submissions: Path, out: Path, options: Options | None = None, *, repo: Path = REPO,
          **settings) -> list[StudentResult]:
    """Grade every student of ``submissions`` into ``out``; return one result per student.

    ``options`` (or its fields as keywords: ``workers=4, sandbox="on"``) are ``autograder.batch.options.Options``:
    cells the instructor tagged ``illustrative`` are not run unless ``run_illustrative``; test cells get a
    limit from the reference's timings (``autograder.course.timings``); unchanged submissions are reused from
    ``out/.cache`` unless ``force``; with ``scheduler`` the class is graded on that Dask cluster. The class
    gradebook is ``out/gradebook.db`` unless ``db`` (a SQLAlchemy URL nbgrader accepts) names another.
    ``submission_timeout`` is each submission's budget: cells past it are not run (and say so); the worker is
    killed 60 s later if it is still running, and scored from the records it left."""
    if options is not None and settings:
        raise TypeError("give either options or their fields as keywords, not both")
    options = options if options is not None else make_options(**settings)
    check_assignment(assignment, repo)
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if not submissions.exists():
        raise UsageError(f"submissions folder not found: {submissions} (a folder or a zip of one)")
    if out == submissions or submissions in out.parents:
        raise UsageError(f"--out must not be inside the submissions folder ({submissions}): it is never written to")
    cells = graded_cells(assignment, repo)
    if options.db is not None:                 # a wrong URL fails before any work
        gradebook.check(options.db)
    with contextlib.ExitStack() as stack:
        layout = _layout(submissions, assignment, cells, stack, options.quiet)
        scratch = stack.enter_context(private_tmp())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"grade-{assignment}-", dir=scratch)))
        job = Job(assignment, cells, layout.root, out, repo, origin=submissions)
        graded = grade_class(job, options, workdir)
        results = graded.results
        gradebook.write(options.db or gradebook.sqlite_url(out / "gradebook.db"), results, assignment,
                        graded.template / "gradebook.db", keep_manual=graded.unchanged, quiet=options.quiet)
        gradebook.remember(out, options.db)    # where formgrader and nbgrader export find it
        _similarity(out, assignment, graded.template / "release" / assignment, students_in(layout.root),
                    options.quiet)
    for res in results:
        if res.student in layout.late:
            res.late = True
    export.save_class(out, assignment, results, layout.names, CANVAS_ID[layout.kind])
    results = export.finish(out, gradebook.url_of(out, options.db), assignment, results, layout.names,
                            CANVAS_ID[layout.kind], repo)
    pending = [r.student for r in results if not is_final(r)]
    if pending and not options.quiet:
        print(f"{len(pending)} of {len(results)} totals are not final: answers graded by hand await a grader "
              f"(grades.csv's final column; canvas.csv leaves them empty)")
    return results


def _layout(submissions: Path, assignment: str, cells, stack: contextlib.ExitStack, quiet: bool):
    """The submissions in today's layout (``autograder.intake.layouts``: a Canvas or Gradescope download, nbgrader's
    exchange, as a folder or a zip), copied into a private folder unless they are in it already."""
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
        prefix=f"submissions-{assignment}-", dir=stack.enter_context(private_tmp()))))
    layout = layouts.normalize(submissions, assignment, sorted({c.notebook for c in cells}), scratch)
    if not students_in(layout.root):
        raise UsageError(f"no student folders in {submissions} (expected DIR/<student>/<notebook>.ipynb, "
                         f"a Canvas or Gradescope download, or nbgrader's submitted/)")
    if layout.kind != "folders" and not quiet:
        print(f"submissions: a {layout.kind} download, {len(students_in(layout.root))} students")
    for note in layout.notes:
        print(f"  {note}", file=sys.stdout if not quiet else sys.stderr)
    return layout



def _similarity(out: Path, assignment: str, release: Path, students: list[str], quiet: bool) -> None:
    """``OUT/report/similarity.{csv,html}`` (``autograder.outputs.similarity``), for two students or more; a failure
    is said on stderr and costs nothing else."""
    for name in ("similarity.csv", "similarity.html"):
        (out / "report" / name).unlink(missing_ok=True)
    if len(students) < 2:
        return
    try:
        from autograder.outputs.similarity import write
        pairs = write(out, assignment, release, students)
    except Exception as e:                     # noqa: BLE001 (the grades do not depend on it)
        print(f"similarity report not made: {type(e).__name__}: {e}", file=sys.stderr)
        return
    flagged = sum(p.flagged for p in pairs)
    if flagged and not quiet:
        print(f"similarity: {flagged} pairs of students share most of their code ({out / 'report' / 'similarity.html'})")
