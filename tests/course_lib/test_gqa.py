"""Grouped-query attention (course_lib.attention.gqa) against independent oracles, never against itself.

Oracles:

* PyTorch's ``F.scaled_dot_product_attention(..., enable_gqa=True)`` (torch >= 2.5), causal and masked;
* Hugging Face's ``repeat_kv`` (copied from transformers' Llama code) followed by plain attention written
  here in float64;
* the lecture's equations head by head: a loop over groups i and members j with K^{(i)}, V^{(i)};
* ``torch.nn.MultiheadAttention`` for the layer: MHA directly (h_kv = h_q), and GQA as MHA whose key/value
  weights repeat each head's columns g times;
* numbers worked out by hand for Llama-2-70B and 7B-sized models (parameters, KV-cache bytes).

Then the special cases (MHA, MQA), masks of every broadcastable shape, dtypes, the RoPE hook and the KV
cache of the module, input immutability, error messages, the graded exercises (reference passes, plausible
wrong versions fail) and devices (CUDA cases skipped where absent).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import grading
from course_lib.attention.core import causal_mask
from course_lib.attention.gqa import (GroupedQueryAttention, gqa_param_count, group_size, grouped_query_attention,
                                      grouped_query_attention_layer, kv_cache_bytes_per_token, repeat_kv,
                                      repeat_kv_weight)
from course_lib.attention.rope import apply_rope_halves

pytestmark = pytest.mark.gqa

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
}


def _sdpa_has_enable_gqa() -> bool:
    try:
        x = torch.zeros(1, 2, 1, 2)
        F.scaled_dot_product_attention(x, x[:, :1], x[:, :1], enable_gqa=True)
        return True
    except TypeError:
        return False


needs_enable_gqa = pytest.mark.skipif(not _sdpa_has_enable_gqa(), reason="SDPA's enable_gqa needs torch >= 2.5")

# ---------------------------------------------------------------------------------------------------------
# strategies and helpers
# ---------------------------------------------------------------------------------------------------------
h_kv_st = st.integers(1, 4)
g_st = st.integers(1, 4)
batch = st.integers(1, 3)
seq_len = st.integers(1, 8)
past_len = st.integers(0, 5)
head_dim = st.sampled_from([2, 4, 8, 16])
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def qkv(seed, B, h_q, h_kv, T, S, d, dtype=torch.float64, d_v=None):
    return (randn(seed, B, h_q, T, d, dtype=dtype), randn(seed + 1, B, h_kv, S, d, dtype=dtype),
            randn(seed + 2, B, h_kv, S, d if d_v is None else d_v, dtype=dtype))


def allowed_causal(T: int, S: int) -> torch.Tensor:
    """Boolean (T, S): the last T of S positions, query t sees keys j <= t + S - T (written independently)."""
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)


def random_allowed(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A random boolean 'may attend' mask in which every query sees key 0 (no fully masked row)."""
    g = torch.Generator().manual_seed(seed + 7)
    allowed = torch.rand(shape, generator=g) < 0.6
    allowed[..., 0] = True
    return allowed


def to_additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.where(allowed, 0.0, float("-inf"))


# oracle 2: Hugging Face transformers, models/llama/modeling_llama.py
def hf_repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(batch, num_key_value_heads, seqlen, head_dim) -> (batch, num_attention_heads, seqlen, head_dim)"""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def plain_attention(q, k, v, allowed=None):
    """softmax(q kᵀ/√d + M) v in float64, M from a boolean mask; q, k, v with the same number of heads."""
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.double()


def hf_gqa(q, k, v, allowed=None):
    g = q.shape[1] // k.shape[1]
    return plain_attention(q, hf_repeat_kv(k, g), hf_repeat_kv(v, g), allowed)


# oracle 3: the lecture's equations, group by group
def lecture_gqa(q, k, v, allowed=None):
    """X'^{(i,j)} = softmax(Q^{(i,j)} K^{(i)ᵀ}/√d_k + M) V^{(i)}, with Q^{(i,j)} = q[:, i·g + j]."""
    B, h_q, T, d = q.shape
    h_kv = k.shape[1]
    g = h_q // h_kv
    out = torch.empty(B, h_q, T, v.shape[-1], dtype=torch.float64)
    for i in range(h_kv):
        for j in range(g):
            n = i * g + j
            m = None if allowed is None else allowed.expand(B, h_q, T, k.shape[2])[:, n]
            out[:, n] = plain_attention(q[:, n], k[:, i], v[:, i], m)
    return out


