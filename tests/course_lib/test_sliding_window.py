"""Sliding-window attention (course_lib.attention.sliding_window) against independent oracles.

The lecture's window: query t attends to keys t − ½w .. t (½w + 1 tokens, the rightmost on the diagonal).
Oracles written out here, never course_lib against itself:

* the mask from nested Python loops, and from ``tril``/``triu`` of a matrix of ones;
* ``F.scaled_dot_product_attention`` with a boolean band mask built in this file;
* ``torch.nn.attention.flex_attention`` with a sliding-window ``mask_mod`` (torch >= 2.6; skipped cleanly
  where it is missing or fails);
* allenai/longformer's ``sliding_chunks`` (non-causal, one-sided window, length padded to a multiple of
  twice that window), transcribed below, plus a small causal adaptation (the future half of its 2w+1
  diagonals masked);
* a rolling buffer written with ``collections.deque(maxlen=W)``, and Mistral's and Hugging Face's masks.

Then hypothesis properties (batch, heads, lengths, windows, dtypes), locality, gradients, errors, the
graded exercises (reference passes, plausible mistakes fail) and devices (CUDA skipped where absent).
"""
from __future__ import annotations

import math
import warnings
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from course_lib import grading
from course_lib.attention import sliding_window as sw
from course_lib.attention.core import attention
from course_lib.attention.sliding_window import (RollingBufferCache, chunk_band_allowed, rolling_buffer_decode_step,
                                                 sliding_window_allowed, sliding_window_chunks, sliding_window_loop,
                                                 sliding_window_mask, sliding_window_naive)

pytestmark = pytest.mark.sliding_window

IMPLEMENTATIONS = [pytest.param(sliding_window_naive, id="naive"), pytest.param(sliding_window_loop, id="loop"),
                   pytest.param(sliding_window_chunks, id="chunks")]
TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=2e-5)}

