"""Rotary position embeddings (RoPE), exactly as Lecture 4 writes them.

Lecture 4, "Rotary Position Embeddings (RoPE)":

    q_j = W_q^T x_j,   k_j = W_k^T x_j
    q~_j = R_{Θ,j} q_j, k~_j = R_{Θ,j} k_j
    s_{t,j} = k~_j^T q~_t / sqrt(d_k)

with fixed frequencies  Θ = {θ_i = 10000^{-2(i-1)/d}, i = 1, ..., d/2}  and the block-diagonal rotary
matrix R_{Θ,m} (d × d), whose i-th 2×2 block rotates the pair (y_{2i-1}, y_{2i}) by the angle m·θ_i.

Three ways to compute R_{Θ,m} y, all here:

* ``rope_matrix``       the explicit d×d matrix (for teaching and as an oracle; O(d²) per vector);
* ``apply_rope_pairs``  the lecture's efficient element-wise form on *adjacent pairs* (O(d)):
      R_{Θ,m} y = y ⊙ (cos mθ_1, cos mθ_1, cos mθ_2, cos mθ_2, …)
                + (-y_2, y_1, -y_4, y_3, …) ⊙ (sin mθ_1, sin mθ_1, sin mθ_2, sin mθ_2, …)
  (the slide prints "cos mθ_1, cos mθ_2, cos mθ_2": each angle appears twice, once per element of its pair);
* ``apply_rope_halves`` the lecture's "matrix version" on *halves*, for all positions at once:
      Y~ = [Y_{:,1:d/2} | Y_{:,d/2+1:d}] ⊙ cos(C) + [-Y_{:,d/2+1:d} | Y_{:,1:d/2}] ⊙ sin(C),
      C_{m,:} = (mθ_1, …, mθ_{d/2}, mθ_1, …, mθ_{d/2}).
  This pairs element i with element i + d/2 (as Hugging Face's ``rotate_half`` does); it equals the
  adjacent-pairs form after permuting the coordinates (``pairs_to_halves``), i.e. after permuting the
  columns of W_q and W_k, so both conventions give the same attention scores.

Positions are always passed explicitly (integer tensor), so decoding with a KV cache simply continues at
``positions = offset + arange(T)``. The lecture numbers rows of C from 1 to N; Python and Llama number
tokens from 0: because q~_t·k~_j depends only on t − j, the origin does not change attention.

Precision: angles are computed in float64 for float64 inputs and in float32 otherwise (never in
bfloat16/float16, whose 8-bit mantissa cannot hold m·θ_i for m in the hundreds); the result has the
dtype and device of the input.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rope_thetas",
    "rope_angles",
    "rope_matrix",
    "apply_rope_pairs",
    "apply_rope_halves",
    "pairs_to_halves",
]


def _check_dim(d: int) -> None:
    if not isinstance(d, int) or isinstance(d, bool) or d <= 0 or d % 2:
        raise ValueError(f"RoPE needs an even, positive head dimension d, got d={d!r}")


def _angle_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for everything else (bf16/fp16 are too coarse for angles)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rope_thetas(d: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """The fixed frequencies θ_i = base^{-2(i-1)/d}, i = 1..d/2 (Lecture 4, RoPE; base = 10000).

    Returns: tensor of shape (d/2,), with θ_1 = 1 > θ_2 > … > θ_{d/2} = base^{-(d-2)/d}.
    """
    _check_dim(d)
    i = torch.arange(1, d // 2 + 1, dtype=torch.float64, device=device)  # i = 1, ..., d/2
    return (base ** (-2.0 * (i - 1) / d)).to(dtype)                          # (d/2,)


def rope_angles(positions: Tensor, d: int, base: float = 10000.0, *,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """All the angles m·θ_i: shape positions.shape + (d/2,), on the device of ``positions``."""
    theta = rope_thetas(d, base, dtype=dtype, device=positions.device)   # (d/2,)
    return positions.to(dtype)[..., None] * theta                        # (..., T, d/2)


def rope_matrix(m: int, d: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> Tensor:
    """The rotary matrix R_{Θ,m} ∈ R^{d×d} written out explicitly (Lecture 4, RoPE).

    Block i (rows and columns 2i-1, 2i, 1-based) is [[cos mθ_i, -sin mθ_i], [sin mθ_i, cos mθ_i]];
    everything off the diagonal blocks is zero.
    Returns: tensor of shape (d, d).
    """
    _check_dim(d)
    angle = rope_angles(torch.tensor(m, device=device), d, base, dtype=torch.float64)  # (d/2,)
    cos, sin = torch.cos(angle), torch.sin(angle)
    R = torch.zeros(d, d, dtype=torch.float64, device=device)
    even, odd = torch.arange(0, d, 2, device=device), torch.arange(1, d, 2, device=device)
    R[even, even] = cos     # cos mθ_i on the diagonal of block i
    R[even, odd] = -sin     # -sin mθ_i above it
    R[odd, even] = sin      # sin mθ_i below it
    R[odd, odd] = cos
    return R.to(dtype)


def _prepare(x: Tensor, positions: Tensor, base: float) -> tuple[Tensor, Tensor]:
    """Validate the inputs; return x in the angle precision and the angles m·θ_i, (..., T, d/2)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be an integer tensor, got {type(positions).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., T, d), got {tuple(x.shape)}")
    _check_dim(x.shape[-1])
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not broadcast with "
                         f"x.shape[:-1] = {tuple(x.shape[:-1])}") from None
    if positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positions must be an integer tensor, got {positions.dtype}")
    dt = _angle_dtype(x.dtype)
    angle = rope_angles(positions.to(x.device), x.shape[-1], base, dtype=dt)  # (..., T, d/2)
    return x.to(dt), angle


