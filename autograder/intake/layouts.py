"""Submissions as LMSs deliver them, turned into the layout grading reads: ``ROOT/<student>/<notebook>.ipynb``.

``detect(path)`` names the layout of a folder or zip; ``normalize(path, assignment, notebooks, scratch)``
copies the notebooks it finds into ``scratch/root`` (a folder the grader owns) and says what it did. The
source is only read: a zip is read member by member with ``zipfile`` (nothing is extracted anywhere), a
folder is read with ``shutil.copyfile``, and each notebook's bytes are copied exactly (the cache hashes them).

The layouts (each a folder, or a zip of it; a zip may hold it under one top folder):

``folders``     today's layout, ``alice/rope.ipynb``: a folder passes through unchanged (no copy).
``canvas``      Canvas's "Download Submissions": flat files ``lastnamefirstname_userid_submissionid_name``,
                ``doejane_12345_678901_rope.ipynb``; ``doejane_LATE_12345_678901_rope.ipynb`` when late; a
                file uploaded again is renamed by Canvas ``rope-1.ipynb``, ``rope-2.ipynb``. The student is
                the user id (``12345``), ``doejane`` its display name; files that are not notebooks (pdfs,
                images) are ignored with a note.
``gradescope``  Gradescope's "Export Submissions": ``submission_metadata.yml`` beside one folder per
                submission, ``submission_123456/rope.ipynb``; the metadata maps each folder's name to
                ``:submitters:`` (``:name:``, ``:sid:``, ``:email:``) and ``:created_at:``. The student is
                the sid, else the email, else the folder's name; a group submission is copied to each
                submitter. A folder holding its own ``submission_metadata.yml`` (one record) works too.
``exchange``    nbgrader's course layout, ``submitted/alice/rope/rope.ipynb`` (+ ``timestamp.txt``): DIR
                holds ``submitted/`` or is ``submitted/``; the assignment's folder of each student is taken.

An uploaded file is the notebook ``N`` when its name is ``N.ipynb``; else when it is once Canvas's ``-1``
or a browser's `` (1)`` is taken off (``rope-2.ipynb``, ``rope (1).ipynb``); else, when the assignment has
one notebook and the student's notebooks are all one upload (resubmissions included), whatever its name.
Two files for one student and notebook (resubmissions; two Gradescope submissions): the latest is kept
(Canvas: highest submission id, then ``-N``; Gradescope: latest ``:created_at:``) and a note says which.
Student ids become safe folder names (``[A-Za-z0-9._@+-]``, not starting with ``.`` or ``_``), with a note
when one changes. A zip is refused, in one line, when a member's path is absolute or climbs out (``..``),
is a link, is encrypted, or when it holds more than ``MAX_MEMBERS`` members or ``MAX_BYTES`` unzipped.

``write_canvas_csv`` writes grades for Canvas's gradebook import (Grades > Import): the columns
``Student, ID, SIS User ID, SIS Login ID, Section, <assignment>`` and a ``Points Possible`` row, the form
Canvas's own export has and its importer (``lib/gradebook_importer.rb``) reads: it needs ``Student`` and
``ID`` first and ``Section`` last of the student columns, matches a row by ``ID`` (Canvas user id), then by
SIS User ID or SIS Login ID, then by name, and an assignment column by its title or ``title (id)``.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from autograder.course.source import UsageError

KINDS = ("folders", "canvas", "gradescope", "exchange")
MAX_BYTES = 2 * 1024 ** 3        # a zip's members, unzipped, at most
MAX_MEMBERS = 50_000
METADATA = "submission_metadata.yml"
_JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints")
_CANVAS = re.compile(r"^(?P<name>[^_/]+)_(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<sub>\d+)_(?P<file>.+)$")
_AGAIN = re.compile(r"^(?P<base>.+?)(?:-(?P<dash>\d+)| \((?P<paren>\d+)\))$")   # rope-2, rope (1)
_GRADESCOPE_DIR = re.compile(r"^submission_(?P<id>\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


@dataclass
class Layout:
    kind: str                 # "folders" | "canvas" | "gradescope" | "exchange"
    root: Path                # a folder in today's layout: root/<student>/<notebook>.ipynb
    notes: list[str] = field(default_factory=list)   # one line each: duplicates, files ignored, late ones
    names: dict[str, str] = field(default_factory=dict)   # student id -> display name, where the LMS gives one
    late: set[str] = field(default_factory=set)       # student ids whose kept submission was late (Canvas)


# --- reading a folder or a zip the same way -------------------------------------------------------------

class _Source:
    """The files of a folder or a zip: relative POSIX paths (junk left out), read or copied one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.files = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                                if p.is_file() and not p.is_symlink())
        elif self.path.is_file():
            self.zip, self.files = _open_zip(self.path)
        else:
            raise UsageError(f"submissions not found: {self.path}")
        self.files = [f for f in self.files if not any(part in _JUNK or part.startswith("._")
                                                       for part in f.split("/"))]
        self.prefix = ""

    def within(self, prefix: str) -> None:
        """Look only under ``prefix`` (a folder, ``a/b``), as if it were the top."""
        prefix = prefix.strip("/") + "/"
        self.files = [f[len(prefix):] for f in self.files if f.startswith(prefix)]
        self.prefix += prefix

    def copy(self, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.zip is None:
            shutil.copyfile(self.path / (self.prefix + name), dest)
            return
        try:
            with self.zip.open(self.prefix + name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, OSError, RuntimeError) as e:
            raise UsageError(f"{self.path}: member {self.prefix + name} cannot be read ({e})")

    def read_text(self, name: str) -> str:
        if self.zip is None:
            return (self.path / (self.prefix + name)).read_text(encoding="utf-8", errors="replace")
        try:
            return self.zip.read(self.prefix + name).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, OSError, RuntimeError) as e:
            raise UsageError(f"{self.path}: member {self.prefix + name} cannot be read ({e})")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _open_zip(path: Path) -> tuple[zipfile.ZipFile, list[str]]:
    """The zip and its files' names, after refusing anything that could write or read outside its folder."""
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UsageError(f"{path}: neither a folder nor a readable zip file ({e})")
    try:
        if len(infos) > MAX_MEMBERS:
            raise UsageError(f"{path}: {len(infos)} members in the zip, more than the {MAX_MEMBERS} allowed")
        total = sum(i.file_size for i in infos)
        if total > MAX_BYTES:
            raise UsageError(f"{path}: {total} bytes once unzipped, more than the {MAX_BYTES} allowed")
        names, seen = [], set()
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                raise UsageError(f"{path}: zip member {info.filename!r} points outside the zip's folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UsageError(f"{path}: zip member {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise UsageError(f"{path}: zip member {info.filename!r} is encrypted")
            if info.is_dir():
                continue
            if name in seen:
                raise UsageError(f"{path}: zip member {info.filename!r} appears twice")
            seen.add(name)
            names.append(info.filename)
        return zf, sorted(names)
    except UsageError:
        zf.close()
        raise


# --- which layout ----------------------------------------------------------------------------------------

def _classify(files: list[str], top_name: str) -> tuple[str, str] | None:
    """(kind, the folder it starts in, '' for the top) from the files' relative paths, or None."""
    tops = {f.split("/", 1)[0] for f in files}
    if METADATA in files or any(_GRADESCOPE_DIR.match(f.split("/")[0]) and f.endswith("/" + METADATA)
                                for f in files):
        return "gradescope", ""
    if top_name == "submitted" and any(f.count("/") >= 2 for f in files):
        return "exchange", ""
    if any(f.startswith("submitted/") and f.count("/") >= 3 for f in files):
        return "exchange", "submitted"
    nested = any(f.count("/") == 1 and f.endswith(".ipynb") for f in files)
    if not nested and any("/" not in f and _CANVAS.match(f) for f in files):
        return "canvas", ""
    if len(tops) == 1 and all("/" in f for f in files):       # one folder around it (a zipped folder)
        (top,) = tops
        inner = _classify([f.split("/", 1)[1] for f in files], top)
        if inner is not None:
            return inner[0], f"{top}/{inner[1]}".rstrip("/")
    return ("folders", "") if nested else None


def _detect(source: _Source) -> tuple[str, str]:
    if not source.files:
        raise UsageError(f"{source.path}: no files in it (an empty download?)")
    found = _classify(source.files, source.path.name if source.zip is None else "")
    if found is None:
        raise UsageError(f"{source.path}: not a layout of submissions I know (student folders <student>/"
                         f"<notebook>.ipynb, a Canvas download, a Gradescope export or nbgrader's submitted/)")
    return found


def detect(path: Path) -> str:
    """The layout of ``path`` (a folder or a zip): one of ``KINDS``, or a one-line UsageError."""
    source = _Source(Path(path))
    try:
        return _detect(source)[0]
    finally:
        source.close()


# --- from uploaded names to notebooks, ids to folders ---------------------------------------------------

def _again(stem: str) -> tuple[str, int]:
    """The stem without a resubmission suffix, and its number: 'rope-2' -> ('rope', 2), 'rope' -> ('rope', 0)."""
    m = _AGAIN.match(stem)
    if not m:
        return stem, 0
    return m["base"], int(m["dash"] or m["paren"])


def _match(uploads: list[str], notebooks: list[str]) -> dict[str, str | None]:
    """Each uploaded notebook's file name -> the assignment's notebook it is, or None."""
    found: dict[str, str | None] = {}
    for name in uploads:
        stem = name[:-len(".ipynb")]
        found[name] = stem if stem in notebooks else (_again(stem)[0] if _again(stem)[0] in notebooks else None)
    if len(notebooks) == 1 and not any(found.values()) and len({_again(n[:-6])[0] for n in uploads}) == 1:
        found = dict.fromkeys(uploads, notebooks[0])      # one notebook, one upload: whatever its name
    return found


class _Ids:
    """Student ids made safe folder names, each distinct, with a note for each id that had to change."""

    def __init__(self, notes: list[str]):
        self.notes, self.safe, self.taken = notes, {}, set()

    def __call__(self, raw: str) -> str:
        if raw in self.safe:
            return self.safe[raw]
        safe = _UNSAFE.sub("_", raw.strip()).lstrip("._") or "student"
        base, n = safe, 1
        while safe in self.taken:
            n += 1
            safe = f"{base}-{n}"
        if safe != raw:
            self.notes.append(f"student id {raw!r} is written {safe!r} (not a safe folder name as it was)")
        self.safe[raw] = safe
        self.taken.add(safe)
        return safe


@dataclass
class _Candidate:
    student: str          # safe id
    notebook: str
    member: str           # where it is in the source
    order: tuple          # larger = later
    late: bool = False


def _keep_latest(candidates: list[_Candidate], kind: str, notes: list[str], shown) -> list[_Candidate]:
    """One candidate per (student, notebook): the latest; a note for each one dropped."""
    groups: dict[tuple[str, str], list[_Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.student, c.notebook), []).append(c)
    kept = []
    for (student, notebook), group in sorted(groups.items()):
        group.sort(key=lambda c: (c.order, c.member))
        kept.append(group[-1])
        if len(group) > 1:
            notes.append(f"{kind}: {shown(student)} handed in {notebook}.ipynb {len(group)} times: kept "
                         f"{group[-1].member}, dropped {', '.join(c.member for c in group[:-1])}")
    return kept


# --- the layouts ----------------------------------------------------------------------------------------

def _copy_all(source: _Source, kept: list[_Candidate], root: Path) -> None:
    for c in kept:
        source.copy(c.member, root / c.student / f"{c.notebook}.ipynb")


def _folders(source: _Source, layout: Layout) -> None:
    for name in source.files:
        parts = name.split("/")
        if len(parts) == 2 and parts[1].endswith(".ipynb") and not parts[0].startswith((".", "_")):
            source.copy(name, layout.root / parts[0] / parts[1])


def _canvas(source: _Source, notebooks: list[str], layout: Layout) -> None:
    ids = _Ids(layout.notes)
    uploads: dict[str, list[tuple[str, re.Match]]] = {}
    for name in source.files:
        m = _CANVAS.match(name) if "/" not in name else None
        if m is None:
            layout.notes.append(f"canvas: ignored {name} (not named lastnamefirstname_userid_submissionid_file)")
        elif not m["file"].endswith(".ipynb"):
            layout.notes.append(f"canvas: ignored {name} (not a notebook)")
        else:
            uploads.setdefault(m["user"], []).append((name, m))
    candidates = []
    for user, files in sorted(uploads.items()):
        student = ids(user)
        layout.names[student] = files[0][1]["name"]
        which = _match([m["file"] for _, m in files], notebooks)
        for name, m in files:
            notebook = which[m["file"]]
            if notebook is None:
                layout.notes.append(f"canvas: ignored {name} (no notebook of the assignment is named so: "
                                    f"{', '.join(n + '.ipynb' for n in notebooks)})")
                continue
            candidates.append(_Candidate(student, notebook, name, (int(m["sub"]), _again(m["file"][:-6])[1]),
                                         late=bool(m["late"])))
    kept = _keep_latest(candidates, "canvas", layout.notes, lambda s: f"{s} ({layout.names.get(s, '')})")
    for c in kept:
        if c.late:
            if c.student not in layout.late:
                layout.notes.append(f"canvas: {c.student} ({layout.names[c.student]}) handed in late: {c.member}")
            layout.late.add(c.student)
    _copy_all(source, kept, layout.root)


def _yaml(text: str, where: str):
    """Gradescope's metadata (YAML written by Ruby): ':submitters' and the like are plain string keys; an
    object tag such as ``!ruby/object:...`` is read as the mapping, list or string under it."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def untagged(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", untagged)
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: not readable YAML ({str(e).splitlines()[0]})")


def _when(value) -> dt.datetime | None:
    """A ``:created_at:`` as an aware datetime: PyYAML's datetime, or Ruby's '2024-01-31 23:59:00.123 -0800'."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if not isinstance(value, str):
        return None
    text = re.sub(r"\s*(Z|UTC)$", "+00:00", value.strip())
    text = re.sub(r"\.(\d+)", lambda m: "." + (m[1] + "00000")[:6], text)   # Python reads microseconds
    text = re.sub(r"\s+([+-]\d\d):?(\d\d)$", r"\1:\2", text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _gradescope(source: _Source, notebooks: list[str], layout: Layout) -> None:
    records: dict[str, dict] = {}
    if METADATA in source.files:
        data = _yaml(source.read_text(METADATA), f"{source.path}: {source.prefix}{METADATA}")
        if not isinstance(data, dict):
            raise UsageError(f"{source.path}: {source.prefix}{METADATA} is not a mapping of submission folders")
        records = {str(k): v for k, v in data.items() if isinstance(v, dict)}
    folders = sorted({f.split("/", 1)[0] for f in source.files if "/" in f})
    for folder in folders:
        if folder not in records and f"{folder}/{METADATA}" in source.files:
            data = _yaml(source.read_text(f"{folder}/{METADATA}"), f"{source.path}: {folder}/{METADATA}")
            if isinstance(data, dict) and ":submitters" not in data and len(data) == 1:
                data = next(iter(data.values()))
            if isinstance(data, dict):
                records[folder] = data
    for missing in sorted(set(records) - set(folders)):
        layout.notes.append(f"gradescope: {missing} is in {METADATA} but has no folder: nothing to grade")
    ids = _Ids(layout.notes)
    candidates = []
    for folder in folders:
        record = records.get(folder)
        submitters = [s for s in (record or {}).get(":submitters") or [] if isinstance(s, dict)]
        if record is None:
            layout.notes.append(f"gradescope: {folder} has no metadata: graded as student {folder}")
        if not submitters:
            submitters = [{}]
        elif len(submitters) > 1:
            layout.notes.append(f"gradescope: {folder} is a group submission of {len(submitters)}: "
                                f"each of them gets a copy")
        sub_id = int(m["id"]) if (m := _GRADESCOPE_DIR.match(folder)) else -1
        when = _when((record or {}).get(":created_at"))
        order = (when or dt.datetime.min.replace(tzinfo=dt.timezone.utc), sub_id)
        files = [f for f in source.files if f.startswith(folder + "/") and f.endswith(".ipynb")]
        others = [f for f in source.files if f.startswith(folder + "/") and not f.endswith((".ipynb", METADATA))]
        for other in others:
            layout.notes.append(f"gradescope: ignored {other} (not a notebook)")
        which = _match([f.rsplit("/", 1)[-1] for f in files], notebooks)
        for submitter in submitters:
            raw = next((str(submitter[k]).strip() for k in (":sid", ":email")
                        if submitter.get(k) not in (None, "")), folder)
            student = ids(raw)
            if submitter.get(":name"):
                layout.names[student] = str(submitter[":name"])
            for f in files:
                notebook = which[f.rsplit("/", 1)[-1]]
                if notebook is None:
                    layout.notes.append(f"gradescope: ignored {f} (no notebook of the assignment is named so: "
                                        f"{', '.join(n + '.ipynb' for n in notebooks)})")
                else:
                    exact = f.rsplit("/", 1)[-1] == f"{notebook}.ipynb"
                    candidates.append(_Candidate(student, notebook, f, order + (exact,)))
    kept = _keep_latest(candidates, "gradescope", layout.notes,
                        lambda s: f"{s} ({layout.names[s]})" if s in layout.names else s)
    _copy_all(source, kept, layout.root)


def _exchange(source: _Source, assignment: str, notebooks: list[str], layout: Layout) -> None:
    ids = _Ids(layout.notes)
    students = sorted({f.split("/", 1)[0] for f in source.files if "/" in f})
    candidates = []
    for raw in students:
        files = [f for f in source.files if f.startswith(f"{raw}/{assignment}/") and f.endswith(".ipynb")
                 and f.count("/") == 2]
        if not any(f.startswith(f"{raw}/{assignment}/") for f in source.files):
            layout.notes.append(f"exchange: {raw} has no folder {assignment}: nothing submitted")
            continue
        student = ids(raw)
        which = _match([f.rsplit("/", 1)[-1] for f in files], notebooks)
        for f in files:
            notebook = which[f.rsplit("/", 1)[-1]]
            if notebook is None:
                layout.notes.append(f"exchange: ignored {f} (not a notebook of {assignment})")
            else:
                candidates.append(_Candidate(student, notebook, f, (f.endswith(f"/{notebook}.ipynb"),)))
    _copy_all(source, _keep_latest(candidates, "exchange", layout.notes, str), layout.root)


def normalize(path: Path, assignment: str, notebooks: list[str], scratch: Path) -> Layout:
    """The submissions at ``path`` (any of ``KINDS``, a folder or a zip) in today's layout, copied under
    ``scratch`` (an empty folder of the caller's); a folder already in today's layout is returned as it is.
    ``notebooks``: the assignment's notebook names without ``.ipynb``."""
    path, scratch = Path(path), Path(scratch)
    source = _Source(path)
    try:
        kind, start = _detect(source)
        if kind == "folders" and source.zip is None:
            return Layout(kind, path / start if start else path)
        if start:
            source.within(start)
        root = scratch / "root"
        root.mkdir(parents=True, exist_ok=False)
        layout = Layout(kind, root)
        if kind == "folders":
            _folders(source, layout)
        elif kind == "canvas":
            _canvas(source, list(notebooks), layout)
        elif kind == "gradescope":
            _gradescope(source, list(notebooks), layout)
        else:
            _exchange(source, assignment, list(notebooks), layout)
    finally:
        source.close()
    if not any(root.iterdir()):
        raise UsageError(f"{path}: a {kind} layout without one notebook of {assignment} "
                         f"({', '.join(n + '.ipynb' for n in notebooks)})")
    return layout


# --- grades for Canvas ----------------------------------------------------------------------------------

CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def _points(value) -> str:
    if value is None or value == "":
        return ""
    value = round(float(value), 2)
    return str(int(value)) if value.is_integer() else str(value)


def write_canvas_csv(results: list[dict], path: Path, assignment: str, names: dict[str, str] | None = None,
                     *, id_column: str = "ID") -> None:
    """Grades in the form of Canvas's gradebook import: a header ``Student, ID, SIS User ID, SIS Login ID,
    Section, <assignment>``, a ``Points Possible`` row (the largest ``max_score``), then one row per result
    (dicts with ``student``, ``score``, ``max_score``), scores to two decimals as Canvas exports them.

    ``Student`` is the display name from ``names`` (else the id); the student id goes into ``id_column``:
    ``ID`` (the Canvas user id: a Canvas download's ids), ``SIS User ID`` (e.g. Gradescope's sid) or
    ``SIS Login ID`` (e.g. nbgrader's or JupyterHub's user names); ``Section`` stays empty (not read)."""
    if id_column not in CANVAS_COLUMNS[1:4]:
        raise ValueError(f"id_column must be one of {CANVAS_COLUMNS[1:4]}, not {id_column!r}")
    names = names or {}
    possible = max((float(r["max_score"]) for r in results if r.get("max_score") not in (None, "")), default=None)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CANVAS_COLUMNS + [assignment])
        w.writerow(["Points Possible", "", "", "", "", _points(possible)])
        for r in sorted(results, key=lambda r: str(r["student"])):
            row = dict.fromkeys(CANVAS_COLUMNS, "")
            row["Student"] = names.get(r["student"], r["student"])
            row[id_column] = r["student"]
            w.writerow([row[c] for c in CANVAS_COLUMNS] + [_points(r.get("score"))])
