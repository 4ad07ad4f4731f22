"""Attention and position encodings of Lecture 4's "Modern Transformer Models" section."""
from .rope import (apply_rope_halves, apply_rope_pairs, pairs_to_halves, rope_angles, rope_matrix,
                   rope_thetas)

__all__ = ["apply_rope_halves", "apply_rope_pairs", "pairs_to_halves", "rope_angles", "rope_matrix",
           "rope_thetas"]