# =========================================================================================================
# repeat_kv
# =========================================================================================================
@given(B=batch, h_kv=h_kv_st, g=g_st, S=st.integers(0, 6), d=head_dim, seed=seeds)
def test_repeat_kv_matches_hf_and_repeat_interleave(B, h_kv, g, S, d, seed):
    x = randn(seed, B, h_kv, S, d)
    out = repeat_kv(x, g)
    assert out.shape == (B, h_kv * g, S, d)
    assert torch.equal(out, hf_repeat_kv(x, g))
    assert torch.equal(out, torch.repeat_interleave(x, g, dim=1))


@pytest.mark.parametrize("h_kv,g", [(1, 1), (1, 8), (2, 3), (8, 8), (4, 2)])
def test_repeat_kv_head_layout_is_i_times_g_plus_j(h_kv, g):
    x = randn(3, 2, h_kv, 5, 4)
    out = repeat_kv(x, g)
    for i in range(h_kv):
        for j in range(g):
            assert torch.equal(out[:, i * g + j], x[:, i]), (i, j)
    if h_kv > 1 and g > 1:                       # not the tiled order [K1, K2, ..., K1, K2, ...]
        assert not torch.equal(out, x.repeat(1, g, 1, 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.int64,
                                   torch.bool])
def test_repeat_kv_any_dtype_and_input_kept(dtype):
    x = (randn(4, 2, 3, 4, 5) > 0).to(dtype)
    before = x.clone()
    out = repeat_kv(x, 3)
    assert out.dtype == dtype and torch.equal(x, before)
    assert torch.equal(out, torch.repeat_interleave(x, 3, dim=1))


def test_repeat_kv_leading_dims_and_errors():
    x = randn(5, 2, 3, 2, 4, 8)                  # (..., h_kv, S, d) with two leading dims
    assert torch.equal(repeat_kv(x, 2), torch.repeat_interleave(x, 2, dim=-3))
    for bad_g in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"g .*positive integer"):
            repeat_kv(randn(0, 1, 2, 3, 4), bad_g)
    with pytest.raises(ValueError, match=r"\(B, h_kv, S, d\)"):
        repeat_kv(torch.zeros(3, 4), 2)


# =========================================================================================================
# grouped_query_attention against SDPA (enable_gqa), HF repeat_kv, and the lecture's loop
# =========================================================================================================
@needs_enable_gqa
@given(B=batch, h_kv=h_kv_st, g=g_st, T=seq_len, d=head_dim, seed=seeds, dtype=float_dtypes)
def test_matches_sdpa_enable_gqa_causal(B, h_kv, g, T, d, seed, dtype):
    q, k, v = qkv(seed, B, h_kv * g, h_kv, T, T, d, dtype)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    got = grouped_query_attention(q, k, v, causal_mask(T))
    assert got.dtype == dtype and got.shape == (B, h_kv * g, T, d)
    torch.testing.assert_close(got, expected, **TOL[dtype])


@needs_enable_gqa
@given(B=batch, h_kv=h_kv_st, g=g_st, T=seq_len, past=past_len, d=head_dim, seed=seeds, dtype=float_dtypes)
def test_matches_sdpa_enable_gqa_after_a_cache(B, h_kv, g, T, past, d, seed, dtype):
    """T new queries after `past` cached keys: SDPA's is_causal aligns top-left, so pass the mask explicitly."""
    S = T + past
    q, k, v = qkv(seed, B, h_kv * g, h_kv, T, S, d, dtype)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed_causal(T, S), enable_gqa=True)
    torch.testing.assert_close(grouped_query_attention(q, k, v, causal_mask(T, S, dtype=dtype)), expected,
                               **TOL[dtype])


