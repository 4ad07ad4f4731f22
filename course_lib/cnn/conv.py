"""2-D convolution exactly as Lecture 4 writes it: slide a kernel over the image, one inner product each.

Lecture 4, "CONVOLUTION" / "Example: 1 input channel, 1 output channel" (a 3×3 image x, a 2×2 kernel F):

    y_11 = α_11 x_11 + α_12 x_12 + α_21 x_21 + α_22 x_22 + α_0
    y_12 = α_11 x_12 + α_12 x_13 + α_21 x_22 + α_22 x_23 + α_0
    y_21 = α_11 x_21 + α_12 x_22 + α_21 x_31 + α_22 x_32 + α_0
    y_22 = α_11 x_22 + α_12 x_23 + α_21 x_32 + α_22 x_33 + α_0

"Convolution in 3D": C input channels c, C' output channels c', stride s, bias β^{(c')}. With indices
from 0 on the zero-padded input (padding p on every side):

    y^{(c')}_{h',w'} = Σ_c Σ_m Σ_n α^{(c',c)}_{m,n} x^{(c)}_{s h'+m, s w'+n} + β^{(c')}        (forward)

    H_out = ⌊(H + 2p − K_h) / s⌋ + 1,   W_out = ⌊(W + 2p − K_w) / s⌋ + 1

and the backward pass (J the loss; with a batch, every sum also runs over the examples):

    ∂J/∂α^{(c',c)}_{m,n} = Σ_{h'} Σ_{w'} ∂J/∂y^{(c')}_{h',w'} · x^{(c)}_{s h'+m, s w'+n}
    ∂J/∂β^{(c')}         = Σ_{h'} Σ_{w'} ∂J/∂y^{(c')}_{h',w'}
    ∂J/∂x^{(c)}_{i,j}    = Σ_{c'} Σ_{m,n} ∂J/∂y^{(c')}_{h',w'} · α^{(c',c)}_{m,n}   over the (h', w') with
                                                                   s h'+m = i and s w'+n = j.

The slide prints the input of the first formula as x_{h'+ms, w'+ns}: with indices from 0 and stride
s = 1 that is x_{h'+m, w'+n}, as here; for a stride s > 1 the forward pass multiplies α_{m,n} with
x_{s h'+m, s w'+n}, so that is the pixel its gradient must read.

This "sliding inner product" is, strictly, a *cross-correlation* (the kernel is not flipped), as in
PyTorch's ``F.conv2d`` and every deep-learning library; signal processing flips the kernel first.

Two implementations of each pass, which agree:

* ``conv2d_loop`` / ``conv2d_backward_loop``: plain Python loops over the lecture's indices, for teaching
  and small inputs (the forward loops over every output value, the backward over every kernel weight);
* ``conv2d`` / ``conv2d_backward``: vectorised with ``im2col`` (all receptive fields as the columns of one
  matrix, PyTorch's ``F.unfold`` layout), so that convolution is one matrix product; ``col2im`` (the
  adjoint of ``im2col``, PyTorch's ``F.fold``) scatters gradients back onto the input.

Shapes (PyTorch's): x (N, C, H, W); weight α (C', C, K_h, K_w); bias β (C',); y (N, C', H_out, W_out).
Stride and padding are an int or a pair (rows, columns). Everything keeps the inputs' device and dtype.

``numerical_gradient`` (centred differences) and ``rel_error`` are the tools that check a backward pass.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "conv_output_size",
    "pad2d",
    "conv2d_image",
    "conv2d_loop",
    "conv2d_backward_loop",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "numerical_gradient",
    "rel_error",
]

def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """⌊(size + 2·padding − kernel) / stride⌋ + 1: how many positions a kernel visits along one axis.

    Raises ValueError when the kernel is larger than the padded input (no position at all).
    """
    if kernel > size + 2 * padding:
        raise ValueError(f"kernel of size {kernel} is larger than the padded input ({size} + 2·{padding} = "
                         f"{size + 2 * padding})")
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x: Tensor, padding: "int | tuple[int, int]", value: float = 0.0) -> Tensor:
    """Pad the last two dimensions of x with ``value`` (zeros by default): p_h rows above and below,
    p_w columns left and right ("Padding": zeros keep the size of the image after a convolution).

    Inputs: x (..., H, W);  padding p or (p_h, p_w).
    Returns: (..., H + 2 p_h, W + 2 p_w), x in the middle.
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"pad2d needs a tensor of shape (..., H, W), got {getattr(x, 'shape', type(x).__name__)}")
    p_h, p_w = _pair(padding, "padding", 0)
    H, W = x.shape[-2:]
    out = x.new_full((*x.shape[:-2], H + 2 * p_h, W + 2 * p_w), value)    # (..., H + 2p_h, W + 2p_w)
    out[..., p_h:p_h + H, p_w:p_w + W] = x
    return out


