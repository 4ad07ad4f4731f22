"""2-D convolution (course_lib.cnn.conv) against independent oracles, never against itself.

Oracles: PyTorch's ``F.conv2d``, ``F.unfold``, ``F.fold``, ``F.pad`` and autograd through ``F.conv2d``;
``torch.autograd.gradcheck`` (numerical derivatives in float64) on our backward passes wrapped in an
``autograd.Function``; ``scipy.signal.correlate2d`` for one channel; the lecture's equations written out
term by term. Hypothesis draws batch, channels, sizes, kernels, strides and paddings. Then errors,
devices (CUDA skipped where absent), and the graded exercises of both CNN assignments that live here.
"""
from __future__ import annotations

import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from course_lib import grading
from course_lib.cnn import conv
from course_lib.cnn.conv import (col2im, conv2d, conv2d_backward, conv2d_backward_loop, conv2d_image, conv2d_loop,
                                 conv_output_size, im2col, numerical_gradient, pad2d, rel_error)

pytestmark = pytest.mark.cnn

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-4, rtol=1e-4)}
BACKWARDS = [pytest.param(conv2d_backward, id="im2col"), pytest.param(conv2d_backward_loop, id="loops")]
FORWARDS = [pytest.param(conv2d, id="im2col"), pytest.param(conv2d_loop, id="loops")]


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