MASK_SHAPES = {
    "none": None,
    "(T, S)": lambda B, h_q, T, S: (T, S),
    "(1, T, S)": lambda B, h_q, T, S: (1, T, S),
    "(B, 1, T, S)": lambda B, h_q, T, S: (B, 1, T, S),
    "(B, 1, 1, S)": lambda B, h_q, T, S: (B, 1, 1, S),
    "(h_q, T, S)": lambda B, h_q, T, S: (h_q, T, S),
    "(B, h_q, T, S)": lambda B, h_q, T, S: (B, h_q, T, S),
    "(1, h_q, 1, S)": lambda B, h_q, T, S: (1, h_q, 1, S),
}


@pytest.mark.parametrize("shape", list(MASK_SHAPES))
@pytest.mark.parametrize("kind", ["additive", "bool"])
@settings(max_examples=10)                                   # 16 parametrizations: 160 examples in all
@given(B=batch, h_kv=h_kv_st, g=g_st, T=seq_len, past=past_len, d=head_dim, seed=seeds)
def test_matches_hf_repeat_kv_and_lecture_loop_with_any_mask(shape, kind, B, h_kv, g, T, past, d, seed):
    h_q, S = h_kv * g, T + past
    q, k, v = qkv(seed, B, h_q, h_kv, T, S, d)
    allowed = None if MASK_SHAPES[shape] is None else random_allowed(seed, MASK_SHAPES[shape](B, h_q, T, S))
    mask = None if allowed is None else allowed if kind == "bool" else to_additive(allowed)
    got = grouped_query_attention(q, k, v, mask)
    torch.testing.assert_close(got, hf_gqa(q, k, v, allowed), **TOL[torch.float64])
    torch.testing.assert_close(got, lecture_gqa(q, k, v, allowed), **TOL[torch.float64])


@given(B=batch, h=st.integers(1, 6), T=seq_len, d=head_dim, seed=seeds)
def test_mha_special_case_is_per_head_attention(B, h, T, d, seed):
    """h_kv = h_q (g = 1): head n attends with its own K^{(n)}, V^{(n)}, as multi-head attention."""
    q, k, v = qkv(seed, B, h, h, T, T, d)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)       # no grouping at all
    torch.testing.assert_close(grouped_query_attention(q, k, v, causal_mask(T)), expected, **TOL[torch.float64])


@settings(max_examples=15)                                   # builds modules / loops over heads
@given(B=batch, h_q=st.integers(1, 8), T=seq_len, past=past_len, d=head_dim, seed=seeds)
def test_mqa_special_case_shares_one_key_value_head(B, h_q, T, past, d, seed):
    """h_kv = 1 (g = h_q): every query head attends with the same single K, V."""
    S = T + past
    q, k, v = qkv(seed, B, h_q, 1, T, S, d)
    expected = plain_attention(q, k.expand(B, h_q, S, d), v.expand(B, h_q, S, d), allowed_causal(T, S))
    torch.testing.assert_close(grouped_query_attention(q, k, v, causal_mask(T, S)), expected, **TOL[torch.float64])
    # each head separately, against one head's attention over the shared k, v
    for n in range(h_q):
        torch.testing.assert_close(grouped_query_attention(q[:, n:n + 1], k, v, causal_mask(T, S))[:, 0],
                                   plain_attention(q[:, n], k[:, 0], v[:, 0], allowed_causal(T, S)),
                                   **TOL[torch.float64])


