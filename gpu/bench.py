"""``python -m gpu.bench [--device cuda|cpu] [--quick] [--out DIR]``: the benchmarks' GPU rows (issue 27).

The same functions and shapes as ``benchmarks/`` (``bench_sliding_window``, ``bench_kv_cache``,
``bench_cnn``), on one device:

* sliding-window attention, w = 512, d = 64, 4 heads, batch 1: sliding chunks vs naive (full n×n scores)
  vs PyTorch's SDPA with the boolean band mask, n = 8k, 16k, 32k, float32 and bfloat16 (the for-loop at 8k
  only: n kernel launches);
* KV cache: greedy decoding of 512 tokens with TinyDecoder (bench_kv_cache.CONFIG), cache vs recomputation,
  float32 and bfloat16;
* convolution: the course's im2col ``conv2d`` vs ``F.conv2d`` (cuDNN), forward, on LeNet's C3 and a ResNet
  conv2_x layer (batch 8 and 64), float32 and bfloat16.

On CUDA a call is timed with CUDA events (median of the timed calls after warm-up calls) and its memory is
``torch.cuda.max_memory_allocated`` during the call minus what was allocated before it (inputs excluded).
A configuration that runs out of memory is a row saying so. ``--device cpu`` runs tiny sizes, labelled
"CPU smoke size": the code path only, not a benchmark. Writes ``bench.json`` and ``bench.md`` into --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_kv_cache import CONFIG as KV_CONFIG
from benchmarks.bench_sliding_window import D as SW_D
from benchmarks.bench_sliding_window import H as SW_H
from benchmarks.bench_sliding_window import W as SW_W
from benchmarks.bench_sliding_window import sdpa_band
from course_lib.attention.kv_cache import TinyDecoder, time_per_token
from course_lib.attention.sliding_window import sliding_window_chunks, sliding_window_loop, sliding_window_naive
from course_lib.cnn.conv import conv2d


def measure(fn, device: torch.device, repeat: int = 5, warmup: int = 2) -> dict:
    if device.type == "cpu":                          # the smoke size: the code path, once
        repeat, warmup = 1, 0
    """{"ms": median time of one call, "mib": extra peak memory of one call (CUDA only)}."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return {"ms": statistics.median(times) * 1e3, "mib": None}
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"ms": statistics.median(times), "mib": mib}


def guarded(fn, device: torch.device, **kw) -> dict:
    try:
        return measure(fn, device, **kw)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"ms": None, "mib": None, "note": "out of memory"}
    except RuntimeError as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"ms": None, "mib": None, "note": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}


