"""Mutation testing of the hidden cases: ``python -m benchmarks mutation [EXERCISE|ASSIGNMENT ...]``.

For every exercise of ``course_lib/exercises/`` (or the ones named), every mutant of its reference
(``benchmarks/mutation.py``: one change to its syntax tree, or to a course_lib helper it calls) goes
through the exercise's own cases by the path a student's function takes, ``grading.record`` then
``grading.verify``, on the CPU (and the meta device's device check). A mutant is killed when ``verify``
fails it, or when it runs past its time (20 × the reference's, at least 2 s). Survivors judged
equivalent, each with a one-line reason, are in ``course_lib/exercises/equivalent_mutants/<assignment>.toml``
(a table per exercise: ``"<mutant label>" = "<reason>"``; a label may use fnmatch wildcards). That folder
never reaches a student: the bundle leaves it out.

Prints per exercise: mutants, killed, survived, equivalent, the score (killed / non-equivalent mutants;
the goal is 95% for every exercise) and seconds; the survivors that are not judged equivalent are
listed under the table. Writes build/bench/mutation.csv, mutation.md, mutation-survivors.txt and
mutation.png. ``BENCH_MUTATION_WORKERS`` (default 2) processes share the exercises.
"""
from __future__ import annotations

import contextlib
import fnmatch
import csv
import io
import os
import signal
import sys
import time
try:
    import tomllib
except ImportError:          # Python 3.10: pytest's own dependency tomli is the same parser
    import tomli as tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .common import OUT, table

EQUIVALENT = Path(__file__).resolve().parent.parent / "course_lib" / "exercises" / "equivalent_mutants"
GOAL = 0.95


class MutantTimeout(BaseException):
    """Raised in a mutant that runs past its time; a BaseException, so that record(), which reports a
    student's Exception as the case's error and goes on to the next case, lets it through."""


def equivalent() -> dict[str, dict[str, str]]:
    """{exercise: {mutant label or pattern: reason}} from equivalent_mutants/*.toml."""
    judged: dict[str, dict[str, str]] = {}
    for path in sorted(EQUIVALENT.glob("*.toml")):
        with open(path, "rb") as f:
            for exercise, entries in tomllib.load(f).items():
                judged.setdefault(exercise, {}).update(entries)
    return judged


def _judged(label: str, eq: dict[str, str]) -> str | None:
    """The entry of ``eq`` that matches ``label`` (exactly, or as an fnmatch pattern)."""
    if label in eq:
        return label
    return next((p for p in eq if any(c in p for c in "*?[") and fnmatch.fnmatchcase(label, p)), None)


def _on_alarm(signum, frame):
    raise MutantTimeout("ran past its time")


def run_exercise(name: str, limit: float | None = None) -> dict:
    """Mutants of one exercise, each recorded and verified as a student's function would be."""
    from course_lib import grading
    from benchmarks import mutation

    ex = grading.exercises()[name]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        assert grading.verify(grading.record(name, ex.reference, device=["cpu"]), on=["cpu"]).passed, name
        limit = limit or max(2.0, 20 * (time.perf_counter() - t0))
        covered = mutation.coverage(lambda: grading.record(name, ex.reference, device=["cpu"]))
    signal.signal(signal.SIGALRM, _on_alarm)
    rows = []
    for m in mutation.mutants(name, ex.reference, grad=ex.grad, covered=covered):
        if m.fn is None:
            rows.append({"label": m.label, "status": "invalid", "why": m.why})
            continue
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                signal.setitimer(signal.ITIMER_REAL, limit)
                try:
                    rec = grading.record(name, m.fn, device=["cpu"])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                verdict = grading.verify(rec, on=["cpu"])
            status, why = ("killed", verdict.message) if not verdict.passed else ("survived", "")
        except MutantTimeout:
            status, why = "killed", "ran past its time"
        except Exception as e:          # the mutant broke the recording itself (e.g. a hung-up generator)
            status, why = "killed", f"{type(e).__name__}: {e}"
        rows.append({"label": m.label, "status": status, "why": why})
    return {"exercise": name, "rows": rows, "seconds": time.perf_counter() - start}


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)


