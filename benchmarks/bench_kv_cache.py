"""KV cache (Lecture 4): greedy decoding of 512 tokens with and without the cache.

Without the cache, step t is a forward pass over t tokens; with it, one token attends to the cached keys
and values. Runs of 512 tokens per mode (batch 1, float32, 1-token prompt); each token's time is the minimum over
REPEATS runs (other load on the machine only adds time); the tokens/s of the first 128 and 256 tokens are
read off the same runs. Target on 2 CPU cores: cached decoding at least 5x faster
than recomputation at 512 tokens. Prints a table and writes build/bench/kv_cache.png.
"""
from __future__ import annotations

import torch

from course_lib.attention.kv_cache import DecoderConfig, TinyDecoder, cached_attention_step, time_per_token

from .common import OUT, table, threads

CONFIG = DecoderConfig(vocab_size=256, d_model=128, n_layers=4, n_heads=4)
N_NEW = 512
TARGET = 5.0
REPEATS = 2


def best_per_token(model: TinyDecoder, prompt: torch.Tensor, use_cache: bool, label: str, **kw) -> torch.Tensor:
    """Seconds per token (N_NEW,), the minimum over REPEATS runs."""
    runs = [time_per_token(model, prompt, N_NEW, use_cache, progress=f"{label} {r + 1}/{REPEATS}", **kw)
            for r in range(REPEATS)]
    return torch.stack(runs).min(dim=0).values


def main() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(CONFIG)
    prompt = torch.randint(0, CONFIG.vocab_size, (1, 1))
    assert torch.equal(model.generate(prompt, 32), model.generate(prompt, 32, use_cache=False))
    time_per_token(model, prompt, 16, use_cache=True)                       # warm-up
    time_per_token(model, prompt, 16, use_cache=False)
    runs = {
        "recompute (no cache)": best_per_token(model, prompt, False, "no cache"),
        "KV cache, in place": best_per_token(model, prompt, True, "in place"),
        "KV cache, torch.cat step": best_per_token(model, prompt, True, "cat step", attention_step=cached_attention_step),
    }
    base = runs["recompute (no cache)"]
    rows = []
    for n in (128, 256, 512):
        row = [n]
        for secs in runs.values():
            row.append(f"{n / secs[:n].sum().item():.1f}")
        row += [f"{base[:n].sum().item() / secs[:n].sum().item():.1f}x" for secs in list(runs.values())[1:]]
        rows.append(row)
    cache_mib = model.new_cache(1, N_NEW).nbytes / 2**20
    print(f"\nGreedy decoding with TinyDecoder({CONFIG.n_layers} layers, d_model={CONFIG.d_model}, "
          f"{CONFIG.n_heads} heads), batch 1, float32, CPU, {threads()}: tokens per second for the first n tokens "
          f"(best of {REPEATS} runs per token)")
    print(table(["n tokens", *[f"{k} tok/s" for k in runs], "speed-up in place", "speed-up cat step"], rows))
    speedup = base.sum().item() / runs["KV cache, in place"].sum().item()
    print(f"\ncached decoding of {N_NEW} tokens is {speedup:.1f}x faster than recomputation "
          f"(target: >= {TARGET:g}x {'met' if speedup >= TARGET else 'NOT met'}); cache of {N_NEW} tokens: "
          f"{cache_mib:.2f} MiB")

    import matplotlib
    matplotlib.use("Agg")
    from course_lib.attention.plots import plot_time_per_token
    OUT.mkdir(parents=True, exist_ok=True)
    fig = plot_time_per_token(runs, start_len=1, title=f"TinyDecoder, greedy decoding of {N_NEW} tokens, "
                                                       f"{threads()}: {speedup:.1f}x faster with the KV cache")
    fig.savefig(OUT / "kv_cache.png", dpi=120)
    print(f"plot: {OUT / 'kv_cache.png'}")


if __name__ == "__main__":
    main()
