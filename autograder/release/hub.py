"""The course on JupyterHub with nbgrader's exchange: the instructor's two commands of ours (docs/jupyterhub.md).

  python -m autograder hub publish ASSIGNMENT --to DIR
      write the students' ``course_lib`` cut at ASSIGNMENT's release (the student bundle's: the reference
      bodies of every exercise not yet due replaced by a raise, ``course_lib.exercises`` empty) into
      DIR/course_lib, world-readable, replacing last week's atomically: the copy is written beside it
      (DIR/.releases/<ASSIGNMENT>-<time>/) and DIR/course_lib, a symbolic link, is renamed onto it. Students'
      kernels get DIR on PYTHONPATH (the hub's ``Spawner.environment``); a kernel started after the switch
      imports the new copy, one already running keeps what it imported.
  python -m autograder hub feedback OUT --course ROOT [--assignment A] [--course-id ID] [--exchange DIR]
      release the feedback of a graded OUT (``python -m autograder grade A --submissions ROOT/submitted
      --out OUT``) through nbgrader's exchange: OUT/feedback/<student>/<A>/*.html go to
      ROOT/feedback/<student>/<A>/ with the timestamp.txt and submission_secret.txt of the submission
      ``nbgrader collect`` put into ROOT/submitted/ (nbgrader's fetch_feedback finds a page by that secret),
      then ``nbgrader release_feedback A`` runs in ROOT. A student whose graded notebook is not the one in
      ROOT/submitted (collected again after grading) is refused, in one line: grade again.
  python -m autograder hub requirements
      the pinned packages of pyproject.toml, one a line: the students' environment is installed from them
      (``pip install -r``) without the project itself.

Bad input ends with a one-line error on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class HubError(Exception):
    """Bad input: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise HubError(message)


def _repo() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise HubError(f"no pyproject.toml above {here}")


def _build_bundle():
    from autograder.release.bundle import build_bundle     # imports course_lib and torch: only when publishing
    return build_bundle


_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


def _open_up(root: Path) -> None:
    """Folders 755, files 644 (students read, nobody but the owner writes), no POSIX ACLs, no bytecode caches.

    ACLs are removed because the copy of the sources carries theirs (shutil.copytree copies extended
    attributes): an entry that closes the checkout to a group (``autograder.sandbox.uid_tier``'s, or an
    instructor's closing it to the students) would close the published copy to that group too."""
    for folder, dirs, files in os.walk(root):
        if "__pycache__" in dirs:
            shutil.rmtree(Path(folder) / "__pycache__")
            dirs.remove("__pycache__")
        for p in [Path(folder), *(Path(folder) / f for f in files)]:
            if p.is_symlink():
                continue
            for name in _ACL_XATTRS:
                try:
                    os.removexattr(p, name)
                except OSError:              # none there, or a filesystem without xattrs
                    pass
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


