"""Graded exercises of the grouped-query attention assignment (``solutions/gqa/gqa.ipynb``)."""
from __future__ import annotations

import torch

from ..attention import gqa
from ..attention.core import causal_mask
from ..grading import Case, Exercise, noncontiguous, register
from . import ATTENTION


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(dev)


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: repeat_kv
# ---------------------------------------------------------------------------------------------------------

def _repeat(shape: tuple[int, ...], g_: int, dtype: torch.dtype) -> Case:
    def make(g: torch.Generator, dev: torch.device):
        if dtype.is_floating_point:
            x = _randn(g, shape, dtype, dev)
        else:
            x = torch.randint(-100, 100, shape, generator=g).to(dtype).to(dev)
        return (x, g_), {}
    return Case(f"x{shape} {_name(dtype)}, g={g_}", make)


register(Exercise(
    "repeat_kv", gqa.repeat_kv,
    [_repeat((1, 1, 3, 4), 1, torch.float64),           # g = 1 (MHA): nothing to repeat
     _repeat((2, 1, 5, 8), 4, torch.float64),           # h_kv = 1 (MQA)
     _repeat((2, 2, 3, 4), 3, torch.float32),
     _repeat((3, 4, 1, 16), 2, torch.float32),          # a single cached position
     _repeat((2, 3, 4, 2), 2, torch.int64),             # any dtype
     _repeat((1, 8, 16, 128), 8, torch.bfloat16),       # Llama-2-70B: 8 kv heads, g = 8
     _repeat((2, 2, 0, 8), 2, torch.float32),           # an empty cache
     _repeat((2, 2, 3, 4), 3, torch.bool),              # any dtype: booleans too
     _repeat((1, 2, 5, 6), 4, torch.float16),
     noncontiguous(_repeat((2, 3, 5, 4), 2, torch.float64)),   # e.g. heads split by a transpose
     noncontiguous(_repeat((1, 2, 3, 4), 1, torch.float32)),   # g = 1, non-contiguous
     noncontiguous(_repeat((2, 2, 4, 3), 2, torch.int64))],
    hint="head n = i·g + j of the output is head i of the input: repeat each head g times in a row "
         "(like torch.repeat_interleave on dim 1), do not tile the whole stack (x.repeat(1, g, 1, 1))",
    may_alias=True,      # g = 1 may return x itself, as Hugging Face's repeat_kv does
    grad=True,           # training backpropagates through the repeated keys and values to k and v
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: grouped_query_attention
# ---------------------------------------------------------------------------------------------------------

def _gqa(B: int, h_q: int, h_kv: int, T: int, S: int, d: int, dtype: torch.dtype, mask: str,
         d_v: int | None = None, mask_dtype: torch.dtype = torch.bfloat16, scales: tuple[float, ...] = (),
         offset: float = 0.0, what: str = "") -> Case:
    """mask: 'none', 'causal' (causal_mask(T, S): the last T of S positions), or 'padding' ((B, 1, T, S),
    random keys hidden per sequence, the first key always visible).

    The masks are bfloat16 (0 and −∞ are exact in every float dtype): the gradient rule differentiates
    every float32/float64 input, and a mask is not something the exercise asks to differentiate (a
    masked_fill implementation is as right as adding M). scales: query row r of every head is multiplied
    by scales[r % len(scales)] (rows far apart: a softmax that subtracts one global maximum underflows);
    offset: added to q and k (large scores: q·k overflows float16 unless computed in float32)."""
    d_v = d if d_v is None else d_v
    label = f"B={B}, h_q={h_q}, h_kv={h_kv}, T={T}, S={S}, d={d}" + (f", d_v={d_v}" if d_v != d else "")
    label += f" {_name(dtype)}, mask {mask if mask != 'padding' else '(B, 1, T, S) padding'}"
    label += f" {_name(mask_dtype)}" if mask != "none" else ""
    label += f", {what}" if what else ""

    def make(g: torch.Generator, dev: torch.device):
        q = torch.randn((B, h_q, T, d), generator=g, dtype=torch.float64)
        k = torch.randn((B, h_kv, S, d), generator=g, dtype=torch.float64)
        v = _randn(g, (B, h_kv, S, d_v), dtype, dev)
        if scales:
            rows = torch.tensor(scales, dtype=torch.float64)[torch.arange(h_q * T) % len(scales)]
            q = q * rows.reshape(1, h_q, T, 1)
        q, k = (q + offset).to(dtype).to(dev), (k + offset).to(dtype).to(dev)
        if mask == "none":
            return (q, k, v), {}
        if mask == "causal":
            return (q, k, v, causal_mask(T, S, device=dev, dtype=mask_dtype)), {}
        keep = torch.rand((B, 1, 1, S), generator=g) < 0.6
        keep[..., 0] = True
        M = torch.zeros(B, 1, T, S).masked_fill(~keep, float("-inf"))     # (B, 1, T, S)
        return (q, k, v), {"mask": M.to(mask_dtype).to(dev)}
    return Case(label, make)


register(Exercise(
    "grouped_query_attention", gqa.grouped_query_attention,
    [_gqa(1, 2, 2, 3, 3, 4, torch.float64, "none"),                # MHA: h_kv = h_q
     _gqa(2, 4, 1, 5, 5, 8, torch.float64, "causal"),              # MQA: h_kv = 1
     _gqa(2, 8, 2, 6, 6, 16, torch.float32, "causal"),             # GQA, g = 4
     _gqa(2, 6, 3, 1, 9, 8, torch.float64, "causal"),              # decoding one token after 8 cached ones
     _gqa(1, 4, 2, 3, 7, 8, torch.float32, "causal"),              # a chunk of 3 queries after 4 cached keys
     _gqa(3, 6, 2, 5, 5, 8, torch.float64, "padding"),             # a mask per sequence, shared by the heads
     _gqa(2, 4, 2, 4, 4, 8, torch.float64, "none", d_v=6),         # values of another size than keys
     _gqa(1, 8, 4, 16, 16, 32, torch.bfloat16, "causal"),
     _gqa(1, 32, 8, 8, 8, 16, torch.float32, "causal"),            # Llama-2-70B's ratio, g = 8
     _gqa(2, 3, 1, 1, 1, 5, torch.float64, "none"),                # one query, one key: the output is v
     _gqa(2, 4, 2, 4, 6, 8, torch.float64, "padding", scales=(0.01, 1000.0), what="rows far apart"),
     _gqa(1, 4, 2, 5, 5, 64, torch.float16, "causal", offset=40.0, what="q·k ≈ 1e5 overflows float16"),
     noncontiguous(_gqa(2, 4, 2, 5, 7, 8, torch.float64, "causal", d_v=3)),
     noncontiguous(_gqa(2, 6, 3, 4, 4, 8, torch.float32, "padding"))],
    hint="query head n = i·g + j (g = h_q // h_kv) attends with key/value head i = n // g; compute the "
         "scores and the softmax in float32 at least and return q's dtype; a (B, 1, T, S) mask applies to "
         "every head",
    forbidden=ATTENTION,
    grad=True,           # attention: training backpropagates through it to q, k and v
))


# ---------------------------------------------------------------------------------------------------------
# Exercises 3 and 4: parameters and KV-cache bytes
# ---------------------------------------------------------------------------------------------------------

def _ints(*args) -> Case:
    label = ", ".join(_name(a) if isinstance(a, torch.dtype) else str(a) for a in args)
    return Case(label, lambda g, dev: (args, {}))


register(Exercise(
    "gqa_param_count", gqa.gqa_param_count,
    [_ints(8192, 64, 64, 128),    # Llama-2-70B's width with MHA
     _ints(8192, 64, 8, 128),     # Llama-2-70B (GQA)
     _ints(8192, 64, 1, 128),     # ... with MQA
     _ints(4096, 32, 32, 128),    # Llama-2-7B (MHA)
     _ints(4096, 32, 8, 128),     # Mistral 7B (GQA)
     _ints(16, 4, 2, 4),
     _ints(96, 6, 3, 8),          # h_q·d_head = 48 ≠ d_model = 96
     _ints(1, 1, 1, 1),           # one head of size 1
     _ints(40, 5, 5, 3),          # odd sizes, MHA
     _ints(65536, 256, 32, 256)], # 9.7e9 parameters: more than a 32-bit integer holds
    hint="W_q is d_model × h_q·d_head, W_k and W_v are d_model × h_kv·d_head each, W_o is h_q·d_head × "
         "d_model; no biases; h_q·d_head need not equal d_model",
))

register(Exercise(
    "kv_cache_bytes_per_token", gqa.kv_cache_bytes_per_token,
    [_ints(80, 8, 128, torch.bfloat16),     # Llama-2-70B
     _ints(80, 64, 128, torch.bfloat16),    # ... if it were MHA
     _ints(80, 1, 128, torch.float16),      # ... MQA
     _ints(32, 32, 128, torch.float16),     # Llama-2-7B
     _ints(32, 8, 128, torch.float32),      # Mistral 7B in float32
     _ints(1, 1, 64, torch.float64),
     _ints(60, 8, 128, torch.int8),         # a quantised cache: 1 byte per element
     _ints(32, 8, 128, torch.float8_e4m3fn),   # a float8 cache (e.g. vLLM's fp8 KV cache): 1 byte
     _ints(2, 3, 5, torch.int32),
     _ints(1, 2, 4, torch.complex64),       # any torch.dtype: 8 bytes
     Case("80, 8, 128 (dtype left out: bfloat16)", lambda g, dev: ((80, 8, 128), {}))],
    hint="one key AND one value vector per layer and per key/value head: 2 · layers · h_kv · d_head · "
         "bytes per element (dtype.itemsize)",
))
