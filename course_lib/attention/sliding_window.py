"""Sliding-window ("local") attention, as Lecture 4 writes it, three ways, and Mistral's rolling buffer cache.

Lecture 4, "Sliding Window Attention":

    X' = softmax(Q Kᵀ / √d_k + M) V

with a causal mask M that only looks at a window of ½w+1 tokens, the rightmost window element being the
current token (on the diagonal). Query t may attend to key j exactly when

    t − ½w ≤ j ≤ t          (M[t, j] = 0 there, −∞ elsewhere; w even, e.g. the lecture's w = 6: 4 tokens)

The lecture lists three ways to compute it; all three are here and give the same output for any length T:

* ``sliding_window_naive``   the full T×T scores plus the mask (``core.attention``): O(T²) time and memory;
* ``sliding_window_loop``    one query at a time against its ½w+1 keys: O(T·w) work, but T Python steps;
* ``sliding_window_chunks``  the queries in blocks of ½w rows; block c meets a key chunk of w columns (the
  previous ½w keys and its own ½w), so consecutive key chunks have size w and overlap ½w, as the lecture
  says; full attention inside each chunk (one batched matmul), then the band mask: O(T·w) time and memory
  in a handful of large tensor operations.

Decoding with a window needs only the last ½w+1 keys and values: Mistral's **rolling buffer cache** keeps
W slots and writes position i into slot i mod W (``RollingBufferCache``, ``rolling_buffer_decode_step``).
Here W = ½w + 1, the lecture's window, so decoding from the buffer equals sliding-window attention
recomputed over the whole sequence. Libraries differ by one here: Mistral's reference code builds its
prefill mask with ``triu(..., diagonal=-W)`` (W+1 keys) but decodes from a cache of W slots (W keys);
Hugging Face and xformers keep W keys (query t sees t−W+1..t). The lecture's ½w+1 tokens are W = ½w+1 in
the "W keys" convention.

Shapes (nanoGPT's names): q, k, v are (..., T, d) (e.g. (B, h, T, d_k)); v may have its own last size d_v.
Outputs follow ``core.attention``: computed in float32 at least, returned in q's dtype, on q's device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import additive_mask, attention

__all__ = [
    "sliding_window_allowed",
    "sliding_window_mask",
    "sliding_window_naive",
    "sliding_window_loop",
    "sliding_window_chunks",
    "chunk_band_allowed",
    "rolling_buffer_slots",
    "rolling_buffer_decode_step",
    "RollingBufferCache",
]


# ---------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------
def _check_w(w: int) -> int:
    """Validate the lecture's w (a positive even integer) and return ½w."""
    if not isinstance(w, int) or isinstance(w, bool) or w < 2 or w % 2:
        raise ValueError(f"the window parameter w must be a positive even integer (the window holds ½w+1 "
                         f"tokens), got w={w!r}")
    return w // 2


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d), got {tuple(x.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (..., T, d_k), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"v must have shape (..., T, d_v) with the (..., T) of k {tuple(k.shape[:-1])}, "
                         f"got {tuple(v.shape)}")


def _empty_output(q: Tensor, v: Tensor) -> Tensor:
    """The (..., 0, d_v) output of attention over zero queries."""
    return torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)


# ---------------------------------------------------------------------------------------------------------
# the mask
# ---------------------------------------------------------------------------------------------------------
def sliding_window_allowed(T: int, w: int, S: int | None = None, *,
                           device: torch.device | str | None = None) -> Tensor:
    """Boolean 'may attend' matrix of the lecture's sliding window, shape (T, S).

    The T queries are the *last* T of S positions (S = T without a cache), so query t sits at absolute
    position p = t + S − T and may attend to keys j with p − ½w ≤ j ≤ p: ½w+1 tokens ending on the
    diagonal (fewer for the first ½w positions).
    """
    half = _check_w(w)
    S = T if S is None else S
    if T < 0 or S < T:
        raise ValueError(f"need 0 <= T <= S, got T={T}, S={S}")
    p = torch.arange(T, device=device)[:, None] + (S - T)     # (T, 1): absolute positions of the queries
    j = torch.arange(S, device=device)[None, :]               # (1, S): positions of the keys
    return (j <= p) & (j >= p - half)                         # (T, S)


