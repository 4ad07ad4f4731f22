"""The first process of every sandboxed kernel: ``python -m autograder.sandbox.launch [OPTIONS] -- CMD...``.

A module of its own, importing nothing but the standard library (and ``uid_tier``, which does the same),
because it starts once per kernel: through ``autograder.sandbox`` it imported jupyter_client and nbgrader
first, 2 s of every kernel's start for nothing.
"""
from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

from autograder.sandbox import uid_tier


def launch(argv: list[str]) -> None:
    """``python -m autograder.sandbox.launch [OPTIONS] -- CMD...``: the kernel's first process. Joins the
    cgroups, sets the resource limits (and, in the uid tier, takes the network away, becomes the kernel's
    uid in its folder), then becomes CMD (bwrap, or the kernel itself).

    Options: ``--cgroup FILE`` (cgroup.procs to join), ``--as BYTES``, ``--nproc N``, and for the uid tier
    ``--uid U --gid G --chdir DIR --chown FILE --net auto|none --setenv K=V``."""
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    it = iter(opts)
    uid = gid = nproc = None
    chdir, chown, net, env = None, [], None, {}
    for opt in it:
        value = next(it)
        if opt == "--cgroup":
            Path(value).write_text(str(os.getpid()))
        elif opt == "--as":
            resource.setrlimit(resource.RLIMIT_AS, (int(value), int(value)))
        elif opt == "--nproc":
            nproc = int(value)
        elif opt == "--uid":
            uid = int(value)
        elif opt == "--gid":
            gid = int(value)
        elif opt == "--chdir":
            chdir = value
        elif opt == "--chown":
            chown.append(value)
        elif opt == "--net":
            net = value
        elif opt == "--setenv":
            key, _, val = value.partition("=")
            env[key] = val
    # Jupyter interrupts a kernel with SIGINT to its process group: bwrap would die of it (and take the
    # kernel with it). Ignored here, the disposition passes through exec; ipykernel installs its own SIGINT
    # handler while it runs a cell, so an interrupt still stops the cell.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**30, 2 * 2**30))   # no file over 2 GiB
    if nproc is not None:                    # per user: what that uid runs now, plus the cap
        n = nproc + uid_tier.tasks_of(os.getuid() if uid is None else uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    if uid is None:
        os.execvp(cmd[0], cmd)
    for path in chown:                       # the connection file, written by the grader
        os.chown(path, uid, gid)
    if net == "auto" and not uid_tier.unshare_network():
        uid_tier.seccomp_no_ip_sockets()
    uid_tier.no_new_privileges()
    uid_tier.become(uid, gid)
    os.chdir(chdir or "/")
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    launch(sys.argv[1:])
