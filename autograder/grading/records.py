"""The records a grading passes along, typed: what one submission is to be graded with (``Spec``), what one
graded cell came to (``CellResult``) and what one student's grading came to (``StudentResult``).

Each has one JSON form (``to_json()`` / ``from_json()``: plain dicts of str, numbers, lists), the only form in
which they cross a boundary: the spec file a worker process reads, the ``result.json`` it writes, the cache
in ``OUT/.cache``, and the arguments and return value of a Dask task.

A row's ``status`` is what ``details.csv`` shows (``STATUSES``). Whether the grading itself went wrong, as
opposed to the student's code, is said once per student by ``StudentResult.outcome`` (``GRADED``,
``TIMED_OUT``, ``GRADER_FAILED``), never read back from a message.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from autograder.course.source import GradedCell

NEEDS_MANUAL = "needs manual grade"     # the status of a cell a person grades (nbgrader's needs_manual_grade)
GRADED_BY_HAND = "graded by hand"       # details.csv's status of an answer a grader scored
STATUSES = ("passed", "failed", "error", "timeout", "missing", NEEDS_MANUAL, GRADED_BY_HAND)

GRADED = "graded"                       # the worker finished: every row says what the student's work earned
TIMED_OUT = "timed out"                 # stopped at the submission's budget; scored from the records it left
GRADER_FAILED = "grader failed"         # the grader (or the machines running it) failed: not the student's doing
OUTCOMES = (GRADED, TIMED_OUT, GRADER_FAILED)


class _Record:
    """``to_json``/``from_json`` for a dataclass of JSON values; ``record["field"]`` reads a field, as the
    CSV columns and the earlier dict form name them (tests and notebooks of instructors read them so)."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)} and not isinstance(getattr(type(self), key, None), property):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default


@dataclass
class CellResult(_Record):
    """One graded cell of one student: a row of ``details.csv``."""
    notebook: str
    grade_id: str
    max_score: float
    score: float = 0.0
    status: str = "error"
    message: str = ""
    kind: str = "test"          # "test" (autograded code) or "manual" (an answer a person grades)

    @classmethod
    def of(cls, cell: GradedCell, **values) -> "CellResult":
        return cls(notebook=cell.notebook, grade_id=cell.grade_id, max_score=cell.max_score, kind=cell.kind, **values)


@dataclass
class StudentResult(_Record):
    """What grading one student came to: a row per graded cell, and how the grading itself went."""
    student: str
    rows: list[CellResult]
    outcome: str = GRADED
    seconds: float = 0.0
    log: str = ""
    run: str = ""
    root: str = ""                                       # the worker's course root (this machine's; removed)
    notebooks: dict[str, str] = field(default_factory=dict)   # {notebook: "graded" or why it was not}
    static: dict[str, str] = field(default_factory=dict)      # {exercise: forbidden shortcut found}
    cached: bool = False                                 # reused from OUT/.cache, not graded this run
    late: bool = False                                   # the LMS marked the submission late
    machine: str = ""                                    # on a cluster: the machine that graded it
    pages: dict[str, str] | None = None                  # on a cluster: {notebook: feedback page}
    autograded: dict[str, str] | None = None             # on a cluster: {notebook: autograded notebook}

    def __post_init__(self):
        self.rows = [r if isinstance(r, CellResult) else CellResult.from_json(r) for r in self.rows]
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")

    @property
    def score(self) -> float:
        return sum(r.score for r in self.rows)

    @property
    def max_score(self) -> float:
        return sum(r.max_score for r in self.rows)

    @property
    def timed_out(self) -> bool:
        return self.outcome == TIMED_OUT


@dataclass
class Spec(_Record):
    """Everything a worker process needs to grade one submission (written as ``ROOT/../<student>.json``)."""
    student: str
    assignment: str
    root: str                       # the student's private course root
    submission: str                 # the folder of the student's notebooks (only read)
    gradebook: str                  # the template gradebook the root starts from
    cells: list[GradedCell]
    repo: str
    bundle: str                     # the students' course_lib, cut at the assignment's release
    shipped_from: str               # the released files beside the notebooks
    cell_timeout: int
    budget: float                   # seconds for the whole submission
    run: str = "run"
    tier: str | None = None         # the sandbox tier, None: none
    memory_mb: int = 6144
    max_pids: int = 256
    skip_illustrative: bool = True
    cell_limits: dict = field(default_factory=dict)
    limit_rule: str = ""
    home: str | None = None         # uid tier: the kernel's own folder, uid and gid
    uid: int | None = None
    gid: int | None = None
    pythonpath: str | None = None   # a cluster task: the grader code shipped with it
    # filled in by the worker while it grades
    unreadable: dict[str, str] = field(default_factory=dict)   # {notebook: why it could not be read}
    failed: dict[str, str] = field(default_factory=dict)       # {notebook: why nbgrader did not grade it}
    static: dict[str, str] = field(default_factory=dict)       # {exercise: forbidden shortcut found}
    timed_out: bool = False

    def __post_init__(self):
        self.cells = [c if isinstance(c, GradedCell) else GradedCell(**{**c, "exercises": tuple(c.get("exercises", ()))})
                      for c in self.cells]

    @property
    def sandbox(self) -> bool:
        return self.tier is not None
