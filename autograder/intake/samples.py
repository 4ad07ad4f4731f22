"""Make submissions the way students would: from the release, by filling in (or breaking) answer cells.

Used by the regression tests (one fixture per failure mode) and to regenerate the demo's sample
submissions: ``python -m autograder.intake.samples`` rewrites ``autograder/samples/<assignment>/``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from autograder.course.source import REPO

_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def answers(solution_nb) -> dict[str, str]:
    """The instructor's answer for each solution cell, markers removed, by grade id."""
    return {_grade_id(c): "\n".join(line for line in c.source.splitlines() if not _MARKER.match(line))
            for c in solution_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def fill(release_nb, solution_nb, only: set[str] | None = None):
    """A copy of the release with the instructor's answers typed into the solution cells (all of them,
    or those whose grade id is in ``only``)."""
    nb = copy.deepcopy(release_nb)
    ans = answers(solution_nb)
    for cell in nb.cells:
        gid = _grade_id(cell)
        if gid in ans and (only is None or gid in only):
            cell.source = ans[gid]
    return nb


def edit(nb, grade_id: str, change) -> object:
    """A copy of ``nb`` with ``change(source) -> source`` applied to the cell ``grade_id``."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if _grade_id(cell) == grade_id:
            cell.source = change(cell.source)
            return nb
    raise KeyError(f"no cell with grade id {grade_id!r}")


def replace(old: str, new: str):
    """A ``change`` for ``edit`` that replaces ``old`` by ``new`` once, and fails loudly if ``old`` is absent
    (so that a sample meant to be wrong cannot silently stay right when the solution changes)."""
    def change(source: str) -> str:
        if old not in source:
            raise ValueError(f"{old!r} not found in the cell")
        return source.replace(old, new, 1)
    return change


def rename_locals(source: str, suffix: str = "_mine") -> str:
    """``source`` as a student who copied it would hand it in: every local variable of its functions
    renamed (``x`` -> ``x_mine``), parameters, attributes, keyword arguments, strings and comments left as
    they are. Names are found with ``ast`` (what the functions assign) and replaced with ``tokenize``."""
    import ast
    import io
    import tokenize
    tree = ast.parse(source)
    local = set()
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        params = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs,
                                  *filter(None, [fn.args.vararg, fn.args.kwarg])]}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - params
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    depth, renamed = 0, []
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        before = tokens[i - 1].string if i else ""
        if (tok.type == tokenize.NAME and tok.string in local and before != "."
                and not (depth > 0 and after == "=")):          # not an attribute, not a keyword argument
            tok = tok._replace(string=tok.string + suffix)
        renamed.append(tok)
    out = tokenize.untokenize(renamed)
    ast.parse(out)                                              # still Python
    return out


def delete(nb, grade_id: str) -> object:
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if _grade_id(c) != grade_id]
    return nb


def load(assignment: str, notebook: str, repo: Path = REPO):
    """(release notebook, solution notebook) of the repository."""
    return (nbformat.read(repo / "notebooks" / assignment / f"{notebook}.ipynb", as_version=4),
            nbformat.read(repo / "solutions" / assignment / f"{notebook}.ipynb", as_version=4))


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def rope_samples(dest: Path, repo: Path = REPO) -> None:
    """The demo's three students for the RoPE assignment: complete, partial and broken."""
    release, solution = load("rope", "rope", repo)
    complete = fill(release, solution)
    write(complete, dest / "alice" / "rope.ipynb")
    # bob: two exercises right, the pairs one with the sign of the sine term flipped, the halves one not done
    partial = fill(release, solution, only={"rope_thetas", "rope_matrix", "apply_rope_pairs"})
    partial = edit(partial, "apply_rope_pairs", replace("+ swapped * sin", "- swapped * sin"))
    write(partial, dest / "bob" / "rope.ipynb")
    # carol: a syntax error in one answer, and she deleted a test cell (nbgrader puts it back)
    broken = edit(complete, "rope_matrix", lambda s: s + "\n    return R R\n")
    broken = delete(broken, "test_rope_thetas")
    write(broken, dest / "carol" / "rope.ipynb")


if __name__ == "__main__":
    rope_samples(REPO / "autograder" / "samples" / "rope")
    print("wrote autograder/samples/rope/")
