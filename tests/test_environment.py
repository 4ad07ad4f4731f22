"""pyproject.toml and environment.yml pin the same versions, and what is installed is what they pin."""
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        if req.startswith("-e"):
            continue
        name, sep, ver = req.partition("==")
        assert sep, f"{req!r} is not pinned with =="
        pins[name.strip().lower()] = ver.strip()
    return pins


def pyproject_pins() -> dict[str, str]:
    return _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip)


def test_environment_yml_pins_what_pyproject_pins():
    py, env = pyproject_pins(), environment_pins()
    assert py == env, f"pins differ: only in pyproject {set(py.items()) - set(env.items())}, " \
                      f"only in environment.yml {set(env.items()) - set(py.items())}"


def test_issue_pins_are_the_tested_versions():
    pins = pyproject_pins()
    assert pins["torch"] == "2.13.0" and pins["nbgrader"] == "0.9.6" and pins["nbval"] == "0.11.0"
    assert pins["jupyterlab"].startswith("4.6.") and pins["pytest"].startswith("9.")
    assert pins["matplotlib"].startswith("3.11.") and pins["wandb"].startswith("0.31.")


@pytest.mark.parametrize("name", sorted(pyproject_pins()))
def test_installed_version_is_the_pinned_one(name):
    pinned = pyproject_pins()[name]
    installed = version(name)
    assert installed.split("+")[0] == pinned, f"{name}: installed {installed}, pinned {pinned} (run `make setup`)"
