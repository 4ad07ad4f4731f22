"""The options of a grading run, in one frozen record (``python -m autograder grade``'s flags)."""
from __future__ import annotations

from dataclasses import dataclass

from autograder.course.source import UsageError


@dataclass(frozen=True)
class Options:
    workers: int = 1                          # submissions graded at a time here
    cell_timeout: int | None = None           # seconds per cell (None: nbgrader_config.py's Execute.timeout)
    submission_timeout: float = 600.0         # each submission's budget, all cells together
    sandbox: str = "auto"                     # auto | on | off | bwrap | uid
    memory_mb: int = 6144                     # each kernel's memory cap
    max_pids: int = 256                       # each kernel's cap on processes and threads
    run_illustrative: bool = False            # run the cells the instructor tagged illustrative
    test_cell_timeout: float | None = None    # one limit for every test cell, instead of the measured ones
    time_factor: float | None = None          # a test cell's limit: factor x the reference's seconds ...
    time_floor: float | None = None           # ... and at least this
    force: bool = False                       # regrade every submission, cached or not
    scheduler: str | None = None              # a Dask scheduler's address: grade on that cluster
    db: str | None = None                     # the class gradebook's URL (default: OUT/gradebook.db)
    quiet: bool = False                       # print nothing but errors

    def __post_init__(self):
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        for name, value in (("--test-cell-timeout", self.test_cell_timeout), ("--time-factor", self.time_factor),
                            ("--time-floor", self.time_floor)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be positive, got {value:g}")

    def of_the_kernels(self, cell_timeout: int, limits: dict, tier: str | None) -> dict:
        """What the graded kernels' results depend on (the cache's fingerprint holds it)."""
        return dict(cell_timeout=cell_timeout, limits=limits, budget=self.submission_timeout, tier=tier,
                    memory_mb=self.memory_mb, max_pids=self.max_pids, run_illustrative=self.run_illustrative)


def options(**settings) -> Options:
    """``Options(**settings)``, with a one-line UsageError for a name that is not an option."""
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown grading option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return Options(**settings)

