"""Masked scaled dot-product attention and multi-head attention, as Lecture 4 writes them.

    X' = softmax(Q Kᵀ / √d_k + M) V

with an explicit *additive* mask M: M[t, j] = 0 where query t may look at key j, −∞ where it may not.
Causal attention is M[t, j] = −∞ for j > t. Every other kind of attention in the course (KV-cached,
grouped-query, sliding-window) reuses ``attention`` with another M or other K, V; none re-implements it.

Shapes (nanoGPT's names): B batch, h heads, T queries, S keys (S = T without a cache), d_k per-head size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["additive_mask", "causal_mask", "attention", "split_heads", "merge_heads", "multi_head_attention"]


def additive_mask(allowed: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boolean 'may attend' matrix → the lecture's additive M (0 where allowed, −∞ elsewhere)."""
    M = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return M.masked_fill(~allowed, float("-inf"))


def causal_mask(T: int, S: int | None = None, *, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """The causal mask M of shape (T, S) for T queries that are the *last* T of S positions.

    Query t sits at absolute position t + (S − T) and may attend to keys j ≤ t + (S − T). With S = T
    this is the usual lower-triangular mask; with a KV cache of S − T earlier tokens the new queries see
    all of them.
    """
    S = T if S is None else S
    if S < T:
        raise ValueError(f"causal_mask needs at least as many keys as queries, got T={T}, S={S}")
    t = torch.arange(T, device=device)[:, None] + (S - T)    # (T, 1): absolute positions of the queries
    j = torch.arange(S, device=device)[None, :]              # (1, S): positions of the keys
    return additive_mask(j <= t, dtype)                      # (T, S)


def attention(Q: Tensor, K: Tensor, V: Tensor, M: Tensor | None = None) -> Tensor:
    """X' = softmax(Q Kᵀ / √d_k + M) V.

    Inputs:
      Q: (..., T, d_k) queries;  K: (..., S, d_k) keys;  V: (..., S, d_v) values.
      M: additive mask broadcastable to (..., T, S) (0 / −∞), or None for no mask.
    Returns: (..., T, d_v). Computed in float32 at least (softmax in bfloat16 loses too much), returned in
    Q's dtype.
    """
    dt = torch.promote_types(Q.dtype, torch.float32)
    d_k = Q.shape[-1]
    scores = Q.to(dt) @ K.to(dt).transpose(-2, -1) / math.sqrt(d_k)    # (..., T, S)
    if M is not None:
        scores = scores + M.to(dt)
    A = torch.softmax(scores, dim=-1)                                    # (..., T, S): each row sums to 1
    return (A @ V.to(dt)).to(Q.dtype)                                    # (..., T, d_v)


def split_heads(x: Tensor, h: int) -> Tensor:
    """(B, T, h·d) → (B, h, T, d)."""
    B, T, C = x.shape
    if C % h:
        raise ValueError(f"cannot split {C} features into {h} heads")
    return x.view(B, T, h, C // h).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, T, d) → (B, T, h·d): the lecture's concat(X'^{(1)}, …, X'^{(h)})."""
    B, h, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d)


def multi_head_attention(X: Tensor, W_q: Tensor, W_k: Tensor, W_v: Tensor, W_o: Tensor, h: int,
                         M: Tensor | None = None) -> Tensor:
    """Multi-head attention: head i uses Q^{(i)} = X W_q^{(i)}, K^{(i)} = X W_k^{(i)}, V^{(i)} = X W_v^{(i)}.

    Inputs:
      X: (B, T, d_model);  W_q, W_k, W_v: (d_model, h·d_k), the h heads' matrices side by side;
      W_o: (h·d_k, d_model);  M: additive mask (T, T), e.g. ``causal_mask(T)``.
    Returns: concat(X'^{(1)}, …, X'^{(h)}) W_o, shape (B, T, d_model).
    """
    Q, K, V = (split_heads(X @ W, h) for W in (W_q, W_k, W_v))   # (B, h, T, d_k) each
    return merge_heads(attention(Q, K, V, M)) @ W_o              # (B, T, d_model)
