"""The hidden cases of the CNN-layers assignment (course_lib/exercises/cnn_layers.py) are strong and fair:
realistic mistakes that pass the visible tests fail with a one-line verdict that names the case, and
correct implementations written another way than the reference pass."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.cnn import conv

from verdicts import fails, passes as _passes

pytestmark = [pytest.mark.grading, pytest.mark.cnn]


def _fails(name, fn, case_label, *fragments):
    return fails(name, fn, *fragments, case=case_label)


def _label(name, *parts):
    """The one case label of exercise ``name`` that contains every part."""
    found = [c.name for c in grading.exercises()[name].cases if all(p in c.name for p in parts)]
    assert len(found) == 1, (parts, found)
    return found[0]


# =========================================================================================================
# Exercise 1: numerical_gradient
# =========================================================================================================
def numgrad_indices(f, x, h=1e-6):
    """Correct, another way: multi-indices with itertools, the result built from a list of floats."""
    xc = x.detach().clone()
    values = []
    for idx in itertools.product(*(range(n) for n in x.shape)):
        old = float(xc[idx])
        xc[idx] = old + h
        f_plus = float(f(xc))
        xc[idx] = old - h
        f_minus = float(f(xc))
        xc[idx] = old
        values.append((f_plus - f_minus) / (2 * h))
    return torch.tensor(values, dtype=x.dtype, device=x.device).reshape(x.shape)


def numgrad_solution(f, x, h=1e-6):
    """The instructor's solution (with .item(): not checkable on the meta device, never a failure)."""
    xc = x.detach().clone().contiguous()
    grad = torch.zeros_like(xc)
    flat, gflat = xc.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        f_plus = float(f(xc))
        flat[i] = old - h
        f_minus = float(f(xc))
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numgrad_reshape_in_place(f, x, h=1e-6):
    """Wrong: perturbs x through x.reshape(-1), a view only when x is contiguous (else a copy f never sees)."""
    flat = x.detach().reshape(-1)
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        f_plus = float(f(x))
        flat[i] = old - h
        f_minus = float(f(x))
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad.reshape(x.shape)


def numgrad_stack(f, x, h=1e-6):
    """Wrong on an empty x: torch.stack of an empty list."""
    xc = x.detach().clone().reshape(-1)
    parts = []
    for i in range(xc.numel()):
        e = torch.zeros_like(xc)
        e[i] = h
        f_plus, f_minus = (torch.as_tensor(f((xc + d).reshape(x.shape)), dtype=x.dtype) for d in (e, -e))
        parts.append((f_plus - f_minus) / (2 * h))
    return torch.stack(parts).reshape(x.shape)


def test_numerical_gradient_correct_versions_pass():
    _passes("numerical_gradient", numgrad_indices)      # (the references pass: tests/course_lib/test_conv.py)
    _passes("numerical_gradient", numgrad_solution)


def test_numerical_gradient_non_contiguous_x():
    _fails("numerical_gradient", numgrad_reshape_in_place, _label("numerical_gradient", "non-contiguous"),
           "on cpu: output values differ")


def test_numerical_gradient_empty_x():
    _fails("numerical_gradient", numgrad_stack, _label("numerical_gradient", "empty"), "your function raised")


def test_reference_takes_a_transposed_x():     # the bug fixed in conv.numerical_gradient: clone() kept the strides
    x = torch.randn(3, 4, dtype=torch.float64).T
    torch.testing.assert_close(conv.numerical_gradient(lambda t: (t**2).sum(), x), 2 * x)


# =========================================================================================================
# Exercises 2 and 4: the convolution forward
# =========================================================================================================
def conv_loops(x, weight, bias=None, stride=1, padding=0):
    """The instructor's solution of Exercise 2: loops."""
    N, C, H, W = x.shape
    C_out, _, K_h, K_w = weight.shape
    s, p = stride, padding
    xp = F.pad(x, (p, p, p, p))
    H_out, W_out = (H + 2 * p - K_h) // s + 1, (W + 2 * p - K_w) // s + 1
    y = torch.zeros(N, C_out, H_out, W_out, dtype=x.dtype, device=x.device)
    for n in range(N):
        for c_out in range(C_out):
            for h in range(H_out):
                for w in range(W_out):
                    y[n, c_out, h, w] = (weight[c_out] * xp[n, :, s * h:s * h + K_h, s * w:s * w + K_w]).sum()
            if bias is not None:
                y[n, c_out] += bias[c_out]
    return y


def conv_einsum(x, weight, bias=None, stride=1, padding=0):
    """Correct, another way: Tensor.unfold windows and one einsum, the bias through torch.where-free addition."""
    K_h, K_w = weight.shape[2:]
    patches = F.pad(x, (padding,) * 4).unfold(2, K_h, stride).unfold(3, K_w, stride)   # (N, C, H', W', K_h, K_w)
    y = torch.einsum("nchwij,dcij->ndhw", patches, weight)
    return y if bias is None else y + bias.reshape(-1, 1, 1)


