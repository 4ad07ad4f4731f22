"""The hidden cases of the KV-cache assignment (course_lib/exercises/kv_cache.py): strong and fair.

Strong: mistakes that pass the notebook's visible tests fail ``grading.check`` with a one-line verdict that
names the case (k_new returned itself, the buffer read whole and masked afterwards with NaN in its unused
slots, gradients cut, a global-max softmax, float16 scores, ``.view`` on a non-contiguous buffer, a mask
built without ``device=``, a table of dtype sizes). Fair: the reference and correct implementations written
another way (a clone written into, ``new_empty``, a loop over the new queries, float64 inside,
``torch.where``, ``.item()`` in a check) pass.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.attention import kv_cache

from verdicts import fails as _fails, where as _label

pytestmark = [pytest.mark.grading, pytest.mark.kv_cache]


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device contract runs only without CUDA")


# --------------------------------------------------------------------------------------------- cache_update
def update_into_new_empty(ck, cv, k, v, pos):
    """Correct, another way: allocate (…, pos + T, d) on the cache's device and write both parts."""
    out = []
    for c, new in ((ck, k), (cv, v)):
        S = pos + new.shape[-2]
        buf = c.new_empty(*c.shape[:-2], S, c.shape[-1])
        buf[..., :pos, :] = c[..., :pos, :]
        buf[..., pos:, :] = new
        out.append(buf)
    return tuple(out)


def update_into_clone(ck, cv, k, v, pos):
    """Correct, the notebook's other hint: slicing a clone."""
    T = k.shape[-2]
    K, V = ck.clone(), cv.clone()
    K[..., pos:pos + T, :], V[..., pos:pos + T, :] = k, v
    return K[..., :pos + T, :], V[..., :pos + T, :]


def test_cache_update_reference_and_alternatives_pass():
    for fn in (kv_cache.cache_update, update_into_new_empty, update_into_clone):
        grading.check("cache_update", fn)


def test_cache_update_returning_k_new_itself_fails():
    def shortcut(ck, cv, k, v, pos):                # an empty cache: "K is just k_new"
        if pos == 0:
            return k, v
        return torch.cat((ck[..., :pos, :], k), -2), torch.cat((cv[..., :pos, :], v), -2)
    msg = _fails("cache_update", shortcut)
    assert "case 1/" in msg and "output[0] is the input k_new itself" in msg


def test_cache_update_masking_by_multiplication_fails_on_nan_slots():
    def multiply_out(ck, cv, k, v, pos):            # zero the unused slots by multiplying: 0 · NaN = NaN
        out = []
        for c, new in ((ck, k), (cv, v)):
            S = pos + new.shape[-2]
            keep = (torch.arange(S, device=c.device) < pos)[:, None]
            out.append(c[..., :S, :] * keep + F.pad(new, (0, 0, pos, 0)))
        return tuple(out)
    msg = _fails("cache_update", multiply_out)
    assert _label("cache_update", "cache(2, 3, 10, 4) holding 6 tokens, 2 new, d_k=4, float64, NaN/inf") in msg
    assert "values differ" in msg


def test_cache_update_under_no_grad_fails():
    @torch.no_grad()
    def inference_only(ck, cv, k, v, pos):
        return kv_cache.cache_update(ck, cv, k, v, pos)
    msg = _fails("cache_update", inference_only)
    assert "case 1/" in msg and "no gradient reaches " in msg


def test_cache_update_view_fails_on_a_non_contiguous_buffer():
    def row_table(ck, cv, k, v, pos):               # the buffer as a (N·max_len, d) table of rows, via .view
        out = []
        for c, new in ((ck, k), (cv, v)):
            *lead, L, d = c.shape
            N = math.prod(lead)
            rows = (torch.arange(N, device=c.device)[:, None] * L + torch.arange(pos, device=c.device)).flatten()
            out.append(torch.cat((c.view(-1, d)[rows].reshape(*lead, pos, d), new), dim=-2))
        return tuple(out)
    msg = _fails("cache_update", row_table)
    assert "non-contiguous" in msg and "RuntimeError: view size is not compatible" in msg


# ------------------------------------------------------------------------------------ cached_attention_step
def step_loop(q, k, v, ck, cv, pos):
    """Correct, another way: one new query at a time, each over its own prefix of keys, float64 inside."""
    K = torch.cat((ck[..., :pos, :], k), -2).double()
    V = torch.cat((cv[..., :pos, :], v), -2).double()
    rows = []
    for t in range(q.shape[-2]):
        s = q[..., t:t + 1, :].double() @ K[..., :pos + t + 1, :].transpose(-1, -2) / math.sqrt(q.shape[-1])
        rows.append(torch.softmax(s, dim=-1) @ V[..., :pos + t + 1, :])
    return torch.cat(rows, dim=-2).to(q.dtype)


