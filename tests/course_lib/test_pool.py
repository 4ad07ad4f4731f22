"""Max-pooling and downsampling by averaging (course_lib.cnn.pool) against independent oracles.

Oracles: PyTorch's ``F.max_pool2d`` (values, and its gradient by autograd, ties included: PyTorch sends the
gradient to the first maximum in row-major order on the CPU and on CUDA), ``F.avg_pool2d``, a grouped
``F.conv2d`` with uniform weights, ``torch.autograd.gradcheck`` on our backward passes, and the lecture's
y_ij = max(x_ij, x_i,j+1, x_i+1,j, x_i+1,j+1) written out. Hypothesis draws shapes, windows, strides,
paddings, and inputs with many ties. Then errors, devices, and the graded pooling exercises.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from course_lib import grading
from course_lib.cnn.pool import (avg_pool2d_as_conv, max_pool2d, max_pool2d_backward, max_pool2d_backward_loop,
                                 max_pool2d_loop, pool_output_size)

pytestmark = pytest.mark.cnn

FORWARDS = [pytest.param(max_pool2d, id="vectorised"), pytest.param(max_pool2d_loop, id="loops")]
BACKWARDS = [pytest.param(max_pool2d_backward, id="vectorised"), pytest.param(max_pool2d_backward_loop, id="loops")]


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def with_ties(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, shape, generator=g).to(dtype)            # values 0, 1, 2: windows share maxima


@st.composite
def pool_problems(draw, max_size=9):
    """x (N, C, H, W), kernel_size, stride (None = kernel), padding (≤ half the window, as in PyTorch)."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    K = draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    K_h, K_w = (K, K) if isinstance(K, int) else K
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.one_of(st.integers(0, min(K_h, K_w) // 2), st.tuples(st.integers(0, K_h // 2), st.integers(0, K_w // 2))))
    p_h, p_w = (padding, padding) if isinstance(padding, int) else padding
    H = draw(st.integers(max(1, K_h - 2 * p_h), max_size))
    W = draw(st.integers(max(1, K_w - 2 * p_w), max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    x = with_ties(seed, N, C, H, W, dtype=dtype) if draw(st.booleans()) else randn(seed, N, C, H, W, dtype=dtype)
    return x, K, stride, padding


def torch_max_pool_grad(dy, x, K, stride, padding):
    x = x.clone().requires_grad_(True)
    y = F.max_pool2d(x, K, stride, padding)
    (dx,) = torch.autograd.grad(y, x, dy)
    return dx


# =========================================================================================================
# the lecture's formula
# =========================================================================================================
@pytest.mark.parametrize("fn", FORWARDS)
def test_lecture_max_of_2x2_windows_stride_2(fn):
    """y_ij = max(x_ij, x_i,j+1, x_i+1,j, x_i+1,j+1) at stride 2."""
    x = randn(0, 6, 8)
    y = fn(x, 2)
    assert y.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            r, c = 2 * i, 2 * j
            assert y[i, j] == max(x[r, c], x[r, c + 1], x[r + 1, c], x[r + 1, c + 1])


def test_downsampling_by_averaging_is_a_uniform_convolution():
    """'a special case of convolution where the weights are fixed to a uniform distribution' (stride 2)."""
    x = randn(1, 2, 3, 8, 6)
    uniform = torch.full((3, 1, 2, 2), 0.25, dtype=torch.float64)       # one uniform 2×2 kernel per channel
    expected = F.conv2d(x, uniform, stride=2, groups=3)
    torch.testing.assert_close(avg_pool2d_as_conv(x, 2), expected, atol=1e-14, rtol=0)
    torch.testing.assert_close(avg_pool2d_as_conv(x[0, 0], 2), x[0, 0].reshape(4, 2, 3, 2).mean(dim=(1, 3)),
                               atol=1e-14, rtol=0)


# =========================================================================================================
# forward against F.max_pool2d / F.avg_pool2d
# =========================================================================================================
@pytest.mark.parametrize("fn", FORWARDS)
@given(problem=pool_problems())
def test_max_pool_matches_F_max_pool2d(fn, problem):
    x, K, stride, padding = problem
    out = fn(x, K, stride, padding)
    expected = F.max_pool2d(x, K, stride, padding)
    assert out.shape == expected.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@given(problem=pool_problems())
def test_avg_pool_as_conv_matches_F_avg_pool2d(problem):
    x, K, stride, padding = problem
    out = avg_pool2d_as_conv(x, K, stride, padding)
    tol = dict(atol=1e-12, rtol=1e-12) if x.dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, F.avg_pool2d(x, K, stride, padding), **tol)


@pytest.mark.parametrize("shape", [(7, 9), (3, 7, 9), (2, 3, 7, 9)])
def test_any_leading_dimensions(shape):
    x = randn(2, *shape)
    x4 = x.reshape(-1, 1, 7, 9)
    for fn, oracle in ((max_pool2d, F.max_pool2d), (max_pool2d_loop, F.max_pool2d), (avg_pool2d_as_conv, F.avg_pool2d)):
        out = fn(x, 3, 2)
        assert out.shape == (*shape[:-2], 3, 4)
        torch.testing.assert_close(out.reshape(-1, 1, 3, 4), oracle(x4, 3, 2), atol=1e-14, rtol=0)


@given(size=st.integers(1, 20), kernel=st.integers(1, 5), stride=st.one_of(st.none(), st.integers(1, 4)))
def test_pool_output_size_matches_F_max_pool2d(size, kernel, stride):
    if kernel > size:
        return
    y = F.max_pool2d(torch.zeros(1, 1, size, 1), (kernel, 1), (stride or kernel, 1))
    assert pool_output_size(size, kernel, stride) == y.shape[2]


def test_nan_propagates_like_F_max_pool2d():
    x = randn(3, 1, 1, 4, 4)
    x[0, 0, 1, 2] = float("nan")
    for fn in (max_pool2d, max_pool2d_loop):
        torch.testing.assert_close(fn(x, 2), F.max_pool2d(x, 2), equal_nan=True, atol=0, rtol=0)


# =========================================================================================================
# backward: to the arg-max, first maximum in row-major order on ties (PyTorch's rule)
# =========================================================================================================
@pytest.mark.parametrize("backward", BACKWARDS)
@given(problem=pool_problems())
def test_backward_matches_autograd_through_F_max_pool2d_ties_included(backward, problem):
    x, K, stride, padding = problem
    y = F.max_pool2d(x, K, stride, padding)
    dy = randn(4, *y.shape, dtype=x.dtype)
    dx = backward(dy, x, K, stride, padding)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    tol = dict(atol=1e-12, rtol=0) if x.dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, torch_max_pool_grad(dy, x, K, stride, padding), **tol)


@given(problem=pool_problems())
def test_indices_match_F_max_pool2d_return_indices_and_drive_the_backward(problem):
    x, K, stride, padding = problem
    y, idx = max_pool2d(x, K, stride, padding, return_indices=True)
    y_t, idx_t = F.max_pool2d(x, K, stride, padding, return_indices=True)
    torch.testing.assert_close(y, y_t, atol=0, rtol=0)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_t)
    dy = randn(11, *y.shape, dtype=x.dtype)
    tol = dict(atol=1e-12, rtol=0) if x.dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(max_pool2d_backward(dy, x, K, stride, padding, indices=idx),
                               torch_max_pool_grad(dy, x, K, stride, padding), **tol)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_ties_go_to_the_first_maximum_in_row_major_order(backward):
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)                      # every window is a 4-way tie
    dy = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    expected = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    expected[0, 0, 0::2, 0::2] = dy[0, 0]                                 # top-left of each window
    torch.testing.assert_close(backward(dy, x, 2), expected, atol=0, rtol=0)
    # a tie between the second and the fourth element: the second (row 0, column 1) wins
    x = torch.tensor([[[[0.0, 5.0], [1.0, 5.0]]]], dtype=torch.float64)
    dx = backward(torch.ones(1, 1, 1, 1, dtype=torch.float64), x, 2)
    torch.testing.assert_close(dx, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64), atol=0, rtol=0)
    # ... and a row-major order, not column-major: (1, 0) comes after (0, 1)
    x = torch.tensor([[[[0.0, 5.0], [5.0, 1.0]]]], dtype=torch.float64)
    dx = backward(torch.ones(1, 1, 1, 1, dtype=torch.float64), x, 2)
    torch.testing.assert_close(dx, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64), atol=0, rtol=0)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_overlapping_windows_add_up(backward):
    """Stride 1, 2×2 windows on a 3×3 input whose maximum is in the middle: it wins all 4 windows."""
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    dy = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    dx = backward(dy, x, 2, 1)
    assert dx[0, 0, 1, 1] == 10.0 and dx.sum() == 10.0


