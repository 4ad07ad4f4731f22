"""Hostile and broken submissions, graded in the sandbox: one fixture per failure mode (in the style of
nbgrader's own tests), all graded in one run. Each is graded as far as it goes, nothing leaks, the run
ends in bounded time, and no submitted file is modified.

Skipped, loudly, where the sandbox cannot run (no bubblewrap, or no namespaces): see README."""
import copy
import csv
import hashlib
import html
import re
import time
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox
from autograder import submissions as subs
from autograder.course import REPO, graded_cells
from autograder.grade import grade

REASON = sandbox.check()
pytestmark = [pytest.mark.autograder,
              pytest.mark.skipif(REASON is not None, reason=f"SANDBOX UNAVAILABLE, sandbox tests skipped: {REASON}")]

CELLS = graded_cells("rope")
TOTAL = sum(c.max_score for c in CELLS)
POINTS = {c.grade_id: c.max_score for c in CELLS}
BUDGET = 30          # seconds per submission
CELL_TIMEOUT = 60    # longer than the budget: the budget is what stops an endless cell


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _insert_after(nb, grade_id: str, *sources: str):
    nb = copy.deepcopy(nb)
    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    nb.cells[i + 1:i + 1] = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def _first_code_index(nb) -> int:
    return next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")


def _prepend(nb, source: str):
    """A student cell right after the notebook's setup cell."""
    nb = copy.deepcopy(nb)
    nb.cells.insert(_first_code_index(nb) + 1, nbformat.v4.new_code_cell(source))
    return nb


TAMPER = r'''
import math, numpy.testing, torch, torch.testing
from course_lib import grading
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
numpy.testing.assert_allclose = lambda *a, **k: None
math.isclose = lambda *a, **k: True
grading.check = lambda name, fn, **k: print(f"{name}: 9 cases passed on cpu")
grading.verify = lambda *a, **k: grading.Verdict("x", True, "passed")
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
'''

FORGE = r'''
import os, torch
os.makedirs(os.path.expanduser("~/.grading"), exist_ok=True)
for name in ["rope_thetas", "rope_matrix", "apply_rope_pairs", "apply_rope_halves"]:
    torch.save({"exercise": name, "devices": ["cpu"], "cases": [
        {"device": "cpu", "case": i, "output": {"tensor": torch.zeros(1), "device": "cpu"}, "error": None,
         "modified": None, "forbidden": []} for i in range(20)]},
        os.path.expanduser(f"~/.grading/{name}.pt"))
    os.chmod(os.path.expanduser(f"~/.grading/{name}.pt"), 0o444)
'''

SNOOP = r'''
import glob, os, socket
leaks = []
for path in [{solutions!r}, {gradebook!r}, {repo!r} + "/course_lib/attention/rope.py", "/tmp/pytest-of-root"]:
    try:
        found = os.listdir(path) if os.path.isdir(path) else open(path, "rb").read(64)
        if found:
            leaks.append(("read", path))
    except Exception:
        pass
try:   # the course folder shows at most the virtual environment (bound read-only for Python itself)
    if set(os.listdir({repo!r})) - {{".venv"}}:
        leaks.append(("list", {repo!r}))
except Exception:
    pass
leaks += [("other grading folders", p) for p in glob.glob("/tmp/grade-*") + glob.glob("/tmp/*/students")]
for path in [{repo!r} + "/pwned.txt", "/tmp/../pwned.txt", "/usr/pwned.txt"]:
    try:
        open(path, "w").write("pwned")
        if not path.startswith("/tmp"):
            leaks.append(("write", path))
    except Exception:
        pass
for host in [("127.0.0.1", 22), ("pypi.org", 443), ("8.8.8.8", 53)]:
    try:
        socket.create_connection(host, timeout=2).close()
        leaks.append(("socket", host))
    except Exception:
        pass
print("LEAKS:", leaks)
'''


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    dirs = root / "submissions"
    release, solution = subs.load("rope", "rope")
    complete = subs.fill(release, solution)

    def changed_type(nb):
        nb = copy.deepcopy(nb)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_rope_thetas")
        cell.cell_type = "markdown"
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
        return nb

    def duplicated(nb):
        nb = copy.deepcopy(nb)
        i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "test_rope_matrix")
        nb.cells.insert(i + 1, copy.deepcopy(nb.cells[i]))
        del nb.cells[i + 1]["id"]
        return nb

    cases = {
        "cell_type_changed": changed_type(complete),
        "duplicate_grade_ids": duplicated(complete),
        "grade_cell_changed": subs.edit(complete, "test_apply_rope_pairs", lambda s: "pass  # trust me"),
        "deleted_cells": _delete_all(complete, [c.grade_id for c in CELLS]),
        "extra_cells": _insert_after(complete, "test_rope_matrix", "x = 1", "print('my own experiment')"),
        "huge_output": _insert_after(complete, "test_rope_thetas", "print(('x' * 999 + '\\n') * 40000)"),
        "memory_hog": _insert_after(complete, "test_rope_matrix",
                                    "hog = bytearray(8 * 2**30)\nhog[::4096] = b'1' * len(hog[::4096])"),
        "fork_loop": _prepend(complete, (
            "import os, time\nchildren = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(300)\n            os._exit(0)\n        children += 1\n"
            "except OSError as e:\n    print('fork stopped after', children, e)\n")),
        "snoops_outside": _prepend(complete, SNOOP.format(repo=str(REPO), solutions=str(REPO / "solutions"),
                                                           gradebook=str(root / "out" / "gradebook.db"))),
        "endless_cell": _prepend(complete, "while True:\n    pass"),
        "tampers": _prepend(release, TAMPER),
        "forges_records": _prepend(subs.fill(release, solution, only=set()), FORGE),
        "calls_reference": subs.edit(complete, "apply_rope_pairs", lambda s: (
            "from course_lib.attention.rope import apply_rope_pairs as _reference\n\n\n"
            "def apply_rope_pairs(x, positions, base=10000.0):\n    return _reference(x, positions, base)\n")),
    }
    for student, nb in cases.items():
        subs.write(nb, dirs / student / "rope.ipynb")
    (dirs / "invalid_json").mkdir()
    (dirs / "invalid_json" / "rope.ipynb").write_bytes(b"\x00\xffnot json at all")

    before, repo_before = _digest(dirs), _digest(REPO / "solutions" / "rope")
    out = root / "out"
    start = time.monotonic()
    results = grade("rope", dirs, out, workers=2, cell_timeout=CELL_TIMEOUT, submission_timeout=BUDGET,
                    quiet=True, sandbox="on", memory_mb=1536, max_pids=96)
    elapsed = time.monotonic() - start
    rows = {}
    with open(out / "details.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["student"], {})[row["grade_id"]] = row
    yield dict(out=out, rows=rows, results={r["student"]: r for r in results}, elapsed=elapsed, dirs=dirs,
               unchanged=_digest(dirs) == before, repo_unchanged=_digest(REPO / "solutions" / "rope") == repo_before,
               n=len(cases) + 1)


def _delete_all(nb, grade_ids):
    for gid in grade_ids:
        nb = subs.delete(nb, gid)
    return nb


def score(h, student):
    return sum(float(r["score"]) for r in h["rows"][student].values())


def feedback_text(h, student) -> str:
    raw = (h["out"] / "feedback" / student / "rope.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<style.*?</style>", "", raw, flags=re.S)))


