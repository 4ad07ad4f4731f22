"""Figures of the convolution and cnn_layers notebooks.

Each helper builds one matplotlib figure and returns it. Helpers draw tensors they are given (computed by
the student's functions in the notebook) and never call a reference implementation.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

__all__ = ["show_images", "number_grids", "worked_example", "stride_patches", "error_vs_step", "timings"]


def _cpu(t: Tensor) -> Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float64)


def _image_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ax.tick_params(labelsize=7)


def show_images(images: Sequence[Tensor], titles: Sequence[str], *, suptitle: str = "", ncols: int | None = None,
                signed: Sequence[bool] | bool = False, size: float = 3.2, colorbar: bool = True,
                vrange: tuple[float, float] | None = None) -> Figure:
    """A grid of images: (H, W) tensors in grey (or, when ``signed``, in red/blue around 0 with a symmetric
    scale: positive red, negative blue), (3, H, W) tensors as colour pictures (clipped to [0, 1]).

    Grey images use ``vrange`` = (black, white) when given, else their 0.5% and 99.5% quantiles; signed
    images are scaled to the 99.5% quantile of |value|, so that a few extreme pixels (at a zero-padded
    border, say) do not wash out the rest."""
    n = len(images)
    if n != len(titles):
        raise ValueError(f"{n} images but {len(titles)} titles")
    signed = [signed] * n if isinstance(signed, bool) else list(signed)
    ncols = ncols or min(n, 4)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows + 0.5), layout="constrained",
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, image, title, sgn in zip(axes.flat, images, titles, signed):
        img = _cpu(image)
        if img.dim() == 3:                                   # colour (3, H, W)
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        elif sgn:
            lim = float(torch.quantile(img.abs().flatten(), 0.995)) or float(img.abs().max()) or 1.0
            im = ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            if colorbar:
                fig.colorbar(im, ax=ax, shrink=0.8)
        else:
            lo, hi = vrange if vrange is not None else (float(torch.quantile(img.flatten(), 0.005)),
                                                        float(torch.quantile(img.flatten(), 0.995)))
            im = ax.imshow(img.numpy(), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
            if colorbar:
                fig.colorbar(im, ax=ax, shrink=0.8)
        _image_axes(ax, title)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _grid(ax, values: Tensor, title: str, highlight: tuple[int, int, int, int] | None = None, fmt: str = "{:.2f}",
          color: str = "C1", labels: str = "x") -> None:
    """Draw a small matrix with its numbers; ``highlight`` = (row, col, height, width) is outlined."""
    v = _cpu(values)
    H, W = v.shape
    ax.imshow(v.numpy(), cmap="Greys", alpha=0.25, vmin=float(v.min()) - 1e-9, vmax=float(v.max()) + 1e-9)
    for i in range(H):
        for j in range(W):
            ax.text(j, i, fmt.format(float(v[i, j])), ha="center", va="center", fontsize=9 if H * W < 50 else 7)
    if highlight is not None:
        r, c, h, w = highlight
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=True, alpha=0.25, color=color))
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, lw=2.5, color=color))
    ax.set_xticks(range(W), [str(j + 1) for j in range(W)])
    ax.set_yticks(range(H), [str(i + 1) for i in range(H)])
    ax.set_xlabel(f"column (1-based, as {labels}$_{{ij}}$ on the slides)", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ax.set_title(title, fontsize=10)


def number_grids(panels: Sequence[tuple], *, suptitle: str = "", size: float = 3.4) -> Figure:
    """Small matrices side by side with their numbers. Each panel is (values, title) or
    (values, title, highlight) with highlight = (row, col, height, width), 0-based."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.4), layout="constrained",
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        values, title, *rest = panel
        _grid(ax, values, title, rest[0] if rest else None)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def worked_example(x: Tensor, kernel: Tensor, y: Tensor, alpha_0: float, position: tuple[int, int] = (0, 0),
                   stride: int = 1) -> Figure:
    """The lecture's 1-channel example: input x with the field under output ``position`` (0-based),
    the kernel F = (α_mn), and the output y with that pixel, all with their numbers."""
    i, j = position
    K_h, K_w = kernel.shape
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), layout="constrained",
                             gridspec_kw=dict(width_ratios=[x.shape[1], K_w + 1, y.shape[1] + 1]))
    _grid(axes[0], x, "input image x", (stride * i, stride * j, K_h, K_w))
    _grid(axes[1], kernel, "kernel F = (α$_{mn}$)", (0, 0, K_h, K_w), color="C0", labels="α")
    _grid(axes[2], y, f"output y (α$_0$ = {alpha_0:g})", (i, j, 1, 1), labels="y")
    terms = " + ".join(f"α$_{{{m + 1}{n + 1}}}$x$_{{{stride * i + m + 1}{stride * j + n + 1}}}$"
                       for m in range(K_h) for n in range(K_w))
    fig.suptitle(f"y$_{{{i + 1}{j + 1}}}$ = {terms} + α$_0$ = {float(_cpu(y)[i, j]):.2f}")
    return fig


