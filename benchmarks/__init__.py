"""Speed and memory benchmarks (``make bench``): each module prints a table and draws a plot into
``build/bench/``. Timings are for reading, not for tests."""
