"""Stage 6, a class's submissions graded: the options of a run (``options``), one worker process per
submission under a budget (``process``), forked warm from a preloaded server (``warm``, ``preload``),
several at a time or one Dask task each on a cluster (``run``, ``cluster``), unchanged submissions reused
from ``OUT/.cache`` (``cache``). Writes OUT's per-student folders and hands back one ``StudentResult`` each.

May import ``autograder.grading`` and the stages before it.
"""