def stride_patches(H: int, W: int, K: int, stride: int, output_size: tuple[int, int]) -> Figure:
    """Every patch a K×K kernel visits on an H×W input at ``stride``, one panel per output pixel;
    ``output_size`` is the (H_out, W_out) the student's convolution returned."""
    H_out, W_out = output_size
    fig, axes = plt.subplots(H_out, W_out, figsize=(2.1 * W_out + 0.5, 2.1 * H_out + 0.6), layout="constrained",
                             squeeze=False)
    for i in range(H_out):
        for j in range(W_out):
            ax = axes[i, j]
            ax.imshow(torch.zeros(H, W).numpy(), cmap="Greys", vmin=0, vmax=1)
            for r in range(H + 1):
                ax.axhline(r - 0.5, color="0.75", lw=0.6)
            for c in range(W + 1):
                ax.axvline(c - 0.5, color="0.75", lw=0.6)
            ax.add_patch(Rectangle((stride * j - 0.5, stride * i - 0.5), K, K, color=f"C{(i * W_out + j) % 10}", alpha=0.55))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"y$_{{{i + 1}{j + 1}}}$: rows {stride * i + 1}–{stride * i + K}, "
                         f"cols {stride * j + 1}–{stride * j + K}", fontsize=8)
            if j == 0:
                ax.set_ylabel("input rows", fontsize=8)
            if i == H_out - 1:
                ax.set_xlabel("input columns", fontsize=8)
    fig.suptitle(f"{H}×{H} input, {K}×{K} kernel, stride {stride}: only {H_out * W_out} patches visited, "
                 f"so only {H_out * W_out} pixels in the output")
    return fig


def error_vs_step(steps: Sequence[float], errors: Sequence[float], *, title: str = "") -> Figure:
    """The relative error of a numerical gradient against the step h (log-log): truncation error ~h² on
    the right, rounding error ~ε/h on the left."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.loglog(steps, errors, "o-", label="rel_error(numerical, exact)")
    s = torch.tensor(list(steps), dtype=torch.float64)
    ax.loglog(s, s**2, ":", color="0.5", label="h² (truncation)")
    ax.loglog(s, 1e-16 / s, "--", color="0.5", label="ε/h (rounding)")
    ax.set(xlabel="step h", ylabel="relative error", title=title or "Centred differences: error against the step h",
           ylim=(1e-14, 10))
    ax.legend(fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def timings(labels: Sequence[str], seconds: Sequence[float], *, title: str = "") -> Figure:
    """Horizontal bars of run times (log scale), labelled with the time."""
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(labels) + 1.4), layout="constrained")
    ax.barh(list(labels), [s * 1e3 for s in seconds], color=[f"C{i}" for i in range(len(labels))])
    for k, s in enumerate(seconds):
        ax.text(s * 1e3, k, f"  {s * 1e3:.3g} ms", va="center", fontsize=9)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(xlabel="milliseconds per call (log scale)", title=title)
    return fig