def test_values_of_another_size_and_a_plain_example():
    q, k, v = qkv(9, 2, 6, 3, 4, 5, 8, d_v=3)
    got = grouped_query_attention(q, k, v)
    assert got.shape == (2, 6, 4, 3)
    torch.testing.assert_close(got, hf_gqa(q, k, v), **TOL[torch.float64])
    # a hand-checkable case: one key/value head, two query heads, keys give equal scores -> mean of values
    q = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    k = torch.ones(1, 1, 3, 2, dtype=torch.float64)
    v = torch.tensor([[[[1.0], [2.0], [6.0]]]], dtype=torch.float64)
    torch.testing.assert_close(grouped_query_attention(q, k, v), torch.full((1, 2, 1, 1), 3.0, dtype=torch.float64))


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@given(B=batch, h_kv=h_kv_st, g=g_st, T=seq_len, d=head_dim, seed=seeds)
def test_low_precision_keeps_dtype_and_is_close_to_float64(low, B, h_kv, g, T, d, seed):
    q, k, v = qkv(seed, B, h_kv * g, h_kv, T, T, d, dtype=low)
    got = grouped_query_attention(q, k, v, causal_mask(T))
    assert got.dtype == low
    expected = hf_gqa(q, k, v, allowed_causal(T, T))                  # the same rounded inputs, in float64
    torch.testing.assert_close(got.double(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_inputs_not_modified(dtype):
    q, k, v = qkv(10, 2, 8, 2, 5, 5, 8, dtype)
    M = causal_mask(5)
    before = [t.clone() for t in (q, k, v, M)]
    grouped_query_attention(q, k, v, M)
    for t, b in zip((q, k, v, M), before):
        assert torch.equal(t, b)


def test_non_contiguous_inputs():
    q, k, v = qkv(11, 2, 4, 2, 6, 6, 8)
    qt, kt, vt = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (q, k, v))   # strided views
    qp = q.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)                              # (B, T, h, d) memory
    assert not qt.is_contiguous() and not qp.is_contiguous()
    expected = hf_gqa(q, k, v, allowed_causal(6, 6))
    torch.testing.assert_close(grouped_query_attention(qt, kt, vt, causal_mask(6)), expected, **TOL[torch.float64])
    torch.testing.assert_close(grouped_query_attention(qp, k, v, causal_mask(6)), expected, **TOL[torch.float64])


# =========================================================================================================
# errors
# =========================================================================================================
@pytest.mark.parametrize("h_q,h_kv", [(6, 4), (8, 3), (1, 2), (7, 2)])
def test_h_q_not_divisible_by_h_kv_raises(h_q, h_kv):
    with pytest.raises(ValueError, match=r"divisible by h_kv"):
        group_size(h_q, h_kv)
    with pytest.raises(ValueError, match=r"divisible by h_kv"):
        grouped_query_attention(*qkv(0, 1, h_q, h_kv, 2, 2, 4))
    with pytest.raises(ValueError, match=r"divisible by h_kv"):
        gqa_param_count(64, h_q, h_kv, 8)
    with pytest.raises(ValueError, match=r"divisible by h_kv"):
        GroupedQueryAttention(8 * h_q, h_q, h_kv)


@pytest.mark.parametrize("h_q,h_kv", [(0, 1), (4, 0), (-4, 2), (4.0, 2)])
def test_non_positive_or_non_integer_heads_raise(h_q, h_kv):
    with pytest.raises(ValueError, match=r"positive integer"):
        group_size(h_q, h_kv)


def test_bad_shapes_raise_one_line_errors():
    q, k, v = qkv(0, 2, 4, 2, 3, 5, 8)
    with pytest.raises(ValueError, match=r"q must have shape"):
        grouped_query_attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"same batch size"):
        grouped_query_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"head dimension"):
        grouped_query_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"same heads and length"):
        grouped_query_attention(q, k, v[:, :1])
    with pytest.raises(ValueError, match=r"does not broadcast"):
        grouped_query_attention(q, k, v, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"does not broadcast"):
        grouped_query_attention(q, k, v, torch.zeros(2, 2, 3, 5))          # h_kv heads, not h_q
    with pytest.raises(TypeError, match=r"torch.dtype"):
        kv_cache_bytes_per_token(2, 2, 8, 2)
    with pytest.raises(ValueError, match=r"pass d_head"):
        GroupedQueryAttention(10, 4, 2)


# =========================================================================================================
# parameters and KV-cache bytes: numbers worked out by hand
# =========================================================================================================
def test_param_count_llama2_70b_and_7b():
    # Llama-2-70B: d_model 8192, 64 query heads of 128, 8 kv heads, 80 layers, no biases
    mha, gqa, mqa = (gqa_param_count(8192, 64, h_kv, 128) for h_kv in (64, 8, 1))
    assert mha == 4 * 8192 * 8192 == 268_435_456
    assert gqa == 8192 * 8192 * 2 + 8192 * 1024 * 2 == 150_994_944
    assert mqa == 8192 * 8192 * 2 + 8192 * 128 * 2 == 136_314_880
    assert 80 * gqa == 12_079_595_520                           # ~12.1 B of Llama-2-70B's parameters
    # 7B size (Llama-2-7B is MHA, Mistral 7B GQA with 8 kv heads)
    assert gqa_param_count(4096, 32, 32, 128) == 4 * 4096 ** 2 == 67_108_864
    assert gqa_param_count(4096, 32, 8, 128) == 2 * 4096 ** 2 + 2 * 4096 * 1024 == 41_943_040
    assert isinstance(gqa, int)


