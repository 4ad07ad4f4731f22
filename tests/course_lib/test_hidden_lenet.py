"""The hidden cases of the LeNet-5 assignment catch the mistakes its visible tests let through (gradient
flow, a global instead of a per-slice maximum, non-contiguous inputs, aliasing and in-place updates, the
device contract), and accept correct implementations written another way than the references."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import grading
from course_lib.cnn import lenet

from verdicts import fails as _fails

pytestmark = [pytest.mark.grading, pytest.mark.cnn]


# ------------------------------------------------------------------------------ correct, written otherwise
def fc3d_einsum(x, alpha, alpha0):
    C, H, W = x.shape[-3:]
    return torch.einsum("...chw,chwb->...b", x, alpha.reshape(C, H, W, -1)) + alpha0


def fc3d_reshape(x, alpha, alpha0):
    flat = x.reshape(-1, math.prod(x.shape[-3:])) if x.dim() == 4 else x.reshape(-1)
    return torch.addmm(alpha0, flat, alpha) if x.dim() == 4 else alpha.T @ flat + alpha0


def softmax_where(z, dim=-1):
    work = z.to(torch.float32) if z.dtype in (torch.float16, torch.bfloat16) else z
    m = work.max(dim=dim, keepdim=True).values.detach()
    e = torch.where(work == -math.inf, torch.zeros_like(work), torch.exp(work - m))
    return (e / e.sum(dim=dim, keepdim=True)).to(z.dtype)


def softmax_logsumexp(z, dim=-1):
    return torch.exp(z.double() - torch.logsumexp(z.double(), dim=dim, keepdim=True)).to(z.dtype)


def conv_vs_fc_loop(C_in, H, W, C_out, K, padding=0):
    Hp, Wp = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    conv = sum(C_in * K * K + 1 for _ in range(C_out))
    return conv, conv * Hp * Wp, (C_in * H * W + 1) * (C_out * Hp * Wp)


def sgd_add(params, grads, lr):                  # what torch.optim.SGD does
    return [torch.add(p, g, alpha=-lr) for p, g in zip(params, grads)]


def sgd_no_grad(params, grads, lr):
    with torch.no_grad():
        return [p.clone().sub_(g, alpha=lr) for p, g in zip(params, grads)]


@pytest.mark.parametrize("name, fn", [
    ("fc3d_forward", lenet.fc3d_forward), ("fc3d_forward", fc3d_einsum), ("fc3d_forward", fc3d_reshape),
    ("stable_softmax", lenet.stable_softmax), ("stable_softmax", softmax_where),
    ("stable_softmax", softmax_logsumexp),
    ("conv_vs_fc_params", lenet.conv_vs_fc_params), ("conv_vs_fc_params", conv_vs_fc_loop),
    ("sgd_step", lenet.sgd_step), ("sgd_step", sgd_add), ("sgd_step", sgd_no_grad),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_correct_implementations_pass(name, fn):
    verdict = grading.verify(grading.record(name, fn))
    assert verdict.passed, verdict.message


def test_properties_declared():
    ex = grading.exercises_of("lenet")
    assert ex["fc3d_forward"].grad and ex["stable_softmax"].grad
    assert not ex["conv_vs_fc_params"].grad and not ex["sgd_step"].grad
    assert not any(e.may_alias for e in ex.values())


@pytest.mark.parametrize("fn", [lenet.sgd_step, sgd_add, sgd_no_grad], ids=lambda f: f.__name__)
def test_visible_sgd_test_accepts_every_correct_update(fn):
    """The notebook's first visible test: θ = (1, 2), ∇J = (10, −10), η = 0.1 → (0, 3); torch.add(p, g,
    alpha=−lr) gives −1.49e−08 for the 0, which the test must accept (atol=1e-6)."""
    new = fn([torch.tensor([1.0, 2.0])], [torch.tensor([10.0, -10.0])], 0.1)
    assert isinstance(new, list) and len(new) == 1
    assert torch.allclose(new[0], torch.tensor([0.0, 3.0]), atol=1e-6)


# ------------------------------------------------------------------------------ planted mistakes
def test_global_max_softmax_fails():
    def wrong(z, dim=-1):                        # passes the visible tests: every row there is near the same shift
        e = torch.exp(z - z.max())
        return e / e.sum(dim=dim, keepdim=True)
    _fails("stable_softmax", wrong, "'z(2, 6) float32, rows near +1000 and near -1000'", "values differ")


def test_softmax_under_no_grad_fails():
    @torch.no_grad()
    def wrong(z, dim=-1):
        return lenet.stable_softmax(z, dim)
    _fails("stable_softmax", wrong, "case 1/", "no gradient reaches z")


def test_fc3d_view_fails_on_noncontiguous():
    def wrong(x, alpha, alpha0):
        return (x.view(x.shape[0], alpha.shape[0]) if x.dim() == 4 else x.view(-1)) @ alpha + alpha0
    _fails("fc3d_forward", wrong, "non-contiguous'", "your function raised RuntimeError")


def test_fc3d_detached_fails():
    def wrong(x, alpha, alpha0):
        return lenet.fc3d_forward(x, alpha, alpha0).detach()
    _fails("fc3d_forward", wrong, "case 1/", "no gradient reaches x")


def test_sgd_in_place_fails():
    def wrong(params, grads, lr):
        return [p.sub_(lr * g) for p, g in zip(params, grads)]
    _fails("sgd_step", wrong, "case 1/", "modified its input tensor")


def test_sgd_returning_the_parameter_itself_fails():
    def wrong(params, grads, lr):                # "nothing to do when lr = 0"
        return [p if lr == 0 else p - lr * g for p, g in zip(params, grads)]
    _fails("sgd_step", wrong, "'2 tensor(s) float32, lr=0, lr = 0 changes nothing'", "is the input params[0] itself")


def test_sgd_losing_the_dtype_fails():
    def wrong(params, grads, lr):
        return [(p.float() - lr * g.float()) for p, g in zip(params, grads)]
    _fails("sgd_step", wrong, "case 1/9 '1 tensor(s) float64, lr=0.1' on cpu", "has dtype torch.float32, expected torch.float64")


# ------------------------------------------------------------------------------ the device contract
@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on meta without a GPU")
def test_tensor_created_without_device_fails_on_meta():
    def wrong(x, alpha, alpha0):
        flat = x.flatten(start_dim=-3)
        bias = torch.zeros(alpha.shape[1], dtype=x.dtype)              # on the CPU, whatever the input's device
        return flat @ alpha + alpha0 + bias
    _fails("fc3d_forward", wrong, "on meta:", "create new tensors on the input's device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on meta without a GPU")
def test_item_is_not_checkable_not_failed():
    def with_item(z, dim=-1):                    # a Python number for the check of the maximum: fine
        work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        m = work.amax(dim=dim, keepdim=True)
        assert z.numel() == 0 or not math.isnan(m.max().item())
        e = torch.exp(work - m)
        return (e / e.sum(dim=dim, keepdim=True)).to(z.dtype)
    verdict = grading.verify(grading.record("stable_softmax", with_item))
    assert verdict.passed and "not checkable" in verdict.message, verdict.message
