"""course_lib's tests: each starts from the default grading devices (the CPU, CUDA when present, the meta
device's check where no GPU is), whatever the environment of the run says."""
import pytest


@pytest.fixture(autouse=True)
def _default_grading_devices(monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)
