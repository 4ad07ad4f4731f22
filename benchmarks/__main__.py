"""Run every benchmark: ``python -m benchmarks [NAME ...]``."""
import importlib
import os
import pkgutil
import sys

import benchmarks


def main() -> None:
    if os.environ.get("BENCH_THREADS"):          # one thread gives steadier timings on a busy machine
        import torch
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))

    if sys.argv[1:2] and sys.argv[1] in ("mutation", "bench_mutation"):   # its arguments: exercises, assignments
        importlib.import_module("benchmarks.bench_mutation").main(sys.argv[2:])
        return
    names = sys.argv[1:] or [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")]
    for name in names:
        module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
        module.main()


if __name__ == "__main__":      # importable: grading processes (autograder.batch.warm) import it again
    main()
