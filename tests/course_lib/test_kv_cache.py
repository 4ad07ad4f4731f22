"""KV cache (course_lib.attention.kv_cache) against independent oracles, never against itself.

Oracles written here:

* ``F.scaled_dot_product_attention``: ``is_causal=True`` for full recomputation, a boolean mask
  (``tril(S - T)``: new query t sees keys 0..pos+t) for T new queries after pos cached keys;
* a cache filled by writing into a clone of the buffer (``buf[..., pos:pos+T] = k_new``), and ``torch.cat``
  of the appended chunks;
* the cache-size formula with bytes per element from a table (float32: 4, bfloat16: 2, ...) and the sizes
  of real models worked out by hand (Llama-2 7B: 2 GiB at 4096 tokens in float16);
* a second TinyDecoder forward pass written out here with the model's weights: ``F.layer_norm``,
  Meta Llama's complex-number RoPE, ``F.scaled_dot_product_attention(is_causal=True)``, ``F.gelu``.

Then properties: cached decoding (one token at a time, in chunks, with a student-style step) gives the
tokens and logits of full recomputation; the cache writes in place (no reallocation, views of the
buffers); inputs are never modified; errors are one clear line; devices (CUDA skipped where absent).
"""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import grading
from course_lib.attention import kv_cache as kc
from course_lib.attention.kv_cache import (DecoderConfig, KVCache, TinyDecoder, cache_update, cached_attention_step,
                                           kv_cache_bytes, time_per_token)
from course_lib.attention.rope import apply_rope_halves, apply_rope_pairs

matplotlib.use("Agg")

pytestmark = pytest.mark.kv_cache

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
}
ELEMENT_BYTES = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1,
                 torch.uint8: 1, torch.int32: 4}

small = st.integers(1, 3)
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)


