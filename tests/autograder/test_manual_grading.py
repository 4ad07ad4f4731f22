"""Cells a person grades keep nbgrader's behaviour under our grader: found by grading nbgrader's own test
fixtures (``nbgrader/tests/apps/files``) and checked against nbgrader's own ``autograde`` of the same
course (the oracle: plain nbgrader, no sandbox, its gradebook read back). A written answer left as
released scores 0 (final); one the student wrote needs a manual grade, with no score until a person gives
one, in the gradebook, grades.csv (``final``), details.csv, canvas.csv and the feedback."""
import csv
import shutil
from pathlib import Path

import nbgrader
import pytest
from traitlets.config import Config

from autograder.course import REPO
from autograder.grade import grade

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
    from autograder.preprocessors import PENDING_NOTE
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
    assert bar_total == pytest.approx(results["bar"]["score"] + 1.5)
    csv_path = tmp_path / "export.csv"
    subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--CourseDirectory.root={out}",
                    f"--CourseDirectory.db_url=sqlite:///{out / 'gradebook.db'}", f"--to={csv_path}"],
                   check=True, capture_output=True, cwd=tmp_path)
    with open(csv_path) as f:
        exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert exported["bar"] == pytest.approx(bar_total)
