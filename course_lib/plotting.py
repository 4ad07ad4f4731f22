"""The figures the notebooks draw.

Each helper builds one matplotlib figure and returns it (the notebook cell that calls it shows it). A
helper that needs a graded piece receives the student's function as an argument, e.g.
``rope_pair_trajectories(apply_rope_pairs)``: the student sees their own code at work, and nothing here
imports a reference implementation. Inputs are computed in float64 where the helper makes them.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "plot_vectors_2d",
    "rope_frequency_spectrum",
    "rope_matrix_heatmaps",
    "rope_pair_trajectories",
    "rope_relative_scores",
    "rope_long_range_decay",
]


def _cpu64(t: Tensor) -> Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float64)


# ---------------------------------------------------------------------------------------------------------
# Rotations in the plane
# ---------------------------------------------------------------------------------------------------------

def plot_vectors_2d(vectors: Tensor | Sequence[Sequence[float]], labels: Sequence[str], *,
                    title: str = "") -> Figure:
    """Arrows from the origin to each 2-vector (rows of ``vectors``, shape (n, 2)), labelled at the tip,
    with the circle of radius max ‖v‖ dashed behind them."""
    v = _cpu64(torch.as_tensor(vectors))
    if v.dim() != 2 or v.shape[1] != 2 or len(labels) != v.shape[0]:
        raise ValueError(f"expected vectors of shape (n, 2) and n labels, got {tuple(v.shape)} and {len(labels)}")
    r = float(v.norm(dim=1).max())
    fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    ax.add_patch(plt.Circle((0, 0), r, fill=False, ls="--", color="0.6", label=f"circle of radius ‖y‖ = {r:.3f}"))
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(v)).numpy())
    for (x, y), label, color in zip(v.tolist(), labels, colors):
        ax.annotate("", xy=(x, y), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=2, shrinkA=0, shrinkB=0))
        ax.text(1.15 * x, 1.15 * y, label, color=color, ha="center", va="center", fontsize=11)
    lim = 1.35 * r
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="first coordinate $y_1$", ylabel="second coordinate $y_2$",
           title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------------------

def rope_frequency_spectrum(rope_thetas: Callable, d: int = 128, base: float = 10000.0,
                            context_length: int | None = None) -> Figure:
    """Left: θ_i against i on a log scale. Right: the wavelength 2π/θ_i (tokens per full turn of pair i).

    ``rope_thetas(d, base, dtype=...)`` is the student's function.
    """
    theta = _cpu64(rope_thetas(d, base, dtype=torch.float64))   # (d/2,)
    i = torch.arange(1, theta.numel() + 1)
    wavelength = 2 * math.pi / theta
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    ax1.semilogy(i, theta, ".-")
    ax1.set(xlabel="pair index $i$", ylabel=r"$\theta_i$ (radians per position)",
            title=r"frequencies $\theta_i = \mathrm{base}^{-2(i-1)/d}$")
    ax2.semilogy(i, wavelength, ".-", color="C1")
    ax2.set(xlabel="pair index $i$", ylabel=r"wavelength $2\pi/\theta_i$ (positions)",
            title="positions for pair $i$ to turn once")
    ax2.axhline(2 * math.pi, color="0.6", ls=":", label=r"$2\pi \approx 6.3$ (pair 1)")
    if context_length is not None:
        ax2.axhline(context_length, color="C3", ls="--", label=f"context length {context_length}")
    ax2.legend(loc="upper left", fontsize=9)
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"RoPE frequency spectrum, d = {d}, base = {base:g}")
    return fig


def rope_matrix_heatmaps(rope_matrix: Callable, d: int = 16, positions: Sequence[int] = (1, 20),
                         base: float = 10000.0) -> Figure:
    """``imshow`` of R_{Θ,m} (d × d) for each m in ``positions``, with the 2×2 blocks outlined.

    ``rope_matrix(m, d, base, dtype=...)`` is the student's function. Rows and columns are labelled 1..d
    as in the lecture.
    """
    fig, axes = plt.subplots(1, len(positions), figsize=(4.8 * len(positions) + 1, 4.6), layout="constrained",
                             squeeze=False)
    image = None
    for ax, m in zip(axes[0], positions):
        R = _cpu64(rope_matrix(m, d, base, dtype=torch.float64))   # (d, d)
        image = ax.imshow(R.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        for k in range(0, d + 1, 2):                                # outline the 2×2 blocks
            ax.axhline(k - 0.5, color="0.75", lw=0.5)
            ax.axvline(k - 0.5, color="0.75", lw=0.5)
        ticks = list(range(0, d, 2))
        ax.set_xticks(ticks, [str(t + 1) for t in ticks])
        ax.set_yticks(ticks, [str(t + 1) for t in ticks])
        ax.set(title=rf"$R_{{\Theta,m}}$ for $m = {m}$, $d = {d}$", xlabel="column", ylabel="row")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label="entry")
    return fig


def rope_pair_trajectories(apply_rope: Callable, d: int = 16, pairs: Sequence[int] = (1, 2, 3, 8),
                           positions: Sequence[int] = range(13), base: float = 10000.0) -> Figure:
    """Where pair i of the vector y = (1, 0, 1, 0, ...) lands after RoPE at each position m.

    ``apply_rope(x, positions, base)`` is the student's function (adjacent pairs). One panel per pair
    (1-based index i); each point is (ỹ_{2i-1}, ỹ_{2i}) at one position m, coloured by m.
    """
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    x = torch.zeros(len(pos), d, dtype=torch.float64)
    x[:, 0::2] = 1.0                                   # every pair starts at (1, 0)
    out = _cpu64(apply_rope(x, pos, base))             # (T, d)
    norm = Normalize(float(pos.min()), float(pos.max()))
    cmap = plt.cm.viridis
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs) + 1, 3.9), layout="constrained",
                             squeeze=False)
    for ax, i in zip(axes[0], pairs):
        a, b = out[:, 2 * i - 2], out[:, 2 * i - 1]    # (ỹ_{2i-1}, ỹ_{2i}) at every position
        theta = base ** (-2 * (i - 1) / d)              # only for the title
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, ls="--", color="0.7"))
        for m, ai, bi in zip(pos.tolist(), a.tolist(), b.tolist()):
            ax.plot([0, ai], [0, bi], color=cmap(norm(m)), lw=1, alpha=0.5)
        ax.scatter(a, b, c=pos, cmap=cmap, norm=norm, s=28, zorder=3)
        if theta >= 0.3:                                # points far apart: label each with its position
            for m, ai, bi in zip(pos.tolist(), a.tolist(), b.tolist()):
                ax.text(1.2 * ai, 1.2 * bi, str(m), ha="center", va="center", fontsize=8)
        else:                                           # points bunched up: label the last one only
            last = int(pos[-1])
            ax.text(0.0, -0.35, f"m = {last}: angle {last * theta:.3g} rad", ha="center", fontsize=9)
        ax.set(xlim=(-1.45, 1.45), ylim=(-1.45, 1.45), xlabel=rf"$\tilde y_{{{2 * i - 1}}}$",
               ylabel=rf"$\tilde y_{{{2 * i}}}$",
               title=rf"pair $i = {i}$: $\theta_{{{i}}} = {theta:.3g}$ rad/pos.")
        ax.set_aspect("equal")
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes[0].tolist(), shrink=0.85, label="position $m$")
    fig.suptitle(rf"RoPE at positions $m = {int(pos[0])}, \dots, {int(pos[-1])}$ ($d = {d}$): "
                 r"pair $i$ turns by $\theta_i$ per position")
    return fig


def rope_relative_scores(apply_rope: Callable, q: Tensor, k: Tensor,
                         query_positions: Sequence[int] = (40, 400, 4000), max_offset: int = 40,
                         base: float = 10000.0) -> Figure:
    """The score s_{t,j} = k̃_j·q̃_t / √d of one query vector q at position t and one key vector k at
    positions j = t − Δ, against the offset Δ = t − j, for several query positions t.

    ``apply_rope(x, positions, base)`` is the student's function; q and k have shape (d,). The curves
    coincide because the score depends on t and j only through t − j.
    """
    q, k = _cpu64(q), _cpu64(k)
    d = q.shape[-1]
    offsets = torch.arange(max_offset + 1)
    styles = [dict(lw=5, alpha=0.35, ls="-"), dict(lw=1.8, ls="--"), dict(lw=1.5, ls=":", marker="o", ms=3),
              dict(lw=1.2, ls="-.")]
    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    for n, t in enumerate(query_positions):
        q_t = _cpu64(apply_rope(q[None, :], torch.tensor([t]), base))[0]          # q̃_t        (d,)
        keys = _cpu64(apply_rope(k.repeat(len(offsets), 1), t - offsets, base))   # k̃_j, j = t - Δ  (Δ, d)
        scores = keys @ q_t / math.sqrt(d)                                        # s_{t, t-Δ}  (Δ,)
        ax.plot(offsets, scores, label=f"query at $t = {t}$", color=f"C{n}", **styles[n % len(styles)])
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel=r"offset $t - j$ (query position minus key position)",
           ylabel=r"$s_{t,j} = \tilde k_j^\top \tilde q_t / \sqrt{d_k}$",
           title=f"Same q and k at different absolute positions (d = {d}): the curves coincide")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def rope_long_range_decay(apply_rope: Callable, d: int = 128, max_distance: int = 10000,
                          base: float = 10000.0) -> Figure:
    """q̃_t·k̃_j / d for q = k = (1, ..., 1) against the distance t − j (log scale), for ``apply_rope``
    (the student's function): 1 at distance 0, then it decays with oscillations."""
    dist = torch.arange(max_distance + 1)
    ones = torch.ones(len(dist), d, dtype=torch.float64)
    rotated = _cpu64(apply_rope(ones, dist, base))      # row m: R_{Θ,m} 1   (N, d)
    score = rotated @ rotated[0] / d                    # q̃_t·k̃_0 / d for t = 0..N   (N,)
    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    ax.semilogx(dist[1:], score[1:], lw=1)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set(xlabel="distance $t - j$ (log scale)", ylabel=r"$\tilde q_t^\top \tilde k_j \,/\, d$",
           title=f"Long-range decay: q = k = (1, ..., 1), d = {d}, base = {base:g}")
    ax.grid(True, which="both", alpha=0.3)
    return fig
