"""A real JupyterHub on 127.0.0.1 for the course, as docs/jupyterhub.md sets it up, with an instructor and two
students as system users made for the test (and removed after it, with their homes and processes).

Needs root (users, spawning their servers as them, ACLs), ``configurable-http-proxy`` (npm; ``make hub-deps``),
``jupyterhub`` (PyPI; pyproject.toml), ``setfacl`` (``make sandbox-deps``) and chromium (``make browser-deps``):
without one of them the test is skipped, loudly.

The students' environment is the project's .venv (torch, jupyterlab, nbgrader), which lies inside the
project's checkout. That checkout is readable by every user on this machine, so the test closes it to the
students as an instructor must: a POSIX ACL entry denying the students' group every entry of the checkout
but ``.venv`` (and the checkout's listing), and the editable install's finder in the venv (which would
import the reference ``course_lib``); the entries are removed afterwards. The students' kernels import the
``course_lib`` that ``python -m autograder hub publish`` wrote. The venv's Python may lie where others cannot
reach it (pyenv's under /root, mode 0700, here): the hub's users get ``--x`` on the folders on the way, as
every user can run a real hub's students' environment; removed afterwards too.
"""
from __future__ import annotations

import json
import os
import re
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COURSE_ID = "genai-lecture4"
ASSIGNMENT = NOTEBOOK = "rope"


def _skip(why: str):
    warnings.warn(f"HUB TEST SKIPPED: {why}")
    pytest.skip(f"HUB TEST SKIPPED: {why}")


