"""RoPE (course_lib.attention.rope) against independent oracles, never against itself.

Oracles written out here, from their sources rather than from course_lib:

* Meta Llama's complex-number RoPE (``precompute_freqs_cis`` with ``torch.polar``, ``view_as_complex`` on
  adjacent pairs, a complex multiply, ``view_as_real``): the adjacent-pairs convention;
* Hugging Face's ``rotate_half`` with ``cat((freqs, freqs))`` cos/sin: the halves convention;
* the lecture's block-diagonal R_{Θ,m}, built with ``torch.block_diag`` of 2×2 rotations from ``math``;
* θ_i = 10000^{-2(i-1)/d} in plain Python.

Then properties of rotations (norm, orthogonality, composition, relative positions), KV-cache offsets,
broadcasting, dtypes, input immutability, error messages, and devices (CUDA skipped where absent).
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from course_lib.attention.rope import (apply_rope_halves, apply_rope_pairs, pairs_to_halves, rope_angles,
                                       rope_matrix, rope_thetas)

pytestmark = pytest.mark.rope

APPLY = [pytest.param(apply_rope_pairs, id="pairs"), pytest.param(apply_rope_halves, id="halves")]

# Tolerances: float64 computes angles in float64; float32 rounds θ_i and m·θ_i to float32, an angle error
# of about m·1e-7 rad, so float32 comparisons keep positions modest (< 64).
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
}
F32_MAX_POS = 63

# ---------------------------------------------------------------------------------------------------------
# strategies and helpers
# ---------------------------------------------------------------------------------------------------------
even_d = st.integers(1, 32).map(lambda k: 2 * k)           # d = 2, 4, ..., 64
small = st.integers(1, 3)                                  # batch / head sizes
seq_len = st.integers(1, 12)
positions_st = st.integers(0, 300)
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def randint(seed: int, high: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, high, shape, generator=g)


def max_pos(dtype: torch.dtype) -> int:
    return F32_MAX_POS if dtype == torch.float32 else 300


# ---------------------------------------------------------------------------------------------------------
# oracle 1: Meta Llama (llama/model.py), complex numbers on adjacent pairs, layout (B, T, H, d)
# ---------------------------------------------------------------------------------------------------------
def llama_precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].to(dtype) / dim))
    t = torch.arange(end, device=freqs.device).to(dtype)
    freqs = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64 (complex128 for float64)


def llama_reshape_for_broadcast(freqs_cis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    ndim = x.ndim
    assert freqs_cis.shape == (x.shape[1], x.shape[-1])
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def llama_apply_rotary_emb(xq: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    real = torch.float64 if freqs_cis.dtype == torch.complex128 else torch.float32
    xq_ = torch.view_as_complex(xq.to(real).reshape(*xq.shape[:-1], -1, 2))
    freqs_cis = llama_reshape_for_broadcast(freqs_cis, xq_)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq)


def llama_rope(x_bthd: torch.Tensor, start_pos: int, base: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Llama's Attention.forward: freqs_cis[start_pos : start_pos + seqlen] applied to (B, T, H, d)."""
    T, d = x_bthd.shape[1], x_bthd.shape[-1]
    freqs_cis = llama_precompute_freqs_cis(d, start_pos + T, base, dtype)[start_pos:start_pos + T]
    return llama_apply_rotary_emb(x_bthd, freqs_cis)


# ---------------------------------------------------------------------------------------------------------
# oracle 2: Hugging Face (transformers LlamaRotaryEmbedding / apply_rotary_pos_emb), halves, (B, H, T, d)
# ---------------------------------------------------------------------------------------------------------
def hf_rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_cos_sin(position_ids: torch.Tensor, dim: int, base: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype) / dim))
    inv_freq_expanded = inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].to(dtype)
    freqs = (inv_freq_expanded @ position_ids_expanded).transpose(1, 2)   # (B, T, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)                                 # (B, T, d)
    return emb.cos(), emb.sin()


def hf_apply_rotary_pos_emb(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                            unsqueeze_dim: int = 1) -> torch.Tensor:
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return q * cos + hf_rotate_half(q) * sin


