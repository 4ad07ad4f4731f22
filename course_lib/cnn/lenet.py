"""LeNet-5 on real handwritten digits, with the lecture's fully connected layer on 3-D input, softmax and SGD.

Lecture 4, "CNN architectures", Architecture #1: LeNet-5 (LeCun, Bottou, Bengio, Haffner, "Gradient-based
learning applied to document recognition", Proc. IEEE, November 1998). The paper's layer sizes:

    input 1@32×32 → C1 6@28×28 (5×5 conv) → S2 6@14×14 (2×2 subsampling) → C3 16@10×10 (5×5 conv)
          → S4 16@5×5 (2×2 subsampling) → C5 120 (5×5 conv on 5×5 maps) → F6 84 → output 10

C5 is a 5×5 convolution on 16 maps of size 5×5, so each of its 120 units sees the whole S4 volume: it is
exactly the lecture's **fully connected layer on 3-D input** (``fc3d_forward``): flatten x ∈ R^{16×5×5}
into x̂ ∈ R^A, A = 400, then y = αᵀ x̂ + α_0 with α ∈ R^{A×B}, α_0 ∈ R^B, B = 120. ``LeNet5`` implements C5
that way (48,120 parameters either way).

What differs from the 1998 paper, on purpose (``LeNet5Config`` can switch the first two back):

* activation: ReLU by default; ``activation="scaled_tanh"`` is the paper's f(a) = 1.7159 tanh(2a/3);
* S2/S4: max-pooling by default (no parameters); ``pool="subsample"`` is the paper's trainable
  subsampling: each map's 2×2 sums times a trainable coefficient plus a trainable bias (12 + 32 params);
* C3 connects every S2 map to every C3 map (2,416 parameters); the paper's connection table links each C3
  map to 3, 4 or 6 of the S2 maps only (60 of the 96 pairs, 1,516 parameters), to break symmetry and save
  computation on 1998 hardware;
* the output layer is a linear layer (84·10 + 10 = 850 parameters) followed by softmax and cross-entropy;
  the paper uses 10 Euclidean RBF units with fixed 7×12 bitmap centres (840 entries, not trained at
  first) and a MAP criterion.

With these changes the network has 156 + 2,416 + 48,120 + 10,164 + 850 = **61,706** parameters (the
paper's has 60,840). Data (``prepare_digits``): scikit-learn's 8×8 digits are *resized* to 32×32 by
bilinear interpolation, not padded: see that function's docstring.

Training is the lecture's Algorithm 1 (stochastic gradient descent), on mini-batches:
    θ ← θ − η ∇_θ J(θ),     J = cross-entropy of softmax(z) and the label,
with the update itself a function (``sgd_step``) that returns new parameters.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Split

__all__ = [
    "fc3d_forward",
    "stable_softmax",
    "conv_vs_fc_params",
    "sgd_step",
    "scaled_tanh",
    "Subsampling",
    "LeNet5Config",
    "LeNet5",
    "distort",
    "resize_digits",
    "pad_digits",
    "prepare_digits",
    "History",
    "evaluate",
    "train",
    "predict",
    "confusion_matrix",
]

LAYERS = ("input", "C1", "S2", "C3", "S4", "C5", "F6", "output")


# ---------------------------------------------------------------------------------------------------------
# The lecture's layers: fully connected on 3-D input, softmax; parameter counts; the SGD update
# ---------------------------------------------------------------------------------------------------------
def fc3d_forward(x: Tensor, alpha: Tensor, alpha0: Tensor) -> Tensor:
    """The lecture's "Fully-Connected Layer (3D input)": flatten, then a standard linear layer.

        x̂ = flatten(x) ∈ R^A,   y = αᵀ x̂ + α_0,   α ∈ R^{A×B}, α_0 ∈ R^B.

    Inputs:
      x: one 3-D input (C, H, W) or a batch of them (N, C, H, W); flattened in PyTorch's row-major order
         (channel, row, column), so A = C·H·W, the order of ``torch.flatten``.
      alpha: (A, B) weights; column b holds the weights of output unit b.
      alpha0: (B,) biases.
    Returns:
      y: (B,) for one input, (N, B) for a batch, in the dtype of x, on its device.
    """
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        raise ValueError(f"x must be (C, H, W) or (N, C, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
    if alpha.dim() != 2 or alpha0.dim() != 1 or alpha.shape[1] != alpha0.shape[0]:
        raise ValueError(f"alpha must be (A, B) and alpha0 (B,), got {tuple(alpha.shape)} and {tuple(alpha0.shape)}")
    A = x.shape[-3] * x.shape[-2] * x.shape[-1]
    if alpha.shape[0] != A:
        raise ValueError(f"alpha has {alpha.shape[0]} rows, but x flattens to A = C·H·W = {A}")
    if alpha.dtype != x.dtype or alpha0.dtype != x.dtype:
        raise TypeError(f"x, alpha and alpha0 must share a dtype, got {x.dtype}, {alpha.dtype}, {alpha0.dtype}")
    x_hat = x.flatten(start_dim=-3)                  # x̂: (A,) or (N, A)
    return x_hat @ alpha + alpha0                    # y = αᵀ x̂ + α_0: (B,) or (N, B)


def stable_softmax(z: Tensor, dim: int = -1) -> Tensor:
    """The softmax layer, y_k = exp(z_k) / Σ_j exp(z_j), along ``dim``, computed stably.

    Softmax does not change when the same constant is subtracted from every z_j; subtracting the maximum
    makes every exponent ≤ 0, so exp never overflows (exp(1000) is inf in float32 and float64) and the
    largest term is exactly 1, so the sum never underflows to 0. Entries equal to −∞ get probability 0.
    Inputs:
      z: floating-point tensor of any shape (logits).
      dim: the dimension to normalise over.
    Returns:
      y: tensor of z's shape, dtype and device, non-negative, summing to 1 along ``dim`` (computed in
         float32 for float16/bfloat16 inputs, then cast back, as ``torch.softmax`` does).
    """
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got {getattr(z, 'dtype', type(z).__name__)}")
    work = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    m = work.amax(dim=dim, keepdim=True)             # the largest logit: (..., 1, ...)
    e = torch.exp(work - m)                          # exp(z_j − max) ∈ (0, 1]
    return (e / e.sum(dim=dim, keepdim=True)).to(z.dtype)


def conv_vs_fc_params(C_in: int, H: int, W: int, C_out: int, K: int, padding: int = 0) -> tuple[int, int, int]:
    """Parameters of three layers with the same input (C_in, H, W) and output (C_out, H', W') sizes.

    With a K×K window, stride 1 and zero padding p: H' = H + 2p − K + 1, W' = W + 2p − K + 1.
      * convolution: one K×K×C_in kernel and one bias per output channel, shared by all locations:
            C_out·(C_in·K² + 1);
      * locally connected ("untied" convolution): the same connections, but location-specific kernels:
            H'·W'·C_out·(C_in·K² + 1);
      * fully connected layer (3-D input) from A = C_in·H·W inputs to B = C_out·H'·W' outputs:
            A·B + B.
    Returns:
      (conv, locally_connected, fully_connected) as Python ints.
    """
    for name, v in (("C_in", C_in), ("H", H), ("W", W), ("C_out", C_out), ("K", K)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    H_out, W_out = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    if H_out < 1 or W_out < 1:
        raise ValueError(f"a {K}×{K} window does not fit in a padded {H + 2 * padding}×{W + 2 * padding} input")
    per_unit = C_in * K * K + 1                      # one kernel + one bias
    conv = C_out * per_unit
    local = H_out * W_out * C_out * per_unit
    A, B = C_in * H * W, C_out * H_out * W_out
    return conv, local, A * B + B


def sgd_step(params: Sequence[Tensor], grads: Sequence[Tensor], lr: float) -> list[Tensor]:
    """One update of the lecture's Algorithm 1 (SGD), step 7: θ ← θ − η ∇_θ J(θ), for every tensor of θ.

    Inputs:
      params: the parameter tensors θ (any shapes).
      grads: ∇_θ J, one tensor per parameter, same shapes.
      lr: the learning rate η (a float).
    Returns:
      a list of *new* tensors θ − η ∇_θ J (the inputs are not modified), same shapes, dtypes, devices.
    """
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} parameters but {len(grads)} gradients")
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.shape != g.shape:
            raise ValueError(f"parameter {i} has shape {tuple(p.shape)} but its gradient {tuple(g.shape)}")
    return [p - lr * g for p, g in zip(params, grads)]


# ---------------------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------------------
def scaled_tanh(a: Tensor) -> Tensor:
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (so that f(±1) = ±1)."""
    return 1.7159 * torch.tanh(a * (2.0 / 3.0))


