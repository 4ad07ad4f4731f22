"""A tiny modern Transformer language model (Llama/Mistral-style), in one file, top to bottom.

Lecture 4, "Modern Transformer Models", lists what changed since GPT-3:

    Llama-1:  RMSNorm on inputs instead of LayerNorm on outputs; SwiGLU instead of ReLU; RoPE
    PaLM:     SwiGLU; multi-query attention (MQA); RoPE; shared input-output embeddings
    Falcon:   GQA / MQA; RoPE; AdamW with z-loss and weight decay
    Llama-2:  grouped-query attention (GQA)
    Mistral:  sliding-window attention (W = 4096) and a rolling buffer cache; Mixtral: mixture of experts

Every choice is a field of ``GPTConfig`` (``gpt2_config()`` and ``modern_config()`` are the two ends):

    norm            "layernorm" | "rmsnorm"     norm_position  "post" (on the outputs) | "pre" (on the inputs)
    mlp             "relu" | "gelu" | "swiglu" | "moe" (top-k mixture of SwiGLU experts, Mixtral)
    positions       "learned" (absolute, added to the token embedding) | "rope" (rotary, on q and k)
    n_kv_head       h_kv: = n_head (MHA), 1 (MQA), in between (GQA)
    window          None (full causal attention) | the lecture's w (sliding window of ½w+1 tokens)
    tie_embeddings  the output layer reuses the token-embedding matrix

The pieces a student writes in the capstone notebook are small pure functions, and the model takes them
as arguments (``GPT(config, rms_norm=my_rms_norm, swiglu=my_swiglu, routing=my_topk_routing)``):

    rms_norm(x, weight, eps)            RMSNorm(x) = x / sqrt(mean(x²) + ε) ⊙ g            (Zhang & Sennrich 2019)
    swiglu(x, W_gate, W_up, W_down)     (Swish(x W_gate) ⊙ x W_up) W_down                   (Shazeer 2020)
    topk_routing(router_logits, k)      top-k experts and softmax weights over them          (Mixtral, 2024)

Attention, RoPE and the caches are the course's own (``course_lib.attention``): the attention layer *is* a
``gqa.GroupedQueryAttention`` (W_q, W_k, W_v, W_o in the lecture's orientation, ``qkv_heads``,
``grouped_query_attention`` on ``core.attention``) with ``rope.apply_rope_pairs``; decoding appends to a
preallocated ``kv_cache.KVCache``, or, with a window, to a rolling buffer of W = ½w + 1 slots
(``sliding_window.rolling_buffer_slots``: position i in slot i mod W; masks from
``sliding_window.sliding_window_allowed``). Only the rolling buffer's *storage* is here (``RollingKVCache``):
``sliding_window.RollingBufferCache`` attends itself and needs as many key heads as query heads, this one
keeps h_kv heads for every layer and lets grouped-query attention read them.

Also: ``with_params`` (the MLP width for a parameter budget) and ``time_per_token`` (decoding timings).

Shapes (nanoGPT's names): B batch, T tokens, C = d_model, V vocabulary, h_q / h_kv heads, d head size,
S keys, E experts, N = B·T tokens flattened, F = d_ff hidden width.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from ..attention.core import additive_mask, causal_mask, merge_heads
from ..attention.gqa import GroupedQueryAttention, qkv_heads
from ..attention.kv_cache import KVCache
from ..attention.rope import apply_rope_pairs
from ..attention.sliding_window import rolling_buffer_slots, sliding_window_allowed

__all__ = ["GPTConfig", "gpt2_config", "modern_config", "rms_norm", "swiglu", "topk_routing", "RMSNorm", "MLP",
           "SwiGLU", "MoE", "CausalSelfAttention", "Block", "RollingKVCache", "GPT", "sample_next", "swiglu_width", "with_params", "time_per_token"]


# ---------------------------------------------------------------------------------------------------------
# The configuration: one field per choice
# ---------------------------------------------------------------------------------------------------------
NORMS, NORM_POSITIONS, MLPS, POSITIONS = ("layernorm", "rmsnorm"), ("pre", "post"), ("relu", "gelu", "swiglu", "moe"), \
    ("learned", "rope")


def swiglu_width(d_model: int, multiple: int = 8) -> int:
    """The SwiGLU hidden width with the parameters of a 4·d_model ReLU/GELU MLP: 3·C·F = 2·C·4C ⇒ F = ⅔·4C,
    rounded up to a multiple of ``multiple`` (Llama rounds ⅔·4C up to a multiple of 256)."""
    return multiple * math.ceil(2 * 4 * d_model / 3 / multiple)


@dataclass
class GPTConfig:
    vocab_size: int = 128
    block_size: int = 128            # longest sequence the model is trained on; learned positions stop here
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4                  # h_q query heads
    n_kv_head: int | None = None     # h_kv key/value heads: None or n_head = MHA, 1 = MQA, in between GQA
    d_ff: int | None = None          # MLP hidden width (per expert): None = 4·d_model (ReLU/GELU), ⅔ of it (SwiGLU)
    norm: str = "rmsnorm"            # "layernorm" (mean and variance, gain and bias) | "rmsnorm" (RMS, gain)
    norm_position: str = "pre"       # "pre": x + f(norm(x)) | "post": norm(x + f(x)) (the original Transformer)
    norm_eps: float = 1e-5
    mlp: str = "swiglu"              # "relu" | "gelu" | "swiglu" | "moe"
    n_experts: int = 4               # mlp="moe": E SwiGLU experts ...
    top_k: int = 2                   # ... of which each token uses k
    positions: str = "rope"          # "learned" absolute embeddings | "rope" rotary embeddings
    rope_base: float = 10000.0
    window: int | None = None        # None: full causal attention; w (even): the lecture's window of ½w+1 tokens
    tie_embeddings: bool = True      # output layer = token-embedding matrix (one V × C matrix, not two)
    bias: bool = False               # biases in the ReLU/GELU MLP (GPT-2 has them; Llama has none)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "d_model", "n_head", "n_experts", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {v!r}")
        for name, allowed in (("norm", NORMS), ("norm_position", NORM_POSITIONS), ("mlp", MLPS),
                              ("positions", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_model % self.n_head:
            raise ValueError(f"d_model = {self.d_model} does not split into n_head = {self.n_head} heads")
        if self.positions == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"RoPE needs an even head size, got d_model / n_head = {self.d_model // self.n_head}")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 2 or self.window % 2):
            raise ValueError(f"window must be None or the lecture's even w >= 2 (½w+1 tokens), got {self.window!r}")
        if self.mlp == "moe" and self.top_k > self.n_experts:
            raise ValueError(f"top_k = {self.top_k} is more than n_experts = {self.n_experts}")
        if self.d_ff is None:
            self.d_ff = swiglu_width(self.d_model) if self.mlp in ("swiglu", "moe") else 4 * self.d_model

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head


def gpt2_config(**overrides) -> GPTConfig:
    """GPT-2's choices: LayerNorm (GPT-2 already puts it on the sub-layers' inputs; ``norm_position="post"``
    gives the original Transformer's), GELU MLP with biases, learned absolute positions, multi-head
    attention, tied embeddings."""
    return GPTConfig(**{**dict(norm="layernorm", norm_position="pre", mlp="gelu", positions="learned",
                               n_kv_head=None, bias=True, tie_embeddings=True), **overrides})


def modern_config(**overrides) -> GPTConfig:
    """The modern recipe: RMSNorm on the inputs, SwiGLU, RoPE, grouped-query attention (h_kv = h_q / 2),
    tied embeddings, no biases (add ``window=w`` for Mistral, ``mlp="moe"`` for Mixtral)."""
    n_head = overrides.get("n_head", GPTConfig.n_head)
    return GPTConfig(**{**dict(norm="rmsnorm", norm_position="pre", mlp="swiglu", positions="rope",
                               n_kv_head=max(1, n_head // 2), bias=False, tie_embeddings=True), **overrides})


# ---------------------------------------------------------------------------------------------------------
# The graded pieces, as pure functions (the notebook passes the student's versions to the model)
# ---------------------------------------------------------------------------------------------------------
def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """RMSNorm (Zhang & Sennrich 2019; Llama): divide by the root mean square, no mean subtracted, no bias.

        RMSNorm(x) = x / sqrt(mean_i(x_i²) + ε) ⊙ g          (mean over the last dimension, the features)

    Inputs:
      x: (..., C) activations; weight: (C,) the learned gain g; eps: ε > 0, keeps a zero vector finite.
    Returns: tensor like x (shape, dtype, device). Computed in float32 at least (squares of bfloat16
    values lose too much), returned in x's dtype.
    """
    dt = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dt)                                                    # (..., C)
    rms = torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)     # (..., 1): sqrt(mean(x²) + ε)
    return (xf / rms * weight.to(dt)).to(x.dtype)                    # (..., C)


def swiglu(x: Tensor, W_gate: Tensor, W_up: Tensor, W_down: Tensor) -> Tensor:
    """The SwiGLU feed-forward layer (Shazeer 2020, "GLU Variants Improve Transformer"; PaLM, Llama):

        FFN_SwiGLU(x) = (Swish(x W_gate) ⊙ x W_up) W_down,     Swish(z) = z · σ(z)   (= SiLU)

    Shazeer writes (Swish₁(xW) ⊗ xV) W₂: W = W_gate, V = W_up, W₂ = W_down. No biases.
    Inputs:
      x: (..., C);  W_gate, W_up: (C, F);  W_down: (F, C)   (the lecture's orientation, y = x W).
    Returns: (..., C) in x's dtype (computed in float32 at least).
    """
    dt = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dt)
    gate = xf @ W_gate.to(dt)                                        # (..., F)
    up = xf @ W_up.to(dt)                                            # (..., F)
    return ((gate * torch.sigmoid(gate) * up) @ W_down.to(dt)).to(x.dtype)   # (..., C)


def topk_routing(router_logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mixtral's router (Jiang et al. 2024): each token goes to the k experts with the largest logits, and
    their outputs are mixed with the softmax of those k logits,

        y = Σ_{i ∈ TopK(x W_g)} softmax(TopK(x W_g))_i · E_i(x).

    Inputs:
      router_logits: (..., E), the scores x W_g of the E experts for each token;  k: 1 ≤ k ≤ E.
    Returns: (weights, indices), both (..., k): ``indices`` (int64) the chosen experts, by decreasing logit;
      ``weights`` the softmax over the k chosen logits (each row sums to 1), computed in float32 at least
      and returned in the logits' dtype. (Softmax over all E, keep the top k and renormalise: the same.)
    """
    if not isinstance(k, int) or not 1 <= k <= router_logits.shape[-1]:
        raise ValueError(f"k must be an int in 1..{router_logits.shape[-1]} (the number of experts), got {k!r}")
    top, indices = torch.topk(router_logits, k, dim=-1)             # (..., k), by decreasing logit
    dt = torch.promote_types(router_logits.dtype, torch.float32)
    weights = torch.softmax(top.to(dt), dim=-1).to(router_logits.dtype)   # (..., k), rows sum to 1
    return weights, indices


# ---------------------------------------------------------------------------------------------------------
# Modules around them
# ---------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """RMSNorm with a learned gain g (C,), initialised to 1; ``fn(x, weight, eps)`` computes it."""

    def __init__(self, d_model: int, eps: float = 1e-5, fn: Callable = rms_norm):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps, self.fn = eps, fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, self.weight, self.eps)                     # (..., C)


