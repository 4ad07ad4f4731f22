"""Graded exercises of the LeNet-5 assignment (``solutions/lenet/lenet.ipynb``)."""
from __future__ import annotations

import math

import torch

from ..cnn import lenet
from ..grading import Case, Exercise, noncontiguous, register


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------------------
# fc3d_forward(x, alpha, alpha0)
# ---------------------------------------------------------------------------------------------------------
def _fc3d(shape: tuple[int, ...], B: int, dtype: torch.dtype, note: str = "") -> Case:
    """x of ``shape`` ((C, H, W) or (N, C, H, W)) from N(0, 1), α (A, B) from N(0, 1/A), α_0 (B,) from N(0, 1)."""
    A = math.prod(shape[-3:])
    label = f"x{tuple(shape)}, B={B} {_name(dtype)}" + (f", {note}" if note else "")

    def make(g: torch.Generator, dev: torch.device):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        alpha = torch.randn(A, B, generator=g, dtype=torch.float64) / math.sqrt(A)
        alpha0 = torch.randn(B, generator=g, dtype=torch.float64)
        return tuple(t.to(dtype).to(dev) for t in (x, alpha, alpha0)), {}
    return Case(label, make)


register(Exercise(
    "fc3d_forward", lenet.fc3d_forward,
    [_fc3d((3, 2, 2), 4, torch.float64, "one input, not a batch"),
     _fc3d((2, 1, 4, 4), 3, torch.float64),
     _fc3d((4, 3, 2, 5), 7, torch.float64, "H ≠ W"),
     _fc3d((5, 16, 5, 5), 120, torch.float32, "LeNet-5's C5"),
     _fc3d((1, 6, 14, 14), 10, torch.float32),
     _fc3d((2, 3, 4, 4), 1, torch.float64, "one output unit"),
     _fc3d((3, 4, 3, 3), 2, torch.bfloat16),
     _fc3d((0, 2, 3, 3), 5, torch.float32, "empty batch"),
     _fc3d((3, 2, 5), 4, torch.float64, "one input, H ≠ W"),
     noncontiguous(_fc3d((3, 2, 3, 4), 5, torch.float64, "H ≠ W")),
     noncontiguous(_fc3d((2, 4, 4), 3, torch.float32, "one input"))],
    hint="flatten each input in (channel, row, column) order, as torch.flatten does (keep the batch "
         "dimension), then y = x̂ α + α_0 with α of shape (A, B)",
    grad=True,           # LeNet-5's C5: training backpropagates through it
))


# ---------------------------------------------------------------------------------------------------------
# stable_softmax(z, dim=-1)
# ---------------------------------------------------------------------------------------------------------
def _logits(shape: tuple[int, ...], dtype: torch.dtype, *, dim: int | None = None, scale: float = 3.0,
            shift: float = 0.0, masked: bool = False, apart: bool = False, note: str = "") -> Case:
    label = f"z{tuple(shape)} {_name(dtype)}" + (f", dim={dim}" if dim is not None else "") + (f", {note}" if note else "")

    def make(g: torch.Generator, dev: torch.device):
        z = torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift
        if apart:    # the slices along `dim` alternate near +1000 and near −1000: a single global max fails
            d = (dim if dim is not None else -1) % len(shape)
            other = next(k for k in range(len(shape)) if k != d)
            index = torch.arange(shape[other]).reshape([-1 if k == other else 1 for k in range(len(shape))])
            z = z + torch.where(index % 2 == 0, 1000.0, -1000.0).to(torch.float64)
        if masked:   # about a third of the entries −∞ (never a whole row), as an attention mask would
            drop = torch.rand(shape, generator=g) < 0.35
            drop[..., 0] = False
            z = z.masked_fill(drop, float("-inf"))
        return (z.to(dtype).to(dev),), ({} if dim is None else {"dim": dim})
    return Case(label, make)


