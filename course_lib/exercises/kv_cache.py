"""Graded exercises of the KV-cache assignment (``solutions/kv_cache/kv_cache.ipynb``).

The cache buffers of every case are preallocated: slots 0..pos-1 hold cached keys/values, the slots
after them hold large garbage values (as ``torch.empty`` would), so that reading past ``pos`` shows.
"""
from __future__ import annotations

import torch

from ..attention import kv_cache
from ..grading import Case, Exercise, register
from . import ATTENTION

GARBAGE = 40.0   # unused cache slots hold values around ±GARBAGE: attending to them changes everything


def _short(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _buffers(g: torch.Generator, lead: tuple[int, ...], max_len: int, pos: int, d_k: int, d_v: int,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cache_k (..., max_len, d_k), cache_v (..., max_len, d_v): N(0, 1) up to pos, garbage after."""
    out = []
    for d in (d_k, d_v):
        buf = torch.randn(*lead, max_len, d, generator=g, dtype=torch.float64)
        junk = GARBAGE * torch.sign(torch.randn(*lead, max_len - pos, d, generator=g, dtype=torch.float64))
        buf[..., pos:, :] = junk + torch.randn(*lead, max_len - pos, d, generator=g, dtype=torch.float64)
        out.append(buf.to(dtype))
    return out[0], out[1]


def _label(lead, max_len, pos, T, d_k, d_v, dtype) -> str:
    dims = f"d_k={d_k}" + (f", d_v={d_v}" if d_v != d_k else "")
    return (f"cache{tuple(lead) + (max_len, d_k)} holding {pos} tokens, {T} new, {dims}, {_short(dtype)}")


def _update_case(lead: tuple[int, ...], max_len: int, pos: int, T: int, d_k: int, d_v: int | None = None,
                 dtype: torch.dtype = torch.float32) -> Case:
    d_v = d_k if d_v is None else d_v

    def make(g: torch.Generator, dev: torch.device):
        cache_k, cache_v = _buffers(g, lead, max_len, pos, d_k, d_v, dtype)
        k_new = torch.randn(*lead, T, d_k, generator=g, dtype=torch.float64).to(dtype)
        v_new = torch.randn(*lead, T, d_v, generator=g, dtype=torch.float64).to(dtype)
        return (cache_k.to(dev), cache_v.to(dev), k_new.to(dev), v_new.to(dev), pos), {}
    return Case(_label(lead, max_len, pos, T, d_k, d_v, dtype), make)


def _step_case(lead: tuple[int, ...], max_len: int, pos: int, T: int, d_k: int, d_v: int | None = None,
               dtype: torch.dtype = torch.float32, scale: float = 1.0) -> Case:
    d_v = d_k if d_v is None else d_v
    label = _label(lead, max_len, pos, T, d_k, d_v, dtype) + (f", q·{scale:g}" if scale != 1.0 else "")

    def make(g: torch.Generator, dev: torch.device):
        cache_k, cache_v = _buffers(g, lead, max_len, pos, d_k, d_v, dtype)
        q_new = (scale * torch.randn(*lead, T, d_k, generator=g, dtype=torch.float64)).to(dtype)
        k_new = torch.randn(*lead, T, d_k, generator=g, dtype=torch.float64).to(dtype)
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
    ],
    hint="return the first pos cached rows followed by the T new ones: cat along the token axis (dim -2), "
         "never the unused slots pos.. of the buffer",
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
    ],
    hint="K, V = the pos cached rows followed by the T new ones; new query t sits at position pos+t and "
         "sees keys 0..pos+t (mask -inf after that); scale by sqrt(d_k); compute in float32 at least "
         "(float64 for float64) and return q's dtype",
    forbidden=ATTENTION,
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
    ],
    hint="2 (keys and values) · layers · h_kv · d_head · tokens · bytes per element · batch; bytes per "
         "element from the dtype (e.g. torch.empty(0, dtype=dtype).element_size())",
))