def buffer(seed: int, *lead: int, max_len: int, pos: int, d: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """A preallocated buffer: N(0, 1) in slots 0..pos-1, garbage (±50) in the unused slots."""
    buf = randn(seed, *lead, max_len, d)
    buf[..., pos:, :] = 50.0 * torch.sign(buf[..., pos:, :]) + buf[..., pos:, :]
    return buf.to(dtype).to(device)


def offset_causal(T: int, S: int, device="cpu") -> torch.Tensor:
    """Boolean 'may attend' (T, S): new query t (at position S - T + t) sees keys 0..S-T+t."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


def sdpa(q, K, V, pos):
    """The oracle for T new queries after pos cached keys."""
    T, S = q.shape[-2], K.shape[-2]
    if pos == 0 and T == S:
        return F.scaled_dot_product_attention(q, K, V, is_causal=True)
    return F.scaled_dot_product_attention(q, K, V, attn_mask=offset_causal(T, S, q.device))


# =========================================================================================================
# cache_update
# =========================================================================================================
@given(B=small, H=small, max_len=st.integers(1, 12), data=st.data(), d_k=st.integers(1, 8), d_v=st.integers(1, 8),
       seed=seeds, dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_cache_update_matches_writing_into_a_copy(B, H, max_len, data, d_k, d_v, seed, dtype):
    pos = data.draw(st.integers(0, max_len - 1), label="pos")
    T = data.draw(st.integers(1, max_len - pos), label="T")
    cache_k = buffer(seed, B, H, max_len=max_len, pos=pos, d=d_k, dtype=dtype)
    cache_v = buffer(seed + 1, B, H, max_len=max_len, pos=pos, d=d_v, dtype=dtype)
    k_new, v_new = randn(seed + 2, B, H, T, d_k, dtype=dtype), randn(seed + 3, B, H, T, d_v, dtype=dtype)
    before = [t.clone() for t in (cache_k, cache_v, k_new, v_new)]
    K, V = cache_update(cache_k, cache_v, k_new, v_new, pos)
    for buf, new, got in ((cache_k, k_new, K), (cache_v, v_new, V)):
        expected = buf.clone()
        expected[..., pos:pos + T, :] = new
        assert got.shape == (B, H, pos + T, new.shape[-1]) and got.dtype == dtype
        assert torch.equal(got, expected[..., :pos + T, :])
    for a, b in zip((cache_k, cache_v, k_new, v_new), before):
        assert torch.equal(a, b), "cache_update must not modify its inputs"


def test_cache_update_without_batch_or_heads_and_errors():
    cache_k, cache_v = buffer(0, max_len=5, pos=2, d=4), buffer(1, max_len=5, pos=2, d=3)
    K, V = cache_update(cache_k, cache_v, randn(2, 3, 4), randn(3, 3, 3), 2)
    assert K.shape == (5, 4) and V.shape == (5, 3)
    with pytest.raises(ValueError, match="at most 5 tokens"):
        cache_update(cache_k, cache_v, randn(2, 4, 4), randn(3, 4, 3), 2)
    with pytest.raises(ValueError, match="non-negative int"):
        cache_update(cache_k, cache_v, randn(2, 1, 4), randn(3, 1, 3), -1)
    with pytest.raises(ValueError, match="leading dimensions"):
        cache_update(cache_k, cache_v, randn(2, 2, 1, 4), randn(3, 2, 1, 3), 0)


# =========================================================================================================
# cached_attention_step
# =========================================================================================================
@given(B=small, H=small, max_len=st.integers(1, 16), data=st.data(), d_k=st.integers(1, 16),
       d_v=st.integers(1, 8), seed=seeds, dtype=float_dtypes)
def test_cached_step_matches_sdpa_with_offset_mask(B, H, max_len, data, d_k, d_v, seed, dtype):
    pos = data.draw(st.integers(0, max_len - 1), label="pos")
    T = data.draw(st.integers(1, max_len - pos), label="T")
    cache_k = buffer(seed, B, H, max_len=max_len, pos=pos, d=d_k, dtype=dtype)
    cache_v = buffer(seed + 1, B, H, max_len=max_len, pos=pos, d=d_v, dtype=dtype)
    q, k, v = (randn(seed + i, B, H, T, d, dtype=dtype) for i, d in ((2, d_k), (3, d_k), (4, d_v)))
    before = [t.clone() for t in (q, k, v, cache_k, cache_v)]
    got = cached_attention_step(q, k, v, cache_k, cache_v, pos)
    K = torch.cat((cache_k[..., :pos, :], k), dim=-2)
    V = torch.cat((cache_v[..., :pos, :], v), dim=-2)
    expected = sdpa(q, K, V, pos)
    assert got.shape == (B, H, T, d_v) and got.dtype == dtype
    torch.testing.assert_close(got, expected, **TOL[dtype])
    for a, b in zip((q, k, v, cache_k, cache_v), before):
        assert torch.equal(a, b), "cached_attention_step must not modify its inputs"


@given(B=small, H=small, T=st.integers(1, 12), d=st.integers(1, 16), seed=seeds, data=st.data())
def test_token_by_token_reproduces_full_causal_attention(B, H, T, d, seed, data):
    """Decoding one token at a time with a cache == the rows of full causal recomputation (is_causal)."""
    q, k, v = (randn(seed + i, B, H, T, d) for i in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)       # (B, H, T, d)
    chunk = data.draw(st.integers(1, T), label="prefill")                  # prefill, then one at a time
    cache_k = buffer(seed + 5, B, H, max_len=T, pos=0, d=d)
    cache_v = buffer(seed + 6, B, H, max_len=T, pos=0, d=d)
    rows = [cached_attention_step(q[..., :chunk, :], k[..., :chunk, :], v[..., :chunk, :], cache_k, cache_v, 0)]
    cache_k[..., :chunk, :], cache_v[..., :chunk, :] = k[..., :chunk, :], v[..., :chunk, :]
    for t in range(chunk, T):
        rows.append(cached_attention_step(q[..., t:t + 1, :], k[..., t:t + 1, :], v[..., t:t + 1, :],
                                          cache_k, cache_v, t))
        cache_k[..., t, :], cache_v[..., t, :] = k[..., t, :], v[..., t, :]
    torch.testing.assert_close(torch.cat(rows, dim=-2), full, **TOL[torch.float64])


def test_first_token_attends_only_to_itself():
    v = randn(1, 2, 3, 1, 5)
    out = cached_attention_step(randn(2, 2, 3, 1, 4), randn(3, 2, 3, 1, 4), v,
                                buffer(4, 2, 3, max_len=6, pos=0, d=4), buffer(5, 2, 3, max_len=6, pos=0, d=5), 0)
    torch.testing.assert_close(out, v, atol=0, rtol=0)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cached_step_low_precision_keeps_dtype(low):
    pos, T, d = 9, 2, 32
    ck, cv = buffer(0, 2, 2, max_len=16, pos=pos, d=d, dtype=low), buffer(1, 2, 2, max_len=16, pos=pos, d=d, dtype=low)
    q, k, v = (randn(i, 2, 2, T, d, dtype=low) for i in (2, 3, 4))
    out = cached_attention_step(q, k, v, ck, cv, pos)
    assert out.dtype == low
    K = torch.cat((ck[..., :pos, :], k), dim=-2).float()
    V = torch.cat((cv[..., :pos, :], v), dim=-2).float()
    torch.testing.assert_close(out.float(), sdpa(q.float(), K, V, pos), atol=2e-2, rtol=2e-2)


# =========================================================================================================
# kv_cache_bytes
# =========================================================================================================
@pytest.mark.parametrize("args,kwargs,expected", [
    ((32, 32, 128, 4096, torch.float16), {}, 2 * 2**30),               # Llama-2 7B: 2 GiB at 4096 tokens
    ((80, 8, 128, 4096, torch.bfloat16), {}, 1.25 * 2**30),            # Llama-2 70B (GQA, h_kv = 8)
    ((32, 8, 128, 8192, torch.float16), {"batch": 8}, 8 * 2**30),       # Mistral 7B, batch of 8
    ((1, 1, 1, 1, torch.float32), {}, 8),
    ((4, 2, 16, 0, torch.float32), {}, 0),
    ((32, 8, 128, 32768, torch.int8), {}, 2 * 2**30),
])
def test_kv_cache_bytes_of_known_models(args, kwargs, expected):
    got = kv_cache_bytes(*args, **kwargs)
    assert isinstance(got, int) and got == expected


@given(L=st.integers(0, 100), h=st.integers(0, 64), d=st.integers(0, 256), n=st.integers(0, 10**5),
       b=st.integers(0, 16), dtype=st.sampled_from(list(ELEMENT_BYTES)))
def test_kv_cache_bytes_formula(L, h, d, n, b, dtype):
    assert kv_cache_bytes(L, h, d, n, dtype, batch=b) == 2 * L * h * d * n * ELEMENT_BYTES[dtype] * b


def test_kv_cache_bytes_errors():
    with pytest.raises(TypeError, match="torch.dtype"):
        kv_cache_bytes(1, 1, 1, 1, "float16")
    with pytest.raises(ValueError, match="tokens"):
        kv_cache_bytes(1, 1, 1, -3, torch.float16)
    with pytest.raises(ValueError, match="n_layers"):
        kv_cache_bytes(1.5, 1, 1, 3, torch.float16)


# =========================================================================================================
# KVCache: preallocated, written in place
# =========================================================================================================
@given(L=small, B=small, H=small, d=st.integers(1, 8), chunks=st.lists(st.integers(1, 4), min_size=1, max_size=5),
       seed=seeds, dtype=float_dtypes)
def test_kvcache_appends_in_place_and_matches_cat(L, B, H, d, chunks, seed, dtype):
    max_len = sum(chunks) + 1
    cache = KVCache(L, B, H, d, max_len, dtype=dtype)
    k_ptr, v_ptr = cache.k.data_ptr(), cache.v.data_ptr()
    appended = {layer: ([], []) for layer in range(L)}
    for i, T in enumerate(chunks):
        assert cache.length == sum(chunks[:i])
        for layer in range(L):
            k, v = randn(seed + 7 * i + layer, B, H, T, d, dtype=dtype), randn(seed + 7 * i + layer + 100, B, H, T, d, dtype=dtype)
            appended[layer][0].append(k)
            appended[layer][1].append(v)
            K, V = cache.append(layer, k, v)
            assert torch.equal(K, torch.cat(appended[layer][0], dim=2))
            assert torch.equal(V, torch.cat(appended[layer][1], dim=2))
            # views of the preallocated buffers: nothing was copied or reallocated
            assert K.untyped_storage().data_ptr() == k_ptr and V.untyped_storage().data_ptr() == v_ptr
            if layer < L - 1:
                assert cache.length == sum(chunks[:i]), "length counts tokens stored in *every* layer"
    assert cache.length == sum(chunks)
    assert cache.k.data_ptr() == k_ptr and cache.v.data_ptr() == v_ptr
    for layer in range(L):
        K, V = cache.get(layer)
        assert torch.equal(K, torch.cat(appended[layer][0], dim=2))
    cache.reset()
    assert cache.length == 0 and cache.get(0)[0].shape == (B, H, 0, d)
    assert cache.k.data_ptr() == k_ptr, "reset keeps the buffers"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_kvcache_nbytes_is_the_formula(dtype):
    L, B, h_kv, d, max_len = 3, 2, 4, 16, 50
    cache = KVCache(L, B, h_kv, d, max_len, dtype=dtype)
    expected = 2 * L * h_kv * d * max_len * ELEMENT_BYTES[dtype] * B
    assert cache.nbytes == expected == kv_cache_bytes(L, h_kv, d, max_len, dtype, batch=B)
    assert cache.k.untyped_storage().nbytes() + cache.v.untyped_storage().nbytes() == expected   # measured
    assert str(expected) in repr(cache).replace(",", "")


def test_kvcache_errors():
    cache = KVCache(2, 1, 2, 4, 5)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.append(0, torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4))
    with pytest.raises(ValueError, match=r"\(B, h_kv, T, d_head\)"):
        cache.append(0, torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(ValueError, match="layer must be"):
        cache.append(2, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        KVCache(1, 1, 1, 1, 0)


# =========================================================================================================
# TinyDecoder against a forward pass written out here
# =========================================================================================================
def llama_rope(x_bhtd: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Meta Llama's complex-number RoPE on adjacent pairs (base 10000), layout (B, H, T, d), float64."""
    d = x_bhtd.shape[-1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = torch.outer(positions.double(), freqs)                              # (T, d/2)
    rot = torch.polar(torch.ones_like(angles), angles)
    xc = torch.view_as_complex(x_bhtd.double().reshape(*x_bhtd.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot).flatten(-2).to(x_bhtd.dtype)


def oracle_forward(model: TinyDecoder, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The decoder's logits from its weights, with F.layer_norm, Llama RoPE and SDPA(is_causal=True)."""
    cfg = model.config
    h, B, T = cfg.n_heads, *tokens.shape
    x = model.embed.weight[tokens]                                               # (B, T, C)
    positions = torch.arange(start, start + T)
    for blk in model.blocks:
        a = F.layer_norm(x, (cfg.d_model,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        q, k, v = (F.linear(a, W.weight).view(B, T, h, -1).transpose(1, 2)
                   for W in (blk.attn.W_q, blk.attn.W_k, blk.attn.W_v))
        y = F.scaled_dot_product_attention(llama_rope(q, positions), llama_rope(k, positions), v, is_causal=True)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, -1), blk.attn.W_o.weight)
        m = F.layer_norm(x, (cfg.d_model,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        m1, m2 = blk.mlp[0], blk.mlp[2]
        x = x + F.linear(F.gelu(F.linear(m, m1.weight, m1.bias)), m2.weight, m2.bias)
    x = F.layer_norm(x, (cfg.d_model,), model.norm.weight, model.norm.bias, model.norm.eps)
    return F.linear(x, model.head.weight)


def make_model(seed: int = 0, dtype=torch.float64, device="cpu", rope=apply_rope_pairs, **cfg) -> TinyDecoder:
    torch.manual_seed(seed)
    cfg = {"vocab_size": 50, "d_model": 32, "n_layers": 2, "n_heads": 4, **cfg}
    return TinyDecoder(DecoderConfig(**cfg), rope=rope).to(dtype=dtype, device=device)


MODEL64 = make_model(2)


@pytest.mark.parametrize("start", [0, 17])
def test_decoder_forward_matches_written_out_oracle(start):
    model = make_model(1, n_layers=3)
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(tokens, start_pos=start), oracle_forward(model, tokens, start),
                               **TOL[torch.float64])


@settings(max_examples=15)                         # a forward pass per chunk: keep it short
@given(B=small, T=st.integers(1, 10), seed=seeds, data=st.data())
def test_decoder_chunked_with_cache_equals_full_forward(B, T, seed, data):
    """Feeding the sequence in chunks through a KV cache gives the logits of one full forward pass."""
    model = MODEL64
    tokens = torch.randint(0, 50, (B, T), generator=torch.Generator().manual_seed(seed))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, T - 1), max_size=3), label="cuts"))) if T > 1 else []
    full = oracle_forward(model, tokens)
    cache = model.new_cache(B, T)
    pieces, start = [], 0
    for end in cuts + [T]:
        pieces.append(model(tokens[:, start:end], cache))
        assert cache.length == end
        start = end
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL[torch.float64])