@st.composite
def conv_problems(draw, max_batch=3, max_channels=4, max_size=9, max_kernel=4):
    """A valid convolution: x (N, C, H, W), weight (C', C, K_h, K_w), bias or None, stride, padding."""
    N, C, C_out = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    K_h, K_w = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    p_h, p_w = (padding, padding) if isinstance(padding, int) else padding
    H = draw(st.integers(max(1, K_h - 2 * p_h), max_size))
    W = draw(st.integers(max(1, K_w - 2 * p_w), max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    x = randn(seed, N, C, H, W, dtype=dtype)
    weight = randn(seed + 1, C_out, C, K_h, K_w, dtype=dtype)
    bias = randn(seed + 2, C_out, dtype=dtype) if draw(st.booleans()) else None
    return x, weight, bias, stride, padding


def autograd_grads(dy, x, weight, stride, padding):
    """∂J/∂x, ∂J/∂α, ∂J/∂β for J = Σ F.conv2d(x, α, β) ⊙ dy, by PyTorch's autograd."""
    x, weight = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    bias = torch.zeros(weight.shape[0], dtype=x.dtype, requires_grad=True)
    y = F.conv2d(x, weight, bias, stride, padding)
    return torch.autograd.grad(y, (x, weight, bias), dy)


# =========================================================================================================
# the lecture's equations, term by term
# =========================================================================================================
def test_lecture_example_1_input_1_output_channel():
    """y_11 = α_11 x_11 + α_12 x_12 + α_21 x_21 + α_22 x_22 + α_0, ... on a 3×3 image, 2×2 kernel."""
    x = randn(0, 3, 3)
    a = randn(1, 2, 2)
    a0 = 0.7
    X = lambda i, j: x[i - 1, j - 1]      # 1-based, as on the slide
    A = lambda i, j: a[i - 1, j - 1]
    expected = torch.stack([
        torch.stack([A(1, 1) * X(1, 1) + A(1, 2) * X(1, 2) + A(2, 1) * X(2, 1) + A(2, 2) * X(2, 2) + a0,
                     A(1, 1) * X(1, 2) + A(1, 2) * X(1, 3) + A(2, 1) * X(2, 2) + A(2, 2) * X(2, 3) + a0]),
        torch.stack([A(1, 1) * X(2, 1) + A(1, 2) * X(2, 2) + A(2, 1) * X(3, 1) + A(2, 2) * X(3, 2) + a0,
                     A(1, 1) * X(2, 2) + A(1, 2) * X(2, 3) + A(2, 1) * X(3, 2) + A(2, 2) * X(3, 3) + a0]),
    ])
    torch.testing.assert_close(conv2d_image(x, a, a0), expected, atol=1e-14, rtol=0)
    bias = torch.tensor([a0], dtype=torch.float64)
    for fn in (conv2d, conv2d_loop):
        torch.testing.assert_close(fn(x[None, None], a[None, None], bias)[0, 0], expected, atol=1e-14, rtol=0)


def test_lecture_example_1_input_2_output_channels():
    """y^{(c')}_11 = α^{(c')}_11 x_11 + ... + α^{(c')}_0 for c' = 1, 2: one kernel and one bias per output."""
    x = randn(2, 1, 1, 3, 3)
    a = randn(3, 2, 1, 2, 2)
    a0 = randn(4, 2)
    y = conv2d(x, a, a0)
    assert y.shape == (1, 2, 2, 2)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                expected = sum(a[c, 0, m, n] * x[0, 0, i + m, j + n] for m in range(2) for n in range(2)) + a0[c]
                torch.testing.assert_close(y[0, c, i, j], expected, atol=1e-14, rtol=0)


def test_stride_2_visits_9_patches_of_a_7x7_image():
    """'Only 9 patches visited in input, so only 9 pixels in output' (3×3 kernel, stride 2)."""
    assert conv_output_size(7, 3, 2) == 3
    x = randn(5, 1, 1, 7, 7)
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    w[0, 0, 0, 0] = 1.0                                        # picks the top-left pixel of each patch
    y = conv2d(x, w, stride=2)
    assert y.shape == (1, 1, 3, 3)
    torch.testing.assert_close(y[0, 0], x[0, 0, 0:5:2, 0:5:2], atol=0, rtol=0)   # corners (0, 2, 4)²


def test_single_channel_is_cross_correlation_like_scipy():
    """The lecture's sliding inner product does not flip the kernel: scipy's correlate2d, not convolve2d."""
    x, k = randn(6, 9, 11), randn(7, 3, 2)
    torch.testing.assert_close(conv2d_image(x, k), torch.from_numpy(scipy.signal.correlate2d(x.numpy(), k.numpy(), "valid")),
                               atol=1e-12, rtol=0)
    flipped = torch.from_numpy(scipy.signal.convolve2d(x.numpy(), k.numpy(), "valid"))
    assert not torch.allclose(conv2d_image(x, k), flipped)
    torch.testing.assert_close(conv2d_image(x, k.flip(0, 1)), flipped, atol=1e-12, rtol=0)


def test_slide_backward_index_is_right_for_stride_1_only():
    """∂J/∂α_{m,n} = Σ ∂J/∂y_{h',w'} x_{s h'+m, s w'+n}; the slide's x_{h'+ms, w'+ns} agrees for s = 1 only."""
    x, w = randn(8, 1, 1, 9, 9), randn(9, 1, 1, 3, 3)
    for s in (1, 2):
        y = conv2d(x, w, stride=s)
        dy = randn(10, *y.shape)
        _, dw, _ = conv2d_backward(dy, x, w, stride=s)
        H_out = y.shape[-1]
        h = torch.arange(H_out)
        slide = torch.zeros(3, 3, dtype=torch.float64)
        for m in range(3):
            for n in range(3):
                slide[m, n] = (dy[0, 0] * x[0, 0][(h + m * s)[:, None], (h + n * s)[None, :]]).sum()
        if s == 1:
            torch.testing.assert_close(dw[0, 0], slide, atol=1e-12, rtol=0)
        else:
            assert not torch.allclose(dw[0, 0], slide)
        torch.testing.assert_close(dw, autograd_grads(dy, x, w, s, 0)[1], atol=1e-12, rtol=0)


# =========================================================================================================
# forward against F.conv2d
# =========================================================================================================
@given(problem=conv_problems(max_batch=3, max_channels=5, max_size=12, max_kernel=5))
def test_conv2d_matches_F_conv2d(problem):
    x, w, b, stride, padding = problem
    out = conv2d(x, w, b, stride, padding)
    expected = F.conv2d(x, w, b, stride, padding)
    assert out.shape == expected.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, expected, **TOL[x.dtype])


@given(problem=conv_problems(max_batch=2, max_channels=3, max_size=7, max_kernel=3))
def test_conv2d_loop_matches_F_conv2d(problem):
    x, w, b, stride, padding = problem
    torch.testing.assert_close(conv2d_loop(x, w, b, stride, padding), F.conv2d(x, w, b, stride, padding),
                               **TOL[x.dtype])


@pytest.mark.parametrize("N,C,C_out,H,K,p", [(64, 6, 16, 14, 5, 0), (2, 16, 32, 30, 3, 1), (3, 3, 8, 33, 7, 3)])
def test_conv2d_layer_sizes_float32(N, C, C_out, H, K, p):
    """LeNet's C3 layer (6→16 channels, 14×14, 5×5) and larger ones, in float32."""
    x, w, b = randn(11, N, C, H, H, dtype=torch.float32), randn(12, C_out, C, K, K, dtype=torch.float32), randn(13, C_out, dtype=torch.float32)
    torch.testing.assert_close(conv2d(x, w, b, 1, p), F.conv2d(x, w, b, 1, p), atol=2e-4, rtol=1e-4)


def test_blocks_of_the_output_give_the_same_result(monkeypatch):
    """conv2d / conv2d_backward work on blocks of about CHUNK_BYTES of columns (output rows of one image, or
    several images): any blocking agrees with PyTorch, strides and padding included."""
    x, w, b = randn(14, 5, 3, 8, 8), randn(15, 4, 3, 3, 3), randn(16, 4)
    y = F.conv2d(x, w, b, 2, 1)                                # H_out = W_out = 4
    dy = randn(17, *y.shape)
    expected = autograd_grads(dy, x, w, 2, 1)
    row = 3 * 9 * 4 * 8                                        # bytes of columns per output row (float64)
    for chunk in (1, 3 * row, 2 * 4 * row, 10**9):             # 1 row, 3 rows, 2 images, everything
        monkeypatch.setattr(conv, "CHUNK_BYTES", chunk)
        torch.testing.assert_close(conv2d(x, w, b, 2, 1), y, **TOL[torch.float64])
        for got, want in zip(conv2d_backward(dy, x, w, 2, 1), expected):
            torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_conv2d_is_differentiable_by_autograd_too():
    x, w, b = (randn(s, *shape).requires_grad_(True) for s, shape in ((18, (2, 3, 6, 6)), (19, (4, 3, 3, 3)), (20, (4,))))
    y = conv2d(x, w, b, 2, 1)
    dy = randn(21, *y.shape)
    mine = torch.autograd.grad(y, (x, w, b), dy)
    theirs = torch.autograd.grad(F.conv2d(x, w, b, 2, 1), (x, w, b), dy)
    for a, e in zip(mine, theirs):
        torch.testing.assert_close(a, e, **TOL[torch.float64])


# =========================================================================================================
# backward against autograd and gradcheck
# =========================================================================================================
@pytest.mark.parametrize("backward", BACKWARDS)
@given(problem=conv_problems(max_batch=2, max_channels=3, max_size=8, max_kernel=3))
def test_backward_matches_autograd(backward, problem):
    x, w, _, stride, padding = problem
    y = F.conv2d(x, w, None, stride, padding)
    dy = randn(22, *y.shape, dtype=x.dtype)
    dx, dw, db = backward(dy, x, w, stride, padding)
    ex, ew, eb = autograd_grads(dy, x, w, stride, padding)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (w.shape[0],)
    assert dx.dtype == dw.dtype == db.dtype == x.dtype
    tol = TOL[x.dtype] if x.dtype == torch.float64 else dict(atol=5e-4, rtol=1e-4)
    torch.testing.assert_close(dx, ex, **tol)
    torch.testing.assert_close(dw, ew, **tol)
    torch.testing.assert_close(db, eb, **tol)


def _as_function(forward, backward, stride, padding):
    """Our forward and backward as one autograd.Function, for torch.autograd.gradcheck."""
    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            return forward(x, w, b, stride, padding)

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            return backward(dy.contiguous(), x, w, stride, padding)
    return Conv.apply


@pytest.mark.parametrize("forward,backward", [pytest.param(conv2d, conv2d_backward, id="im2col"),
                                              pytest.param(conv2d_loop, conv2d_backward_loop, id="loops")])
@pytest.mark.parametrize("shapes,stride,padding", [
    (((1, 2, 5, 4), (3, 2, 3, 2)), 1, 0),
    (((1, 2, 7, 7), (3, 2, 3, 3)), 2, 1),
    (((2, 1, 5, 7), (2, 1, 2, 3)), (2, 3), (1, 2)),
])
def test_gradcheck_float64(forward, backward, shapes, stride, padding):
    x_shape, w_shape = shapes
    x = randn(23, *x_shape).requires_grad_(True)
    w = randn(24, *w_shape).requires_grad_(True)
    b = randn(25, w_shape[0]).requires_grad_(True)
    assert torch.autograd.gradcheck(_as_function(forward, backward, stride, padding), (x, w, b), eps=1e-6, atol=1e-6)


def test_bias_gradient_is_the_sum_of_dy():
    """∂J/∂β^{(c')} = Σ_n Σ_h' Σ_w' ∂J/∂y^{(c')}_{h',w'}."""
    x, w = randn(26, 3, 2, 5, 5), randn(27, 4, 2, 2, 2)
    dy = randn(28, 3, 4, 4, 4)
    for backward in (conv2d_backward, conv2d_backward_loop):
        torch.testing.assert_close(backward(dy, x, w)[2], dy.sum(dim=(0, 2, 3)), atol=1e-12, rtol=0)


# =========================================================================================================
# im2col / col2im against F.unfold / F.fold, and padding against F.pad
# =========================================================================================================
@given(problem=conv_problems(max_batch=3, max_channels=4, max_size=10, max_kernel=4))
def test_im2col_matches_F_unfold_and_col2im_matches_F_fold(problem):
    x, w, _, stride, padding = problem
    K = tuple(w.shape[-2:])
    cols = im2col(x, K, stride, padding)
    torch.testing.assert_close(cols, F.unfold(x, K, padding=padding, stride=stride), atol=0, rtol=0)
    c = randn(29, *cols.shape, dtype=x.dtype)
    expected = F.fold(c, x.shape[-2:], K, padding=padding, stride=stride)
    torch.testing.assert_close(col2im(c, x.shape[-2:], K, stride, padding), expected, **TOL[x.dtype])
    # adjoint: <im2col(x), c> = <x, col2im(c)>
    torch.testing.assert_close((cols.double() * c.double()).sum(),
                               (x.double() * col2im(c, x.shape[-2:], K, stride, padding).double()).sum(),
                               atol=1e-3, rtol=1e-4)


@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), p=st.integers(0, 3), q=st.integers(0, 3))
def test_pad2d_matches_F_pad(shape, p, q):
    x = randn(30, *shape)
    torch.testing.assert_close(pad2d(x, (p, q)), F.pad(x, (q, q, p, p)), atol=0, rtol=0)
    torch.testing.assert_close(pad2d(x, p), F.pad(x, (p, p, p, p)), atol=0, rtol=0)


