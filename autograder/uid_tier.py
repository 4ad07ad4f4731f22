"""The second sandbox tier, for hosts where bubblewrap cannot create namespaces (Docker-based graders such
as Gradescope's and Otter's: Docker's default seccomp profile refuses user namespaces).

The grader must be root there (as it is in those containers). Each kernel then runs

* as a **fresh uid** of its own (no ``/etc/passwd`` entry is needed or written: nothing to clean up), in the
  run's **fresh group**, with no supplementary groups and ``no_new_privs`` (no setuid binary gives root
  back), so it has only the rights that "others" have, and cannot signal, trace or read another kernel;
* in a **fresh working folder** ``/tmp/course-sandbox-*`` (mode 0700, its own) holding its files, the
  student ``course_lib`` and the assignment's shipped files (root's, read-only to it);
* with the course folder, the solutions, the gradebook, the submissions and the grading output closed to
  it: whatever of them "others" could read gets a POSIX ACL entry denying the run's group
  (``setfacl -m g:GID:---``; ``--x`` on the folders on the way to the Python environment, which it must
  run), removed when the run ends. A probe *as that uid* checks the result before any kernel starts; the
  tier refuses to run when something stays readable (e.g. no ``setfacl``, or a filesystem without ACLs);
* without network where it can be taken away: a network namespace of its own when the grader may create
  one, else a seccomp filter (libseccomp through ``pyseccomp``) refusing every socket but Unix ones
  (the kernel talks to the grader over Unix sockets), else none, and ``describe_network()`` says so;
* with the caps of ``autograder.limits`` (cgroups, else ``RLIMIT_NPROC``, meaningful with its own uid).

When it ends, every process of its uid is killed (``kill(-1)`` as that uid), and its working folder and
the files it left in ``/tmp`` are removed.
"""
from __future__ import annotations

import ctypes
import errno
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

WORK_PREFIX = "course-sandbox-"
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38


# ------------------------------------------------------------------------------------------ who may run it
def problem() -> str | None:
    """None when the uid tier can run here, else a one-line reason."""
    if os.geteuid() != 0:
        return "the uid tier needs root (to run each kernel as a uid of its own)"
    if _uid_range() is None:
        return "no uid range to pick kernel uids from (/proc/self/uid_map)"
    return None


def _uid_range() -> tuple[int, int] | None:
    """A range of ids this (possibly user-namespaced) root can switch to, away from real users."""
    try:
        ranges = [tuple(map(int, line.split())) for line in Path("/proc/self/uid_map").read_text().splitlines()]
    except OSError:
        ranges = [(0, 0, 2**32 - 1)]
    for inside, _, count in ranges:
        lo, hi = max(inside, 200_000), min(inside + count - 2, 2**31 - 2)
        if hi - lo >= 1000:
            return lo, hi
    for inside, _, count in ranges:           # a small map (65536 ids): its top part
        lo, hi = max(inside + count // 2, inside + 1000), inside + count - 2
        if hi - lo >= 100:
            return lo, hi
    return None


def _ids_in_use() -> set[int]:
    used = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("Uid:", "Gid:")):
                    used.update(int(x) for x in line.split()[1:])
        except OSError:
            pass
    return used


def tasks_of(uid: int) -> int:
    """How many tasks (processes and threads: what RLIMIT_NPROC counts) ``uid`` runs now."""
    n = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            pass
    return n


def fresh_ids(n: int) -> list[int]:
    """``n`` ids that no account and no running process uses."""
    import grp
    import pwd

    lo, hi = _uid_range()
    used, out = _ids_in_use(), []
    while len(out) < n:
        i = random.randint(lo, hi)
        if i in used or i in out:
            continue
        try:
            pwd.getpwuid(i)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(i)
            continue
        except KeyError:
            pass
        out.append(i)
    return out