class MLP(nn.Module):
    """GPT's feed-forward layer: W_2 φ(W_1 x + b_1) + b_2 with φ = ReLU (original Transformer) or GELU (GPT-2)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))                       # (B, T, C)


class SwiGLU(nn.Module):
    """SwiGLU with parameters W_gate, W_up (C, F) and W_down (F, C); ``fn(x, W_gate, W_up, W_down)``."""

    def __init__(self, d_model: int, d_ff: int, fn: Callable = swiglu):
        super().__init__()
        self.W_gate = nn.Parameter(torch.empty(d_model, d_ff))
        self.W_up = nn.Parameter(torch.empty(d_model, d_ff))
        self.W_down = nn.Parameter(torch.empty(d_ff, d_model))
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, self.W_gate, self.W_up, self.W_down)      # (B, T, C)


class MoE(nn.Module):
    """A sparse mixture of E SwiGLU experts with a top-k router (Mixtral: E = 8, k = 2).

    Each token's router logits are x W_g (E,); ``routing(logits, k)`` picks k experts and their weights;
    the output is Σ_j weight_j · expert_{index_j}(x). Each expert only sees the tokens routed to it (the
    loop of mistral-inference's ``MoeLayer``), so a token costs k experts' FLOPs, not E.

    ``aux_loss`` (after a forward pass) is the Switch Transformer's load-balancing loss
    E · Σ_e f_e · P_e (f_e: share of the token-to-expert assignments that went to expert e, P_e: mean
    router probability of e); it is 1 when the load is uniform. ``load`` holds f (E,).
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, k: int, routing: Callable = topk_routing,
                 expert: Callable = swiglu):
        super().__init__()
        self.W_g = nn.Parameter(torch.empty(d_model, n_experts))            # the router
        self.W_gate = nn.Parameter(torch.empty(n_experts, d_model, d_ff))   # expert e: W_gate[e], W_up[e], W_down[e]
        self.W_up = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.W_down = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.k, self.routing, self.expert = k, routing, expert
        self.aux_loss: Tensor | None = None
        self.load: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        xf = x.reshape(B * T, C)                                            # (N, C)
        logits = xf @ self.W_g                                              # (N, E)
        weights, idx = self.routing(logits, self.k)                         # (N, k), (N, k)
        out = torch.zeros_like(xf)                                          # (N, C)
        for e in range(self.W_g.shape[1]):
            token, slot = torch.where(idx == e)                             # the tokens routed to expert e
            if token.numel():
                y = self.expert(xf[token], self.W_gate[e], self.W_up[e], self.W_down[e])   # (n_e, C)
                out = out.index_add(0, token, weights[token, slot, None] * y)
        E = self.W_g.shape[1]
        f = torch.bincount(idx.flatten(), minlength=E).to(xf.dtype) / idx.numel()      # (E,) share of assignments
        P = torch.softmax(logits.float(), dim=-1).mean(dim=0)                          # (E,) mean router prob.
        self.load, self.aux_loss = f.detach(), E * (f.float() * P).sum()
        return out.view(B, T, C)