@given(h_kv=h_kv_st, g=g_st, d_head=head_dim, d_model=st.integers(1, 64))
def test_param_count_matches_module_parameters(h_kv, g, d_head, d_model):
    m = GroupedQueryAttention(d_model, h_kv * g, h_kv, d_head)
    assert sum(p.numel() for p in m.parameters()) == gqa_param_count(d_model, h_kv * g, h_kv, d_head)


def test_kv_cache_bytes_llama2_70b_and_7b():
    assert kv_cache_bytes_per_token(80, 8, 128, torch.bfloat16) == 327_680           # 320 KiB per token
    assert kv_cache_bytes_per_token(80, 64, 128, torch.bfloat16) == 2_621_440        # 2.5 MiB with MHA
    assert kv_cache_bytes_per_token(80, 1, 128, torch.bfloat16) == 40_960            # 40 KiB with MQA
    assert kv_cache_bytes_per_token(80, 8, 128) == 327_680                           # default bfloat16
    assert kv_cache_bytes_per_token(32, 32, 128, torch.float16) == 524_288           # Llama-2-7B: 0.5 MiB
    assert kv_cache_bytes_per_token(32, 8, 128, torch.float32) == 262_144
    assert kv_cache_bytes_per_token(60, 8, 128, torch.int8) == 122_880
    # a 4096-token context of Llama-2-70B: 1.25 GiB with GQA instead of 10 GiB with MHA
    assert 4096 * kv_cache_bytes_per_token(80, 8, 128) == 1.25 * 2**30
    assert 4096 * kv_cache_bytes_per_token(80, 64, 128) == 10 * 2**30


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("h_kv", [1, 2, 4])
def test_kv_cache_bytes_match_the_module_cache(h_kv, dtype):
    layers, B, T, h_q, d_head = 3, 2, 5, 4, 8
    model = [GroupedQueryAttention(32, h_q, h_kv, d_head, dtype=dtype) for _ in range(layers)]
    X = randn(1, B, T, 32, dtype=dtype)
    stored = 0
    for layer in model:
        _, (K, V) = layer(X, use_cache=True)
        assert K.shape == V.shape == (B, h_kv, T, d_head)
        stored += K.numel() * K.element_size() + V.numel() * V.element_size()
    assert stored == B * T * kv_cache_bytes_per_token(layers, h_kv, d_head, dtype)


# =========================================================================================================
# the layer: against torch.nn.MultiheadAttention, with RoPE and a KV cache
# =========================================================================================================
def torch_mha(X, W_q, W_k, W_v, W_o, h, allowed):
    """torch.nn.MultiheadAttention with the lecture's matrices (nn uses y = x Wᵀ, so it stores transposes)."""
    d_model = X.shape[-1]
    mha = torch.nn.MultiheadAttention(d_model, h, bias=False, batch_first=True, kdim=d_model, vdim=d_model,
                                      dtype=X.dtype)
    assert W_q.shape[1] == d_model, "nn.MultiheadAttention needs h·d_head = d_model"
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat((W_q.T, W_k.T, W_v.T)))
        mha.out_proj.weight.copy_(W_o.T)
    out, _ = mha(X, X, X, attn_mask=None if allowed is None else ~allowed, need_weights=False)
    return out


