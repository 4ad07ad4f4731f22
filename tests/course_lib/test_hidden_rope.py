"""The hidden cases of the RoPE assignment catch the mistakes its visible tests let through (gradient flow,
non-contiguous inputs, empty inputs, angles in float16/bfloat16, the device contract), and accept correct
implementations written another way than the references."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import grading
from course_lib.attention import rope

from verdicts import fails, passes as _passes

pytestmark = [pytest.mark.grading, pytest.mark.rope]


def _fails(name, fn, case, *fragments):
    return fails(name, fn, *fragments, case=case)


def _angle_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------ correct, written otherwise
def thetas_inv_freq(d, base=10000.0, *, dtype=torch.float32, device=None):
    # Hugging Face's inv_freq: 1 / base^(2k/d), k = 0 .. d/2 - 1
    return (1.0 / base ** (torch.arange(0, d, 2, device=device).double() / d)).to(dtype)


def matrix_blocks(m, d, base=10000.0, *, dtype=torch.float64, device=None):
    blocks = []
    for i in range(1, d // 2 + 1):
        a = m * base ** (-2 * (i - 1) / d)
        blocks.append(torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                                   dtype=torch.float64, device=device))
    return torch.block_diag(*blocks).to(dtype)


def pairs_complex(x, positions, base=10000.0):
    # Meta's Llama: pairs as complex numbers, multiplied by e^{i m θ}
    dt = _angle_dtype(x)
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float64) / d)
    angle = positions.to(x.device, dt)[..., None] * theta.to(dt)
    z = torch.view_as_complex(x.to(dt).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    rotated = z * torch.polar(torch.ones_like(angle), angle)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


def pairs_table(x, positions, base=10000.0):
    # a cos/sin table up to the largest position, indexed by the positions (uses .item(): not checkable on meta)
    dt = _angle_dtype(x)
    d = x.shape[-1]
    n = int(positions.max().item()) + 1 if positions.numel() else 1
    theta = rope.rope_thetas(d, base, dtype=dt, device=x.device)
    table = torch.arange(n, device=x.device, dtype=dt)[:, None] * theta               # (n, d/2)
    cos, sin = table.cos()[positions], table.sin()[positions]                          # (..., T, d/2)
    y = x.to(dt)
    a, b = y[..., 0::2], y[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2).to(x.dtype)


def halves_rotate_half(x, positions, base=10000.0):
    # Hugging Face: x * cos(emb) + rotate_half(x) * sin(emb)
    dt = _angle_dtype(x)
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)
    freqs = positions.to(x.device)[..., None].to(dt) * inv_freq.to(dt)
    emb = torch.cat((freqs, freqs), dim=-1)
    y = x.to(dt)
    rot = torch.cat((-y[..., d // 2:], y[..., : d // 2]), dim=-1)
    return (y * emb.cos() + rot * emb.sin()).to(x.dtype)


@pytest.mark.parametrize("name,fn", [
    ("rope_thetas", rope.rope_thetas), ("rope_thetas", thetas_inv_freq),
    ("rope_matrix", rope.rope_matrix), ("rope_matrix", matrix_blocks),
    ("apply_rope_pairs", rope.apply_rope_pairs), ("apply_rope_pairs", pairs_complex),
    ("apply_rope_halves", rope.apply_rope_halves), ("apply_rope_halves", halves_rotate_half),
])
def test_correct_implementations_pass(name, fn):
    _passes(name, fn)


def test_item_is_not_checkable_on_meta_but_passes():
    message = _passes("apply_rope_pairs", pairs_table)
    if not torch.cuda.is_available():
        assert "not checkable" in message


# ------------------------------------------------------------------------------ planted mistakes
def test_no_grad_fails():
    def pairs_no_grad(x, positions, base=10000.0):
        with torch.no_grad():                       # "RoPE has no parameters"
            return rope.apply_rope_pairs(x, positions, base)
    _fails("apply_rope_pairs", pairs_no_grad, "x(1, 2) float64, position 1", "no gradient reaches x")


def test_view_as_complex_fails_on_noncontiguous_x():
    def pairs_llama(x, positions, base=10000.0):
        # Meta's Llama code as it is: reshape (a view when it can) + view_as_complex, which needs a last
        # dimension of stride 1: fine for contiguous x, raises for a transposed one
        dt = _angle_dtype(x)
        d = x.shape[-1]
        theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float64) / d)
        angle = positions.to(dt)[..., None] * theta.to(dt)
        z = torch.view_as_complex(x.to(dt).reshape(*x.shape[:-1], d // 2, 2))
        return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2).to(x.dtype)
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(pairs_llama(x, torch.arange(3)), rope.apply_rope_pairs(x, torch.arange(3)))
    _fails("apply_rope_pairs", pairs_llama, "x(2, 3, 5, 8) float32, positions 3..7, non-contiguous",
           "your function raised RuntimeError")


def test_float16_angles_fail():
    def halves_x_dtype(x, positions, base=10000.0):
        # angles in x's dtype: fine in float32/float64 and for the small positions of bfloat16 cases
        d = x.shape[-1]
        theta = rope.rope_thetas(d, base, dtype=x.dtype, device=x.device)
        C = torch.cat((positions.to(x.dtype)[..., None] * theta,) * 2, dim=-1)
        rot = torch.cat((-x[..., d // 2:], x[..., : d // 2]), dim=-1)
        return x * C.cos() + rot * C.sin()
    _fails("apply_rope_halves", halves_x_dtype, "x(2, 16, 16) bfloat16, positions 200..215", "values differ")

    def halves_bf16_only(x, positions, base=10000.0):
        # upcasts bfloat16 (as the hint says) but forgets float16
        if x.dtype == torch.float16:
            return halves_x_dtype(x, positions, base)
        return rope.apply_rope_halves(x, positions, base)
    _fails("apply_rope_halves", halves_bf16_only, "x(2, 4, 16) float16, positions 3000..3003", "values differ")


def test_matrix_in_low_precision_fails():
    def matrix_in_dtype(m, d, base=10000.0, *, dtype=torch.float64, device=None):
        theta = rope.rope_thetas(d, base, dtype=dtype, device=device)             # angles in dtype
        angle = m * theta
        R = torch.zeros(d, d, dtype=dtype, device=device)
        i = torch.arange(0, d, 2, device=device)
        R[i, i], R[i, i + 1], R[i + 1, i], R[i + 1, i + 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
        return R
    _fails("rope_matrix", matrix_in_dtype, "m=301, d=8, dtype=torch.bfloat16", "values differ")


def test_empty_sequence_fails_when_not_handled():
    def pairs_max(x, positions, base=10000.0):
        # a cos/sin table sized by positions.max(): raises on zero positions
        n = int(positions.max()) + 1
        theta = rope.rope_thetas(x.shape[-1], base, dtype=_angle_dtype(x), device=x.device)
        table = torch.arange(n, device=x.device, dtype=theta.dtype)[:, None] * theta
        y = x.to(theta.dtype)
        cos = table.cos()[positions].repeat_interleave(2, -1)
        sin = table.sin()[positions].repeat_interleave(2, -1)
        swapped = torch.stack((-y[..., 1::2], y[..., 0::2]), -1).flatten(-2)
        return (y * cos + swapped * sin).to(x.dtype)
    _fails("apply_rope_pairs", pairs_max, "x(2, 0, 8) float32, no positions", "your function raised RuntimeError")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on CUDA itself there")
def test_tensor_without_device_fails_on_meta():
    def pairs_cpu_thetas(x, positions, base=10000.0):
        d = x.shape[-1]
        theta = rope.rope_thetas(d, base, dtype=_angle_dtype(x))                  # no device=: on the CPU
        angle = positions[..., None].to(theta.dtype) * theta
        y = x.to(theta.dtype)
        cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
        swapped = torch.stack((-y[..., 1::2], y[..., 0::2]), -1).flatten(-2)
        return (y * cos + swapped * sin).to(x.dtype)
    msg = _fails("apply_rope_pairs", pairs_cpu_thetas, "x(1, 2) float64, position 1", "on meta",
                 "create new tensors on the input's device")
    assert msg.startswith("apply_rope_pairs, case 1/")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on CUDA itself there")
def test_thetas_ignoring_device_fails_on_meta():
    def thetas_no_device(d, base=10000.0, *, dtype=torch.float32, device=None):
        return rope.rope_thetas(d, base, dtype=dtype)
    _fails("rope_thetas", thetas_no_device, "d=2", "on meta", "is on cpu, expected meta")


def test_declared_properties():
    ex = grading.exercises()
    assert ex["apply_rope_pairs"].grad and ex["apply_rope_halves"].grad
    assert not ex["rope_thetas"].grad and not ex["rope_matrix"].grad
    assert not any(ex[n].may_alias for n in ("rope_thetas", "rope_matrix", "apply_rope_pairs", "apply_rope_halves"))
