"""A Gradescope autograder for one assignment: ``python -m autograder.outputs.gradescope build ASSIGNMENT --out DIR``.

``build`` writes ``DIR/autograder.zip``, the file to upload on Gradescope's "Configure Autograder" page
(specification: https://gradescope-autograders.readthedocs.io/en/latest/specs/). It holds

* ``setup.sh``: run once, as root, when Gradescope builds the image (Ubuntu base image): installs
  Python (3.11 or newer, which the pins need), bubblewrap and acl (the sandbox's tiers), makes the
  virtual environment ``/opt/course-venv`` and installs the course's pinned packages
  (``requirements.txt``, written from ``pyproject.toml``; torch from PyTorch's CPU wheel index);
* ``run_autograder``: run once per submission, as root: ``python -m autograder.outputs.gradescope run`` in
  ``/autograder/source`` (``GRADESCOPE_PYTHON`` overrides the interpreter, ``GRADESCOPE_ROOT`` the
  ``/autograder`` folder, ``GRADESCOPE_SANDBOX`` grade's ``--sandbox``, default ``auto``); if that ever
  ends without a valid ``results.json``, it writes one itself;
* what grading this assignment reads and nothing else: ``solutions/<assignment>/`` (no other
  assignment's), ``autograder/`` (without its sample submissions), ``course_lib/``,
  ``nbgrader_config.py``, ``schedule.toml`` (its dates decide which references the graded kernel's
  ``course_lib`` lacks), this assignment's entry of ``timings.json`` (the test cells' limits),
  ``pyproject.toml``, and ``gradescope.json`` (the assignment and the options chosen at build time).
  No gradebook, no ``__pycache__``, no ``notebooks/``. Names sorted, timestamps fixed: the same sources
  give the same bytes.

``run`` (in the container) finds the uploaded notebook(s) in ``/autograder/submission`` (any file
names, any subfolders: a notebook is matched by its exact name, else, when the assignment has one
notebook and one was uploaded, that one), lays them out as ``DIR/<student>/<notebook>.ipynb``, grades
them with ``autograder.outputs.grade.grade`` (one worker, the sandbox's strongest tier: ``uid`` in Gradescope's
container) and writes ``/autograder/results/results.json``:

* one test per notebook, always visible: whether it was found and readable (so that a student learns
  at once that the upload went wrong);
* one test per graded cell: its points, ``passed``/``failed``, and the grader's one-line verdict,
  with the visibility chosen at build time (``after_published`` by default: verdicts of hidden tests
  are shown when the instructor publishes the grades);
* one test per notebook, with the same visibility, whose output (HTML) is the essential content of the
  feedback page ``grade`` writes: the score, a table of the cells' verdicts, and what the graded test
  cells and the answer cells printed (the visible tests' failures, the verdict lines, errors); never
  the hidden tests (``grade``'s feedback has their source and frames cut out; every line is checked
  again here against the hidden lines of the solution);
* top level: ``score``, ``execution_time``, a short ``output`` (what was received and graded; the score
  only when the verdicts are visible), ``stdout_visibility: hidden`` (the grading log goes to stdout,
  for instructors).

Whatever happens (nothing uploaded, several candidates, invalid JSON, the grader crashing) ``run``
writes a valid ``results.json``, with score 0 and a one-line message where nothing could be graded,
and returns 0. The uploaded files are only read.
"""
from __future__ import annotations

import argparse
import html
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import traceback
import zipfile
from html.parser import HTMLParser
from pathlib import Path

from autograder.grading.records import CellResult

REPO = Path(__file__).resolve().parents[2]         # the course; /autograder/source in the container
CONFIG = "gradescope.json"                           # written into the zip by build
VENV = "/opt/course-venv"                            # made by setup.sh; outside source/, which the uid tier closes
MIN_PYTHON = (3, 11)                                 # numpy 2.4 of the pins needs 3.11
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
SUBMISSION_TIMEOUT = 480.0                           # s; Gradescope's autograder timeout must exceed it (see build)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "wandb", ".nbgrader"}
MAX_FEEDBACK_CHARS = 60_000                          # per notebook, in the feedback test's output
MAX_CELL_LINES = 60
WRAP = "white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; max-width: 100%;"   # feedback's <pre>


