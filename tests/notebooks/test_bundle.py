"""The student bundle (`python -m autograder release ASSIGNMENT --bundle OUT`), cut at every release of the
schedule: it holds no solution text and no reference body of any assignment released at that time or
later (read from the bundle's sources against the exercise registry), keeps the references of those
already due, and every notebook released by then runs in it: the blank release up to its first exercise,
the filled solution top to bottom (short configuration), with PYTHONPATH pointing only at the bundle."""
import ast
import inspect
import os
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder.course import schedule as sched
from autograder.intake import samples as subs
from autograder.release.bundle import STRIPPED, build_bundle
from autograder.course.source import REPO, assignments
from course_lib import grading

pytestmark = pytest.mark.notebooks

SCHEDULE = sched.checked(REPO)
RELEASES = SCHEDULE.names


@pytest.fixture(scope="session")
def bundle_at(tmp_path_factory):
    """bundle_at(assignment) -> the bundle cut at that assignment's release, built once per session from
    the committed release (the CLI also regenerates notebooks/ first; tests must not rewrite the
    repository while other workers read it)."""
    built: dict[str, Path] = {}

    def make(assignment: str) -> Path:
        if assignment not in built:
            built[assignment] = build_bundle(tmp_path_factory.mktemp(f"bundle-{assignment}") / "student", assignment)
        return built[assignment]
    return make


def _released_with_or_after(assignment: str) -> list[str]:
    """What is not public when `assignment` is released: it, those released with it, and every later one."""
    at = SCHEDULE.entry(assignment).release
    return [e.name for e in SCHEDULE.entries if e.due > at]


def _functions(assignment: str):
    for ex in grading.exercises_of(assignment).values():
        for fn in (ex.reference, *ex.gives_away):
            yield ex.name, inspect.unwrap(fn)


def _in_registry(fn) -> bool:
    """A reference defined in course_lib.exercises itself (a thin wrapper): that package is not in a bundle."""
    return fn.__module__.startswith("course_lib.exercises")


def _body_in(bundle: Path, fn) -> list[ast.stmt]:
    """The statements of `fn`'s body in the bundle's copy of its module, docstring left out."""
    path = bundle / (fn.__module__.replace(".", "/") + ".py")
    scope = ast.parse(path.read_text()).body
    node = None
    for part in fn.__qualname__.split("."):
        node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
        scope = node.body
    return [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]


def _solution_blocks(names: list[str]) -> tuple[list[list[str]], list[str]]:
    """(solution blocks as lists of stripped lines, hidden-test lines) of those assignments' notebooks."""
    blocks, hidden = [], []
    for name in names:
        for path in sorted((REPO / "solutions" / name).glob("*.ipynb")):
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


@pytest.mark.parametrize("assignment", RELEASES)
def test_bundle_layout(assignment, bundle_at):
    bundle = bundle_at(assignment)
    for name in ("README.md", "environment.yml", "pyproject.toml", "course_lib/__init__.py", "course_lib/grading.py"):
        assert (bundle / name).is_file(), name
    at = SCHEDULE.entry(assignment).release
    released = sorted(p.name for p in (bundle / "notebooks").iterdir())
    assert released == sorted(e.name for e in SCHEDULE.entries if e.release <= at)
    assert assignment in released
    assert not (bundle / "solutions").exists() and not (bundle / "autograder").exists()
    assert not (bundle / "schedule.toml").exists()