def sdpa_step(q, k, v, cache_k, cache_v, pos):
    """A student's cached_attention_step, written another way: buffer written in a copy, then SDPA."""
    T = q.shape[-2]
    K, V = cache_k.clone(), cache_v.clone()
    K[..., pos:pos + T, :], V[..., pos:pos + T, :] = k, v
    return sdpa(q, K[..., :pos + T, :], V[..., :pos + T, :], pos)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,T0,n_new", [(1, 1, 12), (3, 5, 20), (2, 16, 7)])
def test_generate_cached_equals_uncached(dtype, B, T0, n_new):
    model = make_model(4, dtype)
    prompt = torch.randint(0, 50, (B, T0), generator=torch.Generator().manual_seed(B + T0))
    tok_u, log_u = model.generate(prompt, n_new, use_cache=False, return_logits=True)
    tok_c, log_c = model.generate(prompt, n_new, use_cache=True, return_logits=True)
    tok_s, log_s = model.generate(prompt, n_new, use_cache=True, attention_step=sdpa_step, return_logits=True)
    tok_r, log_r = model.generate(prompt, n_new, attention_step=cached_attention_step, return_logits=True)
    assert tok_u.shape == (B, T0 + n_new) and log_u.shape == (B, n_new, 50) and log_u.dtype == dtype
    assert torch.equal(tok_u[:, :T0], prompt)
    for tok, log in ((tok_c, log_c), (tok_s, log_s), (tok_r, log_r)):
        assert torch.equal(tok, tok_u)
        torch.testing.assert_close(log, log_u, **TOL[dtype])
    # the logits are those of the oracle's forward pass over the generated sequence
    expected = oracle_forward(model.double(), tok_u[:, :-1])[:, T0 - 1:]
    torch.testing.assert_close(log_u.double(), expected, **(TOL[torch.float64] if dtype == torch.float64
                                                            else dict(atol=1e-4, rtol=1e-4)))
    # greedy: every new token is the argmax of its logits
    assert torch.equal(tok_u[:, T0:], log_u.argmax(dim=-1))


