"""Grade a folder of submissions: ``DIR/<student>/<notebook>.ipynb``, or an LMS's download of them (a Canvas
zip, a Gradescope export, nbgrader's ``submitted/``: ``autograder.layouts`` copies them into that layout).

Writes into OUT, an nbgrader course root (formgrader and ``nbgrader export`` read it):
  grades.csv                      student, assignment, score, max_score, final
  details.csv                     student, notebook, grade_id, score, max_score, status, message
                                  (status: passed / failed / error / timeout / missing / needs manual grade /
                                  graded by hand)
  canvas.csv                      the scores in the form of Canvas's gradebook import
  gradebook.db                    nbgrader's gradebook of the class (manual grades given in it are kept and
                                  counted in the CSVs and the feedback: ``autograder.export``)
  submitted/<student>/<assignment>/<nb>.ipynb    a copy of what the student handed in
  autograded/<student>/<assignment>/<nb>.ipynb   as graded, the verdicts under the test cells
  feedback/<student>/<assignment>/<nb>.html      what the student sees: scores, their code, visible tests
                                  and the one-line verdict of the hidden tests (never their source)
  logs/<student>.log              nbgrader's log, for the instructor
  report.html, report/*.csv       what the class did: scores, pass rates and verdicts per exercise, grading
                                  times, missing notebooks (``autograder.report``); report/similarity.html
                                  and .csv: who handed in the same code (``autograder.similarity``)

Each student is graded by its own process (``autograder.worker``) in its own temporary course root,
``workers`` at a time, under a wall-clock budget: a broken or endless submission costs at most that
budget and never stops the others. DIR is only read.
"""
from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from .course import REPO, UsageError, check_assignment, env_for_kernels, generate, graded_cells, private_tmp
from .worker import NEEDS_MANUAL

# The column of Canvas's gradebook import that the student ids of each layout fill (autograder.layouts)
CANVAS_ID = {"canvas": "ID", "gradescope": "SIS User ID", "exchange": "SIS Login ID", "folders": "SIS Login ID"}
DETAIL_COLUMNS = ["student", "notebook", "grade_id", "score", "max_score", "status", "message"]


def students_in(submissions: Path) -> list[str]:
    return sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def sandbox_mode(requested: str) -> tuple[str | None, str]:
    """(tier or None, the one line that says what holds) for ``--sandbox auto|on|off|bwrap|uid``."""
    from .sandbox import choose, summary
    try:
        tier, why = choose(requested)
    except ValueError as e:
        raise UsageError(str(e))
    line = summary(tier)
    if tier is None:
        line += f" ({why}; --sandbox on to require a sandbox)"
    return tier, line


def grade(assignment: str, submissions: Path, out: Path, *, workers: int = 1, cell_timeout: int | None = None,
          submission_timeout: float = 600.0, repo: Path = REPO, quiet: bool = False, sandbox: str = "auto",
          memory_mb: int = 6144, max_pids: int = 256, run_illustrative: bool = False,
          test_cell_timeout: float | None = None, time_factor: float | None = None,
          time_floor: float | None = None, force: bool = False, scheduler: str | None = None,
          db: str | None = None) -> list[dict]:
    """Grade every student folder of ``submissions``; return one summary dict per student.

    Cells the instructor tagged ``illustrative`` in ``solutions/`` are not run (``autograder.cells``)
    unless ``run_illustrative``. Test cells get a limit from the reference's timings (``autograder.timings``:
    ``time_factor`` × its seconds, at least ``time_floor``; or ``test_cell_timeout`` for all). A student whose
    submission and everything else grading depends on are unchanged since the last run into ``out`` is
    reused from ``out/.cache`` (``autograder.cache``), unless ``force``. With ``scheduler`` (a Dask scheduler's
    address) the submissions are graded on that cluster (``autograder.cluster``), else ``workers`` at a time
    here. The class gradebook is ``out/gradebook.db`` unless ``db`` (a SQLAlchemy URL nbgrader accepts:
    PostgreSQL for graders sharing it) names another (``autograder.gradebook``).

    ``submission_timeout`` is each submission's budget: cells past it are not run (and say so); the
    worker is killed 60 s later if it is still running, and scored from the records it left."""
    check_assignment(assignment, repo)
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if not submissions.exists():
        raise UsageError(f"submissions folder not found: {submissions} (a folder or a zip of one)")
    if out == submissions or submissions in out.parents:
        raise UsageError(f"--out must not be inside the submissions folder ({submissions}): it is never written to")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    cells = graded_cells(assignment, repo)
    if db is not None:                         # a wrong URL fails before any work
        from .gradebook import check
        check(db)
    with contextlib.ExitStack() as stack:
        layout = _layout(submissions, assignment, cells, stack, quiet)
        return _grade(assignment, layout, out, workers, cell_timeout, submission_timeout, repo, quiet, sandbox,
                      memory_mb, max_pids, run_illustrative, test_cell_timeout, time_factor, time_floor, force,
                      scheduler, cells, submissions, db)