# ---------------------------------------------------------------------------------------------------------
# strategies and helpers
# ---------------------------------------------------------------------------------------------------------
windows = st.integers(1, 12).map(lambda k: 2 * k)           # w = 2, 4, ..., 24 (½w + 1 = 2 .. 13 tokens)
lengths = st.integers(1, 40)
small = st.integers(1, 3)
head_dims = st.sampled_from([4, 8, 16])
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine each OpenMP region of a 2-thread pool
    can wait milliseconds for the other thread: one thread keeps this file fast (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def qkv(seed: int, *shape: int, dtype: torch.dtype = torch.float64, d_v: int | None = None):
    v_shape = shape if d_v is None else (*shape[:-1], d_v)
    q, k = randn(seed, *shape, dtype=dtype), randn(seed + 1, *shape, dtype=dtype)
    return q, k, randn(seed + 2, *v_shape, dtype=dtype)


def python_allowed(T: int, w: int) -> list[list[bool]]:
    """The lecture's window with two loops: query t sees key j iff t − w/2 ≤ j ≤ t."""
    return [[t - w // 2 <= j <= t for j in range(T)] for t in range(T)]


def band(T: int, w: int) -> torch.Tensor:
    """The boolean band from a matrix of ones: lower triangle (causal), minus what lies below diagonal −w/2."""
    return torch.ones(T, T).tril().triu(-(w // 2)).bool()


def sdpa_oracle(q, k, v, w):
    """PyTorch's F.scaled_dot_product_attention with the boolean band mask, in float64."""
    T = q.shape[-2]
    out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=band(T, w).to(q.device))
    return out


# ---------------------------------------------------------------------------------------------------------
# oracle: allenai/longformer longformer/sliding_chunks.py (non-causal, one-sided window w_lf, seqlen % 2w_lf == 0)
# ---------------------------------------------------------------------------------------------------------
def lf_skew(x, direction, padding_value):
    """Convert diagonals into columns (or columns into diagonals depending on `direction`)."""
    x_padded = F.pad(x, direction, value=padding_value)
    return x_padded.view(*x_padded.size()[:-2], x_padded.size(-1), x_padded.size(-2))


def lf_skew2(x, padding_value):
    """Shift every row 1 step to the right, converting columns into diagonals."""
    B, C, M, L = x.size()
    x = F.pad(x, (0, M + 1), value=padding_value)
    x = x.view(B, C, -1)
    x = x[:, :, :-M]
    x = x.view(B, C, M, M + L)
    return x[:, :, :, :-1]


def lf_chunk(x, w):
    """Overlapping chunks of size 2w with an overlap of w (as_strided)."""
    x = x.view(x.size(0), x.size(1) // (w * 2), w * 2, x.size(2))
    chunk_size = list(x.size())
    chunk_size[1] = chunk_size[1] * 2 - 1
    chunk_stride = list(x.stride())
    chunk_stride[1] = chunk_stride[1] // 2
    return x.as_strided(size=chunk_size, stride=chunk_stride)


def lf_mask_invalid_locations(input_tensor, w):
    """Longformer's mask of the diagonals that fall before the start / after the end (dilation 1)."""
    diagonals = []
    for j in range(-w, 1):
        diagonal_mask = torch.zeros(w, dtype=torch.uint8)
        diagonal_mask[:-j] = 1
        diagonals.append(diagonal_mask)
    beginning_mask = torch.stack(diagonals, dim=-1)[None, :, None, :].bool().to(input_tensor.device)
    ending_mask = beginning_mask.flip(dims=(1, 3))
    seq_len = input_tensor.size(1)
    beginning_input = input_tensor[:, :w, :, :w + 1]
    beginning_input.masked_fill_(beginning_mask[:, :seq_len].expand(beginning_input.size()), -float("inf"))
    ending_input = input_tensor[:, -w:, :, -(w + 1):]
    ending_input.masked_fill_(ending_mask[:, -seq_len:].expand(ending_input.size()), -float("inf"))


def lf_sliding_chunks_matmul_qk(q, k, w, padding_value):
    """(bsz, seqlen, heads, d) × 2 → scores (bsz, seqlen, heads, 2w + 1); column c is key t − w + c."""
    bsz, seqlen, num_heads, head_dim = q.size()
    assert seqlen % (w * 2) == 0 and q.size() == k.size()
    chunks_count = seqlen // w - 1
    q = q.transpose(1, 2).reshape(bsz * num_heads, seqlen, head_dim)
    k = k.transpose(1, 2).reshape(bsz * num_heads, seqlen, head_dim)
    chunk_q, chunk_k = lf_chunk(q, w), lf_chunk(k, w)
    chunk_attn = torch.einsum("bcxd,bcyd->bcxy", (chunk_q, chunk_k))
    diagonal_chunk_attn = lf_skew(chunk_attn, direction=(0, 0, 0, 1), padding_value=padding_value)
    diagonal_attn = diagonal_chunk_attn.new_empty((bsz * num_heads, chunks_count + 1, w, w * 2 + 1))
    diagonal_attn[:, :-1, :, w:] = diagonal_chunk_attn[:, :, :w, :w + 1]
    diagonal_attn[:, -1, :, w:] = diagonal_chunk_attn[:, -1, w:, :w + 1]
    diagonal_attn[:, 1:, :, :w] = diagonal_chunk_attn[:, :, -(w + 1):-1, w + 1:]
    diagonal_attn[:, 0, 1:w, 1:w] = diagonal_chunk_attn[:, 0, :w - 1, 1 - w:]
    diagonal_attn = diagonal_attn.view(bsz, num_heads, seqlen, 2 * w + 1).transpose(2, 1)
    lf_mask_invalid_locations(diagonal_attn, w)
    return diagonal_attn


def lf_sliding_chunks_matmul_pv(prob, v, w):
    bsz, seqlen, num_heads, head_dim = v.size()
    assert seqlen % (w * 2) == 0 and prob.size()[:3] == v.size()[:3] and prob.size(3) == 2 * w + 1
    chunks_count = seqlen // w - 1
    chunk_prob = prob.transpose(1, 2).reshape(bsz * num_heads, seqlen // w, w, 2 * w + 1)
    v = v.transpose(1, 2).reshape(bsz * num_heads, seqlen, head_dim)
    padded_v = F.pad(v, (0, 0, w, w), value=-1)
    chunk_v_size = (bsz * num_heads, chunks_count + 1, 3 * w, head_dim)
    s = padded_v.stride()
    chunk_v = padded_v.as_strided(size=chunk_v_size, stride=(s[0], w * s[1], s[1], s[2]))
    skewed_prob = lf_skew2(chunk_prob, padding_value=0)
    context = torch.einsum("bcwd,bcdh->bcwh", (skewed_prob, chunk_v))
    return context.view(bsz, num_heads, seqlen, head_dim).transpose(1, 2)


def longformer_attention(q, k, v, one_sided: int, causal: bool):
    """(B, H, T, d) in, (B, H, T, d) out. Pads T to a multiple of 2·one_sided (Longformer's
    ``pad_to_window_size``); the causal adaptation masks the future half of the 2w + 1 diagonals."""
    B, H, T, d = q.shape
    pad = (-T) % (2 * one_sided)
    q, k, v = (F.pad(x, (0, 0, 0, pad)).transpose(1, 2) for x in (q, k, v))   # (B, T', H, d)
    scores = lf_sliding_chunks_matmul_qk(q / math.sqrt(d), k, one_sided, padding_value=0)  # (B, T', H, 2w+1)
    if causal:
        scores[..., one_sided + 1:] = -float("inf")        # keys t + 1 .. t + w: the future
    else:                                                   # padding keys: Longformer's attention_mask
        key_pos = torch.arange(T + pad)[:, None] - one_sided + torch.arange(2 * one_sided + 1)   # (T', 2w+1)
        scores = scores.masked_fill((key_pos >= T)[None, :, None, :], -float("inf"))
    prob = torch.softmax(scores, dim=-1)
    out = lf_sliding_chunks_matmul_pv(prob, v, one_sided)  # (B, T', H, d)
    return out.transpose(1, 2)[:, :, :T]


# ---------------------------------------------------------------------------------------------------------
# oracle: flex_attention with a sliding-window mask_mod
# ---------------------------------------------------------------------------------------------------------
def flex_oracle(q, k, v, w):
    if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
        pytest.skip(f"flex_attention oracle needs torch >= 2.6, found {torch.__version__}")
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as e:
        pytest.skip(f"torch.nn.attention.flex_attention unavailable: {e}")
    half, T = w // 2, q.shape[-2]

    def sliding_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx <= half)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # "flex_attention called without torch.compile()": fine here
            block_mask = create_block_mask(sliding_window, None, None, T, T, device=str(q.device))
            return flex_attention(q, k, v, block_mask=block_mask)
    except Exception as e:  # noqa: BLE001 - any failure of the oracle on this platform is a skip
        pytest.skip(f"flex_attention does not run here ({type(e).__name__}: {str(e)[:80]})")


# =========================================================================================================
# (a) the mask
# =========================================================================================================
@pytest.mark.parametrize("T,w", [(1, 2), (6, 6), (10, 4), (5, 20), (17, 8), (32, 2)])
def test_mask_matches_python_loops_and_tril_triu(T, w):
    M = sliding_window_mask(T, w)
    assert M.shape == (T, T) and M.dtype == torch.float32
    expected = torch.tensor(python_allowed(T, w))
    assert torch.equal(M == 0, expected)
    assert torch.equal(torch.isneginf(M), ~expected)                   # 0 / −∞, nothing else
    assert torch.equal(band(T, w), expected)
    assert torch.equal(sliding_window_allowed(T, w), expected)


def test_mask_lecture_example_w6_has_four_tokens_ending_on_the_diagonal():
    allowed = sliding_window_mask(10, 6) == 0
    assert allowed.sum(dim=1).tolist() == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]   # ½w + 1 = 4 tokens once full
    assert bool(allowed.diagonal().all())                                   # rightmost element: the token itself
    assert not bool(allowed.triu(1).any())                                  # causal
    assert allowed[9].nonzero().flatten().tolist() == [6, 7, 8, 9]


@given(T=st.integers(0, 50), w=windows)
def test_mask_properties(T, w):
    M = sliding_window_mask(T, w, dtype=torch.float64)
    assert M.dtype == torch.float64 and M.shape == (T, T)
    allowed = M == 0
    counts = allowed.sum(dim=1)
    assert torch.equal(counts, torch.clamp(torch.arange(T) + 1, max=w // 2 + 1))
    assert torch.equal(allowed, torch.tensor(python_allowed(T, w), dtype=torch.bool).reshape(T, T))


def test_mask_with_large_window_is_causal():
    T = 12
    torch.testing.assert_close(sliding_window_mask(T, 2 * T), torch.full((T, T), -math.inf).triu(1))


@given(T=st.integers(1, 20), S_extra=st.integers(0, 20), w=windows)
def test_allowed_with_earlier_keys_is_the_last_rows_of_the_full_mask(T, S_extra, w):
    S = T + S_extra
    assert torch.equal(sliding_window_allowed(T, w, S), band(S, w)[S - T:])


def test_mask_libraries_off_by_one():
    """The lecture's ½w + 1 tokens in the two library conventions.

    Mistral's reference prefill: triu(tril(ones), diagonal=-W) keeps W + 1 keys, so W = ½w there.
    Hugging Face / xformers: key j is visible when q − W < j ≤ q, W keys, so W = ½w + 1 there (the rolling
    buffer's W). Using W = ½w + 1 in Mistral's formula is one token too many."""
    T, w = 16, 8
    ours = sliding_window_mask(T, w) == 0
    mistral = lambda W: torch.triu(torch.tril(torch.ones(T, T)), diagonal=-W).bool()       # noqa: E731
    q_idx, kv_idx = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hf = lambda W: (kv_idx <= q_idx) & (kv_idx > q_idx - W)                              # noqa: E731
    assert torch.equal(ours, mistral(w // 2))
    assert torch.equal(ours, hf(w // 2 + 1))
    assert not torch.equal(ours, mistral(w // 2 + 1))
    assert mistral(w // 2 + 1).sum(1).max() == w // 2 + 2


def test_mask_device_and_dtype():
    M = sliding_window_mask(5, 4, device="meta", dtype=torch.bfloat16)
    assert M.device.type == "meta" and M.dtype == torch.bfloat16 and M.shape == (5, 5)


# =========================================================================================================
# (b) the three implementations against SDPA with a band mask, flex_attention, Longformer
# =========================================================================================================
@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@given(B=small, H=small, T=lengths, w=windows, d=head_dims, seed=seeds, dtype=float_dtypes)
def test_matches_sdpa_with_band_mask(fn, B, H, T, w, d, seed, dtype):
    q, k, v = qkv(seed, B, H, T, d, dtype=dtype)
    out = fn(q, k, v, w)
    assert out.shape == (B, H, T, d) and out.dtype == dtype
    torch.testing.assert_close(out.double(), sdpa_oracle(q, k, v, w), **TOL[dtype])


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@given(T=lengths, w=windows, d=head_dims, d_v=head_dims, seed=seeds)
def test_value_dimension_may_differ_and_leading_dims_are_free(fn, T, w, d, d_v, seed):
    q, k, v = qkv(seed, T, d, d_v=d_v)                                    # no batch, no heads
    out = fn(q, k, v, w)
    assert out.shape == (T, d_v)
    torch.testing.assert_close(out, sdpa_oracle(q, k, v, w), **TOL[torch.float64])
    q5, k5, v5 = qkv(seed, 2, 1, 2, T, d, d_v=d_v)                        # three leading dims
    torch.testing.assert_close(fn(q5, k5, v5, w), sdpa_oracle(q5, k5, v5, w), **TOL[torch.float64])


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@pytest.mark.parametrize("T,w", [(1, 8), (7, 8), (8, 8), (9, 8), (3, 2), (40, 6), (33, 64), (64, 16), (65, 16)])
def test_matches_flex_attention(fn, T, w):
    q, k, v = qkv(7, 2, 3, T, 16, dtype=torch.float32)
    expected = flex_oracle(q, k, v, w)
    torch.testing.assert_close(fn(q, k, v, w), expected, **TOL[torch.float32])


def test_longformer_oracle_itself_matches_sdpa_non_causally():
    """The transcription of Longformer is right: non-causal, it is a symmetric band |t − j| ≤ w."""
    for T, one_sided in [(8, 2), (13, 3), (5, 4), (32, 4)]:
        q, k, v = qkv(T, 2, 3, T, 8)
        t = torch.arange(T)
        sym = (t[:, None] - t[None, :]).abs() <= one_sided
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=sym)
        torch.testing.assert_close(longformer_attention(q, k, v, one_sided, causal=False), expected,
                                   **TOL[torch.float64])


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@given(B=small, H=small, T=lengths, w=windows.filter(lambda w: w >= 4), seed=seeds)
def test_matches_longformer_sliding_chunks_causal(fn, B, H, T, w, seed):
    """Longformer's one-sided window is the lecture's ½w; its length is padded to a multiple of w.
    (Its slicing ``[1 - w:]`` needs a one-sided window of at least 2, so w >= 4 here.)"""
    q, k, v = qkv(seed, B, H, T, 8)
    expected = longformer_attention(q, k, v, w // 2, causal=True)
    torch.testing.assert_close(fn(q, k, v, w), expected, **TOL[torch.float64])


@given(B=small, H=small, T=st.integers(1, 24), w=windows, seed=seeds)
def test_large_window_is_causal_attention(B, H, T, w, seed):
    """When ½w + 1 ≥ T every query sees its whole past: plain causal attention."""
    q, k, v = qkv(seed, B, H, T, 8)
    w = max(w, 2 * T)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for fn in (sliding_window_naive, sliding_window_loop, sliding_window_chunks):
        torch.testing.assert_close(fn(q, k, v, w), expected, **TOL[torch.float64])


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_smallest_window_two_tokens_by_hand(fn):
    """w = 2: query t averages v_{t−1} and v_t with weights softmax(q·k / √d)."""
    q, k, v = qkv(3, 6, 4)
    out = fn(q, k, v, 2)
    torch.testing.assert_close(out[0], v[0], **TOL[torch.float64])
    for t in range(1, 6):
        s = torch.stack([q[t] @ k[t - 1], q[t] @ k[t]]) / 2.0             # √d = 2
        a = torch.softmax(s, dim=0)
        torch.testing.assert_close(out[t], a[0] * v[t - 1] + a[1] * v[t], **TOL[torch.float64])


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@given(T=st.integers(2, 30), w=windows, seed=seeds, data=st.data())
def test_keys_outside_the_window_do_not_matter(fn, T, w, seed, data):
    """Changing k_j, v_j for j < t − ½w or j > t leaves output row t unchanged (and changes it inside)."""
    t = data.draw(st.integers(0, T - 1), label="t")
    q, k, v = qkv(seed, 2, T, 8)
    out = fn(q, k, v, w)
    outside = [j for j in range(T) if j < t - w // 2 or j > t]
    k2, v2 = k.clone(), v.clone()
    k2[:, outside] += 5.0
    v2[:, outside] -= 3.0
    torch.testing.assert_close(fn(q, k2, v2, w)[:, t], out[:, t], **TOL[torch.float64])
    v3 = v.clone()
    v3[:, max(0, t - w // 2)] += 1.0                                       # inside the window: it matters
    assert not torch.allclose(fn(q, k, v3, w)[:, t], out[:, t])


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
@given(T=lengths, w=windows, seed=seeds)
def test_low_precision_keeps_dtype_and_is_close(fn, low, T, w, seed):
    q, k, v = qkv(seed, 2, T, 16, dtype=low)
    out = fn(q, k, v, w)
    assert out.dtype == low and out.shape == (2, T, 16)
    torch.testing.assert_close(out.double(), sdpa_oracle(q, k, v, w), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_empty_sequence(fn):
    q, k, v = qkv(0, 2, 0, 8, d_v=5)
    out = fn(q, k, v, 4)
    assert out.shape == (2, 0, 5) and out.dtype == q.dtype


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_inputs_not_modified(fn):
    q, k, v = qkv(4, 2, 3, 11, 8, dtype=torch.float32)
    before = [x.clone() for x in (q, k, v)]
    fn(q, k, v, 6)
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), before))


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_gradients_match_sdpa(fn):
    """Autograd through each implementation gives SDPA's gradients (and gradcheck passes for chunks)."""
    q, k, v = (x.requires_grad_() for x in qkv(5, 2, 13, 4))
    grads = torch.autograd.grad(fn(q, k, v, 4).square().sum(), (q, k, v))
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    expected = torch.autograd.grad(sdpa_oracle(q2, k2, v2, 4).square().sum(), (q2, k2, v2))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, **TOL[torch.float64])
    if fn is sliding_window_chunks:
        assert torch.autograd.gradcheck(lambda a, b, c: fn(a, b, c, 4), (q, k, v))


def test_chunk_band_is_the_band_seen_through_the_chunks():
    """Block c, row r, column s of the chunk band = the global band at (c·½w + r, (c − 1)·½w + s)."""
    for n, w in [(1, 2), (3, 4), (5, 8), (2, 12)]:
        h, T = w // 2, n * (w // 2)
        full = band(T, w)
        allowed = chunk_band_allowed(n, w)
        assert allowed.shape == (n, h, w)
        for c in range(n):
            for r in range(h):
                for s in range(w):
                    j = (c - 1) * h + s
                    assert bool(allowed[c, r, s]) == (0 <= j < T and bool(full[c * h + r, j]))


# =========================================================================================================
# (c) the rolling buffer cache
# =========================================================================================================
def deque_decode(q, k, v, w):
    """A rolling buffer with collections.deque(maxlen=½w + 1): appending drops the oldest token."""
    W = w // 2 + 1
    keys, values, outs = deque(maxlen=W), deque(maxlen=W), []
    for t in range(q.shape[-2]):
        keys.append(k[..., t, :])
        values.append(v[..., t, :])
        K, V = torch.stack(list(keys), dim=-2), torch.stack(list(values), dim=-2)   # (..., ≤W, d)
        outs.append(F.scaled_dot_product_attention(q[..., t:t + 1, :], K, V))
    return torch.cat(outs, dim=-2)


@given(B=small, H=small, T=st.integers(1, 30), T0=st.integers(0, 30), w=windows, seed=seeds, dtype=float_dtypes)
def test_rolling_buffer_decoding_equals_recomputation(B, H, T, T0, w, seed, dtype):
    """Prefill T0 tokens, then decode one at a time: the same rows as sliding-window attention recomputed
    over the whole sequence (SDPA band oracle), and as a deque of the last ½w + 1 tokens."""
    T0 = min(T0, T)
    q, k, v = qkv(seed, B, H, T, 8, dtype=dtype)
    cache = RollingBufferCache(w)
    assert cache.W == w // 2 + 1
    outs = [cache.prefill(q[..., :T0, :], k[..., :T0, :], v[..., :T0, :])] if T0 else []
    for t in range(T0, T):
        outs.append(cache.decode(q[..., t:t + 1, :], k[..., t:t + 1, :], v[..., t:t + 1, :]))
        assert cache.k.shape[-2] == w // 2 + 1                             # never grows
    got = torch.cat(outs, dim=-2)
    torch.testing.assert_close(got.double(), sdpa_oracle(q, k, v, w), **TOL[dtype])
    torch.testing.assert_close(got.double(), deque_decode(q.double(), k.double(), v.double(), w), **TOL[dtype])


@given(T=st.integers(1, 25), w=windows, seed=seeds)
def test_decode_step_function_equals_recomputation_and_slots_are_i_mod_W(T, w, seed):
    W = w // 2 + 1
    q, k, v = qkv(seed, 2, 3, T, 8)
    k_cache = torch.full((2, 3, W, 8), float("nan"), dtype=torch.float64)   # unwritten slots: never read
    v_cache = k_cache.clone()
    outs = []
    for t in range(T):
        before = k_cache.clone()
        out, k_cache2, v_cache2 = rolling_buffer_decode_step(q[..., t:t + 1, :], k[..., t:t + 1, :],
                                                            v[..., t:t + 1, :], k_cache, v_cache, t)
        assert torch.equal(k_cache.nan_to_num(7.0), before.nan_to_num(7.0)), "the input cache was modified"
        k_cache, v_cache = k_cache2, v_cache2
        outs.append(out)
        for i in range(max(0, t - W + 1), t + 1):                          # position i sits in slot i mod W
            assert torch.equal(k_cache[..., i % W, :], k[..., i, :])
            assert torch.equal(v_cache[..., i % W, :], v[..., i, :])
    torch.testing.assert_close(torch.cat(outs, dim=-2), sdpa_oracle(q, k, v, w), **TOL[torch.float64])


def test_rolling_buffer_positions_and_mistral_scatter():
    """After 11 tokens with W = 4 the slots hold positions 8, 9, 10, 7 (Mistral: slot = position mod W)."""
    w, T = 6, 11
    q, k, v = qkv(9, 1, 2, T, 4)
    cache = RollingBufferCache(w)
    cache.prefill(q, k, v)
    assert cache.positions().tolist() == [8, 9, 10, 7]
    # mistral-inference's one_file_ref: scatter_pos = (positions[-W:] % W); cache_k[:, scatter_pos] = xk[:, -W:]
    positions = torch.arange(T)
    scatter_pos = positions[-cache.W:] % cache.W
    expected = torch.zeros(1, 2, cache.W, 4, dtype=torch.float64)
    expected[:, :, scatter_pos] = k[:, :, -cache.W:]
    assert torch.equal(cache.k, expected)
    short = RollingBufferCache(8)
    short.prefill(q[..., :2, :], k[..., :2, :], v[..., :2, :])
    assert short.positions().tolist() == [0, 1, -1, -1, -1]


def test_mistral_off_by_one_breaks_the_equality():
    """A buffer of ½w slots (Mistral's decode with W = ½w) is one token short of the lecture's window."""
    T, w = 12, 6
    q, k, v = qkv(10, 1, 1, T, 4)
    k_cache = torch.zeros(1, 1, w // 2, 4, dtype=torch.float64)
    v_cache = k_cache.clone()
    outs = []
    for t in range(T):
        out, k_cache, v_cache = rolling_buffer_decode_step(q[..., t:t + 1, :], k[..., t:t + 1, :],
                                                           v[..., t:t + 1, :], k_cache, v_cache, t)
        outs.append(out)
    got = torch.cat(outs, dim=-2)
    expected = sdpa_oracle(q, k, v, w)
    torch.testing.assert_close(got[..., :w // 2, :], expected[..., :w // 2, :])   # same until the window is full
    assert not torch.allclose(got[..., w // 2:, :], expected[..., w // 2:, :])
    torch.testing.assert_close(got, sdpa_oracle(q, k, v, w - 2))                   # it is the window of ½w tokens


def test_prefill_twice_raises():
    q, k, v = qkv(11, 1, 3, 4)
    cache = RollingBufferCache(4)
    cache.prefill(q, k, v)
    with pytest.raises(RuntimeError, match="prefill"):
        cache.prefill(q, k, v)


# =========================================================================================================
# errors
# =========================================================================================================
@pytest.mark.parametrize("w", [0, 1, 3, -2, 2.0, True, None])
def test_bad_window_raises_value_error(w):
    q, k, v = qkv(12, 4, 8)
    for call in (lambda: sliding_window_mask(4, w), lambda: RollingBufferCache(w),
                 *[lambda fn=fn: fn(q, k, v, w) for fn in (sliding_window_naive, sliding_window_loop,
                                                           sliding_window_chunks)]):
        with pytest.raises(ValueError, match="positive even integer"):
            call()


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_bad_shapes_and_types_raise(fn):
    q, k, v = qkv(13, 2, 5, 8)
    with pytest.raises(ValueError, match="same shape"):
        fn(q, k[:, :4], v, 4)
    with pytest.raises(ValueError, match="v must have shape"):
        fn(q, k, v[:, :4], 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., T, d\)"):
        fn(q[0, 0], k[0, 0], v[0, 0], 4)
    with pytest.raises(TypeError, match="floating-point"):
        fn(q.long(), k, v, 4)


def test_decode_step_errors():
    q, k, v = qkv(14, 2, 1, 8)
    kc, vc = torch.zeros(2, 4, 8, dtype=torch.float64), torch.zeros(2, 4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="one new token"):
        rolling_buffer_decode_step(*qkv(14, 2, 2, 8), kc, vc, 0)
    with pytest.raises(ValueError, match="do not fit"):
        rolling_buffer_decode_step(q, k, v, kc[..., :4], vc, 0)
    with pytest.raises(ValueError, match="non-negative"):
        rolling_buffer_decode_step(q, k, v, kc, vc, -1)


# =========================================================================================================
# grading: the reference passes every exercise; plausible mistakes fail with a useful message
# =========================================================================================================
EXERCISES = {
    "sliding_window_mask": sw.sliding_window_mask,
    "sliding_window_loop": sw.sliding_window_loop,
    "sliding_window_chunks": sw.sliding_window_chunks,
    "rolling_buffer_decode_step": sw.rolling_buffer_decode_step,
}


@pytest.fixture(autouse=True)
def _cpu_grading(monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes_grading(name, capsys):
    ex = grading.exercises()[name]
    assert ex.reference is EXERCISES[name]
    assert len(ex.cases) >= 5 and len({c.name for c in ex.cases}) == len(ex.cases)
    assert grading.check(name, EXERCISES[name]) is None
    assert capsys.readouterr().out.startswith(f"{name}: {len(ex.cases)} cases passed on cpu")


def test_other_correct_implementations_pass_grading():
    """Any correct implementation that computes attention itself passes (naive masked attention for the
    loop and the chunks); PyTorch's fused attention gives the right numbers but is a forbidden shortcut."""
    def sdpa(q, k, v, w):
        dt = torch.promote_types(q.dtype, torch.float32)
        out = F.scaled_dot_product_attention(q.to(dt), k.to(dt), v.to(dt), attn_mask=band(q.shape[-2], w).to(q.device))
        return out.to(q.dtype)
    _fails("sliding_window_loop", sdpa, "which this exercise asks you to implement yourself")
    grading.check("sliding_window_loop", sw.sliding_window_naive)
    grading.check("sliding_window_chunks", sw.sliding_window_naive)

    def mask_by_triu(T, w, *, device=None, dtype=torch.float32):
        ones = torch.ones(T, T, device=device)
        return torch.zeros(T, T, device=device, dtype=dtype).masked_fill(
            (ones.tril().triu(-(w // 2)) == 0), float("-inf"))
    grading.check("sliding_window_mask", mask_by_triu)


def _fails(name, fn, fragment):
    with pytest.raises(AssertionError) as info:
        grading.check(name, fn)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}, case ")
    assert fragment in msg, msg
    return msg


def test_wrong_masks_fail():
    def off_by_one(T, w, *, device=None, dtype=torch.float32):     # Mistral's W + 1 with W = ½w + 1
        return sw.sliding_window_mask(T, w + 2, device=device, dtype=dtype)

    def large_negative(T, w, *, device=None, dtype=torch.float32):
        return sw.sliding_window_mask(T, w, device=device, dtype=dtype).clamp(min=-1e9)

    def boolean(T, w, *, device=None, dtype=torch.float32):
        return sw.sliding_window_allowed(T, w, device=device)

    _fails("sliding_window_mask", off_by_one, "values differ")
    _fails("sliding_window_mask", large_negative, "values differ")
    _fails("sliding_window_mask", boolean, "dtype")


def test_wrong_loops_fail():
    def no_scale(q, k, v, w):
        return sw.sliding_window_loop(q * math.sqrt(q.shape[-1]), k, v, w)

    def window_of_half_w(q, k, v, w):                              # HF's W = ½w: one token short
        return sw.sliding_window_loop(q, k, v, w - 2) if w > 2 else sw.sliding_window_loop(q, k, v, w)

    def full_causal(q, k, v, w):
        return sw.sliding_window_loop(q, k, v, 2 * q.shape[-2] + 2)

    _fails("sliding_window_loop", no_scale, "values differ")
    _fails("sliding_window_loop", window_of_half_w, "values differ")
    _fails("sliding_window_loop", full_causal, "values differ")
    _fails("sliding_window_loop", lambda q, k, v, w: sw.sliding_window_loop(q, k, v, w).float(), "dtype")


def test_wrong_chunks_fail():
    def no_front_mask(q, k, v, w):                                 # forgets that the padding before 0 is masked
        h = w // 2
        T = q.shape[-2]
        n = -(-T // h)
        dt = torch.promote_types(q.dtype, torch.float32)
        qb = F.pad(q.to(dt), (0, 0, 0, n * h - T)).unflatten(-2, (n, h)) / math.sqrt(q.shape[-1])
        kc = F.pad(k.to(dt), (0, 0, h, n * h - T)).unfold(-2, w, h)
        vc = F.pad(v.to(dt), (0, 0, h, n * h - T)).unfold(-2, w, h).transpose(-1, -2)
        r, s = torch.arange(h)[:, None], torch.arange(w)[None, :]
        M = torch.zeros(h, w, dtype=dt).masked_fill(~((r <= s) & (s <= r + h)), float("-inf")).to(q.device)
        out = torch.softmax(qb @ kc + M, dim=-1) @ vc
        return out.flatten(-3, -2)[..., :T, :].to(q.dtype)

    def only_multiples(q, k, v, w):                                # no padding at the end
        if q.shape[-2] % (w // 2):
            raise RuntimeError("shape '[2, 3, 2, 2, 8]' is invalid for input of size 240")
        return sw.sliding_window_chunks(q, k, v, w)

    msg = _fails("sliding_window_chunks", no_front_mask, "values differ")
    assert "Hint:" in msg
    _fails("sliding_window_chunks", only_multiples, "raised RuntimeError")


def test_wrong_decode_steps_fail():
    def in_place(q, k, v, k_cache, v_cache, pos):
        out, kc, vc = sw.rolling_buffer_decode_step(q, k, v, k_cache, v_cache, pos)
        k_cache.copy_(kc)
        v_cache.copy_(vc)
        return out, k_cache, v_cache

    def all_slots(q, k, v, k_cache, v_cache, pos):                 # attends to garbage before the buffer is full
        W = k_cache.shape[-2]
        k_cache, v_cache = k_cache.clone(), v_cache.clone()
        k_cache[..., pos % W, :] = k[..., 0, :]
        v_cache[..., pos % W, :] = v[..., 0, :]
        return attention(q, k_cache, v_cache), k_cache, v_cache

    def appends(q, k, v, k_cache, v_cache, pos):                   # slot (pos + 1) mod W: the wrong slot
        return sw.rolling_buffer_decode_step(q, k, v, k_cache, v_cache, pos + 1)

    _fails("rolling_buffer_decode_step", in_place, "modified its input tensor")
    _fails("rolling_buffer_decode_step", all_slots, "buffer not yet full")
    _fails("rolling_buffer_decode_step", appends, "values differ")


# =========================================================================================================
# devices: the cpu param always runs; the cuda param (marked cuda) is skipped without a GPU
# =========================================================================================================
class TestDevices:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    @pytest.mark.parametrize("fn", IMPLEMENTATIONS)
    def test_output_on_input_device_and_agrees_with_cpu(self, fn, dtype, device):
        q, k, v = qkv(21, 2, 3, 45, 16, dtype=dtype)
        expected = fn(q, k, v, 8)
        out = fn(q.to(device), k.to(device), v.to(device), 8)
        assert out.device.type == device.type and out.dtype == dtype and out.shape == (2, 3, 45, 16)
        tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else TOL[dtype]
        torch.testing.assert_close(out.cpu(), expected, **tol)

    def test_mask_and_rolling_buffer_on_device(self, device):
        M = sliding_window_mask(9, 4, device=device)
        assert M.device.type == device.type
        assert torch.equal(M.cpu(), sliding_window_mask(9, 4))
        q, k, v = (x.to(device) for x in qkv(22, 2, 10, 8))
        cache = RollingBufferCache(4)
        out = torch.cat([cache.prefill(q[:, :3], k[:, :3], v[:, :3])] +
                        [cache.decode(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1]) for t in range(3, 10)], dim=1)
        assert out.device.type == device.type
        torch.testing.assert_close(out.cpu(), sdpa_oracle(q, k, v, 4).cpu(), **TOL[torch.float64])

    def test_flex_attention_on_device(self, device):
        q, k, v = (x.to(device) for x in qkv(23, 1, 2, 70, 16, dtype=torch.float32))
        torch.testing.assert_close(sliding_window_chunks(q, k, v, 16), flex_oracle(q, k, v, 16), **TOL[torch.float32])


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes_grading_on_cuda(name):
    grading.check(name, EXERCISES[name], device=["cuda"])


@pytest.mark.cuda
def test_cuda_chunks_large_matches_sdpa():
    q, k, v = (x.cuda() for x in qkv(24, 1, 4, 2048, 64, dtype=torch.float32))
    torch.testing.assert_close(sliding_window_chunks(q, k, v, 512), sdpa_oracle(q, k, v, 512).float(),
                               atol=1e-4, rtol=1e-4)