def publish(assignment: str, to: Path, repo: Path | None = None) -> Path:
    """DIR/course_lib -> DIR/.releases/<assignment>-<time>/course_lib (see the module's docstring)."""
    to = Path(to).absolute()
    link = to / "course_lib"
    if link.exists() and not link.is_symlink():
        raise HubError(f"{link} is a folder, not the link this command keeps: move it away first")
    old_umask = os.umask(0o022)
    try:
        if not to.exists():                     # an existing folder keeps its mode (it may be /srv, or /tmp)
            to.mkdir(parents=True)
            os.chmod(to, 0o755)
        (to / ".releases").mkdir(exist_ok=True)
        os.chmod(to / ".releases", 0o755)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=to))     # same filesystem: renames are atomic
        try:
            kwargs = {"repo": repo} if repo is not None else {}
            from autograder.course.source import UsageError
            try:
                _build_bundle()(build / "bundle", assignment, **kwargs)
            except UsageError as e:
                raise HubError(str(e)) from None
            name = f"{assignment}-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"
            release = to / ".releases" / name
            release.mkdir()
            (build / "bundle" / "course_lib").rename(release / "course_lib")
            (release / "RELEASE").write_text(f"course_lib of the student bundle cut at {assignment}'s release, "
                                             f"published {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
            _open_up(release)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        new = to / f".course_lib-{os.urandom(4).hex()}"
        os.symlink(Path(".releases") / name / "course_lib", new)
        previous = os.readlink(link) if link.is_symlink() else None
        os.replace(new, link)                       # the switch: one rename
    finally:
        os.umask(old_umask)
    # keep the one before (a kernel starting right now may still be reading it), remove older ones
    keep = {name} | ({Path(previous).parts[1]} if previous and len(Path(previous).parts) > 2 else set())
    for old in (to / ".releases").iterdir():
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return release / "course_lib"


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def release_feedback(out: Path, course: Path, assignment: str | None = None, course_id: str | None = None,
                     exchange: str | None = None) -> dict[str, list[str]]:
    """Copy OUT's feedback into ROOT/feedback with each submission's secret, then nbgrader release_feedback.
    Returns {assignment: [students released]}; raises HubError naming the students refused."""
    out, course = Path(out).absolute(), Path(course).absolute()
    if not (out / "feedback").is_dir():
        raise HubError(f"{out} has no feedback/ folder: is it a folder that `python -m autograder grade` wrote?")
    if not (course / "submitted").is_dir():
        raise HubError(f"{course} has no submitted/ folder: run `nbgrader collect` there first")
    released: dict[str, list[str]] = {}
    refused: list[str] = []
    for student_dir in sorted(p for p in (out / "feedback").iterdir() if p.is_dir()):
        student = student_dir.name
        for adir in sorted(p for p in student_dir.iterdir() if p.is_dir()):
            if assignment is not None and adir.name != assignment:
                continue
            pages = sorted(adir.glob("*.html"))
            if not pages:
                continue
            collected = course / "submitted" / student / adir.name
            secret, stamp = collected / "submission_secret.txt", collected / "timestamp.txt"
            if not (secret.is_file() and stamp.is_file()):
                refused.append(f"{student} ({adir.name}: not collected through the exchange, "
                               f"no {collected}/submission_secret.txt)")
                continue
            stale = [p.stem for p in pages
                     if not _same_bytes(out / "submitted" / student / adir.name / f"{p.stem}.ipynb",
                                        collected / f"{p.stem}.ipynb")]
            if stale:
                refused.append(f"{student} ({adir.name}: {', '.join(stale)} graded is not the one collected)")
                continue
            dest = course / "feedback" / student / adir.name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for page in pages:
                shutil.copy2(page, dest / page.name)
            shutil.copy2(secret, dest / secret.name)
            shutil.copy2(stamp, dest / stamp.name)
            released.setdefault(adir.name, []).append(student)
    if not released and not refused:
        raise HubError(f"no feedback pages in {out}/feedback" + (f" for {assignment}" if assignment else ""))
    for name in released:
        cmd = [sys.executable, "-m", "nbgrader", "release_feedback", name, f"--CourseDirectory.root={course}"]
        if course_id:
            cmd.append(f"--course={course_id}")
        if exchange:
            cmd.append(f"--Exchange.root={exchange}")
        proc = subprocess.run(cmd, cwd=course, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "rror" in ln] or proc.stderr.splitlines()
            raise HubError(f"nbgrader release_feedback {name} failed: {(lines or ['no output'])[-1].strip()}")
    if refused:
        done = "; ".join(f"{a}: {len(s)} released" for a, s in released.items()) or "nothing released"
        raise HubError(f"feedback refused for {', '.join(refused)}: grade again ({done})")
    return released


def requirements(repo: Path | None = None) -> list[str]:
    try:
        import tomllib
    except ImportError:               # Python 3.10
        import tomli as tomllib       # type: ignore[no-redef]
    with open((repo or _repo()) / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m autograder hub", description="The course on JupyterHub (docs/jupyterhub.md).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pub = sub.add_parser("publish", help="the students' course_lib cut at ASSIGNMENT's release into DIR/course_lib")
    pub.add_argument("assignment")
    pub.add_argument("--to", required=True, type=Path, metavar="DIR",
                     help="the folder on the students' PYTHONPATH (e.g. /srv/course/lib)")
    fb = sub.add_parser("feedback", help="release a graded OUT's feedback through nbgrader's exchange")
    fb.add_argument("out", type=Path, help="the folder `python -m autograder grade` wrote")
    fb.add_argument("--course", required=True, type=Path, metavar="ROOT",
                    help="the nbgrader course root that `nbgrader collect` filled (ROOT/submitted)")
    fb.add_argument("--assignment", default=None, help="only this assignment (default: every one in OUT)")
    fb.add_argument("--course-id", default=None, help="nbgrader's course id (default: ROOT's nbgrader_config.py)")
    fb.add_argument("--exchange", default=None, metavar="DIR",
                    help="the exchange root (default: nbgrader's configuration)")
    sub.add_parser("requirements", help="the pinned packages of the students' environment, one a line")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "publish":
            path = publish(args.assignment, args.to)
            print(f"published {args.assignment}'s student course_lib: {args.to / 'course_lib'} -> {path}")
        elif args.command == "feedback":
            for name, students in release_feedback(args.out, args.course, args.assignment, args.course_id,
                                                   args.exchange).items():
                print(f"released {name}'s feedback to {len(students)} students: {', '.join(students)}")
        else:
            print("\n".join(requirements()))
        return 0
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