class CausalSelfAttention(GroupedQueryAttention):
    """The course's ``GroupedQueryAttention`` (W_q, W_k, W_v, W_o; MHA / GQA / MQA; RoPE) with a sliding
    window and the two decoding caches.

    forward(x (B, T, C), positions (T,), cache) → (B, T, C):
      no cache:          attend over the T tokens with the causal mask, or the lecture's sliding-window
                         mask (query t sees t − ½w .. t);
      ``KVCache``:       append the new (RoPE-rotated) keys and values in place, attend over all S cached
                         ones (causal / window mask for the last T of S positions);
      ``RollingKVCache``: Mistral's rolling buffer (prompt at once, then one token at a time).
    """

    def __init__(self, config: GPTConfig, layer: int, attend: Callable | None = None):
        rope = partial(apply_rope_pairs, base=config.rope_base) if config.positions == "rope" else None
        super().__init__(config.d_model, config.n_head, config.n_kv_head, rope=rope, attend=attend)
        self.layer, self.window = layer, config.window

    def forward(self, x: Tensor, positions: Tensor, cache: KVCache | RollingKVCache | None = None) -> Tensor:
        T = x.shape[1]
        q, k, v = qkv_heads(x, self.W_q, self.W_k, self.W_v, self.h_q, self.h_kv)  # (B, h_q, T, d), (B, h_kv, T, d) ×2
        if self.rope is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)    # q~_t = R_{Θ,t} q_t, k~_j = R_{Θ,j} k_j
        if isinstance(cache, RollingKVCache):
            y = cache.attend(self.layer, q, k, v, self.attend)           # (B, h_q, T, d)
        else:
            if cache is not None:
                k, v = cache.append(self.layer, k, v)                    # (B, h_kv, S, d) views, S = cached + T
            S = k.shape[2]
            M = (causal_mask(T, S, device=x.device) if self.window is None   # (T, S): 0 / −∞
                 else additive_mask(sliding_window_allowed(T, self.window, S, device=x.device)))
            y = self.attend(q, k, v, M)                                  # (B, h_q, T, d)
        return merge_heads(y) @ self.W_o                                 # (B, T, C)


