"""Cells a person grades keep nbgrader's behaviour under our grader: found by grading nbgrader's own test
fixtures (``nbgrader/tests/apps/files``) and checked against nbgrader's own ``autograde`` of the same
course (the oracle: plain nbgrader, no sandbox, its gradebook read back). A written answer left as
released scores 0 (final); one the student wrote needs a manual grade, with no score until a person gives
one, in the gradebook, grades.csv (``final``), details.csv, canvas.csv and the feedback. After a person
grades them (in the gradebook, as formgrader does), ``python -m autograder export`` counts the grades as
nbgrader's own ``nbgrader export`` does and puts the comments on the feedback pages."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nbgrader
import pytest
from traitlets.config import Config

from autograder.course.source import REPO
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder

FILES = Path(nbgrader.__file__).parent / "tests" / "apps" / "files"
# student: {notebook: nbgrader's fixture}; p2 is missing for "bar", everything for "gone"
CLASS = {"foo": {"p1": "submitted-unchanged.ipynb", "p2": "test.ipynb"},
         "bar": {"p1": "submitted-changed.ipynb"},
         "gone": {}}
SOURCES = {"p1": "submitted-unchanged.ipynb", "p2": "test.ipynb"}


def _nbgrader_oracle(root: Path) -> dict:
    """{(student, notebook, grade id): (auto_score, needs_manual_grade)} from nbgrader's own autograde."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    (root / "source" / "ps1").mkdir(parents=True)
    for nb, fixture in SOURCES.items():
        shutil.copy(FILES / fixture, root / "source" / "ps1" / f"{nb}.ipynb")
    for student, nbs in CLASS.items():
        (root / "submitted" / student / "ps1").mkdir(parents=True)
        for nb, fixture in nbs.items():
            shutil.copy(FILES / fixture, root / "submitted" / student / "ps1" / f"{nb}.ipynb")
    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Execute.timeout = 60
    api = NbGraderAPI(config=config)
    assert api.generate_assignment("ps1", force=True)["success"]
    for student in CLASS:
        api.autograde("ps1", student, force=True, create=True)
    found = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for student in CLASS:
            try:
                sub = gb.find_submission("ps1", student)
            except Exception:
                continue
            for nb in sub.notebooks:
                for g in nb.grades:
                    found[(student, nb.name, g.name)] = (g.auto_score, g.needs_manual_grade)
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manual")
    course = tmp / "course"
    (course / "solutions" / "ps1").mkdir(parents=True)
    for nb, fixture in SOURCES.items():
        shutil.copy(FILES / fixture, course / "solutions" / "ps1" / f"{nb}.ipynb")
    shutil.copy(REPO / "nbgrader_config.py", course)
    for student, nbs in CLASS.items():
        (tmp / "subs" / student).mkdir(parents=True)
        for nb, fixture in nbs.items():
            shutil.copy(FILES / fixture, tmp / "subs" / student / f"{nb}.ipynb")
    results = grade("ps1", tmp / "subs", tmp / "out", workers=2, quiet=True, sandbox="auto", repo=course)
    return tmp / "out", {r["student"]: r for r in results}, _nbgrader_oracle(tmp / "nbgrader"), tmp


def _ours(out: Path) -> dict:
    from nbgrader.api import Gradebook
    found = {}
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for student in CLASS:
            for nb in gb.find_submission("ps1", student).notebooks:
                for g in nb.grades:
                    found[(student, nb.name, g.name)] = (g.auto_score, g.needs_manual_grade)
    return found


def test_the_gradebook_agrees_with_nbgrader_on_every_cell_a_person_grades(graded):
    out, results, oracle, _ = graded
    ours = _ours(out)
    manual = {(s, nb, gid) for (s, nb, gid), (_, needs) in oracle.items() if needs}
    assert manual, "the fixtures have answers that need a manual grade"
    for key, (score, needs) in oracle.items():       # nbgrader graded these students' notebooks
        assert ours[key][1] == needs, f"{key}: needs_manual_grade {ours[key][1]}, nbgrader says {needs}"
        if needs:
            assert ours[key][0] is None, f"{key}: a score ({ours[key][0]}) before a person gave one"
        else:
            assert ours[key][0] == pytest.approx(score), f"{key}: {ours[key][0]}, nbgrader gives {score}"


