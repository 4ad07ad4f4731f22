"""Attention and position encodings of Lecture 4's "Modern Transformer Models" section.

core.py            masked attention X' = softmax(QKᵀ/√d_k + M)V, multi-head attention
rope.py            rotary position embeddings (explicit R_{Θ,m}, adjacent pairs, halves)
kv_cache.py        a preallocated KV cache, cached attention, a small RoPE decoder with generate()
gqa.py             grouped-query attention (MHA and MQA as special cases), parameter and cache counts
sliding_window.py  the ½w+1 window: naive, for-loop and sliding chunks; Mistral's rolling buffer cache
plots.py           the figures of the rope, kv_cache and gqa notebooks (matplotlib; not imported here)
"""
from . import core, gqa, kv_cache, rope, sliding_window
from .core import additive_mask, attention, causal_mask, merge_heads, multi_head_attention, split_heads
from .gqa import GroupedQueryAttention, grouped_query_attention, repeat_kv
from .kv_cache import KVCache, TinyDecoder
from .rope import (apply_rope_halves, apply_rope_pairs, pairs_to_halves, rope_angles, rope_matrix,
                   rope_thetas)
from .sliding_window import RollingBufferCache, sliding_window_chunks, sliding_window_mask

__all__ = ["core", "gqa", "kv_cache", "rope", "sliding_window",
           "additive_mask", "attention", "causal_mask", "merge_heads", "multi_head_attention", "split_heads",
           "GroupedQueryAttention", "grouped_query_attention", "repeat_kv", "KVCache", "TinyDecoder",
           "apply_rope_halves", "apply_rope_pairs", "pairs_to_halves", "rope_angles", "rope_matrix",
           "rope_thetas", "RollingBufferCache", "sliding_window_chunks", "sliding_window_mask"]