def test_padding_keeps_the_size_and_identity_kernel_keeps_the_image():
    """'Suppose you want to preserve the size ... padding your input image with zeros': p = (K − 1)/2."""
    x = randn(31, 2, 3, 10, 9)
    for K in (1, 3, 5, 7):
        identity = torch.zeros(3, 3, K, K, dtype=torch.float64)
        for c in range(3):
            identity[c, c, K // 2, K // 2] = 1.0
        torch.testing.assert_close(conv2d(x, identity, padding=(K - 1) // 2), x, atol=0, rtol=0)


@given(size=st.integers(1, 30), kernel=st.integers(1, 7), stride=st.integers(1, 4), padding=st.integers(0, 3))
def test_conv_output_size_matches_F_conv2d_shapes(size, kernel, stride, padding):
    assume(kernel <= size + 2 * padding)
    y = F.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1), stride=(stride, 1), padding=(padding, 0))
    assert conv_output_size(size, kernel, stride, padding) == y.shape[2]


# =========================================================================================================
# numerical gradients and rel_error
# =========================================================================================================
@pytest.mark.parametrize("f,autograd_f", [
    pytest.param(lambda t: (t**2).sum(), None, id="squares"),
    pytest.param(lambda t: (torch.sin(t) * torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape)).sum(), None, id="sin"),
    pytest.param(lambda t: torch.logsumexp(t.flatten(), 0), None, id="logsumexp"),
    pytest.param(lambda t: float((t**3).sum()), lambda t: (t**3).sum(), id="python-float"),
])
def test_numerical_gradient_matches_autograd(f, autograd_f):
    x = randn(32, 3, 4)
    before = x.clone()
    got = numerical_gradient(f, x)
    assert torch.equal(x, before), "numerical_gradient changed its input"
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((autograd_f or f)(xr), xr)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert rel_error(got, expected) < 1e-7


