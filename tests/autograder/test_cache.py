"""Incremental grading (autograder.batch.cache): a rerun grades only the submissions that changed and reuses
the others' rows, feedback and gradebook entries; --force regrades everyone; any change to what grading
depends on (solutions, course_lib, options) invalidates every entry."""
import csv
import shutil
from pathlib import Path

import pytest

from autograder.batch import cache
from autograder.grading.records import StudentResult
from autograder.intake import samples as subs
from autograder.course.source import REPO
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder


def _rows(out):
    with open(out / "details.csv") as f:
        return sorted((r["student"], r["grade_id"], r["score"], r["status"]) for r in csv.DictReader(f))


def test_a_rerun_grades_only_what_changed(tmp_path, capsys):
    release, solution = subs.load("rope", "rope")
    dirs, out = tmp_path / "submissions", tmp_path / "out"
    subs.write(subs.fill(release, solution), dirs / "complete" / "rope.ipynb")
    subs.write(release, dirs / "blank" / "rope.ipynb")
    options = dict(workers=2, quiet=True, sandbox="off", submission_timeout=300)

    first = grade("rope", dirs, out, **options)
    assert not any(r.get("cached") for r in first)
    before = _rows(out)
    complete_page = (out / "feedback" / "complete" / "rope" / "rope.html").read_text()

    subs.write(subs.fill(release, solution, only={"rope_thetas"}), dirs / "blank" / "rope.ipynb")   # resubmitted
    capsys.readouterr()
    second = {r["student"]: r for r in grade("rope", dirs, out, **options)}
    assert second["complete"].get("cached") and not second["blank"].get("cached")
    assert "reused 1 of 2 submissions" in capsys.readouterr().out
    after = _rows(out)
    assert [r for r in after if r[0] == "complete"] == [r for r in before if r[0] == "complete"]
    assert second["blank"]["score"] > first[0 if first[0]["student"] == "blank" else 1]["score"]
    assert (out / "feedback" / "complete" / "rope" / "rope.html").read_text() == complete_page
    assert (out / "logs" / "complete.log").exists()
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:      # the reused student is in the gradebook
        assert gb.find_submission("rope", "complete").score == second["complete"]["score"]

    shutil.rmtree(dirs / "blank")                                    # left the class: forgotten
    third = grade("rope", dirs, out, force=True, **options)             # unchanged, but --force
    assert [r["student"] for r in third] == ["complete"] and not third[0].get("cached")
    assert _rows(out) == [r for r in after if r[0] == "complete"]
    assert not (out / cache.DIR / "blank").exists()