def expand_columns(W, h_kv, g):
    """W_k (d_model, h_kv·d) → (d_model, h_kv·g·d): the columns of head i repeated g times, written here."""
    d_model, width = W.shape
    return W.reshape(d_model, h_kv, 1, width // h_kv).expand(d_model, h_kv, g, width // h_kv).reshape(d_model, -1)


@settings(max_examples=15)                                   # builds modules / loops over heads
@given(B=batch, h=st.integers(1, 4), d_head=head_dim, T=seq_len, seed=seeds)
def test_mha_layer_matches_torch_multihead_attention(B, h, d_head, T, seed):
    torch.manual_seed(seed)
    layer = GroupedQueryAttention(h * d_head, h, h, dtype=torch.float64)
    X = randn(seed, B, T, h * d_head)
    expected = torch_mha(X, layer.W_q, layer.W_k, layer.W_v, layer.W_o, h, allowed_causal(T, T))
    torch.testing.assert_close(layer(X), expected, **TOL[torch.float64])


@settings(max_examples=15)                                   # builds modules / loops over heads
@given(B=batch, h_kv=h_kv_st, g=g_st, d_head=head_dim, T=seq_len, seed=seeds)
def test_gqa_layer_is_mha_with_repeated_key_value_heads(B, h_kv, g, d_head, T, seed):
    torch.manual_seed(seed)
    h_q = h_kv * g
    layer = GroupedQueryAttention(h_q * d_head, h_q, h_kv, dtype=torch.float64)
    X = randn(seed, B, T, h_q * d_head)
    W_k, W_v = expand_columns(layer.W_k, h_kv, g), expand_columns(layer.W_v, h_kv, g)
    expected = torch_mha(X, layer.W_q, W_k, W_v, layer.W_o, h_q, allowed_causal(T, T))
    got = layer(X)
    torch.testing.assert_close(got, expected, **TOL[torch.float64])
    torch.testing.assert_close(grouped_query_attention_layer(X, layer.W_q, layer.W_k, layer.W_v, layer.W_o, h_q, h_kv,
                                                             causal_mask(T)), expected, **TOL[torch.float64])
    # repeat_kv_weight does the same repetition of columns
    assert torch.equal(repeat_kv_weight(layer.W_k, h_kv, g), W_k)


def test_layer_non_causal_and_custom_mask():
    torch.manual_seed(0)
    layer = GroupedQueryAttention(24, 6, 2, 4, causal=False, dtype=torch.float64)
    X = randn(1, 2, 7, 24)
    W_k, W_v = expand_columns(layer.W_k, 2, 3), expand_columns(layer.W_v, 2, 3)
    torch.testing.assert_close(layer(X), torch_mha(X, layer.W_q, W_k, W_v, layer.W_o, 6, None), **TOL[torch.float64])
    window = allowed_causal(7, 7) & ~allowed_causal(7, 7).tril(-3)          # a sliding window of 3 tokens
    torch.testing.assert_close(layer(X, to_additive(window)),
                               torch_mha(X, layer.W_q, W_k, W_v, layer.W_o, 6, window), **TOL[torch.float64])


def hf_rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    emb = torch.cat([positions.double()[:, None] * inv_freq] * 2, dim=-1)          # (T, d)
    return x * emb.cos() + hf_rotate_half(x) * emb.sin()


@needs_enable_gqa
@pytest.mark.parametrize("h_q,h_kv", [(4, 4), (4, 2), (4, 1)])
def test_rope_hook_rotates_q_and_k_with_explicit_positions(h_q, h_kv):
    torch.manual_seed(1)
    layer = GroupedQueryAttention(32, h_q, h_kv, 8, rope=apply_rope_halves, dtype=torch.float64)
    X = randn(2, 2, 6, 32)
    Q = (X @ layer.W_q).view(2, 6, h_q, 8).transpose(1, 2)
    K = (X @ layer.W_k).view(2, 6, h_kv, 8).transpose(1, 2)
    V = (X @ layer.W_v).view(2, 6, h_kv, 8).transpose(1, 2)
    for positions in (torch.arange(6), 10 + torch.arange(6)):
        attn = F.scaled_dot_product_attention(hf_rope(Q, positions), hf_rope(K, positions), V, is_causal=True,
                                              enable_gqa=True)
        expected = attn.transpose(1, 2).reshape(2, 6, h_q * 8) @ layer.W_o
        torch.testing.assert_close(layer(X, positions=positions), expected, **TOL[torch.float64])
    calls = []
    layer.rope = lambda x, pos: calls.append((x.shape, pos.tolist())) or x
    layer(X)
    assert calls == [((2, h_q, 6, 8), list(range(6))), ((2, h_kv, 6, 8), list(range(6)))]


@pytest.mark.parametrize("rope", [None, apply_rope_halves], ids=["no-rope", "rope"])
@pytest.mark.parametrize("h_q,h_kv", [(4, 4), (6, 2), (4, 1)])
def test_kv_cache_decoding_equals_full_recomputation(h_q, h_kv, rope):
    torch.manual_seed(2)
    layer = GroupedQueryAttention(48, h_q, h_kv, 8, rope=rope, dtype=torch.float64)
    X = randn(3, 2, 9, 48)
    full = layer(X)
    out, cache = layer(X[:, :4], use_cache=True)                                  # prefill 4 tokens
    outs = [out]
    for t in range(4, 9):                                                        # then one token at a time
        out, cache = layer(X[:, t:t + 1], past_kv=cache, use_cache=True)
        outs.append(out)
    assert cache[0].shape == cache[1].shape == (2, h_kv, 9, 8)                    # h_kv heads cached, not h_q
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **TOL[torch.float64])


