"""A class's submissions graded: each student by a worker process of its own (``autograder.grading.worker``)
in its own temporary course root, ``workers`` at a time here or one Dask task each on a cluster
(``autograder.batch.cluster``), under a wall-clock budget: a broken or endless submission costs at most that
budget and never stops the others. Students whose submission is unchanged since the last run into OUT are
reused from ``OUT/.cache`` (``autograder.batch.cache``).

Writes OUT's per-student folders (nbgrader's course layout: ``submitted/``, ``autograded/``, ``feedback/``,
``logs/``) and returns one :class:`~autograder.grading.records.StudentResult` per student; what the class's
results become (gradebook, CSVs, reports) is ``autograder.outputs``'s. The submissions are only read.
"""
from __future__ import annotations

import html
import shutil
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from autograder.batch import cache, warm
from autograder.batch.options import Options
from autograder.batch.process import run_worker
from autograder.course.nbgrader import generate, nbgrader_config
from autograder.course.source import REPO, GradedCell, UsageError
from autograder.course.timings import limits as cell_limits
from autograder.grading.records import GRADED, Spec, StudentResult
from autograder.sandbox import limits
from autograder.sandbox.kernel import sandbox_mode


@dataclass
class ClassRun:
    """A class graded: the results, the students whose manual grades stay (unchanged since the last run),
    and the nbgrader template the run made (``template/gradebook.db``, ``template/release/<assignment>``)."""
    results: list[StudentResult]
    unchanged: set[str]
    template: Path


def students_in(submissions: Path) -> list[str]:
    return sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def course_folders(out: Path, student: str, assignment: str) -> dict[str, Path]:
    """Where OUT keeps a student's graded files, in nbgrader's course layout (formgrader reads them)."""
    return {"feedback": out / "feedback" / student / assignment,
            "autograded": out / "autograded" / student / assignment}


def feedback_page(out: Path, student: str, assignment: str, notebook: str) -> Path:
    return course_folders(out, student, assignment)["feedback"] / f"{notebook}.html"


@dataclass(frozen=True)
class Job:
    """One assignment's submissions to grade into OUT."""
    assignment: str
    cells: list[GradedCell]      # the assignment's graded cells (``autograder.course.source.graded_cells``)
    submissions: Path            # ``<student>/<notebook>.ipynb`` folders (``autograder.intake.layouts``)
    out: Path
    repo: Path = REPO
    origin: Path | None = None   # what the instructor named, when the layout above is a copy of it


def grade_class(job: Job, options: Options, workdir: Path) -> ClassRun:
    """Grade every student folder of ``job.submissions`` into ``job.out``; ``workdir``: a private scratch
    folder of the caller's, where the template and every student's course root are made."""
    assignment, cells, submissions, out, repo = job.assignment, job.cells, job.submissions, job.out, job.repo
    students = students_in(submissions)
    cell_timeout = options.cell_timeout
    if cell_timeout is None:
        cell_timeout = int(nbgrader_config(workdir, repo).Execute.timeout)
    limits_by_nb, limit_rule = cell_limits(assignment, cell_timeout, repo=repo, factor=options.time_factor,
                                           floor=options.time_floor, fixed=options.test_cell_timeout)
    if options.scheduler:                      # a wrong address fails before any work
        from autograder.batch.cluster import reach
        reach(options.scheduler).close()
    tier, sandbox_line = sandbox_mode(options.sandbox)
    print(sandbox_line, file=sys.stdout if tier else sys.stderr)
    if not options.quiet:
        print(f"test cells: {limit_rule}")

    fp = cache.fingerprint(assignment, repo, options.of_the_kernels(cell_timeout, limits_by_nb, tier))
    notebooks = sorted({c.notebook for c in cells})
    keys = {s: cache.submission_key(submissions / s, notebooks) for s in students}
    reused = {} if options.force else {s: r for s in students if (r := cache.lookup(out, s, fp, keys[s])) is not None}
    unchanged = {s for s in students if cache.previous_key(out, s) == keys[s]}   # their manual grades stay
    out.mkdir(parents=True, exist_ok=True)
    cache.prune(out, students)
    for sub in ("feedback", "logs", "autograded", "submitted"):       # remade from this run and the cache
        shutil.rmtree(out / sub, ignore_errors=True)
    for student in students:                 # nbgrader's submitted/: the notebooks as handed in (copies)
        _copy_submitted(submissions / student, out / "submitted" / student / assignment, notebooks)
    for student, res in reused.items():
        (out / "logs").mkdir(exist_ok=True)
        (out / "logs" / f"{student}.log").write_text(res.log)
        cache.restore(out, student, course_folders(out, student, assignment))
    if reused:
        print(f"reused {len(reused)} of {len(students)} submissions, unchanged since the last run into {out} "
              f"({cache.DIR}/; --force regrades every one)")
    limits.prune(older_than=600)               # cgroups that killed runs left behind
    if not options.scheduler and students != list(reused):
        warm.prestart()                                    # loads while the template is made
    built = out / cache.DIR / cache.BUILT                  # made from the sources, reused while they stay
    generate(assignment, workdir / "template", repo, cache=built)   # the gradebook every worker starts from
    from autograder.course.schedule import cut_for_grading
    from autograder.release.bundle import strip_course_lib
    cut = cut_for_grading(assignment, repo)               # the course_lib a graded kernel imports: its
    strip_course_lib(workdir / "bundle", list(cut.stripped), repo, cache=built)   # students' own, cut at its release
    if not options.quiet:
        print(f"course_lib of the graded kernels: exercises of {', '.join(cut.stripped)} removed")
    uid_run = None
    if tier == "uid" and not options.scheduler:     # close the course, submissions and OUT to the kernels' uids
        from autograder.sandbox.kernel import python_paths
        from autograder.sandbox.uid_tier import Run
        uid_run = Run(protect=[repo, REPO, *filter(None, [job.origin]), submissions, out], keep=[Path(p) for p in python_paths()])
        try:
            uid_run.open()
        except RuntimeError as e:
            raise UsageError(str(e))
    try:
        run = uuid.uuid4().hex[:8]
        kernel = _Kernel(cell_timeout, tier, run, limits_by_nb, limit_rule.split(' (measured')[0], options)
        specs = [_spec(job, s, workdir, kernel, uid_run) for s in students if s not in reused]
        results = _grade_all(assignment, specs, out, options, workdir, repo)
    finally:
        if uid_run is not None:
            uid_run.close()
    for res in results:
        if res.outcome == GRADED:
            cache.store(out, res.student, fp, keys[res.student], res, course_folders(out, res.student, assignment))
    results += [replace(res, cached=True) for res in reused.values()]
    results.sort(key=lambda r: r.student)
    return ClassRun(results, unchanged, workdir / "template")


