"""Root pytest configuration: how `make test` (pytest -n 2 --dist loadgroup) spreads the suite over workers.

Tests that share a module-level fixture (a grading run) must stay on one xdist worker: they are grouped
by file (the hostile suite's other sandbox tiers apart). Independent tests (course_lib, one grading run per assignment) spread over the
workers. (nbval, which runs a notebook cell after cell in one kernel, runs apart, without xdist.)

pytest is pinned to 8.4: pytest-xdist 3.8 applies the groups by rewriting `item._nodeid`, which pytest 9 no
longer reads, so under pytest 9 every test was scheduled alone and each worker ran the same session fixture
(a whole grading run) again: measured, tests/autograder/test_grade.py's grading ran twice, 260 s each.
`pytest_collection_finish` below fails the run loudly if the groups ever stop taking effect again.
"""
import pytest

_SPREAD = ("tests/course_lib/", "tests/autograder/test_assignments.py", "tests/test_environment.py",
           "tests/notebooks/test_bundle.py")


@pytest.hookimpl(tryfirst=True)          # before xdist turns xdist_group markers into node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.startswith(_SPREAD):
            continue
        # the hostile suite's other sandbox tiers (a parametrized session fixture): a group of their own,
        # so that they run on another worker than the bubblewrap run, one after the other
        param = getattr(item, "callspec", None) and item.callspec.params.get("tiered")
        item.add_marker(pytest.mark.xdist_group(f"{path}::other-tiers" if param and param != "bwrap" else path))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    if not getattr(session.config.option, "loadgroup", False):     # set in xdist's workers under --dist loadgroup
        return
    lost = [i.nodeid for i in session.items if any(True for _ in i.iter_markers("xdist_group"))
            and "@" not in i.nodeid.rsplit("]", 1)[-1]]
    if lost:
        raise pytest.UsageError(f"pytest-xdist did not apply the xdist_group of {len(lost)} tests (e.g. {lost[0]}): "
                                "tests that share a grading run would run it once per worker; check the pinned "
                                "pytest and pytest-xdist versions")