def step_where(q, k, v, ck, cv, pos):
    """Correct, another way: update_into_clone, a torch.where mask, softmax by exp/sum with a per-row max."""
    K, V = update_into_clone(ck, cv, k, v, pos)
    dt = torch.promote_types(q.dtype, torch.float32)
    T, S = q.shape[-2], K.shape[-2]
    s = torch.einsum("...td,...sd->...ts", q.to(dt), K.to(dt)) / q.shape[-1] ** 0.5
    seen = torch.arange(S, device=q.device) <= pos + torch.arange(T, device=q.device)[:, None]
    s = torch.where(seen, s, torch.tensor(float("-inf"), dtype=dt, device=q.device))
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return ((e / e.sum(dim=-1, keepdim=True)) @ V.to(dt)).to(q.dtype)


def step_checked(q, k, v, ck, cv, pos):
    """Correct, with a check that needs data (.item()): not checkable on the meta device, never failed."""
    if not torch.isfinite(q).all().item():
        raise ValueError("q_new holds inf or NaN")
    return kv_cache.cached_attention_step(q, k, v, ck, cv, pos)


def test_step_reference_and_alternatives_pass(capsys):
    for fn in (kv_cache.cached_attention_step, step_loop, step_where):
        grading.check("cached_attention_step", fn)
    grading.check("cached_attention_step", step_checked)
    if not torch.cuda.is_available():
        assert "not checkable on this machine" in capsys.readouterr().out.strip().splitlines()[-1]


def _whole_buffer_step(q, k, v, ck, cv, pos, *, softmax=None, scores_in=None, device=True):
    """Attention over the whole buffer (the new rows written into a clone), the unused slots masked out
    afterwards: right for finite garbage. softmax / scores_in / device: the planted variations."""
    T = q.shape[-2]
    K, V = ck.clone(), cv.clone()
    K[..., pos:pos + T, :], V[..., pos:pos + T, :] = k, v
    dt = torch.promote_types(q.dtype, torch.float32)
    sd = scores_in or dt
    s = (q.to(sd) @ K.to(sd).transpose(-1, -2) / math.sqrt(q.shape[-1])).to(dt)
    j = torch.arange(K.shape[-2], device=q.device if device else None)
    t = pos + torch.arange(T, device=q.device if device else None)[:, None]
    s = s.masked_fill(j > t, float("-inf"))
    a = torch.softmax(s, dim=-1) if softmax is None else softmax(s)
    return (a @ V.to(dt)).to(q.dtype)


def test_step_over_the_whole_buffer_fails_on_nan_slots():
    msg = _fails("cached_attention_step", _whole_buffer_step)
    assert _label("cached_attention_step", "cache(2, 3, 10, 8) holding 6 tokens, 1 new, d_k=8, float64, NaN") in msg
    assert "values differ" in msg


def test_step_under_no_grad_fails():
    @torch.no_grad()
    def inference_only(q, k, v, ck, cv, pos):
        return kv_cache.cached_attention_step(q, k, v, ck, cv, pos)
    msg = _fails("cached_attention_step", inference_only)
    assert "case 1/" in msg and "no gradient reaches " in msg


def _sliced(q, k, v, ck, cv, pos, **kw):
    """_whole_buffer_step on the used slots only: fine on NaN slots, to isolate the other mistakes."""
    S = pos + q.shape[-2]
    return _whole_buffer_step(q, k, v, ck[..., :S, :], cv[..., :S, :], pos, **kw)


def test_step_global_max_softmax_fails_on_rows_far_apart():
    def global_max(s):
        e = torch.exp(s - s.max())
        return e / e.sum(dim=-1, keepdim=True)
    msg = _fails("cached_attention_step", lambda *a: _sliced(*a, softmax=global_max))
    assert _label("cached_attention_step", "rows far apart") in msg and "values differ" in msg


def test_step_float16_scores_overflow():
    msg = _fails("cached_attention_step", lambda q, *a: _sliced(q, *a, scores_in=q.dtype))
    assert _label("cached_attention_step", "overflows float16") in msg and "values differ" in msg


@no_gpu
def test_step_mask_built_without_device_fails_on_meta():
    msg = _fails("cached_attention_step", lambda *a: _sliced(*a, device=False))
    assert "case 1/" in msg and "on meta: RuntimeError" in msg and "create new tensors on the input's device" in msg


# ------------------------------------------------------------------------------------------- kv_cache_bytes
def test_bytes_reference_and_alternatives_pass():
    grading.check("kv_cache_bytes", kv_cache.kv_cache_bytes)
    grading.check("kv_cache_bytes", lambda n_layers, h_kv, d_head, tokens, dtype, batch=1:
                  torch.empty(2, n_layers, batch, h_kv, tokens, d_head, dtype=dtype, device="meta").nbytes)


def test_bytes_from_finfo_or_a_table_fail():
    msg = _fails("kv_cache_bytes", lambda n_layers, h_kv, d_head, tokens, dtype, batch=1:
                 2 * n_layers * h_kv * d_head * tokens * batch * torch.finfo(dtype).bits // 8)
    assert _label("kv_cache_bytes", "int8 quantized cache") in msg and "TypeError" in msg
    SIZES = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1}
    msg = _fails("kv_cache_bytes", lambda n_layers, h_kv, d_head, tokens, dtype, batch=1:
                 2 * n_layers * h_kv * d_head * tokens * batch * SIZES[dtype])
    assert _label("kv_cache_bytes", "float8 cache") in msg and "KeyError" in msg
