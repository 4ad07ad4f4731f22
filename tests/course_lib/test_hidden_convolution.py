"""The hidden cases of the convolution assignment catch the mistakes its visible tests let through (gradient
flow, non-contiguous inputs, NaN/inf at pixels no window covers, aliasing for p = 0 or k = 1, dtypes, float64
precision, the device contract, the forbidden F.pad), and accept correct implementations written another way
than the references (loops over output pixels, unfold + einsum, reshape + mean, torch.cat, ...)."""
from __future__ import annotations


import pytest
import torch

from course_lib import grading
from course_lib.exercises import convolution

from verdicts import fails as _fails, verdict as _verdict

pytestmark = [pytest.mark.grading, pytest.mark.cnn]

EXERCISES = ["convolve2d", "zero_pad", "gaussian_kernel", "downsample_average", "max_pool_image"]


def _out_size(n: int, k: int, s: int) -> int:
    return (n - k) // s + 1


# ------------------------------------------------------------------------------ correct, written otherwise
def convolve2d_pixel_loop(x, F, alpha_0=0.0, stride=1):
    """Hint (a): one inner product per output pixel, written into a preallocated tensor."""
    K_h, K_w = F.shape
    H_out, W_out = _out_size(x.shape[0], K_h, stride), _out_size(x.shape[1], K_w, stride)
    y = torch.empty(H_out, W_out, dtype=x.dtype, device=x.device)
    for i in range(H_out):
        for j in range(W_out):
            field = x[stride * i:stride * i + K_h, stride * j:stride * j + K_w]
            y[i, j] = (F * field).sum() + alpha_0
    return y


def convolve2d_unfold_einsum(x, F, alpha_0=0.0, stride=1):
    """All fields as a (H', W', K_h, K_w) view, one einsum, accumulated in float64."""
    fields = x.unfold(0, F.shape[0], stride).unfold(1, F.shape[1], stride)
    return (torch.einsum("ijmn,mn->ij", fields.double(), F.double()) + alpha_0).to(x.dtype)


def zero_pad_cat(x, p):
    H, W = x.shape[-2:]
    side = x.new_zeros(*x.shape[:-2], H, p)
    rows = torch.cat([side, x, side], dim=-1)
    band = x.new_zeros(*x.shape[:-2], p, W + 2 * p)
    return torch.cat([band, rows, band], dim=-2)


def zero_pad_where(x, p):
    """Index arithmetic: gather the image into the middle, torch.where the border."""
    H, W = x.shape[-2:]
    r = torch.arange(H + 2 * p, device=x.device) - p
    c = torch.arange(W + 2 * p, device=x.device) - p
    inside = ((r >= 0) & (r < H))[:, None] & ((c >= 0) & (c < W))[None, :]
    taken = x[..., r.clamp(0, max(H - 1, 0)), :][..., c.clamp(0, max(W - 1, 0))] if H and W else \
        x.new_zeros(*x.shape[:-2], H + 2 * p, W + 2 * p)
    return torch.where(inside, taken, torch.zeros((), dtype=x.dtype, device=x.device))


def gaussian_separable(size, sigma, *, dtype=torch.float32, device=None):
    """The 1-D Gaussian from torch.linspace, its outer product, normalised at the end."""
    c = (size - 1) / 2
    r = torch.linspace(-c, c, size, dtype=torch.float64, device=device)
    g = torch.exp(-r**2 / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).to(dtype)


def gaussian_item(size, sigma, *, dtype=torch.float32, device=None):
    """Correct, with Z as a Python number (.item()): not checkable on the meta device, no point lost."""
    c = (size - 1) / 2
    r = torch.arange(size, dtype=torch.float64, device=device) - c
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    Z = g.sum().item()
    return (g / Z).to(dtype)


def downsample_reshape(x, k):
    H2, W2 = x.shape[0] // k, x.shape[1] // k
    return x[:H2 * k, :W2 * k].reshape(H2, k, W2, k).mean(dim=(1, 3))


def downsample_solution(x, k):
    """The notebook's way: the uniform kernel and (an implementation of) convolve2d."""
    uniform = torch.full((k, k), 1.0 / k**2, dtype=x.dtype, device=x.device)
    return convolve2d_pixel_loop(x, uniform, stride=k) if x.shape[0] * x.shape[1] < 4096 else \
        convolve2d_unfold_einsum(x, uniform, stride=k)


def max_pool_window_loop(x, k, stride=None):
    """Hint (a): .max() of each window (on ties its gradient is split evenly: any choice is allowed)."""
    s = k if stride is None else stride
    H_out, W_out = _out_size(x.shape[0], k, s), _out_size(x.shape[1], k, s)
    return torch.stack([torch.stack([x[s * i:s * i + k, s * j:s * j + k].max() for j in range(W_out)])
                        for i in range(H_out)])


def max_pool_unfold_amax(x, k, stride=None):
    s = k if stride is None else stride
    return x.unfold(0, k, s).unfold(1, k, s).amax(dim=(-2, -1))


