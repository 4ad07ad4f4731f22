"""Run every benchmark: ``python -m benchmarks [NAME ...]``."""
import importlib
import pkgutil
import sys

import benchmarks

names = sys.argv[1:] or [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")]
for name in names:
    module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
    module.main()
