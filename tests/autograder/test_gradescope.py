"""The Gradescope autograder (``autograder/outputs/gradescope.py``): the zip is built once, unzipped into a fake
``/autograder/source`` per case, and its real ``run_autograder`` is run with bash (``GRADESCOPE_ROOT``:
a temporary root, ``GRADESCOPE_PYTHON``: this interpreter) on five submissions, each graded once:
complete, partial (under another file name, in a subfolder), not JSON, nothing uploaded, hostile.
Every ``results.json`` is checked against a JSON Schema written from Gradescope's specification."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from autograder.outputs import gradescope
from autograder.intake import samples as subs
from autograder.course.source import REPO, assignments, graded_cells

pytestmark = pytest.mark.autograder

SCHEMA = json.loads((REPO / "tests" / "schemas" / "gradescope_results.schema.json").read_text())
CELLS = [c for c in graded_cells("rope") if c.kind == "test"]      # written answers are graded by hand
TOTAL = sum(c.max_score for c in CELLS)
POINTS = {c.grade_id: c.max_score for c in CELLS}
# bob (autograder/samples/rope, made by autograder.intake.samples.rope_samples): rope_thetas and rope_matrix
# right, apply_rope_pairs with the sine's sign flipped, apply_rope_halves not done
BOB = {"test_rope_thetas": POINTS["test_rope_thetas"], "test_rope_matrix": POINTS["test_rope_matrix"],
       "test_apply_rope_pairs": 0.0, "test_apply_rope_halves": 0.0}

# A student cell run before rope_thetas' definition: reads what grading must hide, writes where it must not.
SNOOP = '''import os
_seen = []
for _p in [{solution!r}, {config!r}, {source!r}]:
    try:
        _seen.append((_p, os.listdir(_p) if os.path.isdir(_p) else open(_p).read()))
    except Exception:
        pass
for _p, _text in [({results!r}, '{{"score": 1000, "output": "forged"}}'), ({marker!r}, "pwned")]:
    try:
        open(_p, "w").write(_text)
        _seen.append(("wrote", _p))
    except Exception:
        pass
print("snoop:", _seen if _seen else "nothing readable or writable")

'''




def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradescope-zip")
    start = time.monotonic()
    path = gradescope.build("rope", out)
    seconds = time.monotonic() - start
    print(f"\nautograder.zip: {path.stat().st_size / 1024:.0f} KiB, built in {seconds:.2f} s")
    return path


def _root(base: Path, zip_path: Path) -> Path:
    """A fresh /autograder: source/ (the zip, unzipped), submission/, results/."""
    root = base
    (root / "submission").mkdir(parents=True)
    (root / "results").mkdir()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    return root


def _run(root: Path, python: str = sys.executable, sandbox: str = "auto") -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADESCOPE_ROOT": str(root), "GRADESCOPE_PYTHON": python, "GRADESCOPE_SANDBOX": sandbox}
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=str(root), env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    """{case: (results.json as a dict, its text, run_autograder's output, root, submission unchanged)}."""
    from autograder.sandbox.kernel import tier_problem
    release, solution = subs.load("rope", "rope")
    complete = subs.fill(release, solution)
    # The hostile case as in Gradescope's container: as root, in the uid tier, under a root folder that
    # every uid may enter (pytest's own temporary folders are 0700: they would stop the kernel anyway).
    why_not_uid = tier_problem("uid")
    if why_not_uid:
        print(f"\nWARNING: the uid tier is unavailable here ({why_not_uid}): the hostile case runs with --sandbox auto")
    open_root = Path(tempfile.mkdtemp(prefix="gs-hostile-"))
    open_root.chmod(0o755)
    cases = {}
    for case in ("complete", "partial", "broken", "missing", "hostile"):
        base = open_root / "autograder" if case == "hostile" else tmp_path_factory.mktemp(f"gs-{case}")
        root = _root(base, built)
        sub = root / "submission"
        if case == "complete":
            shutil.copy(REPO / "autograder" / "samples" / "rope" / "alice" / "rope.ipynb", sub / "rope.ipynb")
        elif case == "partial":                      # another name, in a subfolder: the only notebook uploaded
            (sub / "hw4").mkdir()
            shutil.copy(REPO / "autograder" / "samples" / "rope" / "bob" / "rope.ipynb", sub / "hw4" / "Bob RoPE (1).ipynb")
            (root / "submission_metadata.json").write_text(json.dumps(
                {"id": 77, "users": [{"id": 123456, "email": "bob@example.edu", "name": "Bob"}]}))
        elif case == "broken":
            (sub / "rope.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
        elif case == "hostile":
            snoop = SNOOP.format(solution=str(root / "source" / "solutions" / "rope" / "rope.ipynb"),
                                 config=str(root / "source" / "gradescope.json"), source=str(root / "source"),
                                 results=str(root / "results" / "results.json"), marker=str(root / "source" / "PWNED"))
            subs.write(subs.edit(complete, "rope_thetas", lambda s: snoop + s), sub / "rope.ipynb")
        before = _digest(sub)
        start = time.monotonic()
        proc = _run(root, sandbox="uid" if case == "hostile" and not why_not_uid else "auto")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        print(f"\n{case}: run_autograder took {time.monotonic() - start:.1f} s")
        text = (root / "results" / "results.json").read_text()
        cases[case] = (json.loads(text), text, proc.stdout + proc.stderr, root, _digest(sub) == before)
    yield cases
    shutil.rmtree(open_root, ignore_errors=True)


CASES = ["complete", "partial", "broken", "missing", "hostile"]


@pytest.mark.parametrize("case", CASES)
def test_results_follow_gradescopes_specification(graded, case):
    results, _, output, root, unchanged = graded[case]
    jsonschema.validate(results, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert unchanged, "grading modified the uploaded files"
    assert results["stdout_visibility"] == "hidden"
    assert results["execution_time"] >= 0
    assert results["output"] and "\n" not in results["output"]
    if case != "missing":       # the zip's own grader graded it, not this checkout's
        assert f"course at {root / 'source'}" in output, output[-3000:]


@pytest.mark.parametrize("case", CASES)
def test_results_never_show_hidden_tests(graded, case, rope_hidden_lines):
    _, text, _, _, _ = graded[case]
    shown = [line for line in rope_hidden_lines if line in text or json.dumps(line)[1:-1] in text]
    assert not shown, f"{case}: results.json shows hidden-test lines: {shown}"
    assert "HIDDEN TESTS" not in text


def _cells(results) -> dict[str, dict]:
    return {t["name"].split(": ", 1)[1].split(",")[0]: t for t in results["tests"] if "max_score" in t}


def test_complete_submission_gets_full_marks(graded):
    results = graded["complete"][0]
    assert results["score"] == TOTAL
    cells = _cells(results)
    assert set(cells) == set(POINTS)
    assert all(t["status"] == "passed" and t["score"] == t["max_score"] == POINTS[g] for g, t in cells.items())
    assert all(t["visibility"] == "after_published" for t in cells.values())
    assert results["visibility"] == "after_published"


def test_partial_submission_scores_as_the_grader_does(graded):
    results, _, output, _, _ = graded["partial"]
    cells = _cells(results)
    assert {g: t["score"] for g, t in cells.items()} == BOB
    assert results["score"] == sum(BOB.values())
    assert cells["test_apply_rope_pairs"]["status"] == "failed"
    assert "apply_rope_pairs(x, positions)[t] should equal" in cells["test_apply_rope_pairs"]["output"]
    assert "NotImplementedError" in cells["test_apply_rope_halves"]["output"]
    assert "rope_thetas" in next(t["name"] for t in results["tests"] if "test_rope_thetas" in t["name"])
    receipt = next(t for t in results["tests"] if t["name"] == "rope.ipynb: submission received")
    assert receipt["status"] == "passed" and receipt["visibility"] == "visible"
    assert "hw4/Bob RoPE (1).ipynb" in receipt["output"]
    assert "for 123456" in output                      # the student id from submission_metadata.json
    assert str(sum(BOB.values())) not in results["output"]   # the score waits for publication
    feedback = next(t for t in results["tests"] if t["name"] == "rope.ipynb: your graded notebook")
    assert feedback["output_format"] == "html" and feedback["visibility"] == "after_published"
    assert "5 / 10 points" in feedback["output"] and "Grader&#x27;s verdict" in feedback["output"]
    assert "Greatest absolute difference" in feedback["output"]   # the visible test's failure, as printed


def test_unreadable_notebook_is_reported_with_zero(graded):
    results = graded["broken"][0]
    assert results["score"] == 0
    receipt = next(t for t in results["tests"] if t["name"] == "rope.ipynb: submission received")
    assert receipt["status"] == "failed" and "not a readable notebook" in receipt["output"]
    assert "not a readable notebook" in results["output"]
    assert all(t["score"] == 0 for t in _cells(results).values())


def test_empty_submission_is_reported_with_zero(graded):
    results = graded["missing"][0]
    assert results["score"] == 0
    assert results["output"].startswith("No notebook in your submission: upload rope.ipynb")
    assert set(_cells(results)) == set(POINTS) and all(t["score"] == 0 for t in _cells(results).values())


def test_hostile_submission_reads_and_writes_nothing(graded):
    results, text, output, root, _ = graded["hostile"]
    from autograder.sandbox.kernel import tier_problem
    if tier_problem("uid") is None:
        assert "sandbox: uid tier" in output, output[-3000:]
    assert results["score"] == TOTAL                   # what the answers earn, not the forged 1000
    assert "forged" not in text
    assert "snoop: nothing readable or writable" in text, text[-3000:]
    assert not (root / "source" / "PWNED").exists()


def test_crash_anywhere_still_writes_results(built, tmp_path, monkeypatch):
    """No Python at all (run_autograder's own fallback), and the grader raising (run's)."""
    root = _root(tmp_path / "no-python", built)
    proc = _run(root, python=str(tmp_path / "no-such-python"))
    assert proc.returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert results["score"] == 0 and "could not run" in results["output"]

    root = _root(tmp_path / "crash", built)
    shutil.copy(REPO / "autograder" / "samples" / "rope" / "alice" / "rope.ipynb", root / "submission" / "rope.ipynb")
    import autograder.outputs.grade

    def boom(*args, **kwargs):
        raise RuntimeError("the grader fell over")
    monkeypatch.setattr(autograder.outputs.grade, "grade", boom)
    monkeypatch.setattr(gradescope, "REPO", root / "source")
    assert gradescope.run(root) == 0
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert results["score"] == 0 and "RuntimeError: the grader fell over" in results["output"]


def test_zip_holds_only_what_grading_this_assignment_needs(built, tmp_path):
    with zipfile.ZipFile(built) as zf:
        names = zf.namelist()
        infos = {i.filename: i for i in zf.infolist()}
        config = json.loads(zf.read("gradescope.json"))
        reqs = zf.read("requirements.txt").decode()
        timings = json.loads(zf.read("timings.json"))
    assert names == sorted(names) and len(names) == len(set(names))
    assert {"setup.sh", "run_autograder", "requirements.txt", "gradescope.json", "nbgrader_config.py",
            "schedule.toml", "pyproject.toml", "solutions/rope/rope.ipynb", "autograder/outputs/gradescope.py",
            "autograder/outputs/grade.py", "course_lib/grading.py"} <= set(names)
    others = [a for a in assignments() if a != "rope"]
    assert others
    assert all(n.startswith("solutions/rope/") for n in names if n.startswith("solutions/")), names
    assert not [n for n in names if any(f"/{a}.ipynb" in n for a in others)]
    assert not [n for n in names if n.startswith(("notebooks/", "tests/", "autograder/samples/", "."))]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db")) or ("gradebook" in n and n != "autograder/outputs/gradebook.py")]
    assert set(timings) == {"rope"}
    assert config["assignment"] == "rope" and config["visibility"] == "after_published"
    assert config["notebooks"] == ["rope"] and config["max_score"] == TOTAL
    try:
        import tomllib
    except ImportError:                                       # Python 3.10
        import tomli as tomllib
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    # every pin but the browser driver of the course's own tests and JupyterHub (grading starts neither)
    assert [line for line in reqs.splitlines() if line and not line.startswith("#")] == [
        p for p in pins if not p.startswith(("playwright", "jupyterhub"))]
    assert any(p.startswith("playwright") for p in pins)
    for name in ("setup.sh", "run_autograder"):
        assert (infos[name].external_attr >> 16) & 0o777 == 0o755, name
    assert all(i.date_time == gradescope.ZIP_TIME for i in infos.values())
    again = gradescope.build("rope", tmp_path / "again")
    assert again.read_bytes() == built.read_bytes(), "the same sources gave another zip"
    with pytest.raises(Exception, match="visibility"):
        gradescope.build("rope", tmp_path / "bad", visibility="sometimes")


@pytest.mark.parametrize("name", ["setup.sh", "run_autograder"])
def test_scripts_pass_bash_and_shellcheck(built, tmp_path, name):
    with zipfile.ZipFile(built) as zf:
        script = tmp_path / name
        script.write_bytes(zf.read(name))
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("SKIPPED: shellcheck is not installed (Debian/Ubuntu: apt-get install shellcheck): "
                    f"{name} was only checked with bash -n")
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_command_line_builds_the_zip(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autograder.outputs.gradescope", "build", "rope", "--out", str(tmp_path),
                           "--visibility", "visible"], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "autograder.zip" in proc.stdout
    with zipfile.ZipFile(tmp_path / "autograder.zip") as zf:
        assert json.loads(zf.read("gradescope.json"))["visibility"] == "visible"
    proc = subprocess.run([sys.executable, "-m", "autograder.outputs.gradescope", "build", "no_such", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert proc.returncode == 2 and "unknown assignment" in proc.stderr


def test_uploaded_notebooks_are_matched_by_name_else_alone(tmp_path):
    sub = tmp_path / "submission"
    (sub / "a" / "b").mkdir(parents=True)
    (sub / "a" / "b" / "rope.ipynb").write_text("{}")
    (sub / "a" / "rope.ipynb").write_text("{}")
    (sub / "scratch.ipynb").write_text("{}")
    (sub / ".ipynb_checkpoints").mkdir()
    (sub / ".ipynb_checkpoints" / "rope-checkpoint.ipynb").write_text("{}")
    (sub / "link.ipynb").symlink_to(REPO / "solutions" / "rope" / "rope.ipynb")   # never followed
    uploaded, names = gradescope._uploaded(sub)
    assert [p.relative_to(sub).as_posix() for p in uploaded] == ["scratch.ipynb", "a/rope.ipynb", "a/b/rope.ipynb"]
    chosen, notes = gradescope.match(["rope"], uploaded, sub)
    assert chosen == {"rope": sub / "a" / "rope.ipynb"}               # the exact name, the shallowest
    assert any("several files named rope.ipynb" in n for n in notes) and any("not graded" in n for n in notes)
    chosen, _ = gradescope.match(["rope"], [sub / "scratch.ipynb"], sub)
    assert chosen == {"rope": sub / "scratch.ipynb"}                  # one expected, one uploaded
    assert gradescope.match(["rope"], [sub / "scratch.ipynb", sub / "x.ipynb"], sub)[0] == {}
    assert gradescope.match(["nb1", "nb2"], [sub / "scratch.ipynb"], sub)[0] == {}


def test_student_id_comes_from_gradescopes_metadata(tmp_path):
    assert gradescope.student_id(tmp_path) == "student"
    (tmp_path / "submission_metadata.json").write_text(json.dumps({"users": [{"id": 9876, "email": "a@b.c"}]}))
    assert gradescope.student_id(tmp_path) == "9876"
    (tmp_path / "submission_metadata.json").write_text(json.dumps({"users": [{"email": "../.evil@b.c"}]}))
    assert gradescope.student_id(tmp_path) == "evil"
    (tmp_path / "submission_metadata.json").write_text("not json")
    assert gradescope.student_id(tmp_path) == "student"
