"""The class gradebook: nbgrader's own database, written by the grading process alone after the workers.

By default it is ``OUT/gradebook.db`` (SQLite, beside nbgrader's ``submitted/``, ``autograded/`` and
``feedback/``). With ``--db URL`` (any SQLAlchemy URL nbgrader accepts, e.g.
``postgresql://grader@db.example.edu/course``) it is that database: the one several teaching assistants
grade in at once through formgrader, where SQLite would lock.

Everything goes through nbgrader's ``Gradebook`` API, and the write is in place: when the assignment's
cells in the gradebook are those of the template (the release grading starts from), only submissions
change: a resubmitted or new student's submission is replaced (their manual grades go with it: they were
given to other answers), an unchanged student's keeps whatever people entered (formgrader, at the same
moment included), and a student no longer in the class is removed. When the cells differ (the first run,
or changed solutions), the assignment is made again from the template, and the manual grades and
comments of unchanged students are put back.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from autograder.course.source import UsageError
from autograder.grading.records import NEEDS_MANUAL


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:                          # noqa: BLE001  (not a URL at all: the check says so)
        return url.split("@")[-1]


URL_FILE = "gradebook.url"     # OUT/gradebook.url: the --db gradebook's URL, without its password


def without_password(url: str) -> str:
    """The URL as it may be written to a file: the driver finds the password elsewhere (PostgreSQL's
    ``PGPASSWORD`` or ``~/.pgpass``)."""
    from sqlalchemy.engine import make_url
    return make_url(url)._replace(password=None).render_as_string(hide_password=False)   # set() ignores None


def remember(out: Path, url: str | None) -> None:
    """Note in OUT where its gradebook is: ``OUT/gradebook.url`` for ``--db``'s, nothing for OUT's own."""
    note = Path(out) / URL_FILE
    if url is None:
        note.unlink(missing_ok=True)
    else:
        note.write_text(without_password(url) + "\n")


def url_of(out: Path, url: str | None = None) -> str:
    """The gradebook of a graded OUT: ``url`` when given, else the one grading noted, else OUT's own."""
    if url:
        return url
    note = Path(out) / URL_FILE
    if note.is_file():
        return note.read_text().strip()
    return sqlite_url(Path(out) / "gradebook.db")


@contextlib.contextmanager
def opened(url: str, course_id: str = "default_course"):
    from nbgrader.api import Gradebook
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # SQLAlchemy's SAWarning about nbgrader's own relationships
        with Gradebook(url, course_id=course_id) as gb:
            yield gb


def check(url: str) -> None:
    """Fail early, in one line, when ``url`` is not a gradebook this process can open and write."""
    from sqlalchemy.engine import make_url
    try:
        make_url(url)
    except Exception as e:                     # noqa: BLE001  (sqlalchemy.exc.ArgumentError and friends)
        raise UsageError(f"--db {url!r} is not a database URL (e.g. postgresql://user@host/db, sqlite:///path): {e}")
    try:
        with opened(url):
            pass
    except Exception as e:                     # noqa: BLE001  (a driver's OperationalError, a missing driver)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"cannot open the gradebook at {shown(url)}: {type(e).__name__}: {first}")


def _structure(gb, assignment: str) -> dict | None:
    """The assignment's notebooks and cells as nbgrader stores them (what generate_assignment wrote)."""
    from nbgrader.api import MissingEntry
    try:
        a = gb.find_assignment(assignment)
    except MissingEntry:
        return None
    nbs = {}
    for nb in a.notebooks:
        nbs[nb.name] = dict(
            kernelspec=nb.kernelspec,
            grade={c.name: dict(max_score=c.max_score, cell_type=c.cell_type) for c in nb.grade_cells},
            solution={c.name: {} for c in nb.solution_cells},
            source={c.name: dict(cell_type=c.cell_type, locked=c.locked, source=c.source, checksum=c.checksum)
                    for c in nb.source_cells},
            task={c.name: dict(max_score=c.max_score, cell_type=c.cell_type) for c in nb.task_cells})
    return dict(duedate=a.duedate, course_id=a.course_id, notebooks=nbs)


