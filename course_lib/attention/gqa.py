"""Grouped-query attention (GQA), as Lecture 4 writes it; multi-head (MHA) and multi-query (MQA) attention
are its two extreme cases.

Lecture 4, "Grouped Query Attention (GQA)": h_q query heads, h_kv key/value heads, h_q divisible by h_kv,
and g = h_q / h_kv query heads per key/value head (the size of each group):

    V^{(i)}   = X W_v^{(i)},     i = 1..h_kv
    K^{(i)}   = X W_k^{(i)},     i = 1..h_kv
    Q^{(i,j)} = X W_q^{(i,j)},   i = 1..h_kv, j = 1..g
    X'^{(i,j)} = softmax(Q^{(i,j)} K^{(i)ᵀ} / √d_k + M) V^{(i)}         (query head (i, j) uses K^{(i)}, V^{(i)})
    X' = concat(X'^{(1,1)}, …, X'^{(1,g)}, X'^{(2,1)}, …, X'^{(h_kv,g)}) W_o

h_kv = h_q (g = 1) is multi-head attention (MHA); h_kv = 1 (g = h_q) is multi-query attention (MQA: PaLM,
Falcon). In between, GQA (Llama-2-70B: h_q = 64, h_kv = 8) keeps most of MHA's quality with a KV cache
h_q / h_kv times smaller.

**Head layout** (the one convention of the whole course, the same as Hugging Face's ``repeat_kv`` and
``torch.nn.functional.scaled_dot_product_attention(..., enable_gqa=True)``): with 0-based i and j, query
head (i, j) is head number n = i·g + j of the (B, h_q, T, d) query tensor. So the g *consecutive* query heads
i·g, …, i·g + g − 1 form group i and share key/value head i = n // g. In the weight matrices (the lecture's
orientation, X W), the heads sit side by side in the same order:

    W_q = [W_q^{(1,1)} | … | W_q^{(1,g)} | W_q^{(2,1)} | … | W_q^{(h_kv,g)}]   (d_model, h_q·d_head)
    W_k = [W_k^{(1)} | … | W_k^{(h_kv)}],  W_v likewise                       (d_model, h_kv·d_head)
    W_o                                                                         (h_q·d_head, d_model)

Shapes (nanoGPT's names): B batch, T queries, S keys (S = T without a cache), d = d_head = d_k.
Masks are the lecture's additive M (0 where a query may look at a key, −∞ where it may not), as in
``core.attention``; every function here computes attention with ``core.attention``, never another copy.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .core import additive_mask, attention, causal_mask, merge_heads, split_heads

__all__ = [
    "group_size",
    "repeat_kv",
    "grouped_query_attention",
    "gqa_param_count",
    "kv_cache_bytes_per_token",
    "qkv_heads",
    "grouped_query_attention_layer",
    "repeat_kv_weight",
    "GroupedQueryAttention",
]

Rope = Callable[[Tensor, Tensor], Tensor]          # rope(x (…, T, d), positions) -> rotated x, e.g. apply_rope_halves
Attend = Callable[..., Tensor]                     # attend(q, k, v, mask) -> (B, h_q, T, d_v)


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def group_size(h_q: int, h_kv: int) -> int:
    """g = h_q / h_kv, the number of query heads that share one key/value head.

    Raises ValueError unless h_q and h_kv are positive integers with h_q divisible by h_kv (the lecture's
    assumption).
    """
    _positive_int("h_q (number of query heads)", h_q)
    _positive_int("h_kv (number of key/value heads)", h_kv)
    if h_q % h_kv:
        raise ValueError(f"grouped-query attention needs h_q divisible by h_kv: h_q = {h_q} query heads cannot "
                         f"be split into h_kv = {h_kv} groups of equal size")
    return h_q // h_kv


def repeat_kv(x: Tensor, g: int) -> Tensor:
    """Repeat each key/value head g times, in place of a group: (B, h_kv, S, d) → (B, h_kv·g, S, d).

    Output head n = i·g + j is input head i (j = 0..g−1): [K^{(1)}, …, K^{(1)}, K^{(2)}, …] with each head
    repeated g times *consecutively* (``torch.repeat_interleave(x, g, dim=1)``, Hugging Face's ``repeat_kv``),
    not the whole stack tiled g times (``x.repeat(1, g, 1, 1)``). After it, GQA is plain multi-head
    attention with h_q heads.
    Inputs: x: (B, h_kv, S, d) (any tensor with at least 3 dims: (..., h_kv, S, d)); g ≥ 1.
    Returns: (B, h_kv·g, S, d), same dtype and device (a copy when g > 1).
    """
    _positive_int("g (query heads per key/value head)", g)
    if not isinstance(x, Tensor) or x.dim() < 3:
        raise ValueError(f"x must be a tensor of shape (B, h_kv, S, d), got {getattr(x, 'shape', type(x).__name__)}")
    *lead, h_kv, S, d = x.shape
    expanded = x.unsqueeze(-3).expand(*lead, h_kv, g, S, d)     # (B, h_kv, g, S, d): a view, nothing copied
    return expanded.reshape(*lead, h_kv * g, S, d)              # (B, h_kv·g, S, d): head i·g + j = head i


def _grouped_mask(mask: Tensor, B: int, h_q: int, h_kv: int, T: int, S: int) -> Tensor:
    """An additive (or boolean 'may attend') mask broadcastable to (B, h_q, T, S) → the same mask laid out
    for the folded scores (B or 1, h_kv or 1, g·T, S), whose row j·T + t of group i is query t of head i·g + j."""
    if mask.dtype == torch.bool:
        mask = additive_mask(mask)
    try:
        torch.broadcast_shapes(mask.shape, (B, h_q, T, S))
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, h_q, T, S) = "
                         f"{(B, h_q, T, S)}") from None
    g = h_q // h_kv
    m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))   # (b, h, t, s), each 1 or full
    b = m.shape[0]
    if m.shape[1] == 1:                                             # the same mask for every head
        return m.expand(b, 1, T, S).repeat(1, 1, g, 1)              # (b, 1, g·T, S): row j·T + t = row t
    return m.expand(b, h_q, T, S).reshape(b, h_kv, g * T, S)        # (b, h_kv, g·T, S): head i·g + j's rows


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """The lecture's GQA: query head (i, j) attends with K^{(i)}, V^{(i)}, without copying K and V g times.

        X'^{(i,j)} = softmax(Q^{(i,j)} K^{(i)ᵀ} / √d_k + M) V^{(i)}

    Query head n = i·g + j (0-based) belongs to group i = n // g. The g query heads of a group are folded
    into the rows of one matrix, q → (B, h_kv, g·T, d), so that each K^{(i)}, V^{(i)} is read once per group
    (the trick that makes GQA/MQA decoding cheap); the result is unfolded back to (B, h_q, T, d_v).
    Inputs:
      q: (B, h_q, T, d_k);  k: (B, h_kv, S, d_k);  v: (B, h_kv, S, d_v);  h_q divisible by h_kv.
      mask: None, or the additive M (0 / −∞) broadcastable to (B, h_q, T, S): (T, S) such as
        ``causal_mask(T, S)``, (B, 1, T, S) (e.g. padding), or one per head (B, h_q, T, S). A boolean mask
        (True = may attend, as in torch's SDPA) is accepted too.
    Returns: (B, h_q, T, d_v) in q's dtype (computed in float32 at least, by ``core.attention``).
    With h_kv = h_q this is multi-head attention; with h_kv = 1, multi-query attention.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, heads, length, d), got {getattr(t, 'shape', type(t).__name__)}")
    B, h_q, T, d = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"q, k, v must have the same batch size, got {B}, {k.shape[0]}, {v.shape[0]}")
    if k.shape[-1] != d:
        raise ValueError(f"q and k must have the same head dimension d_k, got {d} and {k.shape[-1]}")
    if k.shape[1:3] != v.shape[1:3]:
        raise ValueError(f"k and v must have the same heads and length, got {tuple(k.shape)} and {tuple(v.shape)}")
    h_kv, S = k.shape[1], k.shape[2]
    g = group_size(h_q, h_kv)
    q_folded = q.reshape(B, h_kv, g * T, d)                 # (B, h_kv, g·T, d): rows j·T + t = Q^{(i,j)}[t]
    M = None if mask is None else _grouped_mask(mask, B, h_q, h_kv, T, S)   # (b, h_kv or 1, g·T, S)
    out = attention(q_folded, k, v, M)                      # (B, h_kv, g·T, d_v): X'^{(i,j)} stacked by j
    return out.reshape(B, h_q, T, v.shape[-1])              # (B, h_q, T, d_v): head i·g + j


