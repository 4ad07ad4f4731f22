"""course_lib.grading.check, the entry point of every hidden test: correct code passes, wrong code fails with
a one-line message that names the exercise, the case, the device and what is wrong."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib import grading
from course_lib.attention import rope

pytestmark = pytest.mark.grading

ROPE_EXERCISES = {
    "rope_thetas": rope.rope_thetas,
    "rope_matrix": rope.rope_matrix,
    "apply_rope_pairs": rope.apply_rope_pairs,
    "apply_rope_halves": rope.apply_rope_halves,
}

# "<exercise>, case <i>/<n> '<case name>' on <device>: <what is wrong>"
FAILURE = re.compile(r"^(?P<exercise>\w+), case (?P<i>\d+)/(?P<n>\d+) '(?P<case>[^']+)' on (?P<device>\S+): (?P<what>.+)$")


def passed_on(printed: str) -> str:
    """The devices a passing check names: "cpu" from "NAME: N cases passed on cpu; device contract ..."."""
    line = printed.strip().splitlines()[-1]
    assert " cases passed on " in line, line
    return line.split(" cases passed on ", 1)[1].split(";", 1)[0]


@pytest.fixture(autouse=True)
def _default_devices(monkeypatch):
    """Each test starts from the default device list, whatever the environment of the run says."""
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)


def expect_failure(exercise: str, fn, case: str, *fragments: str, **kwargs) -> str:
    """Run check(exercise, fn), expect an AssertionError on the case named ``case`` on the CPU (always the
    first device), and return its message after checking its format and the ``fragments`` it must contain."""
    with pytest.raises(AssertionError) as info:
        grading.check(exercise, fn, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"the feedback should be one line: {msg!r}"
    m = FAILURE.match(msg)
    assert m is not None, f"unexpected message format: {msg!r}"
    cases = [c.name for c in grading.exercises()[exercise].cases]
    assert m["exercise"] == exercise
    assert m["device"] == "cpu"
    assert int(m["n"]) == len(cases)
    assert m["case"] == case, msg
    assert cases[int(m["i"]) - 1] == case, "the case number and the case name disagree"
    assert f"'{case}' on cpu" in msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------------------
# correct implementations pass
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ROPE_EXERCISES))
def test_reference_passes_its_own_exercise(name, capsys):
    ex = grading.exercises()[name]
    assert len(ex.cases) >= 4
    assert len({c.name for c in ex.cases}) == len(ex.cases), "case names must tell the cases apart"
    # None: a value would become the cell's Out[], which nbgrader reads as a partial score
    assert grading.check(name, ROPE_EXERCISES[name]) is None
    devices = [str(d) for d in grading.devices()]
    assert devices[0] == "cpu"
    printed = capsys.readouterr().out
    assert printed.startswith(f"{name}: {len(ex.cases)} cases passed on {', '.join(devices)}")
    assert printed.count("\n") == 1 and passed_on(printed) == ", ".join(devices)
    if "cuda" not in devices:     # no GPU: the device contract was checked on the meta device
        assert "; device contract checked on meta (no GPU here) for " in printed


def test_all_rope_exercises_are_registered():
    assert set(ROPE_EXERCISES) <= set(grading.exercises())
    for name, fn in ROPE_EXERCISES.items():
        assert grading.exercises()[name].reference is fn


def complex_pairs(x, positions, base=10000.0):
    """A correct student's version, written differently (Llama's complex numbers): must pass."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=cdt, device=x.device) / d)
    angles = positions.to(x.device, cdt)[..., None] * inv_freq
    z = torch.view_as_complex(x.to(cdt).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2).to(x.dtype)


