"""LeNet-5 on scikit-learn's handwritten digits (Lecture 4): test accuracy against wall-clock seconds on the CPU.

Target: at least 97% test accuracy within 60 s on 2 CPU cores, with plain SGD (the lecture's Algorithm 1).
Besides the default recipe (8×8 digits resized to 32×32, random distortions, ReLU + max-pooling) it trains
the same network with 2 threads, without distortions, on padded instead of resized digits, and with the
1998 paper's scaled tanh and trainable subsampling; three seeds each (one on 2 threads). Prints a markdown
table and writes build/bench/lenet.png.
"""
from __future__ import annotations

import time

import torch

from course_lib import data
from course_lib.cnn.lenet import LeNet5, LeNet5Config, prepare_digits, train

from .common import OUT

TARGET, BUDGET = 0.97, 60.0
EPOCHS, BATCH, LR = 20, 32, 0.05

SEEDS = (0, 1, 2)
VARIANTS = [  # (label, input, distortions, config, threads, seeds)
    ("default: resized, distorted, ReLU + max-pool", "resize", True, LeNet5Config(), 1, SEEDS),
    ("the same on 2 threads", "resize", True, LeNet5Config(), 2, SEEDS[:1]),
    ("resized, no distortions", "resize", False, LeNet5Config(), 1, SEEDS),
    ("padded (8×8 in a 32×32 frame), no distortions", "pad", False, LeNet5Config(), 1, SEEDS),
    ("paper: scaled tanh + trainable subsampling", "resize", True,
     LeNet5Config(activation="scaled_tanh", pool="subsample"), 1, SEEDS),
]


def markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def main() -> None:
    raw = data.digits()
    inputs = {how: prepare_digits(raw, how) for how in ("resize", "pad")}
    threads_before = torch.get_num_threads()
    rows, curves, ok = [], {}, True
    try:
        for label, how, distort, config, threads, seeds in VARIANTS:
            torch.set_num_threads(threads)
            seconds, reached, final = [], [], []
            for seed in seeds:
                torch.manual_seed(seed)
                model = LeNet5(config)
                start = time.perf_counter()
                hist = train(model, inputs[how], epochs=EPOCHS, lr=LR, batch_size=BATCH, augment=distort,
                             seed=seed, progress=False, time_limit=BUDGET)
                seconds.append(time.perf_counter() - start)
                reached.append(next((s for s, a in zip(hist.seconds, hist.test_acc) if a >= TARGET), None))
                final.append(hist.test_acc[-1])
                if seed == seeds[0]:
                    curves[label] = (hist.seconds, hist.test_acc)
            slowest = None if None in reached else max(reached)
            if label.startswith("default"):
                ok = slowest is not None and max(seconds) <= BUDGET and min(final) >= TARGET
            rows.append([label, threads, len(seeds), f"{sum(seconds) / len(seeds):.1f}",
                         "never" if slowest is None else f"{slowest:.1f}",
                         f"{100 * sum(final) / len(final):.2f}%" + (f" ({100 * min(final):.1f}–{100 * max(final):.1f})"
                                                                    if len(final) > 1 else "")])
    finally:
        torch.set_num_threads(threads_before)
    print(f"\nLeNet-5 on the digits (1,347 train / 450 test), plain SGD, batch {BATCH}, η₀ = {LR} with cosine decay, "
          f"{EPOCHS} epochs (stopped after {BUDGET:.0f} s), CPU, torch {torch.__version__}")
    print(markdown(["variant", "threads", "seeds", "seconds per run", f"seconds to {TARGET:.0%} (slowest seed)",
                    "final test accuracy, mean (min–max)"], rows))
    print(f"target (≥ {TARGET:.0%} test accuracy within {BUDGET:.0f} s, every seed): "
          f"{'met' if ok else 'NOT met'} by the default recipe")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for label, (secs, accs) in curves.items():
        ax1.plot(range(1, len(accs) + 1), [100 * a for a in accs], marker="o", ms=3, label=label)
    ax1.axhline(100 * TARGET, ls="--", color="gray", lw=0.8)
    ax1.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(50, 100),
            title="LeNet-5 on scikit-learn's digits (first seed)")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.barh([r[0] for r in rows][::-1], [float(r[3]) for r in rows][::-1], color="C2")
    ax2.axvline(BUDGET, ls="--", color="gray", lw=0.8)
    ax2.set(xlabel="seconds per run (wall clock, as measured)", title=f"time for {EPOCHS} epochs")
    ax2.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "lenet.png", dpi=120)
    print(f"plot: {OUT / 'lenet.png'}")


if __name__ == "__main__":
    main()
