"""The verdicts of ``course_lib.grading`` as the tests of the hidden cases read them (``test_hidden_*.py``,
``tests/notebooks/test_alternatives.py``): a function graded the way a student's is (``record`` then
``verify``), its one-line message checked."""
from __future__ import annotations

from course_lib import grading


def verdict(name: str, fn) -> grading.Verdict:
    return grading.verify(grading.record(name, fn))


def passes(name: str, fn) -> str:
    """``fn`` gets full marks on exercise ``name``; the passing line."""
    v = verdict(name, fn)
    assert v.passed, v.message
    return v.message


def fails(name: str, fn, *fragments: str, case: str | None = None) -> str:
    """``fn`` fails exercise ``name`` with one line naming a case (``case``, when given) and holding every
    fragment; the message."""
    v = verdict(name, fn)
    msg = v.message
    assert not v.passed, f"{name}: a wrong function passed: {msg}"
    assert "\n" not in msg and msg.startswith(f"{name}, case "), msg
    if case is not None:
        assert f"'{case}' on " in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def where(name: str, fragment: str) -> str:
    """"case k/n 'LABEL'", as a verdict names the one case of exercise ``name`` whose label holds ``fragment``."""
    cases = grading.exercises()[name].cases
    hits = [i for i, c in enumerate(cases) if fragment in c.name]
    assert len(hits) == 1, (fragment, [c.name for c in cases])
    return f"case {hits[0] + 1}/{len(cases)} '{cases[hits[0]].name}'"
