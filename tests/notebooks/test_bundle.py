"""The student bundle (`python -m autograder release --bundle OUT`): what students receive holds no
solution text, course_lib has no reference body of any exercise, and every release notebook runs with it
up to the first exercise left to the student."""
import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder.bundle import STRIPPED, build_bundle
from autograder.course import REPO, assignments
from course_lib import grading

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """The bundle of every assignment, from the committed release (`release --bundle` also regenerates
    notebooks/ first; the tests must not rewrite the repository while other workers read it)."""
    return build_bundle(tmp_path_factory.mktemp("bundle") / "student")


def _solution_blocks() -> tuple[list[list[str]], list[str]]:
    """(solution blocks as lists of stripped lines, hidden-test lines) of every solution notebook."""
    blocks, hidden = [], []
    for path in sorted((REPO / "solutions").glob("*/*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            current, kind = None, None
            for line in cell.source.splitlines():
                if "### BEGIN SOLUTION" in line or "### BEGIN HIDDEN TESTS" in line:
                    current, kind = [], "solution" if "SOLUTION" in line else "hidden"
                elif "### END SOLUTION" in line or "### END HIDDEN TESTS" in line:
                    (blocks.append(current) if kind == "solution" else hidden.extend(current))
                    current = None
                elif current is not None and line.strip() and not line.strip().startswith("#"):
                    current.append(line.strip())
    return blocks, [h for h in hidden if len(h) >= 8]


def _windows(block: list[str], n: int = 3) -> list[str]:
    """Runs of n consecutive lines: a leak is a piece of an answer, not one generic line (`for c in range(C):`)."""
    return ["\n".join(block[i:i + n]) for i in range(len(block) - n + 1)] if len(block) >= n else ["\n".join(block)]


def test_bundle_layout(bundle):
    for name in ("README.md", "environment.yml", "pyproject.toml", "course_lib/__init__.py", "course_lib/grading.py"):
        assert (bundle / name).is_file(), name
    for assignment in assignments():
        assert list((bundle / "notebooks" / assignment).glob("*.ipynb")), assignment
    assert not (bundle / "solutions").exists() and not (bundle / "autograder").exists()


def test_bundle_holds_no_solution_text(bundle):
    blocks, hidden = _solution_blocks()
    assert blocks and hidden
    texts = {p: "\n".join(line.strip() for line in p.read_text(errors="replace").splitlines())
             for p in bundle.rglob("*") if p.is_file()}
    leaked = [(piece, str(p.relative_to(bundle))) for block in blocks for piece in _windows(block)
              for p, t in texts.items() if len(piece) >= 40 and piece in t]
    leaked += [(line, str(p.relative_to(bundle))) for line in hidden for p, t in texts.items() if line in t]
    assert not leaked, f"solution or hidden-test text in the bundle: {leaked[:5]}"


def test_every_reference_body_is_removed(bundle):
    for name, ex in grading.exercises().items():
        module = ex.reference.__module__
        path = bundle / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == ex.reference.__name__)
        body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{name}: the reference body is still in the bundle"
        assert STRIPPED in ast.unparse(body[0])


RELEASED = sorted((REPO / "notebooks").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_release_runs_with_the_bundle_until_the_first_exercise(path, bundle, monkeypatch):
    """A student opening the release with the bundle's course_lib gets no error before the first
    `raise NotImplementedError()` of an exercise (the student's stub, not a removed reference)."""
    monkeypatch.setenv("PYTHONPATH", str(bundle))
    nb = nbformat.read(bundle / "notebooks" / path.parent.name / path.name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import course_lib\nassert course_lib.__file__.startswith({str(bundle)!r}), course_lib.__file__"))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(bundle / "notebooks" / path.parent.name)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    error = next(o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error")
    assert error.ename == "NotImplementedError" and error.evalue == "", \
        f"{path.parent.name} fails before the first exercise: {error.ename}: {error.evalue}\n{info.value}"
    assert os.environ["PYTHONPATH"] == str(bundle)
