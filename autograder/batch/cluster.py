"""Grading on a Dask distributed cluster: ``python -m autograder grade ... --scheduler ADDRESS``.

Each submission is one Dask task (``grade_remotely``). The task receives everything it needs as bytes,
since no shared filesystem is assumed: the submission's notebooks, and once per run (scattered to every
worker) a tarball of the course as grading needs it: the assignment's source folder, the template
gradebook, the students' ``course_lib`` bundle, the shipped files, and the grader and reference code
(``autograder/``, ``course_lib/``) that the worker process imports, so that every machine grades with the
instructor's code whatever it has installed. On the worker's machine the task lays these out in a private
temporary folder and runs the very same worker process, sandbox and budget as ``--workers N`` does
(``autograder.batch.process.run_worker``), the sandbox tier chosen there (``--sandbox``: each machine says what holds); it
returns the rows, the log and the feedback pages. Only the main process writes OUT.

Failures are Dask's: a worker lost mid-task (its machine rebooted, the process killed) is noticed by the
scheduler and the task runs again on another worker; a task that has taken down
``distributed.scheduler.allowed-failures`` workers (3 by default) fails with ``KilledWorker``, and that
student is reported with an error row, not retried forever. Each future resolves once, so no student is
graded twice in the results.

What each machine needs: this course's Python environment (``make setup``: the pinned packages, which
include ``dask`` and ``distributed``) and, for the sandbox, bubblewrap (or root for the uid tier). Started
by hand on lab machines::

    dask scheduler --host 0.0.0.0 --port 8786                  # on one machine
    dask worker tcp://SCHEDULER:8786 --nthreads 1 --nworkers 2  # on each grading machine
    python -m autograder grade rope --submissions DIR --out OUT --scheduler tcp://SCHEDULER:8786

(dask-jobqueue's ``SLURMCluster`` or dask-kubernetes give such an address too.)
"""
from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from autograder.grading.records import GRADER_FAILED, CellResult, Spec, StudentResult

COURSE_CODE = ("autograder", "course_lib")


def pack(entries: dict[str, Path]) -> bytes:
    """A gzip tarball of ``{name in the archive: path}`` (folders whole, caches left out)."""
    buf = io.BytesIO()

    def skip(info):
        return None if any(part in ("__pycache__", ".ipynb_checkpoints") for part in Path(info.name).parts) else info
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, path in entries.items():
            tar.add(str(path), arcname=name, filter=skip)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")          # no absolute paths, links out or devices


def course_archive(tmp: Path, repo: Path, assignment: str) -> bytes:
    """What a remote task needs of this run: its scratch (template, bundle) and the course's code."""
    import autograder
    here = Path(autograder.__file__).parent
    entries = {"template/gradebook.db": tmp / "template" / "gradebook.db",
               f"template/release/{assignment}": tmp / "template" / "release" / assignment,
               "bundle": tmp / "bundle",
               f"course/solutions/{assignment}": Path(repo) / "solutions" / assignment,
               "course/nbgrader_config.py": Path(repo) / "nbgrader_config.py",
               "code/autograder": here, "code/course_lib": here.parent / "course_lib"}
    return pack({k: v for k, v in entries.items() if v.exists()})


