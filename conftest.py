"""Root pytest configuration: how `make test` (pytest -n 2 --dist loadgroup) spreads the suite over workers.

Tests that share a module-level fixture (a grading run) must stay on one xdist worker: they are grouped
by file (and by the parameter of a parametrized session fixture). Independent tests (course_lib, one grading run per assignment) spread over the
workers. (nbval, which runs a notebook cell after cell in one kernel, runs apart, without xdist.)
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
        # a session fixture with parameters (the hostile suite's sandbox tiers): one group per parameter,
        # so that the tiers' grading runs go to different workers
        param = getattr(item, "callspec", None) and item.callspec.params.get("tiered")
        item.add_marker(pytest.mark.xdist_group(f"{path}::{param}" if param and param != "bwrap" else path))
