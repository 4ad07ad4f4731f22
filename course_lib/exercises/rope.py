"""Graded exercises of the RoPE assignment (``solutions/rope/rope.ipynb``)."""
from __future__ import annotations

import torch

from ..attention import rope
from ..grading import Case, Exercise, noncontiguous, register


def _sizes(d: int, base: float | None = None, **kw) -> Case:
    args = (d,) if base is None else (d, base)
    label = f"d={d}" + ("" if base is None else f", base={base:g}") + "".join(f", {k}={v}" for k, v in kw.items())
    return Case(label, lambda g, dev: (args, {**kw, "device": dev}))


def _matrix(m: int, d: int, base: float | None = None, **kw) -> Case:
    args = (m, d) if base is None else (m, d, base)
    label = f"m={m}, d={d}" + ("" if base is None else f", base={base:g}") + "".join(f", {k}={v}" for k, v in kw.items())
    return Case(label, lambda g, dev: (args, {**kw, "device": dev}))


def _vectors(shape: tuple[int, ...], dtype: torch.dtype, offset: int = 0, base: float | None = None,
             positions_shape: tuple[int, ...] | None = None) -> Case:
    """x of ``shape`` (..., T, d) drawn from N(0, 1); positions offset + arange(T), or random per row."""
    T = shape[-2]
    label = f"x{tuple(shape)} {str(dtype).replace('torch.', '')}"
    if positions_shape is not None:
        label += f", positions of shape {positions_shape}"
    elif T == 0:
        label += ", no positions"
    else:
        label += f", position {offset}" if T == 1 else f", positions {offset}..{offset + T - 1}"
    label += "" if base is None else f", base={base:g}"

    def make(g: torch.Generator, dev: torch.device):
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev)
        if positions_shape is None:
            pos = offset + torch.arange(T)
        else:
            pos = torch.randint(0, 200, positions_shape, generator=g)
        args = (x, pos.to(dev)) if base is None else (x, pos.to(dev), base)
        return args, {}
    return Case(label, make)


register(Exercise(
    "rope_thetas", rope.rope_thetas,
    [_sizes(2), _sizes(8, dtype=torch.float64), _sizes(64, 10000.0, dtype=torch.float64),
     _sizes(128, 500000.0, dtype=torch.float32),
     _sizes(6, 500000.0, dtype=torch.float64),      # d not a power of 2: exponents -1/3, -2/3
     _sizes(10, dtype=torch.bfloat16)],
    hint="θ_i = base^(-2(i-1)/d) for i = 1..d/2, so θ_1 = 1",
))

register(Exercise(
    "rope_matrix", rope.rope_matrix,
    [_matrix(0, 4), _matrix(1, 2), _matrix(3, 8), _matrix(17, 16, dtype=torch.float32),
     _matrix(5, 64, 500000.0, dtype=torch.float64),
     _matrix(301, 8, dtype=torch.bfloat16),          # angles in bfloat16: 301 rounds to 300
     _matrix(1000003, 6, dtype=torch.float32)],      # angles in float32 are off by ~0.05 here
    hint="block i sits in rows/columns 2i-1, 2i and is [[cos mθ_i, -sin mθ_i], [sin mθ_i, cos mθ_i]]",
))

_APPLY_CASES = [
    _vectors((1, 2), torch.float64, offset=1),
    _vectors((8, 16), torch.float32),
    _vectors((2, 3, 5, 8), torch.float64),
    _vectors((2, 4, 3, 32), torch.float32, offset=37),
    _vectors((2, 3, 4, 8), torch.float64, positions_shape=(2, 1, 4)),
    _vectors((6, 16), torch.bfloat16, offset=5),
    _vectors((2, 16, 16), torch.bfloat16, offset=200),   # angles in bfloat16 would be off by ~0.2 here
    _vectors((1, 2, 64, 128), torch.float32),
    _vectors((3, 10, 16), torch.float64, offset=7, base=500000.0),
    noncontiguous(_vectors((2, 3, 5, 8), torch.float32, offset=3)),
    noncontiguous(_vectors((2, 3, 4, 8), torch.float64, positions_shape=(2, 1, 4))),
    _vectors((2, 0, 8), torch.float32),                   # T = 0: an empty result
    _vectors((2, 4, 16), torch.float16, offset=3000),     # angles in float16 would be off by up to 1 here
]

register(Exercise(
    "apply_rope_pairs", rope.apply_rope_pairs, _APPLY_CASES, grad=True,
    hint="pairs are adjacent, (y1, y2), (y3, y4), ...; the angle of pair i at position m is m·θ_i; compute "
         "angles in float32 (float64 for float64 inputs) and return x's dtype",
))

register(Exercise(
    "apply_rope_halves", rope.apply_rope_halves, _APPLY_CASES, grad=True,
    hint="element i pairs with element i + d/2: [Y1 | Y2]·cos C + [-Y2 | Y1]·sin C; compute angles in float32 "
         "(float64 for float64 inputs) and return x's dtype",
))
