"""pyproject.toml and environment.yml pin the same versions, and what is installed is what they pin."""
import os
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


def test_tests_sharing_a_grading_run_stay_on_one_xdist_worker(tmp_path):
    """The suite's xdist scheduler (conftest.py) keeps a file's tests on one worker, so that a session
    fixture (a whole grading run) is set up once, and spreads the tests of the SPREAD folders."""
    import shutil
    import subprocess
    import sys
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "tests" / "autograder").mkdir(parents=True)
    (tmp_path / "tests" / "course_lib").mkdir()
    (tmp_path / "tests" / "autograder" / "test_shared.py").write_text(
        "import os, time, pytest\n"
        "@pytest.fixture(scope='session')\n"
        "def run():\n"
        "    open(os.environ['SETUPS'], 'a').write('setup\\n')\n"
        "    time.sleep(0.5)\n"
        "    return os.getpid()\n"
        + "".join(f"def test_{i}(run):\n    assert run == os.getpid()\n" for i in range(6)))
    (tmp_path / "tests" / "course_lib" / "test_spread.py").write_text(
        "import os, time\n" + "".join(f"def test_{i}():\n    time.sleep(0.3)\n    open(os.environ['PIDS'], 'a').write(f'{{os.getpid()}}\\n')\n"
                                      for i in range(8)))
    env = {**os.environ, "SETUPS": str(tmp_path / "setups"), "PIDS": str(tmp_path / "pids")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-q", "tests"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "setups").read_text().count("setup") == 1
    assert len(set((tmp_path / "pids").read_text().split())) == 2, "the course_lib tests ran on one worker only"