def _check_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding):
    """Validate a convolution's arguments; return (s_h, s_w), (p_h, p_w), (H_out, W_out)."""
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("x and weight must be tensors")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape (C', C, K_h, K_w), got {tuple(weight.shape)}")
    if not x.is_floating_point() or x.dtype != weight.dtype:
        raise TypeError(f"x and weight must have the same floating-point dtype, got {x.dtype} and {weight.dtype}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight of shape {tuple(weight.shape)} expects {weight.shape[1]} input channels, "
                         f"x of shape {tuple(x.shape)} has {x.shape[1]}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape (C',) = ({weight.shape[0]},), got "
                             f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias must have the dtype of x ({x.dtype}), got {bias.dtype}")
    (s_h, s_w), (p_h, p_w) = _pair(stride, "stride", 1), _pair(padding, "padding", 0)
    K_h, K_w = weight.shape[-2:]
    H, W = x.shape[-2:]
    if K_h > H + 2 * p_h or K_w > W + 2 * p_w:
        raise ValueError(f"kernel {K_h}×{K_w} is larger than the padded input {H + 2 * p_h}×{W + 2 * p_w} "
                         f"(input {H}×{W}, padding {(p_h, p_w)})")
    size = (conv_output_size(H, K_h, s_h, p_h), conv_output_size(W, K_w, s_w, p_w))
    return (s_h, s_w), (p_h, p_w), size


def _check_dy(dy: Tensor, x: Tensor, channels: int, size: tuple[int, int]) -> None:
    expected = (x.shape[0], channels, *size)
    if not isinstance(dy, Tensor) or tuple(dy.shape) != expected:
        raise ValueError(f"dy must have the shape of the output (N, C', H_out, W_out) = {expected}, got "
                         f"{tuple(dy.shape) if isinstance(dy, Tensor) else type(dy).__name__}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy must have the dtype of x ({x.dtype}), got {dy.dtype}")


# ---------------------------------------------------------------------------------------------------------
# One channel: the lecture's first example
# ---------------------------------------------------------------------------------------------------------
def conv2d_image(x: Tensor, kernel: Tensor, alpha_0: float = 0.0, stride: "int | tuple[int, int]" = 1,
                 padding: "int | tuple[int, int]" = 0) -> Tensor:
    """One input channel, one output channel ("Example: 1 input channel, 1 output channel"):
    y_{ij} = Σ_m Σ_n α_{mn} x_{s i + m, s j + n} + α_0, on x zero-padded by ``padding``.

    Inputs: x (H, W) an image;  kernel F = (α_{mn}) of shape (K_h, K_w);  alpha_0 the bias α_0.
    Returns: y (H_out, W_out), with the dtype and device of x.
    """
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be an image of shape (H, W), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(kernel, Tensor) or kernel.dim() != 2:
        raise ValueError(f"the kernel must have shape (K_h, K_w), got {getattr(kernel, 'shape', type(kernel).__name__)}")
    bias = torch.full((1,), float(alpha_0), dtype=x.dtype, device=x.device)
    y = conv2d(x[None, None], kernel.to(x.dtype)[None, None], bias, stride, padding)   # (1, 1, H_out, W_out)
    return y[0, 0]


# ---------------------------------------------------------------------------------------------------------
# Plain loops (teaching; small inputs)
# ---------------------------------------------------------------------------------------------------------
def conv2d_loop(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: "int | tuple[int, int]" = 1,
                padding: "int | tuple[int, int]" = 0) -> Tensor:
    """Forward pass, one output value at a time: for every example n, output channel c' and position
    (h', w'), the inner product of the kernel α^{(c')} with the field of x it covers, plus β^{(c')}.

    Inputs: x (N, C, H, W);  weight (C', C, K_h, K_w);  bias (C',) or None;  stride s;  padding p.
    Returns: y (N, C', H_out, W_out).  O(N·C'·H_out·W_out) Python iterations: small inputs only.
    """
    (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_conv(x, weight, bias, stride, padding)
    N, C_out, K_h, K_w = x.shape[0], weight.shape[0], weight.shape[2], weight.shape[3]
    xp = pad2d(x, (p_h, p_w))                                              # (N, C, H + 2p_h, W + 2p_w)
    y = x.new_empty(N, C_out, H_out, W_out)
    for n in range(N):
        for c_out in range(C_out):
            for h in range(H_out):
                for w in range(W_out):
                    field = xp[n, :, s_h * h:s_h * h + K_h, s_w * w:s_w * w + K_w]    # (C, K_h, K_w)
                    value = (weight[c_out] * field).sum()                # Σ_c Σ_m Σ_n α^{(c',c)}_{m,n} x^{(c)}_{sh'+m, sw'+n}
                    y[n, c_out, h, w] = value if bias is None else value + bias[c_out]   # + β^{(c')}
    return y


def conv2d_backward_loop(dy: Tensor, x: Tensor, weight: Tensor, stride: "int | tuple[int, int]" = 1,
                         padding: "int | tuple[int, int]" = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Backward pass, the lecture's formulas one kernel weight at a time.

    For every (c', c, m, n) the sum Σ_{h'} Σ_{w'} (and over the batch) is one inner product between
    ∂J/∂y^{(c')} and the input pixels x^{(c)}_{s h'+m, s w'+n} that α^{(c',c)}_{m,n} met in the forward pass
    (a strided slice of the padded input); the same pair (weight, slice) sends α^{(c',c)}_{m,n}·∂J/∂y^{(c')}
    back to those pixels.

    Inputs: dy = ∂J/∂y (N, C', H_out, W_out);  x (N, C, H, W);  weight (C', C, K_h, K_w);  stride; padding.
    Returns: (dx (N, C, H, W), dweight (C', C, K_h, K_w), dbias (C',)).  O(C'·C·K_h·K_w) iterations.
    """
    (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_conv(x, weight, None, stride, padding)
    C_out, C, K_h, K_w = weight.shape
    _check_dy(dy, x, C_out, (H_out, W_out))
    H, W = x.shape[-2:]
    xp = pad2d(x, (p_h, p_w))                                  # (N, C, H_p, W_p)
    dxp = torch.zeros_like(xp)                                 # ∂J/∂x on the padded input
    dweight = torch.zeros_like(weight)
    dbias = dy.new_zeros(C_out)
    for c_out in range(C_out):
        g = dy[:, c_out]                                       # ∂J/∂y^{(c')}                  (N, H_out, W_out)
        dbias[c_out] = g.sum()                                 # ∂J/∂β^{(c')} = Σ_h' Σ_w' ∂J/∂y^{(c')}_{h',w'}
        for c in range(C):
            for m in range(K_h):
                rows = slice(m, m + s_h * (H_out - 1) + 1, s_h)        # s h' + m for h' = 0..H_out-1
                for n in range(K_w):
                    cols = slice(n, n + s_w * (W_out - 1) + 1, s_w)    # s w' + n for w' = 0..W_out-1
                    # ∂J/∂α^{(c',c)}_{m,n} = Σ_h' Σ_w' ∂J/∂y^{(c')}_{h',w'} · x^{(c)}_{sh'+m, sw'+n}
                    dweight[c_out, c, m, n] = (g * xp[:, c, rows, cols]).sum()
                    # each x^{(c)}_{sh'+m, sw'+n} receives ∂J/∂y^{(c')}_{h',w'} · α^{(c',c)}_{m,n}
                    dxp[:, c, rows, cols] += g * weight[c_out, c, m, n]
    dx = dxp[:, :, p_h:p_h + H, p_w:p_w + W].contiguous()      # drop the padding: (N, C, H, W)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------------------------------------
# Vectorised: im2col / col2im
# ---------------------------------------------------------------------------------------------------------
# The columns of a whole batch can be large (C·K_h·K_w·H_out·W_out numbers per example: 9 times the input for
# a 3×3 kernel). On the CPU, conv2d and conv2d_backward therefore work on blocks of the output (a few images,
# or a few output rows of one image) whose columns take about CHUNK_BYTES: a block stays in the cache, and
# the memory allocator reuses the same small buffer from block to block (large buffers are mapped afresh
# by the operating system at every call, which costs more than the copy itself). On a GPU the whole batch is
# one block.
CHUNK_BYTES = 2**20


def _fields(xp: Tensor, K_h: int, K_w: int, s_h: int, s_w: int) -> Tensor:
    """im2col of an already padded input: (n, C, H_p, W_p) → (n, C·K_h·K_w, H_out·W_out)."""
    n, C = xp.shape[:2]
    fields = xp.unfold(2, K_h, s_h).unfold(3, K_w, s_w)                   # (n, C, H_out, W_out, K_h, K_w), a view
    H_out, W_out = fields.shape[2:4]
    return fields.permute(0, 1, 4, 5, 2, 3).reshape(n, C * K_h * K_w, H_out * W_out)   # one copy


def _col2im_add(dxp: Tensor, cols: Tensor, K_h: int, K_w: int, s_h: int, s_w: int, H_out: int, W_out: int) -> None:
    """Add the columns (n, C·K_h·K_w, H_out·W_out) onto the padded input dxp (n, C, H_p, W_p) they came from."""
    n, C = dxp.shape[:2]
    cols = cols.reshape(n, C, K_h, K_w, H_out, W_out)
    for m in range(K_h):                               # K_h·K_w strided additions, each over the whole chunk
        rows = slice(m, m + s_h * (H_out - 1) + 1, s_h)                   # s h' + m for h' = 0..H_out-1
        for k in range(K_w):
            dxp[:, :, rows, k:k + s_w * (W_out - 1) + 1:s_w] += cols[:, :, m, k]


def _blocks(x: Tensor, H_out: int, bytes_per_row: int) -> list[tuple[slice, slice]]:
    """(images, output rows) blocks of about CHUNK_BYTES of columns each (the whole output on a GPU)."""
    N = x.shape[0]
    if x.device.type != "cpu":
        return [(slice(0, N), slice(0, H_out))]
    rows = max(1, CHUNK_BYTES // max(1, bytes_per_row))                   # output rows per block
    if rows >= H_out:                                                      # whole images per block
        n = rows // H_out
        return [(slice(i, min(i + n, N)), slice(0, H_out)) for i in range(0, N, n)]
    return [(slice(i, i + 1), slice(h, min(h + rows, H_out))) for i in range(N) for h in range(0, H_out, rows)]


def im2col(x: Tensor, kernel_size: "int | tuple[int, int]", stride: "int | tuple[int, int]" = 1,
           padding: "int | tuple[int, int]" = 0) -> Tensor:
    """All receptive fields of x as columns (PyTorch's ``F.unfold`` layout).

    Column l = h'·W_out + w' holds the field under output position (h', w'): x^{(c)}_{s h'+m, s w'+n} for
    all (c, m, n) in row-major order, i.e. row c·K_h·K_w + m·K_w + n.
    Inputs: x (N, C, H, W);  kernel_size K or (K_h, K_w);  stride;  padding (zeros).
    Returns: (N, C·K_h·K_w, H_out·W_out).
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    (K_h, K_w), (s_h, s_w), (p_h, p_w) = (_pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1),
                                          _pair(padding, "padding", 0))
    conv_output_size(x.shape[2], K_h, s_h, p_h), conv_output_size(x.shape[3], K_w, s_w, p_w)   # size checks
    xp = pad2d(x, (p_h, p_w)) if p_h or p_w else x                         # (N, C, H_p, W_p)
    return _fields(xp, K_h, K_w, s_h, s_w)


def col2im(cols: Tensor, input_size: tuple[int, int], kernel_size: "int | tuple[int, int]",
           stride: "int | tuple[int, int]" = 1, padding: "int | tuple[int, int]" = 0) -> Tensor:
    """The adjoint of ``im2col`` (PyTorch's ``F.fold``): add every column back onto the pixels it was read
    from. Pixels read by several fields (stride < kernel) receive the sum.

    Inputs: cols (N, C·K_h·K_w, H_out·W_out);  input_size (H, W) of the unpadded input;  kernel_size;
      stride;  padding.
    Returns: (N, C, H, W); ⟨im2col(x), cols⟩ = ⟨x, col2im(cols)⟩ for every x.
    """
    (K_h, K_w), (s_h, s_w), (p_h, p_w) = (_pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1),
                                          _pair(padding, "padding", 0))
    H, W = input_size
    H_out, W_out = conv_output_size(H, K_h, s_h, p_h), conv_output_size(W, K_w, s_w, p_w)
    if cols.dim() != 3 or cols.shape[1] % (K_h * K_w) or cols.shape[2] != H_out * W_out:
        raise ValueError(f"cols must have shape (N, C·{K_h}·{K_w}, {H_out}·{W_out}), got {tuple(cols.shape)}")
    N, C = cols.shape[0], cols.shape[1] // (K_h * K_w)
    xp = cols.new_zeros(N, C, H + 2 * p_h, W + 2 * p_w)
    _col2im_add(xp, cols, K_h, K_w, s_h, s_w, H_out, W_out)
    return xp[:, :, p_h:p_h + H, p_w:p_w + W]


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: "int | tuple[int, int]" = 1,
           padding: "int | tuple[int, int]" = 0) -> Tensor:
    """Forward pass as a matrix product: y = α · im2col(x) + β, where α is reshaped to (C', C·K_h·K_w).

    Inputs: x (N, C, H, W);  weight (C', C, K_h, K_w);  bias (C',) or None;  stride s;  padding p (zeros).
    Returns: y (N, C', H_out, W_out), equal to ``F.conv2d(x, weight, bias, stride, padding)``.
    Differentiable with autograd as well (only tensor operations).
    """
    (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_conv(x, weight, bias, stride, padding)
    N, C, C_out, K_h, K_w = x.shape[0], x.shape[1], weight.shape[0], weight.shape[2], weight.shape[3]
    xp = pad2d(x, (p_h, p_w)) if p_h or p_w else x                         # (N, C, H_p, W_p)
    alpha = weight.reshape(C_out, C * K_h * K_w)                           # (C', C·K_h·K_w)
    y = x.new_empty(N, C_out, H_out, W_out)
    for images, rows in _blocks(x, H_out, C * K_h * K_w * W_out * x.element_size()):
        h0, h1 = rows.start, rows.stop                                     # output rows h0 .. h1-1 read input
        field_rows = xp[images, :, s_h * h0:s_h * (h1 - 1) + K_h]          # rows s·h0 .. s·(h1-1) + K_h - 1
        cols = _fields(field_rows, K_h, K_w, s_h, s_w)                     # (n, C·K_h·K_w, L), L = (h1-h0)·W_out
        y[images, :, h0:h1] = (alpha @ cols).reshape(-1, C_out, h1 - h0, W_out)   # all inner products at once
    if bias is not None:
        y = y + bias[:, None, None]                                        # + β^{(c')}
    return y


def conv2d_backward(dy: Tensor, x: Tensor, weight: Tensor, stride: "int | tuple[int, int]" = 1,
                    padding: "int | tuple[int, int]" = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Backward pass with im2col: the lecture's three sums as matrix products.

        ∂J/∂α = Σ_n ∂J/∂y_n · im2col(x)_nᵀ        (C', C·K_h·K_w)
        ∂J/∂β = Σ_n Σ_{h'} Σ_{w'} ∂J/∂y            (C',)
        ∂J/∂x = col2im(αᵀ · ∂J/∂y)                 (N, C, H, W)

    Inputs: dy = ∂J/∂y (N, C', H_out, W_out);  x (N, C, H, W);  weight (C', C, K_h, K_w);  stride; padding.
    Returns: (dx, dweight, dbias) with the shapes of x, weight and (C',).
    """
    (s_h, s_w), (p_h, p_w), (H_out, W_out) = _check_conv(x, weight, None, stride, padding)
    C_out, C, K_h, K_w = weight.shape
    _check_dy(dy, x, C_out, (H_out, W_out))
    H, W = x.shape[2], x.shape[3]
    xp = pad2d(x, (p_h, p_w)) if p_h or p_w else x                         # (N, C, H_p, W_p)
    dxp = torch.zeros_like(xp)                                             # ∂J/∂x on the padded input
    alpha = weight.reshape(C_out, C * K_h * K_w)                           # (C', C·K_h·K_w)
    dalpha = torch.zeros_like(alpha)
    for images, rows in _blocks(x, H_out, C * K_h * K_w * W_out * x.element_size()):
        h0, h1 = rows.start, rows.stop
        window = slice(s_h * h0, s_h * (h1 - 1) + K_h)                     # the input rows of these outputs
        cols = _fields(xp[images, :, window], K_h, K_w, s_h, s_w)          # (n, C·K_h·K_w, L)
        g = dy[images, :, h0:h1].reshape(cols.shape[0], C_out, -1)         # ∂J/∂y of the block   (n, C', L)
        dalpha += (g @ cols.transpose(1, 2)).sum(dim=0)                    # Σ_n Σ_l ∂J/∂y · x   (C', C·K_h·K_w)
        _col2im_add(dxp[images, :, window], alpha.t() @ g, K_h, K_w, s_h, s_w, h1 - h0, W_out)   # αᵀ ∂J/∂y back
    dbias = dy.sum(dim=(0, 2, 3))                                          # Σ_n Σ_h' Σ_w' ∂J/∂y   (C',)
    dx = dxp[:, :, p_h:p_h + H, p_w:p_w + W].contiguous() if p_h or p_w else dxp
    return dx, dalpha.reshape(weight.shape), dbias


# ---------------------------------------------------------------------------------------------------------
# Checking a backward pass
# ---------------------------------------------------------------------------------------------------------
def numerical_gradient(f: Callable[[Tensor], "Tensor | float"], x: Tensor, h: float = 1e-6) -> Tensor:
    """∂f/∂x by centred differences: (f(x + h e_i) − f(x − h e_i)) / (2h) for every element i of x.

    Inputs: f, a function of a tensor shaped like x returning a scalar (float or 0-d tensor);  x (any
      shape; float64 recommended: in float32 the rounding of f swamps the difference for small h);  h.
    Returns: tensor like x (shape, dtype, device). x itself is never modified (a copy is perturbed).
    The error is O(h²) from the Taylor expansion plus O(ε·|f|/h) from rounding.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    xc = x.detach().clone(memory_format=torch.contiguous_format)    # contiguous, so that .view(-1) works
    flat = xc.view(-1)
    grad = torch.zeros(xc.numel(), dtype=x.dtype, device=x.device)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        f_plus = float(f(xc))                  # f(x + h e_i)
        flat[i] = old - h
        f_minus = float(f(xc))                 # f(x − h e_i)
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad.view(x.shape)


def rel_error(a: Tensor, b: Tensor) -> float:
    """The largest relative error max |a − b| / max(|a| + |b|, 1e-8), elementwise (CS231n's ``rel_error``).

    Below about 1e-6 in float64 a gradient is right (rounding alone can reach 1e-7 on small entries);
    around 1e-2 or more it is wrong.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return 0.0
    return float(((a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)).max())