# ================================================================================== build
SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu base image, when it builds the autograder.
# Made by `python -m autograder.outputs.gradescope build __ASSIGNMENT__` (autograder/outputs/gradescope.py): edit that, not this.
set -euo pipefail

SOURCE=/autograder/source
VENV=__VENV__
export DEBIAN_FRONTEND=noninteractive

# Python, and what the grading sandbox needs: bubblewrap (bwrap tier), setfacl (uid tier: the tier that
# works inside Gradescope's container), libseccomp (the uid tier's network filter).
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv bubblewrap acl libseccomp2

# The pinned packages need Python __MIN_PYTHON__ or newer (Ubuntu 22.04 has 3.10, and 3.11 in universe).
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (__MIN_TUPLE__))'; then
        python="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python" ]; then
    apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv
    python="$(command -v python3.11)"
fi
echo "setup.sh: $("$python" --version) at $python"

"$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
# The course's exact pins (pyproject.toml); torch as PyTorch's CPU wheel (no CUDA libraries to download).
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --extra-index-url __TORCH_INDEX__ \
    -r "$SOURCE/requirements.txt"

cd "$SOURCE"
PYTHONPATH="$SOURCE" "$VENV/bin/python" -c 'import torch, nbgrader, course_lib, autograder.outputs.grade; print("setup.sh: torch", torch.__version__, "nbgrader", nbgrader.__version__)'
# What the sandbox guarantees in this container (the uid tier is expected: Docker stops bubblewrap).
PYTHONPATH="$SOURCE" "$VENV/bin/python" -m autograder.sandbox check || echo "setup.sh: WARNING: no sandbox tier works here"
chmod 755 "$SOURCE/run_autograder"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this once per submission, as root. Made by `python -m autograder.outputs.gradescope build
# __ASSIGNMENT__` (autograder/outputs/gradescope.py): edit that, not this.
#   GRADESCOPE_ROOT    the autograder folder (default /autograder: source/, submission/, results/)
#   GRADESCOPE_PYTHON  the Python to grade with (default: the virtual environment setup.sh made)
#   GRADESCOPE_SANDBOX the sandbox tier, as grade's --sandbox (default auto: uid in Gradescope's container)
set -uo pipefail

root="${GRADESCOPE_ROOT:-/autograder}"
python="${GRADESCOPE_PYTHON:-__VENV__/bin/python}"
source_dir="$root/source"
results="$root/results/results.json"
export GRADESCOPE_ROOT="$root"
export PYTHONPATH="$source_dir"          # the zip's grader and course_lib, in every process of the run
export WANDB_MODE=disabled MPLBACKEND=Agg PYTHONUNBUFFERED=1

mkdir -p "$root/results"
rm -f "$results"
if cd "$source_dir"; then
    "$python" -m autograder.outputs.gradescope run || echo "run_autograder: the grader exited with status $?"
fi

# Never end without a results.json that Gradescope can read.
if ! "$python" -c 'import json, sys; json.load(open(sys.argv[1]))["score"]' "$results" >/dev/null 2>&1; then
    echo "run_autograder: no valid results.json was written; writing one with score 0"
    cat >"$results" <<'EOF'
{"score": 0, "output": "The autograder could not run on this submission, so nothing was graded (0 points). Please tell your instructor.", "output_format": "text", "stdout_visibility": "hidden", "tests": []}
EOF
fi
exit 0
"""


def _fill(template: str, assignment: str) -> str:
    return (template.replace("__ASSIGNMENT__", assignment).replace("__VENV__", VENV)
            .replace("__TORCH_INDEX__", TORCH_INDEX).replace("__MIN_PYTHON__", ".".join(map(str, MIN_PYTHON)))
            .replace("__MIN_TUPLE__", ", ".join(map(str, MIN_PYTHON))))


def setup_sh(assignment: str) -> str:
    return _fill(SETUP_SH, assignment)


def run_autograder_sh(assignment: str) -> str:
    return _fill(RUN_AUTOGRADER, assignment)


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:                                           # Python 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text())


NOT_FOR_GRADING = ("playwright", "jupyterhub")      # the course's own browser tests, and the hub it may run on


def requirements(repo: Path = REPO) -> str:
    """``requirements.txt``: the exact pins of ``pyproject.toml``'s ``[project] dependencies`` (but the
    browser driver of the course's own tests and JupyterHub, which grading never uses: 50 MB less in the image)."""
    deps = [d for d in _toml(Path(repo) / "pyproject.toml")["project"]["dependencies"]
            if not d.startswith(NOT_FOR_GRADING)]
    return ("# The course's pinned packages, from pyproject.toml (python -m autograder.outputs.gradescope build).\n"
            f"# setup.sh installs them with --extra-index-url {TORCH_INDEX} (torch's CPU wheel).\n"
            + "".join(f"{d}\n" for d in deps))