@dataclass
class Hub:
    base: str                  # http://127.0.0.1:PORT
    root: Path                 # the test's folder (0755): exchange/, lib/, etc/, state/ (0700)
    exchange: Path
    lib: Path
    instructor: str
    course: Path               # the instructor's nbgrader course root (in their home)
    students: dict             # name -> home
    group: str
    password: str
    log: Path
    env: dict = field(default_factory=dict)

    def as_user(self, user: str, cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``cmd`` as ``user`` (its uid, gid and groups; HOME its home), as they would in a terminal."""
        pw = pwd.getpwnam(user)
        env = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "PATH": f"{VENV_BIN}:/usr/bin:/bin",
               "LANG": "C.UTF-8", "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--",
                               *cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no hub log)"


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_paths(project: Path) -> list[tuple[Path, str]]:
    """What the students' group is denied: (path, permissions of its ACL entry)."""
    closed = [(project, "--x")]          # traverse to .venv, but no listing
    for entry in sorted(project.iterdir()):
        if entry.name != ".venv":
            closed.append((entry, "---"))
    for site in (project / ".venv" / "lib").glob("python3*/site-packages"):
        for entry in sorted(site.iterdir()):          # the editable install: a .pth and its finder module
            if entry.name.startswith("__editable__"):
                closed.append((entry, "---"))
    return closed


def _python_ancestors() -> list[Path]:
    """The folders on the way to the real Python of the venv that others cannot traverse (on this machine:
    pyenv's Python under /root, mode 0700): the hub's users are given --x there, as the students'
    environment of a real hub is executable by every user."""
    real = Path(os.path.realpath(sys.executable))
    return [p for p in reversed(real.parents) if p != Path("/") and not (p.stat().st_mode & 0o001)]


def _kill_user_processes(user: str) -> None:
    """Every process of ``user`` (the test's own user: its server, kernels), by pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = subprocess.run(["ps", "-o", "pid=", "-u", user], capture_output=True, text=True).stdout.split()
        if not out:
            return
        for pid in out:
            try:
                os.kill(int(pid), sig)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(1)


@pytest.fixture(scope="module")
def hub():
    if os.geteuid() != 0:
        _skip("not root: the test creates system users and spawns their servers as them")
    for tool, how in (("configurable-http-proxy", "make hub-deps (npm install -g configurable-http-proxy, as root)"),
                      ("setfacl", "make sandbox-deps (apt-get install acl)"),
                      ("useradd", "the passwd package"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            _skip(f"{tool} is not installed: {how}")
    if not (VENV_BIN / "jupyterhub").exists() or not (VENV_BIN / "jupyterhub-singleuser").exists():
        _skip(f"jupyterhub is not installed in {VENV_BIN.parent} (make setup: pyproject.toml pins it)")

    project = REPO
    sfx = secrets.token_hex(3)
    group = f"hubst{sfx}"
    instructor, students = f"hubin{sfx}", {f"hubsa{sfx}": None, f"hubsb{sfx}": None}
    root = Path(tempfile.mkdtemp(prefix="course-hub-", dir="/tmp"))
    os.chmod(root, 0o755)
    made_users: list[str] = []
    acl_done: list[tuple[Path, str]] = []
    proc = None
    try:
        _run(["groupadd", group])
        for user in (instructor, *students):
            extra = ["-G", group] if user != instructor else []
            _run(["useradd", "-m", "-s", "/bin/bash", *extra, user])
            made_users.append(user)
            home = Path(pwd.getpwnam(user).pw_dir)
            os.chmod(home, 0o700)
            if user in students:
                students[user] = home

        # the instructor closes the checkout to the students (see the module's docstring); everyone of the
        # course may run the Python of the students' environment
        entries = [(path, f"g:{group}:{perms}") for path, perms in _closed_paths(project)]
        for path in _python_ancestors():
            entries += [(path, f"g:{group}:--x"), (path, f"u:{instructor}:--x")]
        for path, entry in entries:
            p = subprocess.run(["setfacl", "-m", entry, str(path)], capture_output=True, text=True)
            if p.returncode != 0:
                _skip(f"setfacl on {path} failed ({p.stderr.strip()}): this filesystem has no ACLs, the "
                      f"checkout cannot be closed to the students")
            acl_done.append((path, entry.rsplit(":", 1)[0]))

        exchange = root / "exchange"
        exchange.mkdir()
        os.chmod(exchange, 0o1777)                       # nbgrader's docs: the exchange root is 1777
        lib, etc, state = root / "lib", root / "etc", root / "state"
        etc.mkdir(mode=0o755)
        state.mkdir(mode=0o700)
        (etc / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\n")
        os.chmod(etc / "nbgrader_config.py", 0o644)
        for rel in ("jupyter_server_config.json", "labconfig/page_config.json"):   # no instructor's tools
            (etc / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(project / "hub" / "students" / rel, etc / rel)
            os.chmod(etc / rel, 0o644)
        os.chmod(etc / "labconfig", 0o755)
        # the week's course_lib for the students, as the admin publishes it
        pub = subprocess.run([sys.executable, "-m", "autograder", "hub", "publish", ASSIGNMENT, "--to", str(lib)],
                             cwd=root, capture_output=True, text=True, timeout=120)
        assert pub.returncode == 0, pub.stderr[-3000:]

        # the instructor's course root: the release of rope (as `python -m autograder release` made it)
        ipw = pwd.getpwnam(instructor)
        course = Path(ipw.pw_dir) / "course"
        (course / "release" / ASSIGNMENT).mkdir(parents=True)
        shutil.copy2(project / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", course / "release" / ASSIGNMENT)
        (course / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\nc.Exchange.root = {str(exchange)!r}\n")
        _run(["chown", "-R", f"{instructor}:{ipw.pw_gid}", str(course)])

        port = _free_port()
        password = secrets.token_urlsafe(12)
        config = state / "jupyterhub_config.py"
        config.write_text(
            f"load_subconfig({str(project / 'hub' / 'jupyterhub_config.py')!r})\n"
            "c = get_config()\n"
            "# the test's notebooks run their short configuration, as in CI; figures not drawn on screen\n"
            "c.Spawner.environment.update({'NBGRADER_EXECUTION': 'ci', 'WANDB_MODE': 'disabled'})\n"
            "c.JupyterHub.log_level = 'INFO'\n")
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
               "COURSE_HUB_IP": "127.0.0.1", "COURSE_HUB_PORT": str(port),
               "COURSE_HUB_API_PORT": str(_free_port()), "COURSE_PROXY_API_PORT": str(_free_port()),
               "COURSE_HUB_STATE": str(state), "COURSE_STUDENT_ENV": str(VENV_BIN.parent),
               "COURSE_LIB": str(lib), "COURSE_NBGRADER_CONFIG": str(etc),
               "COURSE_USERS": ",".join([instructor, *students]), "COURSE_HUB_DUMMY_PASSWORD": password}
        log = root / "hub.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=state, env=env,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        hub = Hub(base, root, exchange, lib, instructor, course, students, group, password, log, env)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyterhub exited ({proc.returncode}):\n{hub.log_tail()}")
            try:
                with urllib.request.urlopen(f"{base}/hub/api/", timeout=2) as r:
                    if r.status == 200 and "version" in json.load(r):
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyterhub did not answer /hub/api/ within 60 s:\n{hub.log_tail()}")
            time.sleep(0.3)
        yield hub
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)       # the hub stops the users' servers (cleanup_servers)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        pidfile = root / "state" / "jupyterhub-proxy.pid"    # the proxy, when the hub could not stop it
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        for user in made_users:
            _kill_user_processes(user)
            subprocess.run(["userdel", "-r", user], capture_output=True)
        for path, entry in reversed(acl_done):         # only our entries: others' (the uid tier's) stay
            subprocess.run(["setfacl", "-x", entry, str(path)], capture_output=True)
        for path in {p for p, _ in acl_done}:           # no named entry left: no ACL at all, as before
            acl = subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True).stdout
            if acl and not re.search(r"^(user|group):[^:]+:", acl, re.M):
                subprocess.run(["setfacl", "-b", str(path)], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
        if os.environ.get("HUB_TEST_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
