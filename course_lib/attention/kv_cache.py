"""The key-value (KV) cache of autoregressive decoding, as Lecture 4 puts it:

    "At each timestep, we reuse all previous keys and values (i.e. we need to cache them). But we can get
     rid of the queries, similarity scores, and attention weights (i.e. we can let them fall out of the
     cache)."

Why. A decoder generates one token at a time. Under the causal mask, the keys k_j = W_kᵀx_j and values
v_j = W_vᵀx_j of the tokens j < t do not change when token t arrives, and neither do the rows of
queries, scores and weights of the earlier positions. So at step t only the new token's query row is
needed:

    x'_t = softmax(q_t Kᵀ / √d_k) V,      K = [k_1; …; k_t],  V = [v_1; …; v_t]       (one row of X')

K and V are the cache (read in full, extended by one row); q_t, s_t and a_t are used once and dropped.
A step then costs O(t·d) for attention and O(d²) for the projections instead of a full forward pass
over t tokens; the price is memory:

    cache bytes = 2 · layers · h_kv · d_head · tokens · bytes per element        (× batch)

(2: keys and values; h_kv key/value heads, h_kv = h in multi-head attention).

What is here:

* ``cache_update``, ``cached_attention_step``, ``kv_cache_bytes``: the three graded pieces, as pure
  functions (tensors in, new tensors out; the inputs are never modified);
* ``KVCache``: preallocated (layers, B, h_kv, max_len, d_head) buffers; ``append`` writes the new keys and
  values *in place* at the current length and returns views of the filled part, so a decoding step never
  copies the cache (``torch.cat`` onto a growing tensor would copy all of it at every step);
* ``TinyDecoder``: token embedding, pre-norm blocks (RoPE attention + MLP), output head;
  ``forward(tokens, cache=None, start_pos=...)`` and greedy ``generate(prompt, n_new, use_cache=...)``.
  Cached and uncached decoding give the same tokens and the same logits (to rounding).

Attention is ``core.attention`` with ``core.causal_mask(T, S)`` (T new queries, the last T of S
positions); RoPE is passed in (default ``rope.apply_rope_pairs``): nothing here re-implements either.

Shapes (nanoGPT's names): B batch, h heads (h_kv key/value heads), T new tokens, S = pos + T keys,
d (d_head = d_k) per-head size, C = d_model, V_voc vocabulary size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from .core import attention, causal_mask, merge_heads, split_heads
from .rope import apply_rope_pairs

__all__ = ["cache_update", "cached_attention_step", "kv_cache_bytes", "bytes_per_element", "KVCache",
           "DecoderConfig", "TinyDecoder", "time_per_token"]

# (q_new, k_new, v_new, cache_k, cache_v, pos) -> (..., T, d_v): the signature of cached_attention_step
AttentionStep = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, int], Tensor]


# ---------------------------------------------------------------------------------------------------------
# The graded pieces, as pure functions
# ---------------------------------------------------------------------------------------------------------

def _check_pos(pos: int, T: int, max_len: int) -> None:
    if not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
        raise ValueError(f"pos must be a non-negative int (the number of cached tokens), got {pos!r}")
    if pos + T > max_len:
        raise ValueError(f"the cache holds at most {max_len} tokens: cannot add {T} after {pos}")


def cache_update(cache_k: Tensor, cache_v: Tensor, k_new: Tensor, v_new: Tensor, pos: int) -> tuple[Tensor, Tensor]:
    """Reuse the cached keys and values and append the new ones (the lecture's "reuse all previous keys
    and values").

    Inputs:
      cache_k, cache_v: (..., max_len, d_k) and (..., max_len, d_v) preallocated buffers; slots 0..pos-1
        hold the keys/values of the earlier tokens, slots pos.. are unused (anything may be there).
      k_new, v_new: (..., T, d_k) and (..., T, d_v): keys/values of the T new tokens (positions pos..pos+T-1).
      pos: number of cached tokens (an int), with pos + T <= max_len.
    Returns: (K, V) of shapes (..., pos + T, d_k) and (..., pos + T, d_v): the keys and values of all the
      tokens so far, i.e. what the buffers hold after writing the new ones at slots pos..pos+T-1. New
      tensors: the inputs are not modified (``KVCache.append`` does the same write in place).
    """
    if k_new.shape[:-2] != cache_k.shape[:-2] or v_new.shape[:-2] != cache_v.shape[:-2]:
        raise ValueError(f"new keys/values {tuple(k_new.shape)}, {tuple(v_new.shape)} do not match the cache "
                         f"{tuple(cache_k.shape)}, {tuple(cache_v.shape)} in the leading dimensions")
    _check_pos(pos, k_new.shape[-2], cache_k.shape[-2])
    K = torch.cat((cache_k[..., :pos, :], k_new.to(cache_k.dtype)), dim=-2)   # (..., pos + T, d_k)
    V = torch.cat((cache_v[..., :pos, :], v_new.to(cache_v.dtype)), dim=-2)   # (..., pos + T, d_v)
    return K, V


def cached_attention_step(q_new: Tensor, k_new: Tensor, v_new: Tensor, cache_k: Tensor, cache_v: Tensor,
                          pos: int) -> Tensor:
    """Attention of the T new tokens over the cache and themselves: the new rows of X' only.

        X'_new = softmax(Q_new Kᵀ / √d_k + M) V,    K, V = cached keys/values (pos rows) + new ones (T rows)

    M is the causal mask of the last T of S = pos + T positions (``causal_mask(T, S)``): new query t sits
    at position pos + t and sees keys 0..pos+t. For T = 1 (one decoding step) M is all zeros. Only T×S
    scores are computed; the queries, scores and weights of earlier positions are never needed again.

    Inputs:
      q_new, k_new: (..., T, d_k), already rotated by RoPE at positions pos..pos+T-1; v_new: (..., T, d_v).
      cache_k, cache_v: (..., max_len, d_k), (..., max_len, d_v) buffers, filled up to slot pos (excluded).
      pos: number of cached tokens.
    Returns: (..., T, d_v) in q_new's dtype (computed in float32 at least, as ``core.attention``).
    """
    K, V = cache_update(cache_k, cache_v, k_new, v_new, pos)           # (..., S, d_k), (..., S, d_v)
    T, S = q_new.shape[-2], K.shape[-2]
    return attention(q_new, K, V, causal_mask(T, S, device=q_new.device))   # (..., T, d_v)


def bytes_per_element(dtype: torch.dtype) -> int:
    """Bytes of one element of ``dtype`` (4 for float32, 2 for bfloat16/float16, 1 for int8)."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"expected a torch.dtype such as torch.float16, got {dtype!r}")
    return torch.empty(0, dtype=dtype).element_size()


def kv_cache_bytes(n_layers: int, h_kv: int, d_head: int, tokens: int, dtype: torch.dtype, batch: int = 1) -> int:
    """cache bytes = 2 · layers · h_kv · d_head · tokens · bytes per element (· batch) (Lecture 4).

    The 2 counts keys and values. Inputs are non-negative ints and a torch.dtype. Returns an int.
    """
    for name, n in (("n_layers", n_layers), ("h_kv", h_kv), ("d_head", d_head), ("tokens", tokens), ("batch", batch)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return 2 * n_layers * h_kv * d_head * tokens * bytes_per_element(dtype) * batch


# ---------------------------------------------------------------------------------------------------------
# The cache: preallocated buffers, written in place
# ---------------------------------------------------------------------------------------------------------

class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` tokens.

    ``k`` and ``v`` have shape (n_layers, B, h_kv, max_len, d_head). ``append(layer, k, v)`` writes T new
    rows at slots length..length+T-1 of that layer *in place* and returns views of the filled part
    (no copy of the cache); after every layer has appended, ``length`` grows by T.
    """

    def __init__(self, n_layers: int, batch: int, h_kv: int, d_head: int, max_len: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        for name, n in (("n_layers", n_layers), ("batch", batch), ("h_kv", h_kv), ("d_head", d_head),
                        ("max_len", max_len)):
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ValueError(f"KVCache: {name} must be a positive int, got {n!r}")
        shape = (n_layers, batch, h_kv, max_len, d_head)
        self.k = torch.zeros(shape, dtype=dtype, device=device)   # (L, B, h_kv, max_len, d)
        self.v = torch.zeros(shape, dtype=dtype, device=device)   # (L, B, h_kv, max_len, d)
        self._lengths = [0] * n_layers                           # tokens stored, per layer

    # sizes -------------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.k.shape[0]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def length(self) -> int:
        """Tokens stored in every layer: the position of the next token."""
        return min(self._lengths)

    def layer_length(self, layer: int) -> int:
        return self._lengths[self._layer(layer)]

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated buffers (all max_len slots, whether filled or not)."""
        return self.k.nbytes + self.v.nbytes

    # reading and writing -------------------------------------------------------------------------------
    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, h_kv, T, d_head) at slots n..n+T-1 of ``layer`` (n = its current length) in place.

        Returns: (K, V), views (B, h_kv, n + T, d_head) of the filled part: no copy of the cache.
        """
        layer = self._layer(layer)
        want = (self.k.shape[1], self.k.shape[2], self.k.shape[4])
        if k.dim() != 4 or v.shape != k.shape or (k.shape[0], k.shape[1], k.shape[3]) != want:
            raise ValueError(f"KVCache.append expects k and v of shape (B, h_kv, T, d_head) = "
                             f"({want[0]}, {want[1]}, T, {want[2]}), got {tuple(k.shape)} and {tuple(v.shape)}")
        n, T = self._lengths[layer], k.shape[2]
        if n + T > self.max_len:
            raise ValueError(f"KV cache is full: layer {layer} holds {n} of {self.max_len} tokens, cannot add {T}")
        self.k[layer, :, :, n:n + T] = k                       # in place: O(T), not O(n)
        self.v[layer, :, :, n:n + T] = v
        self._lengths[layer] = n + T
        return self.get(layer)

    def get(self, layer: int) -> tuple[Tensor, Tensor]:
        """Views (B, h_kv, n, d_head) of the keys and values stored for ``layer``."""
        layer = self._layer(layer)
        n = self._lengths[layer]
        return self.k[layer, :, :, :n], self.v[layer, :, :, :n]

    def reset(self) -> None:
        """Forget every token (the buffers are kept and reused; their contents are simply ignored)."""
        self._lengths = [0] * self.n_layers

    def _layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be an int in 0..{self.n_layers - 1}, got {layer!r}")
        return layer

    def __repr__(self) -> str:
        L, B, h, m, d = self.k.shape
        return (f"KVCache(layers={L}, batch={B}, h_kv={h}, d_head={d}, length={self.length}/{m}, "
                f"{str(self.k.dtype).replace('torch.', '')}, {self.nbytes:,} bytes on {self.k.device})")


# ---------------------------------------------------------------------------------------------------------
# A small decoder that uses it
# ---------------------------------------------------------------------------------------------------------

@dataclass
class DecoderConfig:
    vocab_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int | None = None          # hidden size of the MLP; 4 · d_model when None


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE on queries and keys, optionally reading a KV cache."""

    def __init__(self, d_model: int, n_heads: int, layer: int, rope: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into n_heads={n_heads} heads of even size (RoPE)")
        self.n_heads, self.layer, self.rope = n_heads, layer, rope
        self.W_q = nn.Linear(d_model, d_model, bias=False)   # the h heads' W_q^{(i)} side by side
        self.W_k = nn.Linear(d_model, d_model, bias=False)
        self.W_v = nn.Linear(d_model, d_model, bias=False)
        self.W_o = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, positions: Tensor, cache: KVCache | None = None,
                attention_step: AttentionStep | None = None) -> Tensor:
        T = x.shape[1]
        q = split_heads(self.W_q(x), self.n_heads)            # (B, h, T, d)
        k = split_heads(self.W_k(x), self.n_heads)            # (B, h, T, d)
        v = split_heads(self.W_v(x), self.n_heads)            # (B, h, T, d)
        q, k = self.rope(q, positions), self.rope(k, positions)   # q~_t = R_{Θ,t} q_t, k~_j = R_{Θ,j} k_j
        if cache is None:                                     # full recomputation: T×T scores
            y = attention(q, k, v, causal_mask(T, device=x.device))                      # (B, h, T, d)
        elif attention_step is None:                          # cache, written in place; T×S scores
            K, V = cache.append(self.layer, k, v)             # (B, h, S, d) views, S = pos + T
            M = causal_mask(T, K.shape[2], device=x.device) if T > 1 else None         # one new token: M = 0
            y = attention(q, K, V, M)                                                    # (B, h, T, d)
        else:                                                 # someone else's step (e.g. a student's)
            pos = cache.layer_length(self.layer)
            y = attention_step(q, k, v, cache.k[self.layer], cache.v[self.layer], pos)  # (B, h, T, d)
            cache.append(self.layer, k, v)                    # then store the new keys and values
        return self.W_o(merge_heads(y))                       # (B, T, C)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: DecoderConfig, layer: int, rope: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        d_mlp = cfg.d_mlp or 4 * cfg.d_model
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, layer, rope)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, cfg.d_model))

    def forward(self, x: Tensor, positions: Tensor, cache: KVCache | None = None,
                attention_step: AttentionStep | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), positions, cache, attention_step)   # (B, T, C)
        return x + self.mlp(self.norm2(x))                                   # (B, T, C)


class TinyDecoder(nn.Module):
    """A small decoder-only Transformer with RoPE: embedding, ``n_layers`` pre-norm blocks, norm, head.

    ``rope(x, positions)`` rotates queries and keys (default ``apply_rope_pairs``; pass your own).
    Randomly initialised (seed torch before building it): the point is decoding, not the text.
    """

    def __init__(self, config: DecoderConfig | None = None, rope: Callable[[Tensor, Tensor], Tensor] = apply_rope_pairs,
                 **overrides) -> None:
        super().__init__()
        cfg = config or DecoderConfig()
        if overrides:
            cfg = DecoderConfig(**{**cfg.__dict__, **overrides})
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, rope) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    @property
    def d_head(self) -> int:
        return self.config.d_model // self.config.n_heads

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache for this model, in the dtype and on the device of its parameters."""
        p = self.head.weight
        return KVCache(self.config.n_layers, batch, self.config.n_heads, self.d_head, max_len,
                       dtype=p.dtype, device=p.device)

    def forward(self, tokens: Tensor, cache: KVCache | None = None, start_pos: int | None = None,
                attention_step: AttentionStep | None = None) -> Tensor:
        """Logits (B, T, vocab) for tokens (B, T) at positions start_pos..start_pos+T-1.

        Without a cache every position attends to the T given tokens (start_pos defaults to 0). With a
        cache the tokens continue the cached sequence: start_pos defaults to ``cache.length`` (and must
        equal it), their keys and values are appended, and ``attention_step`` (if given, with the
        signature of ``cached_attention_step``) replaces the library's in-place path.
        """
        if tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError(f"tokens must be an integer tensor of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
        if attention_step is not None and cache is None:
            raise ValueError("attention_step reads a KV cache: pass cache= as well")
        if cache is not None:
            if start_pos is None:
                start_pos = cache.length
            if start_pos != cache.length:
                raise ValueError(f"start_pos={start_pos} but the cache holds {cache.length} tokens: "
                                 f"the new tokens must continue the cached sequence")
        start_pos = 0 if start_pos is None else start_pos
        T = tokens.shape[1]
        positions = torch.arange(start_pos, start_pos + T, device=tokens.device)   # (T,)
        x = self.embed(tokens)                                                     # (B, T, C)
        for block in self.blocks:
            x = block(x, positions, cache, attention_step)                         # (B, T, C)
        return self.head(self.norm(x))                                             # (B, T, vocab)

    @torch.no_grad()
    def decode(self, prompt: Tensor, n_new: int, use_cache: bool = True, *,
               attention_step: AttentionStep | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Greedy decoding, one step at a time: yields (next token (B,), its logits (B, vocab)) n_new times.

        use_cache=True: the prompt is processed once (prefill), then each step feeds only the new token.
        use_cache=False: each step runs the whole sequence so far through the model again.
        """
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise ValueError(f"prompt must have shape (B, T0) with T0 >= 1, got {tuple(prompt.shape)}")
        if not isinstance(n_new, int) or n_new < 0:
            raise ValueError(f"n_new must be a non-negative int, got {n_new!r}")
        if attention_step is not None and not use_cache:
            raise ValueError("attention_step is used only when decoding with the cache (use_cache=True)")
        if n_new == 0:
            return
        if use_cache:
            cache = self.new_cache(prompt.shape[0], prompt.shape[1] + n_new - 1)
            logits = self(prompt, cache, attention_step=attention_step)[:, -1]    # prefill (B, vocab)
            for i in range(n_new):
                token = logits.argmax(dim=-1)                                     # (B,)
                yield token, logits
                if i + 1 < n_new:                                                 # the last token is not fed back
                    logits = self(token[:, None], cache, attention_step=attention_step)[:, -1]
        else:
            seq = prompt
            for _ in range(n_new):
                logits = self(seq)[:, -1]                                         # recompute everything (B, vocab)
                token = logits.argmax(dim=-1)
                yield token, logits
                seq = torch.cat((seq, token[:, None]), dim=1)                     # (B, T + 1)

    @torch.no_grad()
    def generate(self, prompt: Tensor, n_new: int, use_cache: bool = True, *,
                 attention_step: AttentionStep | None = None, return_logits: bool = False):
        """Greedy generation of ``n_new`` tokens after ``prompt`` (B, T0) (deterministic).

        Returns: tokens (B, T0 + n_new) (the prompt, then the new tokens); with return_logits=True also
        the logits (B, n_new, vocab) from which each new token was picked.
        """
        steps = list(self.decode(prompt, n_new, use_cache, attention_step=attention_step))
        B, V = prompt.shape[0], self.config.vocab_size
        new = torch.stack([t for t, _ in steps], dim=1) if steps else prompt.new_zeros(B, 0)
        tokens = torch.cat((prompt, new), dim=1)                                  # (B, T0 + n_new)
        if not return_logits:
            return tokens
        logits = (torch.stack([l for _, l in steps], dim=1) if steps
                  else self.head.weight.new_zeros(B, 0, V))                       # (B, n_new, vocab)
        return tokens, logits


def time_per_token(model: TinyDecoder, prompt: Tensor, n_new: int, use_cache: bool, *,
                   attention_step: AttentionStep | None = None, progress: str | None = None) -> Tensor:
    """Seconds spent on each generated token (n_new,), measured with time.perf_counter (on CUDA after a
    synchronize).

    Entry i is the time from token i-1 to token i; entry 0 includes the prompt (prefill). ``progress``:
    a label for a tqdm progress bar, or None for none.
    """
    steps = model.decode(prompt, n_new, use_cache, attention_step=attention_step)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, total=n_new, desc=progress, leave=False)
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)
    sync()
    times, last = [], time.perf_counter()
    for _ in steps:
        sync()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return torch.tensor(times, dtype=torch.float64)