def sliding_window_rows(device, quick: bool) -> list[dict]:
    lengths = (128,) if device.type == "cpu" else ((8192,) if quick else (8192, 16384, 32768))
    w = 64 if device.type == "cpu" else SW_W
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in lengths:
            g = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(1, SW_H, n, SW_D, generator=g, device=device, dtype=dtype) for _ in range(3))
            methods = {"sliding chunks": sliding_window_chunks, "naive": sliding_window_naive,
                       "SDPA band mask": sdpa_band}
            if n == lengths[0]:
                methods["for-loop"] = sliding_window_loop
            for name, fn in methods.items():
                reps = 1 if name == "for-loop" else 5
                r = guarded(lambda fn=fn: fn(q, k, v, w), device, repeat=reps, warmup=1)
                rows.append({"table": "sliding window", "method": name, "n": n, "w": w, "dtype": str(dtype)[6:], **r})
            q = k = v = None                                  # freed before the next, longer n
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def kv_cache_rows(device, quick: bool) -> list[dict]:
    n_new = 4 if device.type == "cpu" else (128 if quick else 512)
    n_check = 4 if device.type == "cpu" else 16
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = TinyDecoder(KV_CONFIG).to(device=device, dtype=dtype).eval()
        prompt = torch.randint(0, KV_CONFIG.vocab_size, (1, 1), device=device)
        try:
            same = torch.equal(model.generate(prompt, n_check), model.generate(prompt, n_check, use_cache=False))
            time_per_token(model, prompt, n_check // 2, use_cache=True)            # warm-up
            time_per_token(model, prompt, n_check // 2, use_cache=False)
            for use_cache in (False, True):
                secs = time_per_token(model, prompt, n_new, use_cache)
                rows.append({"table": "kv cache", "method": "KV cache" if use_cache else "recompute",
                             "n": n_new, "dtype": str(dtype)[6:], "ms": secs.sum().item() * 1e3, "mib": None,
                             "tok_s": n_new / secs.sum().item(), "cached_equals_recomputed": same})
        except RuntimeError as exc:
            rows.append({"table": "kv cache", "method": "both", "n": n_new, "dtype": str(dtype)[6:], "ms": None,
                         "mib": None, "note": f"RuntimeError: {str(exc).splitlines()[0][:120]}"})
    return rows


def conv_rows(device, quick: bool) -> list[dict]:
    layers = ([("tiny", 2, 3, 4, 8, 3, 1)] if device.type == "cpu" else
              [("LeNet C3", 64, 6, 16, 14, 5, 0), ("ResNet conv2_x", 8, 64, 64, 56, 3, 1),
               ("ResNet conv2_x", 64, 64, 64, 56, 3, 1)])
    if quick and device.type == "cuda":
        layers = layers[1:2]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, N, C, C_out, Hs, K, pad in layers:
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.randn(N, C, Hs, Hs, generator=g, device=device, dtype=dtype)
            wt = (torch.randn(C_out, C, K, K, generator=g, device=device, dtype=dtype) / (C * K * K) ** 0.5)
            b = torch.randn(C_out, generator=g, device=device, dtype=dtype)
            label = f"{name}: {N}×{C}×{Hs}×{Hs}, {C_out} {K}×{K}"
            for method, fn in (("im2col conv2d", lambda: conv2d(x, wt, b, 1, pad)),
                               ("F.conv2d" + (" (cuDNN)" if device.type == "cuda" else ""),
                                lambda: F.conv2d(x, wt, b, 1, pad))):
                rows.append({"table": "convolution", "method": method, "layer": label, "dtype": str(dtype)[6:],
                             **guarded(fn, device)})
    return rows


def _fmt(x, spec=".2f") -> str:
    return "—" if x is None else format(x, spec)


def to_markdown(result: dict) -> str:
    dev = result["device"]
    smoke = result["smoke"]
    head = (f"### Benchmarks on {dev}" + (" — CPU smoke size: the code path only, NOT a benchmark" if smoke else "")
            + f" (torch {result['torch']})")
    out = [head, ""]
    sw = [r for r in result["rows"] if r["table"] == "sliding window"]
    if sw:
        what = ("ms of one call (smoke)" if smoke else
                "ms per call (CUDA events, median) / extra peak MiB (max_memory_allocated)")
        out += [f"Sliding-window attention, w = {sw[0]['w']} (window of {sw[0]['w'] // 2 + 1} tokens), "
                f"q, k, v of shape (1, {SW_H}, n, {SW_D}): {what}", "",
                "| dtype | n | sliding chunks | naive | SDPA band mask | for-loop | naive / chunks | SDPA / chunks |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for dtype in dict.fromkeys(r["dtype"] for r in sw):
            for n in dict.fromkeys(r["n"] for r in sw):
                by = {r["method"]: r for r in sw if r["dtype"] == dtype and r["n"] == n}

                def cell(m):
                    r = by.get(m)
                    if r is None:
                        return "—"
                    if r["ms"] is None:
                        return r.get("note", "—")
                    return f"{r['ms']:.2f}" + (f" / {r['mib']:.0f}" if r["mib"] is not None else "")

                c, nv, sd = (by.get(m, {}).get("ms") for m in ("sliding chunks", "naive", "SDPA band mask"))
                out.append(f"| {dtype} | {n} | {cell('sliding chunks')} | {cell('naive')} | {cell('SDPA band mask')} "
                           f"| {cell('for-loop')} | {_fmt(nv / c if c and nv else None, '.1f')}x "
                           f"| {_fmt(sd / c if c and sd else None, '.1f')}x |")
        out.append("")
    kv = [r for r in result["rows"] if r["table"] == "kv cache"]
    if kv:
        out += [f"KV cache: TinyDecoder({KV_CONFIG.n_layers} layers, d_model={KV_CONFIG.d_model}, "
                f"{KV_CONFIG.n_heads} heads), greedy decoding, batch 1", "",
                "| dtype | tokens | recompute tok/s | KV cache tok/s | speed-up | cached = recomputed |",
                "| --- | ---: | ---: | ---: | ---: | --- |"]
        for dtype in dict.fromkeys(r["dtype"] for r in kv):
            by = {r["method"]: r for r in kv if r["dtype"] == dtype}
            if "both" in by:
                out.append(f"| {dtype} | {by['both']['n']} | {by['both']['note']} | | | |")
                continue
            rc, kc = by["recompute"], by["KV cache"]
            out.append(f"| {dtype} | {rc['n']} | {rc['tok_s']:.0f} | {kc['tok_s']:.0f} | "
                       f"{kc['tok_s'] / rc['tok_s']:.1f}x | {kc['cached_equals_recomputed']} |")
        out.append("")
    cv = [r for r in result["rows"] if r["table"] == "convolution"]
    if cv:
        out += ["Convolution forward: the course's im2col `conv2d` vs `F.conv2d`: ms per call / extra peak MiB", "",
                "| dtype | layer | im2col conv2d | F.conv2d | im2col / F.conv2d |", "| --- | --- | ---: | ---: | ---: |"]
        for dtype in dict.fromkeys(r["dtype"] for r in cv):
            for layer in dict.fromkeys(r["layer"] for r in cv):
                pair = [r for r in cv if r["dtype"] == dtype and r["layer"] == layer]
                if len(pair) != 2:
                    continue
                a, b = pair

                def cell(r):
                    if r["ms"] is None:
                        return r.get("note", "—")
                    return f"{r['ms']:.3f}" + (f" / {r['mib']:.0f}" if r["mib"] is not None else "")
                ratio = a["ms"] / b["ms"] if a["ms"] and b["ms"] else None
                out.append(f"| {dtype} | {layer} | {cell(a)} | {cell(b)} | {_fmt(ratio, '.1f')}x |")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    parser.add_argument("--out", type=Path, default=Path("build/gpu-check"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.bench: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    result = {"device": name, "torch": torch.__version__, "smoke": device.type == "cpu", "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for table in (sliding_window_rows, kv_cache_rows, conv_rows):     # each table saved as soon as it is done
        t0 = time.perf_counter()
        result["rows"] += table(device, args.quick)
        print(f"gpu.bench: {table.__name__} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        result["markdown"] = to_markdown(result)
        (args.out / "bench.json").write_text(json.dumps(result, indent=1))
        (args.out / "bench.md").write_text(result["markdown"])
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
