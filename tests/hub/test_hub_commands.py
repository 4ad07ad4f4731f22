"""``python -m autograder hub``: publish (the week's student course_lib, switched atomically) and feedback
(a graded OUT's pages through nbgrader's exchange), run as an instructor runs them; bad input in one line.

No hub and no root needed: these run in a temporary folder. The end-to-end path on a real hub is
test_hub.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hub

REPO = Path(__file__).resolve().parents[2]
STRIPPED = "the reference implementation of this exercise is not part of the student's course_lib"


def _hub(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "hub", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _bad(proc: subprocess.CompletedProcess, *words: str):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_publish_switches_the_students_course_lib_week_by_week(tmp_path):
    lib = tmp_path / "lib"
    first = _hub("publish", "rope", "--to", lib, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    link = lib / "course_lib"
    assert link.is_symlink()
    rope_week = link.resolve()
    # rope's week: rope's references are out (its exercises are not due), the hidden cases too
    assert STRIPPED in (link / "attention" / "rope.py").read_text()
    assert [p.name for p in (link / "exercises").iterdir()] == ["__init__.py"]
    # world-readable, writable by the owner only; nothing compiled
    for p in [link.resolve(), *link.resolve().rglob("*")]:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
        assert p.name != "__pycache__"
    # a student's Python with the folder on its path imports that copy
    got = subprocess.run([sys.executable, "-c", "import course_lib; print(course_lib.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(lib)}, cwd=tmp_path, capture_output=True, text=True)
    assert got.stdout.strip() == str(link / "__init__.py"), got

    # next week (kv_cache): rope is due, its references are back; the switch is the link's rename
    second = _hub("publish", "kv_cache", "--to", lib, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert link.resolve() != rope_week
    assert STRIPPED not in (link / "attention" / "rope.py").read_text()
    assert STRIPPED in (link / "attention" / "kv_cache.py").read_text()
    assert rope_week.exists()             # the week before is kept (a kernel may be importing it right now)
    third = _hub("publish", "gqa", "--to", lib, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert not rope_week.exists() and len(list((lib / ".releases").iterdir())) == 2
    assert not [p for p in lib.iterdir() if p.name.startswith((".build-", ".course_lib-"))]

    _bad(_hub("publish", "nope", "--to", lib, cwd=tmp_path), "nope")
    folder = tmp_path / "not-ours"
    (folder / "course_lib").mkdir(parents=True)
    _bad(_hub("publish", "rope", "--to", folder, cwd=tmp_path), "is a folder")


def _course(tmp_path: Path, students: dict[str, bytes]):
    """A graded OUT and the course root nbgrader collect filled, for ``students`` (name -> notebook bytes)."""
    out, course, exchange = tmp_path / "out", tmp_path / "course", tmp_path / "exchange"
    exchange.mkdir()
    (course).mkdir()
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.CourseDirectory.course_id = 'genai-lecture4'\n"
        f"c.Exchange.root = {str(exchange)!r}\n")
    for i, (student, nb) in enumerate(students.items()):
        sub = course / "submitted" / student / "rope"
        sub.mkdir(parents=True)
        (sub / "rope.ipynb").write_bytes(nb)
        (sub / "timestamp.txt").write_text(f"2027-01-20 10:0{i}:00.000000 UTC")
        (sub / "submission_secret.txt").write_text(f"secret-of-{student}-" + "ab" * 30)
        graded = out / "submitted" / student / "rope"
        graded.mkdir(parents=True)
        (graded / "rope.ipynb").write_bytes(nb)
        page = out / "feedback" / student / "rope"
        page.mkdir(parents=True)
        (page / "rope.html").write_text(f"<html><body>{student}'s feedback</body></html>")
    return out, course, exchange


def test_feedback_releases_each_page_under_its_submissions_secret(tmp_path):
    from nbgrader.utils import notebook_hash     # how fetch_feedback finds a student's page (nbgrader 0.9.6)

    nb = (REPO / "notebooks" / "rope" / "rope.ipynb").read_bytes()
    out, course, exchange = _course(tmp_path, {"ada": nb, "ben": nb})
    proc = _hub("feedback", out, "--course", course, cwd=course)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 students" in proc.stdout, proc.stdout
    released = exchange / "genai-lecture4" / "feedback"
    for student in ("ada", "ben"):
        secret = (course / "submitted" / student / "rope" / "submission_secret.txt").read_text()
        page = released / f"{notebook_hash(secret=secret, notebook_id='rope')}.html"
        assert page.read_text() == f"<html><body>{student}'s feedback</body></html>"
    assert len(list(released.iterdir())) == 2


def test_feedback_refuses_a_page_graded_from_another_submission(tmp_path):
    nb = (REPO / "notebooks" / "rope" / "rope.ipynb").read_bytes()
    out, course, exchange = _course(tmp_path, {"ada": nb, "ben": nb})
    # ben handed in again and the instructor collected again after grading: his page is of the old notebook
    (course / "submitted" / "ben" / "rope" / "rope.ipynb").write_bytes(nb.replace(b"YOUR CODE HERE", b"x = 1"))
    _bad(_hub("feedback", out, "--course", course, cwd=course), "ben", "grade again", "1 released")
    assert len(list((exchange / "genai-lecture4" / "feedback").iterdir())) == 1      # ada's
    # not collected through the exchange (no secret): refused too
    (course / "submitted" / "ada" / "rope" / "submission_secret.txt").unlink()
    _bad(_hub("feedback", out, "--course", course, "--assignment", "rope", cwd=course), "ada", "ben")
    _bad(_hub("feedback", tmp_path / "nothing", "--course", course, cwd=course), "no feedback/ folder")
    _bad(_hub("feedback", out, "--course", tmp_path / "nowhere", cwd=course), "no submitted/ folder")
