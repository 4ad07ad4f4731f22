"""The course's release schedule (``schedule.toml`` beside ``nbgrader_config.py``), checked against the code.

    timezone = "America/New_York"      # dates without an offset are in this zone (default UTC)

    [[assignment]]                     # in release order
    name = "rope"
    release = 2027-01-18T09:00:00      # a date alone means 00:00 of that day
    due = 2027-01-24T23:59:00          # a date alone means 23:59:59 of that day

What it decides:

* the student bundle (``release --bundle OUT [ASSIGNMENT | --as-of DATE]``): as of a moment, the
  notebooks released by then, and a ``course_lib`` without the exercises of every assignment not yet due
  (those already due keep their references: their solutions are public after the deadline);
* grading: a graded kernel imports the bundle cut at the graded assignment's release, the very
  ``course_lib`` its students had (``cut_for_grading``);
* nbgrader's due dates: the grader writes each ``due`` into the gradebook, where nbgrader's
  ``AssignLatePenalties`` reads it.

``check`` refuses, in one line, a schedule that the code contradicts (``autograder.course.dependencies``):

* B *needs* A (B's notebook reaches one of A's removed reference bodies): A must be due when B is
  released, or B's notebook fails in its students' bundle;
* B *builds on* A (B's notebook uses the given code of a module that holds A's exercises: the KV cache,
  the window helpers): A must be released before B.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from autograder.course.source import REPO, UsageError, assignments

FILE = "schedule.toml"


@dataclass(frozen=True)
class Entry:
    name: str
    release: dt.datetime       # timezone-aware
    due: dt.datetime


@dataclass(frozen=True)
class Schedule:
    entries: tuple[Entry, ...]     # in release order
    timezone: dt.tzinfo
    path: Path

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise UsageError(f"{self.path.name} does not list assignment {name!r}")

    def released(self, when: dt.datetime) -> list[str]:
        return [e.name for e in self.entries if e.release <= when]

    def not_due(self, when: dt.datetime) -> list[str]:
        """Assignments whose exercises are still secret at ``when``: the bundle strips them."""
        return [e.name for e in self.entries if e.due > when]


# ------------------------------------------------------------------------------------------ reading
def _moment(value, tz: dt.tzinfo, what: str, end_of_day: bool) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value) if "T" in value or " " in value.strip() \
                else dt.date.fromisoformat(value)
        except ValueError:
            raise UsageError(f"{what}: {value!r} is not a date (YYYY-MM-DD) or date and time (YYYY-MM-DDTHH:MM)")
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(23, 59, 59) if end_of_day else dt.time(0, 0), tzinfo=tz)
    raise UsageError(f"{what}: expected a date or a date and time, got {value!r}")


def parse_as_of(text: str, schedule: Schedule) -> dt.datetime:
    """``--as-of``: a date (00:00 of that day) or a date and time, in the course's timezone."""
    return _moment(text, schedule.timezone, "--as-of", end_of_day=False)


