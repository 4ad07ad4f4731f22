"""The hidden cases of the capstone catch the mistakes its visible tests let through (gradient flow,
float16 overflow without an upcast, a mixed-precision gain, a softmax or logsumexp shifted by one global
maximum, non-contiguous inputs, the device contract), and accept correct implementations written another
way than the references."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.models.model import rms_norm, swiglu, topk_routing
from course_lib.models.train import z_loss

from verdicts import fails, passes as _passes

pytestmark = [pytest.mark.grading]


def _fails(name, fn, case, *fragments):
    return fails(name, fn, *fragments, case=case)


# ------------------------------------------------------------------------------ correct, written otherwise
def rms_norm_float64(x, weight, eps=1e-5):
    xd = x.double()
    return (xd * torch.rsqrt(xd.square().mean(-1, keepdim=True) + eps) * weight.double()).to(x.dtype)


def swiglu_einsum(x, W_gate, W_up, W_down):
    # in x's dtype (the contract allows it), silu and einsum
    h = F.silu(torch.einsum("...c,cf->...f", x, W_gate)) * torch.einsum("...c,cf->...f", x, W_up)
    return torch.einsum("...f,fc->...c", h, W_down)


def z_loss_manual(logits):
    z = logits.double() if logits.dtype == torch.float64 else logits.float()
    m = z.amax(dim=-1, keepdim=True)                                       # one maximum per token
    log_z = (m + torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))).squeeze(-1)
    return (log_z * log_z).sum() / log_z.numel()


def topk_hf(router_logits, k):
    # Hugging Face's Mixtral: softmax over all experts, keep the top k, renormalise
    p = torch.softmax(router_logits.float() if router_logits.dtype != torch.float64 else router_logits, dim=-1)
    w, idx = p.topk(k, dim=-1)
    return (w / w.sum(dim=-1, keepdim=True)).to(router_logits.dtype), idx


def topk_sort(router_logits, k):
    order = torch.argsort(router_logits, dim=-1, descending=True)[..., :k]
    top = router_logits.gather(-1, order)
    dt = torch.promote_types(router_logits.dtype, torch.float32)
    return F.softmax(top.to(dt), dim=-1).to(router_logits.dtype), order


@pytest.mark.parametrize("name,fn", [
    ("rms_norm", rms_norm), ("rms_norm", rms_norm_float64),
    ("swiglu", swiglu), ("swiglu", swiglu_einsum),
    ("z_loss", z_loss), ("z_loss", z_loss_manual),
    ("topk_routing", topk_routing), ("topk_routing", topk_hf), ("topk_routing", topk_sort),
])
def test_correct_implementations_pass(name, fn):
    _passes(name, fn)


# ------------------------------------------------------------------------------ planted mistakes
def test_detached_rms_fails():
    def rms_norm_detached(x, weight, eps=1e-5):
        xf = x.float() if x.dtype != torch.float64 else x
        rms = xf.pow(2).mean(-1, keepdim=True).add(eps).sqrt().detach()      # "a statistic, not a parameter"
        return (xf / rms * weight.to(xf.dtype)).to(x.dtype)
    _fails("rms_norm", rms_norm_detached, "x(4, 8) float64", "the gradient with respect to x values differ")


def test_z_loss_through_item_fails():
    def z_loss_item(logits):
        dt = torch.promote_types(logits.dtype, torch.float32)
        return torch.tensor(torch.logsumexp(logits.to(dt), -1).pow(2).mean().item(), dtype=dt, device=logits.device)
    _fails("z_loss", z_loss_item, "logits(4, 10) float64", "no gradient reaches logits")


def test_topk_under_no_grad_fails():
    def topk_no_grad(router_logits, k):
        with torch.no_grad():            # "routing is a discrete choice"
            return topk_routing(router_logits, k)
    _fails("topk_routing", topk_no_grad, "router_logits(6, 4) float64, k=2", "no gradient reaches router_logits")


def test_rms_norm_without_upcast_fails_on_float16_overflow():
    def rms_norm_in_dtype(x, weight, eps=1e-5):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight      # x² overflows float16
    _fails("rms_norm", rms_norm_in_dtype, "x(3, 40) float16, |x| ~ 300", "values differ")


def test_rms_norm_in_the_gain_dtype_fails():
    def rms_norm_hf(x, weight, eps=1e-5):
        # Hugging Face's LlamaRMSNorm: weight * x.to(input_dtype), i.e. the promoted dtype of weight and x
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    _fails("rms_norm", rms_norm_hf, "x(2, 5, 16) bfloat16, weight float32",
           "has dtype torch.float32, expected torch.bfloat16")


def test_global_max_fails_on_rows_far_apart():
    def z_loss_global_max(logits):
        z = logits.to(torch.promote_types(logits.dtype, torch.float32))
        m = z.max()                                                   # one maximum for all tokens
        return (m + torch.log(torch.exp(z - m).sum(-1))).pow(2).mean()
    _fails("z_loss", z_loss_global_max, "logits(4, 16) float32, scale 200", "values differ", "got inf")

    def topk_global_max(router_logits, k):
        top, idx = router_logits.topk(k, dim=-1)
        top = top.to(torch.promote_types(top.dtype, torch.float32))
        e = torch.exp(top - top.max())                               # one maximum for all tokens
        return (e / e.sum(-1, keepdim=True)).to(router_logits.dtype), idx
    _fails("topk_routing", topk_global_max, "router_logits(2, 5, 8) float32, k=3, rows shifted by ±200 (far apart)",
           "values differ", "got nan")


def test_view_fails_on_noncontiguous_logits():
    def z_loss_view(logits):
        flat = logits.view(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
        return torch.logsumexp(flat, -1).pow(2).mean()
    _fails("z_loss", z_loss_view, "logits(3, 5, 7) float32, non-contiguous", "your function raised RuntimeError")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on CUDA itself there")
def test_tensor_without_device_fails_on_meta():
    def topk_scatter(router_logits, k):
        top, idx = router_logits.topk(k, dim=-1)
        full = torch.full(router_logits.shape, float("-inf"), dtype=torch.float64)   # no device=: on the CPU
        p = torch.softmax(full.scatter(-1, idx, top.double()), -1)
        return p.gather(-1, idx).to(router_logits.dtype), idx
    assert torch.allclose(topk_scatter(torch.tensor([[1.0, 3.0, 2.0]]), 2)[0], torch.tensor([[0.7311, 0.2689]]), atol=1e-4)
    _fails("topk_routing", topk_scatter, "router_logits(6, 4) float64, k=2", "on meta",
           "create new tensors on the input's device")


def test_declared_properties():
    ex = grading.exercises()
    assert all(ex[n].grad for n in ("rms_norm", "swiglu", "z_loss", "topk_routing"))
    assert not any(ex[n].may_alias for n in ("rms_norm", "swiglu", "z_loss", "topk_routing"))
