"""Graded exercises of the pretraining vs fine-tuning assignment (``solutions/pretraining/pretraining.ipynb``)."""
from __future__ import annotations

import torch

from ..grading import Case, Exercise, noncontiguous, register
from ..pretraining import autoencoder, layerwise, lm


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------------------
# reconstruction_loss(x, x_hat)
# ---------------------------------------------------------------------------------------------------------
def _reconstruction(N: int, d: int, dtype: torch.dtype, exact: bool = False) -> Case:
    label = f"x, x_hat ({N}, {d}) {_name(dtype)}" + (", x_hat = x" if exact else "")

    def make(g: torch.Generator, dev: torch.device):
        x = torch.rand(N, d, generator=g, dtype=torch.float64)                       # inputs in [0, 1]
        x_hat = x.clone() if exact else torch.sigmoid(torch.randn(N, d, generator=g, dtype=torch.float64))
        return (x.to(dtype).to(dev), x_hat.to(dtype).to(dev)), {}
    return Case(label, make)


register(Exercise(
    "reconstruction_loss", autoencoder.reconstruction_loss,
    [_reconstruction(1, 1, torch.float64), _reconstruction(1, 64, torch.float64), _reconstruction(5, 3, torch.float32),
     _reconstruction(32, 64, torch.float32), _reconstruction(7, 100, torch.float64),
     _reconstruction(4, 16, torch.float32, exact=True), _reconstruction(128, 64, torch.float64),
     noncontiguous(_reconstruction(6, 10, torch.float64))],
    hint="||x − x'||² sums the squares over the d coordinates of each example; then take the mean over the N "
         "examples (not the mean over all N·d entries, F.mse_loss's default); return a 0-dim tensor",
    grad=True,           # a loss: training backpropagates through it
))


# ---------------------------------------------------------------------------------------------------------
# encode_stack(x, weights, biases)
# ---------------------------------------------------------------------------------------------------------
def _stack(lead: tuple[int, ...], dims: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0) -> Case:
    label = f"x{(*lead, dims[0])} {_name(dtype)}, " + (" → ".join(map(str, dims)) if len(dims) > 1 else "no level")
    if scale != 1.0:
        label += f", weights ×{scale:g}"

    def make(g: torch.Generator, dev: torch.device):
        x = torch.rand(*lead, dims[0], generator=g, dtype=torch.float64)
        Ws = [torch.randn(b, a, generator=g, dtype=torch.float64) * scale / a ** 0.5 for a, b in zip(dims[:-1], dims[1:])]
        bs = [torch.randn(b, generator=g, dtype=torch.float64) * 0.5 for b in dims[1:]]
        return (x.to(dtype).to(dev), [W.to(dtype).to(dev) for W in Ws], [b.to(dtype).to(dev) for b in bs]), {}
    return Case(label, make)


register(Exercise(
    "encode_stack", layerwise.encode_stack,
    [_stack((3,), (5,), torch.float64),                    # L = 0: the features are x itself
     _stack((1,), (4, 4), torch.float64),                  # square W: W vs Wᵀ matters
     _stack((6,), (8, 8, 8), torch.float64, scale=3.0),
     _stack((10,), (64, 100), torch.float32),
     _stack((16,), (64, 100, 100, 100), torch.float32),
     _stack((7,), (12, 5, 9), torch.float64),
     _stack((2, 5), (8, 6, 4), torch.float64),             # leading dimensions (..., d_0)
     _stack((32,), (64, 32, 16, 8, 4), torch.float32, scale=2.0),
     _stack((0,), (5, 3), torch.float32),                  # no example
     noncontiguous(_stack((2, 5), (8, 6, 4), torch.float64)),
     noncontiguous(_stack((4,), (6,), torch.float64))],
    hint="h_l = σ(W_l h_{l-1} + b_l) for every level, with W_l of shape (d_l, d_{l-1}); on rows that is "
         "h @ W.T + b; the sigmoid comes after every level, the last one included",
    may_alias=True,      # no level (L = 0): the features are x itself
    grad=True,           # fine-tuning backpropagates through it (to x, every W_l and b_l)
))


