"""Root pytest configuration: how `make test` (pytest -n 3) spreads the suite over xdist workers.

Tests that share a session fixture (a whole grading run) must run on one worker, or each worker runs the
fixture again. The work units are decided here, from each test's node id, by an xdist scheduler of our
own (the `pytest_xdist_make_scheduler` hook; xdist's `--dist loadgroup` marks no longer take effect under
pytest 9, whose node ids xdist 3.8 cannot rewrite: every test was scheduled alone and test_grade.py's
grading ran twice, 260 s each):

* the course_lib tests, `test_assignments.py`, `test_environment.py`, `test_bundle.py`: each test alone;
* the hostile suite's other sandbox tiers (parameters `bwrap-user`, `uid` of its `tiered` fixture): one
  unit, apart from the bubblewrap run, so that the two run on different workers;
* every other test file: one unit.

(nbval, which runs a notebook cell after cell in one kernel, runs apart, without xdist.)
"""
import re

SPREAD = ("tests/course_lib/", "tests/autograder/test_assignments.py", "tests/test_environment.py",
          "tests/notebooks/test_bundle.py")
OTHER_TIERS = re.compile(r"^tests/autograder/test_hostile\.py::\w+\[(bwrap-user|uid)\]$")


def unit_of(nodeid: str) -> str:
    """The work unit of a test: tests of one unit run on one worker, one after the other."""
    path = nodeid.split("::")[0]
    if path.startswith(SPREAD):
        return nodeid
    if OTHER_TIERS.match(nodeid):
        return f"{path}::other-tiers"
    return path


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return CourseScheduling(config, log)


def pytest_sessionfinish(session):
    """The suite's template cache (tests/conftest.py) goes with the run (the controller, after its workers)."""
    import os
    import shutil
    if not hasattr(session.config, "workerinput") and os.environ.get("COURSE_TEMPLATE_CACHE"):
        shutil.rmtree(os.environ["COURSE_TEMPLATE_CACHE"], ignore_errors=True)