def rotate_half_halves(x, positions, base=10000.0):
    """A correct student's version in Hugging Face's style (rotate_half): must pass."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=cdt, device=x.device) / d)
    emb = positions.to(x.device, cdt)[..., None] * inv_freq
    emb = torch.cat((emb, emb), dim=-1)
    y = x.to(cdt)
    rotated = torch.cat((-y[..., d // 2:], y[..., : d // 2]), dim=-1)
    return (y * emb.cos() + rotated * emb.sin()).to(x.dtype)


@pytest.mark.parametrize("name,fn", [("apply_rope_pairs", complex_pairs), ("apply_rope_halves", rotate_half_halves)])
def test_independent_correct_implementations_pass(name, fn, capsys):
    grading.check(name, fn)
    assert f"{name}: {len(grading.exercises()[name].cases)} cases passed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# wrong implementations fail, and say where and why
# ---------------------------------------------------------------------------------------------------------
def test_halves_submitted_as_pairs_fails():
    # case 1 has d = 2, where both conventions coincide; the first case with d > 2 must catch it
    expect_failure("apply_rope_pairs", rope.apply_rope_halves, "x(8, 16) float32, positions 0..7",
                   "output values differ: largest error", "tolerance atol=0.0001", "for torch.float32",
                   "Hint: pairs are adjacent")


def test_pairs_submitted_as_halves_fails():
    expect_failure("apply_rope_halves", rope.apply_rope_pairs, "x(8, 16) float32, positions 0..7",
                   "largest error", "Hint: element i pairs with element i + d/2")


def test_forgotten_sin_term_fails():
    def no_sin(x, positions, base=10000.0):
        angles = rope.rope_angles(positions, x.shape[-1], base, dtype=torch.float64)
        return (x.double() * torch.cos(angles).repeat_interleave(2, dim=-1)).to(x.dtype)

    expect_failure("apply_rope_pairs", no_sin, "x(1, 2) float64, position 1",
                   "largest error", "for torch.float64")


def test_positions_off_by_one_fail():
    # numbering positions from 1, as the lecture numbers the rows of C, is a different rotation
    def one_based(x, positions, base=10000.0):
        return rope.apply_rope_pairs(x, positions + 1, base)

    expect_failure("apply_rope_pairs", one_based, "x(1, 2) float64, position 1", "largest error")
    expect_failure("apply_rope_halves", lambda x, p, base=10000.0: rope.apply_rope_halves(x, p + 1, base),
                   "x(1, 2) float64, position 1", "largest error")


def bf16_angles(x, positions, base=10000.0):
    """Angles m·θ_i computed in x's dtype: fine in float32/float64, wrong in bfloat16."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, device=x.device).to(x.dtype) / d)
    angles = positions.to(x.dtype)[..., None] * theta
    cos, sin = angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)
    swapped = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * cos + swapped * sin


def test_bf16_angles_are_really_wrong_at_modest_positions():
    """Independent of the registered cases: at positions ~100-300, bf16 angles miss by far more than the
    bf16 tolerance, so a grader case there would catch them."""
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    positions = 100 + 12 * torch.arange(16)
    got, expected = bf16_angles(x, positions).double(), rope.apply_rope_pairs(x, positions).double()
    atol, rtol = grading.tolerance(torch.bfloat16)
    excess = (got - expected).abs() - (atol + rtol * expected.abs())     # the grader's criterion
    assert float(excess.max()) > 0.05


def test_bf16_angles_fail_the_bf16_case():
    # at positions 5..10 bf16 angles stay within the bf16 tolerance; the case at positions 200.. catches them
    expect_failure("apply_rope_pairs", bf16_angles, "x(2, 16, 16) bfloat16, positions 200..215",
                   "largest error", "for torch.bfloat16")


def test_float32_output_for_float64_input_fails_with_dtype_message():
    expect_failure("apply_rope_pairs", lambda x, p, base=10000.0: rope.apply_rope_pairs(x.float(), p, base),
                   "x(1, 2) float64, position 1",
                   "output has dtype torch.float32, expected torch.float64")