def conv_unfold_solution(x, weight, bias=None, stride=1, padding=0):
    """The instructor's solution of Exercise 4."""
    N, C, H, W = x.shape
    C_out, _, K_h, K_w = weight.shape
    H_out, W_out = (H + 2 * padding - K_h) // stride + 1, (W + 2 * padding - K_w) // stride + 1
    y = weight.reshape(C_out, -1) @ F.unfold(x, (K_h, K_w), padding=padding, stride=stride)
    if bias is not None:
        y = y + bias[:, None]
    return y.reshape(N, C_out, H_out, W_out)


def conv_item(x, weight, bias=None, stride=1, padding=0):
    """Wrong: right values built from Python numbers (.item()): no gradient reaches x, weight or bias."""
    with torch.no_grad():
        y = conv_einsum(x, weight, bias, stride, padding)
    return torch.tensor(y.tolist(), dtype=x.dtype, device=x.device)


def conv_unfold_view(x, weight, bias=None, stride=1, padding=0):
    """Wrong on non-contiguous weights: weight.view(C', -1)."""
    N = x.shape[0]
    C_out, _, K_h, K_w = weight.shape
    H_out = (x.shape[2] + 2 * padding - K_h) // stride + 1
    y = weight.view(C_out, -1) @ F.unfold(x, (K_h, K_w), padding=padding, stride=stride)
    if bias is not None:
        y = y + bias[:, None]
    return y.reshape(N, C_out, H_out, -1)


def conv_bias_default_on_cpu(x, weight, bias=None, stride=1, padding=0):
    """Wrong on a GPU: a zero bias created without device=."""
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=x.dtype)
    return conv_unfold_solution(x, weight, bias, stride, padding)


def test_conv_forward_correct_versions_pass():
    _passes("conv2d_forward", conv_loops)
    _passes("conv2d_forward", conv_einsum)
    _passes("conv2d_forward_unfold", conv_unfold_solution)


@pytest.mark.parametrize("name", ["conv2d_forward", "conv2d_forward_unfold"])
def test_conv_forward_without_gradient_fails(name):
    first = grading.exercises()[name].cases[0].name
    _fails(name, conv_item, first, "no gradient reaches x through your output")


def test_conv_forward_unfold_view_of_non_contiguous_weight_fails():
    _fails("conv2d_forward_unfold", conv_unfold_view, _label("conv2d_forward_unfold", "non-contiguous"),
           "your function raised RuntimeError: view size is not compatible")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on CUDA itself there")
def test_conv_forward_tensor_without_device_fails_on_meta():
    _fails("conv2d_forward_unfold", conv_bias_default_on_cpu, _label("conv2d_forward_unfold", "bias=None"),
           "on meta:", "create new tensors on the input's device")


# =========================================================================================================
# Exercise 3: the convolution backward
# =========================================================================================================
def conv_backward_einsum(dy, x, weight, stride=1, padding=0):
    """Correct, another way: einsum over Tensor.unfold windows for dα, strided additions per (m, n) for dx."""
    N, C, H, W = x.shape
    C_out, _, K_h, K_w = weight.shape
    s, p = stride, padding
    H_out, W_out = dy.shape[2:]
    xp = F.pad(x, (p, p, p, p))
    patches = xp.unfold(2, K_h, s).unfold(3, K_w, s)                     # (N, C, H', W', K_h, K_w)
    dweight = torch.einsum("nchwij,ndhw->dcij", patches, dy)
    dxp = xp.new_zeros(xp.shape)
    for m in range(K_h):
        for n in range(K_w):
            dxp[:, :, m:m + s * (H_out - 1) + 1:s, n:n + s * (W_out - 1) + 1:s] += \
                torch.einsum("ndhw,dc->nchw", dy, weight[:, :, m, n])
    return dxp[:, :, p:p + H, p:p + W].clone(), dweight, dy.sum(dim=(0, 2, 3))


def conv_backward_fold(dy, x, weight, stride=1, padding=0, view=False):
    """Correct with reshape (im2col / col2im by F.unfold / F.fold); wrong with view=True (non-contiguous dy)."""
    N, C, H, W = x.shape
    C_out, _, K_h, K_w = weight.shape
    cols = F.unfold(x, (K_h, K_w), padding=padding, stride=stride)       # (N, C·K_h·K_w, L)
    g = dy.view(N, C_out, -1) if view else dy.reshape(N, C_out, -1)      # (N, C', L)
    dweight = (g @ cols.transpose(1, 2)).sum(0).reshape(weight.shape)
    dx = F.fold(weight.reshape(C_out, -1).t() @ g, (H, W), (K_h, K_w), padding=padding, stride=stride)
    return dx, dweight, g.sum(dim=(0, 2))


def test_conv_backward_correct_versions_pass():
    _passes("conv2d_backward", conv_backward_einsum)
    _passes("conv2d_backward", conv_backward_fold)


def test_conv_backward_view_of_non_contiguous_dy_fails():
    _fails("conv2d_backward", lambda *a, **k: conv_backward_fold(*a, **k, view=True),
           _label("conv2d_backward", "non-contiguous"), "your function raised RuntimeError: view size")