def _as_function(forward, backward, K, stride, padding):
    class Pool(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return forward(x, K, stride, padding)

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return backward(dy.contiguous(), x, K, stride, padding)
    return Pool.apply


@pytest.mark.parametrize("forward,backward", [pytest.param(max_pool2d, max_pool2d_backward, id="vectorised"),
                                              pytest.param(max_pool2d_loop, max_pool2d_backward_loop, id="loops")])
@pytest.mark.parametrize("K,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_gradcheck_float64_away_from_ties(forward, backward, K, stride, padding):
    x = randn(5, 2, 2, 7, 6).requires_grad_(True)          # distinct values: max is differentiable there
    assert torch.autograd.gradcheck(_as_function(forward, backward, K, stride, padding), (x,), eps=1e-6, atol=1e-6)


# =========================================================================================================
# −∞ inputs next to the padding: padding is never the arg-max (the first in-bounds entry, as PyTorch's kernel)
# =========================================================================================================
NEG_INF = float("-inf")


def _hw(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def integer_dy(seed: int, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    """Small integers: sums are exact in float32 and float64, so gradients can be compared exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, shape, generator=g).to(dtype)


def place_neg_inf(x: torch.Tensor, K, stride, padding, seed: int, kinds) -> torch.Tensor:
    """A copy of x (N, C, H, W) with −∞ put in: "scattered" entries, "windows" (every real entry of a few
    windows), "image" (one whole (n, c) plane), "all" (everything)."""
    (K_h, K_w), (p_h, p_w) = _hw(K), _hw(padding)
    s_h, s_w = _hw(K if stride is None else stride)
    g = torch.Generator().manual_seed(seed)
    x = x.clone()
    N, C, H, W = x.shape
    H_out, W_out = pool_output_size(H, K_h, s_h, p_h), pool_output_size(W, K_w, s_w, p_w)
    pick = lambda n: int(torch.randint(0, n, (1,), generator=g))
    if "scattered" in kinds:
        x[torch.rand(x.shape, generator=g) < [0.2, 0.5, 0.9][pick(3)]] = NEG_INF
    if "windows" in kinds:
        for _ in range(1 + pick(3)):
            top, left = s_h * pick(H_out) - p_h, s_w * pick(W_out) - p_w
            x[pick(N), pick(C), max(top, 0):top + K_h, max(left, 0):left + K_w] = NEG_INF
    if "image" in kinds:
        x[pick(N), pick(C)] = NEG_INF
    if "all" in kinds:
        x[:] = NEG_INF
    return x


@st.composite
def pool_problems_with_neg_inf(draw):
    """pool_problems (ties included, float32 and float64) with −∞ placed in the input."""
    x, K, stride, padding = draw(pool_problems(max_size=7))
    kinds = draw(st.one_of(st.sets(st.sampled_from(["scattered", "windows", "image"]), min_size=1),
                           st.just({"all"})))
    return place_neg_inf(x, K, stride, padding, draw(st.integers(0, 2**31 - 1)), kinds), K, stride, padding


def assert_pool_matches_torch(x, K, stride, padding, forwards=(max_pool2d, max_pool2d_loop),
                              backwards=(max_pool2d_backward, max_pool2d_backward_loop)):
    """Values, indices (exactly) and both backward passes (exactly, integer dy) against PyTorch."""
    y_t, idx_t = F.max_pool2d(x, K, stride, padding, return_indices=True)
    y, idx = max_pool2d(x, K, stride, padding, return_indices=True)
    torch.testing.assert_close(y, y_t, atol=0, rtol=0)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_t), (idx, idx_t)
    assert 0 <= int(idx.min()) and int(idx.max()) < x.shape[-2] * x.shape[-1]       # never in the padding
    for forward in forwards:
        torch.testing.assert_close(forward(x, K, stride, padding), y_t, atol=0, rtol=0)
    dy = integer_dy(12, *y_t.shape, dtype=x.dtype)
    expected = torch_max_pool_grad(dy, x, K, stride, padding)
    for backward in backwards:
        dx = backward(dy, x, K, stride, padding)
        torch.testing.assert_close(dx, expected, atol=0, rtol=0)
        assert dx.sum() == dy.sum()                                                 # no gradient lost in padding
    torch.testing.assert_close(max_pool2d_backward(dy, x, K, stride, padding, indices=idx), expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neg_inf_beside_padding_2x2_kernel_2_stride_1_padding_1(dtype):
    """The reported case: the corner window (-inf and three padding cells) must pick the real -inf (index 2)."""
    x = torch.tensor([[[[1.0, 2.0], [NEG_INF, 3.0]]]], dtype=dtype)
    _, idx = max_pool2d(x, 2, 1, 1, return_indices=True)
    assert idx.tolist() == [[[[0, 1, 1], [0, 3, 3], [2, 3, 3]]]]
    assert_pool_matches_torch(x, 2, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neg_inf_4x4_but_bottom_right_kernel_3_stride_2_padding_1(dtype):
    """The reported case: windows of −∞ and padding only; the backward used to raise 'index -5 is out of bounds'."""
    x = torch.full((1, 1, 4, 4), NEG_INF, dtype=dtype)
    x[0, 0, 2:, 2:] = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype)
    _, idx = max_pool2d(x, 3, 2, 1, return_indices=True)
    assert idx.tolist() == [[[[0, 1], [4, 15]]]]                          # first in-bounds entry of each window
    assert_pool_matches_torch(x, 3, 2, 1)


@pytest.mark.parametrize("fn", FORWARDS)
@given(problem=pool_problems_with_neg_inf())
def test_max_pool_with_neg_inf_matches_F_max_pool2d(fn, problem):
    x, K, stride, padding = problem
    torch.testing.assert_close(fn(x, K, stride, padding), F.max_pool2d(x, K, stride, padding), atol=0, rtol=0)


@given(problem=pool_problems_with_neg_inf())
def test_indices_with_neg_inf_match_F_max_pool2d_return_indices(problem):
    x, K, stride, padding = problem
    assert_pool_matches_torch(x, K, stride, padding, forwards=(), backwards=())


@pytest.mark.parametrize("backward", BACKWARDS)
@given(problem=pool_problems_with_neg_inf())
def test_backward_with_neg_inf_matches_autograd_through_F_max_pool2d(backward, problem):
    x, K, stride, padding = problem
    dy = integer_dy(13, *F.max_pool2d(x, K, stride, padding).shape, dtype=x.dtype)
    dx = backward(dy, x, K, stride, padding)
    torch.testing.assert_close(dx, torch_max_pool_grad(dy, x, K, stride, padding), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neg_inf_every_small_window_stride_and_padding(dtype):
    """Seeded sweep: K_h, K_w ≤ 3, s_h, s_w ≤ 3, every padding ≤ K // 2; image 0 all −∞, image 1 with
    scattered −∞ and whole windows of −∞, image 2 with ties."""
    for K in [(k_h, k_w) for k_h in range(1, 4) for k_w in range(1, 4)]:
        for stride in [(a, b) for a in range(1, 4) for b in range(1, 4)]:
            for padding in [(a, b) for a in range(K[0] // 2 + 1) for b in range(K[1] // 2 + 1)]:
                seed = hash((K, stride, padding)) % 2**31
                x = with_ties(seed, 3, 1, 4, 5, dtype=dtype)
                x[:2] = place_neg_inf(x[:2], K, stride, padding, seed, {"scattered", "windows"})
                x[0] = NEG_INF
                assert_pool_matches_torch(x.reshape(1, 3, 4, 5), K, stride, padding)


@given(problem=pool_problems_with_neg_inf())
def test_avg_pool_as_conv_with_neg_inf_matches_F_avg_pool2d(problem):
    """Zero padding counted in the mean (count_include_pad=True): −∞ averages to −∞ as in F.avg_pool2d."""
    x, K, stride, padding = problem
    tol = dict(atol=1e-12, rtol=1e-12) if x.dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(avg_pool2d_as_conv(x, K, stride, padding), F.avg_pool2d(x, K, stride, padding), **tol)


# =========================================================================================================
# errors, devices
# =========================================================================================================
@pytest.mark.parametrize("fn", FORWARDS + [pytest.param(avg_pool2d_as_conv, id="avg")])
@pytest.mark.parametrize("args,error,match", [
    ((torch.zeros(5), 2), ValueError, r"\(\.\.\., H, W\)"),
    ((torch.zeros(1, 1, 3, 3), 4), ValueError, r"larger than the padded input"),
    ((torch.zeros(1, 1, 3, 3), 0), ValueError, r"kernel_size must be >= 1"),
    ((torch.zeros(1, 1, 3, 3), 2, 0), ValueError, r"stride must be >= 1"),
    ((torch.zeros(1, 1, 3, 3, dtype=torch.long), 2), TypeError, r"floating-point"),
])
def test_errors(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


@pytest.mark.parametrize("fn", FORWARDS)
def test_max_pool_padding_at_most_half_the_window(fn):
    with pytest.raises(ValueError, match=r"at most half the window"):
        fn(torch.zeros(1, 1, 6, 6), 2, 2, 2)


@pytest.mark.parametrize("backward", BACKWARDS)
def test_backward_rejects_dy_of_the_wrong_shape(backward):
    with pytest.raises(ValueError, match=r"dy must have the shape of the output \(1, 2, 3, 3\)"):
        backward(torch.zeros(1, 2, 6, 6), torch.zeros(1, 2, 6, 6), 2)


def test_inputs_not_modified():
    x = with_ties(6, 2, 3, 6, 6)
    dy = randn(7, 2, 3, 3, 3)
    before = (x.clone(), dy.clone())
    max_pool2d(x, 2), max_pool2d_loop(x, 2), avg_pool2d_as_conv(x, 2)
    max_pool2d_backward(dy, x, 2), max_pool2d_backward_loop(dy, x, 2)
    assert torch.equal(x, before[0]) and torch.equal(dy, before[1])


class TestDevices:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_pooling_on_device_ties_included(self, device, dtype):
        x = with_ties(8, 2, 3, 9, 8, dtype=dtype)
        y = F.max_pool2d(x, 3, 2, 1)
        dy = randn(9, *y.shape, dtype=dtype)
        expected = torch_max_pool_grad(dy, x, 3, 2, 1)
        for fn in (max_pool2d, max_pool2d_loop):
            out = fn(x.to(device), 3, 2, 1)
            assert out.device.type == device.type and out.dtype == dtype
            torch.testing.assert_close(out.cpu(), y, atol=0, rtol=0)
        for backward in (max_pool2d_backward, max_pool2d_backward_loop):
            dx = backward(dy.to(device), x.to(device), 3, 2, 1)
            assert dx.device.type == device.type and dx.dtype == dtype
            torch.testing.assert_close(dx.cpu(), expected, atol=1e-6, rtol=0)
        avg = avg_pool2d_as_conv(x.to(device), 3, 2, 1)
        assert avg.device.type == device.type
        torch.testing.assert_close(avg.cpu(), F.avg_pool2d(x, 3, 2, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_ties_follow_pytorch_cuda_rule():
    """PyTorch's CUDA kernel also keeps the first maximum: ours agrees with autograd on the GPU."""
    x = with_ties(10, 4, 8, 16, 16, dtype=torch.float32).cuda().requires_grad_(True)
    y = F.max_pool2d(x, 3, 2)
    dy = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, dy)
    torch.testing.assert_close(max_pool2d_backward(dy, x.detach(), 3, 2), expected, atol=1e-6, rtol=0)


# =========================================================================================================
# graded exercises: the reference passes, plausible mistakes fail
# =========================================================================================================
POOL_EXERCISES = ["downsample_average", "max_pool_image", "maxpool2d_forward", "maxpool2d_backward"]


@pytest.mark.parametrize("name", POOL_EXERCISES)
def test_reference_passes_its_exercise(name, capsys):
    ex = grading.exercises()[name]
    assert len(ex.cases) >= 5 and len({c.name for c in ex.cases}) == len(ex.cases)
    grading.check(name, ex.reference, device=["cpu"])
    assert f"{name}: {len(ex.cases)} cases passed" in capsys.readouterr().out


def test_loop_versions_pass_the_exercises():
    grading.check("maxpool2d_forward", max_pool2d_loop, device=["cpu"])
    grading.check("maxpool2d_backward", max_pool2d_backward_loop, device=["cpu"])
    grading.check("max_pool_image", lambda x, k, stride=None: max_pool2d_loop(x, k, stride), device=["cpu"])


def _fails(name, fn, fragment):
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn, device=["cpu"])
    msg = str(info.value)
    assert msg.startswith(f"{name}, case ") and "\n" not in msg
    assert fragment in msg, msg
    return msg


def test_wrong_implementations_fail():
    # subsampling without averaging (aliasing): not downsampling by averaging
    _fails("downsample_average", lambda x, k: x[: x.shape[0] // k * k:k, : x.shape[1] // k * k:k], "values differ")
    # average instead of max
    _fails("max_pool_image", lambda x, k, stride=None: avg_pool2d_as_conv(x, k, stride), "values differ")
    # stride ignored (always = kernel size)
    _fails("maxpool2d_forward", lambda x, k, stride=None: max_pool2d(x, k), "overlapping windows")

    # the gradient shared by every tied maximum: wrong rule
    def all_ties(dy, x, k, stride=None):
        s = k if stride is None else stride
        y = F.max_pool2d(x, k, s)
        dx = torch.zeros_like(x)
        for i in range(y.shape[-2]):
            for j in range(y.shape[-1]):
                win = (slice(None), slice(None), slice(s * i, s * i + k), slice(s * j, s * j + k))
                dx[win] += (x[win] == y[..., i:i + 1, j:j + 1]) * dy[..., i:i + 1, j:j + 1]
        return dx
    _fails("maxpool2d_backward", all_ties, "ties")

    # the last maximum instead of the first
    def last_max(dy, x, k, stride=None):
        s = k if stride is None else stride
        dx = torch.zeros_like(x)
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                for i in range(dy.shape[-2]):
                    for j in range(dy.shape[-1]):
                        window = x[n, c, s * i:s * i + k, s * j:s * j + k].reshape(-1)
                        last = k * k - 1 - int(window.flip(0).argmax())
                        dx[n, c, s * i + last // k, s * j + last % k] += dy[n, c, i, j]
        return dx
    _fails("maxpool2d_backward", last_max, "ties")