def _skipped(rel: Path) -> bool:
    return (any(part in SKIP_PARTS or part.startswith(".") for part in rel.parts)
            or rel.suffix in (".pyc", ".pyo", ".db", ".sqlite") or rel.name == "gradebook.db")


def _folder(files: dict[str, bytes], src: Path, prefix: str, skip=lambda rel: False) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and not path.is_symlink() and not _skipped(rel) and not skip(rel):
            files[f"{prefix}/{rel.as_posix()}"] = path.read_bytes()


def contents(assignment: str, repo: Path = REPO, visibility: str = "after_published",
             submission_timeout: float = SUBMISSION_TIMEOUT) -> dict[str, bytes]:
    """{name in the zip: bytes}: what ``build`` packs (see the module's docstring)."""
    from autograder.course.source import UsageError, check_assignment, graded_cells
    from autograder.course.timings import load as load_timings

    repo = Path(repo)
    check_assignment(assignment, repo)
    if visibility not in VISIBILITIES:
        raise UsageError(f"--visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    if not submission_timeout > 0:
        raise UsageError(f"--submission-timeout must be positive, got {submission_timeout:g}")
    cells = graded_cells(assignment, repo)
    if not cells:
        raise UsageError(f"{assignment} has no graded cell: nothing for Gradescope to grade")
    files: dict[str, bytes] = {}
    for name in ("autograder", "course_lib"):            # a course of its own may use this package's code
        src = repo / name if (repo / name).is_dir() else REPO / name
        _folder(files, src, name, skip=lambda rel, name=name: name == "autograder" and rel.parts[0] == "samples")
    _folder(files, repo / "solutions" / assignment, f"solutions/{assignment}")
    for name in ("nbgrader_config.py", "schedule.toml", "pyproject.toml"):
        if (repo / name).is_file():
            files[name] = (repo / name).read_bytes()
    entry = load_timings(repo).get(assignment)
    if entry:
        files["timings.json"] = (json.dumps({assignment: entry}, indent=1) + "\n").encode()
    files["requirements.txt"] = requirements(repo).encode()
    files["setup.sh"] = setup_sh(assignment).encode()
    files["run_autograder"] = run_autograder_sh(assignment).encode()
    config = dict(assignment=assignment, notebooks=sorted({c.notebook for c in cells}), visibility=visibility,
                  submission_timeout=float(submission_timeout), venv=VENV,
                  max_score=sum(c.max_score for c in cells if c.kind != "manual"))   # written answers: Gradescope's
    files[CONFIG] = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    return files


def build(assignment: str, out: Path, repo: Path = REPO, visibility: str = "after_published",
          submission_timeout: float = SUBMISSION_TIMEOUT) -> Path:
    """Write ``out/autograder.zip`` for ``assignment`` and return its path.

    ``visibility`` (hidden, after_due_date, after_published, visible) is that of the verdicts and of the
    feedback in Gradescope; ``submission_timeout`` the budget of one submission's grading, in seconds
    (Gradescope's own "autograder timeout" should leave a few minutes more: the grader's start and the
    template take about a minute). Raises ``UsageError`` (one line) on a bad assignment or option."""
    files = contents(assignment, repo, visibility, submission_timeout)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "autograder.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3                               # Unix: the mode bits below are read
            mode = 0o755 if name in ("setup.sh", "run_autograder") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, files[name], compresslevel=9)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, target)
    return target


