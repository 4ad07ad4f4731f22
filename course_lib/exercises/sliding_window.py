"""Graded exercises of the sliding-window attention assignment (``solutions/sliding_window/sliding_window.ipynb``).

The window is the lecture's: query t attends to keys t − ½w .. t (½w + 1 tokens, the last on the diagonal).
The rolling buffer holds W = ½w + 1 slots.
"""
from __future__ import annotations

import math

import torch

from ..attention import sliding_window as sw
from ..grading import Case, Exercise, noncontiguous, register
from . import ATTENTION


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _mask(T: int, w: int, dtype: torch.dtype | None = None) -> Case:
    label = f"T={T}, w={w} (window of {w // 2 + 1} tokens)" + ("" if dtype is None else f", dtype={_dt(dtype)}")
    kw = {} if dtype is None else {"dtype": dtype}
    return Case(label, lambda g, dev: ((T, w), {**kw, "device": dev}))


def _qkv(shape: tuple[int, ...], w: int, dtype: torch.dtype, d_v: int | None = None) -> Case:
    """q, k of ``shape`` (..., T, d_k) and v of (..., T, d_v) drawn from N(0, 1), and the window w."""
    T = shape[-2]
    v_shape = shape if d_v is None else (*shape[:-1], d_v)
    label = f"q, k{tuple(shape)}" + ("" if d_v is None else f", v{tuple(v_shape)}") + f" {_dt(dtype)}, w={w}"
    if T < w // 2 + 1:
        label += " (T shorter than the window)"

    def make(g: torch.Generator, dev: torch.device):
        q, k = (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev) for _ in range(2))
        v = torch.randn(v_shape, generator=g, dtype=torch.float64).to(dtype).to(dev)
        return (q, k, v, w), {}
    return Case(label, make)


def _far(shape: tuple[int, ...], w: int, dtype: torch.dtype, a: float) -> Case:
    """q, k, v from N(0, 1), except feature 0: a for every key, ±a for the queries (alternately), so that
    the scores of a row are all near +a²/√d_k or all near −a²/√d_k: rows far apart (a softmax shifted by
    one global maximum gives NaN in the low rows; a² may overflow float16 unless scores are upcast)."""
    s = a * a / math.sqrt(shape[-1])
    label = f"q, k{tuple(shape)} {_dt(dtype)}, w={w}, scores ±{s:.0f} (rows far apart)"

    def make(g: torch.Generator, dev: torch.device):
        q, k, v = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
        sign = 1 - 2 * (torch.arange(shape[-2]) % 2).to(torch.float64)      # +1, -1, +1, ...
        q[..., 0], k[..., 0] = a * sign, a
        return tuple(t.to(dtype).to(dev) for t in (q, k, v)) + (w,), {}
    return Case(label, make)


def _decode(batch: tuple[int, ...], w: int, d: int, pos: int, dtype: torch.dtype, d_v: int | None = None,
            garbage: bool = False) -> Case:
    """One decode step at position ``pos`` with a buffer of W = ½w + 1 slots filled with random numbers
    (slots not written yet hold garbage that must be ignored: with ``garbage``, NaN in k_cache and inf in
    v_cache there)."""
    W = w // 2 + 1
    d_v = d if d_v is None else d_v
    label = f"q{(*batch, 1, d)} {_dt(dtype)}, W={W} slots (w={w}), pos={pos}" + ("" if d_v == d else f", d_v={d_v}")
    if pos < W - 1:
        label += " (buffer not yet full" + (", NaN/inf in the empty slots)" if garbage else ")")

    def make(g: torch.Generator, dev: torch.device):
        def rand(*shape):
            return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev)
        q, k, v = rand(*batch, 1, d), rand(*batch, 1, d), rand(*batch, 1, d_v)
        k_cache, v_cache = rand(*batch, W, d), rand(*batch, W, d_v)
        if garbage:
            k_cache[..., pos + 1:, :] = math.nan       # never written: must be ignored
            v_cache[..., pos + 1:, :] = math.inf
        return (q, k, v, k_cache, v_cache, pos), {}
    return Case(label, make)


