"""Graded exercises of the convolution assignment (``solutions/convolution/convolution.ipynb``): one
channel, the lecture's sliding inner product, padding, the Gaussian kernel, stride, downsampling by
averaging and max-pooling. Images are (H, W) tensors; cases are small."""
from __future__ import annotations

import torch

from ..cnn import conv, kernels, pool
from ..grading import Case, Exercise, noncontiguous, register
from . import CONV, POOL


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(g: torch.Generator, shape, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev)


def _uncovered(x: torch.Tensor, k_h: int, k_w: int, s: int) -> torch.Tensor:
    """x with NaN in the rows and +inf in the columns that no k_h×k_w window at stride s covers (the rows
    and columns dropped at the bottom and right, the gaps between windows when s > k): a result that
    depends on them is wrong (e.g. 0 · NaN = NaN in a matrix product)."""
    H, W = x.shape
    rows = torch.ones(H, dtype=torch.bool)
    cols = torch.ones(W, dtype=torch.bool)
    for i in range((H - k_h) // s + 1):
        rows[s * i:s * i + k_h] = False
    for j in range((W - k_w) // s + 1):
        cols[s * j:s * j + k_w] = False
    x = x.clone()
    x[:, cols.to(x.device)] = float("inf")
    x[rows.to(x.device)] = float("nan")
    return x


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: convolve2d(x, F, alpha_0=0.0, stride=1)
# ---------------------------------------------------------------------------------------------------------
def convolve2d(x, F, alpha_0=0.0, stride=1):
    """Reference: y_{ij} = Σ_m Σ_n α_{mn} x_{s i + m, s j + n} + α_0 on one image (no padding)."""
    return conv.conv2d_image(x, F, alpha_0, stride)


def _conv_case(H: int, W: int, K_h: int, K_w: int, dtype: torch.dtype, alpha_0: float | None = None,
               stride: int | None = None, label: str = "") -> Case:
    kwargs = {} if alpha_0 is None else {"alpha_0": alpha_0}
    if stride is not None:
        kwargs["stride"] = stride
    name = label or (f"x({H}, {W}), F({K_h}, {K_w}) {_name(dtype)}"
                     + "".join(f", {k}={v}" for k, v in kwargs.items()))

    def make(g, dev):
        return (_randn(g, (H, W), dtype, dev), _randn(g, (K_h, K_w), dtype, dev)), dict(kwargs)
    return Case(name, make)


def _conv_uncovered_case(H: int, W: int, K_h: int, K_w: int, stride: int) -> Case:
    def make(g, dev):
        x = _uncovered(_randn(g, (H, W), torch.float64, dev), K_h, K_w, stride)
        return (x, _randn(g, (K_h, K_w), torch.float64, dev)), {"stride": stride}
    return Case(f"x({H}, {W}), F({K_h}, {K_w}) float64, stride={stride}: NaN and inf at the pixels no field covers",
                make)


def _lecture_case() -> Case:
    def make(g, dev):
        x = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(3, 3).to(dev)     # x_11 .. x_33
        F = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64, device=dev)   # α_11 .. α_22
        return (x, F), {"alpha_0": 0.25}
    return Case("the lecture's example: x 3×3, F 2×2, alpha_0=0.25", make)


register(Exercise(
    "convolve2d", convolve2d,
    [_lecture_case(),
     _conv_case(7, 7, 3, 3, torch.float64, stride=2, label="x(7, 7), F(3, 3), stride=2: the 9 patches"),
     _conv_case(8, 6, 2, 3, torch.float32, alpha_0=-1.25),
     _conv_case(5, 5, 5, 5, torch.float64, alpha_0=0.5, label="kernel as large as the image: one output"),
     _conv_case(9, 10, 3, 3, torch.float64, stride=3),
     _conv_case(6, 7, 1, 1, torch.float32),
     _conv_case(12, 11, 4, 2, torch.float32, alpha_0=0.3, stride=2),
     _conv_case(10, 3, 3, 3, torch.float64, stride=4),
     noncontiguous(_conv_case(6, 5, 2, 2, torch.float64, alpha_0=0.5)),
     _conv_case(1, 1, 1, 1, torch.float32, alpha_0=2, label="x(1, 1), F(1, 1) float32, alpha_0=2 (an int)"),
     _conv_uncovered_case(11, 9, 2, 2, 3),
     _conv_case(39, 38, 15, 15, torch.float64, alpha_0=-0.5, label="x(39, 38), F(15, 15) float64, alpha_0=-0.5: "
                "a large kernel")],
    hint="y_ij = Σ_m Σ_n α_mn x_(s·i+m, s·j+n) + α_0 (0-based): slide F without flipping it, "
         "H' = ⌊(H − K_h)/s⌋ + 1, and add alpha_0 once per output pixel",
    forbidden=CONV,
    gives_away=(conv.conv2d_image, conv.conv2d_loop),
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: zero_pad(x, p)
# ---------------------------------------------------------------------------------------------------------
# The exercise's text: "Do not use torch.nn.functional.pad".
PAD = ("torch.nn.functional.pad", "torch.constant_pad_nd", "aten::constant_pad_nd", "aten::pad")


def zero_pad(x, p):
    """Reference: p zeros on every side of the last two dimensions."""
    return conv.pad2d(x, p)


def _pad_case(shape, p: int, dtype: torch.dtype) -> Case:
    def make(g, dev):
        if dtype.is_floating_point:
            x = _randn(g, shape, dtype, dev)
        else:
            x = torch.randint(0, 2 if dtype == torch.bool else 256, shape, generator=g).to(dtype).to(dev)
        return (x, p), {}
    return Case(f"x{tuple(shape)} {_name(dtype)}, p={p}", make)


register(Exercise(
    "zero_pad", zero_pad,
    [_pad_case((3, 4), 1, torch.float64), _pad_case((5, 5), 2, torch.float32), _pad_case((4, 4), 0, torch.float64),
     _pad_case((1, 1), 3, torch.float32), _pad_case((2, 6, 3), 1, torch.float64),
     _pad_case((2, 3, 5, 4), 2, torch.float32), _pad_case((6, 5), 1, torch.uint8),
     noncontiguous(_pad_case((3, 5), 2, torch.float64)), noncontiguous(_pad_case((2, 4, 3), 1, torch.float32)),
     _pad_case((0, 4), 1, torch.float32), _pad_case((0, 3, 2), 2, torch.float64), _pad_case((4, 1), 2, torch.int64),
     _pad_case((3, 3), 1, torch.bool), _pad_case((2, 5), 2, torch.float16), _pad_case((5, 2), 1, torch.bfloat16)],
    hint="the result has shape (..., H + 2p, W + 2p), zeros around, x unchanged in the middle, the dtype "
         "and device of x",
    forbidden=PAD,
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 3: gaussian_kernel(size, sigma, *, dtype=torch.float32, device=None)
# ---------------------------------------------------------------------------------------------------------
def gaussian_kernel(size, sigma, *, dtype=torch.float32, device=None):
    """Reference: the normalised, sampled 2-D Gaussian."""
    return kernels.gaussian_blur(size, sigma, dtype=dtype, device=device)


def _gauss_case(size: int, sigma: float, dtype: torch.dtype | None = None) -> Case:
    kwargs = {} if dtype is None else {"dtype": dtype}
    label = f"size={size}, sigma={sigma:g}" + ("" if dtype is None else f", dtype={_name(dtype)}")
    return Case(label, lambda g, dev: ((size, sigma), {**kwargs, "device": dev}))


register(Exercise(
    "gaussian_kernel", gaussian_kernel,
    [_gauss_case(1, 1.0), _gauss_case(3, 1.0), _gauss_case(5, 1.0, torch.float64), _gauss_case(5, 0.5),
     _gauss_case(7, 2.0, torch.float64), _gauss_case(9, 3.0), _gauss_case(3, 10.0, torch.float64),
     _gauss_case(9, 0.3, torch.float64), _gauss_case(5, 1.5, torch.float16), _gauss_case(7, 1.0, torch.bfloat16)],
    hint="α_mn ∝ exp(−((m − c)² + (n − c)²) / (2σ²)) with c = (size − 1)/2 the centre, divided by the sum "
         "of all the entries so that they sum to 1",
    gives_away=(kernels.gaussian_blur,),
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 4: downsample_average(x, k)
# ---------------------------------------------------------------------------------------------------------
def downsample_average(x, k):
    """Reference: convolution with uniform weights 1/k², stride k."""
    return pool.avg_pool2d_as_conv(x, k, k)


def _image_case(H: int, W: int, dtype: torch.dtype, *args, label: str = "", integers: bool = False,
                uncovered: bool = False, **kwargs) -> Case:
    name = label or (f"x({H}, {W}) {_name(dtype)}" + "".join(f", {a}" for a in args)
                     + "".join(f", {k}={v}" for k, v in kwargs.items()))

    def make(g, dev):
        if integers:   # few distinct values: many ties
            x = torch.randint(0, 3, (H, W), generator=g).to(dtype).to(dev)
        else:
            x = _randn(g, (H, W), dtype, dev)
        if uncovered:  # args = (k,), stride in kwargs (default k)
            k = args[0]
            x = _uncovered(x, k, k, kwargs.get("stride") or k)
        return (x, *args), dict(kwargs)
    return Case(name, make)


register(Exercise(
    "downsample_average", downsample_average,
    [_image_case(4, 4, torch.float64, 2, label="x(4, 4) float64, k=2"),
     _image_case(8, 6, torch.float32, 2, label="x(8, 6) float32, k=2"),
     _image_case(9, 7, torch.float64, 3, label="x(9, 7) float64, k=3: the last row and column are dropped"),
     _image_case(5, 5, torch.float64, 1, label="x(5, 5) float64, k=1: nothing to average"),
     _image_case(12, 12, torch.float32, 4, label="x(12, 12) float32, k=4"),
     _image_case(7, 10, torch.float64, 2, label="x(7, 10) float64, k=2"),
     noncontiguous(_image_case(6, 8, torch.float64, 2, label="x(6, 8) float64, k=2")),
     _image_case(5, 7, torch.float32, 5, label="x(5, 7) float32, k=5: one block"),
     _image_case(9, 11, torch.float64, 4, uncovered=True,
                 label="x(9, 11) float64, k=4: NaN and inf in the dropped rows and columns"),
     _image_case(384, 352, torch.float64, 16, label="x(384, 352) float64, k=16: a photo")],
    hint="average each k×k block, i.e. convolve with the uniform kernel 1/k² at stride k: output "
         "(⌊H/k⌋, ⌊W/k⌋)",
    forbidden=CONV + POOL,
    gives_away=(pool.avg_pool2d_as_conv,),
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 5: max_pool_image(x, k, stride=None)
# ---------------------------------------------------------------------------------------------------------
def max_pool_image(x, k, stride=None):
    """Reference: max over k×k windows at stride s (default k)."""
    return pool.max_pool2d(x, k, stride)


register(Exercise(
    "max_pool_image", max_pool_image,
    [_image_case(4, 4, torch.float64, 2, label="x(4, 4) float64, k=2: the lecture's example"),
     _image_case(7, 7, torch.float64, 3, stride=2, label="x(7, 7) float64, k=3, stride=2: overlapping windows"),
     _image_case(6, 9, torch.float32, 3, label="x(6, 9) float32, k=3"),
     _image_case(8, 8, torch.float64, 2, stride=1, label="x(8, 8) float64, k=2, stride=1"),
     _image_case(5, 6, torch.float32, 2, stride=3, label="x(5, 6) float32, k=2, stride=3: gaps between windows"),
     _image_case(6, 6, torch.bfloat16, 2, integers=True, label="x(6, 6) bfloat16 with ties, k=2"),
     _image_case(9, 4, torch.float64, 3, label="x(9, 4) float64, k=3: the last column is dropped"),
     _image_case(5, 4, torch.float64, 1, label="x(5, 4) float64, k=1: every pixel its own window"),
     _image_case(4, 6, torch.float32, 4, label="x(4, 6) float32, k=4: one window"),
     noncontiguous(_image_case(7, 6, torch.float64, 3, stride=2, label="x(7, 6) float64, k=3, stride=2")),
     _image_case(8, 7, torch.float64, 2, stride=3, uncovered=True,
                 label="x(8, 7) float64, k=2, stride=3: NaN and inf at the pixels no window covers")],
    hint="y_ij = max over the window x[s·i : s·i + k, s·j : s·j + k] (0-based), stride s = k when stride is "
         "None; output ⌊(H − k)/s⌋ + 1 rows",
    forbidden=POOL,
    gives_away=(pool.max_pool2d, pool.max_pool2d_loop),
    grad=True,   # ties (the bfloat16 case, where no gradient is checked) may send the gradient to any maximum
))
