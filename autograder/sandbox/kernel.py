"""Run a student's kernel in a sandbox, and bound the time a whole submission may take.

Two tiers, the strongest that works here first (``choose``):

**bwrap**: bubblewrap gives the kernel its own mount, PID, IPC, UTS and network namespaces (as root, or
as any user where the kernel allows unprivileged user namespaces), so that it sees

* a read-only view of the system (``/usr``, ``/etc``, the Python installation and the virtual
  environment), and no network at all (a fresh network namespace has only a loopback, down);
* one writable folder, ``/home/student``, holding only this student's working files (and the records
  of the hidden tests), and the files the assignment ships beside its notebooks (read-only): no
  ``solutions/``, no gradebook, no other submission, not even the submitted notebook (cells reach the
  kernel one at a time over the Jupyter protocol);
* the *student* ``course_lib`` (``autograder.release.bundle``: the reference bodies removed) on its ``PYTHONPATH``;
* the GPU device nodes, where the machine has them, so that the CUDA hidden tests still run.

**uid** (``autograder.sandbox.uid_tier``): where bubblewrap cannot run (inside Docker), a uid of its own per
kernel, a fresh 0700 working folder, everything else of the course closed to it by permissions, the
network taken away where it can be (a namespace, or a seccomp filter).

In both, the kernel and nbgrader talk over Unix sockets (the Jupyter ``ipc`` transport), and
``autograder.sandbox.limits`` caps processes and memory (cgroup v2, v1, a systemd scope, or rlimits). Wall time:
a per-cell timeout and a per-submission budget (``BudgetedExecute``), and the parent kills the whole
process group past the budget. ``python -m autograder.sandbox check`` prints which guarantees hold here
and by what mechanism; ``grade`` prints it in one line at the start of every run.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbformat.notebooknode import NotebookNode
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from nbgrader.preprocessors import Execute

from autograder.sandbox import limits as caps
from autograder.sandbox import uid_tier
from autograder.course.source import UsageError

HOME = "/home/student"                       # the student's folder, inside the bwrap sandbox
RECORDS = f"{HOME}/.grading"                 # where course_lib.grading writes its records (bwrap tier)
SKIPPED_NOTE = "(not run under grading: an illustrative cell; it runs in your own notebook)\n"
MIN_CELL_SECONDS = 5                         # a cell starting with less budget left than this is not run
TIERS = ("bwrap", "uid")


# ------------------------------------------------------------------------------------------ checks
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_problem() -> str | None:
    """None when bubblewrap can sandbox a kernel here, else a one-line reason."""
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        proc = subprocess.run([bwrap, *_system_binds(), "--unshare-net", "--unshare-pid", "--proc", "/proc",
                               "--dev", "/dev", "--", sys.executable, "-c", "print('ok')"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap cannot run here: {e}"
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return f"bwrap cannot create a sandbox here: {reason}"
    return None


def tier_problem(tier: str) -> str | None:
    if tier == "bwrap":
        return bwrap_problem()
    if tier == "uid":
        return uid_tier.problem()
    raise ValueError(f"unknown sandbox tier {tier!r}")


def check() -> str | None:
    """None when some sandbox tier works on this machine, else the reasons, in one line."""
    reasons = [tier_problem(t) for t in TIERS]
    return None if any(r is None for r in reasons) else "; ".join(reasons)


def choose(requested: str) -> tuple[str | None, str]:
    """(tier or None, why) for ``--sandbox auto|on|off|bwrap|uid``. Raises ValueError (one line) when
    the request cannot be met: ``on`` without any tier, a forced tier that does not work here."""
    if requested == "off":
        return None, "--sandbox off"
    if requested in TIERS:
        why = tier_problem(requested)
        if why:
            raise ValueError(f"--sandbox {requested}, but {why}")
        return requested, f"--sandbox {requested}"
    if requested not in ("auto", "on"):
        raise ValueError(f"--sandbox must be auto, on, off, bwrap or uid, got {requested!r}")
    reasons = []
    for tier in TIERS:
        why = tier_problem(tier)
        if why is None:
            return tier, f"the strongest tier that works here ({'; '.join(reasons) or 'bwrap works'})"
        reasons.append(f"{tier}: {why}")
    if requested == "on":
        raise ValueError(f"--sandbox on, but no sandbox tier works here: {'; '.join(reasons)}")
    return None, "; ".join(reasons)


def gpu_present() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*"))


def guarantees(tier: str | None) -> list[tuple[str, bool, str]]:
    """[(guarantee, holds, mechanism)] for kernels of ``tier`` (None: no sandbox) on this host."""
    gpu = gpu_present()
    plan = caps.plan(gpu=gpu, own_uid=tier == "uid")
    if tier == "bwrap":
        rows = [("filesystem isolation", True, "bubblewrap mount namespace: read-only system, private /home/student"
                 + (" (unprivileged user namespace)" if os.geteuid() else "")),
                ("no network", True, "bubblewrap network namespace (loopback only, down)")]
    elif tier == "uid":
        net, how = uid_tier.describe_network()
        rows = [("filesystem isolation", True, "a uid of its own per kernel, a fresh 0700 folder, the course, "
                 "solutions, gradebook and submissions closed to it (permissions, POSIX ACLs)"),
                ("no network", net, how)]
    else:
        rows = [("filesystem isolation", False, "NONE: student code runs with the grader's rights"),
                ("no network", False, "NONE")]
    rows += [("process cap", plan.caps_processes, plan.processes or
              ("NONE: no writable cgroup (v2, v1 or a systemd scope) and no uid of its own for RLIMIT_NPROC")),
             ("memory cap", plan.caps_memory, plan.memory or
              ("NONE: no writable cgroup, and RLIMIT_AS cannot be used with CUDA (it reserves huge virtual "
               "memory)" if gpu else "NONE"))]
    if tier == "bwrap":
        rows.append(("GPU access", gpu, "device nodes bound in (/dev/nvidia*, /dev/dri)" if gpu else "no GPU here"))
    elif tier == "uid":
        rows.append(("GPU access", gpu, "device nodes as the host has them (/dev/nvidia*)" if gpu else "no GPU here"))
    else:
        rows.append(("GPU access", gpu, "the grader's own" if gpu else "no GPU here"))
    if not gpu:
        rows[-1] = ("GPU access", None, "no GPU here")
    return rows


def summary(tier: str | None) -> str:
    """The one line ``grade`` prints at the start of a run."""
    rows = guarantees(tier)
    held = ", ".join(f"{name} ({how})" if ok else f"{name}: NO" for name, ok, how in rows
                     if name != "filesystem isolation" and ok is not None)
    if tier is None:
        return f"sandbox: OFF: student code runs with the grader's rights! {held}"
    return f"sandbox: {tier} tier: filesystem isolated; {held}"


def print_check(file=sys.stdout) -> int:
    """``python -m autograder.sandbox check``: the guarantees of each tier on this host."""
    print(f"host: uid {os.geteuid()}, cgroups: {caps.plan(gpu=gpu_present(), own_uid=False).mechanism}, "
          f"GPU: {'yes' if gpu_present() else 'no'}", file=file)
    best = None
    for tier in TIERS:
        why = tier_problem(tier)
        print(f"\n{tier} tier: " + ("works here" if why is None else f"unavailable: {why}"), file=file)
        if why is None:
            best = best or tier
            width = max(len(g) for g, _, _ in guarantees(tier))
            for name, ok, how in guarantees(tier):
                print(f"  {name:<{width}}  {'n/a' if ok is None else 'yes' if ok else 'NO ':<3}  {how}", file=file)
    print(f"\n--sandbox auto uses: {best or 'NONE (student code would run with the grader rights)'}", file=file)
    return 0 if best else 1


def _system_binds() -> list[str]:
    """Read-only binds of the system and of this Python (base installation and virtual environment)."""
    args = []
    for path in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda"):
        if os.path.lexists(path):
            args += ["--ro-bind", path, path] if not os.path.islink(path) else ["--symlink", os.readlink(path), path]
    for path in python_paths():
        if not path.startswith(("/usr", "/etc", "/bin", "/lib")):
            args += ["--ro-bind", path, path]
    return args


def python_paths() -> list[str]:
    """The folders this Python needs: base installation and virtual environment."""
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix})


def _gpu_binds() -> list[str]:
    args = []
    for dev in sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri/*")):
        args += ["--dev-bind", dev, dev]
    if args:
        for path in ("/sys", "/usr/local/nvidia", "/usr/local/cuda", "/run/nvidia-persistenced"):
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
    return args


# ------------------------------------------------------------------------------------------ launch
from autograder.sandbox.launch import launch  # noqa: E402  (the kernel's first process: its own light module)


# Run inside bubblewrap (where this package is not importable): set RLIMIT_NPROC, then become the kernel.
_SET_NPROC = ("import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NPROC, (n, n)); "
              "os.execvp(sys.argv[2], sys.argv[2:])")


# ------------------------------------------------------------------------------------------ kernel
class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in the sandbox (``tier``: bwrap or uid), reached over ipc sockets
    (see module doc)."""

    tier = Unicode("bwrap", help="bwrap or uid").tag(config=True)
    work_dir = Unicode(help="host folder of the student's files (/home/student in bwrap)").tag(config=True)
    ipc_dir = Unicode(help="host folder of the grader's in which each kernel gets a fresh folder for its connection "
                           "file and sockets (bound at the same path)").tag(config=True)
    python_path = List(Unicode(), help="host folders put, read-only, on the kernel's PYTHONPATH").tag(config=True)
    shipped = List(Unicode(), help="files and folders of work_dir that the assignment ships: read-only").tag(config=True)
    kernel_env = Dict(help="environment variables of the kernel (nothing else is inherited)").tag(config=True)
    max_pids = Integer(256, help="processes and threads of the kernel").tag(config=True)
    memory_mb = Integer(6144, help="memory of the kernel, MiB").tag(config=True)
    uid = Integer(-1, help="uid tier: the kernel's uid").tag(config=True)
    gid = Integer(-1, help="uid tier: the kernel's gid").tag(config=True)
    name = Unicode("kernel").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # A fresh folder per kernel, made here, inside the grader's own: nothing an earlier kernel of this
        # student prepared there (a link named kernel.json, say) is ever written through by this process.
        Path(self.ipc_dir).mkdir(parents=True, exist_ok=True)
        self._ipc = tempfile.mkdtemp(prefix="", dir=self.ipc_dir)
        if self.tier == "uid":
            os.chown(self._ipc, self.uid, self.gid)
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc, "k")
        self.connection_file = os.path.join(self._ipc, "kernel.json")
        self._limits = caps.Limits(self.name, self.max_pids, self.memory_mb * 2**20, gpu=gpu_present(),
                                   own_uid=self.tier == "uid")

    def _env(self, home: str) -> dict[str, str]:
        return {"HOME": home, "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
                "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{home}/.matplotlib" if self.tier == "uid" else "/tmp/matplotlib",
                "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", **self.kernel_env}

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)          # python -m ipykernel_launcher -f FILE
        launcher = [*self._limits.command_prefix(), sys.executable, "-m", "autograder.sandbox.launch",
                    *self._limits.launcher_args()]
        if self.tier == "uid":
            env = self._env(self.work_dir)
            env["TMPDIR"] = self.work_dir
            env["PYTHONPATH"] = ":".join(self.python_path)
            launcher += ["--uid", str(self.uid), "--gid", str(self.gid), "--chdir", self.work_dir,
                         "--chown", self.connection_file, "--net", "auto"]
            for key, value in env.items():
                launcher += ["--setenv", f"{key}={value}"]
            return launcher + ["--"] + cmd
        env = self._env(HOME)
        course = []
        for i, path in enumerate(self.python_path):
            course += ["--ro-bind", path, f"/opt/course/{i}"]
        shipped = []
        for path in self.shipped:                                  # read-only, over the student's folder
            shipped += ["--ro-bind", path, os.path.join(HOME, os.path.relpath(path, self.work_dir))]
        env["PYTHONPATH"] = ":".join(f"/opt/course/{i}" for i in range(len(self.python_path)))
        bwrap = [bwrap_path() or "bwrap", "--die-with-parent",
                 "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--hostname", "grader", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                 *_system_binds(), *course,           # after --tmpfs /tmp, which would hide binds below it
                 "--bind", self.work_dir, HOME, *shipped, "--bind", self._ipc, self._ipc, *_gpu_binds(),
                 "--remount-ro", "/",                 # the sandbox's own root too: only HOME and /tmp are writable
                 "--chdir", HOME, "--clearenv"]
        for key, value in env.items():
            bwrap += ["--setenv", key, str(value)]
        if self._limits.nproc_inside:     # counted in the sandbox's own user namespace: a cap per kernel
            cmd = [sys.executable, "-c", _SET_NPROC, str(self.max_pids), *cmd]
        return launcher + ["--"] + bwrap + ["--"] + cmd

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
        try:
            await super()._async_shutdown_kernel(now=now, restart=restart)
        finally:
            if not restart:
                self.release()

    # jupyter_client 8 binds AsyncKernelManager.shutdown_kernel to the *base* class's coroutine, which
    # nbclient calls: without this line the override above never runs and every cgroup stays behind.
    shutdown_kernel = _async_shutdown_kernel

    def release(self) -> None:
        """Kill what is left of the kernel and remove its cgroups (also called by the worker at the end)."""
        self._limits.close()
        if self.tier == "uid" and self.uid >= 0:
            uid_tier.kill_all_of(self.uid)
            uid_tier.remove_tmp_files_of(self.uid, keep=Path(self.work_dir))

    def __del__(self):
        try:
            self._limits.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------ budget
