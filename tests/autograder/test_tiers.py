"""The sandbox on every host: cgroup v2 limits (on a v2-shaped tree here, for real where a machine has v2
controllers), the guarantees table, and the files an assignment ships beside its notebooks reaching the
kernel, read-only, in every tier this machine can provide."""
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder.sandbox import limits

from autograder.sandbox import kernel as sandbox
from autograder.course.source import REPO
from autograder.outputs.grade import grade

pytestmark = pytest.mark.autograder


# ---------------------------------------------------------------------------------------------- cgroup v2
def _v2_tree(root: Path) -> Path:
    """The files of a unified cgroup-v2 root, as the kernel shows them (controllers available, none
    enabled for children yet)."""
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


@pytest.mark.skipif(os.geteuid() != 0, reason="the v2-shaped tree is written as root would (mkdir under the mount)")
def test_cgroup_v2_limits_on_a_v2_shaped_tree(tmp_path):
    root = _v2_tree(tmp_path / "cgroup")
    lim = limits.Limits("run1-alice", 64, 512 * 2**20, root=root)
    assert lim.plan.mechanism == "cgroup v2" and lim.plan.caps_processes and lim.plan.caps_memory
    d = root / limits.GROUP / lim.tag
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "64"
    # the controllers are enabled for the children of the root and of our folder (the kernel's syntax)
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (root / limits.GROUP / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert lim.launcher_args() == ["--cgroup", str(d / "cgroup.procs")]
    # the kernel's first process joins the cgroup before it becomes the kernel
    proc = subprocess.run([sys.executable, "-m", "autograder.sandbox.launch", *lim.launcher_args(), "--",
                           sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (d / "cgroup.procs").read_text() == proc.stdout.strip()      # exec keeps the pid
    # close(): empty (the process is gone), then rmdir, which on cgroupfs removes the interface files
    (d / "cgroup.procs").write_text("")
    for f in d.iterdir():
        f.unlink()
    lim.close()
    assert not d.exists()
    assert limits.our_cgroups(root) == []


def test_cgroup_v2_is_not_taken_without_memory_and_pids(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("hugetlb\n")      # this machine's unified tree: controllers on v1
    assert limits.v2_mount(root) is None
    assert limits.plan(gpu=False, own_uid=False, root=root).mechanism != "cgroup v2"


def test_without_cgroups_rlimits_and_what_they_cannot_do(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    with_uid = limits.plan(gpu=False, own_uid=True, root=empty)
    assert with_uid.mechanism == "rlimits" and "RLIMIT_NPROC" in with_uid.processes and "RLIMIT_AS" in with_uid.memory
    gpu = limits.plan(gpu=True, own_uid=True, root=empty)
    assert not gpu.caps_memory                                  # CUDA and RLIMIT_AS do not mix: said, not faked
    assert "memory cap" in [g for g, _, _ in sandbox.guarantees(None)]


V2 = limits.v2_mount()


@pytest.mark.skipif(V2 is None or os.geteuid() != 0,
                    reason="this machine offers no cgroup-v2 memory and pids controllers to root (they are on v1)")
def test_cgroup_v2_for_real():
    lim = limits.Limits("real-v2", 32, 256 * 2**20)
    assert lim.plan.mechanism == "cgroup v2"
    proc = subprocess.Popen([sys.executable, "-m", "autograder.sandbox.launch", *lim.launcher_args(), "--",
                             "sleep", "30"], cwd=str(REPO))
    try:
        time.sleep(1.5)
        assert f"/{limits.GROUP}/{lim.tag}" in Path(f"/proc/{proc.pid}/cgroup").read_text()
        assert (lim.dirs[0] / "memory.max").read_text().strip() == str(256 * 2**20)
    finally:
        lim.close()
        proc.wait(timeout=30)
    assert not lim.dirs and not [c for c in limits.our_cgroups() if c.name == lim.tag]


def test_prune_removes_what_killed_runs_left(tmp_path):
    root = _v2_tree(tmp_path / "cgroup") if os.geteuid() == 0 else None
    if root is None:
        pytest.skip("needs root for the v2-shaped tree")
    stale = root / limits.GROUP / "deadbeef-bob-1234"
    stale.mkdir(parents=True)
    assert limits.prune(prefix="deadbeef-", root=root) == 1 and not stale.exists()


# ---------------------------------------------------------------------------------------------- the table
def test_check_prints_every_guarantee_and_its_mechanism():
    proc = subprocess.run([sys.executable, "-m", "autograder.sandbox", "check"], capture_output=True, text=True,
                          cwd=str(REPO), timeout=120)
    working = [t for t in sandbox.TIERS if sandbox.tier_problem(t) is None]
    assert proc.returncode == (0 if working else 1), proc.stderr
    for tier in sandbox.TIERS:
        assert f"{tier} tier: " in proc.stdout
    for name in ("filesystem isolation", "no network", "process cap", "memory cap", "GPU access"):
        assert proc.stdout.count(name) == len(working), (name, proc.stdout)
    assert f"--sandbox auto uses: {working[0] if working else 'NONE'}" in proc.stdout
    assert "cgroup" in proc.stdout or "RLIMIT" in proc.stdout


def test_summary_is_one_line_naming_the_tier():
    for tier in [t for t in sandbox.TIERS if sandbox.tier_problem(t) is None] + [None]:
        line = sandbox.summary(tier)
        assert "\n" not in line and (tier or "OFF") in line and "process cap" in line


# ---------------------------------------------------------------------------------------------- shipped files
def _cell(kind: str, source: str, **nbgrader):
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, "locked": False, "solution": False,
                                     "grade": False, **nbgrader}
    return cell


@pytest.fixture(scope="module")
def reads_data(tmp_path_factory):
    """A course of one assignment whose notebook opens a data file and imports a helper module shipped
    beside it (as nbgrader's own `open_relative_file` fixture does)."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    src = course / "solutions" / "reads_data"
    src.mkdir(parents=True)
    (src / "data.txt").write_text("hello from the assignment\nsecond line\n")
    (src / "helper.py").write_text("VALUE = 42\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("markdown", "Read the first line of `data.txt`."),
        _cell("code", "def first_line():\n    ### BEGIN SOLUTION\n    with open('data.txt') as f:\n"
                      "        return f.read().splitlines()[0]\n    ### END SOLUTION", solution=True,
              grade_id="first_line"),
        _cell("code", "assert first_line() == 'hello from the assignment'\nimport helper\nassert helper.VALUE == 42",
              grade=True, locked=True, grade_id="test_first_line", points=1),
        _cell("code", "import os\ntry:\n    with open('data.txt', 'w') as f:\n        f.write('changed')\n"
                      "    changed = True\nexcept OSError:\n    changed = False\n"
                      "assert not changed, 'a shipped file is writable'", grade=True, locked=True,
              grade_id="test_read_only", points=1),
    ]
    nbformat.write(nb, src / "reads_data.ipynb")
    subs = course / "submissions"
    (subs / "alice").mkdir(parents=True)
    shutil.copy(src / "reads_data.ipynb", subs / "alice" / "reads_data.ipynb")
    return course


@pytest.mark.parametrize("tier", ["bwrap", "uid", "off"])
def test_files_the_assignment_ships_reach_the_kernel_read_only(tier, reads_data, tmp_path):
    if tier != "off" and sandbox.tier_problem(tier):
        pytest.skip(f"SANDBOX TIER UNAVAILABLE, {tier} skipped: {sandbox.tier_problem(tier)}")
    out = tmp_path / "out"
    grade("reads_data", reads_data / "submissions", out, repo=reads_data, quiet=True, sandbox=tier,
          submission_timeout=120)
    with open(out / "details.csv") as f:
        rows = {r["grade_id"]: r for r in csv.DictReader(f)}
    assert rows["test_first_line"]["status"] == "passed", rows["test_first_line"]
    if tier != "off":            # without a sandbox, nbgrader's own copy is the student's to change
        assert rows["test_read_only"]["status"] == "passed", rows["test_read_only"]
    assert (reads_data / "solutions" / "reads_data" / "data.txt").read_text().startswith("hello")


# ---------------------------------------------------------------------------------------------- uid tier ACLs
def test_the_uid_tier_leaves_acl_entries_others_added_meanwhile():
    """Closing a run puts a folder's ACL back as it was, but an entry someone else added while the run held
    it (another tool opening /root to a user of its own) is not taken away: only the run's group entry goes."""
    from autograder.sandbox import uid_tier
    why = uid_tier.problem()
    if why or shutil.which("getfacl") is None:
        pytest.skip(f"UID TIER UNAVAILABLE here: {why or 'getfacl is not installed'}")
    import tempfile
    protected = Path(tempfile.mkdtemp(prefix="acl-course-", dir="/tmp"))    # reachable by other users
    protected.chmod(0o755)
    try:
        _acl_case(protected)
    finally:
        shutil.rmtree(protected, ignore_errors=True)


def _acl_case(protected: Path) -> None:
    from autograder.sandbox import uid_tier
    (protected / "solutions.ipynb").write_text("{}")
    run = uid_tier.Run(protect=[protected], keep=[Path(p) for p in sandbox.python_paths()])
    run.open()
    try:
        held = subprocess.run(["getfacl", "-cn", str(protected)], capture_output=True, text=True).stdout
        assert f"group:{run.gid}:---" in held
        subprocess.run(["setfacl", "-m", "u:nobody:r-x", str(protected)], check=True)      # someone else
    finally:
        run.close()
    after = subprocess.run(["getfacl", "-cn", str(protected)], capture_output=True, text=True).stdout
    assert f"group:{run.gid}:" not in after, after
    assert "user:65534:r-x" in after, after
    subprocess.run(["setfacl", "-x", "u:nobody", str(protected)], check=True)
    before = subprocess.run(["getfacl", "-c", str(protected)], capture_output=True, text=True).stdout
    run = uid_tier.Run(protect=[protected], keep=[Path(p) for p in sandbox.python_paths()])
    run.open()                                           # nobody else touches it: exactly as it was
    run.close()
    assert subprocess.run(["getfacl", "-c", str(protected)], capture_output=True, text=True).stdout == before


def test_a_run_keeps_what_it_needs_when_an_earlier_run_ends(tmp_path_factory):
    """Two runs at once: the second relies on nothing the first holds. When the first ends, the second's
    kernels still run Python and still cannot read the course (the ACL entries are counted per run)."""
    from autograder.sandbox import uid_tier
    why = uid_tier.problem()
    if why or shutil.which("getfacl") is None:
        pytest.skip(f"UID TIER UNAVAILABLE here: {why or 'getfacl is not installed'}")
    import tempfile
    course = Path(tempfile.mkdtemp(prefix="acl-course-", dir="/tmp"))
    course.chmod(0o755)
    (course / "solutions.ipynb").write_text("{}")
    (course / "solutions.ipynb").chmod(0o644)
    keep = [Path(p) for p in sandbox.python_paths()]
    first, second = uid_tier.Run(protect=[course], keep=keep), uid_tier.Run(protect=[course], keep=keep)
    try:
        first.open()
        second.open()
        first.close()
        uid = second.new_uid()
        assert uid_tier.runs_python(uid, second.gid), "the second run lost its way to Python"
        assert uid_tier.reachable([course, course / "solutions.ipynb"], uid, second.gid) == []
    finally:
        first.close()
        second.close()
        shutil.rmtree(course, ignore_errors=True)