register(Exercise(
    "sliding_window_mask", sw.sliding_window_mask,
    [_mask(1, 2), _mask(4, 2), _mask(6, 6), _mask(10, 4), _mask(5, 20), _mask(12, 8, torch.float64),
     _mask(33, 16), _mask(7, 6, torch.bfloat16), _mask(9, 2, torch.float16)],
    hint="query t (row) may attend to key j (column) exactly when t - w/2 <= j <= t: M[t, j] = 0 there and "
         "float('-inf') elsewhere (w = 6 gives 4 tokens per row, the last one on the diagonal)",
))

_ATTENTION_CASES = [
    _qkv((1, 4), 2, torch.float64),
    _qkv((6, 8), 6, torch.float64),
    _qkv((2, 3, 10, 8), 4, torch.float32),
    _qkv((2, 2, 5, 8), 16, torch.float64),
    _qkv((3, 2, 21, 8), 2, torch.float64),
    _qkv((2, 7, 8), 6, torch.float64, d_v=12),
    _qkv((2, 12, 16), 4, torch.bfloat16),
    _qkv((1, 2, 9, 8), 8, torch.float16),
    _qkv((1, 4, 37, 16), 8, torch.float32),
    noncontiguous(_qkv((2, 3, 10, 8), 4, torch.float32)),
    noncontiguous(_qkv((2, 7, 8), 6, torch.float64, d_v=12)),
    _far((2, 9, 8), 4, torch.float32, 30.0),            # scores ±318
    _far((1, 2, 7, 16), 6, torch.float16, 260.0),       # q·k = 260² > 65504: overflows in float16
]

register(Exercise(
    "sliding_window_loop", sw.sliding_window_loop, _ATTENTION_CASES, grad=True,
    hint="query t attends to keys max(0, t - w/2) .. t inclusive (w/2 + 1 of them), scores scaled by 1/sqrt(d_k); "
         "compute in float32 at least (float64 for float64 inputs) and return q's dtype",
    forbidden=ATTENTION,
))

register(Exercise(
    "sliding_window_chunks", sw.sliding_window_chunks, _ATTENTION_CASES + [
        _qkv((1, 2, 64, 8), 8, torch.float64),          # T a multiple of w
        _qkv((1, 3, 50, 8), 12, torch.float64),         # T not a multiple of ½w
        _qkv((2, 1, 100, 16), 16, torch.float32),
    ], grad=True,
    hint="pad T up to a multiple of w/2, give each block of w/2 queries the w keys (previous w/2 + its own w/2), "
         "mask the w/2 padding keys before position 0, and cut the output back to T rows",
    forbidden=ATTENTION,
))

register(Exercise(
    "rolling_buffer_decode_step", sw.rolling_buffer_decode_step,
    [_decode((1,), 6, 4, 0, torch.float64), _decode((2, 3), 6, 8, 2, torch.float64),
     _decode((2, 3), 6, 8, 3, torch.float64), _decode((2, 3), 6, 8, 4, torch.float64),
     _decode((2, 3), 8, 8, 13, torch.float32), _decode((1, 2), 2, 4, 7, torch.float64),
     _decode((2, 2), 6, 16, 9, torch.bfloat16), _decode((2,), 4, 8, 5, torch.float64, d_v=6),
     _decode((2, 3), 8, 8, 1, torch.float32, garbage=True), _decode((2,), 6, 4, 0, torch.float64, garbage=True),
     noncontiguous(_decode((2, 3), 6, 8, 7, torch.float32))],
    hint="write k and v into slot pos % W of *copies* of the caches, then attend over the filled slots "
         "0 .. min(pos, W - 1) (the slots not written yet hold garbage)",
    forbidden=ATTENTION,
))
