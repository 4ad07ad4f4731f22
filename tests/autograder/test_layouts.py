"""Submissions as LMSs deliver them (autograder.intake.layouts): Canvas downloads, Gradescope exports, nbgrader's
submitted/ and today's student folders, each turned into <student>/<notebook>.ipynb with the bytes unchanged
and the source never written; hostile zips refused in one line; grades in Canvas's import form. Pure file
work on copies of the demo's sample notebooks: no grading."""
import csv
import hashlib
import stat
import zipfile
from pathlib import Path

import pytest

from autograder.intake import layouts
from autograder.course.source import REPO, UsageError
from autograder.intake.layouts import detect, normalize, write_canvas_csv

pytestmark = pytest.mark.autograder

SAMPLES = REPO / "autograder" / "samples" / "rope"
ALICE, BOB, CAROL = ((SAMPLES / name / "rope.ipynb").read_bytes() for name in ("alice", "bob", "carol"))
DAN, EVE = ALICE + b"\n", BOB + b"\n"          # two more submissions, byte-distinct

CANVAS = {
    "doejane_12345_678901_rope.ipynb": ALICE,
    "smithbob_LATE_22222_678902_rope.ipynb": BOB,                 # late
    "leecarol_33333_678903_rope.ipynb": CAROL,                    # handed in, then again:
    "leecarol_33333_678950_rope-1.ipynb": DAN,                    # Canvas renamed the second upload
    "kimdan_44444_678904_My RoPE homework (1).ipynb": DAN,        # one notebook, whatever its name
    "parkeve_55555_678905_rope.ipynb": EVE,
    "parkeve_55555_678905_report.pdf": b"%PDF-1.4 not a notebook",
}


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    items = sorted(path.rglob("*")) if path.is_dir() else [path]
    for p in items:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def layout_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text
    return text


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "scratch").mkdir()
    return tmp_path / "scratch"


def check_canvas(layout):
    assert layout.kind == "canvas"
    assert layout_of(layout.root) == {"12345/rope.ipynb": ALICE, "22222/rope.ipynb": BOB, "33333/rope.ipynb": DAN,
                                      "44444/rope.ipynb": DAN, "55555/rope.ipynb": EVE}
    assert layout.late == {"22222"}
    assert layout.names == {"12345": "doejane", "22222": "smithbob", "33333": "leecarol", "44444": "kimdan",
                            "55555": "parkeve"}
    duplicate = [n for n in layout.notes if "33333" in n and "kept" in n]
    assert len(duplicate) == 1
    assert "kept leecarol_33333_678950_rope-1.ipynb, dropped leecarol_33333_678903_rope.ipynb" in duplicate[0]
    assert any("parkeve_55555_678905_report.pdf" in n and "not a notebook" in n for n in layout.notes)
    assert any("late" in n and "22222" in n for n in layout.notes)
    assert all("\n" not in n for n in layout.notes)


def test_canvas_zip(tmp_path, scratch):
    download = write_zip(tmp_path / "submissions.zip", CANVAS)
    before = tree_hash(download)
    assert detect(download) == "canvas"
    layout = normalize(download, "rope", ["rope"], scratch)
    check_canvas(layout)
    assert layout.root.parent == scratch
    assert tree_hash(download) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch", "submissions.zip"]


def test_canvas_folder(tmp_path, scratch):
    download = write_tree(tmp_path / "submissions", CANVAS)
    before = tree_hash(download)
    assert detect(download) == "canvas"
    check_canvas(normalize(download, "rope", ["rope"], scratch))
    assert tree_hash(download) == before


def test_canvas_zip_of_its_folder(tmp_path, scratch):
    download = write_zip(tmp_path / "submissions.zip", {f"Homework 3/{k}": v for k, v in CANVAS.items()}
                         | {"__MACOSX/Homework 3/._doejane_12345_678901_rope.ipynb": b"junk"})
    check_canvas(normalize(download, "rope", ["rope"], scratch))


GRADESCOPE_METADATA = """\
submission_111:
  :submitters:
  - :name: Alice Liddell
    :sid: '100'
    :email: alice@example.edu
  :created_at: 2027-01-20 10:00:00.123456789 -05:00
  :score: 0.0
  :status: processed
  :history: []
submission_114:
  :submitters:
  - :name: Alice Liddell
    :sid: '100'
    :email: alice@example.edu
  :created_at: '2027-01-21 09:00:00.000000000 Z'
  :history: []
submission_112:
  :submitters:
  - :name: Bob Jones
    :email: bob@example.edu
  :created_at: 2027-01-20 11:00:00.000000000 -05:00
submission_113:
  :submitters:
  - :name: Carol Pair
    :sid: 12/34
  - :name: Dan Pair
    :sid: '300'
  :created_at: 2027-01-20 12:00:00.000000000 -05:00
"""

GRADESCOPE = {
    "submission_metadata.yml": GRADESCOPE_METADATA.encode(),
    "submission_111/rope.ipynb": ALICE,
    "submission_114/rope.ipynb": DAN,            # Alice again, a day later: kept
    "submission_112/notebooks/rope (1).ipynb": BOB,
    "submission_113/rope.ipynb": CAROL,          # a group of two
    "submission_113/notes.txt": b"our notes",
    "submission_115/rope.ipynb": EVE,            # no metadata
}


