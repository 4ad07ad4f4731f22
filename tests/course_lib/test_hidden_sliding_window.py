"""The hidden cases of the sliding-window assignment catch the mistakes its visible tests let through
(gradient flow, a softmax shifted by one global maximum, scores overflowing float16, garbage in the empty
slots of the rolling buffer, an output that is an input, the device contract), and accept correct
implementations written another way than the references."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.attention import sliding_window as sw
from course_lib.attention.core import attention

from verdicts import fails, passes as _passes

pytestmark = [pytest.mark.grading, pytest.mark.sliding_window]


def _fails(name, fn, case, *fragments):
    return fails(name, fn, *fragments, case=case)


def _dt(x):
    return torch.promote_types(x.dtype, torch.float32)


def _softmax(s, dim=-1):
    """A hand-written softmax, stable row by row."""
    e = torch.exp(s - s.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


# ------------------------------------------------------------------------------ correct, written otherwise
def mask_where(T, w, *, device=None, dtype=torch.float32):
    band = torch.ones(T, T, dtype=torch.bool, device=device).tril().triu(-(w // 2))
    return torch.where(band, torch.zeros((), dtype=dtype, device=device),
                       torch.full((), float("-inf"), dtype=dtype, device=device))


def loop_float64(q, k, v, w):
    # every query against its window, an einsum and a hand-written softmax, in float64
    T, h = q.shape[-2], w // 2
    rows = []
    for t in range(T):
        lo = max(0, t - h)
        s = torch.einsum("...d,...jd->...j", q[..., t, :].double(), k[..., lo:t + 1, :].double()) / math.sqrt(q.shape[-1])
        rows.append(torch.einsum("...j,...jd->...d", _softmax(s), v[..., lo:t + 1, :].double()))
    return torch.stack(rows, dim=-2).to(q.dtype)


def chunks_gather(q, k, v, w):
    # key chunks gathered with an index tensor (no unfold), boolean band mask, masked_fill
    h, (T, d) = w // 2, q.shape[-2:]
    n = -(-T // h)
    dt = _dt(q)
    j = (torch.arange(n, device=q.device)[:, None] - 1) * h + torch.arange(w, device=q.device)   # (n, w) key positions
    t = torch.arange(n * h, device=q.device).view(n, h)                                           # (n, h) query positions
    ok = (j[:, None, :] <= t[..., None]) & (j[:, None, :] >= t[..., None] - h) & (j[:, None, :] >= 0)
    kc = k.to(dt)[..., j.clamp(0, T - 1), :]                                                      # (..., n, w, d)
    vc = v.to(dt)[..., j.clamp(0, T - 1), :]
    qb = F.pad(q.to(dt), (0, 0, 0, n * h - T)).unflatten(-2, (n, h))                              # (..., n, h, d)
    s = (qb @ kc.transpose(-1, -2) / math.sqrt(d)).masked_fill(~ok, float("-inf"))
    return (torch.softmax(s, dim=-1) @ vc).flatten(-3, -2)[..., :T, :].to(q.dtype)


def decode_where(q, k, v, k_cache, v_cache, pos):
    # all W slots, the empty ones switched off with torch.where on the scores AND the values (NaN-safe)
    W = k_cache.shape[-2]
    k_new = k_cache.index_copy(-2, torch.tensor([pos % W], device=k.device), k)
    v_new = v_cache.index_copy(-2, torch.tensor([pos % W], device=v.device), v)
    filled = torch.arange(W, device=q.device) <= pos                                     # (W,)
    dt = _dt(q)
    s = (q.to(dt) @ k_new.to(dt).transpose(-1, -2)) / math.sqrt(q.shape[-1])               # (..., 1, W)
    s = torch.where(filled, s, torch.full_like(s, float("-inf")))
    vals = torch.where(filled[:, None], v_new.to(dt), torch.zeros_like(v_new, dtype=dt))
    return (torch.softmax(s, dim=-1) @ vals).to(q.dtype), k_new, v_new


@pytest.mark.parametrize("name,fn", [
    ("sliding_window_mask", sw.sliding_window_mask), ("sliding_window_mask", mask_where),
    ("sliding_window_loop", sw.sliding_window_loop), ("sliding_window_loop", loop_float64),
    ("sliding_window_chunks", sw.sliding_window_chunks), ("sliding_window_chunks", chunks_gather),
    ("sliding_window_chunks", sw.sliding_window_naive),
    ("rolling_buffer_decode_step", sw.rolling_buffer_decode_step),
    ("rolling_buffer_decode_step", decode_where),
])
def test_correct_implementations_pass(name, fn):
    _passes(name, fn)


# ------------------------------------------------------------------------------ planted mistakes
def test_no_grad_fails():
    @torch.no_grad()                     # copied from a generation helper
    def loop_no_grad(q, k, v, w):
        return sw.sliding_window_loop(q, k, v, w)
    _fails("sliding_window_loop", loop_no_grad, "q, k(1, 4) float64, w=2 (T shorter than the window)",
           "no gradient reaches ")


def test_global_max_softmax_fails_on_rows_far_apart():
    def chunks_global_max(q, k, v, w):
        h, T = w // 2, q.shape[-2]
        n = -(-T // h)
        dt = _dt(q)
        qb = F.pad(q.to(dt) / math.sqrt(q.shape[-1]), (0, 0, 0, n * h - T)).unflatten(-2, (n, h))
        kc = F.pad(k.to(dt), (0, 0, h, n * h - T)).unfold(-2, w, h)
        vc = F.pad(v.to(dt), (0, 0, h, n * h - T)).unfold(-2, w, h).transpose(-1, -2)
        s = qb @ kc
        allowed = sw.chunk_band_allowed(n, w, device=q.device)
        e = torch.exp(s - s.max()) * allowed                # one maximum for the whole tensor
        A = e / e.sum(dim=-1, keepdim=True)
        return (A @ vc).flatten(-3, -2)[..., :T, :].to(q.dtype)
    _fails("sliding_window_chunks", chunks_global_max, "q, k(2, 9, 8) float32, w=4, scores ±318 (rows far apart)",
           "values differ", "expected")


def test_scores_in_float16_fail():
    def loop_scores_in_dtype(q, k, v, w):
        # scores in q's dtype, only the softmax in float32
        T, h = q.shape[-2], w // 2
        rows = []
        for t in range(T):
            lo = max(0, t - h)
            s = q[..., t:t + 1, :] @ k[..., lo:t + 1, :].transpose(-1, -2) / math.sqrt(q.shape[-1])
            A = torch.softmax(s.to(_dt(q)), dim=-1)
            rows.append(A @ v[..., lo:t + 1, :].to(_dt(q)))
        return torch.cat(rows, dim=-2).to(q.dtype)
    _fails("sliding_window_loop", loop_scores_in_dtype,
           "q, k(1, 2, 7, 16) float16, w=6, scores ±16900 (rows far apart)", "values differ")


def test_masking_the_empty_slots_fails_on_nan():
    def decode_masked(q, k, v, k_cache, v_cache, pos):
        # attends over all W slots with an additive mask: 0 · NaN = NaN in the empty slots
        W = k_cache.shape[-2]
        k_new, v_new = k_cache.clone(), v_cache.clone()
        k_new[..., pos % W, :], v_new[..., pos % W, :] = k[..., 0, :], v[..., 0, :]
        M = torch.where(torch.arange(W, device=q.device) <= pos, 0.0, float("-inf"))
        return attention(q, k_new, v_new, M), k_new, v_new
    _fails("rolling_buffer_decode_step", decode_masked,
           "q(2, 3, 1, 8) float32, W=5 slots (w=8), pos=1 (buffer not yet full, NaN/inf in the empty slots)",
           "values differ", "expected")


def test_returning_v_at_position_0_fails():
    def decode_shortcut(q, k, v, k_cache, v_cache, pos):
        out, k_new, v_new = sw.rolling_buffer_decode_step(q, k, v, k_cache, v_cache, pos)
        if pos == 0:                     # the first token sees only itself: its output is its value
            return v, k_new, v_new
        return out, k_new, v_new
    _fails("rolling_buffer_decode_step", decode_shortcut, "q(1, 1, 4) float64, W=4 slots (w=6), pos=0 (buffer not yet full)",
           "output[0] is the input v itself", "return a new tensor")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on CUDA itself there")
def test_tensor_without_device_fails_on_meta():
    def decode_cpu_mask(q, k, v, k_cache, v_cache, pos):
        W = k_cache.shape[-2]
        k_new, v_new = k_cache.clone(), v_cache.clone()
        k_new[..., pos % W, :], v_new[..., pos % W, :] = k[..., 0, :], v[..., 0, :]
        keep = torch.arange(W) <= pos                                    # no device=: on the CPU
        filled = int(min(pos + 1, W))
        s = (q.to(_dt(q)) @ k_new.to(_dt(q)).transpose(-1, -2)) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~keep, float("-inf"))
        return (torch.softmax(s, -1)[..., :filled] @ v_new[..., :filled, :].to(_dt(q))).to(q.dtype), k_new, v_new
    _fails("rolling_buffer_decode_step", decode_cpu_mask, "q(1, 1, 4) float64, W=4 slots (w=6), pos=0 (buffer not yet full)",
           "on meta", "create new tensors on the input's device")

    def mask_no_device(T, w, *, device=None, dtype=torch.float32):
        return sw.sliding_window_mask(T, w, dtype=dtype)
    _fails("sliding_window_mask", mask_no_device, "T=1, w=2 (window of 2 tokens)", "on meta", "is on cpu, expected meta")


def test_declared_properties():
    ex = grading.exercises()
    assert ex["sliding_window_loop"].grad and ex["sliding_window_chunks"].grad
    assert not ex["sliding_window_mask"].grad and not ex["rolling_buffer_decode_step"].grad
    assert not any(ex[n].may_alias for n in ("sliding_window_mask", "sliding_window_loop", "sliding_window_chunks",
                                             "rolling_buffer_decode_step"))