@pytest.fixture
def course(tmp_path):
    repo = tmp_path / "course"
    for name in ("solutions", "course_lib"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("nbgrader_config.py", "schedule.toml", "timings.json"):
        shutil.copy(REPO / name, repo / name)
    return repo


OPTIONS = dict(cell_timeout=60, budget=600, tier="bwrap", memory_mb=6144, max_pids=256, run_illustrative=False)


@pytest.mark.parametrize("change", ["solution notebook", "shipped file", "course_lib", "config", "timings", "options"])
def test_the_fingerprint_sees_every_input(course, change):
    before = cache.fingerprint("rope", course, OPTIONS)
    assert cache.fingerprint("rope", course, dict(OPTIONS)) == before
    options = OPTIONS
    if change == "solution notebook":
        path = course / "solutions" / "rope" / "rope.ipynb"
        path.write_text(path.read_text().replace("RoPE", "RoPE ", 1))
    elif change == "shipped file":
        (course / "solutions" / "rope" / "data.txt").write_text("1 2 3")
    elif change == "course_lib":
        path = course / "course_lib" / "attention" / "rope.py"
        path.write_text(path.read_text() + "\n# changed\n")
    elif change == "config":
        (course / "nbgrader_config.py").write_text((course / "nbgrader_config.py").read_text() + "\n")
    elif change == "timings":
        (course / "timings.json").write_text((course / "timings.json").read_text().replace('"rope": {', '"rope": {"factor": 3, ', 1))
    else:
        options = dict(OPTIONS, memory_mb=1024)
    assert cache.fingerprint("rope", course, options) != before
    assert cache.fingerprint("gqa", course, OPTIONS) != before       # and it is per assignment


def test_a_stale_or_broken_entry_is_never_reused(tmp_path):
    sub = tmp_path / "alice"
    sub.mkdir()
    (sub / "rope.ipynb").write_text("{}")
    key = cache.submission_key(sub, ["rope"])
    feedback = tmp_path / "fb"
    feedback.mkdir()
    cache.store(tmp_path / "out", "alice", "fp1", key, StudentResult("alice", [], root="/tmp/x"), {"feedback": feedback})
    assert cache.lookup(tmp_path / "out", "alice", "fp1", key) == StudentResult("alice", [])   # no scratch path kept
    assert cache.lookup(tmp_path / "out", "alice", "fp2", key) is None
    (sub / "rope.ipynb").write_text("{ }")
    assert cache.lookup(tmp_path / "out", "alice", "fp1", cache.submission_key(sub, ["rope"])) is None
    (tmp_path / "out" / cache.DIR / "alice" / "entry.json").write_text("{truncated")
    assert cache.lookup(tmp_path / "out", "alice", "fp1", key) is None


def test_a_generated_template_is_reused_only_for_the_same_sources(course, tmp_path, monkeypatch):
    from autograder.course.nbgrader import generate
    monkeypatch.setenv("COURSE_TEMPLATE_CACHE", str(tmp_path / "templates"))
    first = generate("rope", tmp_path / "a", course)
    kept = list((tmp_path / "templates").iterdir())
    second = generate("rope", tmp_path / "b", course)                       # from the cache
    assert len(kept) == 1 and list((tmp_path / "templates").iterdir()) == kept
    assert (second / "rope.ipynb").read_bytes() == (first / "rope.ipynb").read_bytes()
    assert (tmp_path / "b" / "gradebook.db").read_bytes() == (tmp_path / "a" / "gradebook.db").read_bytes()
    assert (tmp_path / "b" / "solutions" / "rope" / "rope.ipynb").exists()
    path = course / "solutions" / "rope" / "rope.ipynb"
    path.write_text(path.read_text().replace("RoPE", "RoPE ", 1))
    generate("rope", tmp_path / "c", course)
    assert len(list((tmp_path / "templates").iterdir())) == 2              # a new source, a new template


def test_the_graded_kernels_course_lib_is_reused_only_for_the_same_sources(course, tmp_path):
    from autograder.release.bundle import strip_course_lib

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.py"))}

    fresh = files(strip_course_lib(tmp_path / "fresh", ["rope"], course))            # no cache: the oracle
    built = tmp_path / "built"
    assert files(strip_course_lib(tmp_path / "a", ["rope"], course, cache=built)) == fresh
    kept = sorted(p.name for p in built.iterdir())
    assert files(strip_course_lib(tmp_path / "b", ["rope"], course, cache=built)) == fresh   # from the cache
    assert sorted(p.name for p in built.iterdir()) == kept and len(kept) == 1
    assert "NotImplementedError" in (tmp_path / "b" / "course_lib" / "attention" / "rope.py").read_text()
    other = files(strip_course_lib(tmp_path / "c", ["rope", "gqa"], course, cache=built))   # another cut
    assert other != fresh and other == files(strip_course_lib(tmp_path / "d", ["rope", "gqa"], course))
    path = course / "course_lib" / "attention" / "rope.py"
    path.write_text(path.read_text() + "\n# changed\n")                                   # a changed source
    changed = files(strip_course_lib(tmp_path / "e", ["rope"], course, cache=built))
    assert changed[Path("attention/rope.py")].endswith(b"# changed\n")
    assert len(list(built.iterdir())) == 1                                                # one copy kept
