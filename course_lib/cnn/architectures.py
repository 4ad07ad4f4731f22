"""LeNet-5, AlexNet, VGG-19 and ResNet-152 as data: layer lists, with output shapes, parameter counts and
multiply-adds computed by formula (Lecture 4, "CNN architectures" and "Typical architectures").

A layer list holds only what changes shapes or has parameters; ReLU, dropout and local response
normalisation have neither and are left out. Formulas (per image, no batch dimension):

    convolution, C_in → C_out, K×K kernel, stride s, zero padding p, g groups:
        H' = ⌊(H + 2p − K)/s⌋ + 1,  W' likewise
        params = C_out·(C_in/g)·K² (+ C_out biases)
        multiply-adds = H'·W'·C_out·(C_in/g)·K²
    pooling (max or average), K×K window, stride s, padding p: the same H', W', channels unchanged, 0 params
    adaptive average pooling to (h, w): output (C, h, w), 0 params
    batch normalisation over C channels: 2C params (γ, β; running statistics are not parameters)
    fully connected, A → B (after flattening a C×H×W input, A = C·H·W): A·B (+ B) params, A·B multiply-adds
    residual block: y = branch(x) + shortcut(x), shortcut = identity when empty; params of both paths

Known totals (tests check them): LeNet-5 with a linear output layer 61,706; AlexNet ≈ 61M (the 2012 paper's
two-GPU network 60,965,224; torchvision's single-GPU variant 61,100,840); VGG-19 143,667,240; ResNet-152
60,192,808 (torchvision's ``num_params``; the papers: "60 million", "144M", 11.3·10⁹ FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = [
    "Conv", "Pool", "AdaptiveAvgPool", "BatchNorm", "Flatten", "Linear", "Residual", "Architecture",
    "Row", "conv_output_size", "layer_rows", "stage_rows", "total_params", "total_macs",
    "LENET5", "ALEXNET", "ALEXNET_TORCHVISION", "VGG19", "RESNET152", "ARCHITECTURES",
]


# ---------------------------------------------------------------------------------------------------------
# Layer types (data only)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True
    name: str = ""


@dataclass(frozen=True)
class Pool:
    kernel: int
    stride: int | None = None      # None: stride = kernel (non-overlapping)
    padding: int = 0
    kind: str = "max"              # "max" or "avg"
    name: str = ""


@dataclass(frozen=True)
class AdaptiveAvgPool:
    size: int = 1
    name: str = ""


@dataclass(frozen=True)
class BatchNorm:
    name: str = ""


@dataclass(frozen=True)
class Flatten:
    name: str = "flatten"


@dataclass(frozen=True)
class Linear:
    out_features: int
    bias: bool = True
    name: str = ""


@dataclass(frozen=True)
class Residual:
    branch: tuple
    shortcut: tuple = ()           # () is the identity
    name: str = ""


Layer = Union[Conv, Pool, AdaptiveAvgPool, BatchNorm, Flatten, Linear, Residual]


@dataclass(frozen=True)
class Architecture:
    name: str
    input_shape: tuple[int, int, int]     # (C, H, W)
    layers: tuple
    source: str = ""


@dataclass(frozen=True)
class Row:
    """One line of a shape/parameter table."""
    name: str
    layer: str                  # a short description, e.g. "conv 5×5, 6" or "3 × bottleneck"
    out_shape: tuple[int, ...]  # (C, H, W) or (features,)
    params: int
    macs: int                   # multiply-adds per image


# ---------------------------------------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------------------------------------
def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """⌊(n + 2p − K)/s⌋ + 1: the output height (or width) of a convolution or pooling window."""
    if n + 2 * padding < kernel:
        raise ValueError(f"a window of {kernel} does not fit in {n} + 2·{padding}")
    return (n + 2 * padding - kernel) // stride + 1


def _apply(layer: Layer, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, int, str]:
    """(output shape, params, multiply-adds, description) of one layer on an input of ``shape``."""
    if isinstance(layer, Conv):
        C, H, W = _chw(layer, shape)
        if C % layer.groups or layer.out_channels % layer.groups:
            raise ValueError(f"{layer.name}: {C} → {layer.out_channels} channels do not split into {layer.groups} groups")
        Ho = conv_output_size(H, layer.kernel, layer.stride, layer.padding)
        Wo = conv_output_size(W, layer.kernel, layer.stride, layer.padding)
        weights = layer.out_channels * (C // layer.groups) * layer.kernel ** 2
        params = weights + (layer.out_channels if layer.bias else 0)
        desc = f"conv {layer.kernel}×{layer.kernel}, {layer.out_channels}" + (f", /{layer.stride}" if layer.stride > 1 else "")
        return (layer.out_channels, Ho, Wo), params, Ho * Wo * weights, desc
    if isinstance(layer, Pool):
        C, H, W = _chw(layer, shape)
        s = layer.stride or layer.kernel
        Ho, Wo = (conv_output_size(n, layer.kernel, s, layer.padding) for n in (H, W))
        return (C, Ho, Wo), 0, 0, f"{layer.kind} pool {layer.kernel}×{layer.kernel}, /{s}"
    if isinstance(layer, AdaptiveAvgPool):
        C, _, _ = _chw(layer, shape)
        return (C, layer.size, layer.size), 0, 0, f"adaptive avg pool → {layer.size}×{layer.size}"
    if isinstance(layer, BatchNorm):
        return shape, 2 * shape[0], 0, "batch norm"
    if isinstance(layer, Flatten):
        n = 1
        for d in shape:
            n *= d
        return (n,), 0, 0, "flatten"
    if isinstance(layer, Linear):
        if len(shape) != 1:
            raise ValueError(f"{layer.name}: a Linear layer needs a flat input, got {shape} (add Flatten())")
        A, B = shape[0], layer.out_features
        return (B,), A * B + (B if layer.bias else 0), A * B, f"fc, {B}"
    if isinstance(layer, Residual):
        out, params, macs = _run(layer.branch, shape)
        short, p2, m2 = _run(layer.shortcut, shape)
        if out != short:
            raise ValueError(f"{layer.name}: branch gives {out} but the shortcut {short}; they must match to add")
        convs = "; ".join(f"{c.kernel}×{c.kernel}, {c.out_channels}" for c in layer.branch if isinstance(c, Conv))
        return out, params + p2, macs + m2, f"residual [{convs}]"
    raise TypeError(f"unknown layer {layer!r}")


def _chw(layer: Layer, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{layer.name or type(layer).__name__}: needs a (C, H, W) input, got {shape}")
    return shape  # type: ignore[return-value]


def _run(layers, shape):
    params = macs = 0
    for layer in layers:
        shape, p, m, _ = _apply(layer, shape)
        params, macs = params + p, macs + m
    return shape, params, macs


def layer_rows(arch: Architecture) -> list[Row]:
    """One row per top-level layer (a residual block is one row), in order."""
    rows, shape = [], tuple(arch.input_shape)
    for layer in arch.layers:
        shape, params, macs, desc = _apply(layer, shape)
        rows.append(Row(layer.name, desc, shape, params, macs))
    return rows


def stage_rows(arch: Architecture) -> list[Row]:
    """Consecutive rows with the same name merged (ResNet's conv2_x, …: 'n × residual block'), as the
    papers' tables show them: output shape of the last, params and multiply-adds summed."""
    merged: list[list[Row]] = []
    for row in layer_rows(arch):
        if merged and merged[-1][0].name == row.name:
            merged[-1].append(row)
        else:
            merged.append([row])
    rows = []
    for g in merged:
        kinds = [r.layer for r in g]
        desc = f"{len(g)} × {kinds[0]}" if len(g) > 1 and len(set(kinds)) == 1 else " + ".join(kinds)
        rows.append(Row(g[0].name, desc, g[-1].out_shape, sum(r.params for r in g), sum(r.macs for r in g)))
    return rows


def total_params(arch: Architecture) -> int:
    return sum(r.params for r in layer_rows(arch))


def total_macs(arch: Architecture) -> int:
    return sum(r.macs for r in layer_rows(arch))


# ---------------------------------------------------------------------------------------------------------
# The layer lists
# ---------------------------------------------------------------------------------------------------------
# LeNet-5 (LeCun et al. 1998, Fig. 2), as course_lib.cnn.lenet.LeNet5 builds it: C3 fully connected to S2
# (not the paper's connection table), parameter-free max-pooling, a linear output layer. C5 is a 5×5
# convolution on 5×5 maps, i.e. a fully connected layer on the 3-D S4 output.
LENET5 = Architecture("LeNet-5", (1, 32, 32), (
    Conv(6, 5, name="C1"),
    Pool(2, name="S2"),
    Conv(16, 5, name="C3"),
    Pool(2, name="S4"),
    Conv(120, 5, name="C5"),
    Flatten(),
    Linear(84, name="F6"),
    Linear(10, name="output"),
), source="LeCun et al., Proc. IEEE 1998")

# AlexNet as in Krizhevsky, Sutskever, Hinton (NIPS 2012), Fig. 2: two GPUs, so conv2, conv4 and conv5 see
# only the half of the previous maps on their own GPU (groups=2). The paper says 224×224 inputs, but
# 11×11 kernels at stride 4 give its 55×55 maps only from 227×227 (⌊(227 − 11)/4⌋ + 1 = 55).
ALEXNET = Architecture("AlexNet", (3, 227, 227), (
    Conv(96, 11, stride=4, name="conv1"),
    Pool(3, 2, name="pool1"),
    Conv(256, 5, padding=2, groups=2, name="conv2"),
    Pool(3, 2, name="pool2"),
    Conv(384, 3, padding=1, name="conv3"),
    Conv(384, 3, padding=1, groups=2, name="conv4"),
    Conv(256, 3, padding=1, groups=2, name="conv5"),
    Pool(3, 2, name="pool5"),
    Flatten(),
    Linear(4096, name="fc6"),
    Linear(4096, name="fc7"),
    Linear(1000, name="fc8"),
), source="Krizhevsky et al., NIPS 2012")

# torchvision's alexnet: the single-GPU variant of Krizhevsky's "One weird trick" (arXiv:1404.5997).
ALEXNET_TORCHVISION = Architecture("AlexNet (torchvision)", (3, 224, 224), (
    Conv(64, 11, stride=4, padding=2, name="conv1"),
    Pool(3, 2, name="pool1"),
    Conv(192, 5, padding=2, name="conv2"),
    Pool(3, 2, name="pool2"),
    Conv(384, 3, padding=1, name="conv3"),
    Conv(256, 3, padding=1, name="conv4"),
    Conv(256, 3, padding=1, name="conv5"),
    Pool(3, 2, name="pool5"),
    AdaptiveAvgPool(6, name="avgpool"),
    Flatten(),
    Linear(4096, name="fc6"),
    Linear(4096, name="fc7"),
    Linear(1000, name="fc8"),
), source="torchvision.models.alexnet")


def _vgg(config: tuple) -> tuple:
    """VGG's notation (Simonyan & Zisserman 2015, Table 1): a number is a 3×3 conv (padding 1) with that
    many channels, "M" a 2×2 max-pool; then three fully connected layers."""
    layers, block, i = [], 1, 1
    for c in config:
        if c == "M":
            layers.append(Pool(2, name=f"pool{block}"))
            block, i = block + 1, 1
        else:
            layers.append(Conv(c, 3, padding=1, name=f"conv{block}_{i}"))
            i += 1
    return (*layers, Flatten(), Linear(4096, name="fc6"), Linear(4096, name="fc7"), Linear(1000, name="fc8"))


# VGG-19 = configuration E: 16 conv layers + 3 fully connected (the lecture's "VGG, 19 layers").
VGG19 = Architecture("VGG-19", (3, 224, 224), _vgg(
    (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")),
    source="Simonyan & Zisserman, ICLR 2015")


def _bottleneck(width: int, stride: int, project: bool, name: str) -> Residual:
    """ResNet's bottleneck block (He et al. 2016, Fig. 5 right): 1×1 conv to ``width``, 3×3 conv, 1×1 conv to
    4·width, each followed by batch norm, convolutions without bias; a 1×1 projection shortcut (with
    batch norm) where the shape changes. The stride sits on the 3×3 conv (torchvision's "v1.5"; the paper
    puts it on the first 1×1: the same shapes and parameter count)."""
    branch = (Conv(width, 1, bias=False), BatchNorm(),
              Conv(width, 3, stride=stride, padding=1, bias=False), BatchNorm(),
              Conv(4 * width, 1, bias=False), BatchNorm())
    shortcut = (Conv(4 * width, 1, stride=stride, bias=False), BatchNorm()) if project else ()
    return Residual(branch, shortcut, name=name)


def _resnet(blocks: tuple[int, int, int, int]) -> tuple:
    layers = [Conv(64, 7, stride=2, padding=3, bias=False, name="conv1"), BatchNorm(name="conv1"),
              Pool(3, 2, padding=1, name="pool1")]
    for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=2):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 2) else 1
            layers.append(_bottleneck(width, stride, project=(i == 0), name=f"conv{stage}_x"))
    return (*layers, AdaptiveAvgPool(1, name="avgpool"), Flatten(), Linear(1000, name="fc"))


# ResNet-152 (He et al., CVPR 2016, Table 1): bottleneck blocks [3, 8, 36, 3].
RESNET152 = Architecture("ResNet-152", (3, 224, 224), _resnet((3, 8, 36, 3)), source="He et al., CVPR 2016")

ARCHITECTURES = {a.name: a for a in (LENET5, ALEXNET, VGG19, RESNET152)}