@dataclass
class _Kernel:
    """What every student's kernel of one run is given (a part of each ``Spec``)."""
    cell_timeout: int
    tier: str | None
    run: str
    limits: dict
    limit_rule: str
    options: Options


def _spec(job: Job, student: str, workdir: Path, kernel: _Kernel, uid_run=None) -> Spec:
    o = kernel.options
    spec = Spec(student=student, assignment=job.assignment, root=str(workdir / "students" / student),
                submission=str(job.submissions / student), gradebook=str(workdir / "template" / "gradebook.db"),
                cells=list(job.cells), repo=str(job.repo), bundle=str(workdir / "bundle"),
                shipped_from=str(workdir / "template" / "release" / job.assignment), cell_timeout=kernel.cell_timeout,
                budget=o.submission_timeout, run=kernel.run, tier=kernel.tier, memory_mb=o.memory_mb,
                max_pids=o.max_pids, skip_illustrative=not o.run_illustrative, cell_limits=kernel.limits,
                limit_rule=kernel.limit_rule)
    if uid_run is not None:
        home, uid = uid_run.new_home(kernel.run)
        spec.home, spec.uid, spec.gid = str(home), uid, uid_run.gid
    Path(spec.root).mkdir(parents=True)
    return spec


def _grade_all(assignment: str, specs: list[Spec], out: Path, options: Options, workdir: Path,
               repo: Path) -> list[StudentResult]:
    results: list[StudentResult] = []
    if not specs:
        return results
    bar = tqdm(total=len(specs), desc=f"grading {assignment}", unit="student", disable=options.quiet, file=sys.stdout)

    def done(res: StudentResult) -> None:
        results.append(res)
        _collect(res, out, assignment)
        bar.update(1)
        if not options.quiet:
            where = f", {res.machine.split(':')[0] or '?'}" if options.scheduler else ""
            bar.write(f"  {res.student}: {res.score:g}/{res.max_score:g}  ({res.seconds:.1f} s{where})")
    try:
        if options.scheduler:
            from autograder.batch.cluster import course_archive, grade_on_cluster
            grade_on_cluster(options.scheduler, specs, course_archive(workdir, repo, assignment), options.sandbox, done)
        else:
            with ThreadPoolExecutor(max_workers=options.workers) as pool:
                futures = [pool.submit(run_worker, spec, options.submission_timeout + 60) for spec in specs]
                for future in as_completed(futures):
                    done(future.result())
    finally:
        bar.close()
    return results


def _copy_submitted(folder: Path, dest: Path, notebooks: list[str]) -> None:
    """nbgrader's ``submitted/<student>/<assignment>/``: a copy of each notebook handed in (only read)."""
    for name in notebooks:
        path = folder / f"{name}.ipynb"
        if path.is_file() and not path.is_symlink():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / path.name)
def _collect(res: StudentResult, out: Path, assignment: str) -> None:
    """Copy the student's feedback and autograded notebooks into OUT, in nbgrader's layout (or write a
    short page when nbgrader made none)."""
    student, root = res.student, Path(res.root or ".")
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{student}.log").write_text(res.log)
    folders = course_folders(out, student, assignment)
    dest = folders["feedback"]
    dest.mkdir(parents=True, exist_ok=True)
    graded = res.autograded            # graded on a cluster: the notebooks came back as text
    if not res.timed_out:
        made = root / "autograded" / student / assignment
        for name, text in (graded.items() if graded is not None else
                           ((p.stem, p.read_text()) for p in sorted(made.glob("*.ipynb")))):
            folders["autograded"].mkdir(parents=True, exist_ok=True)
            (folders["autograded"] / f"{name}.ipynb").write_text(text)
    pages = res.pages                  # graded on a cluster: the pages came back as text
    for name in sorted({r.notebook for r in res.rows}):
        made = None if pages is not None else root / "feedback" / student / assignment / f"{name}.html"
        if pages is not None and name in pages:
            (dest / f"{name}.html").write_text(pages[name])
        elif made is not None and made.exists() and not res.timed_out:
            shutil.copyfile(made, dest / f"{name}.html")
        else:
            rows = [r for r in res.rows if r.notebook == name]
            why = res.notebooks.get(name) or rows[0].message
            score, max_score = sum(r.score for r in rows), sum(r.max_score for r in rows)
            (dest / f"{name}.html").write_text(
                "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{0}</title></head><body>"
                "<h1>{0}: {1:g} / {2:g}</h1><p>This notebook could not be graded: {3}.</p>"
                "</body></html>".format(html.escape(name), score, max_score, html.escape(why)))
