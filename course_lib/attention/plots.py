"""The figures of the attention notebooks (rope, kv_cache, gqa), one section per notebook.

Each helper builds one matplotlib figure and returns it (the notebook cell that calls it shows it). A
helper that needs a graded piece receives the student's function as an argument, e.g.
``rope_pair_trajectories(apply_rope_pairs)``, ``plot_cache_memory(kv_cache_bytes, ...)``,
``plot_head_groups(repeat=repeat_kv)``: the student sees their own code at work, and nothing here imports a
graded reference. What a helper computes itself it computes in float64 on the CPU.

RoPE      plot_vectors_2d, rope_frequency_spectrum, rope_matrix_heatmaps, rope_pair_trajectories,
          rope_relative_scores, rope_long_range_decay
KV cache  plot_cache_anatomy, plot_time_per_token, plot_cache_memory
GQA       plot_head_groups

The other modules of ``course_lib.attention`` do not import matplotlib (nor this module), so that
``import course_lib.attention`` stays light; the figures are imported where a notebook draws them.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .core import causal_mask
from .gqa import group_size

__all__ = [
    # RoPE
    "plot_vectors_2d",
    "rope_frequency_spectrum",
    "rope_matrix_heatmaps",
    "rope_pair_trajectories",
    "rope_relative_scores",
    "rope_long_range_decay",
    # KV cache
    "plot_cache_anatomy",
    "plot_time_per_token",
    "plot_cache_memory",
    # GQA
    "plot_head_groups",
]


def _cpu64(t: Tensor) -> Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float64)


# ---------------------------------------------------------------------------------------------------------
# RoPE notebook: rotations in the plane
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
# RoPE notebook: frequencies, R_{Θ,m}, trajectories, relative scores
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


# ---------------------------------------------------------------------------------------------------------
# KV-cache notebook
# ---------------------------------------------------------------------------------------------------------

def plot_cache_anatomy(t: int = 6, d: int = 4, seed: int = 0) -> Figure:
    """The lecture's slide as a picture: one attention head at decoding step t.

    Q, K, V (t × d) and the attention weights A = softmax(QKᵀ/√d + M) (t × t) of the first t tokens.
    Row t (red) is what step t computes. Rows 1..t-1 of K and V (green) were computed at earlier steps and
    are reused: they are the cache. Rows 1..t-1 of Q and A (greyed) were needed only at their own step:
    they fall out of the cache.
    """
    if t < 2 or d < 1:
        raise ValueError(f"need t >= 2 tokens and d >= 1, got t={t}, d={d}")
    g = torch.Generator().manual_seed(seed)
    Q, K, V = (torch.randn(t, d, generator=g, dtype=torch.float64) for _ in range(3))
    A = torch.softmax(Q @ K.T / math.sqrt(d) + causal_mask(t, dtype=torch.float64), dim=-1)   # (t, t)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.8), width_ratios=[d, d, d, t], layout="constrained")
    panels = [("queries Q", Q, "fall out"), ("keys K", K, "cached"), ("values V", V, "cached"),
              ("attention weights A", A, "fall out")]
    for ax, (name, M, old) in zip(axes, panels):
        is_A = name.startswith("attention")
        shown = M.masked_fill(M == 0, float("nan")) if is_A else M    # masked weights (j > i) left blank
        ax.imshow(shown.numpy(), cmap="viridis" if is_A else "coolwarm", aspect="equal")
        cols = M.shape[1]
        if old == "cached":       # earlier rows reused: green frame
            ax.add_patch(Rectangle((-0.5, -0.5), cols, t - 1, fill=False, ec="tab:green", lw=3))
            ax.text(cols / 2 - 0.5, t - 1.5 - (t - 1) / 2, "reused\n(cache)", ha="center", va="center",
                    color="tab:green", fontsize=10, fontweight="bold",
                    bbox=dict(fc="white", ec="none", alpha=0.75))
        else:                     # earlier rows no longer needed: greyed out
            ax.add_patch(Rectangle((-0.5, -0.5), cols, t - 1, fc="0.85", ec="0.5", alpha=0.8, hatch="//"))
            ax.text(cols / 2 - 0.5, t - 1.5 - (t - 1) / 2, "not needed\nany more", ha="center", va="center",
                    color="0.3", fontsize=10)
        ax.add_patch(Rectangle((-0.5, t - 1.5), cols, 1, fill=False, ec="tab:red", lw=3))   # row t: new
        ax.set_title(f"{name}\n(row {t}: {'1 × t, new' if is_A else 'new at step t'})", fontsize=10)
        ax.set_xticks(range(cols), [str(j + 1) for j in range(cols)] if cols <= 12 else [""] * cols)
        ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
        ax.set_xlabel("key position j" if is_A else "feature")
        ax.set_ylabel("token position")
    fig.suptitle(f"Decoding step t = {t}: K and V are reused from the cache, only row t of Q and A is computed")
    return fig


def plot_time_per_token(times: Mapping[str, Tensor], start_len: int = 1, title: str = "") -> Figure:
    """Left: milliseconds per generated token against the length of the sequence at that step (dots: each
    step; line: running median). Right: the total time so far. ``times`` maps a label to seconds per token
    (n_new,); step i handles a sequence of start_len + i tokens. Step 0 (which includes the prompt, the
    prefill) is left out of both panels."""
    if not times:
        raise ValueError("times is empty: pass {label: seconds per token}")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for label, secs in times.items():
        secs = torch.as_tensor(secs, dtype=torch.float64).cpu()[1:]     # drop step 0 (prefill)
        length = start_len + 1 + torch.arange(len(secs))
        ms = 1e3 * secs
        (dots,) = ax1.plot(length.numpy(), ms.numpy(), ".", ms=3, alpha=0.3)
        k = max(1, 2 * (len(ms) // 40) + 1)                             # odd window, ~1/20 of the run
        if len(ms) >= k:
            median = ms.unfold(0, k, 1).median(dim=-1).values           # running median: robust to hiccups
            ax1.plot(length[k // 2: k // 2 + len(median)].numpy(), median.numpy(), "-", color=dots.get_color(), lw=2, label=label)
        else:
            dots.set_label(label)
        ax2.plot(length.numpy(), secs.cumsum(0).numpy(), "-", color=dots.get_color(), lw=2, label=label)
    ax1.set(xlabel="sequence length at this step (tokens)", ylabel="ms per generated token",
            title="time per token (dots: each step, line: running median)", ylim=(0, None))
    ax2.set(xlabel="sequence length (tokens)", ylabel="total time so far (s)",
            title="total time: quadratic without a cache, linear with it", ylim=(0, None))
    ax1.legend()
    ax2.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_cache_memory(kv_cache_bytes: Callable, models: Mapping[str, tuple[int, int, int]], max_tokens: int,
                      dtype: torch.dtype = torch.float16, batch: int = 1) -> Figure:
    """KV-cache size (GiB) against the number of tokens, one line per model.

    ``kv_cache_bytes(n_layers, h_kv, d_head, tokens, dtype, batch=...)`` is the student's function;
    ``models`` maps a name to (n_layers, h_kv, d_head).
    """
    tokens = [int(x) for x in torch.linspace(0, max_tokens, 33)]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for name, (layers, h_kv, d_head) in models.items():
        gib = [kv_cache_bytes(layers, h_kv, d_head, n, dtype, batch=batch) / 2**30 for n in tokens]
        ax.plot(tokens, gib, lw=2, label=f"{name}: {layers} layers, h_kv = {h_kv}, d_head = {d_head}")
    ax.set(xlabel="tokens in the cache", ylabel="cache size (GiB)", ylim=(0, None), xlim=(0, max_tokens),
           title=f"2 · layers · h_kv · d_head · tokens · bytes ({str(dtype).replace('torch.', '')}, batch {batch})")
    ax.legend(fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------
# GQA notebook: the lecture's MHA / GQA / MQA diagram
# ---------------------------------------------------------------------------------------------------------

def plot_head_groups(h_q: int = 8, h_kvs: tuple[int, ...] = (8, 2, 1),
                     repeat: Callable[[Tensor, int], Tensor] | None = None) -> Figure:
    """The lecture's figure (Ainslie et al. 2023, Fig. 2): query heads (top) and the key/value heads they
    use (bottom), one panel per h_kv; h_kv = h_q is MHA, h_kv = 1 MQA, anything between GQA.

    Which key/value head each query head uses is read off ``repeat`` (a ``repeat_kv``, e.g. the student's)
    applied to the kv-head numbers 0..h_kv-1; without it, from the rule i = n // g. Returns the figure.
    """
    fig, axes = plt.subplots(1, len(h_kvs), figsize=(4.2 * len(h_kvs), 3.2), layout="constrained")
    axes = [axes] if len(h_kvs) == 1 else list(axes)
    colors = plt.cm.tab10.colors
    for ax, h_kv in zip(axes, h_kvs):
        g = group_size(h_q, h_kv)
        if repeat is None:
            owner = [n // g for n in range(h_q)]                               # the lecture's rule, i = n // g
        else:                                                                  # ask repeat_kv: repeat the kv-head numbers
            ids = torch.arange(h_kv, dtype=torch.float64).reshape(1, h_kv, 1, 1)
            owner = repeat(ids, g).reshape(-1).round().long().tolist()
        if len(owner) != h_q:
            raise ValueError(f"repeat(x, {g}) gave {len(owner)} heads, expected h_q = {h_q}")
        qx = [n * 1.0 for n in range(h_q)]
        kx = [(i + 0.5) * h_q / h_kv - 0.5 for i in range(h_kv)]
        for n, i in enumerate(owner):
            ax.plot([qx[n], kx[i]], [1.0, 0.25], color=colors[i % 10], lw=1.5, zorder=1)
            ax.add_patch(Rectangle((qx[n] - 0.35, 1.0), 0.7, 0.45, color=colors[i % 10], alpha=0.35, zorder=2))
        for i in range(h_kv):
            for row in (-0.25, -0.75):                      # V^{(i)} above K^{(i)}
                ax.add_patch(Rectangle((kx[i] - 0.35, row), 0.7, 0.45, color=colors[i % 10], zorder=2))
                ax.text(kx[i], row + 0.225, str(i), color="white",
                        ha="center", va="center", fontsize=9, zorder=3)
        kind = "multi-head (MHA)" if h_kv == h_q else "multi-query (MQA)" if h_kv == 1 else "grouped-query (GQA)"
        ax.set_title(f"{kind}\nh_q = {h_q}, h_kv = {h_kv}, g = {g}")
        ax.set_xlim(-0.8, h_q - 0.2)
        ax.set_ylim(-0.9, 1.6)
        ax.set_yticks([-0.525, -0.025, 1.225], ["keys", "values", "queries"])
        ax.set_xticks(range(h_q), [str(n) for n in range(h_q)])
        ax.set_xlabel("query head n = i·g + j")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    return fig