# ---------------------------------------------------------------------------------------------------------
# masked_lm_loss / sentence_log_likelihood (logits, targets, pad_mask)
# ---------------------------------------------------------------------------------------------------------
def _lm(B: int, T: int, V: int, dtype: torch.dtype, *, scale: float = 1.0, padding: str = "right",
        empty_row: bool = False, pad_logits: str | None = None, pad_target: int | None = None) -> Case:
    """logits ~ N(0, scale²); lengths drawn in 1..T (row 0 full length); pad_mask True after the length
    ('right', what pad_batch makes) or before it ('left'), or at random positions ('random').
    pad_logits '-inf': the target's logit is −∞ at every padding position (log p = −∞ there, 0·(−∞) = nan);
    'nan': every logit of a padding position is NaN, +∞ at the target. pad_target: the target id at padding
    positions (e.g. −100, PyTorch's ignore_index, not a valid id)."""
    label = f"logits({B}, {T}, {V}) {_name(dtype)}, {padding} padding"
    label += f", logits ×{scale:g}" if scale != 1.0 else ""
    label += ", one row all padding" if empty_row else ""
    label += {None: "", "-inf": ", logits -inf at pads", "nan": ", logits nan/inf at pads"}[pad_logits]
    label += f", targets {pad_target} at pads" if pad_target is not None else ""

    def make(g: torch.Generator, dev: torch.device):
        logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
        targets = torch.randint(0, V, (B, T), generator=g)           # pads hold arbitrary valid ids too
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        pos = torch.arange(T)[None, :]
        if padding == "right":
            pad = pos >= lengths[:, None]
        elif padding == "left":
            pad = pos < (T - lengths)[:, None]
        else:
            pad = torch.rand(B, T, generator=g) < 0.4
            pad[0, 0] = False
        if empty_row:
            pad[-1] = True
        if pad_logits == "-inf":
            at_target = torch.nn.functional.one_hot(targets, V).bool() & pad[..., None]
            logits = logits.masked_fill(at_target, float("-inf"))
        elif pad_logits == "nan":
            logits = logits.masked_fill(pad[..., None], float("nan"))
            logits = logits.masked_fill(torch.nn.functional.one_hot(targets, V).bool() & pad[..., None], float("inf"))
        if pad_target is not None:
            targets = targets.masked_fill(pad, pad_target)
        return (logits.to(dtype).to(dev), targets.to(dev), pad.to(dev)), {}
    return Case(label, make)


# The point of Exercises 3 and 4 is to compute the log-likelihood and mask it yourself: PyTorch's
# cross-entropy (whose ignore_index does the masking) and NLL losses are not allowed inside them.
NLL = ("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss", "aten::cross_entropy_loss",
       "aten::nll_loss")

_LM_CASES = [
    _lm(1, 1, 2, torch.float64),
    _lm(1, 6, 5, torch.float64),
    _lm(3, 7, 11, torch.float64),
    _lm(4, 9, 30, torch.float32),
    _lm(8, 16, 50, torch.float32, padding="left"),
    _lm(5, 12, 20, torch.float64, padding="random"),
    _lm(6, 10, 40, torch.float32, scale=60.0),             # log(softmax(·)) underflows to −∞ here
    _lm(16, 24, 200, torch.float32),
    _lm(2, 4, 1, torch.float64, padding="random"),         # V = 1: every log-probability is 0
    _lm(3, 6, 7, torch.float64, padding="random", pad_target=-100),
    _lm(4, 7, 9, torch.float32, pad_logits="-inf"),
    _lm(4, 7, 9, torch.float64, padding="random", pad_logits="-inf"),
    _lm(3, 6, 8, torch.bfloat16, padding="left", pad_logits="nan"),
    noncontiguous(_lm(3, 7, 11, torch.float32, padding="random")),
]

register(Exercise(
    "masked_lm_loss", lm.masked_lm_loss,
    _LM_CASES + [_lm(4, 8, 13, torch.float64, padding="random")],
    hint="take log_softmax over the vocabulary, pick the target's log-probability at every position, keep the "
         "real positions only (pad_mask False), and divide the negated sum by the number of real tokens (not "
         "by B·T, and not a mean of per-sentence means); log(softmax(·)) underflows for large logits; padding "
         "positions may hold ±inf/NaN logits: select the real positions (torch.where, masked_fill), since 0·inf is nan",
    forbidden=NLL,
    grad=True,           # the pre-training loss: training backpropagates through it
))

register(Exercise(
    "sentence_log_likelihood", lm.sentence_log_likelihood,
    _LM_CASES + [_lm(4, 8, 13, torch.float64, empty_row=True),
                 _lm(4, 8, 13, torch.float64, empty_row=True, pad_logits="-inf")],
    hint="log p(sentence_b) = Σ_t log p(targets[b, t]) over the positions where pad_mask[b, t] is False: a sum "
         "(not a mean) of log_softmax values, one number per sentence, ≤ 0; a row that is all padding gives 0; padding "
         "positions may hold ±inf/NaN logits: select the real positions (torch.where, masked_fill), since 0·inf is nan",
    forbidden=NLL,
    grad=True,           # a differentiable function of the logits
))
