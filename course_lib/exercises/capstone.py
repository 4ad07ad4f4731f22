"""Graded exercises of the capstone (``solutions/capstone/capstone.ipynb``): the pieces of a modern
Transformer that the student writes, as small pure functions (the notebook plugs them into
``course_lib.models.GPT``)."""
from __future__ import annotations

import math

import torch

from ..grading import Case, Exercise, noncontiguous, register
from ..models.model import rms_norm, swiglu, topk_routing
from ..models.train import z_loss

# torch's own RMSNorm (F.rms_norm, nn.RMSNorm, torch.rms_norm: all reach aten::rms_norm or its fused kernel)
RMS_NORM = ("torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm", "aten::rms_norm", "aten::_fused_rms_norm")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device,
           scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(dev)


# ---------------------------------------------------------------------------------------------------------
# Exercise 1: rms_norm
# ---------------------------------------------------------------------------------------------------------
def _rms(shape: tuple[int, ...], dtype: torch.dtype, eps: float | None = None, scale: float = 1.0,
         zero_row: bool = False, weight_dtype: torch.dtype | None = None, far: bool = False) -> Case:
    label = f"x{shape} {_name(dtype)}" + ("" if weight_dtype is None else f", weight {_name(weight_dtype)}") + \
        ("" if eps is None else f", eps={eps:g}") + (f", |x| ~ {scale:g}" if scale != 1.0 else "") + \
        (", a row of zeros" if zero_row else "") + (", rows of scales 1e-3 .. 1e3" if far else "")

    def make(g: torch.Generator, dev: torch.device):
        x = _randn(g, shape, torch.float64, torch.device("cpu"), scale)
        if far:                                  # row r scaled by 10^(-3 .. 3)
            rows = x.shape[-2]
            x = x * torch.logspace(-3, 3, rows, dtype=torch.float64)[:, None]
        x = x.to(dtype).to(dev)
        if zero_row:
            x[..., 0, :] = 0
        weight = (1 + 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float64)).to(weight_dtype or dtype).to(dev)
        return ((x, weight), {} if eps is None else {"eps": eps})
    return Case(label, make)