def test_attend_hook_and_repr():
    seen = []

    def attend(q, k, v, mask):
        seen.append((q.shape, k.shape, mask.shape))
        return grouped_query_attention(q, k, v, mask)

    layer = GroupedQueryAttention(16, 4, 2, attend=attend)
    layer(torch.randn(1, 3, 16))
    assert seen == [((1, 4, 3, 4), (1, 2, 3, 4), (3, 3))]
    assert "GQA" in repr(layer) and "MQA" in repr(GroupedQueryAttention(16, 4, 1))
    assert "MHA" in repr(GroupedQueryAttention(16, 4, 4))


def test_layer_gradients_flow_to_all_four_matrices():
    torch.manual_seed(3)
    layer = GroupedQueryAttention(16, 4, 2, dtype=torch.float64)
    X = randn(4, 2, 5, 16).requires_grad_()
    torch.autograd.gradcheck(lambda X: layer(X), (X,))
    layer(X).square().sum().backward()
    for W in (layer.W_q, layer.W_k, layer.W_v, layer.W_o):
        assert W.grad is not None and W.grad.abs().sum() > 0


# =========================================================================================================
# the graded exercises: references pass, plausible mistakes fail, other correct versions pass
# =========================================================================================================
EXERCISES = {
    "repeat_kv": repeat_kv,
    "grouped_query_attention": grouped_query_attention,
    "gqa_param_count": gqa_param_count,
    "kv_cache_bytes_per_token": kv_cache_bytes_per_token,
}


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setenv("COURSE_GRADING_DEVICES", "cpu")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes_its_exercise(name, capsys):
    ex = grading.exercises()[name]
    assert ex.reference is EXERCISES[name]
    assert len(ex.cases) >= 5 and len({c.name for c in ex.cases}) == len(ex.cases)
    assert grading.check(name, EXERCISES[name]) is None
    assert capsys.readouterr().out.startswith(f"{name}: {len(ex.cases)} cases passed on cpu")