def hf_rope(x_bhtd: torch.Tensor, position_ids: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    cdt = torch.float64 if x_bhtd.dtype == torch.float64 else torch.float32
    cos, sin = hf_cos_sin(position_ids, x_bhtd.shape[-1], base, cdt)
    return hf_apply_rotary_pos_emb(x_bhtd.to(cdt), cos, sin).to(x_bhtd.dtype)


# ---------------------------------------------------------------------------------------------------------
# oracle 3: the lecture's matrix, block by block, from math.cos / math.sin
# ---------------------------------------------------------------------------------------------------------
def python_thetas(d: int, base: float = 10000.0) -> list[float]:
    return [base ** (-2 * (i - 1) / d) for i in range(1, d // 2 + 1)]


def oracle_matrix(m: int, d: int, base: float = 10000.0) -> torch.Tensor:
    blocks = []
    for theta in python_thetas(d, base):
        c, s = math.cos(m * theta), math.sin(m * theta)
        blocks.append(torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
    return torch.block_diag(*blocks)


# =========================================================================================================
# (a) Llama's complex-number RoPE vs apply_rope_pairs
# =========================================================================================================
@given(d=even_d, B=small, H=small, T=seq_len, start=st.integers(0, 250), seed=seeds, dtype=float_dtypes)
def test_pairs_matches_llama_complex(d, B, H, T, start, seed, dtype):
    start = min(start, max_pos(dtype) - T + 1)
    x = randn(seed, B, T, H, d, dtype=dtype)                                # Llama's layout
    expected = llama_rope(x, start, dtype=dtype)
    got = apply_rope_pairs(x.transpose(1, 2), start + torch.arange(T)).transpose(1, 2)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, **TOL[dtype])


def test_pairs_matches_llama3_base_500000_float32():
    x = randn(7, 2, 48, 4, 128, dtype=torch.float32)
    expected = llama_rope(x, 0, base=500000.0)
    got = apply_rope_pairs(x.transpose(1, 2), torch.arange(48), base=500000.0).transpose(1, 2)
    torch.testing.assert_close(got, expected, **TOL[torch.float32])


def test_pairs_matches_llama_float64_long_context():
    """float64 inputs use float64 angles: at positions ~ 10^5 float32 angles would be off by ~1e-2 rad."""
    x = randn(3, 1, 16, 2, 64)
    start = 100_000
    expected = llama_rope(x, start, dtype=torch.float64)
    got = apply_rope_pairs(x.transpose(1, 2), start + torch.arange(16)).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)


# =========================================================================================================
# (b) Hugging Face rotate_half vs apply_rope_halves, and the permuted layout vs apply_rope_pairs
# =========================================================================================================
@given(d=even_d, B=small, H=small, T=seq_len, seed=seeds, dtype=float_dtypes)
def test_halves_matches_hf_rotate_half(d, B, H, T, seed, dtype):
    x = randn(seed, B, H, T, d, dtype=dtype)
    position_ids = randint(seed, max_pos(dtype) + 1, B, T)                   # one row of positions per sequence
    expected = hf_rope(x, position_ids)
    got = apply_rope_halves(x, position_ids[:, None, :])
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, **TOL[dtype])


@given(d=even_d, B=small, H=small, T=seq_len, seed=seeds, dtype=float_dtypes)
def test_hf_on_permuted_layout_matches_pairs_permuted(d, B, H, T, seed, dtype):
    x = randn(seed, B, H, T, d, dtype=dtype)
    position_ids = randint(seed, max_pos(dtype) + 1, B, T)
    P = pairs_to_halves(d)
    expected = hf_rope(x[..., P], position_ids)                             # halves oracle on permuted input
    got = apply_rope_pairs(x, position_ids[:, None, :])[..., P]
    torch.testing.assert_close(got, expected, **TOL[dtype])
    # ... and so the two conventions give the same attention scores
    q, k = randn(seed + 2, B, H, T, d, dtype=dtype), x
    pos = position_ids[:, None, :]
    s_pairs = apply_rope_pairs(q, pos) @ apply_rope_pairs(k, pos).transpose(-1, -2)
    s_halves = apply_rope_halves(q[..., P], pos) @ apply_rope_halves(k[..., P], pos).transpose(-1, -2)
    torch.testing.assert_close(s_halves, s_pairs, atol=1e-9 if dtype == torch.float64 else 1e-4, rtol=1e-5)


@pytest.mark.parametrize("d", [2, 4, 6, 16, 128])
def test_pairs_to_halves_is_odd_then_even_elements(d):
    P = pairs_to_halves(d)
    # 1-based (y_1, y_3, ..., y_{d-1}, y_2, y_4, ..., y_d) is 0-based (0, 2, ..., d-2, 1, 3, ..., d-1)
    assert P.tolist() == list(range(0, d, 2)) + list(range(1, d, 2))
    assert P.dtype == torch.int64


# =========================================================================================================
# (c) the explicit matrix: block_diag of 2×2 rotations from math.cos / math.sin
# =========================================================================================================
@pytest.mark.parametrize("m,d", [(0, 2), (1, 2), (1, 4), (3, 8), (17, 16), (250, 64), (-5, 6)])
def test_rope_matrix_matches_block_diag(m, d):
    R = rope_matrix(m, d)
    assert R.shape == (d, d) and R.dtype == torch.float64
    torch.testing.assert_close(R, oracle_matrix(m, d), atol=1e-12, rtol=0)


def test_rope_matrix_zero_is_identity_and_base_and_dtype():
    torch.testing.assert_close(rope_matrix(0, 10), torch.eye(10, dtype=torch.float64), atol=0, rtol=0)
    torch.testing.assert_close(rope_matrix(5, 64, 500000.0), oracle_matrix(5, 64, 500000.0), atol=1e-12, rtol=0)
    R32 = rope_matrix(17, 16, dtype=torch.float32)
    assert R32.dtype == torch.float32
    torch.testing.assert_close(R32, oracle_matrix(17, 16).float(), atol=1e-6, rtol=1e-6)


@given(m=st.integers(-300, 300), d=even_d)
def test_rope_matrix_matches_block_diag_property(m, d):
    torch.testing.assert_close(rope_matrix(m, d), oracle_matrix(m, d), atol=1e-11, rtol=0)


@pytest.mark.parametrize("fn_layout", ["pairs", "halves"])
@given(d=even_d, T=seq_len, seed=seeds)
def test_matrix_times_vector_matches_elementwise_for_each_position(fn_layout, d, T, seed):
    x = randn(seed, T, d)
    positions = randint(seed, 301, T)
    if fn_layout == "pairs":
        out = apply_rope_pairs(x, positions)
    else:  # the halves form is the pairs form conjugated by the permutation
        P = pairs_to_halves(d)
        inv = torch.argsort(P)
        out = apply_rope_halves(x[..., P], positions)[..., inv]
    for t in range(T):
        m = int(positions[t])
        torch.testing.assert_close(out[t], oracle_matrix(m, d) @ x[t], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out[t], rope_matrix(m, d) @ x[t], atol=1e-10, rtol=1e-10)


# =========================================================================================================
# (d) the frequencies θ_i and the angles m·θ_i
# =========================================================================================================
@pytest.mark.parametrize("base", [10000.0, 500000.0])
@pytest.mark.parametrize("d", [2, 4, 8, 64, 128])
def test_rope_thetas_match_python(d, base):
    expected = torch.tensor(python_thetas(d, base), dtype=torch.float64)
    got = rope_thetas(d, base, dtype=torch.float64)
    assert got.shape == (d // 2,)
    torch.testing.assert_close(got, expected, atol=0, rtol=1e-14)
    got32 = rope_thetas(d, base)
    assert got32.dtype == torch.float32                                    # default dtype
    torch.testing.assert_close(got32, expected.float(), atol=0, rtol=1e-7)
    assert got[0].item() == 1.0                                            # θ_1 = base^0
    assert math.isclose(got[-1].item(), base ** (-(d - 2) / d), rel_tol=1e-14)
    assert bool((got[1:] < got[:-1]).all())                                # strictly decreasing


def test_rope_thetas_default_base_is_lecture_10000():
    torch.testing.assert_close(rope_thetas(8, dtype=torch.float64),
                               torch.tensor([1.0, 0.1, 0.01, 0.001], dtype=torch.float64), atol=0, rtol=1e-14)


@given(d=even_d, T=seq_len, seed=seeds)
def test_rope_angles_are_m_times_theta(d, T, seed):
    positions = randint(seed, 1000, 2, T)
    got = rope_angles(positions, d, dtype=torch.float64)
    assert got.shape == (2, T, d // 2)
    thetas = python_thetas(d)
    expected = torch.tensor([[[int(m) * th for th in thetas] for m in row] for row in positions],
                            dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=0, rtol=1e-13)


# =========================================================================================================
# properties
# =========================================================================================================
@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, B=small, T=seq_len, seed=seeds, dtype=float_dtypes)
def test_norm_preserved(fn, d, B, T, seed, dtype):
    x = randn(seed, B, T, d, dtype=dtype)
    out = fn(x, randint(seed, 301, B, T))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), **TOL[dtype])


