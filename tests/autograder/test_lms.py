"""Grading submissions as LMSs deliver them (issue 13): a Canvas zip of five students with a late file and a
resubmission, a Gradescope export folder and nbgrader's exchange folder are each graded to the scores that
the same notebooks get in today's layout (the oracle: one grading of ``<student>/rope.ipynb``); the download
is only read; the resubmission graded is the latest upload; Canvas's import CSV holds the
scores under the Canvas ids. The layouts' file work alone is in test_layouts.py."""
import csv
import hashlib
import zipfile
from pathlib import Path

import pytest

from autograder.intake import samples as subs
from autograder.course.source import REPO
from autograder.outputs.grade import grade
from autograder.outputs.tables import is_final

pytestmark = pytest.mark.autograder

SAMPLES = REPO / "autograder" / "samples" / "rope"
OPTIONS = dict(workers=2, quiet=True, sandbox="off", submission_timeout=300)
CANVAS_ID = {"alice": "101", "bob": "102", "carol": "103", "blank": "104", "broken": "105"}


def _notebooks(tmp: Path) -> dict[str, bytes]:
    release, _ = subs.load("rope", "rope")
    blank = subs.write(release, tmp / "blank.ipynb").read_bytes()
    found = {name: (SAMPLES / name / "rope.ipynb").read_bytes() for name in ("alice", "bob", "carol")}
    return {**found, "blank": blank, "broken": b'{"cells": [ not json'}


def _scores(results) -> dict[str, float]:
    return {r["student"]: r["score"] for r in results}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        h.update(str(p).encode() + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lms")
    nbs = _notebooks(tmp)
    folders = tmp / "folders"
    for name, data in nbs.items():
        (folders / name).mkdir(parents=True)
        (folders / name / "rope.ipynb").write_bytes(data)
    canvas = tmp / "submissions.zip"           # Canvas's "Download Submissions"
    with zipfile.ZipFile(canvas, "w") as z:
        z.writestr("smithalice_101_9001_rope.ipynb", nbs["alice"])
        z.writestr("jonesbob_LATE_102_9002_rope.ipynb", nbs["bob"])
        z.writestr("leecarol_103_9003_rope.ipynb", nbs["broken"])          # first upload, replaced by:
        z.writestr("leecarol_103_9010_rope-1.ipynb", nbs["carol"])
        z.writestr("kimblank_104_9004_homework 4.ipynb", nbs["blank"])    # one notebook, whatever its name
        z.writestr("parkbroken_105_9005_rope.ipynb", nbs["broken"])
        z.writestr("parkbroken_105_9005_notes.pdf", b"%PDF-1.4")
    export = tmp / "assignment_1_export"       # Gradescope's "Export Submissions"
    for sub, name in (("submission_11", "alice"), ("submission_12", "bob")):
        (export / sub).mkdir(parents=True)
        (export / sub / "rope.ipynb").write_bytes(nbs[name])
    (export / "submission_metadata.yml").write_text(
        "submission_11:\n  :submitters:\n  - :name: Alice Smith\n    :sid: 'a-1'\n    :email: alice@example.edu\n"
        "  :created_at: 2026-11-30 10:00:00.000000000 Z\n  :score: 0.0\n"
        "submission_12:\n  :submitters:\n  - :name: Bob Jones\n    :sid: 'b-2'\n    :email: bob@example.edu\n"
        "  :created_at: 2026-11-30 11:00:00.000000000 Z\n  :score: 0.0\n")
    exchange = tmp / "course"                  # nbgrader's exchange, collected: submitted/<student>/<assignment>/
    for name in ("alice", "carol"):
        (exchange / "submitted" / name / "rope").mkdir(parents=True)
        (exchange / "submitted" / name / "rope" / "rope.ipynb").write_bytes(nbs[name])
        (exchange / "submitted" / name / "rope" / "timestamp.txt").write_text("2026-11-30 12:00:00.000000 UTC")
    before = {p: _digest(p) for p in (canvas, export, exchange)}
    runs = {kind: grade("rope", path, tmp / f"out-{kind}", **OPTIONS)
            for kind, path in (("folders", folders), ("canvas", canvas), ("gradescope", export),
                               ("exchange", exchange))}
    return dict(runs=runs, tmp=tmp, unchanged={p: _digest(p) == d for p, d in before.items()})


def test_a_canvas_zip_grades_like_the_same_notebooks_in_folders(graded):
    oracle = _scores(graded["runs"]["folders"])
    assert oracle["alice"] > oracle["carol"] > oracle["bob"] > oracle["blank"] == oracle["broken"] == 0
    canvas = _scores(graded["runs"]["canvas"])
    assert canvas == {CANVAS_ID[name]: score for name, score in oracle.items()}
    late = {r["student"] for r in graded["runs"]["canvas"] if r.get("late")}
    assert late == {"102"}


def test_the_latest_resubmission_is_graded_and_canvas_csv_has_the_ids(graded):
    oracle = _scores(graded["runs"]["folders"])
    assert _scores(graded["runs"]["canvas"])["103"] == oracle["carol"]      # not the broken first upload
    with open(graded["tmp"] / "out-canvas" / "canvas.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "rope"]
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) == graded["runs"]["canvas"][0]["max_score"]
    by_id = {r[1]: (r[0], float(r[5]) if r[5] else None) for r in rows[2:]}
    final = {r["student"]: is_final(r) for r in graded["runs"]["canvas"]}      # a total awaiting a grader: empty
    assert by_id["103"] == ("leecarol", oracle["carol"] if final["103"] else None)
    assert by_id["101"] == ("smithalice", oracle["alice"] if final["101"] else None)
    assert not final["101"] and final["105"]        # alice wrote the answer; broken's notebook is unreadable


def test_a_gradescope_export_and_the_exchange_grade_like_folders(graded):
    oracle = _scores(graded["runs"]["folders"])
    gradescope = graded["runs"]["gradescope"]
    assert _scores(gradescope) == {"a-1": oracle["alice"], "b-2": oracle["bob"]}, [   # what went wrong, if anything
        (r["student"], [(x["grade_id"], x["status"], x["message"]) for x in r["rows"]], r["log"][-3000:])
        for r in gradescope]
    assert _scores(graded["runs"]["exchange"]) == {"alice": oracle["alice"], "carol": oracle["carol"]}
    with open(graded["tmp"] / "out-gradescope" / "canvas.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["SIS User ID"]: r["Student"] for r in rows[1:]} == {"a-1": "Alice Smith", "b-2": "Bob Jones"}


def test_downloads_are_only_read(graded):
    assert all(graded["unchanged"].values()), graded["unchanged"]
    assert not any(p.name in ("root", "102") for p in (graded["tmp"] / "course").rglob("*"))