def check_gradescope(layout):
    assert layout.kind == "gradescope"
    assert layout_of(layout.root) == {"100/rope.ipynb": DAN, "bob@example.edu/rope.ipynb": BOB,
                                      "12_34/rope.ipynb": CAROL, "300/rope.ipynb": CAROL,
                                      "submission_115/rope.ipynb": EVE}
    assert layout.names == {"100": "Alice Liddell", "bob@example.edu": "Bob Jones", "12_34": "Carol Pair",
                            "300": "Dan Pair"}
    assert layout.late == set()
    notes = "\n".join(layout.notes)
    assert "kept submission_114/rope.ipynb, dropped submission_111/rope.ipynb" in notes
    assert "'12/34' is written '12_34'" in notes
    assert "submission_113 is a group submission of 2" in notes
    assert "submission_115 has no metadata" in notes
    assert "ignored submission_113/notes.txt" in notes


def test_gradescope_folder(tmp_path, scratch):
    export = write_tree(tmp_path / "assignment_9_export", GRADESCOPE)
    before = tree_hash(export)
    assert detect(export) == "gradescope"
    check_gradescope(normalize(export, "rope", ["rope"], scratch))
    assert tree_hash(export) == before


def test_gradescope_zip(tmp_path, scratch):
    export = write_zip(tmp_path / "export.zip", {f"assignment_9_export/{k}": v for k, v in GRADESCOPE.items()})
    assert detect(export) == "gradescope"
    check_gradescope(normalize(export, "rope", ["rope"], scratch))


def test_gradescope_metadata_per_folder(tmp_path, scratch):
    export = write_tree(tmp_path / "export", {
        "submission_7/submission_metadata.yml": b":submitters:\n- :name: Ann\n  :sid: '7007'\n",
        "submission_7/rope.ipynb": ALICE,
    })
    layout = normalize(export, "rope", ["rope"], scratch)
    assert layout.kind == "gradescope" and layout_of(layout.root) == {"7007/rope.ipynb": ALICE}
    assert layout.names == {"7007": "Ann"}


EXCHANGE = {
    "submitted/alice/rope/rope.ipynb": ALICE,
    "submitted/alice/rope/timestamp.txt": b"2027-01-20 10:00:00.000000 UTC",
    "submitted/alice/kv_cache/kv_cache.ipynb": b"{}",
    "submitted/bob/rope/rope.ipynb": BOB,
    "submitted/bob/rope/timestamp.txt": b"2027-01-21 10:00:00.000000 UTC",
    "submitted/carol/kv_cache/kv_cache.ipynb": b"{}",
    "source/rope/rope.ipynb": b"{}",
}


@pytest.mark.parametrize("where", ["course", "course/submitted"])
def test_exchange(tmp_path, scratch, where):
    course = write_tree(tmp_path / "course", EXCHANGE)
    before = tree_hash(course)
    assert detect(tmp_path / where) == "exchange"
    layout = normalize(tmp_path / where, "rope", ["rope"], scratch)
    assert layout.kind == "exchange"
    assert layout_of(layout.root) == {"alice/rope.ipynb": ALICE, "bob/rope.ipynb": BOB}
    assert any("carol has no folder rope" in n for n in layout.notes)
    assert tree_hash(course) == before


def test_folders_pass_through(tmp_path, scratch):
    assert detect(SAMPLES) == "folders"
    before = tree_hash(SAMPLES)
    layout = normalize(SAMPLES, "rope", ["rope"], scratch)
    assert layout.kind == "folders" and layout.root == SAMPLES and layout.notes == [] and layout.late == set()
    assert list(scratch.iterdir()) == [] and tree_hash(SAMPLES) == before


def test_folders_inside_one_folder(tmp_path, scratch):
    outer = write_tree(tmp_path / "dl", {"class/alice/rope.ipynb": ALICE, "class/bob/rope.ipynb": BOB})
    layout = normalize(outer, "rope", ["rope"], scratch)
    assert layout.kind == "folders" and layout.root == outer / "class" and list(scratch.iterdir()) == []
    one = write_tree(tmp_path / "one", {"alice/rope.ipynb": ALICE})
    assert normalize(one, "rope", ["rope"], scratch).root == one


def test_created_at_forms():
    utc = layouts.dt.timezone.utc
    when = layouts.dt.datetime(2027, 1, 21, 17, 0, 0, 123000, tzinfo=utc)
    for text in ("2027-01-21 09:00:00.123 -0800", "2027-01-21 09:00:00.123000000 -08:00",
                 "2027-01-21 17:00:00.123 Z", "2027-01-21T17:00:00.12300+00:00"):
        assert layouts._when(text) == when, text
    assert layouts._when("yesterday") is None and layouts._when(None) is None


