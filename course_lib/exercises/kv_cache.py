"""Graded exercises of the KV-cache assignment (``solutions/kv_cache/kv_cache.ipynb``).

The cache buffers of every case are preallocated: slots 0..pos-1 hold cached keys/values, the slots
after them hold large garbage values (as ``torch.empty`` would), so that reading past ``pos`` shows; in
the cases marked "NaN/inf in unused slots" they hold NaN and ±inf, which a function that reads the whole
buffer and masks the unused slots out afterwards (0 · NaN = NaN) turns into NaN.

The exercises are pure functions (the notebook: "Graded functions must not modify their inputs, so your
function returns new tensors"): the default rules "inputs unchanged" and "new tensors" are the contract;
the in-place write is ``KVCache.append``'s, not theirs.
"""
from __future__ import annotations

import math

import torch

from ..attention import kv_cache
from ..grading import Case, Exercise, noncontiguous, register
from . import ATTENTION

GARBAGE = 40.0   # unused cache slots hold values around ±GARBAGE: attending to them changes everything


def _short(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _values(g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (20 * x).round().to(dtype) if not dtype.is_floating_point else x.to(dtype)   # int8: a quantized cache


def _buffers(g: torch.Generator, lead: tuple[int, ...], max_len: int, pos: int, d_k: int, d_v: int,
             dtype: torch.dtype, nan: bool = False, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cache_k (..., max_len, d_k), cache_v (..., max_len, d_v): N(0, 1) up to pos, garbage after (nan: NaN,
    +inf and -inf; integer dtypes: the extreme values). offset: added to the cached keys (not the values)."""
    out = []
    for j, d in enumerate((d_k, d_v)):
        buf = torch.randn(*lead, max_len, d, generator=g, dtype=torch.float64)
        junk = GARBAGE * torch.sign(torch.randn(*lead, max_len - pos, d, generator=g, dtype=torch.float64))
        buf[..., pos:, :] = junk + torch.randn(*lead, max_len - pos, d, generator=g, dtype=torch.float64)
        if nan:
            buf[..., pos:, :] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)[
                torch.randint(0, 3, buf[..., pos:, :].shape, generator=g)]
        if j == 0:
            buf[..., :pos, :] += offset
        if dtype.is_floating_point:
            out.append(buf.to(dtype))
        else:
            info = torch.iinfo(dtype)
            out.append((20 * buf).nan_to_num(nan=info.min, posinf=info.max, neginf=info.min)
                       .round().clamp(info.min, info.max).to(dtype))
    return out[0], out[1]


def _label(lead, max_len, pos, T, d_k, d_v, dtype, nan=False) -> str:
    dims = f"d_k={d_k}" + (f", d_v={d_v}" if d_v != d_k else "")
    return (f"cache{tuple(lead) + (max_len, d_k)} holding {pos} tokens, {T} new, {dims}, {_short(dtype)}"
            + (", NaN/inf in unused slots" if nan else ""))


def _update_case(lead: tuple[int, ...], max_len: int, pos: int, T: int, d_k: int, d_v: int | None = None,
                 dtype: torch.dtype = torch.float32, nan: bool = False) -> Case:
    d_v = d_k if d_v is None else d_v

    def make(g: torch.Generator, dev: torch.device):
        cache_k, cache_v = _buffers(g, lead, max_len, pos, d_k, d_v, dtype, nan)
        k_new = _values(g, (*lead, T, d_k), dtype)
        v_new = _values(g, (*lead, T, d_v), dtype)
        return (cache_k.to(dev), cache_v.to(dev), k_new.to(dev), v_new.to(dev), pos), {}
    return Case(_label(lead, max_len, pos, T, d_k, d_v, dtype, nan), make)


def _step_case(lead: tuple[int, ...], max_len: int, pos: int, T: int, d_k: int, d_v: int | None = None,
               dtype: torch.dtype = torch.float32, scale: float = 1.0, nan: bool = False,
               scales: tuple[float, ...] = (), offset: float = 0.0, what: str = "") -> Case:
    """scale: multiplies q_new; scales: new query t is multiplied by scales[t % len(scales)] (rows far
    apart: a softmax that subtracts one global maximum underflows); offset: added to q_new, k_new and the
    cached keys (large scores: q·k overflows float16 unless computed in float32)."""
    d_v = d_k if d_v is None else d_v
    label = _label(lead, max_len, pos, T, d_k, d_v, dtype, nan) + (f", q·{scale:g}" if scale != 1.0 else "")
    label += f", {what}" if what else ""

    def make(g: torch.Generator, dev: torch.device):
        cache_k, cache_v = _buffers(g, lead, max_len, pos, d_k, d_v, dtype, nan, offset)
        q_new = scale * torch.randn(*lead, T, d_k, generator=g, dtype=torch.float64)
        if scales:
            q_new = q_new * torch.tensor(scales, dtype=torch.float64)[torch.arange(T) % len(scales)][:, None]
        q_new = (q_new + offset).to(dtype)
        k_new = (torch.randn(*lead, T, d_k, generator=g, dtype=torch.float64) + offset).to(dtype)
        v_new = torch.randn(*lead, T, d_v, generator=g, dtype=torch.float64).to(dtype)
        return (q_new.to(dev), k_new.to(dev), v_new.to(dev), cache_k.to(dev), cache_v.to(dev), pos), {}
    return Case(label, make)


def _bytes_case(name: str, n_layers: int, h_kv: int, d_head: int, tokens: int, dtype: torch.dtype,
                batch: int | None = None) -> Case:
    label = (f"{name}: {n_layers} layers, h_kv={h_kv}, d_head={d_head}, {tokens} tokens, {_short(dtype)}"
             + (f", batch={batch}" if batch is not None else ""))
    kwargs = {} if batch is None else {"batch": batch}
    return Case(label, lambda g, dev: ((n_layers, h_kv, d_head, tokens, dtype), kwargs))


register(Exercise(
    "cache_update", kv_cache.cache_update,
    [
        _update_case((1, 1), 4, 0, 1, 2, dtype=torch.float64),            # empty cache, first token
        _update_case((2, 3), 10, 5, 1, 8),                                 # one decoding step
        _update_case((2, 2), 12, 3, 4, 8, 6, dtype=torch.float64),         # a chunk of 4, d_v != d_k
        _update_case((4,), 7, 6, 1, 4, dtype=torch.float64),               # fills the last slot
        _update_case((1, 2), 16, 0, 16, 8),                                # prefill fills the buffer
        _update_case((), 8, 5, 2, 4, dtype=torch.float64),                # (max_len, d): no batch or heads
        _update_case((2, 4), 9, 4, 2, 16, dtype=torch.bfloat16),
        _update_case((1, 2, 2), 20, 13, 3, 8, dtype=torch.float16),
        _update_case((2, 2), 9, 4, 2, 8, dtype=torch.int8),                # an int8-quantized cache
        _update_case((3,), 1, 0, 1, 1, dtype=torch.float64),               # one slot of size 1
        _update_case((2, 3), 10, 6, 2, 4, dtype=torch.float64, nan=True),  # unused slots may hold anything
        _update_case((1, 2), 6, 0, 3, 4, 5, nan=True),                     # prefill into a NaN buffer
        noncontiguous(_update_case((2, 2), 8, 3, 2, 6, 4, dtype=torch.float64)),
        noncontiguous(_update_case((2, 3), 10, 5, 1, 8)),
    ],
    hint="return the first pos cached rows followed by the T new ones: cat along the token axis (dim -2), "
         "never the unused slots pos.. of the buffer",
    grad=True,           # prefix tuning trains through cached keys and values: gradients reach all four tensors
))

register(Exercise(
    "cached_attention_step", kv_cache.cached_attention_step,
    [
        _step_case((1, 1), 3, 0, 1, 4, dtype=torch.float64),              # first token: attends only to itself
        _step_case((2, 4), 12, 7, 1, 8),                                   # one decoding step
        _step_case((2, 2), 8, 5, 3, 16, dtype=torch.float64),             # a chunk of 3: needs the causal mask
        _step_case((1, 3), 5, 0, 5, 8, dtype=torch.float64),              # prefill: plain causal attention
        _step_case((3,), 14, 10, 2, 8, 4, dtype=torch.float64),           # d_v != d_k
        _step_case((), 9, 6, 2, 4, dtype=torch.float64),                  # (T, d): no batch or heads
        _step_case((2, 2), 16, 12, 1, 32, dtype=torch.bfloat16),
        _step_case((1, 2), 8, 4, 2, 16, dtype=torch.float16),
        _step_case((2, 2), 40, 30, 4, 64, scale=4.0),                      # peaked softmax
        _step_case((2, 3), 10, 6, 1, 8, dtype=torch.float64, nan=True),    # unused slots may hold anything
        _step_case((1, 2), 9, 3, 3, 8, 4, nan=True),                       # a chunk, NaN after it
        _step_case((2, 2), 12, 5, 4, 8, dtype=torch.float64, scales=(0.01, 1000.0), what="rows far apart"),
        _step_case((1, 2), 10, 5, 3, 64, dtype=torch.float16, offset=40.0, what="q·k ≈ 1e5 overflows float16"),
        _step_case((2,), 4, 0, 1, 1, dtype=torch.float64),                 # d_k = 1, one token
        noncontiguous(_step_case((2, 2), 9, 4, 3, 8, 6, dtype=torch.float64)),
        noncontiguous(_step_case((2, 3), 12, 7, 1, 8)),
    ],
    hint="K, V = the pos cached rows followed by the T new ones; new query t sits at position pos+t and "
         "sees keys 0..pos+t (mask -inf after that); scale by sqrt(d_k); compute in float32 at least "
         "(float64 for float64) and return q's dtype",
    forbidden=ATTENTION,
    grad=True,           # attention: gradients reach q, k, v and the cached keys and values (prefix tuning)
))

register(Exercise(
    "kv_cache_bytes", kv_cache.kv_cache_bytes,
    [
        _bytes_case("one of everything", 1, 1, 1, 1, torch.float32),
        _bytes_case("empty cache", 4, 2, 16, 0, torch.float32),
        _bytes_case("TinyDecoder", 2, 4, 16, 512, torch.float32),
        _bytes_case("Llama-2 7B (MHA)", 32, 32, 128, 4096, torch.float16),
        _bytes_case("Llama-2 70B (GQA)", 80, 8, 128, 4096, torch.bfloat16),
        _bytes_case("Mistral 7B (GQA), batch", 32, 8, 128, 8192, torch.float16, batch=8),
        _bytes_case("float64", 3, 5, 7, 11, torch.float64, batch=2),
        _bytes_case("int8 quantized cache", 32, 8, 128, 32768, torch.int8),
        _bytes_case("float8 cache", 32, 8, 128, 4096, torch.float8_e4m3fn, batch=4),
        _bytes_case("any dtype", 2, 3, 4, 5, torch.bool),
        _bytes_case("any dtype", 2, 3, 4, 5, torch.complex64, batch=3),
        _bytes_case("no sequence", 2, 4, 16, 100, torch.float32, batch=0),
    ],
    hint="2 (keys and values) · layers · h_kv · d_head · tokens · bytes per element · batch; bytes per "
         "element from the dtype (e.g. torch.empty(0, dtype=dtype).element_size())",
))
