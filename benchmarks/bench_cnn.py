"""CNN layers (Lecture 4): plain loops vs vectorised (im2col for the convolution) vs PyTorch, forward and
backward, on a LeNet-sized and an ImageNet-sized layer.

* convolution: LeNet-5's C3 (6 → 16 channels, 14×14, 5×5, batch 64) and a ResNet conv2_x layer
  (64 → 64 channels, 56×56, 3×3, padding 1, batch 8);
* max-pooling: LeNet-5's S4 (16 channels, 10×10, 2×2 stride 2, batch 64) and ResNet's stem pool
  (64 channels, 112×112, 3×3 stride 2 padding 1, batch 8).

PyTorch's time is ``F.conv2d`` / ``F.max_pool2d`` for the forward pass and autograd's backward through them
(graph built once, ``retain_graph``) for the backward pass; on the CPU it picks fast kernels (oneDNN,
NNPACK's Winograd/FFT) that need fewer operations than im2col. For comparison the table also shows
PyTorch's own im2col + GEMM kernels (``aten._slow_conv2d_forward`` / ``_backward``, its fallback path),
which do the same work as ours. PyTorch's max-pooling backward reuses the arg-max
indices its forward pass saved; so does ours here (``max_pool2d(..., return_indices=True)``, computed once
outside the timing), which leaves one ``scatter_add``. The loop versions are timed once; on the
ImageNet-sized layers they would take minutes, so they run on a slice (fewer images and channels) and the
time is **extrapolated** linearly to the full layer (marked "≈" in the table). Runs with one thread and
measures the process's CPU time unless ``BENCH_THREADS`` asks for more threads (then wall-clock time):
on a shared machine the wall clock of a single thread depends on the other jobs. Prints a markdown table
and writes build/bench/cnn.png.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from course_lib.cnn.conv import conv2d, conv2d_backward, conv2d_backward_loop, conv2d_loop
from course_lib.cnn.pool import max_pool2d, max_pool2d_backward, max_pool2d_backward_loop, max_pool2d_loop

from .common import OUT, threads

# With one thread the process's CPU time is the time of the work itself, whatever else the machine runs
# (on an idle machine it equals the wall-clock time); with several threads it would add them up, so the
# wall clock is used then.
CLOCK = time.perf_counter


def best_time(fn: Callable[[], object], repeat: int = 5, min_seconds: float = 0.05) -> float:
    """Best of ``repeat`` runs of the mean time of ``fn()`` over enough calls to last ``min_seconds``."""
    fn()                                                     # warm-up
    calls, start = 0, CLOCK()
    while CLOCK() - start < min_seconds:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(repeat):
        start = CLOCK()
        for _ in range(calls):
            fn()
        best = min(best, (CLOCK() - start) / calls)
    return best


@dataclass
class Result:
    layer: str
    op: str                 # "conv forward", ...
    loop: float             # seconds
    loop_note: str          # "" or "≈ (×k from a slice)"
    vectorised: float
    torch: float
    torch_im2col: float | None = None   # PyTorch's own im2col + GEMM kernel (conv only)


def once(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def conv_results(name: str, N: int, C: int, C_out: int, H: int, K: int, padding: int,
                 loop_slice: tuple[int, int] | None) -> list[Result]:
    """``loop_slice`` = (images, output channels) the loops run on; None: the whole layer."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, H, generator=g)
    w = torch.randn(C_out, C, K, K, generator=g) / (C * K * K) ** 0.5
    b = torch.randn(C_out, generator=g)
    y = F.conv2d(x, w, b, 1, padding)
    dy = torch.randn(y.shape, generator=g)
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    yr = F.conv2d(xr, wr, br, 1, padding)

    if loop_slice is None:
        n, c_out, scale_f, scale_b, note = N, C_out, 1.0, 1.0, ""
    else:
        n, c_out = loop_slice
        scale_f = (N / n) * (C_out / c_out)          # the forward loop runs over (n, c', h', w')
        scale_b = C_out / c_out                      # the backward loop runs over (c', c, m, n), each over the batch
        note = f"≈ (×{scale_f:g} / ×{scale_b:g} from {n} image(s), {c_out} output channels)"
    t_loop_f = once(lambda: conv2d_loop(x[:n], w[:c_out], b[:c_out], 1, padding)) * scale_f
    t_loop_b = once(lambda: conv2d_backward_loop(dy[:, :c_out], x, w[:c_out], 1, padding)) * scale_b
    fwd = Result(name, "conv forward", t_loop_f, note, best_time(lambda: conv2d(x, w, b, 1, padding)),
                 best_time(lambda: F.conv2d(x, w, b, 1, padding)),
                 _maybe(lambda: torch.ops.aten._slow_conv2d_forward(x, w, [K, K], b, [1, 1], [padding, padding])))
    bwd = Result(name, "conv backward", t_loop_b, note, best_time(lambda: conv2d_backward(dy, x, w, 1, padding)),
                 best_time(lambda: torch.autograd.grad(yr, (xr, wr, br), dy, retain_graph=True)),
                 _maybe(lambda: torch.ops.aten._slow_conv2d_backward(dy, x, w, [K, K], [1, 1], [padding, padding],
                                                                     [True, True, True])))
    return [fwd, bwd]