def _layout(submissions: Path, assignment: str, cells, stack: contextlib.ExitStack, quiet: bool):
    """The submissions in today's layout (``autograder.layouts``: a Canvas or Gradescope download, nbgrader's
    exchange, as a folder or a zip), copied into a private folder unless they are in it already."""
    from . import layouts
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


def _grade(assignment, layout, out, workers, cell_timeout, submission_timeout, repo, quiet, sandbox, memory_mb,
           max_pids, run_illustrative, test_cell_timeout, time_factor, time_floor, force, scheduler, cells, origin, db=None):
    submissions = layout.root
    students = students_in(submissions)
    if cell_timeout is None:
        from .course import nbgrader_config
        cell_timeout = int(nbgrader_config(Path(tempfile.gettempdir()), repo).Execute.timeout)

    for name, value in (("--test-cell-timeout", test_cell_timeout), ("--time-factor", time_factor),
                        ("--time-floor", time_floor)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be positive, got {value:g}")
    from .timings import limits as cell_limits
    limits_by_nb, limit_rule = cell_limits(assignment, cell_timeout, repo=repo, factor=time_factor, floor=time_floor,
                                           fixed=test_cell_timeout)

    if scheduler:                              # a wrong address fails before any work
        from .cluster import reach
        reach(scheduler).close()
    tier, sandbox_line = sandbox_mode(sandbox)
    print(sandbox_line, file=sys.stdout if tier else sys.stderr)
    if not quiet:
        print(f"test cells: {limit_rule}")

    from . import cache
    options = dict(cell_timeout=cell_timeout, limits=limits_by_nb, budget=submission_timeout, tier=tier,
                   memory_mb=memory_mb, max_pids=max_pids, run_illustrative=run_illustrative)
    fp = cache.fingerprint(assignment, repo, options)
    notebooks = sorted({c.notebook for c in cells})
    keys = {s: cache.submission_key(submissions / s, notebooks) for s in students}
    reused = {} if force else {s: r for s in students if (r := cache.lookup(out, s, fp, keys[s])) is not None}
    unchanged = {s for s in students if cache.previous_key(out, s) == keys[s]}   # their manual grades stay
    out.mkdir(parents=True, exist_ok=True)
    cache.prune(out, students)
    for sub in ("feedback", "logs", "autograded", "submitted"):       # remade from this run and the cache
        shutil.rmtree(out / sub, ignore_errors=True)
    for student in students:                 # nbgrader's submitted/: the notebooks as handed in (copies)
        _copy_submitted(submissions / student, out / "submitted" / student / assignment, notebooks)
    for student, res in reused.items():
        (out / "logs").mkdir(exist_ok=True)
        (out / "logs" / f"{student}.log").write_text(res.get("log", ""))
        cache.restore(out, student, course_folders(out, student, assignment))
    if reused:
        print(f"reused {len(reused)} of {len(students)} submissions, unchanged since the last run into {out} "
              f"({cache.DIR}/; --force regrades every one)")
    from . import limits
    limits.prune(older_than=600)               # cgroups that killed runs left behind
    run = uuid.uuid4().hex[:8]
    uid_run = None
    with private_tmp() as scratch, tempfile.TemporaryDirectory(prefix=f"grade-{assignment}-", dir=scratch) as tmp:
        tmp = Path(tmp)
        if not scheduler and students != list(reused):
            from . import warm
            warm.prestart()                                    # loads while the template is made
        built = out / cache.DIR / cache.BUILT                  # made from the sources, reused while they stay
        generate(assignment, tmp / "template", repo, cache=built)   # the gradebook every worker starts from
        from .bundle import strip_course_lib
        from .schedule import cut_for_grading                 # the course_lib a graded kernel imports: its
        cut = cut_for_grading(assignment, repo)               # students' own, cut at its release
        strip_course_lib(tmp / "bundle", list(cut.stripped), repo, cache=built)
        if not quiet:
            print(f"course_lib of the graded kernels: exercises of {', '.join(cut.stripped)} removed")
        if tier == "uid" and not scheduler:     # close the course, submissions and OUT to the kernels' uids
            from .sandbox import python_paths
            from .uid_tier import Run
            uid_run = Run(protect=[repo, REPO, origin, submissions, out], keep=[Path(p) for p in python_paths()])
            try:
                uid_run.open()
            except RuntimeError as e:
                raise UsageError(str(e))
        try:
            results = _grade_all(assignment, [s for s in students if s not in reused], submissions, tmp, repo, cells, cell_timeout, tier, run,
                                 uid_run, workers, submission_timeout, memory_mb, max_pids, quiet, out,
                                 run_illustrative, (limits_by_nb, limit_rule), (scheduler, sandbox))
        finally:
            if uid_run is not None:
                uid_run.close()
        for res in results:
            if not res["timed_out"] and not any(r["message"].startswith(("the grader failed", "the grading workers died"))
                                                for r in res["rows"]):
                cache.store(out, res["student"], fp, keys[res["student"]], res,
                            course_folders(out, res["student"], assignment))
        results += [dict(res, cached=True) for res in reused.values()]
        results.sort(key=lambda r: r["student"])
        from . import gradebook                # OUT/gradebook.db, or --db's
        gradebook.write(db or gradebook.sqlite_url(out / "gradebook.db"), results, assignment,
                        tmp / "template" / "gradebook.db", keep_manual=unchanged, quiet=quiet)
        gradebook.remember(out, db)            # where formgrader and nbgrader export find it
        _similarity(out, assignment, tmp / "template" / "release" / assignment, students, quiet)
    for res in results:
        if res["student"] in layout.late:
            res["late"] = True
    from . import export                       # the CSVs and feedback with what graders entered
    export.save_class(out, assignment, results, layout.names, CANVAS_ID[layout.kind])
    results = export.finish(out, gradebook.url_of(out, db), assignment, results, layout.names,
                            CANVAS_ID[layout.kind], repo)
    pending = [r["student"] for r in results if not is_final(r)]
    if pending and not quiet:
        print(f"{len(pending)} of {len(results)} totals are not final: answers graded by hand await a grader "
              f"(grades.csv's final column; canvas.csv leaves them empty)")
    return results


def _similarity(out: Path, assignment: str, release: Path, students: list[str], quiet: bool) -> None:
    """``OUT/report/similarity.{csv,html}`` (``autograder.similarity``), for two students or more; a failure
    is said on stderr and costs nothing else."""
    for name in ("similarity.csv", "similarity.html"):
        (out / "report" / name).unlink(missing_ok=True)
    if len(students) < 2:
        return
    try:
        from .similarity import write
        pairs = write(out, assignment, release, students)
    except Exception as e:                     # noqa: BLE001 (the grades do not depend on it)
        print(f"similarity report not made: {type(e).__name__}: {e}", file=sys.stderr)
        return
    flagged = sum(p.flagged for p in pairs)
    if flagged and not quiet:
        print(f"similarity: {flagged} pairs of students share most of their code ({out / 'report' / 'similarity.html'})")


def _grade_all(assignment, students, submissions, tmp, repo, cells, cell_timeout, tier, run, uid_run,
               workers, submission_timeout, memory_mb, max_pids, quiet, out, run_illustrative=False,
               limits=({}, ""), cluster=(None, "auto")) -> list[dict]:
    specs = []
    for student in students:
        spec = dict(student=student, assignment=assignment, root=str(tmp / "students" / student),
                    submission=str(submissions / student), gradebook=str(tmp / "template" / "gradebook.db"),
                    cells=[asdict(c) for c in cells], cell_timeout=cell_timeout, repo=str(repo),
                    sandbox=tier is not None, tier=tier, run=run, budget=submission_timeout,
                    bundle=str(tmp / "bundle"), shipped_from=str(tmp / "template" / "release" / assignment),
                    memory_mb=memory_mb, max_pids=max_pids, skip_illustrative=not run_illustrative,
                    cell_limits=limits[0], limit_rule=limits[1].split(' (measured')[0])
        if uid_run is not None:
            home, uid = uid_run.new_home(run)
            spec.update(home=str(home), uid=uid, gid=uid_run.gid)
        Path(spec["root"]).mkdir(parents=True)
        specs.append(spec)
    results = []
    if not specs:
        return results
    bar = tqdm(total=len(specs), desc=f"grading {assignment}", unit="student", disable=quiet, file=sys.stdout)
    if cluster[0]:
        from .cluster import course_archive, grade_on_cluster

        def done(res):
            results.append(res)
            _collect(res, out, assignment)
            bar.update(1)
            if not quiet:
                bar.write(f"  {res['student']}: {res['score']:g}/{res['max_score']:g}  ({res['seconds']:.1f} s, "
                          f"{res.get('machine', '?').split(':')[0]})")
        try:
            grade_on_cluster(cluster[0], specs, course_archive(tmp, repo, assignment), cluster[1], done)
        finally:
            bar.close()
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run_worker, spec, submission_timeout + 60) for spec in specs]
        for future in as_completed(futures):
            res = future.result()
            results.append(res)
            _collect(res, out, assignment)
            bar.update(1)
            if not quiet:
                bar.write(f"  {res['student']}: {res['score']:g}/{res['max_score']:g}  ({res['seconds']:.1f} s)")
    bar.close()
    return results