@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, m=positions_st, n=positions_st, s=st.integers(-200, 200), seed=seeds)
def test_scores_depend_only_on_relative_position(fn, d, m, n, s, seed):
    """q~_m · k~_n == q~_{m+s} · k~_{n+s}, and == q^T R_{n-m} k (lecture: RoPE is a relative encoding)."""
    q, k = randn(seed, 1, d), randn(seed + 1, 1, d)
    m, n = max(m, -s, 0), max(n, -s, 0)                                     # keep m+s, n+s >= 0

    def score(a: int, b: int) -> float:
        return float((fn(q, torch.tensor([a])) * fn(k, torch.tensor([b]))).sum())

    scale = float(q.norm() * k.norm())
    assert math.isclose(score(m, n), score(m + s, n + s), rel_tol=0, abs_tol=1e-10 * scale + 1e-12)
    if fn is apply_rope_pairs:
        expected = float(q[0] @ (oracle_matrix(n - m, d) @ k[0]))
        assert math.isclose(score(m, n), expected, rel_tol=0, abs_tol=1e-10 * scale + 1e-12)


@given(m=st.integers(-500, 500), d=even_d)
def test_rope_matrix_is_orthogonal(m, d):
    R = rope_matrix(m, d)
    eye = torch.eye(d, dtype=torch.float64)
    torch.testing.assert_close(R.T @ R, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(R @ R.T, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(rope_matrix(-m, d), R.T, atol=1e-12, rtol=0)   # R_{-m} = R_m^{-1} = R_m^T


@given(m=st.integers(-500, 500), n=st.integers(-500, 500), d=even_d)
def test_rope_matrix_composes(m, n, d):
    torch.testing.assert_close(rope_matrix(m, d) @ rope_matrix(n, d), rope_matrix(m + n, d),
                               atol=1e-11, rtol=0)


@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, B=small, H=small, T=seq_len, data=st.data(), seed=seeds, dtype=float_dtypes)
def test_kv_cache_offset(fn, d, B, H, T, data, seed, dtype):
    """All T tokens at positions 0..T-1 == the first T0 at 0..T0-1, then the rest at T0..T-1."""
    T0 = data.draw(st.integers(0, T), label="T0")
    x = randn(seed, B, H, T, d, dtype=dtype)
    whole = fn(x, torch.arange(T))
    first = fn(x[..., :T0, :], torch.arange(T0))
    rest = fn(x[..., T0:, :], T0 + torch.arange(T - T0))
    torch.testing.assert_close(torch.cat((first, rest), dim=-2), whole, **TOL[dtype])
    # decoding one token at a time with a growing offset gives the same rows
    for t in range(T0, T):
        torch.testing.assert_close(fn(x[..., t:t + 1, :], torch.tensor([t])), whole[..., t:t + 1, :], **TOL[dtype])


@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, B=small, H=small, T=seq_len, seed=seeds, dtype=float_dtypes)
def test_broadcast_positions_per_sequence(fn, d, B, H, T, seed, dtype):
    """positions of shape (B, 1, T) (one offset per sequence) == a loop over the batch."""
    x = randn(seed, B, H, T, d, dtype=dtype)
    offsets = randint(seed, 200, B)
    positions = offsets[:, None, None] + torch.arange(T)                     # (B, 1, T)
    out = fn(x, positions)
    assert out.shape == x.shape
    for b in range(B):
        torch.testing.assert_close(out[b], fn(x[b], positions[b, 0]), **TOL[dtype])
        for h in range(H):
            torch.testing.assert_close(out[b, h], fn(x[b, h], positions[b, 0]), **TOL[dtype])


