"""Graded exercises of the CNN-layers assignment (``solutions/cnn_layers/cnn_layers.ipynb``): numerical
gradients, the convolution layer forward and backward (loops, then im2col), max-pooling forward and
backward. Tensors are (N, C, H, W); the cases are small enough for plain Python loops."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cnn import conv, pool
from ..grading import Case, Exercise, noncontiguous, register
from . import CONV, POOL


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(g: torch.Generator, shape, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev)


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: numerical_gradient(f, x, h=1e-6)
# ---------------------------------------------------------------------------------------------------------
def _grad_case(label: str, shape: tuple[int, ...], build, h: float | None = None) -> Case:
    """``build(g, dev) -> f``: the scalar function whose gradient is wanted (its constants drawn from g)."""
    def make(g, dev):
        x = _randn(g, shape, torch.float64, dev)
        f = build(g, dev)
        return (f, x), ({} if h is None else {"h": h})
    return Case(label + ("" if h is None else f", h={h:g}"), make)


def _sin_weighted(g, dev):
    w = _randn(g, (2, 3), torch.float64, dev)
    return lambda t: (torch.sin(t) * w).sum()


def _matrix_norm(g, dev):
    A = _randn(g, (3, 4), torch.float64, dev)
    return lambda t: torch.linalg.vector_norm(A @ t)


def _conv_loss(g, dev):
    w = _randn(g, (2, 1, 2, 2), torch.float64, dev)
    r = _randn(g, (1, 2, 3, 3), torch.float64, dev)
    return lambda t: (F.conv2d(t, w) * r).sum()            # J = Σ y ⊙ r, so ∂J/∂y = r


def _python_float(g, dev):
    return lambda t: float((t**3).sum() - t.prod())


register(Exercise(
    "numerical_gradient", conv.numerical_gradient,
    [_grad_case("f(x) = Σ x², x(3,)", (3,), lambda g, dev: (lambda t: (t**2).sum())),
     _grad_case("f(x) = Σ sin(x) ⊙ w, x(2, 3)", (2, 3), _sin_weighted),
     _grad_case("f(x) = ‖A x‖, x(4,)", (4,), _matrix_norm, h=1e-5),
     _grad_case("J = Σ conv2d(x, α) ⊙ r, x(1, 1, 4, 4)", (1, 1, 4, 4), _conv_loss),
     _grad_case("f returns a Python float, x(2, 2)", (2, 2), _python_float, h=1e-4),
     _grad_case("f(x) = Σ x², x(1,)", (1,), lambda g, dev: (lambda t: (t**2).sum()), h=1e-3),
     noncontiguous(_grad_case("f(x) = Σ sin(x) ⊙ w, x(2, 3)", (2, 3), _sin_weighted)),
     _grad_case("f(x) = x³ + 2x, x() 0-d", (), lambda g, dev: (lambda t: t**3 + 2 * t)),
     _grad_case("f(x) = Σ x², x(0, 3) empty", (0, 3), lambda g, dev: (lambda t: (t**2).sum()))],
    hint="(f(x + h e_i) − f(x − h e_i)) / (2h) for every element i, with the h you are given; restore x "
         "(or perturb a copy) so that the input is unchanged",
))


# ---------------------------------------------------------------------------------------------------------
# Exercises 2-4: the convolution layer
# ---------------------------------------------------------------------------------------------------------
def _conv_args(g, dev, x_shape, w_shape, dtype, bias: bool):
    x = _randn(g, x_shape, dtype, dev)
    w = _randn(g, w_shape, dtype, dev)
    b = _randn(g, (w_shape[0],), dtype, dev) if bias else None
    return x, w, b


def _conv_label(x_shape, w_shape, dtype, bias, stride, padding, label):
    text = f"x{tuple(x_shape)} α{tuple(w_shape)} {_name(dtype)}" + ("" if bias else ", bias=None")
    text += "".join(f", {k}={v}" for k, v in (("stride", stride), ("padding", padding)) if v)
    return text + (f": {label}" if label else "")


def _forward_case(x_shape, w_shape, dtype=torch.float64, bias=True, stride=None, padding=None, label="") -> Case:
    kwargs = {k: v for k, v in (("stride", stride), ("padding", padding)) if v is not None}

    def make(g, dev):
        x, w, b = _conv_args(g, dev, x_shape, w_shape, dtype, bias)
        return (x, w, b), dict(kwargs)
    return Case(_conv_label(x_shape, w_shape, dtype, bias, stride, padding, label), make)


def _backward_case(x_shape, w_shape, dtype=torch.float64, stride=None, padding=None, label="") -> Case:
    kwargs = {k: v for k, v in (("stride", stride), ("padding", padding)) if v is not None}
    s, p = stride or 1, padding or 0

    def make(g, dev):
        x, w, _ = _conv_args(g, dev, x_shape, w_shape, dtype, False)
        H_out = conv.conv_output_size(x_shape[2], w_shape[2], s, p)
        W_out = conv.conv_output_size(x_shape[3], w_shape[3], s, p)
        dy = _randn(g, (x_shape[0], w_shape[0], H_out, W_out), dtype, dev)
        return (dy, x, w), dict(kwargs)
    return Case(_conv_label(x_shape, w_shape, dtype, True, stride, padding, label).replace("x(", "dy, x(", 1), make)


_CONV_SHAPES = [   # (x shape, α shape, dtype, stride, padding, label): small enough for plain loops
    ((1, 1, 3, 3), (1, 1, 2, 2), torch.float64, None, None, "the lecture's 1 input, 1 output channel"),
    ((1, 1, 4, 4), (2, 1, 2, 2), torch.float64, None, None, "1 input channel, 2 output channels"),
    ((2, 3, 6, 6), (4, 3, 3, 3), torch.float64, None, 1, "colour input, padding keeps the size"),
    ((1, 2, 7, 7), (3, 2, 3, 3), torch.float32, 2, None, "stride 2"),
    ((2, 3, 5, 6), (2, 3, 2, 3), torch.float64, None, None, "non-square kernel"),
    ((1, 1, 8, 8), (2, 1, 3, 3), torch.float64, 3, 2, "stride 3, padding 2"),
    ((2, 4, 3, 3), (5, 4, 1, 1), torch.float32, None, None, "1×1 kernel"),
    ((1, 2, 3, 3), (1, 2, 5, 5), torch.float64, None, 1, "kernel as large as the padded input"),
]
_CONV_MORE = [     # edge sizes: non-square with padding, a batch larger than C and W
    ((1, 2, 5, 7), (3, 2, 3, 2), torch.float64, None, 1, "non-square input and kernel, padding"),
    ((4, 1, 3, 3), (2, 1, 2, 2), torch.float64, None, None, "batch larger than channels and width"),
]
# Receptive fields of over 2^16 numbers per output row (the reference computes blocks of about 1 MiB of columns:
# these cases check that blocks of images and of rows cover the output). Forward: one channel, a large kernel,
# few positions (cheap for loops, gradients included); backward: many channels, small kernel, wide rows (cheap
# for loops over the weights).
_CONV_LARGE_FORWARD = [
    ((3, 1, 32, 1026), (1, 1, 32, 1025), torch.float64, None, None, "a large kernel, 1×2 positions"),
    ((2, 1, 65, 1026), (1, 1, 64, 1025), torch.float64, None, None, "a large kernel, 2×2 positions"),
]
_CONV_LARGE_BACKWARD = [
    ((3, 64, 3, 130), (1, 64, 3, 3), torch.float64, None, None, "64 channels, wide rows"),
    ((2, 64, 4, 258), (1, 64, 3, 3), torch.float64, None, None, "64 channels, very wide rows"),
]
_CONV_NONCONTIGUOUS = _CONV_SHAPES[2]    # colour input, padding: every input a strided view with NaN in the gaps


def _forward_cases() -> list[Case]:
    """The forward cases of Exercises 2 and 4 (case 5 without bias)."""
    xs, ws, dt, s, p, lab = _CONV_NONCONTIGUOUS
    return ([_forward_case(xs, ws, dt, bias=(i != 4), stride=s, padding=p, label=lab)
             for i, (xs, ws, dt, s, p, lab) in enumerate(_CONV_SHAPES + _CONV_MORE + _CONV_LARGE_FORWARD)]
            + [noncontiguous(_forward_case(xs, ws, dt, stride=s, padding=p, label=lab))])

register(Exercise(
    "conv2d_forward", conv.conv2d,
    _forward_cases(),
    hint="y^(c')_(h',w') = Σ_c Σ_m Σ_n α^(c',c)_(m,n) x^(c)_(s·h'+m, s·w'+n) + β^(c') on the zero-padded "
         "input (0-based), H_out = ⌊(H + 2p − K_h)/s⌋ + 1; no bias when bias is None",
    forbidden=CONV,
    gives_away=(conv.conv2d_loop, conv.conv2d_image),
    grad=True,
))

register(Exercise(
    "conv2d_backward", conv.conv2d_backward,
    [_backward_case(xs, ws, dt, stride=s, padding=p, label=lab) for xs, ws, dt, s, p, lab in
       _CONV_SHAPES + _CONV_MORE + _CONV_LARGE_BACKWARD]
    + [noncontiguous(_backward_case(*_CONV_NONCONTIGUOUS[:3], stride=_CONV_NONCONTIGUOUS[3],
                                    padding=_CONV_NONCONTIGUOUS[4], label=_CONV_NONCONTIGUOUS[5]))],
    hint="return (dx, dweight, dbias): ∂J/∂α^(c',c)_(m,n) = Σ_n Σ_h' Σ_w' ∂J/∂y^(c')_(h',w') · x^(c)_(s·h'+m, s·w'+n) "
         "on the padded input, ∂J/∂β^(c') = Σ ∂J/∂y^(c'), and every x_(s·h'+m, s·w'+n) receives "
         "Σ_c' ∂J/∂y^(c')_(h',w') · α^(c',c)_(m,n); drop the padding from dx",
    forbidden=CONV + ("aten::convolution_backward",),
    gives_away=(conv.conv2d_backward_loop,),
))

register(Exercise(
    "conv2d_forward_unfold", conv.conv2d,
    _forward_cases()
    + [_forward_case((4, 3, 16, 16), (8, 3, 5, 5), torch.float32, padding=2, label="a larger layer"),
       _forward_case((2, 8, 12, 12), (16, 8, 3, 3), torch.float64, stride=2, padding=1, label="a larger layer")],
    hint="im2col: cols = F.unfold(x, (K_h, K_w), padding=p, stride=s) has shape (N, C·K_h·K_w, H_out·W_out); "
         "then y = α.reshape(C', -1) @ cols + β[:, None], reshaped to (N, C', H_out, W_out)",
    forbidden=CONV,
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercises 5-6: max-pooling
# ---------------------------------------------------------------------------------------------------------
def _pool_x(g, dev, shape, dtype, ties):
    if ties:                      # values in {0, 1, 2}: windows with several maxima
        return torch.randint(0, 3, shape, generator=g).to(dtype).to(dev)
    return _randn(g, shape, dtype, dev)


def _pool_label(shape, dtype, k, stride, ties, label):
    text = f"x{tuple(shape)} {_name(dtype)}, kernel_size={k}" + ("" if stride is None else f", stride={stride}")
    return text + (", ties" if ties else "") + (f": {label}" if label else "")


def _pool_forward_case(shape, k, stride=None, dtype=torch.float64, ties=False, label="") -> Case:
    def make(g, dev):
        x = _pool_x(g, dev, shape, dtype, ties)
        return ((x, k) if stride is None else (x, k, stride)), {}
    return Case(_pool_label(shape, dtype, k, stride, ties, label), make)


def _uncovered(shape, k, s) -> torch.Tensor:
    """True at the entries of x that no window reaches (stride > kernel_size, or rows/columns left over)."""
    covered = torch.zeros(shape[-2:], dtype=torch.bool)
    for h in range(pool.pool_output_size(shape[2], k, s)):
        for w in range(pool.pool_output_size(shape[3], k, s)):
            covered[s * h:s * h + k, s * w:s * w + k] = True
    return ~covered


def _pool_backward_case(shape, k, stride=None, dtype=torch.float64, ties=False, label="", constant=False,
                        nan_uncovered=False) -> Case:
    s = k if stride is None else stride

    def make(g, dev):
        x = torch.ones(shape, dtype=dtype).to(dev) if constant else _pool_x(g, dev, shape, dtype, ties)
        if nan_uncovered:      # entries no window reaches do not matter: NaN there changes nothing
            x = x.masked_fill(_uncovered(shape, k, s).to(dev), float("nan"))
        dy = _randn(g, (*shape[:2], pool.pool_output_size(shape[2], k, s), pool.pool_output_size(shape[3], k, s)),
                    dtype, dev)
        return ((dy, x, k) if stride is None else (dy, x, k, stride)), {}
    return Case(_pool_label(shape, dtype, k, stride, ties, label).replace("x(", "dy, x(", 1), make)


_POOL_SHAPES = [   # (x shape, kernel_size, stride, dtype, ties, label)
    ((1, 1, 4, 4), 2, None, torch.float64, False, "the lecture's 2×2 windows, stride 2"),
    ((2, 3, 6, 6), 2, None, torch.float32, False, ""),
    ((1, 2, 7, 7), 3, 2, torch.float64, False, "overlapping windows"),
    ((2, 1, 5, 8), 2, 1, torch.float64, False, "stride 1"),
    ((1, 2, 9, 9), 3, 3, torch.float32, False, ""),
    ((1, 2, 7, 6), 2, 3, torch.float64, False, "gaps between windows"),
    ((2, 2, 6, 6), 2, None, torch.float64, True, ""),
    ((1, 3, 7, 7), 3, 2, torch.float64, True, "overlapping windows"),
]

# The forward cases with ties are float16 and bfloat16 (values 0, 1, 2 are exact there), where no gradient is
# compared: which tied input max's gradient reaches is a convention (torch.maximum splits it, amax shares it).
_POOL_FORWARD_SHAPES = [(xs, k, s, torch.float16 if ties and i % 2 == 0 else torch.bfloat16 if ties else dt,
                         ties, lab) for i, (xs, k, s, dt, ties, lab) in enumerate(_POOL_SHAPES)] + [
    ((1, 2, 3, 4), 1, None, torch.float64, False, "1×1 windows"),
    ((2, 1, 5, 4), 1, 2, torch.float32, False, "1×1 windows"),
]

register(Exercise(
    "maxpool2d_forward", pool.max_pool2d,
    [_pool_forward_case(xs, k, s, dt, ties, lab) for xs, k, s, dt, ties, lab in _POOL_FORWARD_SHAPES]
    + [noncontiguous(_pool_forward_case(*_POOL_SHAPES[2][:4], label=_POOL_SHAPES[2][5]))],
    hint="y_(h',w') = max of x over the window rows s·h' .. s·h'+K−1, columns s·w' .. s·w'+K−1 (0-based), "
         "for every example and channel; stride = kernel_size when stride is None",
    forbidden=POOL,
    gives_away=(pool.max_pool2d_loop,),
    grad=True,
))

register(Exercise(
    "maxpool2d_backward", pool.max_pool2d_backward,
    [_pool_backward_case(xs, k, s, dt, ties, lab) for xs, k, s, dt, ties, lab in _POOL_SHAPES]
    + [_pool_backward_case((1, 1, 4, 4), 2, None, torch.float64, label="a constant input: every window is a tie",
                           constant=True),
       _pool_backward_case((1, 2, 7, 6), 2, 3, torch.float64, label="gaps between windows, NaN where no window reaches",
                           nan_uncovered=True),
       _pool_backward_case((1, 2, 3, 5), 1, 2, torch.float32, label="1×1 windows"),
       noncontiguous(_pool_backward_case(*_POOL_SHAPES[7][:5], label=_POOL_SHAPES[7][5]))],
    hint="each ∂J/∂y_(h',w') goes to ONE input: the first maximum of its window in row-major order (smallest "
         "row, then smallest column), as PyTorch does; inputs that win several windows get the sum",
    forbidden=POOL + ("aten::max_pool2d_with_indices_backward",),
    gives_away=(pool.max_pool2d_backward_loop,),
))