def _maybe(fn: Callable[[], object]) -> float | None:
    """The time of a private ATen kernel, or None where this torch version lacks it."""
    try:
        fn()
    except (AttributeError, RuntimeError, TypeError):
        return None
    return best_time(fn)


def pool_results(name: str, N: int, C: int, H: int, K: int, stride: int, padding: int,
                 loop_slice: tuple[int, int] | None) -> list[Result]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, H, H, generator=g)
    y = F.max_pool2d(x, K, stride, padding)
    dy = torch.randn(y.shape, generator=g)
    xr = x.clone().requires_grad_(True)
    yr = F.max_pool2d(xr, K, stride, padding)
    if loop_slice is None:
        n, c, scale, note = N, C, 1.0, ""
    else:
        n, c = loop_slice
        scale = (N / n) * (C / c)                    # both loops run over (n, c, h', w')
        note = f"≈ (×{scale:g} from {n} image(s), {c} channels)"
    xs, dys = x[:n, :c], dy[:n, :c]
    fwd = Result(name, "max-pool forward", once(lambda: max_pool2d_loop(xs, K, stride, padding)) * scale, note,
                 best_time(lambda: max_pool2d(x, K, stride, padding)),
                 best_time(lambda: F.max_pool2d(x, K, stride, padding)))
    _, indices = max_pool2d(x, K, stride, padding, return_indices=True)   # kept by the forward, as autograd does
    bwd = Result(name, "max-pool backward", once(lambda: max_pool2d_backward_loop(dys, xs, K, stride, padding)) * scale,
                 note, best_time(lambda: max_pool2d_backward(dy, x, K, stride, padding, indices=indices)),
                 best_time(lambda: torch.autograd.grad(yr, xr, dy, retain_graph=True)))
    return [fwd, bwd]


def markdown(results: list[Result]) -> str:
    rows = ["| layer | pass | loops (ms) | vectorised (ms) | PyTorch (ms) | vectorised / PyTorch | loops / PyTorch "
            "| PyTorch's im2col+GEMM (ms) | vectorised / PyTorch's im2col |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        approx = "≈ " if r.loop_note else ""
        im2col = ("— | —" if r.torch_im2col is None else
                  f"{r.torch_im2col * 1e3:.2f} | {r.vectorised / r.torch_im2col:.1f}x")
        rows.append(f"| {r.layer} | {r.op} | {approx}{r.loop * 1e3:,.1f} | {r.vectorised * 1e3:.2f} | "
                    f"{r.torch * 1e3:.2f} | {r.vectorised / r.torch:.1f}x | {approx}{r.loop / r.torch:,.0f}x | {im2col} |")
    notes = sorted({f"{r.layer}, {r.op.split()[0]}: loops {r.loop_note}" for r in results if r.loop_note})
    return "\n".join(rows + ([""] + [f"- {n}" for n in notes] if notes else []))


def plot(results: list[Result]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    labels = [f"{r.layer.split(':')[0]}\n{r.op}" for r in results]
    xs = torch.arange(len(results)).float()
    fig, ax = plt.subplots(figsize=(12, 5))
    for k, (attr, label) in enumerate((("loop", "plain loops (≈: extrapolated)"), ("vectorised", "vectorised (im2col; strided views for pooling)"),
                                       ("torch", "PyTorch"))):
        ax.bar(xs + (k - 1) * 0.27, [getattr(r, attr) * 1e3 for r in results], width=0.27, label=label)
    ax.set_yscale("log")
    ax.set_xticks(xs.tolist(), labels, fontsize=8)
    ax.set_xlabel("layer and pass (full sizes in the printed table)")
    ax.set(ylabel="milliseconds per call (log scale)",
           title=f"CNN layers: loops vs vectorised vs PyTorch on the CPU ({threads()})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "cnn.png", dpi=120)
    print(f"plot: {OUT / 'cnn.png'}")


def main() -> None:
    global CLOCK
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    CLOCK = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    clock = "CPU time (one thread)" if CLOCK is time.process_time else "wall-clock time"
    results = []
    results += conv_results("LeNet C3: 64×6×14×14, 16 5×5 kernels", 64, 6, 16, 14, 5, 0, None)
    results += conv_results("ResNet conv2_x: 8×64×56×56, 64 3×3 kernels", 8, 64, 64, 56, 3, 1, (1, 4))
    results += pool_results("LeNet S4: 64×16×10×10, 2×2 /2", 64, 16, 10, 2, 2, 0, None)
    results += pool_results("ResNet stem pool: 8×64×112×112, 3×3 /2 pad 1", 8, 64, 112, 3, 2, 1, (1, 2))
    print(f"\nCNN layers, float32, CPU, {threads()}: {clock} per call (best of 5 for vectorised and "
          "PyTorch; loops once)\n")
    print(markdown(results))
    plot(results)


if __name__ == "__main__":
    main()
