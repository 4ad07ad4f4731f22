"""Hostile and broken submissions, graded in the sandbox: one fixture per failure mode (in the style of
nbgrader's own tests), all graded in one run. Each is graded as far as it goes, nothing leaks, the run
ends in bounded time, and no submitted file is modified.

The cases that test isolation (snooping, writing outside, sockets, memory hog, fork loop, endless cell,
tampering, calling the reference) run in every sandbox tier this machine can provide: bubblewrap as root,
bubblewrap as an unprivileged user (created here with `useradd`, the grader run with `runuser`), and the
uid tier forced. Each gets the same verdict in each tier, except the memory hog where memory is capped by
RLIMIT_AS instead of a cgroup (the allocation fails with MemoryError instead of the kernel being killed:
the exercises after it keep their points; README, "Grading you can trust"). After each run nothing is
left: no cgroup, no process, no kernel folder, no ACL entry.

Skipped, loudly, where a tier cannot run (no bubblewrap, no namespaces, not root): see README."""
import copy
import csv
import hashlib
import html
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from autograder.sandbox import limits

from autograder.sandbox import kernel as sandbox
from autograder.intake import samples as subs
from autograder.course.source import REPO, graded_cells
from autograder.outputs.grade import grade

REASON = sandbox.tier_problem("bwrap")
pytestmark = [pytest.mark.autograder]
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"SANDBOX UNAVAILABLE, bwrap tests skipped: {REASON}")

CELLS = [c for c in graded_cells("rope") if c.kind == "test"]      # written answers are graded by hand
TOTAL = sum(c.max_score for c in CELLS)
POINTS = {c.grade_id: c.max_score for c in CELLS}
BUDGET = 45          # seconds per submission (a complete one takes about 12 s alone, 30 with three runs at once)
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
import sys
mine = [os.path.realpath(os.path.expanduser("~")),                      # this kernel's folder and sockets
        os.path.dirname(os.path.realpath(sys.argv[sys.argv.index("-f") + 1]))]
leaks += [("other grading folders", p) for p in glob.glob("/tmp/grade-*") + glob.glob("/tmp/*/students")
          + glob.glob("/tmp/course-grader-*/*") + glob.glob("/tmp/k-*/*")
          + glob.glob("/tmp/course-sandbox-*/*") + glob.glob("/tmp/course-sandbox-*/.grading/*")
          if not any(os.path.realpath(p) == m or os.path.realpath(p).startswith(m + "/") for m in mine)]
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


def _cases(out_gradebook: Path) -> dict:
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

    return {
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
                                                           gradebook=str(out_gradebook))),
        # endless but idle: the budget stops it all the same, without taking a CPU from the rest of the suite
        "endless_cell": _prepend(complete, "import time\nwhile True:\n    time.sleep(0.5)"),
        "tampers": _prepend(release, TAMPER),
        "forges_records": _prepend(subs.fill(release, solution, only=set()), FORGE),
        "calls_reference": subs.edit(complete, "apply_rope_pairs", lambda s: (
            "from course_lib.attention.rope import apply_rope_pairs as _reference\n\n\n"
            "def apply_rope_pairs(x, positions, base=10000.0):\n    return _reference(x, positions, base)\n")),
    }


ISOLATION = ["snoops_outside", "memory_hog", "fork_loop", "endless_cell", "tampers", "calls_reference"]
OPTIONS = dict(workers=2, cell_timeout=CELL_TIMEOUT, submission_timeout=BUDGET, memory_mb=1536, max_pids=96)


def _write_cases(dirs: Path, cases: dict) -> None:
    for student, nb in cases.items():
        subs.write(nb, dirs / student / "rope.ipynb")


def _rows(out: Path) -> dict:
    rows = {}
    with open(out / "details.csv") as f:
        for row in csv.DictReader(f):
            if row["grade_id"] in POINTS:            # the autograded cells (written answers await a person)
                rows.setdefault(row["student"], {})[row["grade_id"]] = row
    return rows


