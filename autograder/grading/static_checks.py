"""Read a submission's code, without running it, for shortcuts an exercise forbids.

The grader reads the submitted file itself (nothing the student's code does at run time changes what
it finds). For every cell the student could write (the solution cells of the nbgrader source, and cells
the student added), it resolves import aliases (``import torch.nn.functional as F``) and reports, per
exercise:

* a forbidden PyTorch shortcut named in ``Exercise.forbidden`` (``F.conv2d``, ``torch.nn.Conv2d``,
  ``from torch.nn.functional import scaled_dot_product_attention``, ``getattr(F, "conv2d")``);
* an import of a ``course_lib`` reference that an exercise of this assignment asks the student to write.

It complements the run-time tripwires of ``course_lib.grading`` (which see calls, however they are
spelled) and the sandbox (whose ``course_lib`` has no reference bodies).
"""
from __future__ import annotations

import ast

import nbformat


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _student_cells(submitted, source) -> list[str]:
    """Sources of the cells a student writes: solution cells of the source, and cells not in the source."""
    meta = {c.metadata.get("nbgrader", {}).get("grade_id"): c.metadata.get("nbgrader", {})
            for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id")}
    out = []
    for cell in submitted.cells:
        if cell.cell_type != "code":
            continue
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid is None or gid not in meta or meta[gid].get("solution"):
            out.append(cell.source)
    return out


def scan(submitted, source, exercises: dict) -> dict[str, str]:
    """{exercise name: one-line reason} for every exercise whose function (or a helper it calls, defined
    in the student's cells) uses a forbidden name or a course_lib reference. Code outside those
    functions (a student's own comparison with PyTorch in a scratch cell) is not counted.
    ``exercises``: name -> course_lib.grading.Exercise of this assignment."""
    references = {ex.reference.__name__ for ex in exercises.values()}
    trees = []
    for text in _student_cells(submitted, source):
        lines = [line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            trees.append(ast.parse("\n".join(lines)))
        except SyntaxError:
            continue
    aliases: dict[str, str] = {}
    functions: dict[str, ast.AST] = {}
    for tree in trees:                                # imports first: assignments below may use them
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[node.name] = node          # the last definition wins, as when the notebook runs
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                target = _dotted(node.value, aliases)
                if target:
                    aliases[node.targets[0].id] = target

    def names_used(fn_name: str) -> set[str]:
        seen, todo, used = set(), [fn_name], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in functions:
                continue
            seen.add(name)
            for node in ast.walk(functions[name]):
                if isinstance(node, (ast.Attribute, ast.Name)):
                    dotted = _dotted(node, aliases)
                    if dotted:
                        used.add(dotted)
                    if isinstance(node, ast.Name) and node.id in functions:
                        todo.append(node.id)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    mod = getattr(node, "module", None)
                    for a in node.names:
                        used.add(f"{mod}.{a.name}" if mod else a.name)
                        if mod:
                            aliases[a.asname or a.name] = f"{mod}.{a.name}"
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                      and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                      and isinstance(node.args[1].value, str)):
                    owner = _dotted(node.args[0], aliases)
                    if owner:
                        used.add(f"{owner}.{node.args[1].value}")
        return used

    found = {}
    for name, ex in exercises.items():
        used = names_used(name)
        bad = sorted(n for n in used if n in ex.forbidden)
        refs = sorted(n for n in used if n.startswith("course_lib.") and n.rpartition(".")[2] in references)
        if bad:
            found[name] = f"uses {', '.join(bad)}, which this exercise asks you to implement yourself"
        elif refs:
            found[name] = f"uses the course's reference implementation ({', '.join(refs)}) instead of your own"
    return found


def scan_files(submitted_path, source_path, exercises: dict) -> dict[str, str]:
    return scan(nbformat.read(submitted_path, as_version=4), nbformat.read(source_path, as_version=4), exercises)
