"""The CUDA half of the project, prepared to run in one call on a lent GPU machine (issue 27).

* ``python -m gpu.wheels``: the wheelhouse ``build/gpu-wheels/`` (what grading needs beyond torch, for
  CPython 3.10-3.13 on x86-64 Linux), to carry to a machine that has torch and CUDA but no package registry;
* ``python -m gpu.check [--out DIR]``: environment, ``pytest -m cuda``, grading on CUDA, GPU benchmark rows;
  each part timed and bounded, a table at the end, JSON and markdown under ``--out``.
"""
