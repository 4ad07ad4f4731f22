"""The similarity measure on notebooks made for it (no grading): what the template gives is nobody's, a
renamed copy is a copy, a scaffold filled in the same short way is not, and hostile notebooks are read
without harm. The oracle is how each notebook was made."""
import json

import nbformat
import pytest

from autograder.outputs import similarity
from autograder.intake import samples as subs

pytestmark = pytest.mark.autograder

SCAFFOLD = '''def running_total(xs):
    """The sum of the positive entries of xs."""
    total = 0
    for x in xs:
        if x > 0:
            # YOUR CODE HERE
            raise NotImplementedError()
    return total
'''

OWN = '''def moving_average(values, window):
    """Averages of each window of values."""
    if not isinstance(window, int) or window <= 0:
        raise ValueError("window must be a positive integer")
    result = []
    running = 0.0
    for index, item in enumerate(values):
        running += item
        if index >= window:
            running -= values[index - window]
        if index >= window - 1:
            result.append(running / window)
    return result
'''

INDEPENDENT = '''def moving_average(values, window):
    """Averages of each window of values."""
    if window < 1:
        raise ValueError("bad window")
    sums = [sum(values[start:start + window]) for start in range(len(values) - window + 1)]
    return [s / float(window) for s in sums]
'''


def _nb(cells: dict[str, str]):
    nb = nbformat.v4.new_notebook()
    for gid, src in cells.items():
        c = nbformat.v4.new_code_cell(src)
        c.metadata["nbgrader"] = {"grade_id": gid, "solution": True, "grade": False, "locked": False,
                                  "schema_version": 3}
        nb.cells.append(c)
    return nb


def _class(tmp_path, students: dict[str, dict[str, str] | str], template: dict[str, str]):
    release = tmp_path / "release"
    subs.write(_nb(template), release / "hw.ipynb")
    out = tmp_path / "out"
    for name, cells in students.items():
        path = out / "submitted" / name / "hw" / "hw.ipynb"
        if isinstance(cells, str):                      # raw bytes of a broken notebook
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(cells)
        else:
            subs.write(_nb(cells), path)
    pairs = similarity.write(out, "hw", release, sorted(students))
    return {frozenset((p.a, p.b)): p for p in pairs}, pairs, out


def test_renamed_copy_is_found_and_independent_code_is_not(tmp_path):
    template = {"avg": 'def moving_average(values, window):\n    """Averages of each window of values."""\n'
                       "    # YOUR CODE HERE\n    raise NotImplementedError()\n"}
    renamed = subs.rename_locals(OWN) + "# my own work\n"
    assert "running_mine" in renamed and "running " not in renamed
    by, pairs, out = _class(tmp_path, {"alice": {"avg": OWN}, "bob": {"avg": renamed}, "carol": {"avg": INDEPENDENT},
                                       "dan": template, "erin": template}, template)
    top = pairs[0]
    assert {top.a, top.b} == {"alice", "bob"} and top.flagged
    assert top.similarity_a == pytest.approx(1.0) and top.similarity_b == pytest.approx(1.0)
    assert not any(p.flagged for p in pairs if "carol" in (p.a, p.b))
    assert frozenset(("dan", "erin")) not in by, "the template as released shares nothing once it is taken out"
    rows = list(__import__("csv").DictReader(open(out / "report" / "similarity.csv")))
    assert (rows[0]["student_a"], rows[0]["student_b"], rows[0]["flagged"]) == (top.a, top.b, "yes")


def test_filling_a_scaffold_the_same_way_is_not_flagged(tmp_path):
    fill = lambda line: {"sum": SCAFFOLD.replace("            # YOUR CODE HERE\n            raise NotImplementedError()",
                                                 f"            {line}")}
    by, pairs, _ = _class(tmp_path, {"ann": fill("total += x"), "ben": fill("total += x  # add it"),
                                     "cat": fill("total = total + x"), "dot": {"sum": SCAFFOLD}},
                          {"sum": SCAFFOLD})
    assert not [p for p in pairs if p.flagged], pairs


def test_hostile_notebooks_are_read_without_harm(tmp_path):
    template = {"avg": "# YOUR CODE HERE\nraise NotImplementedError()\n"}
    weird = nbformat.v4.new_notebook()
    weird.cells.append(nbformat.v4.new_code_cell("x = 1"))          # no nbgrader metadata: not a solution cell
    script = OWN + '    note = "</pre><script>alert(1)</script>"\n'
    students = {"ok": {"avg": script}, "copy": {"avg": script}, "invalid": '{"cells": [', "list": "[1, 2, 3]",
                "<b>odd&name": {"avg": script},
                "cells_not_list": json.dumps({"cells": {"a": 1}}), "huge": {"avg": OWN * 5000}}
    by, pairs, out = _class(tmp_path, students, template)
    assert by[frozenset(("copy", "ok"))].flagged
    page = (out / "report" / "similarity.html").read_text()
    assert "<script" not in page and "<b>" not in page, "a student's code or name is HTML on the page"
    assert "&lt;b&gt;odd&amp;name" in page and by[frozenset(("copy", "<b>odd&name"))].flagged
    for name in ("invalid", "list", "cells_not_list"):
        assert name in page.split("With no code of their own")[1].split("</p>")[0]