@pytest.mark.parametrize("name, fn", [
    ("convolve2d", convolution.convolve2d), ("convolve2d", convolve2d_pixel_loop),
    ("convolve2d", convolve2d_unfold_einsum),
    ("zero_pad", convolution.zero_pad), ("zero_pad", zero_pad_cat), ("zero_pad", zero_pad_where),
    ("gaussian_kernel", convolution.gaussian_kernel), ("gaussian_kernel", gaussian_separable),
    ("downsample_average", convolution.downsample_average), ("downsample_average", downsample_reshape),
    ("downsample_average", downsample_solution),
    ("max_pool_image", convolution.max_pool_image), ("max_pool_image", max_pool_window_loop),
    ("max_pool_image", max_pool_unfold_amax),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_correct_implementations_pass(name, fn):
    verdict = _verdict(name, fn)
    assert verdict.passed, verdict.message


def test_properties_declared():
    ex = grading.exercises()
    for name in ("convolve2d", "zero_pad", "downsample_average", "max_pool_image"):
        assert ex[name].grad and not ex[name].may_alias, name
    assert not ex["gaussian_kernel"].grad           # no tensor input
    labels = {name: [c.name for c in ex[name].cases] for name in EXERCISES}
    for name in ("convolve2d", "zero_pad", "downsample_average", "max_pool_image"):
        assert any(label.endswith(", non-contiguous") for label in labels[name]), name
        assert len(set(labels[name])) == len(labels[name]), name


# ------------------------------------------------------------------------------ gradient flow
def convolve2d_item_loop(x, F, alpha_0=0.0, stride=1):
    """Right values, built from Python numbers: training through it would stop."""
    K_h, K_w = F.shape
    H_out, W_out = _out_size(x.shape[0], K_h, stride), _out_size(x.shape[1], K_w, stride)
    y = torch.zeros(H_out, W_out, dtype=x.dtype, device=x.device)
    for i in range(H_out):
        for j in range(W_out):
            y[i, j] = (F * x[stride * i:stride * i + K_h, stride * j:stride * j + K_w]).sum().item() + alpha_0
    return y


def test_convolve2d_without_gradient_fails():
    msg = _fails("convolve2d", convolve2d_item_loop, "case 1/", "the lecture's example", "on cpu",
                 "no gradient reaches x through your output")
    assert "torch.no_grad()" in msg


def test_pooling_under_no_grad_fails():
    def max_pool_no_grad(x, k, stride=None):
        with torch.no_grad():
            return convolution.max_pool_image(x, k, stride)

    def downsample_detached(x, k):
        return downsample_reshape(x.detach(), k)

    _fails("max_pool_image", max_pool_no_grad, "case 1/", "no gradient reaches x")
    _fails("downsample_average", downsample_detached, "case 1/", "no gradient reaches x")


def test_zero_pad_without_gradient_fails():
    def zero_pad_numpy_copy(x, p):
        out = torch.zeros(*x.shape[:-2], x.shape[-2] + 2 * p, x.shape[-1] + 2 * p, dtype=x.dtype, device=x.device)
        out[..., p:p + x.shape[-2], p:p + x.shape[-1]] = x.detach()
        return out

    _fails("zero_pad", zero_pad_numpy_copy, "case 1/", "no gradient reaches x")


# ------------------------------------------------------------------------------ non-contiguous inputs
def convolve2d_as_strided(x, F, alpha_0=0.0, stride=1):
    """im2col with strides computed from the shape: right for contiguous x only."""
    H, W = x.shape
    K_h, K_w = F.shape
    H_out, W_out = _out_size(H, K_h, stride), _out_size(W, K_w, stride)
    fields = x.as_strided((H_out, W_out, K_h, K_w), (stride * W, stride, W, 1))
    return (fields * F).sum(dim=(-2, -1)) + alpha_0


def test_convolve2d_reading_memory_as_contiguous_fails():
    _fails("convolve2d", convolve2d_as_strided, "non-contiguous'", "values differ")


# ------------------------------------------------------------------------------ NaN / inf where ignored
def convolve2d_toeplitz(x, F, alpha_0=0.0, stride=1):
    """y = M · vec(x) with the (H'W', HW) matrix of the convolution: the zeros of M meet every pixel."""
    H, W = x.shape
    K_h, K_w = F.shape
    H_out, W_out = _out_size(H, K_h, stride), _out_size(W, K_w, stride)
    rows = torch.arange(H_out, device=x.device)[:, None] * stride + torch.arange(K_h, device=x.device)   # s i + m
    cols = torch.arange(W_out, device=x.device)[:, None] * stride + torch.arange(K_w, device=x.device)   # s j + n
    R = torch.nn.functional.one_hot(rows, H).to(x.dtype)                  # (H', K_h, H)
    C = torch.nn.functional.one_hot(cols, W).to(x.dtype)                  # (W', K_w, W)
    M = torch.einsum("inr,jnc->ijrc", torch.einsum("imr,mn->inr", R, F), C)   # (H', W', H, W)
    return (M.reshape(H_out * W_out, H * W) @ x.reshape(-1)).reshape(H_out, W_out) + alpha_0


def downsample_matrices(x, k):
    """A x B with averaging matrices: 0 · NaN = NaN for the dropped rows and columns."""
    H, W = x.shape
    A = torch.zeros(H // k, H, dtype=x.dtype, device=x.device)
    B = torch.zeros(W, W // k, dtype=x.dtype, device=x.device)
    for i in range(H // k):
        A[i, k * i:k * i + k] = 1.0 / k
    for j in range(W // k):
        B[k * j:k * j + k, j] = 1.0 / k
    return A @ x @ B


def test_nan_at_uncovered_pixels_fails():
    _fails("convolve2d", convolve2d_toeplitz, "NaN and inf at the pixels no field covers", "values differ")
    _fails("downsample_average", downsample_matrices, "NaN and inf in the dropped rows and columns",
           "values differ")


# ------------------------------------------------------------------------------ aliasing
def test_returning_the_input_fails():
    def zero_pad_shortcut(x, p):
        return x if p == 0 else convolution.zero_pad(x, p)

    def max_pool_no_clone(x, k, stride=None):       # the notebook's running maximum without .clone()
        s = k if stride is None else stride
        H_out, W_out = _out_size(x.shape[0], k, s), _out_size(x.shape[1], k, s)
        y = None
        for m in range(k):
            for n in range(k):
                view = x[m:m + s * (H_out - 1) + 1:s, n:n + s * (W_out - 1) + 1:s]
                y = view if y is None else torch.maximum(y, view)
        return y

    _fails("zero_pad", zero_pad_shortcut, "p=0'", "output is the input x itself")
    _fails("max_pool_image", max_pool_no_clone, "k=1: every pixel its own window", "output shares memory with "
           "the input x (it is a view of x)")


# ------------------------------------------------------------------------------ dtypes and precision
def test_float32_gaussian_fails_the_float64_case():
    def gaussian_float32(size, sigma, *, dtype=torch.float32, device=None):
        c = (size - 1) / 2
        r = torch.arange(size, dtype=torch.float32, device=device) - c
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
        return (g / g.sum()).to(dtype)

    _fails("gaussian_kernel", gaussian_float32, "'size=9, sigma=0.3, dtype=float64'", "values differ")


def test_zero_pad_dtypes():
    def zero_pad_float_zeros(x, p):                 # zeros of the default float dtype, cast back: bool breaks
        H, W = x.shape[-2:]
        out = torch.zeros(*x.shape[:-2], H + 2 * p, W + 2 * p, device=x.device)
        out[..., p:p + H, p:p + W] = x
        return out.to(x.dtype) if x.dtype != torch.bool else out

    _fails("zero_pad", zero_pad_float_zeros, "bool, p=1'", "dtype torch.float32, expected torch.bool")


def test_forbidden_pad_fails():
    _fails("zero_pad", lambda x, p: torch.nn.functional.pad(x, (p, p, p, p)), "torch.nn.functional.pad",
           "implement yourself")


# ------------------------------------------------------------------------------ the device contract
@pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device check runs where no GPU is")
def test_tensor_without_device_fails_on_meta():
    def zero_pad_no_device(x, p):
        H, W = x.shape[-2:]
        side = torch.zeros(*x.shape[:-2], H, p, dtype=x.dtype)
        band = torch.zeros(*x.shape[:-2], p, W + 2 * p, dtype=x.dtype)
        return torch.cat([band, torch.cat([side, x, side], dim=-1), band], dim=-2)

    def downsample_no_device(x, k):
        H2, W2 = x.shape[0] // k, x.shape[1] // k
        y = torch.zeros(H2, W2, dtype=x.dtype)
        for m in range(k):
            for n in range(k):
                y = y + x[m:m + k * (H2 - 1) + 1:k, n:n + k * (W2 - 1) + 1:k] / k**2
        return y

    for name, fn in (("zero_pad", zero_pad_no_device), ("downsample_average", downsample_no_device)):
        msg = _fails(name, fn, "case 1/", "on meta", "create new tensors on the input's device")
        assert "RuntimeError" in msg or "output is on cpu, expected meta" in msg, msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device check runs where no GPU is")
def test_item_is_not_checkable_and_loses_nothing():
    verdict = _verdict("gaussian_kernel", gaussian_item)
    assert verdict.passed, verdict.message
    n = len(grading.exercises()["gaussian_kernel"].cases)
    assert f"for 0 cases, {n} not checkable on this machine" in verdict.message, verdict.message


def test_gaussian_ignoring_dtype_or_device_fails():
    def float32_always(size, sigma, *, dtype=torch.float32, device=None):
        return gaussian_separable(size, sigma, device=device)

    _fails("gaussian_kernel", float32_always, "dtype=float64'", "dtype torch.float32, expected torch.float64")


def test_the_hidden_cases_are_quick():
    import time
    for name in EXERCISES:
        ex = grading.exercises()[name]
        start = time.perf_counter()
        assert _verdict(name, ex.reference).passed
        assert time.perf_counter() - start < 3.0, name