# ================================================================================== run
def _uploaded(submission: Path) -> tuple[list[Path], list[str]]:
    """(the .ipynb files uploaded, regular files only, no links; every file's name relative to the
    submission folder), in a stable order."""
    notebooks, names = [], []
    if not submission.is_dir():
        return notebooks, names
    for folder, dirs, files in os.walk(submission, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__MACOSX", "__pycache__"))
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(submission).as_posix()
            names.append(rel)
            try:
                regular = stat.S_ISREG(path.lstat().st_mode)
            except OSError:
                regular = False
            if regular and name.lower().endswith(".ipynb") and not name.startswith("."):
                notebooks.append(path)
    notebooks.sort(key=lambda p: (len(p.relative_to(submission).parts), p.relative_to(submission).as_posix()))
    return notebooks, sorted(names)


def match(expected: list[str], uploaded: list[Path], submission: Path) -> tuple[dict[str, Path], list[str]]:
    """({notebook name: uploaded file}, notes for the student). A notebook is the uploaded file of its
    exact name (the shallowest, when several are); else, with one notebook expected and one uploaded,
    that one."""
    chosen, notes = {}, []
    rel = lambda p: p.relative_to(submission).as_posix()      # noqa: E731
    for name in expected:
        exact = [p for p in uploaded if p.name == f"{name}.ipynb"]
        if exact:
            chosen[name] = exact[0]
            if len(exact) > 1:
                notes.append(f"several files named {name}.ipynb were uploaded: graded {rel(exact[0])}")
    if len(expected) == 1 and not chosen and len(uploaded) == 1:
        chosen[expected[0]] = uploaded[0]
        notes.append(f"graded {rel(uploaded[0])} as {expected[0]}.ipynb")
    unused = [rel(p) for p in uploaded if p not in chosen.values()]
    if chosen and unused:
        notes.append(f"not graded: {', '.join(unused)}")
    return chosen, notes


def student_id(root: Path) -> str:
    """The submitter's Gradescope user id (``submission_metadata.json``), as a folder name; else "student"."""
    try:
        meta = json.loads((root / "submission_metadata.json").read_text())
        users = meta.get("users") or []
        raw = str(users[0].get("id") or users[0].get("email", "").split("@")[0]) if users else ""
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        raw = ""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64].lstrip("_-")
    return name or "student"


