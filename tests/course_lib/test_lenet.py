"""LeNet-5 and the architecture tables (course_lib.cnn.lenet, course_lib.cnn.architectures) against
independent oracles, never against themselves.

Oracles written out here:

* ``torch.nn.Linear`` after ``torch.flatten`` for the fully connected layer on 3-D input; ``nn.Conv2d``
  with a 5×5 kernel on 5×5 maps for C5; ``torch.softmax``; ``torch.optim.SGD`` for one update;
* LeNet-5 rebuilt here as a plain ``nn.Sequential`` from the paper's layer sizes, with the weights copied;
* the parameter counts of real ``torch.nn`` layers (``numel``), built on the ``meta`` device (shapes, no
  memory) for the big networks: AlexNet, VGG-19 and ResNet-152 are re-implemented here from their papers
  with ``torch.nn`` and their output shapes and parameters compared with the formulas;
* published totals (torchvision is not installed here, so its documented ``num_params`` are constants,
  with their source); scikit-learn's ``confusion_matrix``.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from course_lib import grading
from course_lib.cnn import architectures as arch
from course_lib.cnn import lenet
from course_lib.data import Split

pytestmark = pytest.mark.cnn

# Published totals. torchvision's model documentation, "num_params" of the IMAGENET1K_V1 weights
# (https://pytorch.org/vision/stable/models.html, torchvision.models.{alexnet,vgg19,resnet152}):
TORCHVISION_ALEXNET = 61_100_840
TORCHVISION_VGG19 = 143_667_240
TORCHVISION_RESNET152 = 60_192_808
# Krizhevsky et al. (NIPS 2012), abstract: "The neural network, which has 60 million parameters".
ALEXNET_PAPER_APPROX = 60e6
# He et al. (CVPR 2016), Table 1: ResNet-152 "11.3×10⁹" FLOPs (multiply-adds); Fig. 3: VGG-19 "19.6 billion FLOPs".
RESNET152_MACS_PAPER = 11.3e9
VGG19_MACS_PAPER = 19.6e9
# LeNet-5 with the paper's sizes, C3 fully connected to S2, max-pooling and a linear output layer, by hand:
#   C1 (5·5·1 + 1)·6 + C3 (5·5·6 + 1)·16 + C5 (5·5·16 + 1)·120 + F6 (120 + 1)·84 + output (84 + 1)·10
LENET5_PARAMS = (25 + 1) * 6 + (150 + 1) * 16 + (400 + 1) * 120 + (120 + 1) * 84 + (84 + 1) * 10
# The paper's (1998) sizes of every map, Fig. 2.
LENET5_SHAPES = {"input": (1, 32, 32), "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10),
                 "S4": (16, 5, 5), "C5": (120,), "F6": (84,), "output": (10,)}


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------
# fully connected layer on 3-D input
# ---------------------------------------------------------------------------------------------------------
@given(N=st.integers(0, 4), C=st.integers(1, 4), H=st.integers(1, 6), W=st.integers(1, 6), B=st.integers(1, 9),
       seed=st.integers(0, 2**31 - 1))
def test_fc3d_equals_flatten_then_linear(N, C, H, W, B, seed):
    A = C * H * W
    linear = nn.Linear(A, B, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(randn(seed, B, A))
        linear.bias.copy_(randn(seed + 1, B))
    x = randn(seed + 2, N, C, H, W)
    alpha, alpha0 = linear.weight.detach().T, linear.bias.detach()    # α = Wᵀ ∈ R^{A×B}
    expected = linear(torch.flatten(x, start_dim=1))
    torch.testing.assert_close(lenet.fc3d_forward(x, alpha, alpha0), expected)
    if N > 0:   # one input (C, H, W) gives (B,)
        torch.testing.assert_close(lenet.fc3d_forward(x[0], alpha, alpha0), expected[0])


def test_fc3d_by_the_lecture_sum():
    # y_b = Σ_a α_{a,b} x̂_a + α_{0,b}, with x̂_a the (c, h, w) entry numbered a = (c·H + h)·W + w
    C, H, W, B = 2, 3, 4, 5
    x, alpha, alpha0 = randn(0, C, H, W), randn(1, C * H * W, B), randn(2, B)
    y = lenet.fc3d_forward(x, alpha, alpha0)
    for b in range(B):
        total = alpha0[b].item()
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    total += alpha[(c * H + h) * W + w, b].item() * x[c, h, w].item()
        assert math.isclose(y[b].item(), total, rel_tol=1e-12, abs_tol=1e-12)


def test_fc3d_rejects_bad_shapes():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="A = C·H·W = 48"):
        lenet.fc3d_forward(x, torch.zeros(47, 5), torch.zeros(5))
    with pytest.raises(ValueError, match="alpha0"):
        lenet.fc3d_forward(x, torch.zeros(48, 5), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        lenet.fc3d_forward(torch.zeros(48), torch.zeros(48, 5), torch.zeros(5))
    with pytest.raises(TypeError, match="dtype"):
        lenet.fc3d_forward(x, torch.zeros(48, 5, dtype=torch.float64), torch.zeros(5))


def test_c5_is_a_5x5_convolution():
    """LeNet-5's C5 computed as a fully connected layer on the 3-D S4 output equals the paper's 5×5 conv."""
    model = lenet.LeNet5()
    conv = nn.Conv2d(16, 120, 5)
    with torch.no_grad():
        conv.weight.copy_(model.c5_alpha.T.reshape(120, 16, 5, 5))      # column b of α = kernel b, flattened
        conv.bias.copy_(model.c5_alpha0)
    s4 = torch.randn(3, 16, 5, 5)
    torch.testing.assert_close(lenet.fc3d_forward(s4, model.c5_alpha, model.c5_alpha0),
                               conv(s4).flatten(1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.1, 3.0, 50.0]), shift=st.sampled_from([0.0, 1000.0, -1000.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]), data=st.data())
def test_softmax_equals_torch_softmax(shape, seed, scale, shift, dtype, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    z = (randn(seed, *shape) * scale + shift).to(dtype)
    y = lenet.stable_softmax(z, dim=dim)
    assert y.dtype == dtype and y.shape == z.shape
    assert torch.isfinite(y).all(), "softmax must not overflow, even for logits near ±1000"
    torch.testing.assert_close(y, torch.softmax(z, dim=dim))
    torch.testing.assert_close(y.sum(dim=dim), torch.ones_like(y.sum(dim=dim)))


def test_softmax_edge_cases():
    z = torch.tensor([[0.0, float("-inf"), 1.0], [5.0, 5.0, float("-inf")]])
    torch.testing.assert_close(lenet.stable_softmax(z), torch.softmax(z, dim=-1))
    assert lenet.stable_softmax(z)[0, 1] == 0
    torch.testing.assert_close(lenet.stable_softmax(torch.tensor([3.0])), torch.tensor([1.0]))
    zb = torch.randn(4, 10).to(torch.bfloat16)
    yb = lenet.stable_softmax(zb)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb, torch.softmax(zb, dim=-1))
    with pytest.raises(TypeError, match="floating-point"):
        lenet.stable_softmax(torch.tensor([1, 2, 3]))


@given(seed=st.integers(0, 2**31 - 1), c=st.floats(-100, 100))
def test_softmax_is_shift_invariant(seed, c):
    z = randn(seed, 3, 7)
    torch.testing.assert_close(lenet.stable_softmax(z + c), lenet.stable_softmax(z), atol=1e-12, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# parameter counts: convolution, locally connected, fully connected
# ---------------------------------------------------------------------------------------------------------
@given(C_in=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9), C_out=st.integers(1, 5),
       K=st.integers(1, 5), p=st.integers(0, 2))
def test_conv_vs_fc_params_against_torch_layers(C_in, H, W, C_out, K, p):
    if K > min(H, W) + 2 * p:
        with pytest.raises(ValueError, match="does not fit"):
            lenet.conv_vs_fc_params(C_in, H, W, C_out, K, padding=p)
        return
    conv = nn.Conv2d(C_in, C_out, K, padding=p, device="meta")
    out = conv(torch.empty(1, C_in, H, W, device="meta"))                       # (1, C_out, H', W')
    A, B = C_in * H * W, out[0].numel()
    fc = nn.Linear(A, B, device="meta")
    # a locally connected layer: one Conv2d-sized kernel set per output location (H'·W' of them)
    local = sum(n_params(nn.Conv2d(C_in, C_out, K, device="meta")) for _ in range(out.shape[2] * out.shape[3]))
    assert lenet.conv_vs_fc_params(C_in, H, W, C_out, K, padding=p) == (n_params(conv), local, n_params(fc))


def test_conv_vs_fc_params_known_values():
    # LeNet-5's C1: 6 kernels 5×5 + 6 biases = 156; FC from 32·32 = 1024 inputs to 6·28·28 = 4704 outputs.
    assert lenet.conv_vs_fc_params(1, 32, 32, 6, 5) == (156, 156 * 28 * 28, 1024 * 4704 + 4704)
    # C5: the window covers the whole input, so the three layers coincide (48,120 parameters).
    assert lenet.conv_vs_fc_params(16, 5, 5, 120, 5) == (48_120, 48_120, 48_120)
    with pytest.raises(ValueError, match="positive integer"):
        lenet.conv_vs_fc_params(0, 5, 5, 1, 3)


# ---------------------------------------------------------------------------------------------------------
# SGD step
# ---------------------------------------------------------------------------------------------------------
def test_sgd_step_equals_torch_optim_sgd():
    torch.manual_seed(0)
    params = [torch.randn(6, 1, 5, 5), torch.randn(6), torch.randn(400, 120)]
    grads = [torch.randn_like(p) for p in params]
    before = [p.clone() for p in params]
    new = lenet.sgd_step(params, grads, 0.07)
    for p, b in zip(params, before):
        assert torch.equal(p, b), "sgd_step must not modify the parameters in place"
    leaves = [p.clone().requires_grad_() for p in params]
    for leaf, g in zip(leaves, grads):
        leaf.grad = g.clone()
    torch.optim.SGD(leaves, lr=0.07).step()                                      # θ ← θ − η ∇J, plain
    for n, leaf in zip(new, leaves):
        torch.testing.assert_close(n, leaf.detach())


def test_sgd_step_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 parameters but 1 gradients"):
        lenet.sgd_step([torch.zeros(2), torch.zeros(3)], [torch.zeros(2)], 0.1)
    with pytest.raises(ValueError, match="shape"):
        lenet.sgd_step([torch.zeros(2)], [torch.zeros(3)], 0.1)


# ---------------------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------------------
def test_lenet5_shapes_per_layer():
    maps = lenet.LeNet5().feature_maps(torch.randn(2, 1, 32, 32))
    assert list(maps) == list(LENET5_SHAPES)
    for name, shape in LENET5_SHAPES.items():
        assert tuple(maps[name].shape) == (2, *shape), name
    # and by the formula n − K + 1 for a K×K convolution, n/2 for 2×2 subsampling
    n = 32
    for layer, expected in (("C1", n - 5 + 1), ("S2", (n - 5 + 1) // 2), ("C3", (n - 5 + 1) // 2 - 5 + 1),
                            ("S4", ((n - 5 + 1) // 2 - 5 + 1) // 2)):
        assert maps[layer].shape[-1] == maps[layer].shape[-2] == expected, layer


@pytest.mark.parametrize("config, extra", [
    (lenet.LeNet5Config(), 0),
    (lenet.LeNet5Config(activation="scaled_tanh"), 0),
    (lenet.LeNet5Config(pool="subsample"), 2 * 6 + 2 * 16),    # the paper's trainable coefficient and bias per map
])
def test_lenet5_parameter_count(config, extra):
    assert LENET5_PARAMS == 61_706
    assert n_params(lenet.LeNet5(config)) == LENET5_PARAMS + extra


def test_lenet5_equals_an_independent_sequential():
    """The same network written as torch.nn layers, with C5 as the paper's 5×5 convolution."""
    model = lenet.LeNet5()
    oracle = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
                           nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    with torch.no_grad():
        oracle[0].weight.copy_(model.c1.weight), oracle[0].bias.copy_(model.c1.bias)
        oracle[3].weight.copy_(model.c3.weight), oracle[3].bias.copy_(model.c3.bias)
        oracle[6].weight.copy_(model.c5_alpha.T.reshape(120, 16, 5, 5)), oracle[6].bias.copy_(model.c5_alpha0)
        oracle[9].weight.copy_(model.f6.weight), oracle[9].bias.copy_(model.f6.bias)
        oracle[11].weight.copy_(model.output.weight), oracle[11].bias.copy_(model.output.bias)
    x = torch.randn(4, 1, 32, 32)
    torch.testing.assert_close(model(x), oracle(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.predict_proba(x), torch.softmax(oracle(x), dim=-1), atol=1e-6, rtol=1e-5)


def test_lenet5_paper_options():
    x = torch.randn(2, 1, 32, 32)
    a = torch.randn(5)
    torch.testing.assert_close(lenet.scaled_tanh(a), 1.7159 * torch.tanh(2 * a / 3))
    assert math.isclose(lenet.scaled_tanh(torch.tensor(1.0)).item(), 1.0, abs_tol=1e-4)   # f(1) ≈ 1
    sub = lenet.Subsampling(6)
    with torch.no_grad():
        sub.coefficient.copy_(torch.arange(6.0)), sub.bias.copy_(torch.ones(6))
    y = torch.randn(2, 6, 28, 28)
    sums = y.reshape(2, 6, 14, 2, 14, 2).sum(dim=(3, 5))                          # 2×2 sums, by reshaping
    torch.testing.assert_close(sub(y), sums * torch.arange(6.0)[:, None, None] + 1, atol=1e-5, rtol=1e-5)
    paper = lenet.LeNet5(lenet.LeNet5Config(activation="scaled_tanh", pool="subsample"))
    assert paper(x).shape == (2, 10)
    with pytest.raises(ValueError, match="activation"):
        lenet.LeNet5(lenet.LeNet5Config(activation="sigmoid"))
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        lenet.LeNet5()(torch.zeros(2, 1, 28, 28))


def test_lenet5_uses_the_given_fc3d():
    calls = []

    def my_fc3d(x, alpha, alpha0):
        calls.append(tuple(x.shape))
        return torch.flatten(x, 1) @ alpha + alpha0

    lenet.LeNet5(fc3d=my_fc3d)(torch.zeros(3, 1, 32, 32))
    assert calls == [(3, 16, 5, 5)]


# ---------------------------------------------------------------------------------------------------------
# data, training, evaluation
# ---------------------------------------------------------------------------------------------------------
def test_prepare_digits_resize_and_pad():
    x = torch.rand(5, 1, 8, 8)
    split = Split(x, torch.arange(5), x[:2], torch.arange(2))
    padded = lenet.pad_digits(x)
    assert padded.shape == (5, 1, 32, 32)
    # the padding is exactly zero (float sums in another order may differ in the last bit: compare in float64)
    assert torch.equal(padded[..., 12:20, 12:20], x) and padded.double().abs().sum() == x.double().abs().sum()
    const = lenet.resize_digits(torch.full((1, 1, 8, 8), 0.3))
    torch.testing.assert_close(const, torch.full((1, 1, 32, 32), 0.3))
    # each 8×8 pixel becomes a 4×4 block: the mean of the 32×32 image over that block is close to the pixel
    blocks = lenet.resize_digits(x).reshape(5, 1, 8, 4, 8, 4).mean(dim=(3, 5))
    assert (blocks - x).abs().mean() < 0.2
    for how in ("resize", "pad"):
        s = lenet.prepare_digits(split, how)
        assert s.x_train.shape == (5, 1, 32, 32) and s.x_test.shape == (2, 1, 32, 32)
        assert abs(s.x_train.mean().item()) < 1e-5 and abs(s.x_train.std().item() - 1) < 1e-5
    with pytest.raises(ValueError, match="resize"):
        lenet.prepare_digits(split, "crop")


def test_distort_is_the_identity_without_distortion_and_keeps_the_background():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    torch.testing.assert_close(lenet.distort(x, g, 0.0, 0.0, 0.0), x, atol=1e-5, rtol=1e-5)
    blank = torch.full((3, 1, 32, 32), -0.7)
    torch.testing.assert_close(lenet.distort(blank, g), blank)
    shifted = lenet.distort(x, g)
    assert shifted.shape == x.shape and not torch.allclose(shifted, x)


@pytest.fixture
def one_thread():
    """LeNet-5 on tiny batches is fastest on one thread (and does not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_split(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, x[:16], y[:16])


def test_training_reduces_the_loss_on_a_small_batch(one_thread):
    torch.manual_seed(0)
    model = lenet.LeNet5()
    data = _small_split()
    before, _ = lenet.evaluate(model, data.x_train, data.y_train)
    hist = lenet.train(model, data, epochs=15, lr=0.05, batch_size=16, augment=False, progress=False)
    after, acc = lenet.evaluate(model, data.x_train, data.y_train)
    assert after < 0.5 * before, f"training loss {before:.3f} → {after:.3f}"
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert len(hist.epoch) == len(hist.test_acc) == 15 and len(hist.step_loss) == 15 * 4
    assert acc > 0.5                                              # it memorises random labels of 64 images


def test_train_calls_the_given_update_and_logs_to_the_run(one_thread):
    calls, logged = [], []

    def update(params, grads, lr):
        calls.append(lr)
        return [p - lr * g for p, g in zip(params, grads)]

    class Run:
        def log(self, metrics):
            logged.append(metrics)

    lenet.train(lenet.LeNet5(), _small_split(32), epochs=2, lr=0.1, batch_size=16, update=update,
                lr_decay="none", run=Run(), progress=False)
    assert calls == [0.1] * 4
    assert [m["epoch"] for m in logged] == [1, 2] and {"train_loss", "test_acc"} <= set(logged[0])


def test_train_stops_at_the_time_limit(one_thread):
    hist = lenet.train(lenet.LeNet5(), _small_split(32), epochs=50, time_limit=0.0, progress=False)
    assert hist.epoch == [1]


def test_confusion_matrix_against_sklearn():
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix
    g = torch.Generator().manual_seed(1)
    y, p = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (200,), generator=g)
    expected = torch.from_numpy(sk_confusion_matrix(y.numpy(), p.numpy(), labels=list(range(10))))
    assert torch.equal(lenet.confusion_matrix(y, p), expected.to(torch.int64))


@pytest.mark.parametrize("fn, args", [
    (lenet.fc3d_forward, lambda d: (torch.randn(2, 3, 4, 4, device=d), torch.randn(48, 5, device=d),
                                    torch.randn(5, device=d))),
    (lenet.stable_softmax, lambda d: (torch.randn(3, 7, device=d),)),
])
def test_keeps_the_device(fn, args, device):
    assert fn(*args(device)).device.type == device.type


def test_lenet5_and_sgd_on_device(device):
    model = lenet.LeNet5().to(device)
    x = torch.randn(2, 1, 32, 32, device=device)
    params = list(model.parameters())
    grads = torch.autograd.grad(model(x).sum(), params)
    assert all(p.device.type == device.type for p in lenet.sgd_step(params, grads, 0.1))


# ---------------------------------------------------------------------------------------------------------
# architectures: formulas against torch.nn layers on the meta device, and against published totals
# ---------------------------------------------------------------------------------------------------------
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 3))
def test_conv_output_size_against_torch(n, k, s, p):
    if n + 2 * p < k:
        with pytest.raises(ValueError):
            arch.conv_output_size(n, k, s, p)
        return
    out = F.conv2d(torch.empty(1, 1, n, n, device="meta"), torch.empty(1, 1, k, k, device="meta"), stride=s, padding=p)
    assert arch.conv_output_size(n, k, s, p) == out.shape[-1]
    if p <= k // 2:   # max_pool2d's own limit on padding
        assert arch.conv_output_size(n, k, s, p) == F.max_pool2d(torch.empty(1, 1, n, n, device="meta"), k, s, p).shape[-1]


def test_published_totals():
    assert arch.total_params(arch.LENET5) == LENET5_PARAMS
    assert arch.total_params(arch.ALEXNET_TORCHVISION) == TORCHVISION_ALEXNET
    assert abs(arch.total_params(arch.ALEXNET) - ALEXNET_PAPER_APPROX) / ALEXNET_PAPER_APPROX < 0.02
    assert arch.total_params(arch.VGG19) == TORCHVISION_VGG19
    assert arch.total_params(arch.RESNET152) == TORCHVISION_RESNET152
    assert abs(arch.total_macs(arch.RESNET152) - RESNET152_MACS_PAPER) / RESNET152_MACS_PAPER < 0.03
    assert abs(arch.total_macs(arch.VGG19) - VGG19_MACS_PAPER) / VGG19_MACS_PAPER < 0.01


def test_lenet5_table_matches_the_model():
    model = lenet.LeNet5()
    maps = model.feature_maps(torch.zeros(1, 1, 32, 32))
    rows = {r.name: r for r in arch.layer_rows(arch.LENET5)}
    for name in ("C1", "S2", "C3", "S4", "F6", "output"):
        assert rows[name].out_shape == tuple(maps[name].shape[1:]), name
    assert rows["C5"].out_shape == (120, 1, 1) and maps["C5"].shape == (1, 120)
    by_layer = {"C1": model.c1, "C3": model.c3, "F6": model.f6, "output": model.output}
    for name, module in by_layer.items():
        assert rows[name].params == n_params(module), name
    assert rows["C5"].params == model.c5_alpha.numel() + model.c5_alpha0.numel()


def test_vgg19_by_closed_form():
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 3 + [(256, 512)] + \
            [(512, 512)] * 7
    expected = sum(9 * a * b + b for a, b in convs) + (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + \
        (4096 * 1000 + 1000)
    assert len(convs) == 16
    assert arch.total_params(arch.VGG19) == expected


# --- the big networks, re-implemented with torch.nn from their papers, on the meta device ---------------
def _torch_alexnet_paper() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def _torch_vgg19() -> nn.Sequential:
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + [512] * 4 + ["M"] + [512] * 4 + ["M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(25088, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                         nn.ReLU(), nn.Linear(4096, 1000))


class _Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = 4 * width
        self.branch = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


def _torch_resnet152() -> nn.ModuleDict:
    stages = {"conv1": nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU()),
              "pool1": nn.MaxPool2d(3, 2, 1)}
    c = 64
    for i, (n, width) in enumerate(zip((3, 8, 36, 3), (64, 128, 256, 512))):
        blocks = []
        for j in range(n):
            blocks.append(_Bottleneck(c, width, 2 if (j == 0 and i > 0) else 1))
            c = 4 * width
        stages[f"conv{i + 2}_x"] = nn.Sequential(*blocks)
    stages["avgpool"] = nn.AdaptiveAvgPool2d(1)
    stages["flatten"] = nn.Flatten()
    stages["fc"] = nn.Linear(2048, 1000)
    return nn.ModuleDict(stages)


def test_alexnet_and_vgg19_against_torch_layers():
    with torch.device("meta"):
        for spec, model in ((arch.ALEXNET, _torch_alexnet_paper()), (arch.VGG19, _torch_vgg19())):
            assert arch.total_params(spec) == n_params(model), spec.name
            x = torch.empty(1, *spec.input_shape)
            shapes = []
            for module in model:
                x = module(x)
                if not isinstance(module, nn.ReLU):
                    shapes.append(tuple(x.shape[1:]))
            assert [r.out_shape for r in arch.layer_rows(spec)] == shapes, spec.name


def test_resnet152_against_torch_layers():
    with torch.device("meta"):
        model = _torch_resnet152().eval()
        x = torch.empty(1, 3, 224, 224)
        stages = {}
        for name, module in model.items():
            x = module(x)
            stages[name] = (tuple(x.shape[1:]), n_params(module))
    rows = {r.name: r for r in arch.stage_rows(arch.RESNET152)}
    assert list(rows) == list(stages)
    for name, (shape, params) in stages.items():
        assert (rows[name].out_shape, rows[name].params) == (shape, params), name
    assert sum(p for _, p in stages.values()) == TORCHVISION_RESNET152
    assert rows["conv4_x"].layer.startswith("36 × residual")          # 3 + 8 + 36 + 3 = 50 blocks, 150 convs


def test_architecture_errors():
    with pytest.raises(ValueError, match="Flatten"):
        arch.layer_rows(arch.Architecture("bad", (1, 4, 4), (arch.Linear(3),)))
    with pytest.raises(ValueError, match="shortcut"):
        arch.layer_rows(arch.Architecture("bad", (4, 8, 8), (arch.Residual((arch.Conv(8, 1),), name="r"),)))
    with pytest.raises(ValueError, match="groups"):
        arch.layer_rows(arch.Architecture("bad", (3, 8, 8), (arch.Conv(4, 3, groups=2),)))


# ---------------------------------------------------------------------------------------------------------
# grading: the references pass, plausible mistakes fail
# ---------------------------------------------------------------------------------------------------------
EXERCISES = ["fc3d_forward", "stable_softmax", "conv_vs_fc_params", "sgd_step"]


@pytest.mark.parametrize("name", EXERCISES)
def test_reference_passes_grading(name, capsys):
    ex = grading.exercises()[name]
    assert len(ex.cases) >= 5 and len({c.name for c in ex.cases}) == len(ex.cases)
    grading.check(name, getattr(lenet, name), device=["cpu"])
    assert f"{name}: {len(ex.cases)} cases passed" in capsys.readouterr().out


def _naive_softmax(z, dim=-1):
    e = torch.exp(z)
    return e / e.sum(dim=dim, keepdim=True)


def _fc3d_channels_last(x, alpha, alpha0):
    return torch.flatten(x.movedim(-3, -1), start_dim=-3) @ alpha + alpha0      # (h, w, c) order: wrong


def _params_without_bias(C_in, H, W, C_out, K, padding=0):
    conv, local, fc = lenet.conv_vs_fc_params(C_in, H, W, C_out, K, padding)
    Ho, Wo = H + 2 * padding - K + 1, W + 2 * padding - K + 1
    return conv - C_out, local - C_out * Ho * Wo, fc - C_out * Ho * Wo


def _sgd_in_place(params, grads, lr):
    for p, g in zip(params, grads):
        p -= lr * g
    return params


def _sgd_ascent(params, grads, lr):
    return [p + lr * g for p, g in zip(params, grads)]


@pytest.mark.parametrize("name, wrong, fragment", [
    ("stable_softmax", _naive_softmax, "logits near +1000"),
    ("stable_softmax", lambda z, dim=-1: torch.softmax(z, dim=-1), "dim=1"),
    ("fc3d_forward", _fc3d_channels_last, "values differ"),
    ("fc3d_forward", lambda x, a, a0: torch.flatten(x) @ a + a0, "your function raised"),
    ("conv_vs_fc_params", _params_without_bias, "should be"),
    ("sgd_step", _sgd_in_place, "modified its input tensor"),
    ("sgd_step", _sgd_ascent, "values differ"),
])
def test_wrong_implementations_fail(name, wrong, fragment):
    with pytest.raises(AssertionError) as info:
        grading.check(name, wrong, device=["cpu"])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{name}, case ") and fragment in msg, msg
