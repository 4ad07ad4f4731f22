"""RoPE three ways (Lecture 4): the explicit d×d matrix R_{Θ,m} per position against the element-wise forms.

The matrix form costs O(d²) multiply-adds per vector, the element-wise forms O(d): the gap grows with d.
Prints a table of time per call for x of shape (B, h, T, d) and writes build/bench/rope.png.
"""
from __future__ import annotations

import torch

from course_lib.attention.rope import apply_rope_halves, apply_rope_pairs, rope_matrix

from .common import OUT, best_time, table, threads

B, H, T = 1, 8, 512


def main() -> None:
    torch.manual_seed(0)
    rows, series = [], {"explicit R_{Θ,m} (einsum)": [], "adjacent pairs": [], "halves": []}
    dims = [16, 32, 64, 128, 256]
    positions = torch.arange(T)
    for d in dims:
        x = torch.randn(B, H, T, d)
        R = torch.stack([rope_matrix(m, d, dtype=torch.float32) for m in range(T)])   # (T, d, d), built once
        t_mat = best_time(lambda: torch.einsum("tij,bhtj->bhti", R, x))
        t_pairs = best_time(lambda: apply_rope_pairs(x, positions))
        t_halves = best_time(lambda: apply_rope_halves(x, positions))
        for key, t in zip(series, (t_mat, t_pairs, t_halves)):
            series[key].append(t * 1e3)
        rows.append([d, f"{t_mat * 1e3:.3f}", f"{t_pairs * 1e3:.3f}", f"{t_halves * 1e3:.3f}",
                     f"{t_mat / t_pairs:.1f}x"])
    print(f"\nRoPE on x of shape ({B}, {H}, {T}, d), float32, CPU, {threads()}: milliseconds per call")
    print(table(["d", "explicit matrix", "pairs", "halves", "matrix / pairs"], rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(dims, ys, marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="head dimension d", ylabel="ms per call",
           title=f"RoPE on ({B}, {H}, {T}, d): O(d²) matrix vs O(d) element-wise")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "rope.png", dpi=120)
    print(f"plot: {OUT / 'rope.png'}")


if __name__ == "__main__":
    main()