class Subsampling(nn.Module):
    """The paper's S2/S4: each 2×2 neighbourhood summed, times a trainable coefficient, plus a trainable
    bias, per map (2 parameters per map). The activation is applied by the network afterwards."""

    def __init__(self, channels: int):
        super().__init__()
        self.coefficient = nn.Parameter(torch.full((channels,), 0.25))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:                              # (N, C, H, W)
        s = 4.0 * F.avg_pool2d(x, 2)                                     # 2×2 sums: (N, C, H/2, W/2)
        return s * self.coefficient[:, None, None] + self.bias[:, None, None]


@dataclass
class LeNet5Config:
    in_channels: int = 1
    num_classes: int = 10
    activation: str = "relu"       # or "scaled_tanh", the paper's 1.7159 tanh(2a/3)
    pool: str = "max"              # or "subsample", the paper's trainable subsampling


class LeNet5(nn.Module):
    """LeNet-5 with the paper's layer sizes (see the module docstring for what differs from 1998).

    ``fc3d`` computes C5, the fully connected layer on the 3-D S4 output (16, 5, 5): by default
    ``fc3d_forward``; the notebook passes the student's own function. Input: (N, in_channels, 32, 32).
    ``forward`` returns the logits z (N, num_classes); ``predict_proba`` applies softmax.
    """

    def __init__(self, config: LeNet5Config | None = None, *, fc3d: Callable | None = None):
        super().__init__()
        self.config = config = config or LeNet5Config()
        if config.activation not in ("relu", "scaled_tanh"):
            raise ValueError(f"activation must be 'relu' or 'scaled_tanh', got {config.activation!r}")
        if config.pool not in ("max", "subsample"):
            raise ValueError(f"pool must be 'max' or 'subsample', got {config.pool!r}")
        self.act = F.relu if config.activation == "relu" else scaled_tanh
        self.c1 = nn.Conv2d(config.in_channels, 6, kernel_size=5)          # 6@28×28
        self.s2 = nn.MaxPool2d(2) if config.pool == "max" else Subsampling(6)
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)                           # 16@10×10
        self.s4 = nn.MaxPool2d(2) if config.pool == "max" else Subsampling(16)
        A, B = 16 * 5 * 5, 120                                              # C5: fully connected on 3-D input
        self.c5_alpha = nn.Parameter(torch.empty(A, B))                     # α ∈ R^{A×B}
        self.c5_alpha0 = nn.Parameter(torch.empty(B))                       # α_0 ∈ R^B
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, config.num_classes)
        self.fc3d = fc3d if fc3d is not None else fc3d_forward
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Weights uniform in (−b, b) with b from each unit's fan-in F, so that activations keep their scale
        through the layers: b = √(6/F) (variance 2/F) for ReLU (He et al. 2015), b = √(3/F) (variance 1/F)
        for the scaled tanh (LeCun et al., "Efficient BackProp", 1998). The paper's own ±2.4/F start is far
        smaller; it trains there with per-weight step sizes (a diagonal Levenberg-Marquardt method), but
        not with plain SGD. Biases 0; subsampling coefficients 1/4 (averaging) to start."""
        layers = [(self.c1.weight, self.c1.bias), (self.c3.weight, self.c3.bias),
                  (self.c5_alpha.T, self.c5_alpha0), (self.f6.weight, self.f6.bias),
                  (self.output.weight, self.output.bias)]
        for weight, bias in layers:                                        # weight: (units, fan-in, ...)
            fan_in = weight[0].numel()
            bound = math.sqrt((6.0 if self.config.activation == "relu" else 3.0) / fan_in)
            weight.uniform_(-bound, bound)
            bias.zero_()

    def _pool(self, pool: nn.Module, x: Tensor) -> Tensor:
        y = pool(x)
        return self.act(y) if isinstance(pool, Subsampling) else y        # the paper squashes S-layers too

    def feature_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Every layer's output, by the paper's names: input, C1, S2, C3, S4, C5, F6, output (logits)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.config.in_channels, 32, 32):
            raise ValueError(f"LeNet-5 expects input (N, {self.config.in_channels}, 32, 32), got {tuple(x.shape)}")
        out = {"input": x}
        out["C1"] = self.act(self.c1(x))                                        # (N, 6, 28, 28)
        out["S2"] = self._pool(self.s2, out["C1"])                              # (N, 6, 14, 14)
        out["C3"] = self.act(self.c3(out["S2"]))                                # (N, 16, 10, 10)
        out["S4"] = self._pool(self.s4, out["C3"])                              # (N, 16, 5, 5)
        out["C5"] = self.act(self.fc3d(out["S4"], self.c5_alpha, self.c5_alpha0))  # (N, 120)
        out["F6"] = self.act(self.f6(out["C5"]))                                # (N, 84)
        out["output"] = self.output(out["F6"])                                  # logits z: (N, 10)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_maps(x)["output"]                                   # (N, num_classes)

    def predict_proba(self, x: Tensor, softmax: Callable = stable_softmax) -> Tensor:
        """Class probabilities y = softmax(z), (N, num_classes)."""
        return softmax(self(x), dim=-1)


# ---------------------------------------------------------------------------------------------------------
# Data: 8×8 digits → 32×32
# ---------------------------------------------------------------------------------------------------------
def resize_digits(x: Tensor, size: int = 32) -> Tensor:
    """Bilinear resize (N, C, h, w) → (N, C, size, size), ``align_corners=False`` (pixel centres)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def pad_digits(x: Tensor, size: int = 32) -> Tensor:
    """Zero-pad (N, C, h, w) → (N, C, size, size), the digit centred (the paper pads 28×28 MNIST to 32×32)."""
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def prepare_digits(split: Split, how: str = "resize", size: int = 32) -> Split:
    """scikit-learn's digits made into LeNet-5 inputs: (N, 1, 8, 8) → (N, 1, 32, 32), standardised.

    ``how="resize"`` (default) upsamples by bilinear interpolation. Why: the UCI digits *were* 32×32 binary
    bitmaps; scikit-learn's 8×8 images count the ink pixels of each 4×4 block (0..16). Resizing back to
    32×32 restores the scale LeNet-5's layer sizes were designed for (a 5×5 C1 kernel sees part of a
    stroke, S4's 5×5 cells see parts of the digit), though not the detail, which is lost for good: the
    images are blurry. ``how="pad"`` (zeros around the 8×8 image, as the paper pads MNIST's 28×28) would
    leave an 8×8 digit in a 32×32 frame: one C1 kernel would cover most of it and after S2 and C3 the
    whole digit would fit inside two pixels of S4.
    Both are standardised with the training set's mean and standard deviation (the paper likewise scales
    inputs so that their mean is about 0 and their variance about 1).
    """
    if how not in ("resize", "pad"):
        raise ValueError(f"how must be 'resize' or 'pad', got {how!r}")
    fn = resize_digits if how == "resize" else pad_digits
    x_train, x_test = fn(split.x_train, size), fn(split.x_test, size)
    mean, std = x_train.mean(), x_train.std()
    return Split((x_train - mean) / std, split.y_train, (x_test - mean) / std, split.y_test)


