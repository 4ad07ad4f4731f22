"""course_lib.grading's two steps: ``record`` (in the student's kernel) and ``verify`` (in the grader's own
process), the record as plain data, and the tripwires on forbidden shortcuts."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.attention import rope

pytestmark = pytest.mark.grading


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.delenv(grading.RECORD_ENV, raising=False)
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)


def off_by_one(x, positions, base=10000.0):
    return rope.apply_rope_pairs(x, positions + 1, base)


def test_record_of_the_reference_verifies():
    rec = grading.record("apply_rope_pairs", rope.apply_rope_pairs)
    n = len(grading.exercises()["apply_rope_pairs"].cases)
    meta = 0 if torch.cuda.is_available() else 1           # the device contract on "meta" where no GPU is
    assert len(rec["cases"]) == n * (len(grading.devices()) + meta)
    verdict = grading.verify(rec)
    assert verdict.passed and verdict.message.startswith(f"apply_rope_pairs: {n} cases passed on cpu")


def test_record_is_plain_data(tmp_path):
    """What the kernel writes loads with torch.load(weights_only=True): no code can come back with it."""
    path = tmp_path / "apply_rope_pairs.pt"
    torch.save(grading.record("apply_rope_pairs", off_by_one), path)
    rec = grading.load_record(path)
    verdict = grading.verify(rec)
    assert not verdict.passed and "largest error" in verdict.message


def test_check_only_records_under_the_autograder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(grading.RECORD_ENV, str(tmp_path))
    assert grading.check("apply_rope_pairs", off_by_one) is None          # no verdict in the kernel
    assert "recorded" in capsys.readouterr().out
    verdict = grading.verify(grading.load_record(tmp_path / "apply_rope_pairs.pt"))
    assert not verdict.passed
    monkeypatch.delenv(grading.RECORD_ENV)
    with pytest.raises(AssertionError) as info:
        grading.check("apply_rope_pairs", off_by_one)
    assert str(info.value) == verdict.message        # the same one-line message either way


def test_verification_ignores_what_the_kernel_patched(monkeypatch):
    """The comparison does not go through functions a student's code could patch."""
    rec = grading.record("apply_rope_pairs", off_by_one)
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch.testing, "assert_close", lambda *a, **k: None)
    monkeypatch.setattr(math, "isclose", lambda *a, **k: True)
    assert not grading.verify(rec).passed


def test_a_record_missing_cases_or_devices_fails():
    rec = grading.record("rope_thetas", rope.rope_thetas)
    dropped = {**rec, "cases": rec["cases"][1:]}
    verdict = grading.verify(dropped)
    assert not verdict.passed and "no output was recorded" in verdict.message
    verdict = grading.verify(rec, on=["cpu", "cuda"])      # a device the kernel skipped
    assert not verdict.passed and "on cuda: no output was recorded" in verdict.message


def test_a_forged_record_fails():
    rec = grading.record("rope_thetas", rope.rope_thetas)
    for entry in rec["cases"]:
        entry["output"] = {"tensor": torch.zeros(1), "device": "cpu"}
    assert not grading.verify(rec).passed
    assert not grading.verify({"exercise": "no_such_exercise", "cases": []}).passed


def _naive_attention(q, k, v):
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(scores, -1) @ v


def _attention_cases():
    def make(g, dev):
        q, k, v = torch.randn(3, 2, 3, 5, 8, generator=g).unbind(0)
        return (q.to(dev), k.to(dev), v.to(dev)), {}
    return [grading.Case("q, k, v of shape (2, 3, 5, 8)", make)]


@pytest.fixture
def attention_exercise(monkeypatch):
    """A temporary exercise that forbids PyTorch's fused attention (as the attention assignments do)."""
    ex = grading.Exercise("tmp_causal_attention", _naive_attention, _attention_cases(),
                          forbidden=("torch.nn.functional.scaled_dot_product_attention", "aten::_scaled_dot_product",
                                     "aten::scaled_dot_product"))
    monkeypatch.setitem(grading.exercises(), ex.name, ex)
    return ex.name


def test_an_honest_implementation_passes_the_tripwires(attention_exercise, capsys):
    grading.check(attention_exercise, _naive_attention)
    assert "1 cases passed" in capsys.readouterr().out


def test_forbidden_shortcut_fails_and_says_why(attention_exercise):
    def shortcut(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    with pytest.raises(AssertionError, match=r"uses .*scaled_dot_product.*implement yourself"):
        grading.check(attention_exercise, shortcut)


def test_forbidden_shortcut_is_caught_through_an_alias(attention_exercise):
    """Saved before the tripwire went up, the alias still reaches PyTorch's dispatcher."""
    sdpa = torch._C._nn.scaled_dot_product_attention

    def sneaky(q, k, v):
        return sdpa(q, k, v, is_causal=True)

    with pytest.raises(AssertionError, match=r"uses aten::_scaled_dot_product"):
        grading.check(attention_exercise, sneaky)


def test_tripwires_are_removed_afterwards(attention_exercise):
    original = F.scaled_dot_product_attention
    grading.record(attention_exercise, _naive_attention)
    assert F.scaled_dot_product_attention is original
