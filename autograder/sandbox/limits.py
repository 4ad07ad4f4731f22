"""Process and memory caps of a student's kernel, with whatever this host offers.

In order of preference (``plan()`` says which one applies here, and why):

1. **cgroup v2** (the unified hierarchy: Ubuntu 22.04+, Debian 12, Fedora): a child cgroup
   ``<v2 mount>/course-grader/<tag>`` with ``memory.max``, ``memory.swap.max = 0`` and ``pids.max``. The
   grader must be able to create it: root (the ``memory`` and ``pids`` controllers are enabled in the
   root's and ``course-grader``'s ``cgroup.subtree_control``).
2. **cgroup v1** (``/sys/fs/cgroup/{pids,memory}``, root): ``pids.max``, ``memory.limit_in_bytes`` (and
   ``memory.memsw.limit_in_bytes`` where swap accounting is on).
3. **systemd scope**, for an instructor who is not root on a systemd machine: the kernel is started by
   ``systemd-run --user --scope -p MemoryMax=... -p MemorySwapMax=0 -p TasksMax=...``, i.e. in a transient
   scope of the user's own delegated subtree. Used only when a probe shows that the limits really apply.
4. **rlimits**, where no cgroup can be had: ``RLIMIT_NPROC`` caps the tasks of a *user*, so it is exact
   when the kernel has a uid of its own (the uid tier). For an unprivileged grader (bubblewrap through a
   user namespace) it is set *inside* the sandbox: since Linux 5.14 the count is kept per user namespace,
   so each kernel gets its own cap (before 5.14, kernels graded at the same time share one pool; root
   ignores it, and has cgroups). ``RLIMIT_AS`` caps address space,
   which CUDA cannot live with (it reserves tens of GiB of virtual memory): with GPU device nodes there is
   then no memory cap, and ``plan()`` says so.

The kernel's first process (``sandbox.launch``) joins the cgroup before it becomes the kernel; ``close()``
kills whatever is left in it and removes it. ``prune()`` removes cgroups a killed run left behind.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "course-grader"                     # our folder in each hierarchy


@dataclass(frozen=True)
class Plan:
    mechanism: str          # "cgroup v2", "cgroup v1", "systemd scope", "rlimits" or "none"
    processes: str          # how processes are capped, or why they are not ("" = not capped)
    memory: str             # the same for memory

    @property
    def caps_processes(self) -> bool:
        return bool(self.processes)

    @property
    def caps_memory(self) -> bool:
        return bool(self.memory)


# ------------------------------------------------------------------------------------------ cgroup v2
def v2_mount(root: Path = CGROUP_ROOT) -> Path | None:
    """The cgroup-v2 mount whose controllers include memory and pids (``root`` itself on a unified host,
    ``root/unified`` on a hybrid one), or None."""
    for mount in (root, root / "unified"):
        try:
            controllers = (mount / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if {"memory", "pids"} <= set(controllers):
            return mount
    return None


def _enable(folder: Path) -> None:
    """Turn on the memory and pids controllers for the children of ``folder``."""
    control = folder / "cgroup.subtree_control"
    enabled = set(control.read_text().split()) if control.exists() else set()
    missing = [c for c in ("memory", "pids") if c not in enabled]
    if missing:
        control.write_text(" ".join(f"+{c}" for c in missing))


def v2_base(root: Path = CGROUP_ROOT) -> Path | None:
    """``<v2 mount>/course-grader`` with both controllers enabled for its children, or None where the
    grader may not create it."""
    mount = v2_mount(root)
    if mount is None:
        return None
    base = mount / GROUP
    try:
        _enable(mount)
        base.mkdir(exist_ok=True)
        _enable(base)
        return base if os.access(base, os.W_OK) else None
    except OSError:
        return None


# ------------------------------------------------------------------------------------------ cgroup v1
def v1_writable(root: Path = CGROUP_ROOT) -> bool:
    try:
        for controller in ("pids", "memory"):
            if not (root / controller / "cgroup.procs").exists():
                return False
            probe = root / controller / GROUP
            probe.mkdir(exist_ok=True)
            if not os.access(probe, os.W_OK):
                return False
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ systemd scope
@functools.lru_cache(maxsize=1)
def systemd_scope_works() -> bool:
    """True when ``systemd-run --user --scope`` starts a process whose cgroup has the limits asked for."""
    if os.geteuid() == 0 or shutil.which("systemd-run") is None:
        return False
    script = ('d=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup); '
              'cat "$d/memory.max" "$d/pids.max"')
    try:
        proc = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "-p", "MemoryMax=67108864",
                               "-p", "TasksMax=17", "--", "sh", "-c", script],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split() == ["67108864", "17"]


# ------------------------------------------------------------------------------------------ the plan
def plan(*, gpu: bool, own_uid: bool, root: Path = CGROUP_ROOT) -> Plan:
    """What caps a kernel here: the first mechanism of the module docstring that works."""
    if v2_base(root) is not None:
        return Plan("cgroup v2", "pids.max (cgroup v2)", "memory.max, memory.swap.max = 0 (cgroup v2)")
    if v1_writable(root):
        return Plan("cgroup v1", "pids.max (cgroup v1)", "memory.limit_in_bytes (cgroup v1)")
    if systemd_scope_works():
        return Plan("systemd scope", "TasksMax (systemd-run --user --scope)",
                    "MemoryMax, MemorySwapMax = 0 (systemd-run --user --scope)")
    processes = ("RLIMIT_NPROC (the kernel's own uid)" if own_uid else
                 "" if os.geteuid() == 0 else "RLIMIT_NPROC in the kernel's own user namespace (per kernel on Linux "
                 "5.14+; shared by the grader's kernels before)")
    memory = "" if gpu else "RLIMIT_AS (address space)"
    return Plan("rlimits" if processes or memory else "none", processes, memory)


class Limits:
    """The caps of one kernel: created before it starts (``launcher_args``, ``command_prefix``), removed by
    ``close()``."""

    def __init__(self, name: str, max_pids: int, memory_bytes: int, *, gpu: bool = False, own_uid: bool = False,
                 root: Path = CGROUP_ROOT):
        self.max_pids, self.memory_bytes = max_pids, memory_bytes
        self.plan = plan(gpu=gpu, own_uid=own_uid, root=root)
        self.tag = f"{name}-{uuid.uuid4().hex[:8]}"
        self.dirs: list[Path] = []
        self.unit = ""
        if self.plan.mechanism == "cgroup v2":
            path = v2_base(root) / self.tag
            path.mkdir()
            self.dirs.append(path)
            (path / "pids.max").write_text(str(max_pids))
            (path / "memory.max").write_text(str(memory_bytes))
            try:
                (path / "memory.swap.max").write_text("0")
            except OSError:                 # no swap accounting: memory.max alone
                pass
        elif self.plan.mechanism == "cgroup v1":
            for controller, knob, value in (("pids", "pids.max", max_pids),
                                            ("memory", "memory.limit_in_bytes", memory_bytes)):
                path = root / controller / GROUP / self.tag
                path.mkdir(parents=True)
                self.dirs.append(path)
                (path / knob).write_text(str(value))
                if controller == "memory" and (path / "memory.memsw.limit_in_bytes").exists():
                    try:
                        (path / "memory.memsw.limit_in_bytes").write_text(str(value))
                    except OSError:
                        pass
        elif self.plan.mechanism == "systemd scope":
            self.unit = f"{GROUP}-{self.tag}.scope"

    def command_prefix(self) -> list[str]:
        """What the kernel's command line starts with (systemd-run for a scope; nothing otherwise)."""
        if not self.unit:
            return []
        return ["systemd-run", "--user", "--scope", "--quiet", "--collect", f"--unit={self.unit}",
                "-p", f"MemoryMax={self.memory_bytes}", "-p", "MemorySwapMax=0", "-p", f"TasksMax={self.max_pids}", "--"]

    @property
    def nproc_inside(self) -> bool:
        """RLIMIT_NPROC goes inside the sandbox's user namespace (an unprivileged grader, no cgroup)."""
        return self.plan.mechanism == "rlimits" and self.plan.caps_processes and "namespace" in self.plan.processes

    def launcher_args(self) -> list[str]:
        """Options of ``sandbox.launch``: the cgroups to join, the rlimits to set."""
        args = []
        for d in self.dirs:
            args += ["--cgroup", str(d / "cgroup.procs")]
        if self.plan.mechanism == "rlimits":
            if self.plan.caps_processes and not self.nproc_inside:
                args += ["--nproc", str(self.max_pids)]
            if self.plan.caps_memory:
                args += ["--as", str(self.memory_bytes)]
        return args

    def close(self) -> None:
        """Kill whatever is left in the cgroups (or the scope), then remove them."""
        for d in self.dirs:
            _empty_and_remove(d)
        self.dirs = []
        if self.unit:
            subprocess.run(["systemctl", "--user", "stop", self.unit], capture_output=True, timeout=30)
            self.unit = ""


def _empty_and_remove(d: Path) -> None:
    for _ in range(100):
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
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


def our_cgroups(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every cgroup of ours that exists now, in every hierarchy."""
    bases = [root / "pids" / GROUP, root / "memory" / GROUP, root / GROUP, root / "unified" / GROUP]
    return sorted(p for b in bases if b.is_dir() for p in b.iterdir() if p.is_dir())


def prune(prefix: str = "", older_than: float = 0.0, root: Path = CGROUP_ROOT) -> int:
    """Remove our cgroups whose tag starts with ``prefix`` (killing what is in them), or, with
    ``older_than`` seconds, the empty ones at least that old (left by runs that were killed). Returns how
    many were removed."""
    removed = 0
    now = time.time()
    for d in our_cgroups(root):
        if prefix and not d.name.startswith(prefix):
            continue
        if older_than:
            try:
                if now - d.stat().st_ctime < older_than or (d / "cgroup.procs").read_text().strip():
                    continue
            except OSError:
                continue
        _empty_and_remove(d)
        removed += not d.exists()
    return removed