def distort(x: Tensor, generator: torch.Generator, max_shift: float = 2.0, max_rotation: float = 10.0,
            max_scale: float = 0.1) -> Tensor:
    """Random planar affine distortions of a batch (N, C, H, W), one per image, as the paper trains on
    (translations, scaling, ...): shift by up to ``max_shift`` pixels, rotate by up to ``max_rotation``
    degrees, scale by 1 ± ``max_scale``. Pixels coming in from outside get each image's background
    (its minimum). Randomness from ``generator`` (CPU), so runs are reproducible.
    """
    N, H = x.shape[0], x.shape[-1]
    u = torch.rand(N, 4, generator=generator).to(x.device, x.dtype) * 2 - 1        # U(−1, 1): (N, 4)
    angle, scale = u[:, 0] * math.radians(max_rotation), 1 + u[:, 1] * max_scale
    theta = torch.zeros(N, 2, 3, dtype=x.dtype, device=x.device)                 # affine maps: (N, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, :, 2] = u[:, 2:] * max_shift * 2.0 / H                              # pixels → [−1, 1] units
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)              # (N, H, W, 2)
    background = x.amin(dim=(1, 2, 3), keepdim=True)                              # (N, 1, 1, 1)
    return F.grid_sample(x - background, grid, align_corners=False) + background