register(Exercise(
    "stable_softmax", lenet.stable_softmax,
    [_logits((10,), torch.float64),
     _logits((4, 10), torch.float32),
     _logits((2, 3, 7), torch.float64, dim=1),
     _logits((5, 4), torch.float64, dim=0),
     _logits((1, 1), torch.float32, note="a single logit"),
     _logits((3, 8), torch.float32, shift=1000.0, note="logits near +1000"),
     _logits((3, 8), torch.float64, shift=-1000.0, note="logits near -1000"),
     _logits((2, 6), torch.float32, scale=30.0, note="logits spread widely (σ = 30)"),
     _logits((3, 9), torch.float64, masked=True, note="some logits -inf"),
     _logits((4, 10), torch.bfloat16),
     _logits((2, 6), torch.float32, apart=True, note="rows near +1000 and near -1000"),
     _logits((5, 4), torch.float64, dim=0, apart=True, note="columns near +1000 and near -1000"),
     _logits((4, 10), torch.float16, scale=10.0),
     _logits((0, 5), torch.float32, note="no row"),
     noncontiguous(_logits((3, 2, 6), torch.float64, dim=1))],
    hint="subtract the maximum along `dim` (keepdim=True: each slice its own maximum, not z.max()) before exp, so that exp never overflows and the "
         "largest term is exactly 1; normalise along `dim`",
    forbidden=("torch.softmax", "torch.nn.functional.softmax", "torch.nn.functional.log_softmax",
               "torch.log_softmax", "aten::_softmax", "aten::softmax", "aten::_log_softmax", "aten::log_softmax"),
    grad=True,           # the output layer: training backpropagates through it
))


# ---------------------------------------------------------------------------------------------------------
# conv_vs_fc_params(C_in, H, W, C_out, K, padding=0)
# ---------------------------------------------------------------------------------------------------------
def _sizes(C_in: int, H: int, W: int, C_out: int, K: int, padding: int | None = None, note: str = "") -> Case:
    label = f"C_in={C_in}, {H}×{W}, C_out={C_out}, K={K}" + (f", padding={padding}" if padding is not None else "") \
        + (f" ({note})" if note else "")
    kwargs = {} if padding is None else {"padding": padding}
    return Case(label, lambda g, dev: ((C_in, H, W, C_out, K), dict(kwargs)))


register(Exercise(
    "conv_vs_fc_params", lenet.conv_vs_fc_params,
    [_sizes(1, 32, 32, 6, 5, note="LeNet-5's C1"),
     _sizes(6, 14, 14, 16, 5, note="LeNet-5's C3"),
     _sizes(16, 5, 5, 120, 5, note="LeNet-5's C5: the window is the whole input"),
     _sizes(3, 7, 5, 2, 3, note="H ≠ W"),
     _sizes(64, 56, 56, 256, 1, note="a 1×1 convolution"),
     _sizes(1, 8, 8, 4, 5, padding=2),
     _sizes(3, 224, 224, 64, 3, padding=1, note="VGG-19's conv1_1"),
     _sizes(2, 6, 9, 3, 4, note="even K, H ≠ W"),
     _sizes(4, 3, 5, 5, 4, padding=1, note="K > H")],
    hint="H' = H + 2p − K + 1; one kernel has C_in·K² weights and 1 bias; the convolution shares C_out "
         "kernels over all H'·W' locations, the locally connected layer has its own at each location, the "
         "fully connected layer has A·B + B parameters with A = C_in·H·W, B = C_out·H'·W'",
))


# ---------------------------------------------------------------------------------------------------------
# sgd_step(params, grads, lr)
# ---------------------------------------------------------------------------------------------------------
LENET5_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (400, 120), (120,), (84, 120), (84,), (10, 84), (10,)]


def _step(shapes: list[tuple[int, ...]], lr: float, dtype: torch.dtype, note: str = "") -> Case:
    label = f"{len(shapes)} tensor(s) {_name(dtype)}, lr={lr:g}" + (f", {note}" if note else "")

    def make(g: torch.Generator, dev: torch.device):
        params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(dev) for s in shapes]
        grads = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(dev) for s in shapes]
        return (params, grads, lr), {}
    return Case(label, make)


register(Exercise(
    "sgd_step", lenet.sgd_step,
    [_step([(3,)], 0.1, torch.float64),
     _step([(2, 3), (3,)], 0.5, torch.float64),
     _step(LENET5_SHAPES, 0.05, torch.float32, "LeNet-5's parameter shapes"),
     _step([(), (4, 4)], 1.5, torch.float64, "a 0-d tensor"),
     _step([(5,), (2, 2)], 0.0, torch.float32, "lr = 0 changes nothing"),
     _step([(8, 8)], 0.01, torch.bfloat16),
     _step([], 0.1, torch.float32, "no parameters"),
     _step([(4, 4), (3,)], 0.1, torch.float16),
     noncontiguous(_step([(3, 4), (5,)], 0.2, torch.float64))],
    hint="θ ← θ − η ∇_θ J for every tensor: return a list of new tensors (p - lr * g), without modifying "
         "the parameters in place",
))