def _make(gb, assignment: str, structure: dict) -> None:
    gb.update_or_create_assignment(assignment, duedate=structure["duedate"])
    for name, nb in structure["notebooks"].items():
        gb.update_or_create_notebook(name, assignment, kernelspec=nb["kernelspec"])
        for kind, make in (("grade", gb.update_or_create_grade_cell), ("solution", gb.update_or_create_solution_cell),
                           ("source", gb.update_or_create_source_cell), ("task", gb.update_or_create_task_cell)):
            for cell, fields in nb[kind].items():
                make(cell, name, assignment, **fields)


def manual_grades(url: str, assignment: str, students: set[str]) -> tuple[dict, dict]:
    """What people entered in the gradebook (formgrader) for ``assignment``: {(student, notebook, cell):
    (manual score, extra credit)} and {(student, notebook, cell): manual comment}, for ``students``."""
    from nbgrader.api import MissingEntry
    grades, comments = {}, {}
    if not students:
        return grades, comments
    with opened(url) as gb:
        try:
            subs = gb.find_assignment(assignment).submissions
        except MissingEntry:
            return grades, comments
        for sub in subs:
            student = sub.student.id
            if student not in students:
                continue
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.manual_score is not None or g.extra_credit:
                        grades[(student, nb.name, g.name)] = (g.manual_score, g.extra_credit)
                for c in nb.comments:
                    if c.manual_comment:
                        comments[(student, nb.name, c.name)] = c.manual_comment
    return grades, comments


def write(url: str, results: list[dict], assignment: str, template: Path,
          keep_manual: set[str] = frozenset(), quiet: bool = True) -> None:
    """Put this run's class into the gradebook at ``url`` (see the module's docstring). ``template``: the
    gradebook nbgrader's generate_assignment made for the release graded. The manual grades and comments of
    every student in ``keep_manual`` (same submission bytes as when they were given) are kept; a
    resubmission's are dropped, and a line says whose."""
    from nbgrader.api import MissingEntry
    students = {r.student for r in results}
    with opened(sqlite_url(template)) as t:
        wanted = _structure(t, assignment)
    if wanted is None:
        raise RuntimeError(f"the template gradebook {template} does not know {assignment}")
    manual, comments = manual_grades(url, assignment, students)
    dropped = sorted({s for (s, _, _) in [*manual, *comments]} - set(keep_manual))
    if dropped and not quiet:
        print(f"manual grades dropped for {len(dropped)} resubmitted student(s): {', '.join(dropped)}")
    with opened(url, course_id=wanted["course_id"]) as gb:
        have = _structure(gb, assignment)
        remade = have is None or {k: v for k, v in have.items() if k != "duedate"} != \
            {k: v for k, v in wanted.items() if k != "duedate"}
        if remade:
            if have is not None:
                gb.remove_assignment(assignment)
            _make(gb, assignment, wanted)
        elif have["duedate"] != wanted["duedate"]:
            gb.update_or_create_assignment(assignment, duedate=wanted["duedate"])
        for sub in list(gb.find_assignment(assignment).submissions):       # left the class
            if sub.student.id not in students:
                gb.remove_submission(assignment, sub.student.id)
        for r in results:
            student = r.student
            kept = student in keep_manual
            gb.update_or_create_student(student)
            try:
                gb.find_submission(assignment, student)
                if not kept:                                           # new bytes: nothing of before applies
                    gb.remove_submission(assignment, student)
                    gb.add_submission(assignment, student)
            except MissingEntry:
                gb.add_submission(assignment, student)
            for row in r.rows:
                try:
                    g = gb.find_grade(row.grade_id, row.notebook, assignment, student)
                except MissingEntry:
                    continue
                if remade and kept and (student, row.notebook, row.grade_id) in manual:
                    g.manual_score, g.extra_credit = manual[(student, row.notebook, row.grade_id)]
                if row.status == NEEDS_MANUAL:            # nbgrader's way: no score until a person gives one
                    g.auto_score, g.needs_manual_grade = None, g.manual_score is None
                else:
                    g.auto_score, g.needs_manual_grade = row.score, False
            if remade and kept:
                for (s, notebook, name), text in comments.items():
                    if s == student:
                        try:
                            gb.find_comment(name, notebook, assignment, student).manual_comment = text
                        except MissingEntry:
                            pass
        gb.db.commit()