# ---------------------------------------------------------------------------------------------------------
# Training with SGD (Algorithm 1), evaluation
# ---------------------------------------------------------------------------------------------------------
@dataclass
class History:
    """What ``train`` records: per epoch, and the loss of every mini-batch step."""
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)     # mean over the epoch's mini-batches
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)        # wall-clock time since the start of training
    step_loss: list[float] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        z = model(x[i:i + batch_size])
        loss += F.cross_entropy(z, y[i:i + batch_size], reduction="sum").item()
        correct += (z.argmax(dim=-1) == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return loss / max(len(y), 1), correct / max(len(y), 1)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted classes argmax_k z_k, (N,) int64 (in eval mode)."""
    was_training = model.training
    model.eval()
    y = torch.cat([model(x[i:i + batch_size]).argmax(dim=-1) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return y


def train(model: nn.Module, data: Split, *, epochs: int = 10, lr: float = 0.05, batch_size: int = 32,
          update: Callable = sgd_step, lr_decay: str = "cosine", augment: bool = True, seed: int = 0,
          run=None, progress: bool = True, time_limit: float | None = None) -> History:
    """Train ``model`` with the lecture's Algorithm 1 on mini-batches, evaluating on the test set each epoch.

    Each step: sample a mini-batch (a fresh random order each epoch, from ``seed``); forward y = h_θ(x);
    J = mean cross-entropy (log-softmax and negative log-likelihood in one stable call); backward: ∇_θ J by
    autograd; update: θ ← ``update``(θ, ∇_θ J, η_t), copied into the model's parameters.
    Inputs:
      lr: η_0. ``lr_decay="cosine"`` lowers it to 0 along a half cosine over the run (the lecture's η_t),
          ``"none"`` keeps it constant.
      augment: train on randomly distorted copies of each mini-batch (``distort``), as the paper does.
      run: a W&B run (``course_lib.tracking.init``) that gets the epoch metrics, or None.
      time_limit: stop after the epoch during which this many seconds have passed (None: no limit).
    Returns:
      a ``History``. A tqdm bar shows the epochs when ``progress``.
    """
    from tqdm.auto import tqdm

    if lr_decay not in ("cosine", "none"):
        raise ValueError(f"lr_decay must be 'cosine' or 'none', got {lr_decay!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    hist, start = History(), time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc="epochs", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=gen).to(data.x_train.device)
        losses = []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]                                      # sample a mini-batch
            x = distort(data.x_train[idx], gen) if augment else data.x_train[idx]
            z = model(x)                                                       # forward: (b, 10)
            J = F.cross_entropy(z, data.y_train[idx])                          # J(θ) = ℓ(y, y*)
            grads = torch.autograd.grad(J, params)                             # backward: ∇_θ J
            eta = lr * 0.5 * (1 + math.cos(math.pi * step / total)) if lr_decay == "cosine" else lr
            with torch.no_grad():
                for p, new in zip(params, update(params, grads, eta)):        # θ ← θ − η ∇_θ J
                    p.copy_(new)
            losses.append(J.item())
            step += 1
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        hist.epoch.append(epoch)
        hist.train_loss.append(sum(losses) / len(losses))
        hist.test_loss.append(test_loss)
        hist.test_acc.append(test_acc)
        hist.seconds.append(time.perf_counter() - start)
        hist.step_loss.extend(losses)
        bar.set_postfix(train_loss=f"{hist.train_loss[-1]:.3f}", test_acc=f"{test_acc:.3f}")
        if run is not None:
            run.log({"epoch": epoch, "train_loss": hist.train_loss[-1], "test_loss": test_loss,
                     "test_acc": test_acc, "lr": eta, "seconds": hist.seconds[-1]})
        if time_limit is not None and hist.seconds[-1] > time_limit:
            break
    bar.close()
    return hist


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int = 10) -> Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    idx = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
