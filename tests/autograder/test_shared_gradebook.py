"""``--db URL``: the class gradebook in a PostgreSQL server several graders share (a real server, started by
the ``postgres_url`` fixture on 127.0.0.1). Oracles: the same class graded into OUT's SQLite gradebook
(itself checked against nbgrader's own autograde in test_manual_grading), and nbgrader's own
``nbgrader export`` and formgrader API reading the shared one."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nbgrader
import pytest

from autograder.course.source import REPO
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder

FILES = Path(nbgrader.__file__).parent / "tests" / "apps" / "files"
# bar and qux changed the answers (a written one included: it awaits a grader); foo handed in the release
HANDED_IN = {"foo": "submitted-unchanged.ipynb", "bar": "submitted-changed.ipynb", "qux": "submitted-changed.ipynb"}


def _grade(tmp: Path, out: Path, db: str | None = None) -> dict:
    return {r["student"]: r for r in grade("ps1", tmp / "subs", out, workers=2, quiet=True, sandbox="off",
                                             repo=tmp / "course", db=db)}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    (tmp / "course" / "solutions" / "ps1").mkdir(parents=True)
    shutil.copy(FILES / "submitted-unchanged.ipynb", tmp / "course" / "solutions" / "ps1" / "p1.ipynb")
    shutil.copy(REPO / "nbgrader_config.py", tmp / "course")
    for student, fixture in HANDED_IN.items():
        (tmp / "subs" / student).mkdir(parents=True)
        shutil.copy(FILES / fixture, tmp / "subs" / student / "p1.ipynb")
    return tmp


def _cells(url: str) -> dict:
    """{(student, notebook, cell): (auto score, needs manual grade, max score, manual score)}, read back
    through nbgrader's Gradebook."""
    from autograder.outputs import gradebook
    with gradebook.opened(url) as gb:
        return {(sub.student.id, nb.name, g.name): (g.auto_score, g.needs_manual_grade, g.max_score, g.manual_score)
                for sub in gb.find_assignment("ps1").submissions for nb in sub.notebooks for g in nb.grades}


def _export(cwd: Path, *args: str) -> dict:
    """nbgrader's own ``nbgrader export`` run in ``cwd``: {student: (score, max score)}."""
    csv_path = cwd / "export.csv"
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--to={csv_path}", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(csv_path) as f:
        return {r["student_id"]: (float(r["score"]), float(r["max_score"])) for r in csv.DictReader(f)}


def test_the_shared_gradebook_holds_what_outs_own_holds(course, new_database, tmp_path):
    from autograder.outputs import gradebook
    _grade(course, tmp_path / "own")
    _grade(course, tmp_path / "shared", db=new_database)
    own, shared = _cells(gradebook.sqlite_url(tmp_path / "own" / "gradebook.db")), _cells(new_database)
    assert shared == own and len(shared) >= 3 * 2
    assert any(needs for (_, needs, _, _) in shared.values()), "bar's written answer awaits a grader"
    assert not (tmp_path / "shared" / "gradebook.db").exists()     # one gradebook, the shared one
    assert (tmp_path / "shared" / "gradebook.url").read_text().strip() == new_database


def test_manual_grades_given_there_survive_a_rerun_and_a_resubmission_drops_its_own(course, new_database, tmp_path):
    from autograder.outputs import gradebook
    shutil.copytree(course, tmp_path / "c")
    out = tmp_path / "out"
    _grade(tmp_path / "c", out, db=new_database)
    with gradebook.opened(new_database) as gb:                       # two graders, as formgrader saves them
        for student, points in (("bar", 1.5), ("qux", 2.0)):
            g = gb.find_grade("baz", "p1", "ps1", student)
            g.manual_score, g.needs_manual_grade = points, False
            gb.find_comment("baz", "p1", "ps1", student).manual_comment = f"seen by a grader ({student})"
        gb.db.commit()
    (tmp_path / "c" / "subs" / "qux" / "p1.ipynb").write_bytes((FILES / "test.ipynb").read_bytes())   # resubmits
    results = _grade(tmp_path / "c", out, db=new_database)
    assert results["bar"].get("cached") and not results["qux"].get("cached")
    auto = sum(r["score"] for r in results["bar"]["rows"] if r["grade_id"] != "baz")   # the autograder's points
    with gradebook.opened(new_database) as gb:
        assert gb.find_grade("baz", "p1", "ps1", "bar").manual_score == 1.5
        assert gb.find_comment("baz", "p1", "ps1", "bar").manual_comment == "seen by a grader (bar)"
        assert gb.find_grade("baz", "p1", "ps1", "qux").manual_score is None       # given to other bytes
        assert not gb.find_comment("baz", "p1", "ps1", "qux").manual_comment
        bar_total = gb.find_submission("ps1", "bar").score
    assert bar_total == pytest.approx(auto + 1.5) == pytest.approx(results["bar"]["score"])   # counted by the run
    exported = _export(tmp_path, f"--CourseDirectory.root={out}", f"--CourseDirectory.db_url={new_database}")
    assert exported["bar"][0] == pytest.approx(bar_total)
    assert set(exported) == set(HANDED_IN)


def test_formgrader_and_nbgrader_export_in_out_read_the_shared_gradebook(course, new_database, tmp_path, servers):
    """formgrader on OUT (found through OUT/gradebook.url) lists the class with the shared gradebook's
    scores, over formgrader's own API; the password in --db's URL is written nowhere."""
    import json
    import urllib.request

    from autograder.outputs import formgrader

    from autograder.outputs import gradebook
    with_password = new_database.replace("grader@", "grader:not-written-anywhere@")   # trust auth: accepted
    out = tmp_path / "out"
    results = _grade(course, out, db=with_password)
    assert formgrader.prepare(out) == ["ps1"]
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".url", ".csv", ".json", ".txt"):
            assert "not-written-anywhere" not in path.read_text(errors="replace"), path
    expected = {s: r["score"] for s, r in results.items()}
    assert {s: v[0] for s, v in _export(out).items()} == pytest.approx(expected)   # OUT's nbgrader_config.py

    port, token, log = servers.free_port(), "shared-gradebook-test", tmp_path / "formgrader.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(formgrader.command(out, port, token=token, browser=False), cwd=out,
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        servers.wait_until_up(proc, base, token, log, "formgrader")
        req = urllib.request.Request(f"{base}/formgrader/api/submissions/ps1",
                                     headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            listed = {s["student"]: s for s in json.loads(r.read())}
        assert set(listed) == set(HANDED_IN), servers.log_tail(log)
        assert {s: listed[s]["score"] for s in listed} == pytest.approx(expected)
        assert {s for s in listed if listed[s]["needs_manual_grade"]} == \
            {s for s, r in results.items() if not all(row["status"] != "needs manual grade" for row in r["rows"])}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert gradebook.url_of(out) == new_database


def test_a_gradebook_that_cannot_be_opened_stops_the_run_before_any_work(course, postgres_url, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "autograder", "--course", str(course / "course"), "grade", "ps1",
                           "--submissions", str(course / "subs"), "--out", str(out),
                           "--db", f"{postgres_url}/no_such_database"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the gradebook at" in lines[0] and "no_such_database" in lines[0], proc.stderr
    assert not out.exists()
