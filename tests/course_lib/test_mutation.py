"""The mutation benchmark's machinery (benchmarks/mutation.py, bench_mutation.run_exercise) on toy exercises:
the mutants are the ones its operators promise, the reference itself is never changed, a mutant goes through
record/verify like a student's function, and strong cases kill what weak ones let through."""
from __future__ import annotations

import ast

import pytest
import torch

from benchmarks import bench_mutation, mutation
from course_lib import grading
from course_lib.grading import Case, Exercise

pytestmark = pytest.mark.grading


def affine(x, shift=1.0):
    """A toy reference: 2x + shift, summed over the last dimension."""
    if x.dim() == 0:
        raise ValueError("x must have a dimension")
    y = x * 2 + shift
    return y.sum(dim=-1)


def _cases(values):
    return [Case(f"x={v}", lambda g, dev, v=v: ((torch.tensor(v, dtype=torch.float64, device=dev),), {}))
            for v in values]


@pytest.fixture
def toy(monkeypatch):
    def register(name, reference, cases, **fields):
        monkeypatch.setitem(grading.exercises(), name, Exercise(name, reference, cases, **fields))
        monkeypatch.setitem(grading._ASSIGNMENT, name, "toy")
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)
    return register


def test_operators_and_labels():
    labels = [m.label for m in mutation.mutants("toy", affine)]
    assert len(labels) == len(set(labels)), "labels tell the mutants apart"
    for expected in ["affine line 5: operator `x * 2` -> `x / 2`",
                     "affine line 5: operator `x * 2 + shift` -> `x * 2 - shift`",
                     "affine line 5: term dropped `x * 2 + shift` -> `x * 2`",
                     "affine line 5: constant `2` -> `3`",
                     "affine line 6: dim= dropped `y.sum(dim=-1)` -> `y.sum()`",
                     "affine line 6: unary dropped `-1` -> `1`"]:
        assert expected in labels, (expected, labels)
    assert not any("line 3" in label or "line 4" in label for label in labels), "validation is not mutated"
    assert not any("detached" in label for label in labels), "no gradient check declared: no detach mutant"
    assert any("output detached" in m.label for m in mutation.mutants("toy", affine, grad=True))


def test_a_mutant_is_a_new_function_and_the_reference_stays():
    x = torch.tensor([[1.0, 2.0]])
    before = affine(x)
    wanted = {"affine line 5: operator `x * 2` -> `x / 2`", "affine line 6: dim= dropped `y.sum(dim=-1)` -> `y.sum()`"}
    results = {m.label: m.fn(x) for m in mutation.mutants("toy", affine) if m.label in wanted}
    assert torch.equal(affine(x), before)
    # the oracle: each mutant computes what its label says
    assert torch.equal(results["affine line 5: operator `x * 2` -> `x / 2`"], (x / 2 + 1).sum(-1))
    assert torch.equal(results["affine line 6: dim= dropped `y.sum(dim=-1)` -> `y.sum()`"], (x * 2 + 1).sum())


def test_strong_cases_kill_what_weak_cases_let_through(toy):
    toy("toy_weak", affine, _cases([[0.0]]))                       # x = 0: x·2 and x/2 agree
    toy("toy_strong", affine, _cases([[0.0], [1.5, -2.0], [[1.0, 2.0], [3.0, 4.0]]]))
    weak, strong = bench_mutation.run_exercise("toy_weak"), bench_mutation.run_exercise("toy_strong")
    survivors = lambda r: {x["label"] for x in r["rows"] if x["status"] == "survived"}    # noqa: E731
    assert "affine line 5: operator `x * 2` -> `x / 2`" in survivors(weak)
    assert "affine line 5: operator `x * 2` -> `x / 2`" not in survivors(strong)
    assert survivors(strong) < survivors(weak)
    killed = [x for x in strong["rows"] if x["status"] == "killed"]
    assert all(x["why"].startswith("toy_strong, case ") for x in killed), "killed by verify's verdicts"


def test_gradient_declared_kills_the_detached_mutant(toy):
    toy("toy_grad", affine, _cases([[1.5, -2.0]]), grad=True)
    rows = {x["label"]: x for x in bench_mutation.run_exercise("toy_grad")["rows"]}
    detached = [x for label, x in rows.items() if "output detached" in label]
    assert detached and all(x["status"] == "killed" and "no gradient reaches x" in x["why"] for x in detached)


def test_a_mutant_that_never_ends_is_stopped_and_killed(toy, monkeypatch):
    def loop(x):
        n = 0
        while n < 3:
            n = n + 1
        return x + n
    toy("toy_loop", loop, _cases([[1.0]]))
    rows = {x["label"]: x for x in bench_mutation.run_exercise("toy_loop", limit=0.5)["rows"]}
    hung = rows["loop line 4: term dropped `n + 1` -> `n`"]
    assert hung["status"] == "killed" and "ran past its time" in hung["why"]


def test_equivalent_judgements_match_labels_and_patterns():
    eq = {"affine line 5: constant `2` -> `3`": "exact", "affine line 6: *": "a pattern"}
    assert bench_mutation._judged("affine line 5: constant `2` -> `3`", eq) == "affine line 5: constant `2` -> `3`"
    assert bench_mutation._judged("affine line 6: dim= dropped `y.sum(dim=-1)` -> `y.sum()`", eq) == "affine line 6: *"
    assert bench_mutation._judged("affine line 5: constant `2` -> `1`", eq) is None


def test_every_equivalent_judgement_names_an_exercise_and_gives_a_reason():
    judged = bench_mutation.equivalent()
    prefixes = tuple(f"{n} line " for n in _function_names())
    for exercise, entries in judged.items():
        assert exercise in grading.exercises(), f"equivalent_mutants: unknown exercise {exercise!r}"
        for label, reason in entries.items():
            assert isinstance(reason, str) and reason.strip() and "\n" not in reason, (exercise, label)
            assert label.startswith(prefixes), (exercise, label)


def _function_names() -> set[str]:
    """The names of every function defined in course_lib's sources (read, not imported)."""
    from pathlib import Path
    import course_lib
    names = set()
    for path in Path(course_lib.__file__).parent.rglob("*.py"):
        names |= {node.name for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names
