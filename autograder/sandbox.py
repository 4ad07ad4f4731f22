"""Run a student's kernel in a sandbox, and bound the time a whole submission may take.

Without Docker: bubblewrap (``bwrap``) gives the kernel its own mount, PID, IPC, UTS and network
namespaces, so that it sees

* a read-only view of the system (``/usr``, ``/etc``, the Python installation and the virtual
  environment), and no network at all (a fresh network namespace has only a loopback, down);
* one writable folder, ``/home/student``, holding only this student's working files (and the records
  of the hidden tests): no ``solutions/``, no gradebook, no other submission, not even the submitted
  notebook (cells reach the kernel one at a time over the Jupyter protocol);
* the *student* ``course_lib`` (``autograder.bundle``: the reference bodies of the graded exercises
  removed) on its ``PYTHONPATH``;
* the GPU device nodes, where the machine has them, so that the CUDA hidden tests still run.

The kernel and nbgrader talk over Unix sockets (the Jupyter ``ipc`` transport) in a folder bound into
the sandbox, since TCP cannot cross the network namespace. Limits: a cgroup per kernel caps its
processes (``pids.max``: a fork loop stops there) and its memory (``memory.limit_in_bytes``: a
memory hog is killed, not the grader); where cgroups are not writable, ``RLIMIT_AS`` caps memory
instead (CPU-only machines) and the process cap is reported as unavailable. Wall time: a per-cell
timeout and a per-submission budget (``BudgetedExecute``), and the parent kills the whole process group
past the budget.

``check()`` says whether all this works here (bwrap installed and able to create namespaces), and why
not; the autograder's ``--sandbox auto`` uses it when it does and says loudly when it does not.
"""
from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbformat.notebooknode import NotebookNode
from traitlets import Bool, Dict, Float, Integer, List, Unicode

from nbgrader.preprocessors import Execute

HOME = "/home/student"                       # the student's folder, inside the sandbox
RECORDS = f"{HOME}/.grading"                 # where course_lib.grading writes its records
CGROUP_ROOT = Path("/sys/fs/cgroup")
MIN_CELL_SECONDS = 5                         # a cell starting with less budget left than this is not run


# ------------------------------------------------------------------------------------------ checks
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def check() -> str | None:
    """None when the sandbox works on this machine, else a one-line reason."""
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


def cgroups_writable() -> bool:
    try:
        for controller in ("pids", "memory"):
            probe = CGROUP_ROOT / controller / "course-grader"
            probe.mkdir(exist_ok=True)
            if not os.access(probe, os.W_OK):
                return False
        return True
    except OSError:
        return False


def _system_binds() -> list[str]:
    """Read-only binds of the system and of this Python (base installation and virtual environment)."""
    args = []
    for path in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda"):
        if os.path.lexists(path):
            args += ["--ro-bind", path, path] if not os.path.islink(path) else ["--symlink", os.readlink(path), path]
    for path in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}):
        if not path.startswith(("/usr", "/etc", "/bin", "/lib")):
            args += ["--ro-bind", path, path]
    return args


