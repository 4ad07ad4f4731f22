"""Each exercise's text in solutions/ states its grading contract, as the registry has it (course_lib.contracts):
the generated ``**Graded on:**`` line verbatim, each of its forbidden shortcuts by name, and no shortcut that
only another exercise forbids (a student would think it forbidden here too). Regenerate the lines with
``python -m course_lib.contracts --write``."""
import re
from functools import lru_cache

import nbformat
import pytest
import torch

from course_lib import contracts, grading
from course_lib.contracts import contract, display_names, exercise_cells, exercise_text
from course_lib.grading import Case, Exercise

pytestmark = pytest.mark.notebooks

EXERCISES = sorted(grading.exercises(), key=lambda n: (grading._ASSIGNMENT[n], n))
ALL_SHORTCUTS = sorted({s for ex in grading.exercises().values() for s in display_names(ex.forbidden)})


@lru_cache(maxsize=None)
def _notebook(assignment: str):
    return nbformat.read(contracts.SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)


def _text(name: str) -> str:
    return exercise_text(_notebook(grading._ASSIGNMENT[name]), name)


def _short(text: str) -> str:
    """Long spellings of the shortcuts in their display form (``torch.nn.functional.X`` → ``F.X``)."""
    text = text.replace("torch.nn.attention.flex_attention.flex_attention", "flex_attention")
    return text.replace("torch.nn.functional.", "F.").replace("torch.nn.", "nn.")


def _names(text: str, shortcut: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(shortcut)}(?!\w)", _short(text)) is not None


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_text_carries_its_contract(name):
    assert contract(name) in _text(name), (
        f"{grading._ASSIGNMENT[name]}/{name}: the exercise's text lacks its line\n  {contract(name)}\n"
        f"run `python -m course_lib.contracts --write {grading._ASSIGNMENT[name]}`")


@pytest.mark.parametrize("name", EXERCISES)
def test_exercise_text_names_its_shortcuts_and_no_other(name):
    text = _text(name)
    own = display_names(grading.exercises()[name].forbidden)
    missing = [s for s in own if not _names(text, s)]
    assert not missing, f"{name}: its text does not name the forbidden {missing}"
    foreign = [s for s in ALL_SHORTCUTS if s not in own and _names(text, s)]
    assert not foreign, f"{name}: its text names {foreign}, forbidden in other exercises but not in this one"


def test_contract_line_is_the_last_line_of_the_exercise_statement():
    for name in EXERCISES:
        nb = _notebook(grading._ASSIGNMENT[name])
        last = nb.cells[exercise_cells(nb, name)[-1]].source
        assert last.rstrip("\n").split("\n")[-1] == contract(name), name
        assert sum(ln.startswith(contracts.MARK) for ln in _text(name).split("\n")) == 1, name


# ------------------------------------------------------------------------------------------- contract()
def _toy(q, k, v, mask=None):
    return q.clone()


def _toy_case(g, dev):
    q = torch.randn(2, 3, 4, generator=g, dtype=torch.float64).to(dev)
    k = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).to(dev).transpose(-1, -2)   # non-contiguous
    v = torch.full((2, 3, 4), float("nan"), dtype=torch.bfloat16, device=dev)
    return (q, k, v), {"mask": torch.zeros(0, 3, dtype=torch.float32, device=dev)}


def test_contract_of_a_toy_exercise(monkeypatch):
    ex = Exercise("toy_attention", _toy, [Case("toy", _toy_case)], grad=True,
                  forbidden=("torch.nn.functional.scaled_dot_product_attention",
                             "torch._C._nn.scaled_dot_product_attention", "aten::_scaled_dot_product",
                             "torch.nn.attention.flex_attention.flex_attention", "torch.nn.MultiheadAttention",
                             "torch.softmax", "torch._C._nn.gelu"))
    monkeypatch.setitem(grading.exercises(), "toy_attention", ex)
    monkeypatch.setitem(grading._ASSIGNMENT, "toy_attention", "toy")
    assert contract("toy_attention") == (
        "**Graded on:** dtypes float32, float64, bfloat16; non-contiguous inputs; empty inputs; "
        "NaN/inf where ignored; gradients to q, k, mask; a new tensor; inputs unchanged; "
        "tensors on the input's device. **Not allowed:** `F.scaled_dot_product_attention`, `flex_attention`, "
        "`nn.MultiheadAttention`, `torch.softmax`, `torch._C._nn.gelu`.")


def test_contract_of_an_aliasing_integer_exercise(monkeypatch):
    ex = Exercise("toy_count", lambda n, dtype=torch.float16: n, [Case("n", lambda g, dev: ((3,), {}))])
    ex2 = Exercise("toy_view", lambda x: x, [Case("x", lambda g, dev: ((torch.arange(3, device=dev),), {}))],
                   grad=("x",), may_alias=True)
    for e in (ex, ex2):
        monkeypatch.setitem(grading.exercises(), e.name, e)
        monkeypatch.setitem(grading._ASSIGNMENT, e.name, "toy")
    assert contract("toy_count") == "**Graded on:** dtypes float16; a Python int."   # the default dtype
    assert contract("toy_view") == ("**Graded on:** dtypes int64; gradients to x; may return its input; "
                                    "inputs unchanged; tensors on the input's device.")