def course_folders(out: Path, student: str, assignment: str) -> dict[str, Path]:
    """Where OUT keeps a student's graded files, in nbgrader's course layout (formgrader reads them)."""
    return {"feedback": out / "feedback" / student / assignment,
            "autograded": out / "autograded" / student / assignment}


def feedback_page(out: Path, student: str, assignment: str, notebook: str) -> Path:
    return course_folders(out, student, assignment)["feedback"] / f"{notebook}.html"


def _copy_submitted(folder: Path, dest: Path, notebooks: list[str]) -> None:
    """nbgrader's ``submitted/<student>/<assignment>/``: a copy of each notebook handed in (only read)."""
    for name in notebooks:
        path = folder / f"{name}.ipynb"
        if path.is_file() and not path.is_symlink():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / path.name)


def _run_worker(spec: dict, budget: float) -> dict:
    """Grade one submission in a process of its own (``autograder.worker``), killed with its kernel after
    ``budget`` seconds. The process is forked from a server that has the worker's imports loaded
    (``autograder.warm``); where the spec ships its own grader code (``pythonpath``: a cluster task), a
    fresh interpreter runs that code instead."""
    root = Path(spec["root"])
    spec_path = root.parent / f"{spec['student']}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**env_for_kernels(), "IPYTHONDIR": str(root / ".ipython"),   # not in HOME
           **({"PYTHONPATH": spec["pythonpath"]} if spec.get("pythonpath") else {})}
    start = time.monotonic()
    if spec.get("pythonpath"):
        output, timed_out = _fresh_worker(spec_path, root, env, budget)
    else:
        output, timed_out = _warm_worker(spec_path, root, env, budget)
    _leave_nothing(spec)
    seconds = time.monotonic() - start
    result_file = root / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() and not timed_out else {}
    rows = result.get("rows")
    if not rows:   # killed at the budget, or the worker itself failed: score what the records show
        from .worker import finish
        rows = finish(spec)
        for row in rows:
            if row["status"] in ("error", "timeout") and not row["message"].startswith(("not a readable", "notebook not")):
                row["message"] = (f"grading stopped: the submission used up its {spec['budget']:g} s budget"
                                  if timed_out else "the grader failed on this submission (see its log)")
                row["status"] = "timeout" if timed_out else "error"
    log = output.decode(errors="replace") + result.get("log", "") + result.get("fatal", "")
    return dict(student=spec["student"], rows=rows, root=str(root), log=log, seconds=seconds, run=spec["run"],
                notebooks=result.get("notebooks", {}), timed_out=timed_out,
                score=sum(r["score"] for r in rows), max_score=sum(r["max_score"] for r in rows))