def test_generate_is_deterministic_and_edge_cases():
    model = make_model(5)
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(model.generate(prompt, 6), model.generate(prompt, 6))
    tokens, logits = model.generate(prompt, 0, return_logits=True)
    assert torch.equal(tokens, prompt) and logits.shape == (1, 0, 50)
    assert model.generate(prompt, 1).shape == (1, 4)


def test_decoder_uses_the_rope_it_is_given():
    calls = []

    def counting_rope(x, positions):
        calls.append(positions.clone())
        return apply_rope_halves(x, positions)

    model = make_model(6, rope=counting_rope)
    prompt = torch.tensor([[4, 5, 6, 7]])
    tok_c, log_c = model.generate(prompt, 5, return_logits=True)
    assert [p.tolist() for p in calls[:2]] == [[0, 1, 2, 3]] * 2              # prefill: q and k of layer 0
    assert calls[-1].tolist() == [7]                                          # last fed token: position 7
    tok_u, log_u = model.generate(prompt, 5, use_cache=False, return_logits=True)
    assert torch.equal(tok_c, tok_u)
    torch.testing.assert_close(log_c, log_u, **TOL[torch.float64])
    other = make_model(6)                                                     # same weights, pairs RoPE
    assert not torch.allclose(other(prompt), model(prompt))