@pytest.mark.parametrize("assignment", RELEASES)
def test_bundle_holds_no_reference_body_of_what_is_not_due(assignment, bundle_at):
    bundle = bundle_at(assignment)
    secret = _released_with_or_after(assignment)
    assert assignment in secret
    stripped = set()
    for name in secret:
        for exercise, fn in _functions(name):
            if _in_registry(fn):          # the whole module is absent
                assert not (bundle / (fn.__module__.replace(".", "/") + ".py")).exists()
                continue
            body = _body_in(bundle, fn)
            assert len(body) == 1 and isinstance(body[0], ast.Raise) and STRIPPED in ast.unparse(body[0]), \
                f"{assignment}'s bundle holds the body of {fn.__qualname__} ({name}: {exercise}, not yet due)"
            stripped.add((fn.__module__, fn.__qualname__))
    for name in set(assignments()) - set(secret):           # due: the reference is there, as in course_lib
        for exercise, fn in _functions(name):
            if (fn.__module__, fn.__qualname__) in stripped or _in_registry(fn):   # shared with one not yet due,
                continue                                                          # or in the registry's modules
            want = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
            want = [s for s in want.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            assert ast.dump(ast.Module(_body_in(bundle, fn), [])) == ast.dump(ast.Module(want, [])), \
                f"{assignment}'s bundle lost the reference {fn.__qualname__} of {name}, already due"


@pytest.mark.parametrize("assignment", RELEASES)
def test_bundle_holds_no_solution_text_of_what_is_not_due(assignment, bundle_at):
    bundle = bundle_at(assignment)
    blocks, hidden = _solution_blocks(_released_with_or_after(assignment))
    assert blocks and hidden
    texts = {p: "\n".join(line.strip() for line in p.read_text(errors="replace").splitlines())
             for p in bundle.rglob("*") if p.is_file()}
    leaked = [(piece, str(p.relative_to(bundle))) for block in blocks for piece in _windows(block)
              for p, t in texts.items() if len(piece) >= 40 and piece in t]
    leaked += [(line, str(p.relative_to(bundle))) for line in hidden for p, t in texts.items() if line in t]
    assert not leaked, f"solution or hidden-test text in the bundle: {leaked[:5]}"


def _hidden_texts() -> list[tuple[str, str]]:
    """(exercise, text) of what the registry keeps from students: case labels, hints, dispatcher-level
    forbidden names (the Python-level ones, F.conv2d and the like, are named by the exercises' text)."""
    found = []
    for name, ex in grading.exercises().items():
        found += [(name, c.name) for c in ex.cases              # not "8192, 64, 8, 128": Llama-2's public sizes
                  if len(c.name) >= 12 and not set(c.name) <= set("0123456789, ")]
        found += [(name, ex.hint[:60])] if len(ex.hint) >= 20 else []
        found += [(name, f) for f in ex.forbidden if f.startswith("aten::")]
    return found


@pytest.mark.parametrize("assignment", RELEASES)
def test_bundle_holds_no_hidden_case(assignment, bundle_at):
    """Hidden cases stay hidden until grading: the bundle's course_lib.exercises is an empty package, no
    case label, hint or forbidden dispatcher name of any exercise is in any file, and check() says in one
    line that the hidden cases run when the notebook is graded."""
    import subprocess
    import sys
    bundle = bundle_at(assignment)
    assert sorted(p.name for p in (bundle / "course_lib" / "exercises").iterdir()) == ["__init__.py"]
    hidden = _hidden_texts()
    assert len(hidden) > 100
    texts = {p: p.read_text(errors="replace") for p in bundle.rglob("*") if p.is_file()}
    leaked = [(exercise, text, str(p.relative_to(bundle))) for exercise, text in hidden
              for p, t in texts.items() if text in t]
    assert not leaked, f"hidden cases in the bundle: {leaked[:5]}"
    some = next(iter(grading.exercises_of(assignment)))
    out = subprocess.run([sys.executable, "-c", "from course_lib import grading; "
                          f"print(grading.check({some!r}, lambda *a, **k: None))"],
                         env={**os.environ, "PYTHONPATH": str(bundle)}, cwd=bundle, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == grading.HIDDEN_AT_GRADING.format(exercise=some) + "\nNone\n"


def _run(nb, bundle: Path, folder: Path, monkeypatch) -> None:
    """Execute `nb` in a fresh kernel whose only course_lib is the bundle's."""
    monkeypatch.setenv("PYTHONPATH", str(bundle))
    monkeypatch.setenv("NBGRADER_EXECUTION", os.environ.get("NBGRADER_EXECUTION") or "ci")   # short configuration
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import course_lib\nassert course_lib.__file__.startswith({str(bundle)!r}), course_lib.__file__"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()


RELEASED = [(p.parent.name, p.stem) for p in sorted((REPO / "notebooks").glob("*/*.ipynb"))]


@pytest.mark.parametrize("assignment,notebook", RELEASED, ids=lambda v: v)
def test_filled_solution_runs_top_to_bottom_with_its_bundle(assignment, notebook, bundle_at, monkeypatch):
    """What a student who solved every exercise runs, in the bundle they received at its release."""
    bundle = bundle_at(assignment)
    folder = bundle / "notebooks" / assignment
    release, solution = subs.load(assignment, notebook)
    filled = subs.fill(release, solution)
    try:
        _run(filled, bundle, folder, monkeypatch)
    except CellExecutionError as e:
        pytest.fail(f"{assignment}: the filled notebook fails in the bundle cut at its release: "
                    f"{str(e).strip().splitlines()[-1]}")


@pytest.mark.parametrize("assignment,notebook", RELEASED, ids=lambda v: v)
def test_release_runs_with_its_bundle_until_the_first_exercise(assignment, notebook, bundle_at, monkeypatch):
    """A student opening the release gets no error before the first `raise NotImplementedError()` of an
    exercise (the student's stub, not a removed reference)."""
    bundle = bundle_at(assignment)
    folder = bundle / "notebooks" / assignment
    nb = nbformat.read(folder / f"{notebook}.ipynb", as_version=4)
    with pytest.raises(CellExecutionError) as info:
        _run(nb, bundle, folder, monkeypatch)
    error = next(o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error")
    assert error.ename == "NotImplementedError" and error.evalue == "", \
        f"{assignment} fails before the first exercise: {error.ename}: {error.evalue}\n{info.value}"