def test_rel_error():
    a = torch.tensor([1.0, 2.0, 0.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(torch.tensor([1.0]), torch.tensor([3.0])) == pytest.approx(0.5)
    assert rel_error(torch.tensor([0.0]), torch.tensor([1e-9])) == pytest.approx(0.1)   # floor 1e-8 below
    with pytest.raises(ValueError, match="same shape"):
        rel_error(torch.zeros(2), torch.zeros(3))


# =========================================================================================================
# errors, dtypes, devices, inputs untouched
# =========================================================================================================
@pytest.mark.parametrize("fn", FORWARDS)
@pytest.mark.parametrize("args,error,match", [
    ((torch.zeros(3, 5, 5), torch.zeros(1, 3, 2, 2)), ValueError, r"\(N, C, H, W\)"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(3, 2, 2)), ValueError, r"\(C', C, K_h, K_w\)"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 4, 2, 2)), ValueError, r"input channels"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 2, 2), torch.zeros(3)), ValueError, r"bias must have shape"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 6, 2)), ValueError, r"larger than the padded input"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 8, 8), None, 1, 1), ValueError, r"larger than the padded input"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 2, 2), None, 0), ValueError, r"stride must be >= 1"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 2, 2), None, 1, -1), ValueError, r"padding must be >= 0"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 2, 2), None, 1.5), TypeError, r"stride must be an int"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 2, 2, dtype=torch.float64)), TypeError, r"same floating-point dtype"),
    ((torch.zeros(1, 3, 5, 5, dtype=torch.long), torch.zeros(2, 3, 2, 2, dtype=torch.long)), TypeError, r"floating-point"),
])
def test_forward_errors(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_backward_rejects_dy_of_the_wrong_shape(backward):
    x, w = torch.zeros(2, 3, 6, 6), torch.zeros(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"dy must have the shape of the output .*\(2, 4, 4, 4\)"):
        backward(torch.zeros(2, 4, 6, 6), x, w)


def test_inputs_not_modified():
    x, w, b = randn(33, 2, 3, 6, 6), randn(34, 4, 3, 3, 3), randn(35, 4)
    dy = randn(36, 2, 4, 3, 3)
    before = [t.clone() for t in (x, w, b, dy)]
    for fn in (conv2d, conv2d_loop):
        fn(x, w, b, 2, 1)
    for backward in (conv2d_backward, conv2d_backward_loop):
        backward(dy, x, w, 2, 1)
    for t, t0 in zip((x, w, b, dy), before):
        assert torch.equal(t, t0)


class TestDevices:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_forward_and_backward_on_device(self, device, dtype):
        x, w, b = randn(37, 2, 3, 9, 8, dtype=dtype), randn(38, 4, 3, 3, 3, dtype=dtype), randn(39, 4, dtype=dtype)
        y = F.conv2d(x, w, b, 2, 1)
        dy = randn(40, *y.shape, dtype=dtype)
        tol = TOL[dtype] if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
        for fn in (conv2d, conv2d_loop):
            out = fn(x.to(device), w.to(device), b.to(device), 2, 1)
            assert out.device.type == device.type and out.dtype == dtype
            torch.testing.assert_close(out.cpu(), y, **tol)
        expected = autograd_grads(dy, x, w, 2, 1)
        for backward in (conv2d_backward, conv2d_backward_loop):
            grads = backward(dy.to(device), x.to(device), w.to(device), 2, 1)
            for g, e in zip(grads, expected):
                assert g.device.type == device.type and g.dtype == dtype
                torch.testing.assert_close(g.cpu(), e, **tol)

    def test_im2col_col2im_and_pad_on_device(self, device):
        x = randn(41, 2, 3, 7, 6).to(device)
        cols = im2col(x, 3, 2, 1)
        assert cols.device.type == device.type
        torch.testing.assert_close(cols.cpu(), F.unfold(x.cpu(), 3, padding=1, stride=2), atol=0, rtol=0)
        back = col2im(cols, (7, 6), 3, 2, 1)
        torch.testing.assert_close(back.cpu(), F.fold(cols.cpu(), (7, 6), 3, padding=1, stride=2), **TOL[torch.float64])
        assert pad2d(x, 2).device.type == device.type

    def test_numerical_gradient_on_device(self, device):
        x = randn(42, 2, 3).to(device)
        g = numerical_gradient(lambda t: (t**2).sum(), x)
        assert g.device.type == device.type
        torch.testing.assert_close(g.cpu(), 2 * x.cpu(), atol=1e-7, rtol=0)


@pytest.mark.cuda
def test_cuda_conv2d_float32_matches_cpu_F_conv2d():
    x, w, b = randn(43, 8, 16, 28, 28, dtype=torch.float32), randn(44, 32, 16, 3, 3, dtype=torch.float32), randn(45, 32, dtype=torch.float32)
    got = conv2d(x.cuda(), w.cuda(), b.cuda(), 1, 1)
    torch.testing.assert_close(got.cpu(), F.conv2d(x, w, b, 1, 1), atol=1e-3, rtol=1e-3)


# =========================================================================================================
# graded exercises (both CNN assignments): the reference passes, plausible mistakes fail
# =========================================================================================================
CONV_EXERCISES = {
    "convolve2d": None, "zero_pad": None, "numerical_gradient": numerical_gradient,
    "conv2d_forward": conv2d, "conv2d_backward": conv2d_backward, "conv2d_forward_unfold": conv2d,
}


@pytest.mark.parametrize("name", list(CONV_EXERCISES))
def test_reference_passes_its_exercise(name, capsys):
    ex = grading.exercises()[name]
    assert len(ex.cases) >= 5 and len({c.name for c in ex.cases}) == len(ex.cases)
    grading.check(name, ex.reference, device=["cpu"])
    assert f"{name}: {len(ex.cases)} cases passed" in capsys.readouterr().out
    if CONV_EXERCISES[name] is not None:
        assert ex.reference is CONV_EXERCISES[name]


@pytest.mark.parametrize("name", ["conv2d_forward", "conv2d_forward_unfold"])
def test_loop_version_passes_the_forward_exercises(name):
    grading.check(name, conv2d_loop, device=["cpu"])


def test_loop_version_passes_the_backward_exercise():
    grading.check("conv2d_backward", conv2d_backward_loop, device=["cpu"])


def _fails(name, fn, fragment=""):
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn, device=["cpu"])
    msg = str(info.value)
    assert msg.startswith(f"{name}, case ") and "\n" not in msg
    assert fragment in msg, msg
    return msg


