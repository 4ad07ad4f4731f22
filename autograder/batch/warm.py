"""Warm grading processes: the worker's imports paid once per run, not once per submission.

Every submission is still graded by a process of its own (``autograder.grading.worker``'s ``main``), in its own
session, killed whole at its budget, sharing nothing with the next student's. What changes is where that
process comes from: instead of a fresh ``python -m autograder.grading.worker`` (about 4 s of imports before any
work: nbgrader, nbconvert and its templates, SQLAlchemy, torch for the reference), it is forked from a
server that imported all of that once. That server is multiprocessing's own ``forkserver``, whose
``set_forkserver_preload`` does exactly this; nothing here is a process manager of our own.

The server imports modules and runs nothing: no thread, no CUDA context, no event loop exists in it when
it forks (torch's thread pools and CUDA start in the child, the first time the child computes), and the
child takes its environment, working folder and output from its submission (``run``), not from the
server. As with any multiprocessing start method but ``fork``, the main module must be safe to import
(``if __name__ == "__main__":``): the child imports it again.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile

PRELOAD = ["autograder.batch.preload"]          # the worker's imports and warm caches (autograder/batch/preload.py)

_context = None


def context():
    """The forkserver context, its preload set (the server starts at the first submission)."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def prestart() -> None:
    """Start the server now (it loads in the background while the caller prepares the run)."""
    context()
    from multiprocessing import forkserver
    forkserver.ensure_running()


def start(spec_path: str, cwd: str, env: dict[str, str], log: str):
    """A started process that runs ``autograder.grading.worker.main([spec_path])`` in ``cwd`` with exactly ``env``,
    its output into ``log``, leader of a session of its own (``os.killpg(proc.pid, ...)`` stops it and its
    kernel). Returns the ``multiprocessing`` process (``join``, ``is_alive``, ``exitcode``)."""
    proc = context().Process(target=_child, args=(spec_path, cwd, env, log), name="autograder.grading.worker", daemon=False)
    proc.start()
    return proc


def _child(spec_path: str, cwd: str, env: dict[str, str], log: str) -> None:
    os.setsid()                                  # its own session and process group, as start_new_session
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None                      # computed again from this environment's TMPDIR
    from autograder.grading import worker
    code = worker.main([spec_path])
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)