def test_decoder_errors():
    model = make_model(7)
    cache = model.new_cache(1, 4)
    model(torch.tensor([[1, 2]]), cache)
    with pytest.raises(ValueError, match="continue the cached sequence"):
        model(torch.tensor([[3]]), cache, start_pos=0)
    with pytest.raises(ValueError, match="pass cache="):
        model(torch.tensor([[3]]), attention_step=cached_attention_step)
    with pytest.raises(ValueError, match=r"shape \(B, T0\)"):
        model.generate(torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="use_cache=True"):
        model.generate(torch.tensor([[1, 2]]), 3, use_cache=False, attention_step=cached_attention_step)
    with pytest.raises(ValueError, match="even size"):
        TinyDecoder(DecoderConfig(d_model=12, n_heads=4))
    with pytest.raises(ValueError, match="KV cache is full"):
        model(torch.tensor([[3, 4, 5]]), cache)


def test_new_cache_follows_the_model_and_time_per_token():
    model = make_model(8, torch.float32, n_layers=3)
    cache = model.new_cache(2, 10)
    assert cache.k.shape == (3, 2, 4, 10, 8) and cache.k.dtype == torch.float32
    assert cache.nbytes == kv_cache_bytes(3, 4, 8, 10, torch.float32, batch=2)
    times = time_per_token(model, torch.tensor([[1, 2]]), 5, use_cache=True)
    assert times.shape == (5,) and bool((times > 0).all())
    assert time_per_token(model, torch.tensor([[1, 2]]), 3, use_cache=False).shape == (3,)