class RollingKVCache:
    """Mistral's rolling buffer cache for every layer, with h_kv key/value heads (GQA-ready).

    W = ½w + 1 slots per layer hold exactly what a new query may still see (the lecture's window of ½w+1
    tokens): position i goes to slot i mod W (``rolling_buffer_slots``) and overwrites position i − W, which
    has just left the window. Buffers (n_layers, B, h_kv, W, d) are allocated once: memory does not grow
    with the sequence. As in ``sliding_window.RollingBufferCache`` the prompt comes first, in one piece
    (sliding-window attention over it, then its last W keys/values are kept), then one token at a time;
    a decoding query attends to the filled slots in whatever order they sit (softmax does not care).
    (``RollingBufferCache`` itself needs queries and keys with the same number of heads, hence this class.)
    """

    def __init__(self, n_layers: int, batch: int, h_kv: int, d_head: int, w: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        if not isinstance(w, int) or w < 2 or w % 2:
            raise ValueError(f"RollingKVCache: w must be the lecture's even window parameter, got {w!r}")
        self.w, self.W = w, w // 2 + 1
        shape = (n_layers, batch, h_kv, self.W, d_head)
        self.k = torch.zeros(shape, dtype=dtype, device=device)      # (L, B, h_kv, W, d)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._lengths = [0] * n_layers

    @property
    def length(self) -> int:
        """Tokens seen by every layer: the absolute position of the next token."""
        return min(self._lengths)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, attend: Callable) -> Tensor:
        """Store the new keys/values of ``layer`` and return the attention output (B, h_q, T, d).

        q: (B, h_q, T, d); k, v: (B, h_kv, T, d) at positions n..n+T−1 (n tokens seen so far);
        T ≥ 1 when n = 0 (the prompt), T = 1 afterwards. ``attend(q, k, v, M)``: grouped-query attention."""
        n, T = self._lengths[layer], k.shape[2]
        K, V = self.k[layer], self.v[layer]                          # (B, h_kv, W, d) views
        if n == 0:                                                   # the prompt: sliding window over it
            M = additive_mask(sliding_window_allowed(T, self.w, device=q.device))   # (T, T)
            y = attend(q, k, v, M)
            keep = torch.arange(max(0, T - self.W), T, device=k.device)             # its last W positions
            slots = rolling_buffer_slots(keep, self.W)                              # i mod W
            K.index_copy_(2, slots, k.index_select(2, keep))
            V.index_copy_(2, slots, v.index_select(2, keep))
        elif T == 1:                                                 # one new token at position n
            slot = n % self.W
            K[:, :, slot] = k[:, :, 0]                               # overwrites position n − W
            V[:, :, slot] = v[:, :, 0]
            filled = min(n + 1, self.W)                              # positions max(0, n−W+1) .. n
            y = attend(q, K[:, :, :filled], V[:, :, :filled], None)  # (B, h_q, 1, d)
        else:
            raise ValueError("the rolling buffer takes the prompt in one piece, then one token at a time")
        self._lengths[layer] = n + T
        return y

    def __repr__(self) -> str:
        L, B, h, W, d = self.k.shape
        return f"RollingKVCache(layers={L}, batch={B}, h_kv={h}, d_head={d}, W={W} slots, {self.nbytes:,} bytes)"