def _fresh_worker(spec_path: Path, root: Path, env: dict, budget: float) -> tuple[bytes, bool]:
    proc = subprocess.Popen([sys.executable, "-m", "autograder.worker", str(spec_path)], cwd=str(root), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)   # its own process group: the kernel dies with it
    try:
        output, _ = proc.communicate(timeout=budget)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        timed_out = True
    finally:
        _kill_group(proc.pid)                 # any kernel left behind
    return output, timed_out


def _warm_worker(spec_path: Path, root: Path, env: dict, budget: float) -> tuple[bytes, bool]:
    from . import warm
    log = root.parent / f"{spec_path.stem}.out"
    proc = warm.start(str(spec_path), str(root), env, str(log))
    try:
        proc.join(budget)
        timed_out = proc.is_alive()
    finally:
        _kill_group(proc.pid)                 # at the budget: the worker and its kernel; else what it left
        proc.join()
    output = log.read_bytes() if log.exists() else b""
    if proc.exitcode and proc.exitcode < 0 and not timed_out:
        output += f"\nthe grading process was killed by signal {-proc.exitcode}\n".encode()
    return output, timed_out


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _leave_nothing(spec: dict) -> None:
    """After a worker, killed or not: no process, no cgroup, no kernel folder of it stays behind."""
    from . import limits
    from .worker import cgroup_name
    limits.prune(prefix=f"{cgroup_name(spec)}-")
    if spec.get("uid") is not None:
        from .uid_tier import kill_all_of, remove_tmp_files_of
        kill_all_of(spec["uid"])
        remove_tmp_files_of(spec["uid"], keep=Path(spec["home"]))
    from .worker import ipc_prefix
    for ipc in (p for t in {Path("/tmp"), Path(tempfile.gettempdir())} for p in t.glob(f"{ipc_prefix(spec)}*")):
        if ipc.is_dir() and ipc.stat().st_uid == os.geteuid():
            shutil.rmtree(ipc, ignore_errors=True)


