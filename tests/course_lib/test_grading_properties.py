"""The properties course_lib.grading checks besides the values (course_lib.grading.PROPERTIES): gradients,
new tensors, non-contiguous cases, inputs unchanged when they hold NaN, and the device contract on the meta
device where no GPU is. Each on a toy exercise registered for the test only, against oracles the test writes
(autograd through an independent formula, PyTorch's own stride and storage queries)."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib import grading
from course_lib.grading import Case, Exercise

pytestmark = pytest.mark.grading

FAILURE = re.compile(r"^(?P<exercise>\w+), case (?P<i>\d+)/(?P<n>\d+) '(?P<case>[^']+)' on (?P<device>\S+): (?P<what>.+)$")


def _x(shape, dtype=torch.float64):
    def make(g, dev):
        return (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev),), {}
    return Case(f"x{shape} {str(dtype).replace('torch.', '')}", make)


@pytest.fixture
def toy(monkeypatch):
    """register(name, reference, cases, **fields): an exercise that exists for this test only."""
    def register(name, reference, cases, **fields):
        ex = Exercise(name, reference, cases, **fields)
        monkeypatch.setitem(grading.exercises(), name, ex)
        monkeypatch.setitem(grading._ASSIGNMENT, name, "toy")
        return ex
    return register


def failure(name, fn) -> re.Match:
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn)
    msg = str(info.value)
    assert "\n" not in msg, msg
    m = FAILURE.match(msg)
    assert m is not None and m["exercise"] == name, msg
    return m


def passes(name, fn, capsys) -> str:
    assert grading.check(name, fn) is None
    return capsys.readouterr().out.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------------
def _softplus_ref(x):
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)          # the stable form


def test_gradients_flow_through_a_correct_function_written_otherwise(toy, capsys):
    toy("toy_softplus", _softplus_ref, [_x((3, 4)), _x((5,), torch.float32)], grad=True)
    assert "2 cases passed on cpu" in passes("toy_softplus", lambda x: torch.nn.functional.softplus(x), capsys)


@pytest.mark.parametrize("mistake, fragment", [
    (lambda x: _softplus_ref(x).detach(), "no gradient reaches x through your output"),
    (lambda x: torch.no_grad()(_softplus_ref)(x), "no gradient reaches x through your output"),
    (lambda x: torch.tensor(_softplus_ref(x).tolist(), dtype=x.dtype), "no gradient reaches x"),
    # right values, wrong gradient: the straight-through trick with slope 1 instead of sigmoid(x)
    (lambda x: _softplus_ref(x).detach() + (x - x.detach()), "the gradient with respect to x values differ"),
])
def test_gradient_mistakes_fail_with_one_line(toy, mistake, fragment):
    toy("toy_softplus", _softplus_ref, [_x((3, 4)), _x((5,), torch.float32)], grad=True)
    m = failure("toy_softplus", mistake)
    assert m["i"] == "1" and m["device"] == "cpu" and fragment in m["what"], m.string


def test_gradients_are_the_ones_autograd_gives(toy):
    """The recorded gradient is d(Σ w·y)/dx for the seeded w: check it against the closed form w·sigmoid(x)."""
    toy("toy_softplus", _softplus_ref, [_x((3, 4))], grad=True)
    rec = grading.record("toy_softplus", _softplus_ref, device=["cpu"])
    entry = next(e for e in rec["cases"] if e["device"] == "cpu")
    (x,), _ = grading.exercises()["toy_softplus"].cases[0].make(grading._generator(0), torch.device("cpu"))
    w = torch.randn(x.shape, generator=grading._generator(0, 1), dtype=torch.float64)
    assert entry["grads"]["names"] == ["x"]
    torch.testing.assert_close(entry["grads"]["values"][0]["tensor"], w * torch.sigmoid(x))


def test_no_gradient_check_where_the_exercise_is_not_differentiable(toy, capsys):
    toy("toy_round", torch.round, [_x((4,))])
    passes("toy_round", lambda x: torch.round(x).detach(), capsys)


# ---------------------------------------------------------------------------------------------------------
# new tensors
# ---------------------------------------------------------------------------------------------------------
def _relu_ref(x):
    return x.clamp(min=0)


@pytest.mark.parametrize("mistake, fragment", [
    (lambda x: x.clamp_(min=0), "output is the input x itself"),         # in place, nothing to change
    (lambda x: x if bool((x >= 0).all()) else x.clamp(min=0), "output is the input x itself"),
    (lambda x: x[...] if bool((x >= 0).all()) else x.clamp(min=0), "shares memory with the input x (it is a view of x)"),
])
def test_outputs_that_are_inputs_or_views_fail(toy, mistake, fragment):
    toy("toy_relu", _relu_ref, [Case("x(4,) non-negative", lambda g, dev: ((torch.rand(4, generator=g,
                                                                                          dtype=torch.float64).to(dev),), {}))])
    assert fragment in failure("toy_relu", mistake)["what"]


def test_a_view_fails_unless_the_exercise_allows_it(toy, capsys):
    view = lambda x: x.view(x.shape)                                    # noqa: E731 - same values, same memory
    t = torch.ones(3)
    assert view(t).untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    toy("toy_same", lambda x: x.clone(), [_x((2, 3))])
    assert "shares memory with the input x" in failure("toy_same", view)["what"]
    toy("toy_same_alias_ok", lambda x: x.clone(), [_x((2, 3))], may_alias=True)
    passes("toy_same_alias_ok", view, capsys)


def test_new_tensor_of_a_tuple_output_names_its_index(toy):
    toy("toy_pair", lambda x: (x + 1, x.clone()), [_x((2, 2))])
    assert "output[1] is the input x itself" in failure("toy_pair", lambda x: (x + 1, x))["what"]


# ---------------------------------------------------------------------------------------------------------
# non-contiguous cases
# ---------------------------------------------------------------------------------------------------------
def test_noncontiguous_case_has_the_same_values_in_a_strided_view():
    case = grading.noncontiguous(_x((3, 5)))
    assert case.name == "x(3, 5) float64, non-contiguous"
    (plain,), _ = _x((3, 5)).make(torch.Generator().manual_seed(1), torch.device("cpu"))
    (x,), _ = case.make(torch.Generator().manual_seed(1), torch.device("cpu"))
    assert not x.is_contiguous() and x.stride() == (2, 6)              # transposed in memory, stride 2
    assert torch.equal(x, plain)
    with pytest.raises(RuntimeError):
        x.view(-1)
    gaps = x.untyped_storage()                                          # the memory between the entries: NaN
    flat = torch.empty(0, dtype=x.dtype).set_(gaps)
    assert int(torch.isnan(flat).sum()) == 15


def test_record_keeps_inputs_non_contiguous(toy):
    seen = []
    toy("toy_sum", lambda x: x.sum(-1), [grading.noncontiguous(_x((3, 5)))])
    grading.record("toy_sum", lambda x: seen.append(x.is_contiguous()) or x.sum(-1), device=["cpu"])
    assert seen and not any(seen)


def test_code_that_assumes_contiguous_memory_fails_on_the_non_contiguous_case(toy):
    toy("toy_sum", lambda x: x.sum(-1), [_x((3, 5)), grading.noncontiguous(_x((3, 5)))])
    m = failure("toy_sum", lambda x: x.view(-1).view(x.shape).sum(-1))
    assert m["case"] == "x(3, 5) float64, non-contiguous" and "your function raised RuntimeError" in m["what"]


# ---------------------------------------------------------------------------------------------------------
# inputs unchanged, NaN included
# ---------------------------------------------------------------------------------------------------------
def test_nan_at_ignored_positions_is_not_a_modification(toy, capsys):
    def make(g, dev):
        x = torch.randn(6, generator=g, dtype=torch.float64)
        keep = torch.tensor([True, False, True, True, False, True])
        return (x.masked_fill(~keep, float("nan")).to(dev), keep.to(dev)), {}

    def masked_sum(x, keep):
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    toy("toy_masked_sum", masked_sum, [Case("x(6,) NaN where ignored", make)])
    passes("toy_masked_sum", lambda x, keep: x[keep].sum(), capsys)
    m = failure("toy_masked_sum", lambda x, keep: (x * keep).sum())           # 0 · NaN = NaN
    assert "values differ" in m["what"] and "got nan" in m["what"]


# ---------------------------------------------------------------------------------------------------------
# the device contract on the meta device
# ---------------------------------------------------------------------------------------------------------
def _positions_ref(x):
    return x + torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)


needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the CUDA cases check the device")


@needs_no_gpu
def test_a_tensor_created_without_device_fails_on_meta(toy):
    toy("toy_positions", _positions_ref, [_x((2, 3)), _x((4,), torch.float32)])
    m = failure("toy_positions", lambda x: x + torch.arange(x.shape[-1], dtype=x.dtype))
    assert m["device"] == "meta" and m["i"] == "1"
    assert "is not on the expected device meta" in m["what"] and "create new tensors on the input's device" in m["what"]


@needs_no_gpu
def test_an_output_returned_on_another_device_fails_on_meta(toy):
    toy("toy_twos", lambda x: torch.full(x.shape, 2.0, dtype=x.dtype, device=x.device), [_x((2, 3))])
    m = failure("toy_twos", lambda x: torch.full(x.shape, 2.0, dtype=x.dtype))
    assert m["device"] == "meta" and "output is on cpu, expected meta" in m["what"]


@needs_no_gpu
def test_the_reference_and_correct_alternatives_pass_with_the_device_checked(toy, capsys):
    toy("toy_positions", _positions_ref, [_x((2, 3)), _x((4,), torch.float32)])
    for fn in (_positions_ref, lambda x: x + torch.arange(x.shape[-1]).to(x),
               lambda x: x + x.new_tensor(range(x.shape[-1])) if x.shape[-1] else x.clone()):
        line = passes("toy_positions", fn, capsys)
        assert line.endswith("device contract checked on meta (no GPU here) for 2 cases"), line


@needs_no_gpu
def test_data_dependent_code_is_not_checkable_never_a_lost_point(toy, capsys):
    ref = lambda x: x / x.abs().amax()                                  # noqa: E731
    toy("toy_normalise", ref, [_x((2, 3)), _x((5,))])
    line = passes("toy_normalise", lambda x: x / float(x.abs().max().item()), capsys)
    assert "0 cases, 2 not checkable on this machine" in line


@needs_no_gpu
def test_cases_the_reference_cannot_run_on_meta_are_skipped(toy, capsys):
    ref = lambda x: x * float(x.sum().item())                           # noqa: E731
    toy("toy_item", ref, [_x((3,))])
    line = passes("toy_item", lambda x: x * x.sum().item(), capsys)
    assert line == "toy_item: 1 cases passed on cpu"


def test_records_with_every_property_survive_the_grader_round_trip(toy, tmp_path, monkeypatch):
    """What the kernel writes (torch.save) the grader reads with weights_only=True and verifies."""
    toy("toy_softplus", _softplus_ref, [_x((3, 4)), grading.noncontiguous(_x((2, 2)))], grad=True)
    monkeypatch.setenv(grading.RECORD_ENV, str(tmp_path))
    grading.check("toy_softplus", lambda x: torch.nn.functional.softplus(x))
    monkeypatch.delenv(grading.RECORD_ENV)
    rec = grading.load_record(tmp_path / "toy_softplus.pt")
    assert grading.verify(rec).passed
    grading.check("toy_softplus", _softplus_ref)
    monkeypatch.setenv(grading.RECORD_ENV, str(tmp_path))
    grading.check("toy_softplus", lambda x: torch.nn.functional.softplus(x).detach())
    assert "no gradient reaches x" in grading.verify(grading.load_record(tmp_path / "toy_softplus.pt")).message


def test_every_property_is_described():
    assert set(grading.PROPERTIES) >= {"values", "inputs unchanged", "new tensors", "gradients", "forbidden", "device"}


def test_gradients_only_with_respect_to_the_inputs_named(toy, capsys):
    """A 0/-inf mask is an input but not a parameter: a correct function that compares it (no gradient to it)
    passes when the exercise names the inputs to differentiate."""
    def make(g, dev):
        s = torch.randn(3, 4, generator=g, dtype=torch.float64)
        mask = torch.zeros(3, 4, dtype=torch.float64).masked_fill(torch.rand(3, 4, generator=g) < 0.4, float("-inf"))
        mask[:, 0] = 0.0
        return (s.to(dev), mask.to(dev)), {}
    ref = lambda scores, mask: torch.softmax(scores + mask, dim=-1)       # noqa: E731
    where = lambda scores, mask: torch.softmax(scores.masked_fill(mask == float("-inf"), float("-inf")), -1)  # noqa: E731
    toy("toy_masked_softmax_all", ref, [Case("scores(3, 4) float64, mask", make)], grad=True)
    assert "no gradient reaches mask" in failure("toy_masked_softmax_all", where)["what"]
    toy("toy_masked_softmax", ref, [Case("scores(3, 4) float64, mask", make)], grad=("scores",))
    passes("toy_masked_softmax", where, capsys)
    assert "no gradient reaches scores" in failure("toy_masked_softmax", lambda s, m: ref(s, m).detach())["what"]


def test_an_int_result_must_be_an_int(toy, capsys):
    toy("toy_count", lambda n, k: n * k, [Case("n=3, k=2", lambda g, dev: ((3, 2), {}))])
    passes("toy_count", lambda n, k: sum([n] * k), capsys)
    assert "output should be the int 6, got float 6.0" in failure("toy_count", lambda n, k: n * k / 1)["what"]


@needs_no_gpu
def test_cpu_tensors_meeting_meta_ones_in_place_fail_too(toy):
    mistake = lambda x: x.clone().add_(torch.arange(x.shape[-1], dtype=x.dtype))  # noqa: E731 - meta's own add_ lets it through
    toy("toy_positions", _positions_ref, [_x((2, 3)), _x((4,), torch.float32)])
    m = failure("toy_positions", mistake)
    assert m["device"] == "meta" and "is not on the expected device meta" in m["what"], m.string


@needs_no_gpu
def test_cpu_index_tensors_are_allowed_on_the_device_as_on_cuda(toy, capsys):
    ref = lambda x: x.flip(-1)                                            # noqa: E731
    toy("toy_flip", ref, [_x((2, 3)), _x((5,))])
    line = passes("toy_flip", lambda x: x[..., torch.arange(x.shape[-1] - 1, -1, -1)], capsys)
    assert line.endswith("for 2 cases"), line


def test_no_gradient_is_fine_where_the_reference_has_only_zeros(toy, capsys):
    """k = 1 routing weights are all 1: their gradient is 0, and a function that returns ones_like passes."""
    toy("toy_top1", lambda z: torch.softmax(z.topk(1, dim=-1).values, dim=-1), [_x((4, 6))], grad=True)
    passes("toy_top1", lambda z: torch.ones(z.shape[:-1] + (1,), dtype=z.dtype, device=z.device), capsys)