def test_csvs_say_which_totals_are_final(graded):
    out, results, oracle, _ = graded
    needs = {s for (s, _, _), (_, n) in oracle.items() if n}
    with open(out / "grades.csv") as f:
        final = {r["student"]: r["final"] for r in csv.DictReader(f)}
    assert final == {s: "no" if s in needs else "yes" for s in CLASS}
    with open(out / "details.csv") as f:
        rows = list(csv.DictReader(f))
    pending = [r for r in rows if r["status"] == "needs manual grade"]
    assert {(r["student"], r["notebook"], r["grade_id"]) for r in pending} == {k for k, (_, n) in oracle.items() if n}
    assert all(r["score"] == "" for r in pending)
    assert all(r["score"] != "" for r in rows if r["status"] != "needs manual grade")
    with open(out / "canvas.csv") as f:
        canvas = {r["SIS Login ID"]: r["ps1"] for r in csv.DictReader(f) if r["Student"] != "Points Possible"}
    assert all(canvas[s] == "" for s in needs) and all(canvas[s] != "" for s in CLASS if s not in needs)
    gone = [r for r in rows if r["student"] == "gone"]
    assert gone and all(r["status"] == "missing" and r["score"] == "0" for r in gone)   # nothing to grade: final


def test_the_feedback_shows_no_score_for_an_answer_awaiting_a_grader(graded):
    out, results, oracle, _ = graded
    from autograder.grading.preprocessors import PENDING_NOTE
    note = PENDING_NOTE.split("**")[2].split(":")[0].strip()          # "This answer awaits a grader"
    pending = (next((out / "feedback" / "bar").rglob("p1.html"))).read_text()
    assert "An answer!" in pending                      # the written answer is on the page
    assert pending.count(note) == 2                     # under baz (written) and quux (code), nothing else
    final = (next((out / "feedback" / "foo").rglob("p1.html"))).read_text()
    assert note not in final                            # answers left as released: nbgrader's 0 is the grade


def test_out_is_an_nbgrader_course_root(graded):
    out, results, oracle, tmp = graded
    for student, nbs in CLASS.items():
        for nb in nbs:
            handed_in = tmp / "subs" / student / f"{nb}.ipynb"
            assert (out / "submitted" / student / "ps1" / f"{nb}.ipynb").read_bytes() == handed_in.read_bytes()
            assert (out / "autograded" / student / "ps1" / f"{nb}.ipynb").is_file()
            assert (out / "feedback" / student / "ps1" / f"{nb}.html").is_file()
    assert not (out / "submitted" / "gone").exists()


def test_formgraders_course_root_names_an_exchange_that_nbgrader_can_use(graded, tmp_path):
    """formgrader's pages list the exchange's assignments; an exchange that does not exist makes nbgrader log
    "Unwritable directory ... OUT/.exchange" at CRITICAL level on every page. nbgrader's own ``list`` in the
    course root that ``formgrader.prepare`` writes is the judge."""
    from autograder.outputs import formgrader
    out, _, _, tmp = graded
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    assert formgrader.prepare(copy, repo=tmp / "course") == ["ps1"]
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "list"], cwd=copy, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "CRITICAL" not in proc.stderr, proc.stderr
    assert (copy / ".exchange").stat().st_mode & 0o077 == 0       # OUT's own exchange: the instructor's only
    shutil.rmtree(copy / ".exchange")                               # the oracle can fail: without it, it does
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "list"], cwd=copy, capture_output=True, text=True,
                          timeout=120)
    assert "Unwritable directory" in proc.stderr