def _gpu_binds() -> list[str]:
    args = []
    for dev in sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri/*")):
        args += ["--dev-bind", dev, dev]
    if args:
        for path in ("/sys", "/usr/local/nvidia", "/usr/local/cuda", "/run/nvidia-persistenced"):
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
    return args


# ------------------------------------------------------------------------------------------ limits
class Limits:
    """A cgroup per kernel (pids and memory), created before the kernel starts and removed after."""

    def __init__(self, name: str, max_pids: int, memory_bytes: int):
        self.max_pids, self.memory_bytes = max_pids, memory_bytes
        self.dirs: list[Path] = []
        if not cgroups_writable():
            return
        tag = f"{name}-{uuid.uuid4().hex[:8]}"
        for controller, knob, value in (("pids", "pids.max", max_pids),
                                        ("memory", "memory.limit_in_bytes", memory_bytes)):
            path = CGROUP_ROOT / controller / "course-grader" / tag
            path.mkdir(parents=True)
            (path / knob).write_text(str(value))
            if controller == "memory" and (path / "memory.memsw.limit_in_bytes").exists():
                try:
                    (path / "memory.memsw.limit_in_bytes").write_text(str(value))
                except OSError:
                    pass
            self.dirs.append(path)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def close(self) -> None:
        """Kill whatever is left in the cgroups, then remove them."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            try:
                d.rmdir()
            except OSError:
                pass


def launch(argv: list[str]) -> None:
    """``python -m autograder.sandbox launch [--cgroup FILE]... [--as BYTES] -- CMD...``: join the cgroups,
    set the resource limits, then become CMD (bwrap). Runs as the kernel's first process."""
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    it = iter(opts)
    for opt in it:
        value = next(it)
        if opt == "--cgroup":
            Path(value).write_text(str(os.getpid()))
        elif opt == "--as":
            resource.setrlimit(resource.RLIMIT_AS, (int(value), int(value)))
    # Jupyter interrupts a kernel with SIGINT to its process group: bwrap would die of it (and take the
    # kernel with it). Ignored here, the disposition passes through exec to bwrap; ipykernel installs its
    # own SIGINT handler while it runs a cell, so an interrupt still stops the cell.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**30, 2 * 2**30))   # no file over 2 GiB
    os.execvp(cmd[0], cmd)


# ------------------------------------------------------------------------------------------ kernel
class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs inside bwrap, reached over ipc sockets (see module doc)."""

    work_dir = Unicode(help="host folder bound read-write as /home/student").tag(config=True)
    ipc_dir = Unicode(help="host folder for the connection file and sockets (bound at the same path)").tag(config=True)
    python_path = List(Unicode(), help="host folders put, read-only, on the kernel's PYTHONPATH").tag(config=True)
    kernel_env = Dict(help="environment variables of the kernel (nothing else is inherited)").tag(config=True)
    max_pids = Integer(256, help="processes and threads of the kernel").tag(config=True)
    memory_mb = Integer(6144, help="memory of the kernel, MiB").tag(config=True)
    name = Unicode("kernel").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        Path(self.ipc_dir).mkdir(parents=True, exist_ok=True)
        self.transport = "ipc"
        self.ip = os.path.join(self.ipc_dir, "k")
        self.connection_file = os.path.join(self.ipc_dir, "kernel.json")
        self._limits = Limits(self.name, self.max_pids, self.memory_mb * 2**20)

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)          # python -m ipykernel_launcher -f FILE
        env = {"HOME": HOME, "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib", "PYTHONDONTWRITEBYTECODE": "1",
               "LANG": "C.UTF-8", **self.kernel_env}
        binds = []
        for i, path in enumerate(self.python_path):
            binds += ["--ro-bind", path, f"/opt/course/{i}"]
        env["PYTHONPATH"] = ":".join(f"/opt/course/{i}" for i in range(len(self.python_path)))
        bwrap = [bwrap_path() or "bwrap", "--die-with-parent",
                 "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--hostname", "grader", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                 *_system_binds(), *binds,            # after --tmpfs /tmp, which would hide binds below it
                 "--bind", self.work_dir, HOME, "--bind", self.ipc_dir, self.ipc_dir, *_gpu_binds(),
                 "--remount-ro", "/",                 # the sandbox's own root too: only HOME and /tmp are writable
                 "--chdir", HOME, "--clearenv"]
        for key, value in env.items():
            bwrap += ["--setenv", key, str(value)]
        launcher = [sys.executable, "-m", "autograder.sandbox", "launch"]
        for procs in self._limits.procs_files:
            launcher += ["--cgroup", procs]
        if not self._limits.dirs and not _gpu_binds():
            launcher += ["--as", str(self.memory_mb * 2**20)]
        return launcher + ["--"] + bwrap + ["--"] + cmd

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
        try:
            await super()._async_shutdown_kernel(now=now, restart=restart)
        finally:
            if not restart:
                self._limits.close()


# ------------------------------------------------------------------------------------------ budget
class BudgetedExecute(Execute):
    """nbgrader's Execute with a time budget for the whole notebook (``budget`` seconds; 0: none) and,
    with ``sandbox`` on, the kernel in a sandbox. Past the budget the remaining cells are not run and
    say so; if the kernel dies (memory limit, ``os._exit``), the remaining cells say that instead."""

    budget = Float(0.0, help="seconds for the whole notebook (0: no budget)").tag(config=True)
    sandbox = Bool(False, help="run the kernel in the bwrap sandbox").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.sandbox:
            self.kernel_manager_class = SandboxedKernelManager

    def preprocess(self, nb, resources=None, km=None):
        self._started = time.monotonic()
        self._stopped = ("", "")               # (ename, evalue) written into every cell not run
        self._cell_timeout = self.timeout
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if not self._stopped[0] and self.budget:
            remaining = self.budget - (time.monotonic() - self._started)
            if remaining <= MIN_CELL_SECONDS:
                self._stopped = ("SubmissionStopped", f"not run: the submission used up its {self.budget:g} s "
                                                      f"time budget before this cell")
            else:
                self.timeout = int(max(1, min(self._cell_timeout or remaining, remaining)))
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["launch"]:
        launch(sys.argv[2:])
    elif sys.argv[1:2] == ["check"]:
        reason = check()
        print(reason or "the sandbox works here")
        sys.exit(1 if reason else 0)
    else:
        print("usage: python -m autograder.sandbox {check|launch ...}", file=sys.stderr)
        sys.exit(2)
