"""autograder's folders are its stages, and imports go one way: from the command line down to the course.

The import graph is read from the source by ``tools/import_graph.py`` (``python tools/import_graph.py``
prints it); every import counts, those inside functions too.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import import_graph as ig  # noqa: E402

PACKAGE = REPO / "autograder"
TOP = {"autograder", "autograder.__main__", "autograder.cli"}


def test_the_grader_has_no_import_cycle():
    assert ig.cycles(ig.graph(PACKAGE)) == []


def test_no_stage_imports_a_later_one():
    assert ig.against_the_stages(ig.graph(PACKAGE)) == []


def test_every_module_is_in_a_stage_folder_with_a_docstring_that_says_what_it_owns():
    outside = sorted(n for n in ig.modules(PACKAGE) if n not in TOP and ig.stage_of(n) is None)
    assert outside == [], f"modules outside the stage folders: {outside}"
    for stage in ig.STAGES[:-1]:
        init = PACKAGE / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc or "imports nothing" in doc.lower(), f"{init}: say what the stage may import"
        tree = ast.parse(init.read_text())
        assert all(isinstance(n, ast.Expr) for n in tree.body), f"{init}: a stage's __init__ only describes it"


def test_no_function_takes_more_than_seven_parameters():
    wide = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [x.arg for x in (a.vararg, a.kwarg) if x]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > 7:
                    wide.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({len(names)})")
    assert wide == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "autograder"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checks_catch_a_cycle_hidden_in_a_function_and_an_import_against_the_stages(tmp_path):
    root = _package(tmp_path, {
        "course/__init__.py": "", "course/a.py": "def f():\n    from autograder.course import b\n",
        "course/b.py": "from . import a\n",
        "outputs/__init__.py": "", "outputs/x.py": "",
        "grading/__init__.py": "", "grading/w.py": "from autograder.outputs.x import y\n"})
    g = ig.graph(root)
    assert ig.cycles(g) == [["autograder.course.a", "autograder.course.b"]]
    assert ig.against_the_stages(g) == [("autograder.grading.w", "autograder.outputs.x")]


@pytest.mark.parametrize("record", ["Spec", "CellResult", "StudentResult"])
def test_records_cross_processes_in_one_json_form(record):
    import json

    from autograder.course.source import GradedCell
    from autograder.grading import records as R
    cell = GradedCell("rope", "test_rope", 2.0, "test", ("rotate",))
    made = {"Spec": lambda: R.Spec(student="s", assignment="rope", root="/r", submission="/s", gradebook="/g",
                                   cells=[cell], repo="/c", bundle="/b", shipped_from="/f", cell_timeout=10,
                                   budget=60.0, tier="bwrap", uid=1234),
            "CellResult": lambda: R.CellResult.of(cell, score=2.0, status="passed"),
            "StudentResult": lambda: R.StudentResult("s", [R.CellResult.of(cell, score=1.5, status="failed")],
                                                     outcome=R.GRADER_FAILED)}[record]()
    back = type(made).from_json(json.loads(json.dumps(made.to_json())))
    assert back == made
    if record == "StudentResult":
        assert (back.score, back.max_score, back.outcome) == (1.5, 2.0, "grader failed")
        with pytest.raises(ValueError, match="unknown outcome"):
            R.StudentResult("s", [], outcome="oops")