def test_wrong_shape_fails_with_shape_message():
    expect_failure("apply_rope_pairs", lambda x, p, base=10000.0: rope.apply_rope_pairs(x, p, base)[..., :-1],
                   "x(1, 2) float64, position 1", "output has shape (1, 1), expected (1, 2)")
    expect_failure("rope_thetas", lambda d, *a, **kw: rope.rope_thetas(d, *a, **kw)[1:],
                   "d=2", "output has shape (0,), expected (1,)")


def test_non_tensor_output_fails():
    expect_failure("apply_rope_pairs", lambda x, p, base=10000.0: rope.apply_rope_pairs(x, p, base).tolist(),
                   "x(1, 2) float64, position 1", "output should be a torch.Tensor, got list")


def test_wrong_device_fails_with_device_message():
    expect_failure("rope_thetas", lambda d, *a, **kw: rope.rope_thetas(d, *a, **kw).to("meta"),
                   "d=2", "output is on meta, expected cpu")


def test_in_place_modification_fails():
    def in_place(x, positions, base=10000.0):
        out = rope.apply_rope_pairs(x, positions, base)
        x.copy_(out)                     # the right values, but the caller's q/k are overwritten
        return out

    expect_failure("apply_rope_pairs", in_place, "x(1, 2) float64, position 1",
                   "modified its input tensor (argument 1) in place")

    def bumps_positions(x, positions, base=10000.0):
        out = rope.apply_rope_halves(x, positions, base)
        positions.add_(1)
        return out

    expect_failure("apply_rope_halves", bumps_positions, "x(1, 2) float64, position 1",
                   "modified its input tensor (argument 2) in place")


def test_not_implemented_says_so():
    def stub(x, positions, base=10000.0):
        raise NotImplementedError

    expect_failure("apply_rope_pairs", stub, "x(1, 2) float64, position 1",
                   "not implemented yet")


def test_other_exception_names_its_type_in_one_line():
    def broken(x, positions, base=10000.0):
        raise RuntimeError("The size of tensor a (16) must match\nsecond line of the traceback")

    msg = expect_failure("apply_rope_pairs", broken, "x(1, 2) float64, position 1",
                         "your function raised RuntimeError: The size of tensor a (16) must match")
    assert "second line" not in msg

    expect_failure("rope_matrix", lambda *a, **kw: {}["oops"], "m=0, d=4", "your function raised KeyError")


def test_wrong_matrix_and_thetas_fail_with_hints():
    # the transpose (sin signs swapped) equals R at m = 0, so case 2 (m = 1) must catch it
    expect_failure("rope_matrix", lambda m, d, *a, **kw: rope.rope_matrix(m, d, *a, **kw).T,
                   "m=1, d=2", "largest error", "Hint: block i sits in rows/columns 2i-1, 2i")

    def thetas_from_i(d, base=10000.0, *, dtype=torch.float32, device=None):   # θ_i = base^(-2i/d)
        i = torch.arange(1, d // 2 + 1, dtype=torch.float64, device=device)
        return (base ** (-2.0 * i / d)).to(dtype)

    expect_failure("rope_thetas", thetas_from_i, "d=2", "largest error", "Hint: θ_i = base^(-2(i-1)/d)")


# ---------------------------------------------------------------------------------------------------------
# bad calls and device selection
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["apply_rope", "ROPE_THETAS", "", None, 3])
def test_unknown_exercise_lists_known_ones(name):
    with pytest.raises(ValueError, match=r"unknown exercise") as info:
        grading.check(name, rope.apply_rope_pairs)
    for known in ROPE_EXERCISES:
        assert known in str(info.value)


@pytest.mark.parametrize("not_fn", [None, "apply_rope_pairs", torch.zeros(2), 42])
def test_non_callable_raises_type_error(not_fn):
    with pytest.raises(TypeError, match=r"^apply_rope_pairs: expected the function you wrote"):
        grading.check("apply_rope_pairs", not_fn)