# ------------------------------------------------------------------------------------------ probes
_PROBE = 'for p do if [ -r "$p" ] || { [ -d "$p" ] && [ -x "$p" ]; }; then printf "%s\\n" "$p"; fi; done'


def reachable(paths: list[Path], uid: int, gid: int) -> list[Path]:
    """The paths that ``uid`` (in group ``gid``) can read, list or enter, asked as that uid."""
    if not paths:
        return []
    proc = subprocess.run(["/bin/sh", "-c", _PROBE, "probe", *map(str, paths)], user=uid, group=gid,
                          extra_groups=[], capture_output=True, text=True, timeout=60, cwd="/")
    return [Path(line) for line in proc.stdout.splitlines() if line]


def runs_python(uid: int, gid: int) -> bool:
    try:
        proc = subprocess.run([sys.executable, "-c", "import nbformat, ipykernel, torch"], user=uid, group=gid,
                              extra_groups=[], capture_output=True, timeout=120, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


# ------------------------------------------------------------------------------------------ ACLs
class AccessControl:
    """POSIX ACL entries for the run's group, recorded so that ``undo()`` leaves every path as it was."""

    def __init__(self, gid: int):
        self.gid = gid
        self.changed: list[tuple[Path, bool, int]] = []     # (path, had an ACL before, mode before)

    def set(self, path: Path, perms: str) -> str | None:
        """Give the group ``perms`` ("---" or "--x") on ``path``; None, or why it could not be done."""
        if shutil.which("setfacl") is None:
            return "setfacl is not installed (Debian/Ubuntu: apt-get install acl)"
        try:
            had = bool(os.getxattr(path, "system.posix_acl_access"))
        except OSError as e:
            if e.errno not in (errno.ENODATA, getattr(errno, "ENOATTR", errno.ENODATA)):
                return f"{path}: ACLs not supported here ({e.strerror})"
            had = False
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        proc = subprocess.run(["setfacl", "-m", f"g:{self.gid}:{perms}", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"setfacl on {path}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}"
        self.changed.append((path, had, mode))
        return None

    def undo(self) -> None:
        for path, had, mode in reversed(self.changed):
            if had:
                subprocess.run(["setfacl", "-x", f"g:{self.gid}", str(path)], capture_output=True)
            else:
                subprocess.run(["setfacl", "-b", str(path)], capture_output=True)
                try:
                    os.chmod(path, mode)
                except OSError:
                    pass
        self.changed = []


def _ancestors(path: Path) -> list[Path]:
    path = Path(os.path.realpath(path))
    return list(reversed(path.parents))[1:] + [path]        # without "/"


class Run:
    """The uid tier for one grading run (in the grading process): the run's group, the paths closed to it,
    the folders it needs opened, one fresh uid and working folder per kernel."""

    def __init__(self, protect: list[Path], keep: list[Path]):
        """``protect``: folders and files no kernel may read (the course folder, the submissions, OUT).
        ``keep``: what a kernel must reach inside them or behind closed folders (the Python environment)."""
        why = problem()
        if why:
            raise RuntimeError(why)
        self.gid = fresh_ids(1)[0]
        self.acl = AccessControl(self.gid)
        self.homes: list[Path] = []
        self.protect = sorted({Path(os.path.realpath(p)) for p in protect})
        self.keep = sorted({Path(os.path.realpath(p)) for p in keep})

    def open(self) -> None:
        """Close the protected paths to the run's group, open the way to the kept ones; check as a uid of
        the group. Raises RuntimeError (one line) when something stays readable."""
        probe_uid = fresh_ids(1)[0]
        try:
            self._open(probe_uid)
        except BaseException:
            self.close()
            raise

    def _open(self, probe_uid: int) -> None:
        keep_dirs = {a for k in self.keep for a in _ancestors(k)}
        targets: list[tuple[Path, str]] = []
        for root in self.protect:
            if not root.exists():
                continue
            if any(k == root or root in k.parents for k in self.keep):
                # the kept path is inside: the folders on the way may be entered, everything else is closed
                stack = [root]
                while stack:
                    d = stack.pop()
                    targets.append((d, "--x"))
                    for child in sorted(d.iterdir()):
                        child = Path(os.path.realpath(child)) if child.is_symlink() else child
                        if child in keep_dirs and child.is_dir() and child not in self.keep:
                            stack.append(child)
                        elif child not in self.keep and child not in keep_dirs:
                            targets.append((child, "---"))
            else:
                targets.append((root, "---"))
        open_now = set(reachable([t for t, _ in targets], probe_uid, self.gid))
        for path, perms in targets:
            if path in open_now or perms == "--x":
                why = self.acl.set(path, perms)
                if why and path in open_now and perms == "---":
                    raise RuntimeError(f"uid tier: {path} is readable by other users and cannot be closed: {why}")
        # the Python environment: enter every folder on its way (no listing)
        if not runs_python(probe_uid, self.gid):
            for k in self.keep:
                for a in _ancestors(k):
                    if a not in self.keep and not reachable([a], probe_uid, self.gid):
                        self.acl.set(a, "--x")
            if not runs_python(probe_uid, self.gid):
                raise RuntimeError(f"uid tier: a uid of its own cannot run {sys.executable} here "
                                   f"(its folders are closed to other users)")
        still = reachable([t for t, p in targets if p == "---"], probe_uid, self.gid)
        if still:
            raise RuntimeError(f"uid tier: {still[0]} stays readable by the kernels' uid")

    def new_home(self, name: str) -> tuple[Path, int]:
        """A fresh working folder (0700) and a fresh uid that owns it."""
        uid = fresh_ids(1)[0]
        home = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{name}-", dir="/tmp"))
        os.chown(home, uid, self.gid)
        self.homes.append(home)
        return home, uid

    def close(self) -> None:
        self.acl.undo()
        for home in self.homes:
            shutil.rmtree(home, ignore_errors=True)
        self.homes = []


# ------------------------------------------------------------------------------------------ in the kernel's first process
def kill_all_of(uid: int) -> None:
    """Kill every process of ``uid``: ``kill(-1)`` from a child that has become that uid."""
    pid = os.fork()
    if pid == 0:                              # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def remove_tmp_files_of(uid: int, keep: Path | None = None, tmp: Path = Path("/tmp")) -> None:
    """Files a kernel of ``uid`` left in /tmp, but ``keep`` (its own folder, removed by ``Run.close``)."""
    for entry in tmp.iterdir():
        try:
            if entry.lstat().st_uid == uid and (keep is None or entry != Path(keep)):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        except OSError:
            pass


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def unshare_network() -> bool:
    """A network namespace of its own (only a loopback, down) for this process, where allowed."""
    return _libc().unshare(CLONE_NEWNET) == 0


def seccomp_no_ip_sockets() -> bool:
    """A seccomp filter: socket() of any family but AF_UNIX fails with EACCES (io_uring, which could open
    sockets behind the filter's back, with EPERM). Needs libseccomp (``pyseccomp``)."""
    try:
        import pyseccomp as seccomp
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        f.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
        for call in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
            try:
                f.add_rule(seccomp.ERRNO(errno.EPERM), call)
            except Exception:   # an old libseccomp that does not know the name
                pass
        f.load()
        return True
    except Exception:
        return False


def no_new_privileges() -> None:
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def describe_network() -> tuple[bool, str]:
    """(isolated?, how) for a kernel of this tier on this host, found by trying in a child process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                              # pragma: no cover - the child
        os.close(r)
        how = "network namespace" if unshare_network() else \
            "seccomp: no IP sockets (libseccomp)" if seccomp_no_ip_sockets() else ""
        os.write(w, how.encode())
        os._exit(0)
    os.close(w)
    how = os.read(r, 200).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return bool(how), how or "NOT isolated: no network namespace and no seccomp here"
