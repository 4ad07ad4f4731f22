"""Attention and position encodings of Lecture 4's "Modern Transformer Models" section.

core.py (masked attention, multi-head), rope.py (rotary position embeddings); kv_cache.py, gqa.py and
sliding_window.py build on core.attention.
"""
from .core import additive_mask, attention, causal_mask, merge_heads, multi_head_attention, split_heads
from .rope import (apply_rope_halves, apply_rope_pairs, pairs_to_halves, rope_angles, rope_matrix,
                   rope_thetas)

__all__ = ["additive_mask", "attention", "causal_mask", "merge_heads", "multi_head_attention", "split_heads",
           "apply_rope_halves", "apply_rope_pairs", "pairs_to_halves", "rope_angles", "rope_matrix",
           "rope_thetas"]
