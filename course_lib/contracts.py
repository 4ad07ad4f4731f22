"""Each exercise's grading contract in one markdown line, generated from the registry, so that what a
student reads and what the hidden cases check cannot drift apart (COURSE_DESIGN §3: "every rule a hidden
case applies is written in the exercise").

``contract(name)`` reads the exercise's entry (``course_lib.grading.exercises()``) and builds its cases on
the CPU to see their inputs; for ``grouped_query_attention``:

    **Graded on:** dtypes float32, float64, float16, bfloat16; non-contiguous inputs; gradients to q, k, v;
    a new tensor; inputs unchanged; tensors on the input's device. **Not allowed:**
    `F.scaled_dot_product_attention`, `flex_attention`, `nn.MultiheadAttention`,
    `F.multi_head_attention_forward`.

(one line in the notebook). The dtypes are those of the cases' tensor inputs and ``torch.dtype``
arguments (a default one included when a case leaves it out); "non-contiguous inputs", "empty inputs",
"NaN/inf where ignored" (an input holds NaN) and "−∞ inputs" (an input other than a mask holds ±∞)
appear when some case has such an input; the gradients come from ``Exercise.grad`` (True: every input
that is float32/float64 in some case), "a new tensor" / "may return its input" from ``Exercise.may_alias``
and the kind of the reference's output (a Python int is said so); "inputs unchanged" and the device rule
wherever an input is a tensor. The forbidden shortcuts are the Python-level names of
``Exercise.forbidden`` (its ``aten::`` names are the dispatcher's aliases of the same calls), in the short
form of ``display_names``.

The line is the last line of the markdown cell that states the exercise, just before its solution cell
(``def <name>(``) in ``solutions/<assignment>/<assignment>.ipynb``; it starts with ``**Graded on:**``, by
which an old one is found and replaced:

    python -m course_lib.contracts [--write] [ASSIGNMENT ...]

checks that every exercise's text carries its current line (exit status 1 if not) and, with ``--write``,
puts it there (nbformat: cell ids, metadata and every other cell kept as they are).
"""
from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import torch

from . import grading
from .grading import _flat as _leaves      # the leaves of nested args, in the order record() walks them

__all__ = ["contract", "display_names", "forbidden_names", "exercise_text", "write_contracts", "MARK"]

MARK = "**Graded on:**"
SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"

_DTYPE_ORDER = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def display_names(forbidden: tuple[str, ...] | list[str]) -> list[str]:
    """The Python-level forbidden names in the short form a student reads, deduplicated, in order:
    ``torch.nn.functional.X`` → ``F.X``; ``torch._C._nn.X`` dropped when ``F.X`` is there;
    ``torch.nn.attention.flex_attention.flex_attention`` → ``flex_attention``; ``torch.nn.X`` → ``nn.X``;
    ``torch.X`` kept; ``aten::`` names left out."""
    python = [f for f in forbidden if not f.startswith("aten::")]
    out: list[str] = []
    for f in python:
        if f.startswith("torch._C._nn."):
            short = f.removeprefix("torch._C._nn.")
            if f"torch.nn.functional.{short}" in python:
                continue
            name = f
        elif f == "torch.nn.attention.flex_attention.flex_attention":
            name = "flex_attention"
        elif f.startswith("torch.nn.functional."):
            name = "F." + f.removeprefix("torch.nn.functional.")
        elif f.startswith("torch.nn."):
            name = "nn." + f.removeprefix("torch.nn.")
        else:
            name = f
        if name not in out:
            out.append(name)
    return out


def forbidden_names(name: str) -> list[str]:
    """The display names of exercise ``name``'s forbidden shortcuts."""
    return display_names(grading.exercises()[name].forbidden)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_key(dtype: torch.dtype) -> tuple:
    if dtype in _DTYPE_ORDER:
        return (0, _DTYPE_ORDER.index(dtype), "")
    family = 1 if dtype.is_floating_point else 3 if dtype == torch.bool else 4 if dtype.is_complex else 2
    return (family, dtype.itemsize, _dtype_name(dtype))


def _output_kind(out: Any, may_alias: bool) -> str | None:
    tensors = [t for t in _leaves(out) if isinstance(t, torch.Tensor)]
    if tensors:
        if may_alias:
            return "may return its input"
        return "a new tensor" if isinstance(out, torch.Tensor) else "new tensors"
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, int) for o in out):
        return "Python ints"
    if isinstance(out, bool):
        return "a Python bool"
    if isinstance(out, int):
        return "a Python int"
    if isinstance(out, float):
        return "a Python float"
    return None


