"""The release schedule (schedule.toml): dependencies found in the code, bad schedules refused in one line,
bundles cut by date, due dates in nbgrader's gradebook."""
import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.course import dependencies

from autograder.course import schedule as sched
from autograder.course.source import REPO, UsageError
from autograder.course.nbgrader import generate

pytestmark = pytest.mark.autograder

NY = "America/New_York"


def _toml(rows: list[tuple[str, str, str]], tz: str = NY) -> str:
    text = f'timezone = "{tz}"\n'
    for name, release, due in rows:
        text += f'\n[[assignment]]\nname = "{name}"\nrelease = {release}\ndue = {due}\n'
    return text


def _weekly(order: list[str]) -> list[tuple[str, str, str]]:
    start = dt.date(2027, 1, 11)
    return [(name, f"{start + dt.timedelta(weeks=i)}T09:00:00", f"{start + dt.timedelta(weeks=i, days=6)}T23:59:00")
            for i, name in enumerate(order)]


@pytest.fixture
def course(tmp_path):
    """A course folder of our own: this repository's solutions, config and release, its own schedule."""
    root = tmp_path / "course"
    root.mkdir()
    for name in ("solutions", "notebooks"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    return root


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# ---------------------------------------------------------------------------------------------- the code
def test_dependencies_found_in_the_code_are_the_ones_the_notebooks_show():
    """The facts of the notebooks (issue 10): kv_cache's decoder runs on RoPE's apply_rope_pairs; the
    capstone's model on RoPE and GQA's references, its cache on kv_cache's KVCache and the rolling buffer
    of sliding_window; nothing else calls another assignment's reference."""
    needs = {user: set(used) for user, used in dependencies.dependencies().items()}
    builds = {user: set(used) for user, used in dependencies.builds_on().items()}
    assert needs["kv_cache"] == {"rope"}
    assert needs["capstone"] == {"rope", "gqa"}
    assert {"rope", "gqa", "kv_cache", "sliding_window"} <= builds["capstone"]
    assert all(not used for user, used in needs.items() if user not in ("kv_cache", "capstone"))
    use = dependencies.dependencies()["kv_cache"]["rope"]
    assert use.exercise_function == "course_lib.attention.rope.apply_rope_pairs"
    assert "kv_cache notebook" in use.describe()


def test_a_notebook_reaches_what_its_imports_call_through_classes_and_defaults():
    """The reference graph on small cases with a known answer: a default argument, a class's methods,
    a module attribute, and a chain through the capstone's model."""
    assert ("course_lib.attention.rope", "apply_rope_pairs") in dependencies.edges(
        ("course_lib.attention.kv_cache", "TinyDecoder"))                     # rope=apply_rope_pairs default
    reached = dependencies.reached("capstone")
    assert ("course_lib.attention.gqa", "grouped_query_attention") in reached
    assert ("course_lib.attention.kv_cache", "KVCache") in reached
    assert ("course_lib.attention.rope", "apply_rope_pairs") in reached
    assert not any(module.startswith(("course_lib.grading", "course_lib.exercises")) for module, _ in reached)
    assert ("course_lib.attention.rope", "apply_rope_pairs") not in dependencies.reached("gqa")


# ---------------------------------------------------------------------------------------------- refusals
def _refusal(course: Path, text: str) -> str:
    (course / "schedule.toml").write_text(text)
    with pytest.raises(UsageError) as info:
        sched.checked(course)
    message = str(info.value)
    assert "\n" not in message
    return message


COURSE_ORDER = ["pretraining", "rope", "kv_cache", "gqa", "sliding_window", "convolution", "cnn_layers", "lenet",
                "capstone"]


def test_the_course_schedule_is_accepted(course):
    (course / "schedule.toml").write_text(_toml(_weekly(COURSE_ORDER)))
    assert sched.checked(course).names == COURSE_ORDER
    assert sched.checked(REPO).names == COURSE_ORDER            # the repository's own


def test_capstone_before_gqa_is_refused(course):
    order = [n for n in COURSE_ORDER if n != "gqa"] + ["gqa"]
    message = _refusal(course, _toml(_weekly(order)))
    assert "capstone" in message and "gqa" in message


def test_capstone_before_kv_cache_is_refused(course):
    """The capstone's cache is kv_cache's KVCache: released after it, not only after its references."""
    order = [n for n in COURSE_ORDER if n not in ("kv_cache", "capstone")] + ["capstone", "kv_cache"]
    message = _refusal(course, _toml(_weekly(order)))
    assert "capstone" in message and "kv_cache" in message and "builds on" in message


def test_kv_cache_released_before_rope_is_due_is_refused(course):
    rows = _weekly(COURSE_ORDER)
    rows[2] = ("kv_cache", "2027-01-24T09:00:00", "2027-01-31T23:59:00")    # rope is due 2027-01-24 23:59
    message = _refusal(course, _toml(rows))
    assert "kv_cache" in message and "rope" in message and "due" in message and "apply_rope_pairs" in message


@pytest.mark.parametrize("change,words", [
    (lambda rows: rows[:-1], ["no release and due date", "capstone"]),
    (lambda rows: rows + [("nope", "2027-06-01", "2027-06-08")], ["unknown assignment", "nope"]),
    (lambda rows: rows + [rows[0]], ["listed twice", "pretraining"]),
    (lambda rows: [rows[1], rows[0]] + rows[2:], ["release order", "pretraining"]),
    (lambda rows: [("pretraining", "2027-01-11", "2027-01-10")] + rows[1:], ["due", "before it is released"]),
    (lambda rows: [("pretraining", '"next monday"', "2027-01-10")] + rows[1:], ["not a date", "next monday"]),
])
def test_malformed_schedules_are_refused_in_one_line(course, change, words):
    message = _refusal(course, _toml(change(_weekly(COURSE_ORDER))))
    assert all(w in message for w in words), message


def test_invalid_toml_and_unknown_timezone_are_refused(course):
    assert "not valid TOML" in _refusal(course, "[[assignment]\nname = ")
    assert "unknown timezone" in _refusal(course, _toml(_weekly(COURSE_ORDER), tz="Mars/Olympus"))


def test_the_cli_refuses_a_bad_schedule_and_writes_no_bundle(course, tmp_path):
    order = [n for n in COURSE_ORDER if n != "gqa"] + ["gqa"]
    (course / "schedule.toml").write_text(_toml(_weekly(order)))
    out = tmp_path / "bundle"
    for args in (["schedule"], ["release", "capstone", "--bundle", str(out)]):
        proc = _cli("--course", str(course), *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("autograder: error: schedule.toml:") and "gqa" in lines[0]
    assert not out.exists()


def test_the_cli_prints_the_schedule_with_its_dependencies():
    proc = _cli("schedule")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("kv_cache "))
    assert "rope" in row and "2027-01-25 09:00" in row
    assert "kv_cache needs rope: the kv_cache notebook -> course_lib.attention.rope.apply_rope_pairs" in proc.stdout


# ---------------------------------------------------------------------------------------------- cuts
def test_cuts_by_date(course):
    (course / "schedule.toml").write_text(_toml(_weekly(COURSE_ORDER)))
    s = sched.load(course)
    tz = s.timezone
    # just after kv_cache's release: pretraining and rope are due (public), kv_cache and later are not
    c = sched.cut(course, as_of=dt.datetime(2027, 1, 25, 9, 0, tzinfo=tz))
    assert c.released == ("pretraining", "rope", "kv_cache")
    assert c.stripped == tuple(COURSE_ORDER[2:])
    assert sched.cut(course, assignment="kv_cache") == c
    # one minute before rope is due, rope's exercises are still secret
    assert "rope" in sched.cut(course, as_of=dt.datetime(2027, 1, 24, 23, 58, tzinfo=tz)).stripped
    assert sched.parse_as_of("2027-01-25", s) == dt.datetime(2027, 1, 25, 0, 0, tzinfo=tz)
    # after the last deadline nothing is secret
    assert sched.cut(course, as_of=dt.datetime(2027, 6, 1, tzinfo=tz)).stripped == ()
    with pytest.raises(UsageError, match="nothing is released as of"):
        sched.cut(course, as_of=dt.datetime(2026, 12, 1, tzinfo=tz))


def test_grading_imports_the_bundle_its_students_had():
    c = sched.cut_for_grading("kv_cache")
    assert "kv_cache" in c.stripped and "rope" not in c.stripped and "capstone" in c.stripped
    assert sched.cut_for_grading("capstone").stripped == ("capstone",)


def test_without_a_schedule_bundles_strip_everything_and_grading_its_own(course):
    assert sched.cut(course, assignment="rope").stripped == tuple(sorted(COURSE_ORDER))
    assert sched.cut_for_grading("kv_cache", course).stripped == ("kv_cache",)


def test_bundle_as_of_a_date(tmp_path):
    """(In this process: the CLI's `release --bundle` regenerates notebooks/ first, which other test
    workers read.)"""
    from autograder.release.bundle import build_bundle

    s = sched.load(REPO)
    out = build_bundle(tmp_path / "b", as_of=sched.parse_as_of("2027-02-02", s))
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == ["gqa", "kv_cache", "pretraining", "rope"]
    rope = (out / "course_lib" / "attention" / "rope.py").read_text()
    gqa = (out / "course_lib" / "attention" / "gqa.py").read_text()
    assert "not part of the student's course_lib" not in rope.split("def apply_rope_pairs")[1].split("\ndef ")[0]
    assert "not part of the student's course_lib" in gqa.split("def repeat_kv(")[1].split("\ndef ")[0]
    assert "as of 2027-02-02 00:00" in (out / "README.md").read_text()


def test_bad_as_of_is_refused_before_anything_is_written(tmp_path):
    bad = _cli("release", "--bundle", str(tmp_path / "c"), "--as-of", "soon")
    assert bad.returncode == 2 and "not a date" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------- nbgrader
def test_due_dates_reach_nbgrader_gradebook(tmp_path):
    from nbgrader.api import Gradebook

    generate("rope", tmp_path / "root")
    with Gradebook(f"sqlite:///{tmp_path / 'root' / 'gradebook.db'}") as gb:
        due = gb.find_assignment("rope").duedate
    # 2027-01-24 23:59 in New York (EST, UTC-5) is 2027-01-25 04:59 UTC, stored naive as nbgrader does
    assert due == dt.datetime(2027, 1, 25, 4, 59)