@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, B=small, H=small, T=seq_len, seed=seeds)
def test_broadcast_full_positions_and_shared_positions(fn, d, B, H, T, seed):
    x = randn(seed, B, H, T, d)
    positions = randint(seed, 300, B, H, T)                                  # one position per vector
    out = fn(x, positions)
    for b in range(B):
        for h in range(H):
            torch.testing.assert_close(out[b, h], fn(x[b, h], positions[b, h]), **TOL[torch.float64])
    shared = torch.arange(T)
    torch.testing.assert_close(fn(x, shared), fn(x, shared.expand(B, H, T)), atol=0, rtol=0)
    torch.testing.assert_close(fn(x, shared.int()), fn(x, shared), atol=0, rtol=0)     # int32 positions


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("fn", APPLY)
@given(d=even_d, T=seq_len, start=st.integers(0, 300), seed=seeds)
def test_low_precision_keeps_dtype_and_is_close_to_float32(fn, low, d, T, start, seed):
    """bf16/fp16 in, same dtype out, close to an independent float32 oracle on the same (rounded) input.
    Positions up to 300 catch angles computed in bf16/fp16 (bf16 holds 300 only to ±1)."""
    x = randn(seed, 2, T, d, dtype=torch.float32).to(low)
    positions = start + torch.arange(T)
    out = fn(x, positions)
    assert out.dtype == low and out.shape == x.shape
    x32 = x.float()
    if fn is apply_rope_pairs:
        expected = llama_rope(x32[:, :, None, :], start)[:, :, 0, :]       # (B, T, H=1, d) for Llama
    else:
        expected = hf_rope(x32[:, None], positions.expand(2, T))[:, 0]       # (B, H=1, T, d) for HF
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=1e-2)


