"""Grade only what changed: ``OUT/.cache/``, keyed by each submission's bytes and a fingerprint of
everything its grade depends on.

The fingerprint hashes the assignment's source folder (solutions, hidden tests, shipped files),
``course_lib`` (every ``.py``), ``nbgrader_config.py``, ``schedule.toml`` and this assignment's entry of
``timings.json``, the grader's own code (``autograder/*.py``), the devices graded on (CPU, CUDA and its
device name), and the options that change a verdict (cell timeout, test-cell limits, budget, sandbox
tier, memory and process limits, illustrative cells run or skipped). A submission's key is the hash of
the bytes of the assignment's notebooks in its folder (names included; a missing notebook counts too).

``OUT/.cache/.built/`` keeps what grading makes from the sources alone (the template gradebook and
release, by ``course._source_key``; the graded kernels' stripped ``course_lib``, by its sources' hash).
``OUT/.cache/<student>/entry.json`` keeps the fingerprint, the key and the worker's result (rows, log,
seconds); ``OUT/.cache/<student>/feedback/`` and ``autograded/`` the feedback pages and autograded notebooks. A rerun with the same fingerprint reuses
every entry whose key matches and grades the rest; ``--force`` (``force=True``) regrades everyone; an
entry written under another fingerprint is never reused. Hand-made by necessity: nbgrader has no notion
of an unchanged submission (``autograde --force`` regrades, without it a student is skipped even when
the submission changed).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from autograder.grading.records import StudentResult

DIR = ".cache"
BUILT = ".built"     # OUT/.cache/.built/: the template gradebook and the graded kernels' course_lib, by source hash
_PY = ("*.py",)


def _hash_files(h, folder: Path, patterns=("*",), skip=("__pycache__", ".ipynb_checkpoints", "wandb")) -> None:
    if not folder.exists():
        h.update(f"missing {folder.name}\n".encode())
        return
    for pattern in patterns:
        for path in sorted(folder.rglob(pattern)):
            if path.is_file() and not any(part in skip for part in path.relative_to(folder).parts):
                h.update(f"{path.relative_to(folder)}\n".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())


def devices() -> str:
    """The devices hidden tests run on, without importing torch here (3 s): COURSE_GRADING_DEVICES, else
    the CPU and the GPUs this machine shows (device nodes, CUDA_VISIBLE_DEVICES, nvidia-smi's names)."""
    import glob
    import os
    import subprocess
    if os.environ.get("COURSE_GRADING_DEVICES"):
        return os.environ["COURSE_GRADING_DEVICES"]
    found = ["cpu"]
    if glob.glob("/dev/nvidia[0-9]*"):
        try:
            names = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            names = "?"
        found.append(f"cuda {os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}: {names.strip()}")
    return ",".join(found)


def fingerprint(assignment: str, repo: Path, options: dict) -> str:
    from autograder.course.timings import load as load_timings
    repo = Path(repo)
    h = hashlib.sha256()
    _hash_files(h, repo / "solutions" / assignment)
    _hash_files(h, repo / "course_lib", _PY)
    _hash_files(h, Path(__file__).parents[1], _PY)       # all of autograder/
    for name in ("nbgrader_config.py", "schedule.toml"):
        path = repo / name
        h.update(name.encode() + (hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-"))
    h.update(json.dumps(load_timings(repo).get(assignment), sort_keys=True).encode())
    h.update(devices().encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def submission_key(folder: Path, notebooks: list[str]) -> str:
    h = hashlib.sha256()
    for name in sorted(notebooks):
        path = Path(folder) / f"{name}.ipynb"
        h.update(name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"missing")
    return h.hexdigest()


def lookup(out: Path, student: str, fp: str, key: str) -> StudentResult | None:
    """The cached result of ``student`` when it was graded under ``fp`` from the same bytes, else None."""
    entry = Path(out) / DIR / student / "entry.json"
    try:
        data = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fp or data.get("key") != key or not isinstance(data.get("result"), dict):
        return None
    try:
        return StudentResult.from_json(data["result"])
    except (TypeError, ValueError):            # written by another version of the grader
        return None


def previous_key(out: Path, student: str) -> str | None:
    """The key of the submission last graded for ``student`` into ``out``, whatever its fingerprint."""
    try:
        return json.loads((Path(out) / DIR / student / "entry.json").read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def store(out: Path, student: str, fp: str, key: str, result: StudentResult, folders: dict[str, Path]) -> None:
    """Keep ``result`` (without its scratch paths) and the student's graded files (``folders``: name ->
    folder, the feedback pages and autograded notebooks) in ``OUT/.cache``."""
    folder = Path(out) / DIR / student
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, src in folders.items():
        (folder / name).mkdir()
        for path in sorted(Path(src).glob("*")) if Path(src).is_dir() else []:
            if path.is_file():
                shutil.copyfile(path, folder / name / path.name)
    kept = {k: v for k, v in result.to_json().items() if k not in ("root", "pages", "autograded")}
    (folder / "entry.json").write_text(json.dumps(dict(fingerprint=fp, key=key, result=kept)))


def restore(out: Path, student: str, folders: dict[str, Path]) -> None:
    """Put the cached graded files of ``student`` back into ``folders``."""
    for name, dest in folders.items():
        kept = sorted((Path(out) / DIR / student / name).glob("*"))
        if kept:
            dest.mkdir(parents=True, exist_ok=True)
        for path in kept:
            shutil.copyfile(path, dest / path.name)


def prune(out: Path, students: list[str]) -> None:
    """Forget the entries of students who are no longer in the submissions folder (the grader's own
    folders, ``.built`` and ``.matplotlib``, start with a dot, as no student's name does)."""
    root = Path(out) / DIR
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and folder.name not in students and not folder.name.startswith("."):
                shutil.rmtree(folder, ignore_errors=True)