# =========================================================================================================
# devices (CUDA skipped where absent)
# =========================================================================================================
def test_on_device(device):
    model = make_model(9, torch.float32, device)
    prompt = torch.randint(0, 50, (2, 4), generator=torch.Generator().manual_seed(0)).to(device)
    tok_c, log_c = model.generate(prompt, 10, return_logits=True)
    tok_u, log_u = model.generate(prompt, 10, use_cache=False, return_logits=True)
    assert tok_c.device.type == device.type and model.new_cache(1, 2).k.device.type == device.type
    assert torch.equal(tok_c, tok_u)
    torch.testing.assert_close(log_c, log_u, atol=1e-4, rtol=1e-4)
    ck, cv = buffer(0, 2, 2, max_len=8, pos=5, d=8, device=device), buffer(1, 2, 2, max_len=8, pos=5, d=8, device=device)
    q, k, v = (randn(i, 2, 2, 2, 8, device=device) for i in (2, 3, 4))
    out = cached_attention_step(q, k, v, ck, cv, 5)
    assert out.device.type == device.type
    K, V = cache_update(ck, cv, k, v, 5)
    torch.testing.assert_close(out, sdpa(q, K, V, 5), **TOL[torch.float64])


# =========================================================================================================
# grading: the references pass, plausible mistakes fail with a useful message
# =========================================================================================================
EXERCISES = {"cache_update": cache_update, "cached_attention_step": cached_attention_step,
             "kv_cache_bytes": kv_cache_bytes}


@pytest.fixture(autouse=True)
def _cpu_only_by_default(monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes_its_exercise(name, capsys):
    ex = grading.exercises()[name]
    assert ex.reference is EXERCISES[name] and len(ex.cases) >= 6
    assert len({c.name for c in ex.cases}) == len(ex.cases)
    assert grading.check(name, EXERCISES[name]) is None
    assert capsys.readouterr().out.startswith(f"{name}: {len(ex.cases)} cases passed on cpu")


def test_correct_alternatives_pass():
    # PyTorch's fused attention gives the right numbers but is the shortcut the exercise forbids
    _fails("cached_attention_step", sdpa_step, "which this exercise asks you to implement yourself")

    def written_into_copy(ck, cv, k, v, pos):
        K, V = ck.clone(), cv.clone()
        T = k.shape[-2]
        K[..., pos:pos + T, :], V[..., pos:pos + T, :] = k, v
        return K[..., :pos + T, :], V[..., :pos + T, :]
    grading.check("cache_update", written_into_copy)
    grading.check("kv_cache_bytes", lambda L, h, d, n, dtype, batch=1: 2 * L * h * d * n * dtype.itemsize * batch)


def _fails(name, fn, *fragments):
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}, case ")
    for f in fragments:
        assert f in msg, msg
    return msg