class _FeedbackCells(HTMLParser):
    """The cells of a feedback page (nbconvert's classic template, nbgrader's panels): for each cell, the
    nbgrader anchors in it (a grade id, ``comment-<grade id>``) and the text of its outputs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells: list[dict] = []
        self._divs: list[str] = []       # per open div: "cell", "output", or ""
        self._cell: dict | None = None
        self._out: list[str] | None = None
        self._error = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and self._cell is not None and attrs.get("name"):
            self._cell["anchors"].append(attrs["name"])
        if tag != "div":
            return
        classes = (attrs.get("class") or "").split()
        role = ""
        if "cell" in classes and self._cell is None:
            self._cell, role = {"anchors": [], "outputs": [], "errors": False}, "cell"
        elif "output_subarea" in classes and self._cell is not None and self._out is None:
            self._out, role, self._error = [], "output", "output_error" in classes
        self._divs.append(role)

    def handle_endtag(self, tag):
        if tag != "div" or not self._divs:
            return
        role = self._divs.pop()
        if role == "output" and self._out is not None and self._cell is not None:
            text = "".join(self._out).strip("\n")
            if text.strip():
                self._cell["outputs"].append(text)
                self._cell["errors"] |= self._error
            self._out = None
        elif role == "cell" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._out is not None:
            self._out.append(data)


def _hidden_lines(assignment: str, repo: Path) -> set[str]:
    import nbformat

    from autograder.grading.preprocessors import secrets_of
    found = set()
    for path in sorted((Path(repo) / "solutions" / assignment).glob("*.ipynb")):
        found |= secrets_of(nbformat.read(path, as_version=4))
    return found


def _scrub(text: str, secrets: set[str]) -> str:
    """``text`` without any line that quotes a hidden test's line (a second guard: grade's feedback and
    verdicts already have none)."""
    return "\n".join("[a line of the hidden tests was removed here]" if any(s in line for s in secrets) else line
                     for line in text.split("\n"))


def _clip(text: str, lines: int = MAX_CELL_LINES) -> str:
    parts = text.split("\n")
    if len(parts) <= lines:
        return text
    head, tail = lines // 3, lines - lines // 3
    return "\n".join(parts[:head] + [f"... ({len(parts) - lines} lines left out) ..."] + parts[-tail:])


def feedback_html(page: Path | None, notebook: str, rows: list[CellResult], cells_by_id: dict, uploaded_as: str,
                  secrets: set[str]) -> str:
    """The essential content of a feedback page, as HTML for Gradescope (which sanitizes it): the page's
    summary (``autograder.grading.summary``: per graded cell the exercise, points, status and one-line
    verdict; its styles inline, as Gradescope carries no style sheet), then what the graded test cells and
    the answer cells printed, wrapped within the width of Gradescope's page."""
    from autograder.grading.summary import render, rows_of_results
    score, total = sum(r.score for r in rows), sum(r.max_score for r in rows)
    esc = html.escape
    summary = rows_of_results(rows, cells_by_id, lambda text: _scrub(text, secrets))
    parts = [render(summary, f"{notebook}.ipynb", score, total, links=False, inline=True)]
    if uploaded_as != f"{notebook}.ipynb":
        parts.append(f"<p>(graded from your file <code>{esc(uploaded_as)}</code>)</p>")
    found = []
    if page is not None and page.is_file():
        parser = _FeedbackCells()
        try:
            parser.feed(page.read_text(errors="replace"))
            parser.close()
        except Exception:                        # a page we cannot read: the table above still stands
            pass
        graded = {r.grade_id for r in rows}
        for c in parser.cells:
            ids = [a for a in c["anchors"] if a in graded]
            answer = [a[len("comment-"):] for a in c["anchors"] if a.startswith("comment-")]
            if ids and c["outputs"]:
                found.append((f"test cell <code>{esc(ids[0])}</code>", c["outputs"]))
            elif answer and c["outputs"]:
                found.append((f"your answer cell <code>{esc(answer[0])}</code>", c["outputs"]))
    if found:
        parts.append("<p>What these cells printed when graded (hidden tests are never shown):</p>")
        used = sum(len(p) + 1 for p in parts)
        for title, outputs in found:
            part = (f"<p>{title}</p><pre style=\"{WRAP}\">"
                    f"{esc(_clip(_scrub(chr(10).join(outputs), secrets)))}</pre>")
            if used + len(part) > MAX_FEEDBACK_CHARS:
                parts.append("<p>(the outputs of the cells after this one were left out: too long)</p>")
                break
            parts.append(part)
            used += len(part) + 1
    return "\n".join(parts)


def _result(score: float, output: str, tests: list[dict], start: float, visibility: str) -> dict:
    return {"score": float(score), "execution_time": int(round(time.monotonic() - start)), "output": output,
            "output_format": "text", "test_output_format": "text", "visibility": visibility,
            "stdout_visibility": "hidden", "tests": tests}


def failure(message: str, start: float) -> dict:
    """results.json when nothing could be graded: score 0, the reason in one line, shown to the student
    at once."""
    tests = [{"name": "submission", "status": "failed", "output": message, "visibility": "visible"}]
    return _result(0.0, message, tests, start, "visible")


def _receipt(name: str, ok: bool, text: str) -> dict:
    return {"name": f"{name}.ipynb: submission received", "status": "passed" if ok else "failed",
            "output": text, "visibility": "visible", "tags": ["submission"]}