def test_a_manual_grade_survives_a_rerun_and_reaches_nbgrader_export(graded, tmp_path):
    """A grader gives bar's written answer 1.5 points and a comment in OUT's gradebook (as formgrader does);
    then foo resubmits and the class is graded again: bar's grade and comment stay, and nbgrader's own
    ``nbgrader export`` of OUT counts them."""
    import subprocess
    import sys

    from nbgrader.api import Gradebook
    _, _, _, tmp = graded
    for name in ("out", "subs", "course"):
        shutil.copytree(tmp / name, tmp_path / name)
    out = tmp_path / "out"
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        g = gb.find_grade("baz", "p1", "ps1", "bar")
        g.manual_score, g.needs_manual_grade = 1.5, False
        gb.find_comment("baz", "p1", "ps1", "bar").manual_comment = "Good, but say why."
        gb.db.commit()
    shutil.copy(FILES / "submitted-changed.ipynb", tmp_path / "subs" / "foo" / "p1.ipynb")   # foo resubmits
    results = {r["student"]: r for r in grade("ps1", tmp_path / "subs", out, workers=2, quiet=True, sandbox="auto",
                                                repo=tmp_path / "course")}
    assert results["bar"].get("cached") and not results["foo"].get("cached")
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        g = gb.find_grade("baz", "p1", "ps1", "bar")
        assert (g.manual_score, g.needs_manual_grade) == (1.5, False)
        assert gb.find_comment("baz", "p1", "ps1", "bar").manual_comment == "Good, but say why."
        assert gb.find_grade("baz", "p1", "ps1", "foo").needs_manual_grade     # foo's new answer awaits a grader
        bar_total = gb.find_submission("ps1", "bar").score
    assert bar_total == pytest.approx(graded[1]["bar"]["score"] + 1.5)   # the autograder's points and bar's grade
    assert results["bar"]["score"] == pytest.approx(bar_total)           # counted by this run too
    csv_path = tmp_path / "export.csv"
    subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--CourseDirectory.root={out}",
                    f"--CourseDirectory.db_url=sqlite:///{out / 'gradebook.db'}", f"--to={csv_path}"],
                   check=True, capture_output=True, cwd=tmp_path)
    with open(csv_path) as f:
        exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert exported["bar"] == pytest.approx(bar_total)


def _give(out: Path, entries: dict, comments: dict) -> None:
    """What a grader does in formgrader: {(student, notebook, cell): score}, {(...): comment}."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for (student, nb, cell), score in entries.items():
            g = gb.find_grade(cell, nb, "ps1", student)
            g.manual_score, g.needs_manual_grade = score, False
        for (student, nb, cell), text in comments.items():
            gb.find_comment(cell, nb, "ps1", student).manual_comment = text
        gb.db.commit()


def _nbgrader_export(out: Path, cwd: Path) -> dict:
    """{student: score} as nbgrader's own ``nbgrader export`` counts the gradebook (the oracle)."""
    import subprocess
    import sys
    path = cwd / "nbgrader-export.csv"
    subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--CourseDirectory.root={out}",
                    f"--CourseDirectory.db_url=sqlite:///{out / 'gradebook.db'}", f"--to={path}"],
                   check=True, capture_output=True, cwd=cwd)
    with open(path) as f:
        return {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}


def _export(course: Path, out: Path, *more: str):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "autograder", "--course", str(course), "export", str(out), *more],
                          capture_output=True, text=True, cwd=REPO)


