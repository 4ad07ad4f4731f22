"""Shared pytest configuration for the whole test suite.

* Hypothesis runs under the reproducible ``ci`` profile unless ``HYPOTHESIS_PROFILE`` names another one
  (``dev`` below, or Hypothesis' own ``default``).
* Tests marked ``cuda`` are skipped, with a reason, where ``torch.cuda.is_available()`` is False.
* The ``device`` fixture runs a test on the CPU and (marked ``cuda``) on CUDA.
* wandb never talks to the network from a test.
"""
from __future__ import annotations

import os

os.environ["WANDB_MODE"] = "disabled"  # before anything can import wandb
# The suite grades the same assignments dozens of times: nbgrader's generate_assignment runs once per source
# (autograder.course.generate), the template kept in this private folder (removed by the root conftest.py).
os.environ.setdefault("COURSE_TEMPLATE_CACHE", os.path.join(__import__("tempfile").gettempdir(),
                                                            f"course-test-templates-{os.geteuid()}"))

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,            # the first call into torch (lazy init, CPU dispatch) can be slow
    max_examples=40,
    derandomize=True,         # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",                    # HYPOTHESIS_PROFILE=dev: more, random examples when hunting for bugs
    deadline=None,
    max_examples=300,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency of course_lib
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``cuda`` (directly, or through the ``device`` fixture's cuda param) when
    there is no CUDA device."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest):
    """The device to run on, as a ``torch.device``: the CPU always, CUDA only where it is available (the
    ``cuda`` param carries the ``cuda`` marker, so the hook above skips it otherwise)."""
    import torch

    return torch.device(request.param)

