"""Which cells of a notebook grading runs: illustrative cells are skipped, test cells get their own limit.

The instructor tags a cell of ``solutions/<assignment>/<notebook>.ipynb`` with ``illustrative`` (a Jupyter
cell tag, in ``metadata.tags``; nbgrader's own metadata stays as it is) when it only shows something: a
figure, a demonstration, a timing study, a training run that no test reads. The release keeps these cells
for students; grading does not run them.

What counts is the instructor's source, never the student's copy: a submitted cell is skipped when it is
the copy of a tagged source cell (same cell id, or the same source where ids were lost) *and* its source
is unchanged. A tag a student adds or removes does nothing; a demo cell the student rewrote is their own
code and runs. nbgrader's grade and solution cells are never skipped.

``dependency_problems`` proves the other half (used by ``release`` and by the tests): no cell that still
runs reads a name whose nearest earlier definition is in a skipped cell. It reads each cell's module-level
names from Python's own symbol tables (``symtable``: assignments, imports, ``def``/``class``, and the free
names of functions and classes); a name defined in a skipped cell and again before its use is fine. Side effects through objects (``model.train()`` in a
skipped cell) are out of its reach: the test that grades every assignment's complete submission with the
cells skipped catches those.
"""
from __future__ import annotations

import builtins
import re

TAG = "illustrative"
_MAGIC = re.compile(r"^\s*[%!]")


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def is_graded(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return isinstance(meta, dict) and bool(meta.get("grade") or meta.get("solution"))


def tagged(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return cell.get("cell_type") == "code" and isinstance(tags, list) and TAG in tags and not is_graded(cell)


class SkipPlan:
    """The illustrative cells of one source notebook, and the test of whether a submitted cell is one."""

    def __init__(self, source_nb):
        cells = [c for c in source_nb.cells if tagged(c)]
        self.by_id = {c.get("id"): _normal(c.source) for c in cells if c.get("id")}
        self.sources = {_normal(c.source) for c in cells}

    def __len__(self):
        return len(self.sources)

    def skips(self, cell) -> bool:
        if cell.get("cell_type") != "code" or is_graded(cell):
            return False
        source = _normal(cell.get("source", ""))
        if cell.get("id") in self.by_id:
            return self.by_id[cell["id"]] == source
        return source in self.sources


def skipped_indices(nb, plan: SkipPlan) -> set[int]:
    return {i for i, c in enumerate(nb.cells) if plan.skips(c)}


def without_skipped(nb, plan: SkipPlan):
    """A copy of ``nb`` without the cells grading skips (what `plain execution of the graded cells` runs)."""
    import copy
    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if not plan.skips(c)]
    return out


def _names(source: str) -> tuple[set[str], set[str]]:
    """(module-level names the cell binds, module-level names it reads), from Python's own symbol tables
    (``symtable``: functions' and classes' free names count as reads, their locals do not). A name the
    cell binds itself counts as its own, not as a read."""
    import symtable

    code = "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())
    try:
        top = symtable.symtable(code, "<cell>", "exec")
    except SyntaxError:
        return set(), set()
    stores = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    loads = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        loads |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
        stack.extend(table.get_children())
    return stores, loads - stores - set(dir(builtins))


def dependency_problems(nb, skipped: set[int]) -> list[str]:
    """One line per name that a cell grading runs reads from a skipped cell ([] when none)."""
    last_def: dict[str, int] = {}
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        stores, loads = _names(cell.source)
        if i not in skipped:
            for name in sorted(loads):
                if last_def.get(name) in skipped:
                    problems.append(f"cell {_code_index(nb, i)} reads {name!r}, last defined in the "
                                    f"illustrative cell {_code_index(nb, last_def[name])}, which grading skips")
        for name in stores:
            last_def[name] = i
    return problems


def _code_index(nb, i: int) -> int:
    """The 1-based position of cell ``i`` in the notebook (markdown cells count)."""
    return i + 1