def _selected(args: list[str]) -> list[str]:
    from course_lib import grading
    every = grading.exercises()
    if not args:
        return list(every)
    names = []
    for a in args:
        found = [a] if a in every else list(grading.exercises_of(a))
        if not found:
            sys.exit(f"mutation: {a!r} is neither an exercise nor an assignment")
        names += found
    return names


def main(args: list[str] | None = None) -> None:
    args = sys.argv[2:] if args is None and len(sys.argv) > 1 and sys.argv[1] in ("mutation", "bench_mutation") \
        else (args or [])
    names = _selected(args)
    judged = equivalent()
    workers = int(os.environ.get("BENCH_MUTATION_WORKERS", "2"))
    start = time.perf_counter()
    if workers > 1 and len(names) > 1:
        import multiprocessing
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            results = list(pool.map(run_exercise, names))
    else:
        results = [run_exercise(n) for n in names]
    wall = time.perf_counter() - start

    rows, survivors, stale = [], [], []
    for r in results:
        eq = judged.get(r["exercise"], {})
        valid = [x for x in r["rows"] if x["status"] != "invalid"]
        used = {_judged(x["label"], eq) for x in valid if x["status"] == "survived"} - {None}
        stale += [f"{r['exercise']}: {label}" for label in eq if label not in used]
        killed = sum(x["status"] == "killed" for x in valid)
        survived = [x for x in valid if x["status"] == "survived"]
        n_eq = sum(_judged(x["label"], eq) is not None for x in survived)
        wrongly_eq = [x["label"] for x in valid if x["status"] == "killed" and x["label"] in eq]
        stale += [f"{r['exercise']}: {label} (killed, yet listed as equivalent)" for label in wrongly_eq]
        live = len(valid) - n_eq
        score = killed / live if live else 1.0
        rows.append([r["exercise"], len(valid), killed, len(survived), n_eq, f"{100 * score:.1f}%",
                     "yes" if score >= GOAL else "NO", f"{r['seconds']:.1f}"])
        survivors += [f"{r['exercise']}: {x['label']}" for x in survived if _judged(x["label"], eq) is None]
    header = ["exercise", "mutants", "killed", "survived", "equivalent", "killed / non-equivalent",
              f">= {GOAL:.0%}", "seconds"]
    total_valid = sum(r[1] for r in rows)
    total_killed = sum(r[2] for r in rows)
    total_eq = sum(r[4] for r in rows)
    rows_total = rows + [["all", total_valid, total_killed, sum(r[3] for r in rows), total_eq,
                          f"{100 * total_killed / max(1, total_valid - total_eq):.1f}%",
                          "yes" if all(r[6] == "yes" for r in rows) else "NO", f"{wall:.1f} wall"]]
    text = table(header, rows_total)
    print(f"Mutation testing of the hidden cases ({workers} worker(s); {len(names)} exercises)")
    print(text)
    if survivors:
        print(f"\n{len(survivors)} survivors not judged equivalent:")
        print("\n".join("  " + s for s in survivors))
    if stale:
        print(f"\n{len(stale)} entries of {EQUIVALENT.name}/ that match no survivor:")
        print("\n".join("  " + s for s in stale))

    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "mutation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows_total)
    (OUT / "mutation.md").write_text("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" +
                                     "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows_total) + "\n")
    (OUT / "mutation-survivors.txt").write_text("\n".join(survivors + [f"stale: {s}" for s in stale]) + "\n")
    _plot(rows)


def _plot(rows: list[list]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r[0] for r in rows]
    scores = [float(r[5].rstrip("%")) for r in rows]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.25 * len(rows))))
    ax.barh(names, scores, color=["tab:green" if s >= 100 * GOAL else "tab:red" for s in scores])
    ax.axvline(100 * GOAL, color="k", linestyle="--", linewidth=1, label=f"goal {GOAL:.0%}")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("mutants killed, % of the non-equivalent ones")
    ax.set_title("Mutation score of each exercise's hidden cases")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "mutation.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
