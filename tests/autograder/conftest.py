"""Fixtures several test modules share: what they read from the instructor's notebooks, independently of
the grader's code."""
import nbformat
import pytest

from autograder.course.source import REPO


@pytest.fixture(scope="session")
def rope_hidden_lines() -> list[str]:
    """Every line between ### BEGIN HIDDEN TESTS and ### END HIDDEN TESTS of rope's solution (8+ characters)."""
    nb = nbformat.read(REPO / "solutions" / "rope" / "rope.ipynb", as_version=4)
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if "### BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "### END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= 8:
                lines.append(line.strip())
    assert lines
    return lines


# ---------------------------------------------------------------------------------------------- PostgreSQL
def _postgres_problem() -> tuple[str | None, list[str], dict]:
    """(why not, the command prefix that runs PostgreSQL's tools, their environment)."""
    import glob
    import os
    import pwd
    import shutil
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if not initdb:
        return "PostgreSQL's server is not installed (Debian: apt-get install postgresql; make setup does it as root)", [], {}
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (PyPI) is not installed: run make setup", [], {}
    prefix = []
    if os.geteuid() == 0:                              # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no 'postgres' user to run the server as (Debian's postgresql package creates it)", [], {}
        prefix = ["runuser", "-u", "postgres", "--"]
    return None, prefix, {"PATH": f"{os.path.dirname(initdb)}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 (a fresh cluster in /tmp, trust authentication, a free port),
    started for the session and stopped after it: ``postgresql://grader@127.0.0.1:PORT/``; each test makes
    its own database (``new_database``)."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path
    why, prefix, env = _postgres_problem()
    if why:
        pytest.skip(f"POSTGRESQL UNAVAILABLE, shared-gradebook tests skipped: {why}")
    base = Path(tempfile.mkdtemp(prefix="course-pg-", dir="/tmp"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if prefix:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*prefix, *cmd], env=env, capture_output=True, text=True, timeout=120,
                                      cwd=str(base))
    proc = run("initdb", "-D", str(data), "-A", "trust", "-U", "grader", "-E", "UTF8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "start",
               "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off")
    if proc.returncode != 0:
        log = (base / "server.log").read_text(errors="replace")[-2000:] if (base / "server.log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {proc.stderr[-1000:]}\n{log}")
    try:
        yield f"postgresql://grader@127.0.0.1:{port}"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def new_database(postgres_url):
    """A fresh, empty database on the session's server: its SQLAlchemy URL."""
    import uuid

    import psycopg
    name = f"gradebook_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{postgres_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_url}/{name}"
