"""Root pytest configuration: how `make test` (pytest -n 2 --dist loadgroup) spreads the suite over workers.

Tests that share a module-level fixture (a grading run) must stay on one xdist worker: they are grouped
by file (the hostile suite's other sandbox tiers apart). Independent tests (course_lib, one grading run per assignment) spread over the
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
        # the hostile suite's other sandbox tiers (a parametrized session fixture): a group of their own,
        # so that they run on another worker than the bubblewrap run, one after the other
        param = getattr(item, "callspec", None) and item.callspec.params.get("tiered")
        item.add_marker(pytest.mark.xdist_group(f"{path}::other-tiers" if param and param != "bwrap" else path))