def contract(name: str) -> str:
    """The one markdown line that states what exercise ``name`` is graded on and what it may not call."""
    ex = grading.exercises()[name]
    try:
        signature = inspect.signature(ex.reference).parameters
    except (TypeError, ValueError):
        signature = {}
    params = list(signature)
    defaults = {n: p.default for n, p in signature.items() if isinstance(p.default, torch.dtype)}
    dtypes: set[torch.dtype] = set()
    noncontiguous = empty = nan = has_tensor = has_device_arg = False
    differentiable: set[str] = set()
    infinite: set[str] = set()      # the signs of the infinite values of inputs other than a mask
    output = None
    for i, case in enumerate(ex.cases):
        args, kwargs = case.make(torch.Generator().manual_seed(0), torch.device("cpu"))
        named = [(params[k] if k < len(params) else f"argument {k + 1}", a) for k, a in enumerate(args)]
        named += sorted(kwargs.items())
        given = {n for n, _ in named}
        named += [(n, d) for n, d in defaults.items() if n not in given]    # a dtype left out: the default's
        for pname, value in named:
            for leaf in _leaves(value):
                if isinstance(leaf, torch.dtype):
                    dtypes.add(leaf)
                elif isinstance(leaf, torch.device):
                    has_device_arg = True
                elif isinstance(leaf, torch.Tensor):
                    has_tensor = True
                    dtypes.add(leaf.dtype)
                    noncontiguous |= not leaf.is_contiguous()
                    empty |= leaf.numel() == 0
                    if leaf.is_floating_point() and leaf.numel():
                        nan |= bool(leaf.isnan().any())
                        if pname != "mask":      # an additive mask's −∞ is what a mask is
                            infinite |= {"−" if v < 0 else "+" for v in leaf[leaf.isinf()].tolist()}
                    if leaf.dtype in (torch.float32, torch.float64):
                        differentiable.add(pname)
        if "device" in params:
            has_device_arg = True
        if output is None and i == 0:
            output = _output_kind(ex.reference(*args, **kwargs), ex.may_alias)

    parts = []
    if dtypes:
        parts.append("dtypes " + ", ".join(_dtype_name(d) for d in sorted(dtypes, key=_dtype_key)))
    if noncontiguous:
        parts.append("non-contiguous inputs")
    if empty:
        parts.append("empty inputs")
    if nan:
        parts.append("NaN/inf where ignored")
    elif infinite:
        parts.append(("±" if len(infinite) == 2 else infinite.pop().replace("+", "")) + "∞ inputs")
    if ex.grad is True:
        grads = [p for p in params if p in differentiable] + sorted(differentiable - set(params))
    else:
        grads = list(ex.grad or ())
    if grads:
        parts.append("gradients to " + ", ".join(grads))
    if output:
        parts.append(output)
    if has_tensor:
        parts.append("inputs unchanged")
        parts.append("tensors on the input's device")
    elif has_device_arg:
        parts.append("tensors on the `device` given")
    line = f"{MARK} " + "; ".join(parts) + "."
    shortcuts = display_names(ex.forbidden)
    if shortcuts:
        line += " **Not allowed:** " + ", ".join(f"`{s}`" for s in shortcuts) + "."
    return line


# ------------------------------------------------------------------------------------------ notebooks
def _notebook_path(assignment: str) -> Path:
    return SOLUTIONS / assignment / f"{assignment}.ipynb"


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and bool(cell.metadata.get("nbgrader", {}).get("grade"))


def exercise_cells(nb, name: str) -> list[int]:
    """Indices of the markdown cells that state exercise ``name``: those after the previous test cell
    (or the notebook's start) and before the solution code cell that defines ``def name(``."""
    pattern = re.compile(rf"^def {re.escape(name)}\(", re.M)
    solution = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and pattern.search(c.source)), None)
    if solution is None:
        raise LookupError(f"no code cell defines `def {name}(`")
    start = max((i for i in range(solution) if _is_test_cell(nb.cells[i])), default=-1) + 1
    return [i for i in range(start, solution) if nb.cells[i].cell_type == "markdown"]


def exercise_text(nb, name: str) -> str:
    """The markdown that states exercise ``name`` (see ``exercise_cells``), joined."""
    return "\n\n".join(nb.cells[i].source for i in exercise_cells(nb, name))


def _with_line(source: str, line: str) -> str:
    kept = [ln for ln in source.rstrip("\n").split("\n") if not ln.startswith(MARK)]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n\n" + line


def write_contracts(assignment: str, *, write: bool = True) -> list[str]:
    """Put each exercise's ``contract`` line at the end of its last markdown cell; return the names of the
    exercises whose line was missing or stale (written when ``write``)."""
    import nbformat
    path = _notebook_path(assignment)
    nb = nbformat.read(path, as_version=4)
    stale = []
    for name in grading.exercises_of(assignment):
        cells = exercise_cells(nb, name)
        if not cells:
            raise LookupError(f"{assignment}: exercise {name} has no markdown cell before its solution")
        cell = nb.cells[cells[-1]]
        new = _with_line(cell.source, contract(name))
        if new != cell.source:
            stale.append(name)
            cell.source = new
    if write and stale:
        nbformat.write(nb, path)
    return stale


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in argv
    wanted = [a for a in argv if a != "--write"] or sorted(set(grading._ASSIGNMENT[n] for n in grading.exercises()))
    bad = 0
    for assignment in wanted:
        stale = write_contracts(assignment, write=write)
        for name in stale:
            print(f"{assignment}/{name}: contract line {'written' if write else 'missing or stale'}")
        bad += len(stale)
    return 0 if write or not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