class Block(nn.Module):
    """One Transformer block: attention then MLP, each with a residual connection and a norm,
    pre-norm x + f(norm(x)) (GPT-2, Llama) or post-norm norm(x + f(x)) (the original Transformer)."""

    def __init__(self, config: GPTConfig, layer: int, fns: dict[str, Callable]):
        super().__init__()
        self.pre = config.norm_position == "pre"
        self.norm1, self.norm2 = _norm(config, fns), _norm(config, fns)
        self.attn = CausalSelfAttention(config, layer, attend=fns.get("attend"))
        if config.mlp == "moe":
            self.mlp = MoE(config.d_model, config.d_ff, config.n_experts, config.top_k, routing=fns["routing"],
                           expert=fns["swiglu"])
        elif config.mlp == "swiglu":
            self.mlp = SwiGLU(config.d_model, config.d_ff, fn=fns["swiglu"])
        else:
            self.mlp = MLP(config.d_model, config.d_ff, config.mlp, bias=config.bias)

    def forward(self, x: Tensor, positions: Tensor, cache=None) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x), positions, cache)          # (B, T, C)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, positions, cache))
        return self.norm2(x + self.mlp(x))


def _norm(config: GPTConfig, fns: dict[str, Callable]) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps, fn=fns["rms_norm"])
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------
class GPT(nn.Module):
    """Decoder-only Transformer LM: token embedding (+ learned positions), n_layer blocks, final norm
    (pre-norm models), output layer (tied to the embedding or not).

    GPT(config, rms_norm=..., swiglu=..., routing=..., attend=...): the functions the layers call (defaults:
    this module's references and ``gqa.grouped_query_attention``); a notebook passes the student's.
    Initialisation as nanoGPT: N(0, 0.02) for matrices and embeddings, N(0, 0.02/√(2·n_layer)) for the
    matrices that write into the residual stream (W_o and the MLP's output), zeros for biases.
    """

    def __init__(self, config: GPTConfig, *, rms_norm: Callable = rms_norm, swiglu: Callable = swiglu,
                 routing: Callable = topk_routing, attend: Callable | None = None):
        super().__init__()
        self.config = config
        fns = dict(rms_norm=rms_norm, swiglu=swiglu, routing=routing, attend=attend)
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)                     # (V, C)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model) if config.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(config, i, fns) for i in range(config.n_layer))
        self.norm_f = _norm(config, fns) if config.norm_position == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)            # weight (V, C)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight          # one matrix: logits = h Eᵀ
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        std, resid = 0.02, 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith("bias"):
                    p.zero_()
                continue                                        # norm gains stay 1
            last = name.rsplit(".", 1)[-1]
            nn.init.normal_(p, 0.0, resid if last in ("W_o", "W_down") or name.endswith("proj.weight") else std)

    # ---- sizes ----
    def num_params(self, active: bool = False) -> int:
        """Parameters (a tied matrix counts once). ``active=True``: those one token uses (MoE: k of E experts)."""
        n = sum(p.numel() for p in self.parameters())
        if active and self.config.mlp == "moe":
            c = self.config
            n -= c.n_layer * (c.n_experts - c.top_k) * 3 * c.d_model * c.d_ff
        return n

    def new_cache(self, batch: int, max_len: int, kind: str = "kv") -> KVCache | RollingKVCache:
        """An empty decoding cache in the dtype and on the device of the parameters: ``"kv"`` a KVCache of
        ``max_len`` tokens, ``"rolling"`` a rolling buffer of ½w+1 slots (needs ``config.window``)."""
        c, p = self.config, self.tok_emb.weight
        if kind == "kv":
            return KVCache(c.n_layer, batch, c.n_kv_head, c.d_head, max_len, dtype=p.dtype, device=p.device)
        if kind == "rolling":
            if c.window is None:
                raise ValueError("a rolling buffer cache needs a sliding window: set GPTConfig.window")
            return RollingKVCache(c.n_layer, batch, c.n_kv_head, c.d_head, c.window, dtype=p.dtype, device=p.device)
        raise ValueError(f"cache kind must be 'kv' or 'rolling', got {kind!r}")

    # ---- forward ----
    def forward(self, idx: Tensor, cache: KVCache | RollingKVCache | None = None) -> Tensor:
        """Logits (B, T, V) for tokens idx (B, T); with a cache, idx continues the cached sequence."""
        if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.is_floating_point():
            raise ValueError(f"idx must be an integer tensor of shape (B, T), got {getattr(idx, 'shape', idx)!r}")
        start, T = (cache.length if cache is not None else 0), idx.shape[1]
        positions = torch.arange(start, start + T, device=idx.device)            # (T,) absolute positions
        x = self.tok_emb(idx)                                                    # (B, T, C)
        if self.pos_emb is not None:
            if start + T > self.config.block_size:
                raise ValueError(f"learned positions stop at block_size = {self.config.block_size}; got "
                                 f"positions up to {start + T - 1} (RoPE has no such limit)")
            x = x + self.pos_emb(positions)                                      # (B, T, C)
        for block in self.blocks:
            x = block(x, positions, cache)                                       # (B, T, C)
        return self.lm_head(self.norm_f(x))                                      # (B, T, V)

    def aux_loss(self) -> Tensor | float:
        """Sum of the MoE layers' load-balancing losses of the last forward pass (0 without MoE)."""
        losses = [b.mlp.aux_loss for b in self.blocks if isinstance(b.mlp, MoE) and b.mlp.aux_loss is not None]
        return torch.stack(losses).sum() if losses else 0.0

    # ---- generation ----
    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, *,
                 use_cache: bool = True, cache_kind: str | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt idx (B, T0); returns (B, T0 + max_new_tokens).

        use_cache=True: the prompt is run once (prefill), then one token per step through the cache
        (``cache_kind``: "rolling" by default when the window is on, else "kv"); False: every step runs the
        whole sequence again (with learned positions, only its last block_size tokens, as nanoGPT; a cache
        then stops at block_size). Both give the same tokens (same logits up to rounding). ``temperature`` = 0
        is greedy decoding; ``top_k`` keeps only the k most likely tokens; ``generator`` seeds the sampling.
        """
        if idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError(f"the prompt must have shape (B, T0) with T0 >= 1, got {tuple(idx.shape)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if max_new_tokens == 0:
            return idx
        learned, block = self.pos_emb is not None, self.config.block_size
        if not use_cache:
            for _ in range(max_new_tokens):
                context = idx[:, -block:] if learned else idx                    # nanoGPT's crop: learned positions
                logits = self(context)[:, -1]                                    # recompute everything (B, V)
                idx = torch.cat((idx, sample_next(logits, temperature, top_k, generator)), dim=1)
            return idx
        if learned and idx.shape[1] + max_new_tokens - 1 > block:
            raise ValueError(f"with learned positions a cache holds at most block_size = {block} tokens: generate "
                             f"with use_cache=False (the context is cropped to the last {block} tokens)")
        kind = cache_kind or ("rolling" if self.config.window is not None else "kv")
        cache = self.new_cache(idx.shape[0], idx.shape[1] + max_new_tokens - 1, kind)
        logits = self(idx, cache)[:, -1]                                         # prefill (B, V)
        out = [idx]
        for i in range(max_new_tokens):
            token = sample_next(logits, temperature, top_k, generator)           # (B, 1)
            out.append(token)
            if i + 1 < max_new_tokens:                                           # the last token is not fed back
                logits = self(token, cache)[:, -1]
        return torch.cat(out, dim=1)


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """The next token (B, 1) from logits (B, V): softmax(logits / temperature) restricted to the top_k most
    likely tokens, sampled with ``generator`` (on the logits' device); temperature 0 picks the argmax."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]   # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)     # (B, 1)


def with_params(config: GPTConfig, n_params: int, multiple: int = 8) -> GPTConfig:
    """``config`` with the MLP width d_ff (a multiple of ``multiple``) that brings the model closest to
    ``n_params`` parameters. The count is linear in d_ff: two models built on the "meta" device (shapes,
    no memory) give the slope."""
    def count(d_ff: int) -> int:
        with torch.device("meta"):
            return GPT(replace(config, d_ff=d_ff)).num_params()
    n1, n2 = count(multiple), count(2 * multiple)
    steps = round((n_params - n1) / (n2 - n1))                 # multiples of ``multiple`` above the first
    return replace(config, d_ff=multiple * (1 + max(0, steps)))


@torch.no_grad()
def time_per_token(model: GPT, prompt: Tensor, n_new: int, cache_kind: str | None = "kv") -> Tensor:
    """Seconds spent on each of ``n_new`` greedy tokens after ``prompt`` (1, T0): ``cache_kind`` "kv" or
    "rolling" decodes through that cache (entry 0 includes the prefill), None recomputes the whole sequence
    at every step. Measured with time.perf_counter (after a CUDA synchronize on a GPU)."""
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new, cache_kind) if cache_kind else None
    idx, feed, times = prompt, prompt, []
    for _ in range(n_new):
        sync()
        start = time.perf_counter()
        logits = model(feed, cache)[:, -1] if cache is not None else model(idx)[:, -1]
        token = logits.argmax(dim=-1, keepdim=True)                               # (B, 1)
        sync()
        times.append(time.perf_counter() - start)
        idx, feed = torch.cat((idx, token), dim=1), token
    return torch.tensor(times, dtype=torch.float64)
