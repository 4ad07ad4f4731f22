"""What students receive: ``python -m autograder release --bundle OUT [ASSIGNMENT]``.

OUT gets the release notebooks (``notebooks/``), the environment files, a short README, and a copy of
``course_lib`` in which the *reference bodies of the graded exercises* (and of the functions that would
give them away, ``Exercise.gives_away``) are replaced by ``raise NotImplementedError(...)`` (docstrings
and signatures stay: they are the specification). With an
ASSIGNMENT, only that assignment's exercises are removed (earlier assignments' pieces stay usable, e.g.
by a capstone); without, all of them.

The same stripped ``course_lib`` is what a student's kernel imports while it is graded in the sandbox,
so a student function cannot call the reference it is asked to write.
"""
from __future__ import annotations

import ast
import inspect
import shutil
from pathlib import Path

from .course import REPO, UsageError, assignments

STRIPPED = ("the reference implementation of this exercise is not part of the student's course_lib: "
            "write your own in the notebook")


def exercise_functions(names: list[str]) -> dict[Path, set[str]]:
    """{source file: qualified names} of the reference functions of the given assignments' exercises."""
    from course_lib import grading

    found: dict[Path, set[str]] = {}
    for assignment in names:
        for ex in grading.exercises_of(assignment).values():
            for fn in (ex.reference, *ex.gives_away):
                fn = inspect.unwrap(fn)
                found.setdefault(Path(inspect.getsourcefile(fn)).resolve(), set()).add(fn.__qualname__)
    return found


def _strip_source(text: str, qualnames: set[str]) -> str:
    """Replace the body (after the docstring) of each function ``qualnames`` names by a raise."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    spans = []

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                if isinstance(child, ast.ClassDef):
                    visit(child, qual + ".")
                elif qual in qualnames:
                    body = child.body
                    keep = 1 if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                                 and isinstance(body[0].value.value, str)) else 0
                    if len(body) > keep:
                        first, last = body[keep], body[-1]
                        indent = " " * first.col_offset
                        spans.append((first.lineno, last.end_lineno, indent))
    visit(tree)
    for start, end, indent in sorted(spans, reverse=True):
        lines[start - 1:end] = [f"{indent}raise NotImplementedError({STRIPPED!r})\n"]
    return "".join(lines)


def strip_course_lib(dest: Path, assignment_names: list[str], repo: Path = REPO) -> Path:
    """Copy ``course_lib`` to ``dest/course_lib`` without the reference bodies of those assignments."""
    src = repo / "course_lib"
    target = Path(dest) / "course_lib"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path, qualnames in exercise_functions(assignment_names).items():
        rel = path.relative_to(src.resolve())
        out = target / rel
        out.write_text(_strip_source(out.read_text(), qualnames))
    return target


STUDENT_README = """# Lecture 4 homework

Set up once (Python 3.10 or newer):

    python3 -m venv .venv && .venv/bin/pip install -e .

or, with conda, `conda env create -f environment.yml`. Then

    .venv/bin/jupyter lab notebooks/

Fill in each `# YOUR CODE HERE`, run the test cell below it, and hand in the notebook. `course_lib/`
holds the helpers the notebooks use; the functions you are asked to write are not in it.
"""


def build_bundle(out: Path, assignment: str | None = None, repo: Path = REPO) -> Path:
    """Write the student bundle into ``out`` (which must not exist or be empty)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"bundle folder is not empty: {out}")
    names = [assignment] if assignment else assignments(repo)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:          # the committed release (tests/notebooks/test_release.py keeps it in sync)
        if not (repo / "notebooks" / name).is_dir():
            raise UsageError(f"notebooks/{name} does not exist: run `python -m autograder release {name}` first")
        shutil.copytree(repo / "notebooks" / name, out / "notebooks" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "wandb"))
    strip_course_lib(out, names, repo)
    for name in ("environment.yml", "pyproject.toml"):
        shutil.copy(repo / name, out / name)
    (out / "README.md").write_text(STUDENT_README)
    return out
