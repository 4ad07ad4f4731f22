"""The classic convolution kernels of Lecture 4 ("A convolution matrix (aka. kernel) is used in image
processing for tasks such as edge detection, blurring, sharpening, etc."; "Convolution Examples").

Each function returns the kernel F = (α_{mn}) as a (K, K) tensor, to be slid over an image with the
lecture's inner product (cross-correlation, ``conv.conv2d_image``): the output at a pixel is
Σ_m Σ_n α_{mn} · (the pixel's neighbourhood)_{mn}. With zero padding (K − 1)/2 the image keeps its size.

What the weights sum to says what the kernel does on a flat (constant) region of the image:

* sum 1: brightness kept: ``identity``, ``box_blur`` (smoothing), ``gaussian_blur``, ``sharpen``;
* sum 0: flat regions go to 0, only changes remain: ``horizontal_edge``, ``vertical_edge`` (Prewitt),
  ``sobel_horizontal``, ``sobel_vertical`` and ``edge_detector`` (the Laplacian-style outline kernel).

Orientation: a *horizontal* edge is a change from one row to the next (e.g. the horizon); the horizontal
edge detector weighs the row below positively and the row above negatively, so it is positive where the
image gets brighter downwards. Because these kernels are slid without flipping, this sign convention is
the one the output shows (a flipped, "true" convolution would negate the anti-symmetric kernels).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "identity",
    "box_blur",
    "gaussian_blur",
    "sharpen",
    "horizontal_edge",
    "vertical_edge",
    "sobel_horizontal",
    "sobel_vertical",
    "edge_detector",
    "classic_kernels",
]


def _odd_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer (the kernel has a centre), got {size!r}")


def _tensor(rows, dtype, device) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64, device=device).to(dtype)


def identity(size: int = 3, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """1 at the centre, 0 elsewhere: every pixel is replaced by itself ("Identity Convolution")."""
    _odd_size(size)
    F = torch.zeros(size, size, dtype=dtype, device=device)
    F[size // 2, size // 2] = 1.0
    return F


def box_blur(size: int = 3, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Smoothing: every weight 1/size², the plain average of the neighbourhood ("Smoothing Convolution")."""
    _odd_size(size)
    return torch.full((size, size), 1.0 / size**2, dtype=dtype, device=device)


def gaussian_blur(size: int = 5, sigma: float = 1.0, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Gaussian blur: α_{mn} ∝ exp(−((m − c)² + (n − c)²) / (2σ²)) with c the centre, normalised to sum 1.

    Nearby pixels weigh more than far ones, so edges are smoothed less harshly than by the box blur. The
    kernel is separable: the outer product of the 1-D Gaussian g (normalised) with itself.
    """
    _odd_size(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    offsets = torch.arange(size, dtype=torch.float64, device=device) - size // 2     # −c, ..., c
    g = torch.exp(-offsets**2 / (2 * sigma**2))
    g = g / g.sum()                                                                   # 1-D, sums to 1
    return torch.outer(g, g).to(dtype)                                               # (size, size), sums to 1


def sharpen(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Sharpening: 5 at the centre, −1 at the four neighbours (sum 1).

    It is the identity plus (identity − local average of the 4 neighbours)·4: differences from the
    surroundings are amplified, flat regions are unchanged ("Sharpening Kernel").
    """
    return _tensor([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype, device)


def horizontal_edge(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Horizontal edges (Prewitt): row below minus row above, [[−1, −1, −1], [0, 0, 0], [1, 1, 1]]."""
    return _tensor([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], dtype, device)


def vertical_edge(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Vertical edges (Prewitt): column right minus column left, the transpose of ``horizontal_edge``."""
    return horizontal_edge(dtype=dtype, device=device).T.contiguous()


def sobel_horizontal(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Sobel, horizontal edges: [[−1, −2, −1], [0, 0, 0], [1, 2, 1]], the derivative down the rows with
    the centre column weighted twice (a little smoothing along the edge)."""
    return _tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype, device)


def sobel_vertical(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Sobel, vertical edges: the transpose of ``sobel_horizontal``."""
    return sobel_horizontal(dtype=dtype, device=device).T.contiguous()


def edge_detector(*, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Edges in every direction (outline / Laplacian-style): 8 at the centre, −1 around it (sum 0)."""
    return _tensor([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype, device)


def classic_kernels(*, dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
    """The lecture's gallery, by name, in the order the notebook shows them (all 3×3 except the Gaussian)."""
    kw = dict(dtype=dtype, device=device)
    return {
        "identity": identity(3, **kw),
        "box blur (smoothing)": box_blur(3, **kw),
        "Gaussian blur (σ = 1)": gaussian_blur(5, 1.0, **kw),
        "sharpen": sharpen(**kw),
        "horizontal edges": horizontal_edge(**kw),
        "vertical edges": vertical_edge(**kw),
        "Sobel horizontal": sobel_horizontal(**kw),
        "Sobel vertical": sobel_vertical(**kw),
        "edge detector": edge_detector(**kw),
    }

