"""python -m autograder {release,grade} — the instructor's commands.

  python -m autograder release [ASSIGNMENT] [--timings]
      regenerate notebooks/ (the student release) from solutions/ with nbgrader; --timings also measures
      each test cell of the reference (timings.json), from which grading derives the test cells' limits
  python -m autograder release [ASSIGNMENT] --bundle OUT [--as-of DATE]
      also write what students hold at ASSIGNMENT's release (or at DATE, or now) into OUT
  python -m autograder gradescope ASSIGNMENT --out DIR [--visibility after_published]
      write DIR/autograder.zip: a Gradescope autograder (setup.sh, run_autograder, only this assignment)
  python -m autograder formgrader OUT [--port P]
      nbgrader's formgrader in JupyterLab on a graded OUT (an nbgrader course root), for manual grading
  python -m autograder export OUT [--db URL]
      after manual grading (formgrader): the final grades into OUT's grades.csv, details.csv and canvas.csv,
      and the feedback pages again with the graders' scores and comments
  python -m autograder hub publish ASSIGNMENT --to DIR | feedback OUT --course ROOT | requirements
      the course on JupyterHub (docs/jupyterhub.md): the week's student course_lib for students' kernels,
      a graded OUT's feedback through nbgrader's exchange, the students' environment's pins
  python -m autograder schedule
      the release schedule (schedule.toml), what each notebook needs from the others; refuses a bad one
  python -m autograder grade ASSIGNMENT --submissions DIR --out OUT [--workers N]
      grade DIR/<student>/<notebook>.ipynb (or a Canvas download, a Gradescope export, nbgrader's
      submitted/, as a folder or a zip); write OUT/grades.csv, OUT/details.csv, OUT/canvas.csv (Canvas's
      gradebook import), OUT/gradebook.db and OUT/{submitted,autograded,feedback}/ (an nbgrader course root)

Bad input ends with a one-line error on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from autograder.course.source import REPO, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the whole usage otherwise)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m autograder", description="Release and grade the course's notebooks.")
    p.add_argument("--course", type=Path, default=REPO,
                   help="the course folder holding solutions/ and nbgrader_config.py (default: this repository)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("release", help="regenerate notebooks/ from solutions/")
    r.add_argument("assignment", nargs="?", help="one assignment (default: all of solutions/)")
    r.add_argument("--bundle", type=Path, default=None,
                   help="also write what students hold at ASSIGNMENT's release (or at --as-of, or now) into this "
                        "folder: the notebooks released by then, environment files, and course_lib without the "
                        "reference bodies of the exercises not yet due (schedule.toml)")
    r.add_argument("--timings", action="store_true",
                   help="also run each released assignment's solution as grading runs it and store every test cell's "
                        "time in timings.json (the test cells' time limits are derived from it)")
    r.add_argument("--as-of", default=None, metavar="DATE",
                   help="with --bundle and no ASSIGNMENT: cut the bundle at this date (YYYY-MM-DD, 00:00) or "
                        "date and time (YYYY-MM-DDTHH:MM), in the schedule's timezone")

    sub.add_parser("schedule", help="print the release schedule and the dependencies found in the code")
    sub.add_parser("hub", help="the course on JupyterHub: publish | feedback | requirements (python -m autograder hub "
                               "-h; docs/jupyterhub.md)", add_help=False)

    gs = sub.add_parser("gradescope", help="write OUT/autograder.zip, a Gradescope autograder for ASSIGNMENT")
    gs.add_argument("assignment")
    gs.add_argument("--out", required=True, type=Path, help="the folder autograder.zip is written into")
    gs.add_argument("--visibility", default="after_published",
                    choices=["hidden", "after_due_date", "after_published", "visible"],
                    help="when students see the verdicts and their feedback (default after_published)")
    gs.add_argument("--submission-timeout", type=float, default=None, metavar="S",
                    help="grading budget of one submission on Gradescope (default 480 s: under Gradescope's 10 minutes)")

    fg = sub.add_parser("formgrader", help="nbgrader's formgrader (JupyterLab) on a graded OUT, for manual grading")
    fg.add_argument("out", type=Path, help="a folder that grading wrote (--out of grade)")
    fg.add_argument("--port", type=int, default=8890)
    fg.add_argument("--no-browser", action="store_true")
    fg.add_argument("--db", default=None, metavar="URL",
                    help="the class gradebook, when grading wrote it elsewhere than OUT (grade's --db)")

    ex = sub.add_parser("export", help="after manual grading: final grades into OUT's CSVs, feedback with the "
                                       "graders' comments")
    ex.add_argument("out", type=Path, help="a folder grading wrote (--out of grade)")
    ex.add_argument("--db", default=None, metavar="URL",
                    help="the class gradebook, when grading wrote it elsewhere than OUT (grade's --db)")

    g = sub.add_parser("grade", help="grade a folder of submissions")
    g.add_argument("assignment")
    g.add_argument("--submissions", required=True, type=Path,
                   help="DIR/<student>/<notebook>.ipynb, or as an LMS delivers them, a folder or a zip: a Canvas "
                        "download (flat files, late ones, resubmissions), a Gradescope export (submission_<id>/ and "
                        "submission_metadata.yml), nbgrader's submitted/<student>/<assignment>/ (only read)")
    g.add_argument("--out", required=True, type=Path,
                   help="where grades.csv, details.csv, canvas.csv (for Canvas's gradebook import) and feedback/ go")
    g.add_argument("--workers", type=int, default=1, help="students graded at the same time (default 1)")
    g.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds per cell (default: Execute.timeout of nbgrader_config.py)")
    g.add_argument("--submission-timeout", type=float, default=600.0,
                   help="time budget of one student's whole submission, in seconds: cells past it are not run "
                        "(default 600)")
    g.add_argument("--sandbox", choices=["auto", "on", "off", "bwrap", "uid"], default="auto",
                   help="sandbox of the student kernels: auto (the strongest tier that works here; says loudly when "
                        "none does), on (refuse to grade without one), off, or a tier: bwrap (bubblewrap namespaces), "
                        "uid (a uid of its own per kernel, for containers; needs root). "
                        "`python -m autograder.sandbox check` says what holds here")
    g.add_argument("--memory-mb", type=int, default=6144, help="memory limit of a student's kernel (MiB)")
    g.add_argument("--max-pids", type=int, default=256, help="process/thread limit of a student's kernel")
    g.add_argument("--test-cell-timeout", type=float, default=None, metavar="S",
                   help="one time limit for every test cell (default: from the reference's timings in timings.json, "
                        "--time-factor times its seconds, at least --time-floor)")
    g.add_argument("--time-factor", type=float, default=None, metavar="F",
                   help="a test cell's limit is F times the reference's time on it (default: timings.json's factor, else 5)")
    g.add_argument("--time-floor", type=float, default=None, metavar="S",
                   help="the shortest limit of a test cell, in seconds (default: timings.json's floor, else 10)")
    g.add_argument("--run-illustrative", action="store_true",
                   help="also run the cells tagged illustrative in solutions/ (figures, demos, training runs that no "
                        "test reads), which grading skips by default")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="grade on a Dask cluster (e.g. tcp://host:8786: `dask scheduler` and `dask worker` on lab "
                        "machines, dask-jobqueue, dask-kubernetes); each worker machine needs this course's environment. "
                        "Default: --workers N processes on this machine")
    g.add_argument("--force", action="store_true",
                   help="regrade every submission (default: reuse those unchanged since the last run into OUT, "
                        "when nothing grading depends on has changed either)")
    g.add_argument("--db", default=None, metavar="URL",
                   help="the class gradebook in a database several graders share (any SQLAlchemy URL nbgrader "
                        "accepts, e.g. postgresql://grader@dbhost/course; the password from PGPASSWORD or ~/.pgpass). "
                        "Default: OUT/gradebook.db (SQLite)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hub"]:                    # its own commands and options (autograder.release.hub)
        from autograder.release.hub import main as hub_main
        return hub_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        repo = args.course.resolve()
        if not (repo / "nbgrader_config.py").is_file():
            raise UsageError(f"not a course folder (no nbgrader_config.py): {repo}")
        if args.command == "release":
            from autograder.release.notebooks import release
            as_of = None
            if args.as_of is not None:
                from autograder.course.schedule import load, parse_as_of
                if args.bundle is None or args.assignment:
                    raise UsageError("--as-of goes with --bundle and no ASSIGNMENT")
                schedule = load(repo)
                if schedule is None:
                    raise UsageError(f"--as-of needs a schedule: no schedule.toml in {repo}")
                as_of = parse_as_of(args.as_of, schedule)
            if args.bundle is not None:        # refuse a bad schedule before regenerating anything
                from autograder.course.schedule import checked
                checked(repo)
            for path in release(args.assignment, dest=repo / "notebooks", repo=repo):
                print(f"released {os.path.relpath(path)}")
            if args.timings:
                from autograder.course.source import assignments
                from autograder.course.timings import FILE, measure
                for name in [args.assignment] if args.assignment else assignments(repo):
                    entry = measure(name, repo)
                    slowest = max(((s, k) for cells in entry["notebooks"].values() for k, s in cells.items()), default=(0, "-"))
                    print(f"timed {name}: {sum(len(c) for c in entry['notebooks'].values())} test cells in "
                          f"{entry['measured']['seconds']:g} s (slowest {slowest[1]}: {slowest[0]:g} s) -> {FILE}")
            if args.bundle is not None:
                from autograder.release.bundle import build_bundle
                print(f"student bundle: {build_bundle(args.bundle, args.assignment, repo=repo, as_of=as_of)}")
            return 0
        if args.command == "gradescope":
            from autograder.outputs.gradescope import main as gradescope_main
            argv_gs = ["build", args.assignment, "--out", str(args.out), "--visibility", args.visibility]
            if args.submission_timeout is not None:
                argv_gs += ["--submission-timeout", str(args.submission_timeout)]
            from autograder.course.source import check_assignment
            check_assignment(args.assignment, repo)
            return gradescope_main(argv_gs)
        if args.command == "formgrader":
            from autograder.outputs.formgrader import main as formgrader_main
            return formgrader_main([str(args.out), "--port", str(args.port)] + (["--no-browser"] if args.no_browser else [])
                                   + (["--db", args.db] if args.db else []))
        if args.command == "export":
            from autograder.outputs.export import export
            from autograder.outputs.tables import is_final, print_table
            results = export(args.out, db=args.db, repo=repo)
            print_table(results, args.out.resolve())
            final = sum(is_final(r) for r in results)
            print(f"{final} of {len(results)} totals are final"
                  + (f"; {len(results) - final} await a grader (formgrader)" if final < len(results) else ""))
            return 0
        if args.command == "schedule":
            from autograder.course.schedule import print_schedule
            print_schedule(repo)
            return 0
        from autograder.batch.options import Options
        from autograder.outputs.grade import grade
        from autograder.outputs.tables import print_table
        start = time.monotonic()
        options = Options(workers=args.workers, cell_timeout=args.cell_timeout,
                          submission_timeout=args.submission_timeout, sandbox=args.sandbox, memory_mb=args.memory_mb,
                          max_pids=args.max_pids, run_illustrative=args.run_illustrative,
                          test_cell_timeout=args.test_cell_timeout, time_factor=args.time_factor,
                          time_floor=args.time_floor, force=args.force, scheduler=args.scheduler, db=args.db,
                          quiet=args.quiet)
        results = grade(args.assignment, args.submissions, args.out, options, repo=repo)
        print_table(results, args.out.resolve())
        seconds = time.monotonic() - start
        print(f"graded {len(results)} submissions in {seconds:.1f} s "
              f"({seconds / len(results):.1f} s per submission, {args.workers} worker(s))")
        return 0
    except UsageError as e:
        print(f"autograder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autograder: interrupted", file=sys.stderr)
        return 130
