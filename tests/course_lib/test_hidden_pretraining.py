"""The hidden cases of the pretraining assignment catch the mistakes its visible tests let through
(gradient flow, non-contiguous inputs, values at padding positions, targets outside [0, V), the device
contract), and accept correct implementations written another way than the references."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib import grading
from course_lib.pretraining import autoencoder, layerwise, lm

from verdicts import fails as _fails, passes as _passes

pytestmark = [pytest.mark.grading, pytest.mark.pretraining]


# ------------------------------------------------------------------------------ correct, written otherwise
def recon_alt(x, x_hat):
    return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]


def recon_loop(x, x_hat):
    return torch.stack([torch.dot(x[n] - x_hat[n], x[n] - x_hat[n]) for n in range(x.shape[0])]).mean()


def encode_alt(x, weights, biases):
    h = x
    for W, b in zip(weights, biases):
        h = F.linear(h, W, b).sigmoid()
    return h


def encode_einsum(x, weights, biases):
    h = x.clone()
    for W, b in zip(weights, biases):
        h = 1 / (1 + torch.exp(-(torch.einsum("...i,ji->...j", h, W) + b)))
    return h


def _picked(logits, targets, pad_mask):
    """log p(target) at every position, the padding positions' logits replaced first (no inf/NaN there)."""
    clean = logits.masked_fill(pad_mask[..., None], 0.0)
    safe = torch.where(pad_mask, torch.zeros_like(targets), targets)
    return (clean - torch.logsumexp(clean, dim=-1, keepdim=True)).gather(-1, safe[..., None]).squeeze(-1)


def mlm_alt(logits, targets, pad_mask):
    real = ~pad_mask
    return -torch.where(real, _picked(logits, targets, pad_mask), 0.0).sum() / real.sum()


def mlm_item(logits, targets, pad_mask):        # boolean indexing and .item(): not checkable on meta, fine
    real = ~pad_mask
    log_p = torch.log_softmax(logits[real], dim=-1)                    # (n_real, V)
    picked = log_p[torch.arange(log_p.shape[0], device=logits.device), targets[real]]
    return -picked.sum() / real.sum().item()


def sll_alt(logits, targets, pad_mask):
    return torch.where(pad_mask, 0.0, _picked(logits, targets, pad_mask)).sum(dim=1).to(logits.dtype)


def sll_loop(logits, targets, pad_mask):
    out = []
    for b in range(logits.shape[0]):
        real = ~pad_mask[b]
        log_p = torch.log_softmax(logits[b][real].double(), dim=-1)
        out.append(log_p.gather(-1, targets[b][real][:, None]).sum())
    return torch.stack(out).to(logits.dtype)


@pytest.mark.parametrize("name, fn", [
    ("reconstruction_loss", autoencoder.reconstruction_loss), ("reconstruction_loss", recon_alt),
    ("reconstruction_loss", recon_loop),
    ("encode_stack", layerwise.encode_stack), ("encode_stack", encode_alt), ("encode_stack", encode_einsum),
    ("masked_lm_loss", lm.masked_lm_loss), ("masked_lm_loss", mlm_alt), ("masked_lm_loss", mlm_item),
    ("sentence_log_likelihood", lm.sentence_log_likelihood), ("sentence_log_likelihood", sll_alt),
    ("sentence_log_likelihood", sll_loop),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_correct_implementations_pass(name, fn):
    _passes(name, fn)


def test_properties_declared():
    ex = grading.exercises_of("pretraining")
    assert all(e.grad for e in ex.values())
    assert ex["encode_stack"].may_alias and not ex["reconstruction_loss"].may_alias


# ------------------------------------------------------------------------------ planted mistakes
def test_encode_stack_under_no_grad_fails():
    @torch.no_grad()
    def wrong(x, weights, biases):               # "computed once, with no gradient": breaks fine-tuning
        return layerwise.encode_stack(x, weights, biases)
    _fails("encode_stack", wrong, "no gradient reaches x", "case 2/11 'x(1, 4) float64, 4 → 4' on cpu")


def test_encode_stack_detached_weights_fail():
    def wrong(x, weights, biases):
        return layerwise.encode_stack(x, [W.detach() for W in weights], [b.detach() for b in biases])
    _fails("encode_stack", wrong, "no gradient reaches weights[0]")


def test_reconstruction_loss_without_gradient_fails():
    def wrong(x, x_hat):
        return ((x - x_hat) ** 2).sum(dim=1).mean().detach()
    _fails("reconstruction_loss", wrong, "case 1/8", "no gradient reaches x")


def test_masked_lm_loss_multiplying_by_the_mask_fails():
    def wrong(logits, targets, pad_mask):        # 0 · (−∞) = nan at padding positions
        real = (~pad_mask).to(logits.dtype)
        picked = torch.log_softmax(logits, -1).gather(-1, targets.masked_fill(pad_mask, 0)[..., None]).squeeze(-1)
        return -(picked * real).sum() / real.sum()
    _fails("masked_lm_loss", wrong, "'logits(4, 7, 9) float32, right padding, logits -inf at pads'", "values differ")


def test_sentence_log_likelihood_multiplying_by_the_mask_fails():
    def wrong(logits, targets, pad_mask):
        picked = torch.log_softmax(logits, -1).gather(-1, targets.masked_fill(pad_mask, 0)[..., None]).squeeze(-1)
        return (picked * ~pad_mask).sum(dim=-1)
    _fails("sentence_log_likelihood", wrong, "logits -inf at pads'", "values differ")


def test_unsanitised_pad_targets_fail():
    def wrong(logits, targets, pad_mask):        # gathers the pads' targets too: −100 is not an id
        picked = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
        return picked.masked_fill(pad_mask, 0.0).sum(dim=-1)
    _fails("sentence_log_likelihood", wrong, "targets -100 at pads'", "your function raised RuntimeError")


def test_flattening_with_view_fails_on_noncontiguous():
    def wrong(logits, targets, pad_mask):
        B, T, V = logits.shape
        log_p = torch.log_softmax(logits.view(B * T, V), -1)
        picked = log_p.gather(-1, targets.masked_fill(pad_mask, 0).view(-1, 1)).view(B, T)
        return -picked.masked_fill(pad_mask, 0.0).sum() / (~pad_mask).sum()
    _fails("masked_lm_loss", wrong, "random padding, non-contiguous'", "your function raised RuntimeError")


def test_masked_lm_loss_under_no_grad_fails():
    @torch.no_grad()
    def wrong(logits, targets, pad_mask):
        return lm.masked_lm_loss(logits, targets, pad_mask)
    _fails("masked_lm_loss", wrong, "case 1/", "no gradient reaches logits")


# ------------------------------------------------------------------------------ the device contract
@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on meta without a GPU")
def test_tensor_created_without_device_fails_on_meta():
    def wrong(logits, targets, pad_mask):
        out = torch.zeros(logits.shape[0], dtype=logits.dtype)          # on the CPU, whatever the input's device
        picked = torch.log_softmax(logits, -1).gather(-1, targets.masked_fill(pad_mask, 0)[..., None]).squeeze(-1)
        return out + picked.masked_fill(pad_mask, 0.0).sum(dim=-1)
    _fails("sentence_log_likelihood", wrong, "on meta:", "create new tensors on the input's device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device contract is checked on meta without a GPU")
def test_item_is_not_checkable_not_failed():
    verdict = grading.verify(grading.record("masked_lm_loss", mlm_item))
    assert verdict.passed, verdict.message
