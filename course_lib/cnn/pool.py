"""Downsampling: max-pooling and averaging, as Lecture 4 writes them.

Lecture 4, "Max-Pooling": "Max-pooling with a stride > 1 is another form of downsampling. Instead of
averaging, we take the max value within the same range as the equivalently-sized convolution" (2×2
windows, stride 2 in the example):

    y_{ij} = max(x_{ij}, x_{i,j+1}, x_{i+1,j}, x_{i+1,j+1})

With a K_h×K_w window and stride s, indices from 0 on the padded input:

    y_{h',w'} = max_{0≤m<K_h, 0≤n<K_w} x_{s h'+m, s w'+n},     H_out = ⌊(H + 2p − K_h)/s⌋ + 1.

Every channel of every example is pooled on its own. Max-pooling has no parameters; its backward pass
sends each ∂J/∂y_{h',w'} to the one input that won the max (the arg-max) and zero to the others. Where
windows overlap (s < K) an input can win several windows and receives the sum.

**Ties.** When several inputs of a window share the maximum, the gradient goes to the *first* of them in
row-major order (smallest m, then smallest n), as PyTorch's ``F.max_pool2d`` does on the CPU and on CUDA.
Any choice is a valid subgradient; this one is reproducible and matches PyTorch. (A NaN in a window makes
that output NaN and receives its gradient, the first NaN if there are several; PyTorch's CPU kernel gives
it to the last one.)

"Downsampling by Averaging": "a special case of convolution where the weights are fixed to a uniform
distribution" (stride 2 in the example): ``avg_pool2d_as_conv`` is literally ``conv2d`` with every
α_{m,n} = 1/(K_h K_w), applied to each channel separately, and equals ``F.avg_pool2d`` (zero padding
counts in the average, PyTorch's default ``count_include_pad=True``).

Padding for max-pooling is with −∞, at most half the window, as in PyTorch, and padding is never the
arg-max: a window whose real entries are all −∞ has the value −∞ and its *first in-bounds* entry (row-major)
as arg-max, as PyTorch's kernels do. So every index points into the input and no gradient is lost.

Inputs are (..., H, W): (H, W) one image, (C, H, W), or (N, C, H, W); outputs keep the leading dimensions.
Two implementations of max-pooling, which agree: plain loops (``max_pool2d_loop``,
``max_pool2d_backward_loop``; teaching, small inputs) and vectorised ones (``max_pool2d``,
``max_pool2d_backward``: one pass per window position (m, n) over all outputs at once, then a scatter of
the gradients to the arg-max indices, which the forward pass can return as PyTorch's does).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .conv import _pair, conv2d, conv_output_size, pad2d

__all__ = [
    "pool_output_size",
    "max_pool2d_loop",
    "max_pool2d_backward_loop",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d_as_conv",
]


def _check_pool(x: Tensor, kernel_size, stride, padding, what: str = "max"):
    """Validate; return (K_h, K_w), (s_h, s_w), (p_h, p_w), (H_out, W_out). stride None = kernel_size."""
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"x must have shape (..., H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    K = _pair(kernel_size, "kernel_size", 1)
    s = K if stride is None else _pair(stride, "stride", 1)
    p = _pair(padding, "padding", 0)
    if what == "max" and (2 * p[0] > K[0] or 2 * p[1] > K[1]):
        raise ValueError(f"padding {padding!r} must be at most half the window {K[0]}×{K[1]} (a window of padding "
                         f"only has no maximum)")
    H, W = x.shape[-2:]
    if K[0] > H + 2 * p[0] or K[1] > W + 2 * p[1]:
        raise ValueError(f"window {K[0]}×{K[1]} is larger than the padded input {H + 2 * p[0]}×{W + 2 * p[1]}")
    size = (conv_output_size(H, K[0], s[0], p[0]), conv_output_size(W, K[1], s[1], p[1]))
    return K, s, p, size


def pool_output_size(size: int, kernel: int, stride: int | None = None, padding: int = 0) -> int:
    """⌊(size + 2·padding − kernel) / stride⌋ + 1, with stride = kernel by default."""
    return conv_output_size(size, kernel, kernel if stride is None else stride, padding)


def _planes(x: Tensor) -> Tensor:
    """(..., H, W) → (B, H, W): every channel of every example is pooled on its own."""
    return x.reshape(-1, *x.shape[-2:])


# ---------------------------------------------------------------------------------------------------------
# Plain loops (teaching; small inputs)
# ---------------------------------------------------------------------------------------------------------
def max_pool2d_loop(x: Tensor, kernel_size: "int | tuple[int, int]", stride: "int | tuple[int, int] | None" = None,
                    padding: "int | tuple[int, int]" = 0) -> Tensor:
    """y_{h',w'} = max of the K_h×K_w window at (s h', s w'), one output value at a time.

    Inputs: x (..., H, W);  kernel_size K;  stride s (default K);  padding p (−∞, at most K/2).
    Returns: (..., H_out, W_out).
    """
    (K_h, K_w), (s_h, s_w), p, (H_out, W_out) = _check_pool(x, kernel_size, stride, padding)
    xp = pad2d(_planes(x), p, float("-inf"))                               # (B, H_p, W_p)
    y = xp.new_empty(xp.shape[0], H_out, W_out)
    for b in range(xp.shape[0]):
        for h in range(H_out):
            for w in range(W_out):
                y[b, h, w] = xp[b, s_h * h:s_h * h + K_h, s_w * w:s_w * w + K_w].max()
    return y.reshape(*x.shape[:-2], H_out, W_out)


def max_pool2d_backward_loop(dy: Tensor, x: Tensor, kernel_size: "int | tuple[int, int]",
                             stride: "int | tuple[int, int] | None" = None,
                             padding: "int | tuple[int, int]" = 0) -> Tensor:
    """∂J/∂x: each ∂J/∂y_{h',w'} goes to the arg-max of its window (the first maximum in row-major order
    on ties), one output at a time; inputs that win several windows receive the sum.

    Inputs: dy = ∂J/∂y (..., H_out, W_out);  x (..., H, W);  kernel_size;  stride (default K);  padding.
    Returns: dx (..., H, W).
    """
    (K_h, K_w), (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_pool(x, kernel_size, stride, padding)
    _check_pool_dy(dy, x, (H_out, W_out))
    planes = _planes(x)                                                    # (B, H, W)
    g = dy.reshape(-1, H_out, W_out)                                       # (B, H_out, W_out)
    dx = torch.zeros_like(planes)
    for b in range(planes.shape[0]):
        for h in range(H_out):
            for w in range(W_out):
                top, left = s_h * h - p_h, s_w * w - p_w   # the window's corner in x (< 0 in the padding)
                r0, c0 = max(top, 0), max(left, 0)         # only the real entries: padding is never the arg-max
                window = planes[b, r0:top + K_h, c0:left + K_w]
                k = int(window.reshape(-1).argmax())       # torch.argmax returns the first maximal index
                m, n = divmod(k, window.shape[1])          # row-major position of the arg-max in that window
                dx[b, r0 + m, c0 + n] += g[b, h, w]
    return dx.reshape(x.shape)


def _check_pool_dy(dy: Tensor, x: Tensor, size: tuple[int, int]) -> None:
    expected = (*x.shape[:-2], *size)
    if not isinstance(dy, Tensor) or tuple(dy.shape) != expected:
        raise ValueError(f"dy must have the shape of the output {expected}, got "
                         f"{tuple(dy.shape) if isinstance(dy, Tensor) else type(dy).__name__}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the dtype of x ({x.dtype}), got {dy.dtype}")


# ---------------------------------------------------------------------------------------------------------
# Vectorised
# ---------------------------------------------------------------------------------------------------------
def _window_views(xp: Tensor, K_h: int, K_w: int, s_h: int, s_w: int, H_out: int, W_out: int):
    """For each window position (m, n) in row-major order: the view x_{s h'+m, s w'+n} for all (h', w')."""
    for m in range(K_h):
        rows = slice(m, m + s_h * (H_out - 1) + 1, s_h)
        for n in range(K_w):
            yield rows, slice(n, n + s_w * (W_out - 1) + 1, s_w)


def max_pool2d(x: Tensor, kernel_size: "int | tuple[int, int]", stride: "int | tuple[int, int] | None" = None,
               padding: "int | tuple[int, int]" = 0, return_indices: bool = False) -> "Tensor | tuple[Tensor, Tensor]":
    """Max-pooling, vectorised: the running maximum over the K_h·K_w strided views x_{s h'+m, s w'+n}.

    Inputs: x (..., H, W);  kernel_size K;  stride s (default K);  padding p (−∞, at most K/2);
      return_indices: also return where each maximum is.
    Returns: y (..., H_out, W_out), equal to ``F.max_pool2d(x, K, s, p)``; with ``return_indices``, also the
      arg-max of every window as a flat index i·W + j into its (H, W) input plane (the first maximum in
      row-major order on ties), int64 of y's shape: PyTorch's ``return_indices=True`` convention.
    """
    (K_h, K_w), (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_pool(x, kernel_size, stride, padding)
    xp = pad2d(x, (p_h, p_w), float("-inf")) if p_h or p_w else x         # (..., H_p, W_p)
    H, W = x.shape[-2:]
    top = torch.arange(H_out, device=x.device)[:, None] * s_h - p_h        # input row of each window's corner
    left = torch.arange(W_out, device=x.device)[None, :] * s_w - p_w       # input column
    y = index = found = None
    for k, (rows, cols) in enumerate(_window_views(xp, K_h, K_w, s_h, s_w, H_out, W_out)):
        view = xp[..., rows, cols]                                         # x_{s h'+m, s w'+n}  (..., H_out, W_out)
        if not return_indices:
            y = view.clone() if y is None else torch.maximum(y, view)      # maximum propagates NaN; −∞ padding
            continue                                                       # never changes a maximum
        m, n = divmod(k, K_w)                                              # window position k = m·K_w + n
        real = (top + m >= 0) & (top + m < H) & (left + n >= 0) & (left + n < W)   # (H_out, W_out): not padding
        if y is None:
            y = view.clone()
            index = torch.zeros(y.shape, dtype=torch.int64, device=x.device)
            found = real                                                   # window has a real entry so far
            continue
        # padding never wins; the first real entry does (even −∞); then strictly larger: ties keep the first
        better = real & (~found | (view > y) | (view.isnan() & ~y.isnan()))
        y = torch.where(better, view, y)
        index = torch.where(better, torch.full_like(index, k), index)
        found = found | real
    if not return_indices:
        return y
    i = top + index // K_w                                                 # input row of the arg-max
    j = left + index % K_w                                                 # input column
    return y, i * W + j


def max_pool2d_backward(dy: Tensor, x: Tensor, kernel_size: "int | tuple[int, int]",
                        stride: "int | tuple[int, int] | None" = None, padding: "int | tuple[int, int]" = 0,
                        indices: Tensor | None = None) -> Tensor:
    """∂J/∂x for max-pooling, vectorised: every ∂J/∂y_{h',w'} is added (``scatter_add``) at the arg-max of
    its window, the first maximum in row-major order on ties.

    Inputs: dy = ∂J/∂y (..., H_out, W_out);  x (..., H, W);  kernel_size;  stride (default K);  padding;
      indices: the arg-max indices from ``max_pool2d(..., return_indices=True)`` if the forward pass kept
      them (as PyTorch's autograd does), else they are recomputed from x.
    Returns: dx (..., H, W), equal to the gradient autograd computes through ``F.max_pool2d``.
    """
    _, _, _, (H_out, W_out) = _check_pool(x, kernel_size, stride, padding)
    _check_pool_dy(dy, x, (H_out, W_out))
    if indices is None:
        _, indices = max_pool2d(x, kernel_size, stride, padding, return_indices=True)
    elif indices.shape != dy.shape:
        raise ValueError(f"indices must have the shape of dy {tuple(dy.shape)}, got {tuple(indices.shape)}")
    H, W = x.shape[-2:]
    dx = torch.zeros(_planes(x).shape[0], H * W, dtype=x.dtype, device=x.device)      # (B, H·W)
    dx.scatter_add_(1, indices.reshape(dx.shape[0], -1), dy.reshape(dx.shape[0], -1))  # sums where windows overlap
    return dx.reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------
# Downsampling by averaging: a convolution with uniform weights
# ---------------------------------------------------------------------------------------------------------
def avg_pool2d_as_conv(x: Tensor, kernel_size: "int | tuple[int, int]", stride: "int | tuple[int, int] | None" = None,
                       padding: "int | tuple[int, int]" = 0) -> Tensor:
    """Downsampling by averaging = ``conv2d`` with every α_{m,n} = 1/(K_h·K_w), no bias, stride s, on each
    channel separately (Lecture 4, "Downsampling by Averaging").

    Inputs: x (..., H, W);  kernel_size K;  stride s (default K);  padding p (zeros, counted in the mean).
    Returns: (..., H_out, W_out), equal to ``F.avg_pool2d(x, K, s, p)``.
    """
    (K_h, K_w), s, p, (H_out, W_out) = _check_pool(x, kernel_size, stride, padding, what="avg")
    uniform = torch.full((1, 1, K_h, K_w), 1.0 / (K_h * K_w), dtype=x.dtype, device=x.device)  # α_{m,n} = 1/(K_h K_w)
    planes = _planes(x)[:, None]                                           # (B, 1, H, W): one channel at a time
    y = conv2d(planes, uniform, None, s, p)                                # (B, 1, H_out, W_out)
    return y.reshape(*x.shape[:-2], H_out, W_out)