def test_wrong_cache_updates_fail():
    def whole_buffer(ck, cv, k, v, pos):             # returns every slot, unused ones included
        K, V = ck.clone(), cv.clone()
        K[..., pos:pos + k.shape[-2], :], V[..., pos:pos + k.shape[-2], :] = k, v
        return K, V
    _fails("cache_update", whole_buffer, "has shape")

    def in_place(ck, cv, k, v, pos):                 # what KVCache.append does: not allowed here
        T = k.shape[-2]
        ck[..., pos:pos + T, :], cv[..., pos:pos + T, :] = k, v
        return ck[..., :pos + T, :], cv[..., :pos + T, :]
    _fails("cache_update", in_place, "modified its input")

    def off_by_one(ck, cv, k, v, pos):               # overwrites the last cached token
        p = max(pos - 1, 0)
        return torch.cat((ck[..., :p, :], k), -2), torch.cat((cv[..., :p, :], v), -2)
    _fails("cache_update", off_by_one)


def test_wrong_attention_steps_fail():
    def no_mask(q, k, v, ck, cv, pos):               # fine for T = 1, wrong for a chunk
        K, V = cache_update(ck, cv, k, v, pos)
        return F.scaled_dot_product_attention(q, K, V)
    _fails("cached_attention_step", no_mask, "3 new", "values differ")

    def mask_not_offset(q, k, v, ck, cv, pos):       # lower-triangular from the first key, not from pos
        K, V = cache_update(ck, cv, k, v, pos)
        T, S = q.shape[-2], K.shape[-2]
        return F.scaled_dot_product_attention(q, K, V, attn_mask=torch.ones(T, S, dtype=torch.bool).tril())
    _fails("cached_attention_step", mask_not_offset, "values differ")

    def whole_buffer(q, k, v, ck, cv, pos):          # attends to the unused slots too
        T = q.shape[-2]
        K, V = ck.clone(), cv.clone()
        K[..., pos:pos + T, :], V[..., pos:pos + T, :] = k, v
        return F.scaled_dot_product_attention(q, K, V)
    _fails("cached_attention_step", whole_buffer, "values differ")

    def no_scaling(q, k, v, ck, cv, pos):
        K, V = cache_update(ck, cv, k, v, pos)
        return F.scaled_dot_product_attention(q, K, V, attn_mask=offset_causal(q.shape[-2], K.shape[-2]),
                                              scale=1.0)
    _fails("cached_attention_step", no_scaling, "Hint: ")

    def cache_only(q, k, v, ck, cv, pos):            # forgets the new token's own key
        K, V = (cache_update(ck, cv, k, v, pos)[i][..., :max(pos, 1), :] for i in (0, 1))
        return F.scaled_dot_product_attention(q, K, V)
    _fails("cached_attention_step", cache_only)


def test_wrong_cache_sizes_fail():
    _fails("kv_cache_bytes", lambda L, h, d, n, dtype, batch=1: L * h * d * n * dtype.itemsize * batch,
           "should be")                                                    # forgot keys + values
    _fails("kv_cache_bytes", lambda L, h, d, n, dtype, batch=1: 2 * L * h * d * n * 4 * batch, "float16")
    _fails("kv_cache_bytes", lambda L, h, d, n, dtype, batch=1: 2 * L * h * d * n * dtype.itemsize, "batch=8")


def test_plots_draw():
    import matplotlib.pyplot as plt

    from course_lib.attention import plots
    figs = [plots.plot_cache_anatomy(t=5, d=3),
            plots.plot_time_per_token({"with": torch.rand(50), "without": torch.rand(50)}, 4, title="t"),
            plots.plot_cache_memory(kv_cache_bytes, {"7B": (32, 32, 128)}, 4096)]
    for fig in figs:
        assert fig.axes and all(ax.get_title() for ax in fig.axes)
        plt.close(fig)
    with pytest.raises(ValueError):
        plots.plot_cache_anatomy(t=1)
