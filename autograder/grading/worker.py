"""Grade one student's submission in a private course root: ``python -m autograder.grading.worker SPEC.json``.

The parent (``autograder.batch``) runs one such process per student, several at a time, each under a
wall-clock budget, and kills the whole process group when it runs out. This process:

1. lays out ``ROOT/`` as an nbgrader course: the assignment's source, a copy of the template gradebook,
   and ``submitted/<student>/<assignment>/`` with a *copy* of each readable notebook (the student's
   files are only read); ``ROOT/home`` is the student's working folder (``/home/student`` in the
   sandbox), where the hidden tests leave their records;
2. reads the submitted code for forbidden shortcuts (``autograder.grading.static_checks``);
3. runs nbgrader's autograde (which restores deleted or altered test cells) with ``BudgetedExecute``:
   the kernel in the sandbox, a per-cell timeout and a budget for the whole submission;
4. scores every test cell that runs ``course_lib.grading.check`` from the *records* its hidden tests
   left, verified here against the reference (``grading.verify``): what the kernel printed or patched
   does not count; other test cells keep nbgrader's score;
5. writes the scores into the gradebook, each verdict under its test cell, generates the feedback
   (hidden tests removed) and ``ROOT/result.json``.

``finish()`` does step 4 alone, for the parent, when this process was killed at the budget.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path

import nbformat

from autograder.course.nbgrader import copy_source, nbgrader_api, nbgrader_config
from autograder.course.source import REPO, GradedCell
from autograder.grading.records import GRADER_FAILED, NEEDS_MANUAL, CellResult, Spec, StudentResult

TIMEOUT_ERRORS = {"CellTimeoutError", "KeyboardInterrupt", "TimeoutError", "SubmissionStopped"}
STOPPED_ERRORS = {"SubmissionStopped", "KernelDied"}     # the evalue says it all
RECORDS = ".grading"


def read_submission(path: Path) -> tuple[object | None, str]:
    """(notebook, "") if ``path`` is a readable notebook, else (None, one-line reason)."""
    if not path.exists():
        return None, "notebook not submitted"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # invalid JSON, not a notebook, wrong schema
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"not a readable notebook ({type(e).__name__}: {first[:160]})"
    return nb, ""


def sanitize(nb, source):
    """Our copy of a submission, made safe for nbgrader 0.9.6 (which crashes on some of them): cells
    whose nbgrader metadata lacks a grade id, repeats one, or names one the source does not have become
    ordinary cells. nbgrader then restores the real test cells as usual."""
    known = {c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells} - {None}
    seen = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if meta is None:
            continue
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid is None or gid in seen or gid not in known:
            del cell.metadata["nbgrader"]
        else:
            seen.add(gid)
    return nb


def cell_status(cell) -> tuple[str, str]:
    """(status, message) of an executed test cell, from its outputs (what the kernel said)."""
    if cell is None:
        return "error", "the test cell is not in the graded notebook"
    outputs = cell.get("outputs", [])
    for out in outputs:        # a timeout: the kernel's KeyboardInterrupt, then nbgrader's copy of the reply
        if out.get("output_type") == "error" and out.get("ename") == "CellTimeoutError" and out.get("evalue"):
            return "timeout", out["evalue"].strip().splitlines()[0]
    for out in outputs:
        if out.get("output_type") == "error":
            ename, evalue = out.get("ename", "Error"), (out.get("evalue") or "").strip()
            first = evalue.splitlines()[0] if evalue else ""
            if ename in TIMEOUT_ERRORS:
                return "timeout", first or f"{ename}: stopped after the per-cell time limit"
            if ename in STOPPED_ERRORS:
                return "error", first
            status = "failed" if ename == "AssertionError" else "error"
            return status, f"{ename}: {first}" if first else ename
    if cell.get("execution_count") is None:
        return "error", "this cell did not run"
    return "passed", ""


def ipc_prefix(spec: Spec) -> str:
    """The start of this student's kernel socket folder's name: short (Unix socket paths are limited to
    about 100 bytes), and distinct per run and student, so that the grader can clean up after it."""
    return f"k-{spec.run}{hashlib.sha1(spec.student.encode()).hexdigest()[:6]}-"


def cgroup_name(spec: Spec) -> str:
    """The start of this student's cgroups' names: the run, then a hash of the student (fixed length, so
    that no student's name is the start of another's)."""
    return f"{spec.run}-{hashlib.sha1(spec.student.encode()).hexdigest()[:10]}"


def home_of(spec: Spec) -> Path:
    """The student's working folder on this machine (``ROOT/home``; the uid tier's own folder)."""
    return Path(spec.home or Path(spec.root) / "home")


def ship(spec: Spec, home: Path) -> list[str]:
    """Copy the files the assignment releases beside its notebooks (data, images, helper modules: never
    solutions or hidden tests, which nbgrader's release does not hold) into the student's folder, read-only
    (and, in the uid tier, the grader's: the kernel cannot change them). Returns the top-level paths."""
    shipped = []
    release = Path(spec.shipped_from) if spec.shipped_from else None
    if release is None or not release.is_dir():
        return shipped
    for entry in sorted(release.iterdir()):
        if entry.suffix == ".ipynb" or entry.name.startswith("."):
            continue
        target = home / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(entry, target)
        _read_only(target)
        shipped.append(str(target))
    return shipped


def _read_only(path: Path) -> None:
    """Read-only for everyone, without the ACLs a copy may have brought along (shutil copies extended
    attributes, and the uid tier's ACLs deny the kernels' group on the course's own files)."""
    for p in ([path] + sorted(path.rglob("*"), reverse=True) if path.is_dir() else [path]):
        for attr in ("system.posix_acl_access", "system.posix_acl_default"):
            try:
                os.removexattr(p, attr)
            except OSError:
                pass
        os.chmod(p, 0o555 if p.is_dir() else 0o444)


def verdicts(spec: Spec) -> dict[str, tuple[bool, str]]:
    """{exercise: (passed, message)} from the records in the student's folder, checked here against the
    reference on the devices of this machine, and from the static checks."""
    from course_lib import grading

    records = home_of(spec) / RECORDS
    static = spec.static
    found = {}
    for name in sorted({e for c in spec.cells for e in c.exercises}):
        path = records / f"{name}.pt"
        if name in static:
            found[name] = (False, f"{name}: {static[name]}")
        elif not os.path.lexists(path):
            found[name] = None
        else:
            try:
                verdict = grading.verify(grading.load_record(_own_copy(path, spec)))
                found[name] = (verdict.passed, verdict.message)
            except Exception as e:  # a record the student's code forged, linked or truncated
                found[name] = (False, f"{name}: the record of the hidden tests is unreadable ({type(e).__name__})")
    return found


def _own_copy(path: Path, spec: Spec, max_bytes: int = 256 * 2**20) -> Path:
    """A copy, in the grader's own folder, of a record the student's kernel wrote, read without following
    links: the kernel owns its folder, and a link to another student's record (or to any file this root
    process may read) must not count."""
    if os.path.islink(path.parent) or not path.parent.is_dir():
        raise PermissionError("the records folder is a link")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise PermissionError("not a plain file of its own")
        if spec.uid is not None and st.st_uid != spec.uid:
            raise PermissionError("not written by the student's kernel")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError("record too large")
    copy = Path(spec.root) / "verified-records" / path.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(data)
    return copy


def score(spec: Spec, graded_nb: dict[str, object], nbgrader_scores: dict[tuple[str, str], float],
          manual: dict[tuple[str, str], bool] | None = None) -> list[CellResult]:
    """One row per graded cell: score, status, message. ``manual``: nbgrader's needs_manual_grade of the
    cells a person grades (False: nbgrader scored it itself, an answer left as released)."""
    found = verdicts(spec)
    manual = manual or {}
    rows = []
    for c in spec.cells:
        row = CellResult.of(c)
        why = spec.unreadable.get(c.notebook) or spec.failed.get(c.notebook)
        nb = graded_nb.get(c.notebook)
        cell = None if nb is None else next((x for x in nb.cells
                                             if x.metadata.get("nbgrader", {}).get("grade_id") == c.grade_id), None)
        if why:
            _set(row, status="missing" if why == "notebook not submitted" else "error", message=why)
            if c.exercises and all(found.get(e) and found[e][0] for e in c.exercises):
                _set(row, score=c.max_score, status="passed")     # its records still verify
        elif c.exercises:
            results = [found.get(e) for e in c.exercises]
            if all(r is not None and r[0] for r in results):
                _set(row, score=c.max_score, status="passed")
            else:
                failed = next((r for r in results if r is not None and not r[0]), None)
                if failed is not None:
                    msg = failed[1]
                    status = "error" if ("your function raised" in msg or "not implemented" in msg) else "failed"
                    _set(row, status=status, message=msg)
                else:   # no record: the hidden tests did not run; the kernel's outputs say why
                    status, msg = cell_status(cell)
                    if status == "passed":
                        status, msg = "error", "the hidden tests did not run (no record of them)"
                    _set(row, status=status, message=msg)
        elif c.kind == "manual":       # nbgrader's own verdict: a person grades it, unless left as released
            if cell is None:
                _set(row, status="timeout" if spec.timed_out else "error",
                           message="grading stopped before this cell" if spec.timed_out
                           else "the answer cell is not in the graded notebook")
            elif manual.get((c.notebook, c.grade_id), True):
                _set(row, status=NEEDS_MANUAL, message="graded by hand: no score until a grader gives one")
            else:
                _set(row, score=float(nbgrader_scores.get((c.notebook, c.grade_id), 0.0)), status="missing",
                           message="not answered: the cell is as released (nbgrader scores it 0)")
        elif cell is not None:
            status, msg = cell_status(cell)
            _set(row, score=float(nbgrader_scores.get((c.notebook, c.grade_id), 0.0)), status=status, message=msg)
            if status == "passed" and row.score < c.max_score:
                _set(row, status="failed", message="nbgrader gave less than full marks")
        else:
            _set(row, status="timeout" if spec.timed_out else "error",
                       message="grading stopped before this cell" if spec.timed_out else "not graded")
        if cell is not None and "was missing from the submission" in cell.source:
            what = "answer cell" if c.kind == "manual" else "test cell"
            row.message = f"{what} was deleted and has been restored" + (f"; {row.message}" if row.message else "")
        rows.append(row)
    return rows


def _set(row: CellResult, **values) -> None:
    for key, value in values.items():
        setattr(row, key, value)


def finish(spec: Spec) -> list[CellResult]:
    """Score from the records alone (the worker was stopped before nbgrader finished)."""
    spec = replace(spec, timed_out=True, unreadable=dict(spec.unreadable), static=dict(spec.static))
    notebooks = sorted({c.notebook for c in spec.cells})
    for name in notebooks:
        nb, why = read_submission(Path(spec.submission) / f"{name}.ipynb")
        if nb is None:
            spec.unreadable[name] = why
        else:
            spec.static.update(_static(spec, name))
    return score(spec, {}, {})


def _static(spec: Spec, name: str) -> dict[str, str]:
    from course_lib import grading

    from autograder.grading.static_checks import scan_files
    repo = Path(spec.repo or REPO)
    return scan_files(Path(spec.submission) / f"{name}.ipynb", repo / "solutions" / spec.assignment / f"{name}.ipynb",
                      grading.exercises_of(spec.assignment))


def grade(spec: Spec) -> StudentResult:
    """Grade the submission (``ROOT/result.json`` holds the result's JSON form)."""
    root = Path(spec.root)
    student, assignment = spec.student, spec.assignment
    repo = Path(spec.repo or REPO)
    cells = spec.cells
    notebooks = sorted({c.notebook for c in cells})
    result = StudentResult(student=student, rows=[], run=spec.run, root=str(root))

    # 1. the course root and the student's folder
    copy_source(assignment, root, repo)
    shutil.copy(spec.gradebook, root / "gradebook.db")
    submitted = root / "submitted" / student / assignment
    submitted.mkdir(parents=True)
    home = home_of(spec)
    tier = spec.tier
    (home / RECORDS).mkdir(parents=True, exist_ok=True)
    shipped = ship(spec, home)
    bundle = spec.bundle
    if tier == "uid":        # the kernel's uid reaches only its own folder: the grader's read-only copies there
        bundle = str(home / ".course")
        shutil.copytree(spec.bundle, bundle, ignore=shutil.ignore_patterns("__pycache__"))
        _read_only(Path(bundle))
        os.chown(home / RECORDS, spec.uid, spec.gid)
    readable, unreadable = [], {}
    for name in notebooks:
        nb, why = read_submission(Path(spec.submission) / f"{name}.ipynb")
        result.notebooks[name] = why or "graded"
        if nb is None:
            unreadable[name] = why
            continue
        source = nbformat.read(root / "solutions" / assignment / f"{name}.ipynb", as_version=4)
        nbformat.write(sanitize(nb, source), submitted / f"{name}.ipynb")
        readable.append(name)
    spec.unreadable = unreadable

    # 2. static checks of the submitted code
    spec.static = {}
    for name in readable:
        spec.static.update(_static(spec, name))

    graded: dict[str, object] = {}
    scores: dict[tuple[str, str], float] = {}
    manual: dict[tuple[str, str], bool] = {}
    if readable:
        # 3. nbgrader autograde, the kernel sandboxed and time-bounded
        # short: Unix socket paths are limited (and, in the uid tier, inside the kernel's own folder)
        tmp = tempfile.gettempdir() if len(tempfile.gettempdir()) < 60 else "/tmp"
        ipc = Path(tempfile.mkdtemp(prefix=ipc_prefix(spec), dir=tmp))
        if tier == "uid":
            ipc.chmod(0o711)              # the kernel's uid enters its own folder inside, nothing more
        kernel_env = {"NBGRADER_EXECUTION": "autograde", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        for key in ("COURSE_GRADING_DEVICES", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):
            if key in os.environ:
                kernel_env[key] = os.environ[key]
        if tier == "bwrap":
            from autograder.sandbox.kernel import RECORDS as SANDBOX_RECORDS
            kernel_env["COURSE_GRADING_RECORD"] = SANDBOX_RECORDS
        elif tier == "uid":
            kernel_env["COURSE_GRADING_RECORD"] = str(home / RECORDS)
        else:
            os.environ["COURSE_GRADING_RECORD"] = str(home / RECORDS)
        config = nbgrader_config(
            root, repo, Execute__timeout=spec.cell_timeout, BudgetedExecute__budget=float(spec.budget),
            BudgetedExecute__cell_limits=spec.cell_limits or {}, BudgetedExecute__limit_rule=spec.limit_rule,
            BudgetedExecute__skip_from=str(root / "solutions" / assignment) if spec.skip_illustrative else "",
            BudgetedExecute__sandbox=tier is not None, SandboxedKernelManager__tier=tier or "bwrap",
            SandboxedKernelManager__work_dir=str(home), SandboxedKernelManager__shipped=shipped,
            SandboxedKernelManager__ipc_dir=str(ipc), SandboxedKernelManager__python_path=[bundle],
            SandboxedKernelManager__kernel_env=kernel_env,
            SandboxedKernelManager__name=cgroup_name(spec),
            SandboxedKernelManager__uid=-1 if spec.uid is None else int(spec.uid), SandboxedKernelManager__gid=-1 if spec.gid is None else int(spec.gid),
            SandboxedKernelManager__memory_mb=int(spec.memory_mb),
            SandboxedKernelManager__max_pids=int(spec.max_pids))
        api = nbgrader_api(config)
        auto = api.autograde(assignment, student, force=True, create=True)
        result.log += auto.get("log", "") + (auto.get("error") or "")
        shutil.rmtree(ipc, ignore_errors=True)
        for name in readable:
            path = root / "autograded" / student / assignment / f"{name}.ipynb"
            if path.exists():
                graded[name] = nbformat.read(path, as_version=4)
            else:
                spec.failed[name] = "nbgrader could not grade this notebook (see the log)"
        scores, manual = _nbgrader_scores(root, assignment, student, readable)

    # 4. scores from the records, verified here
    rows = score(spec, graded, scores, manual)
    result.rows = rows

    # 5. gradebook, verdicts under their cells, feedback
    if graded:
        _write_scores(root, assignment, student, rows)
        for name, nb in graded.items():
            _annotate(nb, [r for r in rows if r.notebook == name], cells)
            path = root / "autograded" / student / assignment / f"{name}.ipynb"
            path.chmod(0o644)                 # nbgrader leaves it read-only (which binds all but root)
            nbformat.write(nb, path)
        fb = api.generate_feedback(assignment, student, force=True)
        result.log += fb.get("log", "") + (fb.get("error") or "")
    result.static = spec.static
    return result


def _nbgrader_scores(root: Path, assignment: str, student: str,
                     names: list[str]) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], bool]]:
    """nbgrader's scores and needs_manual_grade flags after its autograde: {(notebook, grade id): ...}."""
    from nbgrader.api import Gradebook, MissingEntry

    scores, manual = {}, {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for name in names:
            try:
                sub = gb.find_submission_notebook(name, assignment, student)
            except MissingEntry:
                continue
            scores.update({(name, g.name): float(g.score or 0.0) for g in sub.grades})
            manual.update({(name, g.name): bool(g.needs_manual_grade) for g in sub.grades})
    return scores, manual


def _write_scores(root: Path, assignment: str, student: str, rows: list[CellResult]) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for row in rows:
            if row.status == NEEDS_MANUAL:                  # left as nbgrader made it, for a person
                continue
            try:
                g = gb.find_grade(row.grade_id, row.notebook, assignment, student)
            except MissingEntry:
                continue
            g.auto_score, g.manual_score, g.needs_manual_grade = row.score, None, False
        gb.db.commit()


def _annotate(nb, rows: list[CellResult], cells: list[GradedCell]) -> None:
    """Put the grader's verdict under each test cell whose hidden tests it verified."""
    checked = {c.grade_id for c in cells if c.exercises}
    by_id = {r.grade_id: r for r in rows}
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in checked and gid in by_id:
            row = by_id[gid]
            text = ("Grader's verdict: passed" if row.status == "passed" else f"Grader's verdict: {row.status}: "
                    f"{row.message}") + f" ({row.score:g}/{row.max_score:g} points)\n"
            cell.setdefault("outputs", []).append(nbformat.v4.new_output("stream", name="stdout", text=text))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = Spec.from_json(json.loads(Path(argv[0]).read_text()))
    out = Path(spec.root) / "result.json"
    try:
        result = grade(spec)
    except Exception:
        result = StudentResult(student=spec.student, rows=[], outcome=GRADER_FAILED, log=traceback.format_exc())
    out.write_text(json.dumps(result.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