def test_run_is_bounded_and_nothing_is_modified(hostile):
    assert hostile["unchanged"], "a submitted file was modified"
    assert hostile["repo_unchanged"], "the course's solutions were modified"
    assert not (REPO / "pwned.txt").exists()
    per_student = max(r["seconds"] for r in hostile["results"].values())
    assert per_student < BUDGET + 90, f"a submission took {per_student:.0f} s with a {BUDGET} s budget"
    assert set(hostile["rows"]) == set(hostile["results"]) and len(hostile["rows"]) == hostile["n"]


@pytest.mark.parametrize("student", ["cell_type_changed", "duplicate_grade_ids", "grade_cell_changed",
                                     "deleted_cells", "extra_cells", "huge_output"])
def test_structural_changes_are_repaired_and_graded(hostile, student):
    """nbgrader puts test cells back (type, source, deleted ones) and drops duplicates: full marks."""
    assert score(hostile, student) == TOTAL, hostile["rows"][student]


def test_huge_output_is_truncated_in_feedback(hostile):
    size = (hostile["out"] / "feedback" / "huge_output" / "rope.html").stat().st_size
    assert size < 5 * 2**20, f"feedback of {size / 2**20:.1f} MiB"


def test_memory_hog_is_killed_and_graded_as_far_as_it_goes(hostile):
    r = hostile["rows"]["memory_hog"]
    assert r["test_rope_thetas"]["status"] == r["test_rope_matrix"]["status"] == "passed"
    for gid in ("test_apply_rope_pairs", "test_apply_rope_halves"):
        assert float(r[gid]["score"]) == 0 and r[gid]["status"] in ("error", "timeout"), r[gid]
        assert "kernel died" in r[gid]["message"], r[gid]


def test_fork_loop_is_capped(hostile):
    assert hostile["results"]["fork_loop"]["seconds"] < BUDGET + 90
    assert set(hostile["rows"]["fork_loop"]) == set(POINTS)


def test_snooping_finds_nothing(hostile):
    text = feedback_text(hostile, "snoops_outside")
    assert "LEAKS: []" in text, re.findall(r"LEAKS:.*", text)
    assert score(hostile, "snoops_outside") == TOTAL


def test_budget_stops_an_endless_notebook(hostile):
    r = hostile["rows"]["endless_cell"]
    assert all(row["status"] == "timeout" and float(row["score"]) == 0 for row in r.values()), r
    assert all("budget" in row["message"] for row in r.values()), r


def test_tampering_gains_nothing(hostile):
    r = hostile["rows"]["tampers"]
    assert score(hostile, "tampers") == 0, r
    r = hostile["rows"]["forges_records"]
    assert score(hostile, "forges_records") == 0, r


def test_calling_the_reference_earns_nothing_and_says_why(hostile):
    r = hostile["rows"]["calls_reference"]
    assert float(r["test_apply_rope_pairs"]["score"]) == 0
    assert "reference implementation" in r["test_apply_rope_pairs"]["message"]
    assert score(hostile, "calls_reference") == TOTAL - POINTS["test_apply_rope_pairs"]
    assert "reference implementation" in feedback_text(hostile, "calls_reference")


def test_invalid_file_is_reported(hostile):
    r = hostile["rows"]["invalid_json"]
    assert all(row["status"] == "error" and "not a readable notebook" in row["message"] for row in r.values())


def test_no_feedback_shows_hidden_tests(hostile):
    for page in (hostile["out"] / "feedback").rglob("*.html"):
        assert "grading.check(" not in page.read_text(), page


def test_one_consistent_gradebook(hostile):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{hostile['out'] / 'gradebook.db'}") as gb:
        for student, by_id in hostile["rows"].items():
            sub = gb.find_submission("rope", student)
            assert abs(sub.score - sum(float(r["score"]) for r in by_id.values())) < 1e-9, student