def _grade(root: Path, start: float) -> dict:
    config_path = REPO / CONFIG
    try:
        config = json.loads(config_path.read_text())
        assignment = config["assignment"]
    except (OSError, ValueError, KeyError) as e:
        return failure(f"The autograder is misbuilt ({CONFIG} unreadable: {type(e).__name__}), so nothing was graded "
                       "(0 points). Please tell your instructor.", start)
    visibility = config.get("visibility", "after_published")
    if visibility not in VISIBILITIES:
        visibility = "after_published"
    from autograder.course.source import graded_cells
    cells = graded_cells(assignment, REPO)
    cells_by_id = {(c.notebook, c.grade_id): c for c in cells}
    expected = sorted({c.notebook for c in cells})
    submission = root / "submission"
    uploaded, names = _uploaded(submission)
    chosen, notes = match(expected, uploaded, submission)
    student = student_id(root)
    print(f"gradescope: {assignment} for {student}; course at {REPO}; uploaded: {', '.join(names) or 'nothing'}")
    for note in notes:
        print(f"gradescope: {note}")
    wanted = ", ".join(f"{n}.ipynb" for n in expected)

    if not chosen:
        if not uploaded:
            why = f"No notebook in your submission: upload {wanted}" + (f" (you uploaded: {', '.join(names)})" if names else "")
        else:
            listed = ", ".join(p.relative_to(submission).as_posix() for p in uploaded)
            why = f"Several notebooks in your submission ({listed}) and none is named {wanted}: upload only {wanted}"
        why += ". Nothing was graded (0 points)."
        tests = [_receipt(n, False, why) for n in expected]
        tests += [dict(_cell_test(CellResult.of(c, status="missing", message="notebook not submitted"), c),
                       visibility=visibility)
                  for c in cells if c.kind != "manual"]
        return _result(0.0, why, tests, start, visibility)

    from autograder.batch.run import feedback_page
    from autograder.outputs.grade import grade
    secrets = _hidden_lines(assignment, REPO)
    with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "submissions" / student
        folder.mkdir(parents=True)
        for name, path in chosen.items():
            shutil.copyfile(path, folder / f"{name}.ipynb")      # a copy: the upload is only read
        out = tmp / "out"
        results = grade(assignment, tmp / "submissions", out, workers=1, quiet=True,
                        sandbox=os.environ.get("GRADESCOPE_SANDBOX") or "auto",
                        submission_timeout=float(config.get("submission_timeout", SUBMISSION_TIMEOUT)))
        res = next(r for r in results if r.student == student)
        # written answers are Gradescope's manual questions, graded there by a person: not the autograder's
        rows = [r for r in res.rows if getattr(cells_by_id.get((r.notebook, r.grade_id)), "kind", "") != "manual"]
        max_score = sum(r.max_score for r in rows)
        print(f"gradescope: graded in {res.seconds:.1f} s: {res.score:g} / {max_score:g}")
        for r in rows:
            print(f"  {r.notebook} {r.grade_id}: {r.score:g}/{r.max_score:g} {r.status} {r.message}")
        log = out / "logs" / f"{student}.log"
        if log.is_file():                          # for the instructor (stdout is hidden from students)
            lines = log.read_text(errors="replace").splitlines()
            print("gradescope: the grading log" + (f" (its last 300 of {len(lines)} lines)" if len(lines) > 300 else "") + ":")
            print("\n".join(lines[-300:]))
        tests, problems = [], []
        for name in expected:
            state = (res.notebooks or {}).get(name, "")
            if name not in chosen:
                tests.append(_receipt(name, False, f"{name}.ipynb was not found in your submission: 0 points for its cells"))
                problems.append(f"{name}.ipynb not found")
            elif state and state != "graded":
                tests.append(_receipt(name, False, f"{chosen[name].relative_to(submission).as_posix()}: {state}"))
                problems.append(f"{name}.ipynb: {state}")
            else:
                tests.append(_receipt(name, True, f"received {chosen[name].relative_to(submission).as_posix()}"
                                      + (f", graded as {name}.ipynb" if chosen[name].name != f"{name}.ipynb" else "")))
        for r in rows:
            test = _cell_test(r, cells_by_id.get((r.notebook, r.grade_id)))
            test["output"] = _scrub(test["output"], secrets)
            tests.append(dict(test, visibility=visibility))
        for name in expected:
            if name in chosen:
                page = feedback_page(out, student, assignment, name)
                mine = [r for r in rows if r.notebook == name]
                tests.append({"name": f"{name}.ipynb: your graded notebook", "output_format": "html",
                              "output": feedback_html(page, name, mine, cells_by_id,
                                                      chosen[name].relative_to(submission).as_posix(), secrets),
                              "visibility": visibility, "tags": ["feedback"]})
    score = float(sum(r.score for r in rows))
    graded = ", ".join(f"{n}.ipynb" for n in expected if n in chosen)
    summary = f"Received and graded {graded} ({len(rows)} graded cells)."
    if notes:
        summary += " " + "; ".join(n[0].upper() + n[1:] for n in notes) + "."
    if problems:
        summary += " Problems: " + "; ".join(problems) + "."
    if visibility == "visible":
        summary += f" Score: {score:g} / {max_score:g}."
    else:
        when = {"after_due_date": "after the due date", "after_published": "when your instructor publishes the grades",
                "hidden": "only to your instructor"}[visibility]
        summary += f" The score, each cell's verdict and your graded notebook are shown {when}."
    return _result(score, summary, tests, start, visibility)