def gqa_param_count(d_model: int, h_q: int, h_kv: int, d_head: int) -> int:
    """Number of parameters of one GQA layer's projections W_q, W_k, W_v, W_o (no biases, as in Llama).

    W_q: d_model × h_q·d_head, W_k and W_v: d_model × h_kv·d_head each, W_o: h_q·d_head × d_model, so
        params = 2·d_model·h_q·d_head + 2·d_model·h_kv·d_head.
    Llama-2-70B (d_model 8192, h_q 64, h_kv 8, d_head 128): 150,994,944 per layer, against 268,435,456
    for MHA (h_kv = 64). Raises ValueError unless h_q is divisible by h_kv.
    """
    _positive_int("d_model", d_model)
    _positive_int("d_head", d_head)
    group_size(h_q, h_kv)
    return 2 * d_model * h_q * d_head + 2 * d_model * h_kv * d_head


def kv_cache_bytes_per_token(layers: int, h_kv: int, d_head: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the KV cache holds per token: one key and one value vector per layer and key/value head,

        2 · layers · h_kv · d_head · bytes per element.

    Only h_kv counts: query heads are never cached, so GQA divides the cache of MHA by g = h_q / h_kv.
    Llama-2-70B in bfloat16 (80 layers, h_kv 8, d_head 128): 327,680 bytes (320 KiB) per token; with MHA
    (h_kv 64) it would be 2.5 MiB. Multiply by the tokens in the cache (batch × context) for the total.
    """
    _positive_int("layers", layers)
    _positive_int("h_kv", h_kv)
    _positive_int("d_head", d_head)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
    return 2 * layers * h_kv * d_head * dtype.itemsize


# ---------------------------------------------------------------------------------------------------------
# A GQA layer: projections, optional RoPE and KV cache, attention
# ---------------------------------------------------------------------------------------------------------

def qkv_heads(X: Tensor, W_q: Tensor, W_k: Tensor, W_v: Tensor, h_q: int, h_kv: int) -> tuple[Tensor, Tensor, Tensor]:
    """The lecture's projections, split into heads: Q^{(i,j)} = X W_q^{(i,j)}, K^{(i)} = X W_k^{(i)}, V^{(i)} = X W_v^{(i)}.

    Inputs: X (B, T, d_model); W_q (d_model, h_q·d_head); W_k, W_v (d_model, h_kv·d_head).
    Returns: Q (B, h_q, T, d_head) with head i·g + j = Q^{(i,j)}; K, V (B, h_kv, T, d_head).
    """
    group_size(h_q, h_kv)
    if W_q.shape[-1] % h_q or W_k.shape[-1] != W_v.shape[-1] or W_k.shape[-1] * h_q != W_q.shape[-1] * h_kv:
        raise ValueError(f"W_q {tuple(W_q.shape)}, W_k {tuple(W_k.shape)}, W_v {tuple(W_v.shape)} do not hold "
                         f"h_q = {h_q} and h_kv = {h_kv} heads of one size d_head")
    Q = split_heads(X @ W_q, h_q)              # (B, h_q, T, d_head)
    K = split_heads(X @ W_k, h_kv)             # (B, h_kv, T, d_head)
    V = split_heads(X @ W_v, h_kv)             # (B, h_kv, T, d_head)
    return Q, K, V


def grouped_query_attention_layer(X: Tensor, W_q: Tensor, W_k: Tensor, W_v: Tensor, W_o: Tensor, h_q: int,
                                  h_kv: int, M: Tensor | None = None, *, rope: Rope | None = None,
                                  positions: Tensor | None = None, attend: Attend | None = None) -> Tensor:
    """A whole GQA layer, the grouped counterpart of ``core.multi_head_attention``.

    Inputs:
      X: (B, T, d_model);  W_q: (d_model, h_q·d_head);  W_k, W_v: (d_model, h_kv·d_head);
      W_o: (h_q·d_head, d_model);  M: additive mask, e.g. ``causal_mask(T)`` (None: no mask);
      rope: optional ``rope(x, positions)`` applied to Q and K (e.g. ``rope.apply_rope_halves``), with
        ``positions`` (default ``arange(T)``);
      attend: the GQA kernel ``attend(q, k, v, mask)`` (default ``grouped_query_attention``).
    Returns: concat(X'^{(1,1)}, …, X'^{(h_kv,g)}) W_o, shape (B, T, d_model).
    """
    attend = grouped_query_attention if attend is None else attend
    Q, K, V = qkv_heads(X, W_q, W_k, W_v, h_q, h_kv)              # (B, h_q, T, d), (B, h_kv, T, d) ×2
    if rope is not None:
        positions = torch.arange(X.shape[1], device=X.device) if positions is None else positions
        Q, K = rope(Q, positions), rope(K, positions)
    return merge_heads(attend(Q, K, V, M)) @ W_o                   # (B, T, d_model)


def repeat_kv_weight(W: Tensor, h_kv: int, g: int, repeat: Callable[[Tensor, int], Tensor] = repeat_kv) -> Tensor:
    """W_k or W_v of GQA → the matrix of the equivalent MHA: each head's block of columns repeated g times.

    (d_model, h_kv·d_head) → (d_model, h_kv·g·d_head) with block n = i·g + j equal to W^{(i)}. GQA with
    (W_q, W_k, W_v, W_o) computes exactly MHA with (W_q, repeat_kv_weight(W_k), repeat_kv_weight(W_v), W_o):
    repeating K/V heads is repeating the columns that produce them. ``repeat`` is the head repeater to use
    (e.g. a student's ``repeat_kv``); it sees the blocks as a (1, h_kv, d_model, d_head) tensor.
    """
    d_model, width = W.shape
    if width % h_kv:
        raise ValueError(f"W has {width} columns, not a multiple of h_kv = {h_kv}")
    blocks = W.reshape(d_model, h_kv, width // h_kv).permute(1, 0, 2)[None]   # (1, h_kv, d_model, d_head)
    repeated = repeat(blocks, g)[0]                                            # (h_kv·g, d_model, d_head)
    return repeated.permute(1, 0, 2).reshape(d_model, h_kv * g * (width // h_kv))


class GroupedQueryAttention(nn.Module):
    """A GQA layer with parameters W_q, W_k, W_v, W_o in the lecture's orientation (Y = X W, no biases).

    ``GroupedQueryAttention(d_model, h_q, h_kv)`` is MHA when h_kv = h_q and MQA when h_kv = 1.
    Args:
      d_model: model width;  h_q, h_kv: query and key/value heads (h_q divisible by h_kv, else ValueError);
      d_head: per-head size (default d_model // h_q);
      causal: with no explicit mask, use ``causal_mask(T, S)`` (the last T of S positions); default True;
      rope: optional ``rope(x, positions)`` applied to Q and K with explicit absolute positions (e.g.
        ``course_lib.attention.rope.apply_rope_halves``);
      attend: the GQA kernel ``attend(q, k, v, mask)``, default ``grouped_query_attention`` (a notebook
        passes the student's function here).
    Parameters: W_q (d_model, h_q·d_head) with head i·g + j = W_q^{(i,j)}; W_k, W_v (d_model, h_kv·d_head);
    W_o (h_q·d_head, d_model); ``sum(p.numel() for p in m.parameters()) == gqa_param_count(...)``.
    """

    def __init__(self, d_model: int, h_q: int, h_kv: int, d_head: int | None = None, *, causal: bool = True,
                 rope: Rope | None = None, attend: Attend | None = None, device=None, dtype=None):
        super().__init__()
        self.g = group_size(h_q, h_kv)
        _positive_int("d_model", d_model)
        if d_head is None:
            if d_model % h_q:
                raise ValueError(f"d_model = {d_model} is not divisible by h_q = {h_q}: pass d_head explicitly")
            d_head = d_model // h_q
        self.d_model, self.h_q, self.h_kv, self.d_head = d_model, h_q, h_kv, _positive_int("d_head", d_head)
        self.causal, self.rope = causal, rope
        self.attend = grouped_query_attention if attend is None else attend
        kw = dict(device=device, dtype=dtype)
        self.W_q = nn.Parameter(torch.empty(d_model, h_q * d_head, **kw))
        self.W_k = nn.Parameter(torch.empty(d_model, h_kv * d_head, **kw))
        self.W_v = nn.Parameter(torch.empty(d_model, h_kv * d_head, **kw))
        self.W_o = nn.Parameter(torch.empty(h_q * d_head, d_model, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/√fan_in, the scale of ``nn.Linear``'s default initialisation."""
        for W in (self.W_q, self.W_k, self.W_v, self.W_o):
            bound = W.shape[0] ** -0.5
            nn.init.uniform_(W, -bound, bound)

    def forward(self, X: Tensor, mask: Tensor | None = None, *, positions: Tensor | None = None,
                past_kv: tuple[Tensor, Tensor] | None = None, use_cache: bool = False):
        """X (B, T, d_model) → (B, T, d_model); with ``use_cache=True``, (output, (K, V)).

        mask: additive M broadcastable to (B, h_q, T, S); None means ``causal_mask(T, S)`` when ``causal``
          (no mask otherwise). S = T plus the cached length.
        positions: absolute positions for ``rope`` (default: cached length + arange(T)).
        past_kv: (K, V) of earlier tokens, each (B, h_kv, S_past, d_head), keys already rotated by RoPE.
        use_cache: also return the new (K, V), each (B, h_kv, S, d_head): the KV cache has h_kv heads, not h_q.
        """
        B, T, _ = X.shape
        S_past = 0 if past_kv is None else past_kv[0].shape[-2]
        Q, K, V = qkv_heads(X, self.W_q, self.W_k, self.W_v, self.h_q, self.h_kv)   # (B, h_q|h_kv, T, d_head)
        if self.rope is not None:
            if positions is None:
                positions = S_past + torch.arange(T, device=X.device)               # positions continue after the cache
            Q, K = self.rope(Q, positions), self.rope(K, positions)
        if past_kv is not None:
            K = torch.cat((past_kv[0], K), dim=-2)                                  # (B, h_kv, S, d_head)
            V = torch.cat((past_kv[1], V), dim=-2)
        if mask is None and self.causal:
            mask = causal_mask(T, K.shape[-2], device=X.device)                     # (T, S)
        out = merge_heads(self.attend(Q, K, V, mask)) @ self.W_o                     # (B, T, d_model)
        return (out, (K, V)) if use_cache else out

    def extra_repr(self) -> str:
        kind = "MHA" if self.h_kv == self.h_q else "MQA" if self.h_kv == 1 else "GQA"
        return (f"{kind}: d_model={self.d_model}, h_q={self.h_q}, h_kv={self.h_kv}, g={self.g}, "
                f"d_head={self.d_head}, causal={self.causal}, rope={getattr(self.rope, '__name__', self.rope)}")


def __getattr__(name: str):
    """``gqa.plot_head_groups`` is kept for notebooks released before ``course_lib.attention.plots`` held
    the figures; it is looked up on first use, so importing this module does not import matplotlib."""
    if name == "plot_head_groups":
        from .plots import plot_head_groups
        return plot_head_groups
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