def test_default_devices_are_cpu_then_cuda_if_available():
    expected = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    assert grading.devices() == expected


@pytest.mark.parametrize("value,expected", [("cpu", ["cpu"]), (" cpu , ", ["cpu"]), ("cpu,meta", ["cpu", "meta"])])
def test_env_var_sets_devices(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_GRADING_DEVICES", value)
    assert grading.devices() == [torch.device(d) for d in expected]


def test_env_var_restricts_grading_to_cpu(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_GRADING_DEVICES", "cpu")
    grading.check("rope_thetas", rope.rope_thetas)
    assert passed_on(capsys.readouterr().out) == "cpu"


def test_env_var_devices_are_really_used(monkeypatch, capsys):
    # every listed device gets every case: "cpu,cpu" grades twice, on the CPU both times
    monkeypatch.setenv("COURSE_GRADING_DEVICES", "cpu,cpu")
    seen = []

    def spy(d, *args, **kwargs):
        seen.append(torch.device(kwargs["device"]))
        return rope.rope_thetas(d, *args, **kwargs)

    grading.check("rope_thetas", spy)
    n = len(grading.exercises()["rope_thetas"].cases)
    assert passed_on(capsys.readouterr().out) == "cpu, cpu"
    assert seen[:2 * n] == [torch.device("cpu")] * (2 * n)
    assert seen[2 * n:] == [torch.device("meta")] * n     # the device contract, with no CUDA among them


def test_device_argument_overrides_env(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_GRADING_DEVICES", "cuda:7")      # would fail if it were used
    grading.check("apply_rope_pairs", rope.apply_rope_pairs, device=["cpu"])
    n = len(grading.exercises()["apply_rope_pairs"].cases)
    out = capsys.readouterr().out
    assert out.startswith(f"apply_rope_pairs: {n} cases passed on cpu") and passed_on(out) == "cpu"
    grading.check("rope_matrix", rope.rope_matrix, device=[torch.device("cpu")])
    assert passed_on(capsys.readouterr().out) == "cpu"


# ---------------------------------------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------------------------------------
def test_tolerance_ordering():
    f64, f32, f16, bf16 = (grading.tolerance(t) for t in (torch.float64, torch.float32, torch.float16, torch.bfloat16))
    for k in (0, 1):                                         # atol, rtol
        assert 0 < f64[k] < f32[k] < bf16[k]
        assert f32[k] < f16[k] <= bf16[k]
    assert f64[0] <= 1e-6 and f32[0] <= 1e-3                 # tight enough to catch wrong formulas
    assert bf16[0] < 0.1                                      # ...even in bf16
    assert grading.tolerance(torch.int64) == (0.0, 0.0)      # exact for integers and booleans
    assert grading.tolerance(torch.bool) == (0.0, 0.0)


def test_values_within_tolerance_pass_and_outside_fail():
    # a float32 version off by half the tolerance passes; off by 10x the tolerance fails
    atol, rtol = grading.tolerance(torch.float32)

    def nudged(scale):
        def fn(x, positions, base=10000.0):
            out = rope.apply_rope_pairs(x, positions, base)
            if out.dtype == torch.float32:
                return out + scale * atol
            return out
        return fn

    grading.check("apply_rope_pairs", nudged(0.5))
    expect_failure("apply_rope_pairs", nudged(10.0), "x(8, 16) float32, positions 0..7",
                   "largest error", "for torch.float32")


def test_student_stderr_and_warnings_go_to_stdout(capsys):
    """nbgrader gives 0 points to a test cell that wrote to stderr: a warning must not cost points."""
    import sys
    import warnings

    def noisy(*args, **kwargs):
        warnings.warn("something is deprecated")
        print("debug output", file=sys.stderr)
        return rope.rope_thetas(*args, **kwargs)

    grading.check("rope_thetas", noisy)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "debug output" in captured.out and "UserWarning: something is deprecated" in captured.out
    assert passed_on(captured.out) == "cpu"
