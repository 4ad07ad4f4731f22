"""nbgrader's formgrader on a graded OUT: ``python -m autograder formgrader OUT [--port P]`` (``make
formgrader OUT=...``).

Grading leaves OUT as an nbgrader course root (``gradebook.db``, ``submitted/``, ``autograded/``,
``feedback/``). This writes what formgrader still needs beside them, ``OUT/nbgrader_config.py`` (the
course root and gradebook are OUT's) and ``OUT/source/<assignment>/`` (the instructor's notebooks of every
assignment the gradebook knows), then starts JupyterLab in OUT on 127.0.0.1: the Nbgrader menu's
Formgrader lists each student with the autograded score, opens the autograded notebook with our verdicts
under the test cells, and takes manual grades and comments, which a later grading run keeps for every
student whose submission did not change. ``nbgrader export`` run in OUT reads the same gradebook. A
gradebook that grading wrote elsewhere (``grade --db URL``: PostgreSQL, for graders working at once) is
found through ``OUT/gradebook.url`` or ``--db URL``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from autograder.course.source import REPO, UsageError, solutions_dir

CONFIG = '''"""Written by `python -m autograder formgrader`: formgrader on this graded OUT."""
import os

c = get_config()  # noqa: F821
HERE = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.db_url = os.environ.get("COURSE_GRADEBOOK_URL") or {db_url}
c.Exchange.root = os.path.join(HERE, ".exchange")
'''
EXCHANGE = ".exchange"


def prepare(out: Path, repo: Path = REPO, db: str | None = None) -> list[str]:
    """Make OUT ready for formgrader; return the assignments its gradebook holds. The gradebook is ``db``
    (a SQLAlchemy URL) when given, else the one grading noted in OUT (``--db``'s), else ``OUT/gradebook.db``."""
    from autograder.outputs import gradebook
    out = Path(out)
    url = gradebook.url_of(out, db)
    if url == gradebook.sqlite_url(out / "gradebook.db") and not (out / "gradebook.db").is_file():
        raise UsageError(f"no gradebook in {out}: grade into it first (python -m autograder grade ... --out {out})")
    gradebook.check(url)
    with gradebook.opened(url) as gb:
        names = sorted(a.name for a in gb.assignments)
    from autograder.course.nbgrader import nbgrader_config
    course_id = nbgrader_config(out, repo).CourseDirectory.course_id or "course"
    own = url == gradebook.sqlite_url(out / "gradebook.db")
    db_url = '"sqlite:///" + os.path.join(HERE, "gradebook.db")' if own else repr(gradebook.without_password(url))
    (out / "nbgrader_config.py").write_text(CONFIG.format(course_id=course_id, db_url=db_url))
    # formgrader's pages list the exchange's releases and submissions: an exchange that does not exist is
    # reported on every page at CRITICAL level. OUT's own, private one (a hub's real exchange: docs/jupyterhub.md).
    (out / EXCHANGE).mkdir(mode=0o700, exist_ok=True)
    for name in names:
        src = solutions_dir(repo) / name
        dest = out / "source" / name
        if src.is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "wandb"))
    return names


def command(out: Path, port: int = 8890, token: str | None = None, browser: bool = True) -> list[str]:
    args = [str(Path(sys.executable).with_name("jupyter")), "lab", f"--ServerApp.root_dir={Path(out).resolve()}",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        args.append(f"--IdentityProvider.token={token}")
    if not browser:
        args.append("--no-browser")
    if os.geteuid() == 0:                 # a container's root (JupyterLab refuses root otherwise)
        args.append("--allow-root")
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autograder formgrader", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a folder grading wrote (python -m autograder grade --out OUT)")
    p.add_argument("--port", type=int, default=8890)
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--db", default=None, metavar="URL",
                   help="the class gradebook, when grading wrote it elsewhere than OUT (grade's --db)")
    args = p.parse_args(argv)
    try:
        names = prepare(args.out, db=args.db)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"formgrader on {args.out} ({', '.join(names)}): JupyterLab's Nbgrader menu > Formgrader; Ctrl-C ends it")
    os.chdir(args.out)                    # nbgrader's server extension reads nbgrader_config.py from here
    if args.db:                           # the password, if any, stays out of nbgrader_config.py
        os.environ["COURSE_GRADEBOOK_URL"] = args.db
    cmd = command(args.out, args.port, browser=not args.no_browser)
    os.execv(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