def _pending(out: Path) -> dict:
    """{student: True when a cell of theirs awaits a grader}, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        return {s.student.id: any(g.needs_manual_grade for nb in s.notebooks for g in nb.grades)
                for s in gb.find_assignment("ps1").submissions}


def test_export_after_manual_grading_counts_what_graders_gave(graded, tmp_path):
    """bar's two answers get grades and a comment, foo's failing test cell a score by hand; export: the
    CSVs count them as nbgrader export does, say which totals are final, and bar's feedback shows the
    grader's score and comment; the submissions and the autograded notebooks are not touched."""
    _, results, _, tmp = graded
    for name in ("out", "subs", "course"):
        shutil.copytree(tmp / name, tmp_path / name)
    out = tmp_path / "out"
    untouched = {p: p.read_bytes() for p in sorted([*(out / "submitted").rglob("*.ipynb"),
                                                    *(out / "autograded").rglob("*.ipynb")])}
    _give(out, {("bar", "p1", "baz"): 1.5, ("bar", "p1", "quux"): 2.0, ("foo", "p1", "bar"): 1.0},
          {("bar", "p1", "baz"): "Good, but say *why* it holds."})
    done = _export(tmp_path / "course", out)
    assert done.returncode == 0, done.stderr
    assert "2 of 3 totals are final; 1 await a grader" in done.stdout
    expected, pending = _nbgrader_export(out, tmp_path), _pending(out)
    with open(out / "grades.csv") as f:
        grades = {r["student"]: r for r in csv.DictReader(f)}
    assert {s: float(r["score"]) for s, r in grades.items()} == pytest.approx(expected)
    assert {s: r["final"] for s, r in grades.items()} == {s: "no" if pending[s] else "yes" for s in pending}
    assert grades["bar"]["final"] == "yes" and grades["foo"]["final"] == "no"      # foo's answers still wait
    with open(out / "details.csv") as f:
        rows = {(r["student"], r["grade_id"]): r for r in csv.DictReader(f)}
    assert rows[("bar", "baz")]["status"] == "graded by hand" and float(rows[("bar", "baz")]["score"]) == 1.5
    assert rows[("foo", "bar")]["status"] == "error" and float(rows[("foo", "bar")]["score"]) == 1.0
    assert "a grader set the score to 1" in rows[("foo", "bar")]["message"]
    with open(out / "canvas.csv") as f:
        canvas = {r["SIS Login ID"]: r["ps1"] for r in csv.DictReader(f) if r["Student"] != "Points Possible"}
    assert float(canvas["bar"]) == pytest.approx(expected["bar"]) and canvas["foo"] == ""
    page = (out / "feedback" / "bar" / "ps1" / "p1.html").read_text()
    assert "Good, but say <em>why</em> it holds." in page          # the comment, as markdown
    assert "Score: 1.5 / 2.0" in page
    from autograder.grading.preprocessors import PENDING_NOTE
    note = PENDING_NOTE.split("**")[2].split(":")[0].strip()
    assert note not in page                                        # nothing of bar's awaits a grader now
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        waiting = sum(g.needs_manual_grade for nb in gb.find_submission("ps1", "foo").notebooks for g in nb.grades)
    assert waiting and sum(p.read_text().count(note) for p in (out / "feedback" / "foo").rglob("*.html")) == waiting
    assert (out / "feedback" / "bar" / "ps1" / "p2.html").is_file()   # the page of bar's missing notebook stays
    assert {p: p.read_bytes() for p in untouched} == untouched

    # a rerun after foo resubmits: bar's grades and comment stay in every file, without regrading bar
    shutil.copy(FILES / "submitted-changed.ipynb", tmp_path / "subs" / "foo" / "p1.ipynb")
    again = {r["student"]: r for r in grade("ps1", tmp_path / "subs", out, workers=2, quiet=True, sandbox="auto",
                                              repo=tmp_path / "course")}
    assert again["bar"].get("cached")
    assert again["bar"]["score"] == pytest.approx(_nbgrader_export(out, tmp_path)["bar"]) == pytest.approx(expected["bar"])
    assert "Good, but say <em>why</em> it holds." in (out / "feedback" / "bar" / "ps1" / "p1.html").read_text()


def test_a_comment_changed_after_export_reaches_the_page_on_the_next_export(graded, tmp_path):
    _, _, _, tmp = graded
    for name in ("out", "course"):
        shutil.copytree(tmp / name, tmp_path / name)
    out = tmp_path / "out"
    _give(out, {}, {("bar", "p1", "baz"): "First thought."})
    assert _export(tmp_path / "course", out).returncode == 0
    page = out / "feedback" / "bar" / "ps1" / "p1.html"
    assert "First thought." in page.read_text()
    foo_page = (out / "feedback" / "foo" / "ps1" / "p1.html").read_bytes()
    _give(out, {}, {("bar", "p1", "baz"): "Second thought."})
    assert _export(tmp_path / "course", out).returncode == 0
    assert "Second thought." in page.read_text() and "First thought." not in page.read_text()
    assert (out / "feedback" / "foo" / "ps1" / "p1.html").read_bytes() == foo_page   # no entries: not remade


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_export_of_a_folder_never_graded_is_one_line_error(tmp_path, make):
    out = tmp_path / "out"
    if make == "empty":
        out.mkdir()
    done = _export(REPO, out)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and str(out) in done.stderr, done.stderr