def load(repo: Path = REPO) -> Schedule | None:
    """The schedule of the course at ``repo``, or None when it has no ``schedule.toml``."""
    path = Path(repo) / FILE
    if not path.is_file():
        return None
    try:
        import tomllib
    except ImportError:                                          # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError(f"{FILE} needs Python 3.11 or newer (tomllib), or `pip install tomli`")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{FILE}: not valid TOML: {str(e).splitlines()[0]}")
    unknown = set(data) - {"timezone", "assignment"}
    if unknown:
        raise UsageError(f"{FILE}: unknown key(s) {', '.join(sorted(unknown))} (expected timezone and [[assignment]])")
    try:
        tz = ZoneInfo(data.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise UsageError(f"{FILE}: unknown timezone {data.get('timezone')!r} (an IANA name such as 'Europe/Berlin')")
    rows = data.get("assignment", [])
    if not isinstance(rows, list) or not rows:
        raise UsageError(f"{FILE}: no [[assignment]] entries")
    entries = []
    for i, row in enumerate(rows, 1):
        where = f"{FILE}, assignment {i}"
        if not isinstance(row, dict) or set(row) != {"name", "release", "due"}:
            keys = sorted(row) if isinstance(row, dict) else row
            raise UsageError(f"{where}: needs exactly name, release and due (got {keys})")
        name = row["name"]
        if not isinstance(name, str):
            raise UsageError(f"{where}: name must be a string, got {name!r}")
        where = f"{FILE}, {name}"
        entries.append(Entry(name, _moment(row["release"], tz, f"{where}: release", end_of_day=False),
                             _moment(row["due"], tz, f"{where}: due", end_of_day=True)))
    return Schedule(tuple(entries), tz, path)


# ------------------------------------------------------------------------------------------ checking
def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def check(schedule: Schedule, repo: Path = REPO) -> None:
    """Raise ``UsageError`` (one line) when the schedule is malformed or contradicts the code."""
    from autograder.course import dependencies

    name = schedule.path.name
    known = assignments(repo)
    seen: set[str] = set()
    for e in schedule.entries:
        if e.name not in known:
            raise UsageError(f"{name}: unknown assignment {e.name!r} (solutions/ holds {', '.join(known)})")
        if e.name in seen:
            raise UsageError(f"{name}: {e.name} is listed twice")
        seen.add(e.name)
        if e.due <= e.release:
            raise UsageError(f"{name}: {e.name} is due ({_day(e.due)}) before it is released ({_day(e.release)})")
    missing = [a for a in known if a not in seen]
    if missing:
        raise UsageError(f"{name}: no release and due date for {', '.join(missing)}")
    for before, after in zip(schedule.entries, schedule.entries[1:]):
        if after.release < before.release:
            raise UsageError(f"{name}: assignments must be listed in release order: {after.name} "
                             f"({_day(after.release)}) is listed after {before.name} ({_day(before.release)})")
    order = {e.name: i for i, e in enumerate(schedule.entries)}
    for user, used in dependencies.builds_on(repo, schedule.names).items():
        for owner, use in used.items():
            if order[owner] > order[user]:
                raise UsageError(f"{name}: {user} is released before {owner}, which it builds on "
                                 f"({use.describe()}): release {owner} first")
    for user, needed in dependencies.dependencies(repo, schedule.names).items():
        for owner, use in needed.items():
            u, o = schedule.entry(user), schedule.entry(owner)
            if o.due > u.release:
                raise UsageError(f"{name}: {user} (released {_day(u.release)}) needs {owner}'s reference "
                                 f"{use.exercise_function} ({use.describe()}), but {owner} is due only "
                                 f"{_day(o.due)}: release {user} after {owner} is due")


def checked(repo: Path = REPO) -> Schedule | None:
    """The course's schedule, checked (None when the course has none)."""
    schedule = load(repo)
    if schedule is not None:
        check(schedule, repo)
    return schedule


# ------------------------------------------------------------------------------------------ cuts
@dataclass(frozen=True)
class Cut:
    """What students hold at one moment: the notebooks released, the assignments whose exercises are
    removed from ``course_lib`` (all not yet due), and that moment."""
    when: dt.datetime | None
    released: tuple[str, ...]
    stripped: tuple[str, ...]

    def describe(self) -> str:
        at = f"as of {_day(self.when)}" if self.when else "without a schedule"
        return (f"{at}: notebooks of {', '.join(self.released) or 'no assignment'}; exercises removed from "
                f"course_lib: {', '.join(self.stripped) or 'none'}")


def cut(repo: Path = REPO, *, assignment: str | None = None, as_of: dt.datetime | None = None,
        validate: bool = True) -> Cut:
    """The bundle cut at ``assignment``'s release, or at ``as_of`` (default: now); ``validate``: check the
    schedule against the code first (``check``).

    Without a ``schedule.toml``: the named assignment (or every one) with the exercises of *all*
    assignments removed, the safe choice when nothing says what is already public."""
    schedule = checked(repo) if validate else load(repo)
    if schedule is None:
        names = [assignment] if assignment else assignments(repo)
        return Cut(None, tuple(names), tuple(assignments(repo)))
    if assignment is not None and as_of is not None:
        raise UsageError("name an assignment or give --as-of, not both")
    when = schedule.entry(assignment).release if assignment else (as_of or dt.datetime.now(schedule.timezone))
    released = schedule.released(when)
    if not released:
        first = schedule.entries[0]
        raise UsageError(f"nothing is released as of {_day(when)}: the first release is {first.name} on "
                         f"{_day(first.release)} (name an assignment or give --as-of DATE)")
    return Cut(when, tuple(released), tuple(schedule.not_due(when)))


def cut_for_grading(assignment: str, repo: Path = REPO) -> Cut:
    """The course_lib a graded kernel imports: the students' own, cut at the graded assignment's release
    (the graded assignment's exercises are always removed, schedule or not). The schedule is not checked
    against the code here (``release`` and ``schedule`` do): grading reads only its dates."""
    schedule = load(repo)
    if schedule is None or assignment not in schedule.names:
        return Cut(None, (assignment,), (assignment,))
    c = cut(repo, assignment=assignment, validate=False)
    return Cut(c.when, c.released, tuple(dict.fromkeys((assignment, *c.stripped))))


def due_dates(repo: Path = REPO) -> dict[str, dt.datetime]:
    """{assignment: due date in UTC, naive} as nbgrader's gradebook stores it (empty without a schedule)."""
    schedule = load(repo)
    if schedule is None:
        return {}
    return {e.name: e.due.astimezone(dt.timezone.utc).replace(tzinfo=None) for e in schedule.entries}


def print_schedule(repo: Path = REPO, file=None) -> None:
    """The schedule as a table, with what the code says each notebook needs and builds on."""
    import sys

    from autograder.course import dependencies

    file = file or sys.stdout
    schedule = load(repo)
    if schedule is None:
        raise UsageError(f"no {FILE} in {repo}: every assignment is treated as released at once and none as due")
    check(schedule, repo)
    needs = dependencies.dependencies(repo, schedule.names)
    builds = dependencies.builds_on(repo, schedule.names)
    width = max(len(n) for n in schedule.names)
    print(f"{'assignment':<{width}}  {'release':<16}  {'due':<16}  needs (due before release) / builds on (released before)",
          file=file)
    for e in schedule.entries:
        hard = ", ".join(needs[e.name]) or "-"
        soft = ", ".join(a for a in builds[e.name] if a not in needs[e.name]) or "-"
        print(f"{e.name:<{width}}  {_day(e.release):<16}  {_day(e.due):<16}  {hard} / {soft}", file=file)
    print(f"\n{schedule.path.name} ({schedule.timezone}): the order respects every dependency found in the code", file=file)
    for user in schedule.names:
        for owner, use in {**builds[user], **needs[user]}.items():
            kind = "needs" if owner in needs[user] else "builds on"
            print(f"  {user} {kind} {owner}: {use.describe()}", file=file)