def test_wrong_implementations_fail():
    # a "true" convolution flips the kernel: not the lecture's sliding inner product
    _fails("convolve2d", lambda x, Fk, alpha_0=0.0, stride=1: conv2d_image(x, Fk.flip(0, 1), alpha_0, stride),
           "the lecture's example")
    # the bias forgotten
    _fails("convolve2d", lambda x, Fk, alpha_0=0.0, stride=1: conv2d_image(x, Fk, 0.0, stride), "alpha_0")
    # padding on one side only
    _fails("zero_pad", lambda x, p: F.pad(x, (0, 2 * p, 0, 2 * p)), "values differ")
    # one-sided differences
    def forward_difference(f, x, h=1e-6):
        g = torch.zeros_like(x)
        for i in range(x.numel()):
            xp = x.clone()
            xp.view(-1)[i] += h
            g.view(-1)[i] = (float(f(xp)) - float(f(x))) / h
        return g
    _fails("numerical_gradient", forward_difference, "values differ")
    # the slide's x_{h'+ms, w'+ns} read literally: right for stride 1, wrong for stride 2
    def slide_backward(dy, x, w, stride=1, padding=0):
        dx, _, db = conv2d_backward(dy, x, w, stride, padding)
        xp = pad2d(x, padding)
        H_out, W_out = dy.shape[-2:]
        dw = torch.zeros_like(w)
        for m in range(w.shape[2]):
            for n in range(w.shape[3]):
                rows = (torch.arange(H_out) + m * stride).clamp(max=xp.shape[2] - 1)
                cols = (torch.arange(W_out) + n * stride).clamp(max=xp.shape[3] - 1)
                dw[:, :, m, n] = torch.einsum("nohw,nchw->oc", dy, xp[:, :, rows[:, None], cols[None, :]])
        return dx, dw, db
    _fails("conv2d_backward", slide_backward, "stride 2")
    # bias added even when None... or forgotten when given
    _fails("conv2d_forward", lambda x, w, b=None, stride=1, padding=0: conv2d(x, w, None, stride, padding),
           "values differ")
    # the padding forgotten
    _fails("conv2d_forward_unfold", lambda x, w, b=None, stride=1, padding=0: F.conv2d(x, w, b, stride, 0),
           "shape")