class BudgetedExecute(Execute):
    """nbgrader's Execute with a time budget for the whole notebook (``budget`` seconds; 0: none) and,
    with ``sandbox`` on, the kernel in a sandbox. Past the budget the remaining cells are not run and
    say so; if the kernel dies (memory limit, ``os._exit``), the remaining cells say that instead."""

    budget = Float(0.0, help="seconds for the whole notebook (0: no budget)").tag(config=True)
    sandbox = Bool(False, help="run the kernel in the sandbox (SandboxedKernelManager's tier)").tag(config=True)
    cell_limits = Dict(help="{notebook: {cell key: seconds}}: per-cell time limits from the reference's timings "
                            "(autograder.course.timings); other cells keep the timeout").tag(config=True)
    limit_rule = Unicode("", help="how cell_limits were set, for the verdict of a cell that exceeds one").tag(config=True)
    skip_from = Unicode("", help="folder of the instructor's source notebooks: cells tagged illustrative there "
                                 "are not run (autograder.course.cells); empty: every cell runs").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.sandbox:
            self.kernel_manager_class = SandboxedKernelManager

    @default("shutdown_kernel")
    def _kill_at_the_end(self):
        # A graded kernel's state is thrown away and its records are on disk (closed files) by the time the
        # last cell returns: a graceful shutdown only waits (about 0.8 s: the kernel tears its ZeroMQ context
        # down). nbclient's own "immediate" kills it; the sandbox's release() then ends what is left.
        return "immediate"

    def preprocess(self, nb, resources=None, km=None):
        from autograder.course.cells import SkipPlan
        name = ((resources or {}).get("nbgrader") or {}).get("notebook")
        source = Path(self.skip_from) / f"{name}.ipynb" if self.skip_from and name else None
        self._skip = SkipPlan(nbformat.read(source, as_version=4)) if source and source.exists() else None
        self._limits = dict(self.cell_limits.get(name) or {}) if name else {}
        self._started = time.monotonic()
        self._stopped = ("", "")               # (ename, evalue) written into every cell not run
        self._cell_timeout = self.timeout
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if self._skip is not None and self._skip.skips(cell):
            cell.outputs = [NotebookNode(output_type="stream", name="stdout", text=SKIPPED_NOTE)]
            cell.execution_count = None
            return cell, resources
        from autograder.course.timings import cell_key
        timeout, why = self._cell_timeout, "the cell timeout"
        if not self._stopped[0] and self.budget:
            remaining = self.budget - (time.monotonic() - self._started)
            if remaining <= MIN_CELL_SECONDS:
                self._stopped = ("SubmissionStopped", f"not run: the submission used up its {self.budget:g} s "
                                                      f"time budget before this cell")
            elif not timeout or remaining < timeout:
                timeout, why = remaining, f"what was left of the submission's {self.budget:g} s budget"
        limit = self._limits.get(cell_key(cell))
        if limit and (not timeout or limit < timeout):
            timeout, why = limit, f"this cell's limit, {self.limit_rule}" if self.limit_rule else "this cell's limit"
        self.timeout = int(max(1, round(timeout))) if timeout else timeout
        msg = f"did not finish within {self.timeout} s ({why})"
        self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": msg, "traceback": [f"CellTimeoutError: {msg}"]}
        if self._stopped[0]:
            ename, evalue = self._stopped
            cell.outputs = [NotebookNode(output_type="error", ename=ename, evalue=evalue,
                                         traceback=[f"{ename}: {evalue}"])]
            cell.execution_count = None
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except Exception as e:  # the kernel is gone, or did not come back from a timeout: the rest cannot run
            name = type(e).__name__
            if "Timeout" in name:
                over = self.budget and time.monotonic() - self._started >= self.budget - MIN_CELL_SECONDS
                why = "the submission used up its time budget" if over else "the kernel did not answer after a timeout"
                self._stopped = ("SubmissionStopped", f"not run: {why} in an earlier cell")
                cell.outputs = [NotebookNode(output_type="error", ename="CellTimeoutError", evalue=f"stopped: {why}",
                                             traceback=[f"CellTimeoutError: stopped: {why}"])]
                return cell, resources
            if "Dead" not in name and "Unresponsive" not in name:
                raise
            self._stopped = ("KernelDied", f"not run: the kernel died in an earlier cell ({name})")
            cell.outputs = [NotebookNode(output_type="error", ename="KernelDied",
                                         evalue="the kernel died while running this cell (memory or process "
                                                "limit, or the code ended the process)",
                                         traceback=["KernelDied: the kernel died while running this cell"])]
            return cell, resources


def sandbox_mode(requested: str) -> tuple[str | None, str]:
    """(tier or None, the one line that says what holds) for ``--sandbox auto|on|off|bwrap|uid``."""
    try:
        tier, why = choose(requested)
    except ValueError as e:
        raise UsageError(str(e))
    line = summary(tier)
    if tier is None:
        line += f" ({why}; --sandbox on to require a sandbox)"
    return tier, line

