"""What students receive: ``python -m autograder release [ASSIGNMENT] --bundle OUT [--as-of DATE]``.

OUT gets the release notebooks (``notebooks/``) of the assignments released by then, the environment
files, a short README, and a copy of ``course_lib`` in which the *reference bodies of the exercises of
every assignment not yet due* (and of the functions that would give them away, ``Exercise.gives_away``)
are replaced by ``raise NotImplementedError(...)``; docstrings and signatures stay: they are the
specification. Its ``course_lib.exercises`` is an empty package: the hidden cases, their labels, hints and
forbidden lists reach only the graded kernel, whose copy of course_lib is the grader's (``check`` in a
student's own kernel says so in one line). Which assignments those are comes from the course's release schedule
(``autograder.course.schedule``): the bundle of an ASSIGNMENT is cut at its release, ``--as-of DATE`` at that
moment, neither at the present moment. Assignments already due keep their references (their solutions
are public after the deadline, and later notebooks use them: kv_cache's decoder runs on RoPE's
``apply_rope_pairs``).

A graded kernel imports the same kind of stripped ``course_lib``, cut at the graded assignment's release
(``schedule.cut_for_grading``), so a student function cannot call the reference it is asked to write.
"""
from __future__ import annotations

import ast
import inspect
import shutil
from pathlib import Path

from autograder.course.source import REPO, UsageError, check_assignment

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


def strip_course_lib(dest: Path, assignment_names: list[str], repo: Path = REPO, cache: Path | None = None,
                     hidden_cases: bool = True) -> Path:
    """Copy ``course_lib`` to ``dest/course_lib`` without the reference bodies of those assignments. With
    ``cache`` (a folder of the grader's own: OUT's cache), a copy stripped from the same sources is reused
    (making one imports course_lib and torch: about 2 s)."""
    if cache is None:
        return _strip(dest, assignment_names, repo, hidden_cases)
    import hashlib

    from autograder.course.nbgrader import keep_built
    src = repo / "course_lib" if (repo / "course_lib").is_dir() else REPO / "course_lib"
    h = hashlib.sha256(" ".join(sorted(assignment_names)).encode() + Path(__file__).read_bytes())
    for path in sorted(src.rglob("*.py")):
        if "__pycache__" not in path.parts:
            h.update(f"{path.relative_to(src)}\n".encode() + hashlib.sha256(path.read_bytes()).digest())
    name = f"course_lib-{h.hexdigest()[:32]}"
    target = Path(dest) / "course_lib"
    if not (Path(cache) / name / "done").exists():
        Path(cache).mkdir(mode=0o700, parents=True, exist_ok=True)
        for old in Path(cache).glob("course_lib-*"):          # one stripped copy is kept: the current one
            shutil.rmtree(old, ignore_errors=True)
    kept = keep_built(Path(cache), name, lambda folder: _strip(folder, assignment_names, repo))
    if kept is None:
        return _strip(dest, assignment_names, repo)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(kept / "course_lib", target)
    return target


STUDENT_EXERCISES = '''"""The graded exercises' hidden cases, hints and forbidden lists are not part of a student's course_lib:
the grader's copy of this package reaches the graded kernel when a notebook is graded, as the records
folder does. ``course_lib.grading.check`` says so when it is called here."""
'''


def _strip(dest: Path, assignment_names: list[str], repo: Path = REPO, hidden_cases: bool = True) -> Path:
    src = repo / "course_lib" if (repo / "course_lib").is_dir() else REPO / "course_lib"   # a course of its own
    target = Path(dest) / "course_lib"
    if target.exists():
        shutil.rmtree(target)
    # equivalent_mutants/: the mutation benchmark's judgements quote the references' code
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "equivalent_mutants"))
    import course_lib                  # the references are found in the imported package; strip the copy's
    imported = Path(course_lib.__file__).resolve().parent
    for path, qualnames in exercise_functions(assignment_names).items():
        rel = path.relative_to(imported)
        out = target / rel
        out.write_text(_strip_source(out.read_text(), qualnames))
    if not hidden_cases:               # a student's copy: course_lib.exercises without a case, hint or name
        shutil.rmtree(target / "exercises")
        (target / "exercises").mkdir()
        (target / "exercises" / "__init__.py").write_text(STUDENT_EXERCISES)
    return target


STUDENT_README = """# Lecture 4 homework

Set up once (Python 3.10 or newer):

    python3 -m venv .venv && .venv/bin/pip install -e .

or, with conda, `conda env create -f environment.yml`. Then

    .venv/bin/jupyter lab notebooks/

Fill in each `# YOUR CODE HERE`, run the test cell below it, and hand in the notebook. `course_lib/`
holds the helpers the notebooks use; the functions you are asked to write are not in it (those of
homework already due are: their solutions are public once the deadline has passed).

This bundle: {cut}.
"""


def build_bundle(out: Path, assignment: str | None = None, repo: Path = REPO, as_of=None) -> Path:
    """Write the student bundle into ``out`` (which must not exist or be empty), cut at ``assignment``'s
    release, or at ``as_of`` (a timezone-aware datetime), or now (see ``schedule.cut``)."""
    from autograder.course.schedule import cut as cut_at

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"bundle folder is not empty: {out}")
    if assignment is not None:
        check_assignment(assignment, repo)
    cut = cut_at(repo, assignment=assignment, as_of=as_of)
    for name in cut.released:   # the committed release (tests/notebooks/test_release.py keeps it in sync)
        if not (repo / "notebooks" / name).is_dir():
            raise UsageError(f"notebooks/{name} does not exist: run `python -m autograder release {name}` first")
    out.mkdir(parents=True, exist_ok=True)
    for name in cut.released:
        shutil.copytree(repo / "notebooks" / name, out / "notebooks" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "wandb"))
    strip_course_lib(out, list(cut.stripped), repo, hidden_cases=False)
    for name in ("environment.yml", "pyproject.toml"):
        shutil.copy(repo / name, out / name)
    (out / "README.md").write_text(STUDENT_README.format(cut=cut.describe()))
    return out