def _cell_test(row: CellResult, cell) -> dict:
    checks = f", checks {', '.join(cell.exercises)}" if cell is not None and cell.exercises else ""
    return {"name": f"{row.notebook}.ipynb: {row.grade_id}{checks}", "score": float(row.score),
            "max_score": float(row.max_score), "status": "passed" if row.status == "passed" else "failed",
            "output": row.status + (f": {row.message}" if row.message else ""),
            "tags": [row.status]}


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` to ``path`` through a fresh file of our own (``mkstemp``: never through a link
    someone left in the folder), renamed over whatever is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(root: Path | None = None) -> int:
    """Grade the submission in ``root`` (default ``$GRADESCOPE_ROOT``, else ``/autograder``) and write
    ``root/results/results.json``, whatever happens; always returns 0."""
    start = time.monotonic()
    root = Path(root if root is not None else os.environ.get("GRADESCOPE_ROOT", "/autograder"))
    target = root / "results" / "results.json"
    try:
        results = _grade(root, start)
    except BaseException as e:                   # anything at all: the student still gets a verdict
        traceback.print_exc(file=sys.stdout)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        results = failure(f"The autograder failed on this submission ({type(e).__name__}{': ' + first if first else ''}), "
                          "so nothing was graded (0 points). Please tell your instructor.", start)
    try:
        write_results(target, results)
    except Exception:
        traceback.print_exc(file=sys.stdout)
        try:
            write_results(target, failure("The autograder could not write its results, so nothing was graded "
                                          "(0 points). Please tell your instructor.", start))
        except Exception:
            traceback.print_exc(file=sys.stdout)
    print(f"gradescope: wrote {target}: {results.get('score', 0):g} points")
    return 0


# ================================================================================== command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.outputs.gradescope",
                                     description="Gradescope autograder: build the zip, or grade one submission.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write OUT/autograder.zip for ASSIGNMENT")
    b.add_argument("assignment")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--visibility", default="after_published", choices=VISIBILITIES,
                   help="when students see the verdicts and the feedback (default after_published)")
    b.add_argument("--submission-timeout", type=float, default=SUBMISSION_TIMEOUT,
                   help=f"grading budget of one submission in seconds (default {SUBMISSION_TIMEOUT:g})")
    r = sub.add_parser("run", help="grade the submission in $GRADESCOPE_ROOT (default /autograder)")
    r.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.root)
    from autograder.course.source import UsageError
    try:
        t0 = time.monotonic()
        path = build(args.assignment, args.out, visibility=args.visibility, submission_timeout=args.submission_timeout)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(path) as zf:
        n = len(zf.namelist())
    print(f"{path} ({path.stat().st_size / 1024:.0f} KiB, {n} files, {time.monotonic() - t0:.1f} s): upload it on "
          f"Gradescope's Configure Autograder page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