def sliding_window_mask(T: int, w: int, *, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """The lecture's additive sliding-window mask M, shape (T, T): 0 where t − ½w ≤ j ≤ t, −∞ elsewhere.

    Inputs:
      T: number of tokens; w: the lecture's (even) window parameter, the window holds ½w+1 tokens.
      device, dtype: of the result (like ``core.causal_mask``).
    Returns: M of shape (T, T), to be added to the scores Q Kᵀ / √d_k before the softmax.
    """
    return additive_mask(sliding_window_allowed(T, w, device=device), dtype)   # (T, T)


# ---------------------------------------------------------------------------------------------------------
# three implementations
# ---------------------------------------------------------------------------------------------------------
def sliding_window_naive(q: Tensor, k: Tensor, v: Tensor, w: int) -> Tensor:
    """1. Naive: X' = softmax(Q Kᵀ / √d_k + M) V with the full T×T scores and the sliding-window M.

    Inputs: q, k: (..., T, d_k); v: (..., T, d_v); w: even window parameter (½w+1 tokens).
    Returns: (..., T, d_v) in q's dtype. Time and memory O(T²) per head, whatever w.
    """
    _check_w(w)
    _check_qkv(q, k, v)
    M = sliding_window_mask(q.shape[-2], w, device=q.device)   # (T, T)
    return attention(q, k, v, M)                               # (..., T, d_v)


def sliding_window_loop(q: Tensor, k: Tensor, v: Tensor, w: int) -> Tensor:
    """2. For-loop: query t attends to its own window k_{t−½w..t} only, one query at a time.

    Inputs and returns as ``sliding_window_naive``. O(T·w) work and memory, but T small steps in Python.
    """
    half = _check_w(w)
    _check_qkv(q, k, v)
    T = q.shape[-2]
    if T == 0:
        return _empty_output(q, v)
    rows = []
    for t in range(T):
        lo = max(0, t - half)                                   # first key of the window (clipped at 0)
        rows.append(attention(q[..., t:t + 1, :],               # (..., 1, d_k): query t
                              k[..., lo:t + 1, :],              # (..., ≤ ½w+1, d_k): its window's keys
                              v[..., lo:t + 1, :]))             # (..., ≤ ½w+1, d_v) -> (..., 1, d_v)
    return torch.cat(rows, dim=-2)                              # (..., T, d_v)


def chunk_band_allowed(n_blocks: int, w: int, *, device: torch.device | str | None = None) -> Tensor:
    """Which (query, key) pairs of each chunk lie in the window: boolean, shape (n_blocks, ½w, w).

    Block c holds the queries t = c·½w + r (r < ½w); its key chunk holds the keys j = (c − 1)·½w + s
    (s < w): the previous ½w keys and the block's own ½w. Then t − ½w ≤ j ≤ t ⇔ r ≤ s ≤ r + ½w, the same
    band in every block; in block 0 the first ½w keys (j < 0) are padding and are masked too.
    """
    half = _check_w(w)
    r = torch.arange(half, device=device)[:, None]              # (½w, 1): query row inside its block
    s = torch.arange(w, device=device)[None, :]                 # (1, w):  key column inside its chunk
    band = (r <= s) & (s <= r + half)                           # (½w, w): t − ½w ≤ j ≤ t
    allowed = band.expand(n_blocks, half, w).clone()            # (n_blocks, ½w, w)
    allowed[:1, :, :half] = False                               # block 0: keys before position 0
    return allowed


def sliding_window_chunks(q: Tensor, k: Tensor, v: Tensor, w: int) -> Tensor:
    """3. Sliding chunks: the queries in blocks of ½w; block c meets a key chunk of w keys (the previous ½w
    and its own ½w), so the key chunks have size w and overlap by ½w (the lecture's "chunks of size w × w
    with overlap ½w"). Full attention inside each chunk, then the band mask.

    With h = ½w and n = ⌈T/h⌉ blocks (T padded up to n·h):
      K, V get h zero rows in front (the keys "before" position 0, masked) and n·h − T at the end;
      key chunk c = rows c·h .. c·h + w − 1 of the padded K: ``unfold`` makes all n chunks as a strided
      view (no copy); then one batched matmul for the n score blocks (h × w each), + M, softmax, one
      batched matmul with the value chunks; the padded query rows are dropped.
    Inputs and returns as ``sliding_window_naive``. O(T·w) time and memory instead of O(T²).
    """
    h = _check_w(w)
    _check_qkv(q, k, v)
    T, d_k = q.shape[-2], q.shape[-1]
    if T == 0:
        return _empty_output(q, v)
    dt = torch.promote_types(q.dtype, torch.float32)           # as core.attention: at least float32
    n = -(-T // h)                                             # number of query blocks, ⌈T / h⌉
    pad_end = n * h - T
    q_blocks = F.pad(q.to(dt) / math.sqrt(d_k), (0, 0, 0, pad_end)).unflatten(-2, (n, h))  # (..., n, h, d_k)
    k_chunks = F.pad(k.to(dt), (0, 0, h, pad_end)).unfold(-2, w, h)                   # (..., n, d_k, w) = Kᵀ chunks
    v_chunks = F.pad(v.to(dt), (0, 0, h, pad_end)).unfold(-2, w, h).transpose(-1, -2)  # (..., n, w, d_v)
    scores = q_blocks @ k_chunks                               # (..., n, h, w): Q Kᵀ / √d_k, chunk by chunk
    scores += additive_mask(chunk_band_allowed(n, w, device=q.device), dt)   # + M   (n, h, w), 0 / −∞
    A = torch.softmax(scores, dim=-1)                          # (..., n, h, w): each row sums to 1
    out = A @ v_chunks                                         # (..., n, h, d_v)
    return out.flatten(-3, -2)[..., :T, :].to(q.dtype)         # (..., T, d_v)


# ---------------------------------------------------------------------------------------------------------
# Mistral's rolling buffer cache
# ---------------------------------------------------------------------------------------------------------
def rolling_buffer_slots(positions: Tensor | range | int, W: int) -> Tensor:
    """The slot of each absolute position in a rolling buffer of W slots: i mod W."""
    return torch.as_tensor(positions) % W


def rolling_buffer_decode_step(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor,
                               pos: int) -> tuple[Tensor, Tensor, Tensor]:
    """One decoding step with a rolling buffer of W slots (Mistral), as a pure function.

    Inputs:
      q, k: (..., 1, d_k), v: (..., 1, d_v): the new token, at absolute position ``pos`` (0-based).
      k_cache: (..., W, d_k), v_cache: (..., W, d_v): position i < pos is in slot i mod W (for the W − 1
        positions before pos that are still there); slots never written (pos < W − 1) hold anything.
      pos: the absolute position of the new token.
    Returns: (out, k_cache', v_cache'):
      out (..., 1, d_v): the new query attends to positions max(0, pos − W + 1) .. pos, i.e. the lecture's
        window of ½w+1 tokens when W = ½w + 1;
      k_cache', v_cache': copies of the caches with k, v written into slot pos mod W (inputs unchanged).
    The keys sit in the buffer in rotated order; the softmax and the weighted sum do not care about the
    order of the keys, so no reordering is needed.
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != 1:
        raise ValueError(f"a decode step takes one new token: q must have shape (..., 1, d), got {tuple(q.shape)}")
    if k_cache.shape[:-2] != k.shape[:-2] or k_cache.shape[-1] != k.shape[-1] or \
            v_cache.shape[:-1] != k_cache.shape[:-1] or v_cache.shape[-1] != v.shape[-1]:
        raise ValueError(f"caches of shape {tuple(k_cache.shape)} and {tuple(v_cache.shape)} do not fit "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)}: expected (..., W, d)")
    if not isinstance(pos, int) or pos < 0:
        raise ValueError(f"pos must be a non-negative integer, got {pos!r}")
    W = k_cache.shape[-2]
    slot = pos % W
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    k_cache[..., slot, :] = k[..., 0, :]                    # position pos -> slot pos mod W
    v_cache[..., slot, :] = v[..., 0, :]
    filled = min(pos + 1, W)                                # slots 0..filled-1 hold positions ≤ pos
    out = attention(q, k_cache[..., :filled, :], v_cache[..., :filled, :])   # (..., 1, d_v)
    return out, k_cache, v_cache


class RollingBufferCache:
    """Mistral's rolling buffer KV cache for the lecture's window of ½w + 1 tokens.

    It holds W = ½w + 1 slots, exactly the keys and values that a query may still look at: position i is
    written to slot i mod W and overwrites position i − W, which has just left the window. Memory stays
    O(W) however long the sequence gets.

        cache = RollingBufferCache(w)
        out = cache.prefill(q, k, v)      # the prompt: sliding-window attention, then keep the last W
        out = cache.decode(q1, k1, v1)    # then one token at a time (q1: (..., 1, d))
    """

    def __init__(self, w: int):
        self.w = w
        self.W = _check_w(w) + 1                     # slots: the lecture's ½w + 1 tokens
        self.k: Tensor | None = None                 # (..., W, d_k), allocated at the first write
        self.v: Tensor | None = None                 # (..., W, d_v)
        self.pos = 0                                 # absolute position of the next token

    def _allocate(self, k: Tensor, v: Tensor) -> None:
        self.k = k.new_zeros(*k.shape[:-2], self.W, k.shape[-1])   # (..., W, d_k)
        self.v = v.new_zeros(*v.shape[:-2], self.W, v.shape[-1])   # (..., W, d_v)

    def prefill(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attend over a prompt of T tokens (positions 0..T−1) and keep its last min(T, W) keys/values."""
        if self.pos:
            raise RuntimeError("prefill starts a sequence: use decode() after it, or a new cache")
        out = sliding_window_chunks(q, k, v, self.w)            # (..., T, d_v)
        self._allocate(k, v)
        T = k.shape[-2]
        keep = torch.arange(max(0, T - self.W), T, device=k.device)
        slots = rolling_buffer_slots(keep, self.W)
        self.k[..., slots, :] = k[..., keep, :]                  # position i -> slot i mod W
        self.v[..., slots, :] = v[..., keep, :]
        self.pos = T
        return out

    def decode(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """One new token at position ``self.pos``: write it into slot pos mod W and attend over the buffer.
        q, k: (..., 1, d_k), v: (..., 1, d_v); returns (..., 1, d_v)."""
        _check_qkv(q, k, v)
        if q.shape[-2] != 1:
            raise ValueError(f"decode takes one new token: q must have shape (..., 1, d), got {tuple(q.shape)}")
        if self.k is None:
            self._allocate(k, v)
        slot = self.pos % self.W
        self.k[..., slot, :] = k[..., 0, :]
        self.v[..., slot, :] = v[..., 0, :]
        filled = min(self.pos + 1, self.W)
        out = attention(q, self.k[..., :filled, :], self.v[..., :filled, :])   # (..., 1, d_v)
        self.pos += 1
        return out

    def positions(self) -> Tensor:
        """The absolute position held in each slot (−1 for a slot not written yet), shape (W,)."""
        slots = torch.arange(self.W)
        last = self.pos - 1                                       # newest position written
        held = last - ((last - slots) % self.W)                   # the newest i ≤ last with i ≡ slot (mod W)
        return torch.where(held >= 0, held, torch.full_like(held, -1))