@pytest.mark.parametrize("fn", APPLY)
def test_float64_stays_float64(fn):
    x = randn(11, 2, 5, 8)
    out = fn(x, torch.arange(5))
    assert out.dtype == torch.float64
    x32 = x.float()
    assert fn(x32, torch.arange(5)).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn", APPLY)
def test_inputs_not_modified(fn, dtype):
    x = randn(12, 2, 3, 6, 8, dtype=dtype)
    positions = 3 + torch.arange(6)
    x_before, pos_before = x.clone(), positions.clone()
    out = fn(x, positions)
    assert torch.equal(x, x_before) and torch.equal(positions, pos_before)
    assert out.data_ptr() != x.data_ptr()
    assert not torch.equal(out, x)      # it did rotate something (positions >= 3)


@pytest.mark.parametrize("fn", APPLY)
def test_position_zero_is_identity_and_d2_is_a_plain_rotation(fn):
    x = randn(13, 4, 16)
    torch.testing.assert_close(fn(x, torch.zeros(4, dtype=torch.long)), x, atol=0, rtol=0)
    # d = 2: one pair, θ_1 = 1, so position m rotates (a, b) by m radians
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, -2.0]], dtype=torch.float64)
    m = torch.tensor([1, 2, 7])
    expected = torch.tensor([[math.cos(1), math.sin(1)], [-math.sin(2), math.cos(2)],
                             [3 * math.cos(7) + 2 * math.sin(7), 3 * math.sin(7) - 2 * math.cos(7)]],
                            dtype=torch.float64)
    torch.testing.assert_close(fn(y, m), expected, atol=1e-12, rtol=0)