def _collect(res: dict, out: Path, assignment: str) -> None:
    """Copy the student's feedback and autograded notebooks into OUT, in nbgrader's layout (or write a
    short page when nbgrader made none)."""
    student, root = res["student"], Path(res.get("root") or ".")
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{student}.log").write_text(res["log"])
    folders = course_folders(out, student, assignment)
    dest = folders["feedback"]
    dest.mkdir(parents=True, exist_ok=True)
    graded = res.get("autograded")            # graded on a cluster: the notebooks came back as text
    if not res["timed_out"]:
        made = root / "autograded" / student / assignment
        for name, text in (graded.items() if graded is not None else
                           ((p.stem, p.read_text()) for p in sorted(made.glob("*.ipynb")))):
            folders["autograded"].mkdir(parents=True, exist_ok=True)
            (folders["autograded"] / f"{name}.ipynb").write_text(text)
    pages = res.get("pages")                  # graded on a cluster: the pages came back as text
    for name in sorted({r["notebook"] for r in res["rows"]}):
        made = None if pages is not None else root / "feedback" / student / assignment / f"{name}.html"
        if pages is not None and name in pages:
            (dest / f"{name}.html").write_text(pages[name])
        elif made is not None and made.exists() and not res["timed_out"]:
            shutil.copyfile(made, dest / f"{name}.html")
        else:
            rows = [r for r in res["rows"] if r["notebook"] == name]
            why = res["notebooks"].get(name) or rows[0]["message"]
            score, max_score = sum(r["score"] for r in rows), sum(r["max_score"] for r in rows)
            (dest / f"{name}.html").write_text(
                "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{0}</title></head><body>"
                "<h1>{0}: {1:g} / {2:g}</h1><p>This notebook could not be graded: {3}.</p>"
                "</body></html>".format(html.escape(name), score, max_score, html.escape(why)))


def _write_csvs(results: list[dict], out: Path, assignment: str) -> None:
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "score", "max_score", "final"])   # final: no cell awaits a person
        for r in results:
            w.writerow([r["student"], assignment, f"{r['score']:g}", f"{r['max_score']:g}",
                        "yes" if is_final(r) else "no"])
    with open(out / "details.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=DETAIL_COLUMNS)
        w.writeheader()
        for r in results:
            for row in r["rows"]:
                w.writerow({**{k: row[k] for k in DETAIL_COLUMNS[1:]}, "student": r["student"],
                            "score": "" if row["status"] == NEEDS_MANUAL else f"{row['score']:g}",
                            "max_score": f"{row['max_score']:g}"})


def is_final(result: dict) -> bool:
    """True when no cell of the result awaits a manual grade (its score is the grade)."""
    return not any(row["status"] == NEEDS_MANUAL for row in result["rows"])


def print_table(results: list[dict], out: Path, file=sys.stdout) -> None:
    width = max([len("student")] + [len(r["student"]) for r in results])
    print(f"\n{'student':<{width}}  {'score':>6}  {'max':>5}  note", file=file)
    for r in results:
        statuses = sorted({row["status"] for row in r["rows"]} - {"passed"})
        note = ", ".join(f"{s}: {sum(row['status'] == s for row in r['rows'])}" for s in statuses)
        print(f"{r['student']:<{width}}  {r['score']:>6g}  {r['max_score']:>5g}  {note}", file=file)
    print(f"\ngrades:   {out / 'grades.csv'}\ndetails:  {out / 'details.csv'}\ncanvas:   {out / 'canvas.csv'}\n"
          f"feedback: {out / 'feedback'}/<student>/<assignment>/<notebook>.html\n"
          f"report:   {out / 'report.html'} (the class; report/similarity.html: who handed in the same code)", file=file)