def test_folders_zip(tmp_path, scratch):
    zipped = write_zip(tmp_path / "class.zip", {"class/alice/rope.ipynb": ALICE, "class/bob/rope.ipynb": BOB})
    layout = normalize(zipped, "rope", ["rope"], scratch)
    assert layout.kind == "folders" and layout_of(layout.root) == {"alice/rope.ipynb": ALICE, "bob/rope.ipynb": BOB}


def symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("doejane_12345_678901_rope.ipynb", ALICE)
        link = zipfile.ZipInfo("smithbob_22222_678902_rope.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    return path


def oversized_zip(path: Path) -> Path:
    """A small zip whose directory says its member is 4 GiB once unzipped."""
    write_zip(path, {"doejane_12345_678901_rope.ipynb": ALICE})
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    data[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make, says", [
    (lambda p: write_zip(p, {"doejane_12345_678901_rope.ipynb": ALICE, "../evil.ipynb": b"{}"}), "outside"),
    (lambda p: write_zip(p, {"/tmp/evil.ipynb": b"{}"}), "outside"),
    (symlink_zip, "symbolic link"),
    (oversized_zip, "more than the"),
    (lambda p: write_tree(p.parent, {p.name: b"PK\x03\x04 this is no zip"}) / p.name, "readable zip"),
    (lambda p: write_zip(p, {}), "no files"),
    (lambda p: write_zip(p, {"readme.txt": b"hello"}), "not a layout"),
], ids=["traversal", "absolute", "symlink", "over-cap", "broken", "empty", "unknown"])
def test_hostile_or_broken_zip(tmp_path, scratch, make, says):
    bad = make(tmp_path / "bad.zip")
    before = tree_hash(bad)
    for call in (lambda: detect(bad), lambda: normalize(bad, "rope", ["rope"], scratch)):
        with pytest.raises(UsageError) as e:
            call()
        text = one_line(e)
        assert says in text and str(bad) in text
    assert list(scratch.iterdir()) == [] and tree_hash(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "scratch"]


def test_zip_bomb_under_the_cap_of_members_and_bytes(tmp_path, scratch, monkeypatch):
    bomb = write_zip(tmp_path / "bomb.zip", {"doejane_12345_678901_rope.ipynb": b"0" * 3_000_000})
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(layouts, "MAX_BYTES", 1_000_000)
    with pytest.raises(UsageError) as e:
        normalize(bomb, "rope", ["rope"], scratch)
    assert "3000000 bytes once unzipped" in one_line(e)
    monkeypatch.setattr(layouts, "MAX_BYTES", 10_000_000)
    monkeypatch.setattr(layouts, "MAX_MEMBERS", 0)
    with pytest.raises(UsageError) as e:
        normalize(bomb, "rope", ["rope"], scratch)
    assert "members" in one_line(e)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("files, says", [({}, "no files"), ({"notes/readme.txt": b"hi"}, "not a layout"),
                                          ({"doejane_12345_678901_essay.pdf": b"%PDF"}, "without one notebook")])
def test_folder_without_submissions(tmp_path, scratch, files, says):
    folder = write_tree(tmp_path / "dl", files)
    folder.mkdir(exist_ok=True)
    with pytest.raises(UsageError) as e:
        normalize(folder, "rope", ["rope"], scratch)
    assert says in one_line(e) and str(folder) in str(e.value)


def test_missing_path(tmp_path, scratch):
    with pytest.raises(UsageError) as e:
        detect(tmp_path / "nowhere")
    assert "not found" in one_line(e)


def test_two_notebooks_are_matched_by_name(tmp_path, scratch):
    layout = normalize(write_tree(tmp_path / "dl", {
        "doejane_12345_678901_a.ipynb": ALICE, "doejane_12345_678901_b-1.ipynb": BOB,
        "doejane_12345_678901_scratch.ipynb": CAROL}), "two", ["a", "b"], scratch)
    assert layout_of(layout.root) == {"12345/a.ipynb": ALICE, "12345/b.ipynb": BOB}
    assert any("ignored doejane_12345_678901_scratch.ipynb" in n for n in layout.notes)


def test_write_canvas_csv(tmp_path):
    results = [dict(student="22222", score=7.5, max_score=10.0), dict(student="12345", score=10.0, max_score=10.0),
               dict(student="33333", score=3.333333, max_score=10.0)]
    out = tmp_path / "canvas.csv"
    write_canvas_csv(results, out, "rope", names={"12345": "doejane", "22222": "smithbob"})
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "rope"]
    assert rows[1] == ["Points Possible", "", "", "", "", "10"]
    assert rows[2:] == [["doejane", "12345", "", "", "", "10"], ["smithbob", "22222", "", "", "", "7.5"],
                        ["33333", "33333", "", "", "", "3.33"]]

    write_canvas_csv(results[:1], out, "Homework 3 (4821)", id_column="SIS Login ID")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["Student"] == "Points Possible" and rows[0]["Homework 3 (4821)"] == "10"
    assert rows[1] == {"Student": "22222", "ID": "", "SIS User ID": "", "SIS Login ID": "22222", "Section": "",
                       "Homework 3 (4821)": "7.5"}
    with pytest.raises(ValueError):
        write_canvas_csv(results, out, "rope", id_column="Email")
