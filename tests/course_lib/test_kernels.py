"""The classic kernels (course_lib.cnn.kernels) against independent oracles.

Oracles: scipy.ndimage (``gaussian_filter``, ``sobel``, ``prewitt``, ``uniform_filter``, ``laplace``, each
with zero padding, ``mode='constant'``) applied to real photographs (scikit-image's camera and astronaut),
the Gaussian formula with ``math.exp``, and what the kernels must do to flat regions and to step edges.
"""
from __future__ import annotations

import math

import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import given
from hypothesis import strategies as st

from course_lib import data, grading
from course_lib.cnn import kernels
from course_lib.cnn.conv import conv2d_image

pytestmark = pytest.mark.cnn

ALL = ["identity", "box_blur", "gaussian_blur", "sharpen", "horizontal_edge", "vertical_edge", "sobel_horizontal",
       "sobel_vertical", "edge_detector"]
SUM_ONE = {"identity", "box_blur", "gaussian_blur", "sharpen"}


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 96×128 crop of the cameraman, float64 in [0, 1]."""
    return data.camera()[100:196, 180:308].double()


def same(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The lecture's sliding inner product with zero padding (K − 1)/2: the output keeps the size."""
    return conv2d_image(image, kernel.to(image.dtype), padding=kernel.shape[0] // 2)


def scipy_same(image: torch.Tensor, fn, **kw) -> torch.Tensor:
    return torch.from_numpy(fn(image.numpy(), mode="constant", cval=0.0, **kw))


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_device_and_sum(name):
    k = getattr(kernels, name)()
    assert k.dim() == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.dtype == torch.float32
    assert getattr(kernels, name)(dtype=torch.float64).dtype == torch.float64
    expected = 1.0 if name in SUM_ONE else 0.0
    assert float(k.double().sum()) == pytest.approx(expected, abs=1e-6)


def test_identity_convolution_keeps_the_photo(photo):
    for size in (1, 3, 5):
        torch.testing.assert_close(same(photo, kernels.identity(size)), photo, atol=0, rtol=0)


def test_box_blur_matches_scipy_uniform_filter(photo):
    for size in (3, 5):
        torch.testing.assert_close(same(photo, kernels.box_blur(size, dtype=torch.float64)),
                                   scipy_same(photo, ndi.uniform_filter, size=size), atol=1e-12, rtol=0)


@pytest.mark.parametrize("size,sigma", [(3, 1.0), (5, 1.0), (7, 2.0), (9, 1.5)])
def test_gaussian_blur_matches_scipy_gaussian_filter(photo, size, sigma):
    radius = size // 2
    expected = scipy_same(photo, ndi.gaussian_filter, sigma=sigma, truncate=radius / sigma)   # kernel radius = size//2
    got = same(photo, kernels.gaussian_blur(size, sigma, dtype=torch.float64))
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@given(size=st.integers(0, 5).map(lambda k: 2 * k + 1), sigma=st.floats(0.2, 10.0))
def test_gaussian_blur_formula(size, sigma):
    k = kernels.gaussian_blur(size, sigma, dtype=torch.float64)
    c = (size - 1) / 2
    raw = [[math.exp(-((m - c) ** 2 + (n - c) ** 2) / (2 * sigma**2)) for n in range(size)] for m in range(size)]
    total = sum(map(sum, raw))
    torch.testing.assert_close(k, torch.tensor(raw, dtype=torch.float64) / total, atol=1e-15, rtol=1e-12)
    torch.testing.assert_close(k, k.T, atol=0, rtol=0)
    torch.testing.assert_close(k, k.flip(0, 1), atol=1e-18, rtol=0)
    assert int(k.argmax()) == (size * size) // 2                      # the centre weighs most


def test_sobel_and_prewitt_match_scipy(photo):
    """scipy's sobel/prewitt along axis 0 = the derivative down the rows = our horizontal-edge kernels."""
    pairs = [(kernels.sobel_horizontal, ndi.sobel, 0), (kernels.sobel_vertical, ndi.sobel, 1),
             (kernels.horizontal_edge, ndi.prewitt, 0), (kernels.vertical_edge, ndi.prewitt, 1)]
    for kernel, fn, axis in pairs:
        torch.testing.assert_close(same(photo, kernel(dtype=torch.float64)), scipy_same(photo, fn, axis=axis),
                                   atol=1e-12, rtol=0)


def test_sharpen_is_image_minus_laplacian(photo):
    expected = photo - scipy_same(photo, ndi.laplace)
    torch.testing.assert_close(same(photo, kernels.sharpen(dtype=torch.float64)), expected, atol=1e-12, rtol=0)


def test_edge_detector_is_nine_identity_minus_nine_box(photo):
    k = 9 * kernels.identity(3, dtype=torch.float64) - 9 * kernels.box_blur(3, dtype=torch.float64)
    torch.testing.assert_close(kernels.edge_detector(dtype=torch.float64), k, atol=1e-14, rtol=0)


def test_edge_detectors_respond_to_their_edge_only():
    """A horizontal step (dark top, bright bottom): the horizontal detectors fire along it, positively;
    the vertical ones give 0; every sum-0 kernel gives 0 on the flat parts."""
    step = torch.zeros(10, 12, dtype=torch.float64)
    step[5:] = 1.0
    for kernel in (kernels.horizontal_edge, kernels.sobel_horizontal):
        y = conv2d_image(step, kernel(dtype=torch.float64))               # valid part: no padding effects
        assert (y[3:5] > 0).all() and (y[:3] == 0).all() and (y[5:] == 0).all()
    for kernel in (kernels.vertical_edge, kernels.sobel_vertical):
        assert (conv2d_image(step, kernel(dtype=torch.float64)) == 0).all()
    assert (conv2d_image(step.T.contiguous(), kernels.vertical_edge(dtype=torch.float64))[:, 3:5] > 0).all()
    y = conv2d_image(step, kernels.edge_detector(dtype=torch.float64))
    assert (y[:3] == 0).all() and (y[5:] == 0).all() and (y[3:5] != 0).all()


def test_blurs_reduce_noise_on_a_colour_photo():
    """On each channel of the astronaut plus noise, blurring brings the image closer to the clean one."""
    clean = data.astronaut()[:, 200:264, 200:264].double()
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inner = (slice(3, -3), slice(3, -3))
    for kernel in (kernels.box_blur(3), kernels.gaussian_blur(5, 1.0)):
        for c in range(3):
            blurred = same(noisy[c], kernel)
            assert (blurred - clean[c])[inner].abs().mean() < 0.7 * (noisy[c] - clean[c])[inner].abs().mean()


def test_classic_kernels_gallery():
    gallery = kernels.classic_kernels(dtype=torch.float64)
    assert len(gallery) == 9 and all(k.dtype == torch.float64 for k in gallery.values())
    assert torch.equal(gallery["sharpen"], kernels.sharpen(dtype=torch.float64))


@pytest.mark.parametrize("call", [lambda: kernels.identity(4), lambda: kernels.box_blur(0),
                                  lambda: kernels.gaussian_blur(6), lambda: kernels.gaussian_blur(3, 0.0)])
def test_errors(call):
    with pytest.raises(ValueError):
        call()


def test_kernels_on_device(device):
    for name in ALL:
        k = getattr(kernels, name)(device=device)
        assert k.device.type == device.type
        torch.testing.assert_close(k.cpu(), getattr(kernels, name)())


# =========================================================================================================
# graded exercise gaussian_kernel
# =========================================================================================================
def test_reference_passes_gaussian_kernel(capsys):
    ex = grading.exercises()["gaussian_kernel"]
    grading.check("gaussian_kernel", ex.reference, device=["cpu"])
    assert f"gaussian_kernel: {len(ex.cases)} cases passed" in capsys.readouterr().out


def test_wrong_gaussian_kernels_fail():
    def unnormalised(size, sigma, *, dtype=torch.float32, device=None):
        r = torch.arange(size, dtype=torch.float64, device=device) - size // 2
        return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2)).to(dtype)

    def sigma_not_squared(size, sigma, *, dtype=torch.float32, device=None):
        k = kernels.gaussian_blur(size, math.sqrt(sigma), dtype=torch.float64, device=device)
        return k.to(dtype)

    def float64_always(size, sigma, *, dtype=torch.float32, device=None):
        return kernels.gaussian_blur(size, sigma, dtype=torch.float64, device=device)

    for fn, fragment in ((unnormalised, "values differ"), (sigma_not_squared, "values differ"),
                         (float64_always, "dtype")):
        with pytest.raises(AssertionError, match=fragment):
            grading.check("gaussian_kernel", fn, device=["cpu"])

