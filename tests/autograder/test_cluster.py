"""Grading on a real Dask cluster: a `dask scheduler` and two `dask worker` processes started here on
127.0.0.1. A small class graded there equals the same class graded locally, row for row and page for page;
one worker killed while it grades, and still every student is graded exactly once."""
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autograder.intake import samples as subs
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder

DASK = Path(sys.executable).with_name("dask")
OPTIONS = dict(quiet=True, submission_timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not DASK.exists():
        pytest.skip(f"DASK UNAVAILABLE, cluster tests skipped: no `dask` command beside {sys.executable}")
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = {}

    def start(name, args):
        log = open(logs / f"{name}.log", "w")
        procs[name] = subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=logs)

    start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"])
    from distributed import Client
    for name in ("w1", "w2"):              # no nanny: a killed worker stays dead, like a lost machine
        start(name, ["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name,
                     "--death-timeout", "60"])
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=120)
    yield address, procs
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _class(dirs: Path) -> list[str]:
    release, solution = subs.load("rope", "rope")
    complete = subs.fill(release, solution)
    students = {"complete": complete, "half": subs.fill(release, solution, only={"rope_thetas", "rope_matrix"})}
    for name, nb in students.items():
        subs.write(nb, dirs / name / "rope.ipynb")
    (dirs / "unreadable").mkdir()
    (dirs / "unreadable" / "rope.ipynb").write_text("{not json")
    return sorted([*students, "unreadable"])


def _rows(out: Path) -> list[tuple]:
    with open(out / "details.csv") as f:
        return sorted(tuple(r.values()) for r in csv.DictReader(f))


def test_a_class_graded_on_the_cluster_equals_it_graded_here_even_when_a_worker_dies(cluster, tmp_path):
    address, procs = cluster
    dirs = tmp_path / "submissions"
    students = _class(dirs)
    local = grade("rope", dirs, tmp_path / "local", workers=2, **OPTIONS)

    killed = {}

    def kill_a_busy_worker():          # as soon as a worker grades a submission, it dies (no nanny: for good)
        from distributed import Client
        with Client(address, timeout="30s") as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not killed:
                busy = {w: keys for w, keys in client.processing().items() if keys}
                for worker, keys in busy.items():
                    name = client.scheduler_info()["workers"].get(worker, {}).get("name")
                    if name in procs and any(str(k).startswith("grade-") for k in keys):
                        time.sleep(2)                           # mid-task
                        os.killpg(procs[name].pid, signal.SIGKILL)
                        killed[name] = keys
                        break
                time.sleep(0.2)

    watcher = threading.Thread(target=kill_a_busy_worker)
    watcher.start()
    remote = grade("rope", dirs, tmp_path / "remote", scheduler=address, **OPTIONS)
    watcher.join()
    assert killed, "no worker was seen grading (the test could not kill one mid-task)"
    assert sorted(r["student"] for r in remote) == students            # each exactly once
    assert _rows(tmp_path / "remote") == _rows(tmp_path / "local")
    assert {r["student"]: r["score"] for r in remote} == {r["student"]: r["score"] for r in local}
    for student in students:
        here = (tmp_path / "local" / "feedback" / student / "rope" / "rope.html").read_text()
        there = (tmp_path / "remote" / "feedback" / student / "rope" / "rope.html").read_text()
        assert there.count("Grader's verdict") == here.count("Grader's verdict")
    assert not (tmp_path / "submissions" / "complete" / ".cache").exists()
    with open(tmp_path / "remote" / "grades.csv") as f:
        assert len(list(csv.DictReader(f))) == len(students)


def test_an_unreachable_scheduler_is_a_one_line_error(tmp_path):
    dirs = tmp_path / "submissions"
    shutil.copytree(Path(__file__).resolve().parents[2] / "autograder" / "samples" / "rope" / "alice", dirs / "alice")
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "rope", "--submissions", str(dirs),
                           "--out", str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and "cannot reach the Dask scheduler" in proc.stderr