register(Exercise(
    "rms_norm", rms_norm,
    [_rms((4, 8), torch.float64),
     _rms((2, 5, 16), torch.float32, eps=1e-6),
     _rms((3, 6), torch.float64, eps=0.5),                       # a large ε shows whether it sits inside the root
     _rms((2, 3, 4, 64), torch.float32, scale=100.0),            # the scale cancels out
     _rms((3, 4, 8), torch.float64, eps=1e-5, zero_row=True),    # mean(x²) = 0: ε keeps it finite (0 out)
     _rms((5, 1), torch.float64),                                # one feature: x / sqrt(x² + ε) · g
     _rms((4, 7, 32), torch.bfloat16),
     _rms((2, 9, 128), torch.float16, eps=1e-6),
     _rms((3, 40), torch.float16, scale=300.0),                  # x² > 65504 overflows float16: upcast first
     _rms((2, 5, 16), torch.bfloat16, weight_dtype=torch.float32),   # a float32 gain (mixed precision): x's dtype
     noncontiguous(_rms((3, 4, 8), torch.float32)),
     _rms((7, 12), torch.float32, far=True),
     _rms((0, 8), torch.float32)],
    hint="RMSNorm(x) = x / sqrt(mean(x²) + eps) · weight: mean of the squares over the LAST dimension "
         "(keepdim), eps inside the square root, no mean subtracted, no bias; compute in float32 at least "
         "and return x's dtype",
    forbidden=RMS_NORM, grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 2: swiglu
# ---------------------------------------------------------------------------------------------------------
def _swiglu(lead: tuple[int, ...], C: int, F: int, dtype: torch.dtype) -> Case:
    def make(g: torch.Generator, dev: torch.device):
        x = _randn(g, (*lead, C), dtype, dev)
        W_gate = _randn(g, (C, F), dtype, dev, 1 / math.sqrt(C))       # weights of the usual scale: outputs O(1)
        W_up = _randn(g, (C, F), dtype, dev, 1 / math.sqrt(C))
        W_down = _randn(g, (F, C), dtype, dev, 1 / math.sqrt(F))
        return (x, W_gate, W_up, W_down), {}
    return Case(f"x{(*lead, C)} {_name(dtype)}, d_ff={F}", make)


register(Exercise(
    "swiglu", swiglu,
    [_swiglu((3,), 4, 6, torch.float64),
     _swiglu((2, 5), 8, 16, torch.float64),
     _swiglu((2, 7), 16, 40, torch.float32),
     _swiglu((2, 3, 4), 8, 24, torch.float32),
     _swiglu((5,), 6, 1, torch.float64),                           # a hidden width of 1
     _swiglu((1, 64), 64, 176, torch.float32),                     # ⅔·4·64 rounded up to a multiple of 8
     _swiglu((2, 8), 32, 96, torch.bfloat16),
     noncontiguous(_swiglu((3, 5), 8, 12, torch.float32)),       # e.g. weights stored transposed (nn.Linear)
     _swiglu((0,), 8, 16, torch.float32)],
    hint="(Swish(x @ W_gate) * (x @ W_up)) @ W_down with Swish(z) = z * sigmoid(z): the Swish goes on the "
         "gate branch only, and the weights multiply from the right (x @ W); return x's dtype",
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 3: z_loss
# ---------------------------------------------------------------------------------------------------------
def _logits(shape: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0, shift: float = 0.0,
            far: float = 0.0) -> Case:
    label = f"logits{shape} {_name(dtype)}" + (f", scale {scale:g}" if scale != 1 else "") + \
        (f", shifted by {shift:g}" if shift else "") + (f", rows shifted by ±{far:g} (far apart)" if far else "")

    def make(g: torch.Generator, dev: torch.device):
        x = _randn(g, shape, torch.float64, torch.device("cpu"), scale).add(shift)
        if far:                                  # token n shifted by +far, -far, +far, ...
            n = torch.arange(x[..., 0].numel()).reshape(x.shape[:-1])
            x = x + far * (1 - 2 * (n % 2)).to(torch.float64)[..., None]
        return (x.to(dtype).to(dev),), {}
    return Case(label, make)


register(Exercise(
    "z_loss", z_loss,
    [_logits((4, 10), torch.float64),
     _logits((2, 7, 50), torch.float32),
     _logits((1, 1, 2), torch.float64),
     _logits((3, 5), torch.float64, shift=-4.0),                   # log Z < 0 still squares to > 0
     _logits((2, 3, 4, 16), torch.float32, scale=3.0),
     _logits((4, 16), torch.float32, scale=200.0),                 # exp(200) overflows float32: logsumexp
     _logits((2, 6, 103), torch.bfloat16),                         # result in float32
     _logits((8,), torch.float64),                                 # a single token
     _logits((3, 4, 12), torch.float32, far=1000.0),               # one global max would underflow the low rows
     _logits((4, 9), torch.float16, shift=300.0),                  # (log Z)² = 9e4 overflows float16
     noncontiguous(_logits((3, 5, 7), torch.float32))],
    hint="log Z = logsumexp(logits, dim=-1) (stable: torch.logsumexp), then the MEAN of (log Z)² over all "
         "tokens, a 0-dim tensor; compute in float32 at least (float64 stays float64), do not cast back "
         "to bfloat16",
    grad=True,
))


# ---------------------------------------------------------------------------------------------------------
# Exercise 4: topk_routing
# ---------------------------------------------------------------------------------------------------------
def _router(lead: tuple[int, ...], E: int, k: int, dtype: torch.dtype, shift: float = 0.0, far: float = 0.0) -> Case:
    """Logits without ties; ``shift`` added to all, ``far``: token n shifted by +far, -far, +far, ..."""
    def make(g: torch.Generator, dev: torch.device):
        if dtype in (torch.bfloat16, torch.float16):             # distinct values (no ties) that survive rounding
            ranks = torch.argsort(torch.rand((*lead, E), generator=g), dim=-1).to(torch.float64)
            logits = (ranks - E / 2) / 4
        else:
            logits = 2 * torch.randn((*lead, E), generator=g, dtype=torch.float64)
        logits = logits + shift
        if far:
            n = torch.arange(logits[..., 0].numel()).reshape(logits.shape[:-1])
            logits = logits + far * (1 - 2 * (n % 2)).to(torch.float64)[..., None]
        return (logits.to(dtype).to(dev), k), {}
    label = f"router_logits{(*lead, E)} {_name(dtype)}, k={k}" + (f", shifted by {shift:g}" if shift else "") + \
        (f", rows shifted by ±{far:g} (far apart)" if far else "")
    return Case(label, make)


register(Exercise(
    "topk_routing", topk_routing,
    [_router((6,), 4, 2, torch.float64),
     _router((2, 5), 8, 2, torch.float32),                         # Mixtral: 8 experts, top-2
     _router((10,), 8, 1, torch.float64),                          # top-1 (Switch Transformer): weights are 1
     _router((3, 4), 8, 8, torch.float64),                         # every expert: a plain softmax
     _router((2, 3, 7), 16, 4, torch.float32),
     _router((12,), 8, 2, torch.bfloat16),
     _router((1,), 2, 1, torch.float32),
     _router((2, 5), 8, 3, torch.float32, far=200.0),              # one global max would underflow the low rows
     _router((6,), 8, 2, torch.float16, shift=100.0),              # exp(100) overflows float32: subtract the max
     noncontiguous(_router((3, 4), 6, 2, torch.float64)),
     _router((3,), 1, 1, torch.float64),                           # one expert
     _router((0,), 8, 2, torch.float32)],                          # no tokens
    hint="torch.topk(router_logits, k, dim=-1) gives the k largest logits in decreasing order and their "
         "indices; the weights are the softmax over those k logits only (computed in float32, returned in "
         "the logits' dtype); return (weights, indices)",
    grad=True,
))