def _grade_here(root: Path, tier: str, names: list[str] | None) -> dict:
    """Grade the cases (all, or ``names``) in this process, in ``tier``."""
    dirs, out = root / "submissions", root / "out"
    cases = _cases(out / "gradebook.db")
    _write_cases(dirs, {k: v for k, v in cases.items() if names is None or k in names})
    if names is None:
        (dirs / "invalid_json").mkdir()
        (dirs / "invalid_json" / "rope.ipynb").write_bytes(b"\x00\xffnot json at all")
    before, repo_before = _digest(dirs), _digest(REPO / "solutions" / "rope")
    start = time.monotonic()
    results = grade("rope", dirs, out, quiet=True, sandbox=tier, **OPTIONS)
    elapsed = time.monotonic() - start
    return dict(out=out, rows=_rows(out), results={r["student"]: r for r in results}, elapsed=elapsed, dirs=dirs,
                unchanged=_digest(dirs) == before, repo_unchanged=_digest(REPO / "solutions" / "rope") == repo_before,
                n=len(list(dirs.iterdir())), run=results[0]["run"], tier=tier,
                memory=limits.plan(gpu=sandbox.gpu_present(), own_uid=tier == "uid").mechanism,
                memory_capped=limits.plan(gpu=sandbox.gpu_present(), own_uid=tier == "uid").caps_memory)


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """Every case, bubblewrap tier, in this process (as root on CI)."""
    if REASON is not None:
        pytest.skip(f"SANDBOX UNAVAILABLE, bwrap tests skipped: {REASON}")
    yield _grade_here(tmp_path_factory.mktemp("hostile"), "bwrap", None)


TEST_USER = "course-test-grader"


