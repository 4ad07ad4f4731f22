"""nbgrader set up for a course root of our choosing, and the assignment's nbgrader template made there.

Grading never runs in the repository itself: each operation gets a private course root (a temporary
folder) with its own gradebook, so that nothing is written into the working tree, parallel graders cannot
clash, and no student file is ever modified.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
from pathlib import Path

from traitlets.config import Config, PyFileConfigLoader

from autograder.course.source import REPO, check_assignment


def nbgrader_config(root: Path, repo: Path = REPO, **overrides) -> Config:
    """The course's ``nbgrader_config.py`` with the course root, gradebook and exchange moved to ``root``.

    ``overrides`` are ``"Class.trait": value`` pairs (e.g. ``{"Execute.timeout": 10}``) given as keywords
    with the dot replaced by a double underscore: ``Execute__timeout=10``.
    """
    loader = PyFileConfigLoader("nbgrader_config.py", path=str(repo))
    config = loader.load_config()
    root = Path(root).resolve()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Exchange.root = str(root / "exchange")
    for key, value in overrides.items():
        cls, trait = key.split("__")
        setattr(getattr(config, cls), trait, value)
    return config


def nbgrader_api(config: Config):
    """An ``NbGraderAPI`` on ``config`` whose log goes to the returned dicts, not to the terminal."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    logging.getLogger("traitlets").setLevel(logging.ERROR)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.propagate = False
    for handler in list(api.log.handlers):
        if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            api.log.removeHandler(handler)
    return api


def copy_source(assignment: str, root: Path, repo: Path = REPO) -> None:
    """Copy ``solutions/<assignment>`` into ``root/solutions/<assignment>``."""
    shutil.copytree(check_assignment(assignment, repo), Path(root) / "solutions" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "wandb"))


def _source_key(assignment: str, repo: Path) -> str:
    """A hash of everything nbgrader's generate_assignment reads here (and of the code that calls it)."""
    import hashlib

    import nbgrader
    h = hashlib.sha256(f"{nbgrader.__version__}\n".encode())
    folder = check_assignment(assignment, repo)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not {".ipynb_checkpoints", "__pycache__", "wandb"} & set(path.relative_to(folder).parts):
            h.update(f"{path.relative_to(folder)}\n".encode() + hashlib.sha256(path.read_bytes()).digest())
    for path in (Path(repo) / "nbgrader_config.py", Path(repo) / "schedule.toml", Path(__file__)):
        h.update(path.name.encode() + (hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-"))
    return h.hexdigest()[:32]


def _template_cache(default: Path | None = None) -> Path | None:
    """``COURSE_TEMPLATE_CACHE``: a folder of this user's where generated templates are kept and reused
    (the test suite sets it: dozens of grading runs of the same assignment); unset: ``default`` (grading
    passes one inside OUT's cache), else no cache."""
    folder = os.environ.get("COURSE_TEMPLATE_CACHE") or default
    if not folder:
        return None
    folder = Path(folder)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
            return None                            # not a private folder of ours: do not trust it
    except OSError:
        return None
    return folder


def generate(assignment: str, root: Path, repo: Path = REPO, cache: Path | None = None) -> Path:
    """Run nbgrader's generate_assignment in ``root`` (a scratch course root) and return the folder that
    holds the release; ``root/gradebook.db`` then knows the assignment, its notebooks and cells. With
    ``COURSE_TEMPLATE_CACHE`` set (else ``cache``), a template generated from the same sources is copied
    instead."""
    root = Path(root)
    cache = _template_cache(cache)
    key = _source_key(assignment, repo) if cache else ""
    if cache and (cache / key / "done").exists():
        copy_source(assignment, root, repo)
        shutil.copy(cache / key / "gradebook.db", root / "gradebook.db")
        shutil.copytree(cache / key / "release", root / "release" / assignment)
        return root / "release" / assignment
    built = _generate(assignment, root, repo)
    if cache:
        def fill(folder: Path) -> None:
            shutil.copy(root / "gradebook.db", folder / "gradebook.db")
            shutil.copytree(built, folder / "release")
        keep_built(cache, key, fill)
    return built


def keep_built(cache: Path, name: str, fill) -> Path | None:
    """``cache/name``, made once by ``fill(folder)`` in a scratch folder renamed into place: atomic, so a run
    that reads it sees all of it or nothing, and another run may make the same one meanwhile. None when it
    could not be kept (the caller then makes what it needs itself)."""
    import uuid
    kept = Path(cache) / name
    if (kept / "done").exists():
        return kept
    tmp = Path(cache) / f".{name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
        (tmp / "done").touch()
        os.rename(tmp, kept)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return kept if (kept / "done").exists() else None
    return kept


def _generate(assignment: str, root: Path, repo: Path = REPO) -> Path:
    copy_source(assignment, root, repo)
    api = nbgrader_api(nbgrader_config(root, repo, CourseDirectory__release_directory="release"))
    result = api.generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error') or result.get('log')}")
    from autograder.course.schedule import due_dates
    due = due_dates(repo).get(assignment)
    if due is not None:                # where nbgrader's AssignLatePenalties reads it
        import warnings

        from nbgrader.api import Gradebook
        with warnings.catch_warnings(), Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
            warnings.simplefilter("ignore")
            gb.update_or_create_assignment(assignment, duedate=due)
    return root / "release" / assignment