def student_gqa_with_repeat(q, k, v, mask=None):
    """A correct student version written another way: repeat K/V, softmax by hand."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    dt = torch.promote_types(q.dtype, torch.float32)
    s = q.to(dt) @ k.to(dt).transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    return (torch.softmax(s, -1) @ v.to(dt)).to(q.dtype)


def student_gqa_five_dims(q, k, v, mask=None):
    """Another correct version: (B, h_kv, g, T, d) against (B, h_kv, 1, S, d)."""
    B, h_q, T, d = q.shape
    h_kv = k.shape[1]
    dt = torch.promote_types(q.dtype, torch.float32)
    q5 = q.reshape(B, h_kv, h_q // h_kv, T, d).to(dt)
    s = q5 @ k[:, :, None].to(dt).transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        s = s + (mask if mask.dim() == 2 else mask[:, :, None])
    return (torch.softmax(s, -1) @ v[:, :, None].to(dt)).reshape(B, h_q, T, -1).to(q.dtype)


@pytest.mark.parametrize("name,fn", [
    ("repeat_kv", lambda x, g: torch.repeat_interleave(x, g, dim=1)),
    ("repeat_kv", hf_repeat_kv),
    ("grouped_query_attention", student_gqa_with_repeat),
    ("grouped_query_attention", student_gqa_five_dims),
    ("gqa_param_count", lambda d_model, h_q, h_kv, d_head: d_model * d_head * (2 * h_q + 2 * h_kv)),
    ("kv_cache_bytes_per_token", lambda layers, h_kv, d_head, dtype=torch.bfloat16:
        2 * layers * h_kv * d_head * torch.empty(0, dtype=dtype).element_size()),
])
def test_other_correct_versions_pass(name, fn, cpu_only):
    grading.check(name, fn)


def wrong_grouping(q, k, v, mask=None):
    """Query head n uses kv head n % h_kv (tiled order): the classic layout mistake."""
    g = q.shape[1] // k.shape[1]
    return student_gqa_with_repeat(q, k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1), mask)


@pytest.mark.parametrize("name,fn,fragment", [
    ("repeat_kv", lambda x, g: x.repeat(1, g, 1, 1), "values differ"),
    ("repeat_kv", lambda x, g: x.expand(-1, g, -1, -1) if x.shape[1] == 1 else x, "has shape"),
    ("grouped_query_attention", wrong_grouping, "values differ"),
    ("grouped_query_attention", lambda q, k, v, mask=None: student_gqa_with_repeat(q, k, v), "values differ"),
    ("grouped_query_attention", lambda q, k, v, mask=None: student_gqa_with_repeat(q.float(), k.float(), v.float(),
                                                                                  mask), "dtype"),
    ("gqa_param_count", lambda d_model, h_q, h_kv, d_head: d_model * d_head * (h_q + 2 * h_kv), "should be"),
    ("gqa_param_count", lambda d_model, h_q, h_kv, d_head: 2 * d_model * d_model + 2 * d_model * h_kv * d_head,
     "should be"),
    ("kv_cache_bytes_per_token", lambda layers, h_kv, d_head, dtype=None: layers * h_kv * d_head * 2, "should be"),
    ("kv_cache_bytes_per_token", lambda layers, h_kv, d_head, dtype=None:
        2 * layers * h_kv * d_head * torch.finfo(dtype).bits // 8, "TypeError"),
])
def test_plausible_mistakes_fail_with_a_one_line_message(name, fn, fragment, cpu_only):
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}, case ") and " on cpu: " in msg
    assert fragment in msg, msg


# =========================================================================================================
# devices: the cpu param always runs; the cuda param (marked cuda) is skipped without a GPU
# =========================================================================================================
class TestDevices:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    def test_gqa_on_device_agrees_with_cpu_oracle(self, dtype, device):
        q, k, v = qkv(21, 2, 8, 2, 6, 9, 16, dtype)
        got = grouped_query_attention(q.to(device), k.to(device), v.to(device), causal_mask(6, 9, device=device))
        assert got.device.type == device.type and got.dtype == dtype
        tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else TOL[dtype]
        torch.testing.assert_close(got.cpu().double(), hf_gqa(q, k, v, allowed_causal(6, 9)), **tol)

    def test_repeat_kv_and_layer_on_device(self, device):
        x = randn(22, 2, 2, 5, 8).to(device)
        assert torch.equal(repeat_kv(x, 4).cpu(), hf_repeat_kv(x.cpu(), 4))
        torch.manual_seed(0)
        layer = GroupedQueryAttention(32, 4, 2, dtype=torch.float64)
        X = randn(23, 2, 5, 32)
        expected = layer(X)
        out, (K, V) = layer.to(device)(X.to(device), use_cache=True)
        assert out.device.type == K.device.type == device.type
        torch.testing.assert_close(out.cpu(), expected, **TOL[torch.float64])

    @needs_enable_gqa
    def test_matches_sdpa_on_device(self, device):
        q, k, v = (t.to(device) for t in qkv(24, 2, 8, 2, 16, 16, 32, torch.float32))
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        torch.testing.assert_close(grouped_query_attention(q, k, v, causal_mask(16, device=device)), expected,
                                   atol=1e-4, rtol=1e-4)

    def test_grading_on_device(self, device, monkeypatch):
        monkeypatch.setenv("COURSE_GRADING_DEVICES", str(device))
        for name, fn in EXERCISES.items():
            grading.check(name, fn)


@pytest.mark.cuda
@needs_enable_gqa
def test_cuda_bfloat16_matches_sdpa_flash_path():
    q, k, v = (t.cuda() for t in qkv(31, 2, 32, 8, 64, 64, 128, torch.bfloat16))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    got = grouped_query_attention(q, k, v, causal_mask(64, device="cuda"))
    assert got.is_cuda and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