# =========================================================================================================
# errors
# =========================================================================================================
@pytest.mark.parametrize("call", [
    pytest.param(lambda: apply_rope_pairs(torch.zeros(2, 5), torch.arange(2)), id="pairs"),
    pytest.param(lambda: apply_rope_halves(torch.zeros(2, 5), torch.arange(2)), id="halves"),
    pytest.param(lambda: rope_thetas(7), id="thetas"),
    pytest.param(lambda: rope_thetas(0), id="thetas-zero"),
    pytest.param(lambda: rope_matrix(1, 3), id="matrix"),
    pytest.param(lambda: pairs_to_halves(9), id="pairs_to_halves"),
])
def test_odd_dimension_raises_value_error(call):
    with pytest.raises(ValueError, match=r"even"):
        call()


@pytest.mark.parametrize("fn", APPLY)
@pytest.mark.parametrize("positions", [
    pytest.param(torch.arange(4, dtype=torch.float32), id="float32"),
    pytest.param(torch.arange(4, dtype=torch.float64), id="float64"),
    pytest.param([0, 1, 2, 3], id="list"),
])
def test_float_or_non_tensor_positions_raise_type_error(fn, positions):
    with pytest.raises(TypeError, match=r"positions must be an integer tensor"):
        fn(torch.zeros(2, 4, 8), positions)


@pytest.mark.parametrize("fn", APPLY)
@pytest.mark.parametrize("shape", [(5,), (2, 4), (3, 1, 4), (2, 2, 4, 1)])
def test_positions_that_do_not_broadcast_raise_value_error(fn, shape):
    x = torch.zeros(2, 3, 4, 8)                                                 # x.shape[:-1] = (2, 3, 4)
    with pytest.raises(ValueError, match=r"do not broadcast"):
        fn(x, torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("fn", APPLY)
def test_bad_x_raises(fn):
    with pytest.raises(TypeError, match=r"floating-point"):
        fn(torch.zeros(2, 8, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, d\)"):
        fn(torch.zeros(8), torch.arange(1))


# =========================================================================================================
# devices: the cpu param always runs; the cuda param (marked cuda) is skipped without a GPU
# =========================================================================================================
class TestDevices:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    @pytest.mark.parametrize("fn", APPLY)
    def test_output_on_input_device_and_agrees_with_cpu(self, fn, dtype, device):
        x_cpu = randn(21, 2, 3, 16, 32, dtype=dtype)
        pos_cpu = randint(21, 60, 2, 1, 16)
        expected = fn(x_cpu, pos_cpu)
        out = fn(x_cpu.to(device), pos_cpu.to(device))
        assert out.device == x_cpu.to(device).device
        assert out.dtype == dtype and out.shape == x_cpu.shape
        tol = dict(atol=3e-2, rtol=1e-2) if dtype == torch.bfloat16 else TOL[dtype]
        torch.testing.assert_close(out.cpu(), expected, **tol)

    @pytest.mark.parametrize("fn", APPLY)
    def test_cpu_positions_follow_x_to_its_device(self, fn, device):
        x = randn(22, 4, 8).to(device)
        out = fn(x, torch.arange(4))                                          # positions stay on the CPU
        assert out.device == x.device
        torch.testing.assert_close(out.cpu(), fn(x.cpu(), torch.arange(4)), **TOL[torch.float64])

    def test_thetas_and_matrix_on_device(self, device):
        th = rope_thetas(16, device=device, dtype=torch.float64)
        assert th.device.type == device.type
        torch.testing.assert_close(th.cpu(), torch.tensor(python_thetas(16), dtype=torch.float64),
                                   atol=0, rtol=1e-14)
        R = rope_matrix(9, 8, device=device)
        assert R.device.type == device.type
        torch.testing.assert_close(R.cpu(), oracle_matrix(9, 8), atol=1e-12, rtol=0)


@pytest.mark.cuda
def test_cuda_matches_llama_oracle_on_cpu():
    x = randn(31, 2, 32, 4, 64, dtype=torch.float32)
    expected = llama_rope(x, 10)
    got = apply_rope_pairs(x.transpose(1, 2).cuda(), (10 + torch.arange(32)).cuda()).transpose(1, 2)
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), expected, **TOL[torch.float32])