def _user_tier_problem() -> str | None:
    if os.geteuid() != 0:
        return "creating an unprivileged user needs root (useradd)"
    for tool in ("useradd", "runuser", "setfacl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return REASON


def _grade_as_user(root: Path) -> dict:
    """The isolation cases graded by an unprivileged user (bubblewrap through user namespaces), with the
    command line, HOME and TMPDIR in a folder of its own: nothing may be written elsewhere."""
    created = False
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                       check=True, capture_output=True)
        created = True
    user = pwd.getpwnam(TEST_USER)
    base = Path(tempfile.mkdtemp(prefix="hostile-user-", dir="/tmp"))
    opened = []                 # (folder on the way to this Python that the user may only enter, had an ACL)
    try:
        for path in sandbox.python_paths() + [str(REPO)]:
            for parent in [Path(path)] + list(Path(path).parents):
                if parent != Path("/") and not os.stat(parent).st_mode & 0o001 and parent not in dict(opened):
                    had = bool(subprocess.run(["getfacl", "-cs", str(parent)], capture_output=True, text=True).stdout)
                    mode = os.stat(parent).st_mode & 0o7777
                    subprocess.run(["setfacl", "-m", f"u:{TEST_USER}:x", str(parent)], check=True)
                    opened.append((parent, (had, mode)))
        dirs, out, home, tmp = base / "submissions", base / "out", base / "home", base / "tmp"
        _write_cases(dirs, {k: v for k, v in _cases(out / "gradebook.db").items() if k in ISOLATION})
        home.mkdir()
        tmp.mkdir()
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(base)], check=True)
        before = _digest(dirs)
        as_user = ["runuser", "-u", TEST_USER, "--", "env", f"HOME={home}", f"TMPDIR={tmp}"]   # runuser resets HOME
        probe = subprocess.run([*as_user, sys.executable, "-m", "autograder.sandbox", "check"],
                               capture_output=True, text=True, cwd=str(REPO))
        if "bwrap tier: works here" not in probe.stdout:
            pytest.skip(f"SANDBOX UNAVAILABLE for an unprivileged user here: {probe.stdout.strip()} {probe.stderr.strip()}")
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
               "WANDB_MODE": "disabled", "NBGRADER_EXECUTION": "ci"}
        start = time.monotonic()
        proc = subprocess.run([*as_user, sys.executable, "-m", "autograder", "grade", "rope",
                               "--submissions", str(dirs), "--out", str(out), "--workers", "2",
                               "--cell-timeout", str(CELL_TIMEOUT), "--submission-timeout", str(BUDGET),
                               "--memory-mb", "1536", "--max-pids", "96", "--sandbox", "bwrap"],
                              capture_output=True, text=True, cwd=str(REPO), env=env, timeout=900)
        elapsed = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr[-3000:]
        for _ in range(40):       # the last kernels' sandboxes are torn down as the grader exits
            left = subprocess.run(["pgrep", "-u", TEST_USER], capture_output=True, text=True).stdout.split()
            if not left:
                break
            time.sleep(0.5)
        shutil.copytree(out, root / "out")
        seconds = {m[1]: dict(seconds=float(m[2])) for m in re.finditer(r"^\s+(\S+): \S+/\S+\s+\(([\d.]+) s\)$",
                                                                      proc.stdout, re.M)}
        return dict(out=root / "out", rows=_rows(out), results=seconds, elapsed=elapsed, dirs=dirs, unchanged=_digest(dirs) == before,
                    repo_unchanged=True, n=len(ISOLATION), tier="bwrap-user",
                    summary=next(line for line in proc.stdout.splitlines() if line.startswith("sandbox:")),
                    home_files=[str(p) for p in home.rglob("*")], processes_left=left,
                    tmp_left=[str(p) for p in tmp.rglob("*")],
                    memory="rlimits" if "RLIMIT_AS" in proc.stdout.split("\n", 1)[0] else "cgroup",
                    memory_capped="memory cap: NO" not in proc.stdout.split("\n", 1)[0])
    finally:
        for parent, _ in reversed(opened):
            # only our entry (setfacl recalculates the mask from the entries left). Neither -b nor a chmod
            # back: -b would wipe the entries a concurrent uid-tier run holds there, and a chmod on a folder
            # with an ACL sets its mask, which would mask that run's entry (its kernels lose their Python)
            subprocess.run(["setfacl", "-x", f"u:{TEST_USER}", str(parent)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        if created:
            subprocess.run(["userdel", TEST_USER], capture_output=True)


@pytest.fixture(scope="session", params=["bwrap", "bwrap-user", "uid"])
def tiered(request, tmp_path_factory):
    """The isolation cases in each tier this machine can provide."""
    tier = request.param
    if tier == "bwrap":
        yield request.getfixturevalue("hostile")
        return
    if tier == "bwrap-user":
        why = _user_tier_problem()
        if why:
            pytest.skip(f"SANDBOX TIER UNAVAILABLE, bwrap as an unprivileged user skipped: {why}")
        yield _grade_as_user(tmp_path_factory.mktemp("hostile-user"))
        return
    why = sandbox.tier_problem("uid")
    if why:
        pytest.skip(f"SANDBOX TIER UNAVAILABLE, uid tier skipped: {why}")
    yield _grade_here(tmp_path_factory.mktemp("hostile-uid"), "uid", ISOLATION)


def _delete_all(nb, grade_ids):
    for gid in grade_ids:
        nb = subs.delete(nb, gid)
    return nb


def score(h, student):
    return sum(float(r["score"]) for r in h["rows"][student].values())


def feedback_text(h, student) -> str:
    raw = (h["out"] / "feedback" / student / "rope" / "rope.html").read_text()
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
    size = (hostile["out"] / "feedback" / "huge_output" / "rope" / "rope.html").stat().st_size
    assert size < 5 * 2**20, f"feedback of {size / 2**20:.1f} MiB"


def test_memory_hog_is_stopped_and_graded_as_far_as_it_goes(tiered):
    if not tiered["memory_capped"]:
        pytest.skip(f"no memory cap in the {tiered['tier']} tier here (no cgroup, and RLIMIT_AS cannot be used "
                    f"with a GPU): the hog would take the machine's memory")
    r = tiered["rows"]["memory_hog"]
    assert r["test_rope_thetas"]["status"] == r["test_rope_matrix"]["status"] == "passed"
    if tiered["memory"].startswith("cgroup"):       # the cgroup kills the kernel: the rest cannot run
        for gid in ("test_apply_rope_pairs", "test_apply_rope_halves"):
            assert float(r[gid]["score"]) == 0 and r[gid]["status"] in ("error", "timeout"), r[gid]
            assert "kernel died" in r[gid]["message"], r[gid]
    else:                                            # RLIMIT_AS: the allocation fails, the kernel lives on
        assert tiered["memory"] == "rlimits", tiered["memory"]
        assert score(tiered, "memory_hog") == TOTAL, r
        assert "MemoryError" in feedback_text(tiered, "memory_hog")


def test_fork_loop_is_capped(tiered):
    seconds = tiered["results"]["fork_loop"]["seconds"]
    assert seconds < BUDGET + 90
    assert set(tiered["rows"]["fork_loop"]) == set(POINTS)
    assert "fork stopped after" in feedback_text(tiered, "fork_loop")


def test_snooping_finds_nothing(tiered):
    text = feedback_text(tiered, "snoops_outside")
    assert "LEAKS: []" in text, re.findall(r"LEAKS:.*", text)
    assert score(tiered, "snoops_outside") == TOTAL


def test_budget_stops_an_endless_notebook(tiered):
    r = tiered["rows"]["endless_cell"]
    assert all(row["status"] == "timeout" and float(row["score"]) == 0 for row in r.values()), r
    assert all("budget" in row["message"] for row in r.values()), r


def test_tampering_gains_nothing(tiered):
    r = tiered["rows"]["tampers"]
    assert score(tiered, "tampers") == 0, r


def test_forged_records_gain_nothing(hostile):
    r = hostile["rows"]["forges_records"]
    assert score(hostile, "forges_records") == 0, r


def test_calling_the_reference_earns_nothing_and_says_why(tiered):
    r = tiered["rows"]["calls_reference"]
    assert float(r["test_apply_rope_pairs"]["score"]) == 0
    assert "reference implementation" in r["test_apply_rope_pairs"]["message"]
    assert score(tiered, "calls_reference") == TOTAL - POINTS["test_apply_rope_pairs"]
    assert "reference implementation" in feedback_text(tiered, "calls_reference")


def test_no_submitted_file_is_modified_in_any_tier(tiered):
    assert tiered["unchanged"], "a submitted file was modified"
    assert not (REPO / "pwned.txt").exists() and not Path("/pwned.txt").exists()
    assert set(tiered["rows"]) >= set(ISOLATION)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_nothing_is_left_behind(tiered):
    """No cgroup, no process, no kernel folder, no ACL entry after the run."""
    if tiered["tier"] == "bwrap-user":
        assert not tiered["processes_left"], tiered["processes_left"]
        assert not tiered["home_files"], f"written into HOME: {tiered['home_files'][:5]}"
        assert not tiered["tmp_left"], f"left in TMPDIR: {tiered['tmp_left'][:5]}"
        return
    run = tiered["run"]
    assert not [c for c in limits.our_cgroups() if c.name.startswith(run)], "cgroups left behind"
    assert not _processes_mentioning(f"k-{run}") and not _processes_mentioning(f"course-sandbox-{run}")
    assert not list(Path("/tmp").glob(f"k-{run}*")) and not list(Path("/tmp").glob(f"course-sandbox-{run}*"))
    if tiered["tier"] == "uid" and shutil.which("getfacl"):
        from autograder.sandbox import uid_tier
        for path in (REPO, REPO / "solutions", REPO / "course_lib", tiered["dirs"], tiered["out"]):
            acl = subprocess.run(["getfacl", "-c", str(path)], capture_output=True, text=True).stdout
            groups = [int(g) for g in re.findall(r"^group:(\d+):", acl, re.M)]
            if groups:             # only while another grading run (another test worker) still holds it
                gid, runs = uid_tier.holders(path)
                assert groups == [gid] and runs, f"ACL left on {path} by no live run: {acl}"


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