# =========================================================================================================
# Exercises 5 and 6: max-pooling
# =========================================================================================================
def maxpool_solution(x, kernel_size, stride=None, clone=True):
    """The instructor's solution (torch.maximum over the K² strided views); clone=False: wrong for K = 1."""
    K = kernel_size
    s = K if stride is None else stride
    H_out, W_out = (x.shape[2] - K) // s + 1, (x.shape[3] - K) // s + 1
    y = None
    for m in range(K):
        for n in range(K):
            view = x[:, :, m:m + s * (H_out - 1) + 1:s, n:n + s * (W_out - 1) + 1:s]
            y = (view.clone() if clone else view) if y is None else torch.maximum(y, view)
    return y


def maxpool_amax(x, kernel_size, stride=None):
    """Correct, another way: Tensor.unfold windows and amax (its gradient shares ties; no tie is graded)."""
    s = kernel_size if stride is None else stride
    return x.unfold(2, kernel_size, s).unfold(3, kernel_size, s).amax(dim=(-2, -1))


def maxpool_no_grad(x, kernel_size, stride=None):
    """Wrong: computed under torch.no_grad(), so training through it stops."""
    with torch.no_grad():
        return maxpool_amax(x, kernel_size, stride)


def test_maxpool_forward_correct_versions_pass():
    _passes("maxpool2d_forward", maxpool_solution)
    _passes("maxpool2d_forward", maxpool_amax)


def test_maxpool_forward_without_gradient_fails():
    first = grading.exercises()["maxpool2d_forward"].cases[0].name
    _fails("maxpool2d_forward", maxpool_no_grad, first, "no gradient reaches x through your output")


def test_maxpool_forward_view_of_x_fails():
    _fails("maxpool2d_forward", lambda x, k, stride=None: maxpool_solution(x, k, stride, clone=False),
           _label("maxpool2d_forward", "1×1 windows", "float64"), "output shares memory with the input x")


def maxpool_backward_solution(dy, x, kernel_size, stride=None):
    """The instructor's solution: argmax per output position, index_put_ with accumulate."""
    K = kernel_size
    s = K if stride is None else stride
    N, C, H_out, W_out = dy.shape
    dx = torch.zeros_like(x)
    n_idx = torch.arange(N, device=x.device)[:, None].expand(N, C)
    c_idx = torch.arange(C, device=x.device)[None, :].expand(N, C)
    for h in range(H_out):
        for w in range(W_out):
            k = x[:, :, s * h:s * h + K, s * w:s * w + K].reshape(N, C, K * K).argmax(dim=-1)
            dx.index_put_((n_idx, c_idx, s * h + k // K, s * w + k % K), dy[:, :, h, w], accumulate=True)
    return dx


def maxpool_backward_scatter(dy, x, kernel_size, stride=None, zeros=None):
    """Correct, another way: all windows at once (Tensor.unfold), argmax, flat indices, scatter_add."""
    K = kernel_size
    s = K if stride is None else stride
    N, C, H, W = x.shape
    H_out, W_out = dy.shape[2:]
    k = x.unfold(2, K, s).unfold(3, K, s).reshape(N, C, H_out, W_out, K * K).argmax(dim=-1)
    rows = torch.arange(H_out, device=x.device)[:, None] * s + k // K
    cols = torch.arange(W_out, device=x.device)[None, :] * s + k % K
    dx = torch.zeros(N * C, H * W, dtype=x.dtype, device=x.device) if zeros is None else zeros(x)
    dx = dx.reshape(N * C, H * W)
    dx.scatter_add_(1, (rows * W + cols).reshape(N * C, -1), dy.reshape(N * C, -1))
    return dx.reshape(N, C, H, W)


def maxpool_backward_item(dy, x, kernel_size, stride=None):
    """Correct plain loops with .item(): not checkable on the meta device, never a failure."""
    K = kernel_size
    s = K if stride is None else stride
    dx = torch.zeros_like(x)
    for n, c, h, w in itertools.product(*(range(d) for d in dy.shape)):
        k = x[n, c, s * h:s * h + K, s * w:s * w + K].argmax().item()
        dx[n, c, s * h + k // K, s * w + k % K] += dy[n, c, h, w]
    return dx


def test_maxpool_backward_correct_versions_pass():
    _passes("maxpool2d_backward", maxpool_backward_solution)
    _passes("maxpool2d_backward", maxpool_backward_scatter)
    message = _passes("maxpool2d_backward", maxpool_backward_item)
    assert "not checkable" in message, message


def test_maxpool_backward_nan_where_no_window_reaches():
    # dx started as x * 0: NaN (0·NaN) at the entries no window covers, where the gradient is 0
    _fails("maxpool2d_backward", lambda *a: maxpool_backward_scatter(*a, zeros=lambda x: (x * 0).reshape(-1)),
           _label("maxpool2d_backward", "NaN where no window reaches"), "output values differ")