def grade_remotely(spec: dict, files: dict[str, bytes], course: bytes, requested_sandbox: str) -> dict:
    """One student, on a Dask worker: lay out the course, run the worker process, return its result with
    the feedback pages (``pages``: {notebook: html}) and the machine it ran on. ``spec`` and the result
    travel in their JSON form (``Spec.to_json``, ``StudentResult.to_json``)."""
    import os
    import platform

    from autograder.batch.process import run_worker
    from autograder.course.source import private_tmp
    from autograder.sandbox.kernel import sandbox_mode
    spec = Spec.from_json(spec)
    with private_tmp() as scratch, tempfile.TemporaryDirectory(prefix="task-", dir=scratch) as tmp:
        tmp = Path(tmp)
        unpack(course, tmp)
        submission = tmp / "submission"
        submission.mkdir()
        for name, data in files.items():
            (submission / Path(name).name).write_bytes(data)
        tier, line = sandbox_mode(requested_sandbox)
        local = replace(spec, root=str(tmp / "students" / spec.student), submission=str(submission),
                        gradebook=str(tmp / "template" / "gradebook.db"), repo=str(tmp / "course"),
                        bundle=str(tmp / "bundle"), shipped_from=str(tmp / "template" / "release" / spec.assignment),
                        tier=tier, pythonpath=str(tmp / "code"), home=None, uid=None, gid=None)
        Path(local.root).mkdir(parents=True)
        uid_run = None
        if tier == "uid":
            from autograder.sandbox.kernel import python_paths
            from autograder.sandbox.uid_tier import Run
            uid_run = Run(protect=[tmp / "course", tmp / "code", submission], keep=[Path(p) for p in python_paths()])
            uid_run.open()
            home, uid = uid_run.new_home(spec.run)
            local = replace(local, home=str(home), uid=uid, gid=uid_run.gid)
        try:
            res = run_worker(local, spec.budget + 60)
        finally:
            if uid_run is not None:
                uid_run.close()
        made = Path(local.root) / "feedback" / spec.student / spec.assignment
        res.pages = {p.stem: p.read_text() for p in sorted(made.glob("*.html"))} if not res.timed_out else {}
        graded = Path(local.root) / "autograded" / spec.student / spec.assignment
        res.autograded = ({p.stem: p.read_text() for p in sorted(graded.glob("*.ipynb"))}
                          if not res.timed_out else {})
        res.machine = f"{platform.node()} (pid {os.getpid()}): {line}"
        res.root = ""
        return res.to_json()


def reach(address: str, timeout: str = "10s"):
    """A connected ``distributed.Client``, or a one-line UsageError saying why there is none."""
    from autograder.course.source import UsageError
    try:
        from distributed import Client
    except ImportError:                                               # pragma: no cover (pinned)
        raise UsageError("--scheduler needs dask's distributed package (pip install distributed)")
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as e:
        raise UsageError(f"--scheduler {address}: cannot reach the Dask scheduler ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no answer'})")


def grade_on_cluster(address: str, specs: list[Spec], archive: bytes, requested_sandbox: str, on_result) -> None:
    """Submit every spec to the cluster at ``address``; call ``on_result(res)`` as each one finishes."""
    client = reach(address)
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker
    with client:
        course = client.scatter(archive, broadcast=True)
        futures = {}
        for spec in specs:
            folder = Path(spec.submission)
            files = {p.name: p.read_bytes() for p in sorted(folder.glob("*.ipynb")) if p.is_file()}
            key = f"grade-{spec.run}-{spec.student}"
            futures[client.submit(grade_remotely, spec.to_json(), files, course, requested_sandbox, key=key,
                                  pure=False)] = spec
        for future in as_completed(futures):
            spec = futures[future]
            try:
                res = StudentResult.from_json(future.result())
            except (KilledWorker, FutureCancelledError) as e:
                res = _failed(spec, f"the grading workers died {_tries(e)} while grading this submission: not retried further")
            except Exception as e:                                  # the task itself raised
                res = _failed(spec, f"the grader failed on this submission on the cluster ({type(e).__name__}: {e})")
            on_result(res)


def _tries(e) -> str:
    import dask
    n = dask.config.get("distributed.scheduler.allowed-failures", 3) + 1
    return f"{n} times" if "KilledWorker" in type(e).__name__ else "or the task was cancelled"


def _failed(spec: Spec, message: str) -> StudentResult:
    rows = [CellResult.of(c, status="error", message=message) for c in spec.cells]
    return StudentResult(student=spec.student, rows=rows, outcome=GRADER_FAILED, log=message + "\n", run=spec.run,
                         pages={})