def apply_rope_pairs(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """R_{Θ,m} y for every vector y of x, in the lecture's element-wise form on adjacent pairs.

    Inputs:
      x: (..., T, d), e.g. (B, h, T, d_k) queries or keys; d even.
      positions: integer tensor of absolute positions m, shape (T,) or any shape that broadcasts with
        x.shape[:-1] (e.g. (B, 1, T) for one offset per sequence).
      base: 10000 in the lecture (Llama 3 uses 500000).
    Returns: tensor like x (same shape, dtype, device); pair (y_{2i-1}, y_{2i}) rotated by m·θ_i.
    """
    y, angle = _prepare(x, positions, base)               # (..., T, d), (..., T, d/2)
    cos = torch.cos(angle).repeat_interleave(2, dim=-1)   # (..., T, d): cos mθ_1, cos mθ_1, cos mθ_2, ...
    sin = torch.sin(angle).repeat_interleave(2, dim=-1)   # (..., T, d)
    y_odd, y_even = y[..., 0::2], y[..., 1::2]            # (y_1, y_3, ...), (y_2, y_4, ...)
    swapped = torch.stack((-y_even, y_odd), dim=-1).flatten(-2)  # (-y_2, y_1, -y_4, y_3, ...)
    return (y * cos + swapped * sin).to(x.dtype)


def apply_rope_halves(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """The lecture's matrix version of RoPE on halves: Y~ = [Y_1 | Y_2] ⊙ cos C + [-Y_2 | Y_1] ⊙ sin C.

    Inputs and returns as ``apply_rope_pairs``; here element i is paired with element i + d/2.
    """
    y, angle = _prepare(x, positions, base)               # (..., T, d), (..., T, d/2)
    C = torch.cat((angle, angle), dim=-1)                 # (..., T, d): mθ_1..mθ_{d/2}, mθ_1..mθ_{d/2}
    y1, y2 = y.chunk(2, dim=-1)                           # Y_{:,1:d/2}, Y_{:,d/2+1:d}
    rotated = torch.cat((-y2, y1), dim=-1)                # [-Y_{:,d/2+1:d} | Y_{:,1:d/2}]
    return (y * torch.cos(C) + rotated * torch.sin(C)).to(x.dtype)


def pairs_to_halves(d: int) -> Tensor:
    """The permutation P (index tensor of shape (d,)) from the adjacent-pairs layout to the halves layout.

    ``y[..., P]`` lists (y_1, y_3, …, y_{d-1}, y_2, y_4, …, y_d), so that
    ``apply_rope_halves(y[..., P], m) == apply_rope_pairs(y, m)[..., P]``: permuting the columns of W_q
    and W_k by P turns one convention into the other, and q~·k~ is unchanged.
    """
    _check_dim(d)
    return torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))
