"""One submission graded in a process of its own, killed with its kernel at its budget, and nothing left
behind: no process, cgroup, kernel socket folder or (uid tier) file of the kernel's uid.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from autograder.batch import warm
from autograder.course.source import env_for_kernels
from autograder.grading.records import GRADED, GRADER_FAILED, TIMED_OUT, Spec, StudentResult
from autograder.grading.worker import cgroup_name, finish, ipc_prefix
from autograder.sandbox import limits
from autograder.sandbox.uid_tier import kill_all_of, remove_tmp_files_of


def run_worker(spec: Spec, budget: float) -> StudentResult:
    """Grade one submission in a process of its own (``autograder.grading.worker``), killed with its kernel
    after ``budget`` seconds. The process is forked from a server that has the worker's imports loaded
    (``autograder.batch.warm``); where the spec ships its own grader code (``pythonpath``: a cluster task), a
    fresh interpreter runs that code instead."""
    root = Path(spec.root)
    spec_path = root.parent / f"{spec.student}.json"
    spec_path.write_text(json.dumps(spec.to_json()))
    env = {**env_for_kernels(), "IPYTHONDIR": str(root / ".ipython"),   # not in HOME
           **({"PYTHONPATH": spec.pythonpath} if spec.pythonpath else {})}
    start = time.monotonic()
    if spec.pythonpath:
        output, timed_out = _fresh_worker(spec_path, root, env, budget)
    else:
        output, timed_out = _warm_worker(spec_path, root, env, budget)
    _leave_nothing(spec)
    seconds = time.monotonic() - start
    result_file = root / "result.json"
    result = StudentResult(spec.student, [], outcome=GRADER_FAILED)
    if result_file.exists() and not timed_out:
        result = StudentResult.from_json(json.loads(result_file.read_text()))
    rows, outcome = result.rows, GRADED
    if not rows:   # killed at the budget, or the worker itself failed: score what the records show
        outcome = TIMED_OUT if timed_out else GRADER_FAILED
        rows = finish(spec)
        for row in rows:
            if row.status in ("error", "timeout") and not row.message.startswith(("not a readable", "notebook not")):
                row.message = (f"grading stopped: the submission used up its {spec.budget:g} s budget"
                               if timed_out else "the grader failed on this submission (see its log)")
                row.status = "timeout" if timed_out else "error"
    log = output.decode(errors="replace") + result.log
    return replace(result, rows=rows, outcome=outcome, root=str(root), log=log, seconds=seconds, run=spec.run)


def _fresh_worker(spec_path: Path, root: Path, env: dict, budget: float) -> tuple[bytes, bool]:
    proc = subprocess.Popen([sys.executable, "-m", "autograder.grading.worker", str(spec_path)], cwd=str(root), env=env,
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


def _leave_nothing(spec: Spec) -> None:
    """After a worker, killed or not: no process, no cgroup, no kernel folder of it stays behind."""
    limits.prune(prefix=f"{cgroup_name(spec)}-")
    if spec.uid is not None:
        kill_all_of(spec.uid)
        remove_tmp_files_of(spec.uid, keep=Path(spec.home))
    for ipc in (p for t in {Path("/tmp"), Path(tempfile.gettempdir())} for p in t.glob(f"{ipc_prefix(spec)}*")):
        if ipc.is_dir() and ipc.stat().st_uid == os.geteuid():
            shutil.rmtree(ipc, ignore_errors=True)

