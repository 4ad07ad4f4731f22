"""The figures of the KV-cache notebook.

Each helper builds one matplotlib figure and returns it. A helper that needs a graded piece receives the
student's function as an argument (``plot_cache_memory(kv_cache_bytes, ...)``); nothing here imports a
graded reference.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .core import causal_mask

__all__ = ["plot_cache_anatomy", "plot_time_per_token", "plot_cache_memory"]


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
