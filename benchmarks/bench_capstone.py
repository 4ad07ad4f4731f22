"""Capstone (Lecture 4, "Modern Transformer Models"): the notebook's default models, timed.

1. Training: seconds per AdamW step (batch 16 × 64 characters) of the GPT-2-style baseline and the modern
   recipe at equal parameters (about 0.8 M), and of the modern recipe with MQA, a window, and 4 experts.
2. Greedy decoding of N_NEW tokens by the modern model (batch 1): recomputation, KV cache, rolling buffer
   (window of ½w+1 = 64 tokens); each token's time is the minimum over REPEATS runs.
3. Decoding memory: KV-cache bytes per token for MHA / GQA / MQA, and the rolling buffer's fixed size.

Randomly initialised models (timings do not depend on the weights), one CPU thread (on a shared 2-core
machine two OpenMP threads were up to 10x slower than one). Prints tables, writes build/bench/capstone.png.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from course_lib.models import model as gpt
from course_lib.models import train as trainer

from .common import OUT, table, threads

V, N_NEW, REPEATS, STEPS = 103, 512, 2, 10
SIZE = dict(vocab_size=V, d_model=128, n_layer=4, n_head=4, block_size=64)


def step_time(config: gpt.GPTConfig) -> float:
    """Median seconds per training step (forward, cross-entropy + z-loss (+ MoE balance), backward, AdamW)
    over STEPS steps after 2 warm-up steps."""
    torch.manual_seed(0)
    model = gpt.GPT(config)
    opt = trainer.make_optimizer(model, 1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(STEPS + 2):
        x, y = trainer.get_batch(torch.randint(0, V, (10_000,), generator=gen), 16, 64, gen)
        start = time.perf_counter()
        logits = model(x)
        loss = trainer.lm_loss(logits, y) + 1e-4 * trainer.z_loss(logits) + 0.01 * model.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[STEPS // 2]


def main() -> None:
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        baseline = gpt.gpt2_config(**SIZE)
        budget = gpt.GPT(baseline).num_params()
        modern = gpt.with_params(gpt.modern_config(**SIZE), budget)
        configs = {
            "GPT-2 style": baseline,
            "modern": modern,
            "modern + MQA": gpt.with_params(replace(modern, n_kv_head=1), budget),
            "modern + window (w = 64)": replace(modern, window=64),
            "modern + MoE (4 experts, top-2)": replace(modern, mlp="moe", n_experts=4, top_k=2,
                                                       d_ff=8 * round(modern.d_ff / 16)),
        }
        rows = []
        for name, config in configs.items():
            m = gpt.GPT(config)
            rows.append([name, f"{m.num_params():,}", f"{m.num_params(active=True):,}", f"{step_time(config):.3f}"])
        print(f"\nTraining steps, batch 16 x 64 characters, CPU, 1 thread ({threads()}): median of {STEPS} steps")
        print(table(["model", "parameters", "active", "s/step"], rows))

        torch.manual_seed(0)
        model = gpt.GPT(modern).eval()
        windowed = gpt.GPT(replace(modern, window=126)).eval()
        windowed.load_state_dict(model.state_dict())
        start = torch.zeros(1, 1, dtype=torch.long)
        assert torch.equal(model.generate(start, 64, temperature=0), model.generate(start, 64, temperature=0, use_cache=False))
        runs = {"recompute (no cache)": (model, None), "KV cache": (model, "kv"),
                "rolling buffer (64 slots)": (windowed, "rolling")}
        gpt.time_per_token(model, start, 16)                                   # warm-up
        per_token = {name: torch.stack([gpt.time_per_token(m, start, N_NEW, cache_kind=kind)
                                        for _ in range(REPEATS)]).amin(0) for name, (m, kind) in runs.items()}
        base = per_token["recompute (no cache)"]
        rows = []
        for n in (64, 128, 256, 512):
            row = [n] + [f"{n / t[:n].sum().item():.0f}" for t in per_token.values()]
            row += [f"{base[:n].sum().item() / t[:n].sum().item():.1f}x" for t in list(per_token.values())[1:]]
            rows.append(row)
        print(f"\nGreedy decoding, modern model ({model.num_params():,} parameters), batch 1, float32, 1 thread: tokens per second "
              f"for the first n tokens (best of {REPEATS} runs per token)")
        print(table(["n tokens", *[f"{k} tok/s" for k in per_token], "speed-up KV", "speed-up rolling"], rows))

        rows = []
        for label, h_kv in (("MHA", 4), ("GQA", 2), ("MQA", 1)):
            m = gpt.GPT(replace(modern, n_kv_head=h_kv))
            rows.append([label, h_kv, f"{m.new_cache(1, 1024).nbytes // 1024:,}",
                         f"{m.new_cache(1, 4096).nbytes / 2**20:.1f}"])
        rows.append(["rolling buffer (GQA, w = 126)", 2, "-", f"{windowed.new_cache(1, 4096, 'rolling').nbytes / 2**20:.3f}"])
        print("\nDecoding memory, float32, batch 1")
        print(table(["cache", "h_kv", "bytes/token", "MiB at 4096 tokens"], rows))
        speedup = base.sum().item() / per_token["KV cache"].sum().item()
        print(f"\ncached decoding of {N_NEW} tokens: {speedup:.1f}x faster than recomputation")
    finally:
        torch.set_num_threads(n_threads)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for name, t in per_token.items():
        ax.plot(range(2, N_NEW + 1), 1e3 * t[1:], label=name)
    ax.set(xlabel="tokens in the sequence", ylabel="time per token (ms)", yscale="log",
           title=f"Modern model, greedy decoding, 1 thread: {speedup:.1f}x faster with the KV cache")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(OUT / "capstone.png", dpi=120)
    print(f"plot: {OUT / 'capstone.png'}")


if __name__ == "__main__":
    main()
