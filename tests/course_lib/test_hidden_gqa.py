"""The hidden cases of the GQA assignment (course_lib/exercises/gqa.py): strong and fair.

Strong: mistakes that pass the notebook's visible tests fail ``grading.check`` with a one-line verdict that
names the case (gradients cut, a global-max softmax, float16 scores, ``.view`` on a non-contiguous input, a
tensor created without ``device=``, a hard-coded table of dtype sizes, 32-bit arithmetic). Fair: the
reference and correct implementations written another way (loops, einsum, masked_fill instead of adding M,
float64 inside, ``.item()`` in a check) pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import grading
from course_lib.attention import gqa

from verdicts import fails as _fails, where as _label

pytestmark = [pytest.mark.grading, pytest.mark.gqa]


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device contract runs only without CUDA")


# ------------------------------------------------------------------------------------------------ repeat_kv
def repeat_by_cat(x, g):
    """Correct, another way: concatenate g views of each head, head by head."""
    return torch.cat([x[:, i:i + 1].expand(-1, g, -1, -1) for i in range(x.shape[1])], dim=1)


def repeat_by_index(x, g):
    """Correct, another way: gather head n // g (an index tensor on x's device)."""
    return x[:, torch.arange(x.shape[1] * g, device=x.device) // g]


def test_repeat_kv_reference_and_alternatives_pass():
    for fn in (gqa.repeat_kv, repeat_by_cat, repeat_by_index,
               lambda x, g: torch.repeat_interleave(x, g, dim=1),
               lambda x, g: x if g == 1 else x.repeat_interleave(g, dim=1)):   # g = 1: x itself is allowed
        grading.check("repeat_kv", fn)


def test_repeat_kv_through_numpy_cuts_the_gradient():
    def via_numpy(x, g):
        return torch.from_numpy(np.repeat(x.detach().cpu().numpy(), g, axis=1)).to(x.device)
    msg = _fails("repeat_kv", via_numpy)
    assert _label("repeat_kv", "x(1, 1, 3, 4) float64") in msg and "no gradient reaches x" in msg


def test_repeat_kv_view_fails_on_a_non_contiguous_input():
    def merged_view(x, g):          # merges S and d with .view: fine on a contiguous x only
        B, h, S, d = x.shape
        return x.view(B, h, 1, S * d).expand(B, h, g, S * d).reshape(B, h * g, S, d)
    msg = _fails("repeat_kv", merged_view)
    assert _label("repeat_kv", "x(2, 3, 5, 4) float64, g=2, non-contiguous") in msg and "RuntimeError" in msg


# ---------------------------------------------------------------------------------- grouped_query_attention
def gqa_loop(q, k, v, mask=None):
    """Correct, another way: a loop over the query heads, float64 inside, the mask applied with masked_fill."""
    B, h_q, T, d = q.shape
    g = h_q // k.shape[1]
    heads = []
    for n in range(h_q):
        s = q[:, n].double() @ k[:, n // g].double().transpose(-1, -2) / math.sqrt(d)   # (B, T, S)
        if mask is not None:
            m = mask if mask.dim() == 2 else mask[:, 0]
            s = s.masked_fill(m == float("-inf"), float("-inf"))
        heads.append(torch.softmax(s, dim=-1) @ v[:, n // g].double())
    return torch.stack(heads, dim=1).to(q.dtype)


def gqa_einsum(q, k, v, mask=None):
    """Correct, another way: einsum on (B, h_kv, g, T, d), torch.where for the mask, a logsumexp softmax."""
    B, h_q, T, d = q.shape
    h_kv = k.shape[1]
    dt = torch.promote_types(q.dtype, torch.float32)
    q5 = q.reshape(B, h_kv, h_q // h_kv, T, d).to(dt)
    s = torch.einsum("bigtd,bisd->bigts", q5, k.to(dt)) / math.sqrt(d)
    if mask is not None:
        m = mask if mask.dim() == 2 else mask[:, :, None]                 # (B, 1, 1, T, S)
        s = torch.where(m == 0, s, torch.full_like(s, float("-inf")))
    a = torch.exp(s - torch.logsumexp(s, dim=-1, keepdim=True))
    return torch.einsum("bigts,bise->bigte", a, v.to(dt)).reshape(B, h_q, T, -1).to(q.dtype)


def gqa_checks_mask(q, k, v, mask=None):
    """Correct, with a check that needs data (.item()): not checkable on the meta device, never failed."""
    if mask is not None and torch.isneginf(mask).all(dim=-1).any().item():
        raise ValueError("a query row sees no key")
    return gqa.grouped_query_attention(q, k, v, mask)


def test_gqa_reference_and_alternatives_pass(capsys):
    for fn in (gqa.grouped_query_attention, gqa_loop, gqa_einsum):
        grading.check("grouped_query_attention", fn)
    grading.check("grouped_query_attention", gqa_checks_mask)
    out = capsys.readouterr().out.strip().splitlines()[-1]
    if not torch.cuda.is_available():
        assert "not checkable on this machine" in out, out


def _naive(q, k, v, mask=None, *, softmax=None, scores_in=None):
    """repeat_kv, then attention by hand; softmax: another softmax; scores_in: the dtype of q·k."""
    g = q.shape[1] // k.shape[1]
    dt = torch.promote_types(q.dtype, torch.float32)
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    sd = scores_in or dt
    s = (q.to(sd) @ k.to(sd).transpose(-1, -2) / math.sqrt(q.shape[-1])).to(dt)
    if mask is not None:
        s = s + mask
    a = torch.softmax(s, dim=-1) if softmax is None else softmax(s)
    return (a @ v.to(dt)).to(q.dtype)


def test_gqa_under_no_grad_fails():
    @torch.no_grad()
    def inference_only(q, k, v, mask=None):
        return _naive(q, k, v, mask)
    msg = _fails("grouped_query_attention", inference_only)
    assert "case 1/" in msg and "no gradient reaches q" in msg


def test_gqa_global_max_softmax_fails_on_rows_far_apart():
    def global_max(s):              # "stable", but one maximum for the whole tensor, not one per row
        e = torch.exp(s - s.max())
        return e / e.sum(dim=-1, keepdim=True)
    msg = _fails("grouped_query_attention", lambda q, k, v, mask=None: _naive(q, k, v, mask, softmax=global_max))
    assert _label("grouped_query_attention", "rows far apart") in msg and "values differ" in msg


def test_gqa_float16_scores_overflow():
    def scores_in_q_dtype(q, k, v, mask=None):      # the softmax in float32, but q·k in q's dtype
        return _naive(q, k, v, mask, scores_in=q.dtype)
    msg = _fails("grouped_query_attention", scores_in_q_dtype)
    assert _label("grouped_query_attention", "overflows float16") in msg and "values differ" in msg


def test_gqa_view_fails_on_non_contiguous_inputs():
    def folded_view(q, k, v, mask=None):
        B, h_q, T, d = q.shape
        g = h_q // k.shape[1]
        if mask is not None:
            mask = torch.cat([mask] * g, dim=-2)
        out = gqa.attention(q.view(B, k.shape[1], g * T, d), k, v, mask)
        return out.view(B, h_q, T, v.shape[-1])
    msg = _fails("grouped_query_attention", folded_view)
    assert "non-contiguous" in msg and "RuntimeError" in msg


@no_gpu
def test_gqa_mask_built_without_device_fails_on_meta():
    def default_mask(q, k, v, mask=None):
        if mask is None:
            mask = torch.zeros(q.shape[-2], k.shape[-2])       # on the CPU whatever q's device
        return _naive(q, k, v, mask)
    msg = _fails("grouped_query_attention", default_mask)
    assert "case 1/" in msg and "on meta: RuntimeError" in msg and "create new tensors on the input's device" in msg


# ----------------------------------------------------------------------------- gqa_param_count and bytes
def test_counts_reference_and_alternatives_pass():
    def by_meta_tensors(d_model, h_q, h_kv, d_head):
        if h_q % h_kv:
            raise ValueError("h_q must be divisible by h_kv")
        shapes = [(d_model, h_q * d_head), (d_model, h_kv * d_head), (d_model, h_kv * d_head), (h_q * d_head, d_model)]
        return sum(torch.empty(s, device="meta").numel() for s in shapes)
    grading.check("gqa_param_count", gqa.gqa_param_count)
    grading.check("gqa_param_count", by_meta_tensors)
    grading.check("kv_cache_bytes_per_token", gqa.kv_cache_bytes_per_token)
    grading.check("kv_cache_bytes_per_token", lambda layers, h_kv, d_head, dtype=torch.bfloat16:
                  layers * 2 * h_kv * d_head * torch.empty((), dtype=dtype).element_size())


def test_param_count_in_32_bit_arithmetic_fails_on_a_large_model():
    def int32(d_model, h_q, h_kv, d_head):
        return int(torch.tensor(2 * (h_q + h_kv), dtype=torch.int32) * d_model * d_head)
    msg = _fails("gqa_param_count", int32)
    assert _label("gqa_param_count", "65536, 256, 32, 256") in msg and "should be" in msg


def test_bytes_from_a_table_of_dtypes_fails_on_float8():
    SIZES = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1}
    msg = _fails("kv_cache_bytes_per_token",
                 lambda layers, h_kv, d_head, dtype=torch.bfloat16: 2 * layers * h_kv * d_head * SIZES[dtype])
    assert _label("kv_cache_bytes_per_token", "float8_e4m3fn") in msg and "KeyError" in msg


def test_wrong_default_dtype_fails():
    msg = _fails("kv_cache_bytes_per_token", lambda layers, h_kv, d_head, dtype=torch.float32:
                 2 * layers * h_kv * d_head * dtype.itemsize)
    assert _label("kv_cache_bytes_per_token", "dtype left out") in msg and "should be 327680, got 655360" in msg
