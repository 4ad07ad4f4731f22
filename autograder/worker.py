"""Grade one student's submission in a private course root: ``python -m autograder.worker SPEC.json``.

The parent (``autograder.grade``) runs one such process per student, several at a time, each under a
wall-clock budget, and kills the whole process group (kernel included) when the budget runs out. This
process:

1. lays out ``ROOT/`` as an nbgrader course: the assignment's source, a copy of the template gradebook,
   and ``submitted/<student>/<assignment>/`` with a *copy* of each readable notebook (the student's
   files are only read);
2. runs nbgrader's autograde (which restores deleted or altered test cells, executes the notebook with a
   per-cell timeout, and records the scores) and generate_feedback (through ``SanitizeHiddenTests``);
3. writes ``ROOT/result.json``: one row per graded cell with score, status and a one-line message.
"""
from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

import nbformat

from .course import GradedCell, REPO, copy_source, nbgrader_api, nbgrader_config

TIMEOUT_ERRORS = {"CellTimeoutError", "KeyboardInterrupt", "TimeoutError", "DeadKernelError"}


def read_submission(path: Path) -> tuple[object | None, str]:
    """(notebook, "") if ``path`` is a readable notebook, else (None, one-line reason)."""
    if not path.exists():
        return None, "notebook not submitted"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # invalid JSON, not a notebook, wrong schema
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"not a readable notebook ({type(e).__name__}: {first[:160]})"
    return nb, ""


def cell_status(cell) -> tuple[str, str]:
    """(status, message) of an executed test cell, from its outputs."""
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return "error", "this cell did not run"
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            ename, evalue = out.get("ename", "Error"), (out.get("evalue") or "").strip()
            first = evalue.splitlines()[0] if evalue else ""
            if ename in TIMEOUT_ERRORS:
                return "timeout", f"{ename}: stopped after the per-cell time limit"
            status = "failed" if ename == "AssertionError" else "error"
            return status, f"{ename}: {first}" if first else ename
    return "passed", ""


def grade(spec: dict) -> dict:
    root = Path(spec["root"])
    student, assignment = spec["student"], spec["assignment"]
    repo = Path(spec.get("repo", REPO))
    cells = [GradedCell(**c) for c in spec["cells"]]
    notebooks = sorted({c.notebook for c in cells})
    rows: dict[tuple[str, str], dict] = {
        (c.notebook, c.grade_id): dict(notebook=c.notebook, grade_id=c.grade_id, score=0.0,
                                       max_score=c.max_score, status="error", message="")
        for c in cells
    }
    result = {"student": student, "notebooks": {}, "rows": [], "log": ""}

    # 1. the course root
    copy_source(assignment, root, repo)
    shutil.copy(spec["gradebook"], root / "gradebook.db")
    submitted = root / "submitted" / student / assignment
    submitted.mkdir(parents=True)
    readable = []
    for name in notebooks:
        nb, why = read_submission(Path(spec["submission"]) / f"{name}.ipynb")
        result["notebooks"][name] = why or "graded"
        if nb is None:
            status = "missing" if why == "notebook not submitted" else "error"
            for row in rows.values():
                if row["notebook"] == name:
                    row.update(status=status, message=why)
            continue
        shutil.copyfile(Path(spec["submission"]) / f"{name}.ipynb", submitted / f"{name}.ipynb")
        readable.append(name)

    # 2. nbgrader autograde + feedback
    if readable:
        api = nbgrader_api(nbgrader_config(root, repo, Execute__timeout=spec["cell_timeout"]))
        auto = api.autograde(assignment, student, force=True, create=True)
        result["log"] += auto.get("log", "") + (auto.get("error") or "")
        if auto["success"]:
            fb = api.generate_feedback(assignment, student, force=True)
            result["log"] += fb.get("log", "") + (fb.get("error") or "")
            _read_scores(root, assignment, student, readable, rows)
        else:
            for row in rows.values():
                if row["notebook"] in readable:
                    row.update(status="error", message="nbgrader could not grade this notebook (see the log)")

    result["rows"] = list(rows.values())
    return result


def _read_scores(root: Path, assignment: str, student: str, readable: list[str], rows: dict) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for name in readable:
            try:
                sub = gb.find_submission_notebook(name, assignment, student)
            except MissingEntry:
                continue
            scores = {g.name: (g.score, g.max_score) for g in sub.grades}
            graded = root / "autograded" / student / assignment / f"{name}.ipynb"
            nb = nbformat.read(graded, as_version=4) if graded.exists() else None
            by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in (nb.cells if nb else [])}
            for (nbname, grade_id), row in rows.items():
                if nbname != name:
                    continue
                score, _ = scores.get(grade_id, (0.0, row["max_score"]))
                row["score"] = float(score or 0.0)
                cell = by_id.get(grade_id)
                if cell is None:
                    row.update(status="error", message="graded cell not found in the autograded notebook")
                    continue
                status, message = cell_status(cell)
                if status == "passed" and row["score"] < row["max_score"]:
                    status, message = "failed", "the test cell ran without an error but nbgrader gave less than full marks"
                if "was missing from the submission" in cell.source:
                    message = "test cell was deleted and has been restored; " + message if message else \
                        "test cell was deleted and has been restored"
                row.update(status=status, message=message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["root"]) / "result.json"
    try:
        result = grade(spec)
    except Exception:
        result = {"student": spec["student"], "fatal": traceback.format_exc(), "rows": []}
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
