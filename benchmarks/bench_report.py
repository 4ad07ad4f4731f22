"""What the end-of-grading reports cost against the size of the class: ``python -m benchmarks report``.

For classes of N students (``BENCH_REPORT_SIZES=30,100,300``, the default, picks the sizes), seconds of
one call of each, timed once (the class is written to disk before the clock starts):

1. ``autograder.outputs.similarity.write(out, "rope", release, students)``: the similarity report over a synthetic
   class of the RoPE assignment in nbgrader's layout (``OUT/submitted/<student>/rope/rope.ipynb``), made
   with ``autograder.intake.samples`` and ``random.Random(0)``: about 40% complete submissions (the
   instructor's answers) with a line or two of the student's own appended to a solution cell, 30% partial
   ones (a random subset of the solution cells filled), 20% blank (the release as it is) and 10% renamed
   copies (``rename_locals`` on every solution code cell of a complete one). Reading the notebooks, the
   ``difflib`` against the template, copydetect's comparison of every pair sharing a fingerprint and
   writing the CSV and HTML are all in the time. The table also gives the pairs compared (sharing
   anything) and how many were flagged.
2. ``autograder.outputs.report.write(out, "rope", results)``: the class report (CSVs, matplotlib figures, the HTML
   page) on synthetic results for the same N students: one row per graded cell of
   ``autograder.course.graded_cells("rope")``, statuses drawn with the same seeded RNG, failure messages in
   ``course_lib.grading``'s form so that the verdicts group as they would.

Prints a table and writes build/bench/report.png (seconds against N, both lines).
"""
from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from .common import OUT, table

SIZES = [30, 100, 300]
NOTEBOOK = "rope"

from autograder.grading.records import GRADED, TIMED_OUT, CellResult, StudentResult


def _sizes() -> list[int]:
    raw = os.environ.get("BENCH_REPORT_SIZES", "")
    return [int(s) for s in raw.split(",") if s.strip()] or SIZES


def _solution_ids(nb) -> list[str]:
    """Grade ids of the solution code cells (what a student writes in and the similarity report compares)."""
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


def _append(nb, grade_id: str, lines: str):
    from autograder.intake import samples as subs
    return subs.edit(nb, grade_id, lambda source: source.rstrip("\n") + "\n" + lines)


def make_class(out: Path, n: int, rng: random.Random) -> tuple[Path, list[str], dict[str, str]]:
    """``n`` submissions in ``out/submitted/<student>/rope/rope.ipynb`` and the release in ``out/release``;
    returns (release folder, students, {student: what kind of submission})."""
    from autograder.intake import samples as subs
    release, solution = subs.load("rope", NOTEBOOK)
    complete = subs.fill(release, solution)
    ids = _solution_ids(solution)
    renamed = complete
    for gid in ids:
        renamed = subs.edit(renamed, gid, subs.rename_locals)
    release_dir = out / "release"
    subs.write(release, release_dir / f"{NOTEBOOK}.ipynb")
    students, kinds = [], {}
    for i in range(n):
        student = f"s{i:03d}"
        u = rng.random()
        if u < 0.4:
            kind, nb = "complete", complete
        elif u < 0.7:
            kind = "partial"
            nb = subs.fill(release, solution, only=set(rng.sample(ids, rng.randint(1, len(ids) - 1))))
        elif u < 0.9:
            kind, nb = "blank", release
        else:
            kind, nb = "renamed", renamed
        if kind != "blank":                          # a line or two of their own, so that students differ
            filled = [gid for gid in ids if kind != "partial" or _differs(nb, release, gid)]
            extra = rng.choice([f"_unused = {rng.randint(0, 10**6)}",
                                f"# checked on {rng.randint(1, 28)} March, attempt {rng.randint(1, 9)}",
                                f"_unused = {rng.randint(0, 10**6)}\n_seen = [{rng.randint(0, 99)}, {rng.randint(0, 99)}]"])
            nb = _append(nb, rng.choice(filled), extra)
        subs.write(nb, out / "submitted" / student / "rope" / f"{NOTEBOOK}.ipynb")
        students.append(student)
        kinds[student] = kind
    return release_dir, students, kinds


def _differs(nb, release, grade_id: str) -> bool:
    src = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    rel = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in release.cells}
    return src[grade_id] != rel[grade_id]


def _cases() -> dict[str, list[str]]:
    """Case names of the exercises each test cell checks (for messages that group as real ones do)."""
    from autograder.course.source import graded_cells
    from course_lib import grading
    out = {}
    for c in graded_cells("rope"):
        for ex in c.exercises:
            try:
                out[ex] = [case.name for case in grading._exercise(ex).cases]
            except Exception:                        # the names only make the messages look real
                out[ex] = [f"case {i}" for i in range(1, 7)]
    return out


def make_results(students: list[str], kinds: dict[str, str], rng: random.Random) -> list[StudentResult]:
    """Synthetic ``details.csv`` rows per student, as ``autograder.outputs.grade`` returns them."""
    from autograder.course.source import graded_cells
    cells, cases = graded_cells("rope"), _cases()
    results = []
    for student in students:
        missing = rng.random() < 0.03            # no notebook handed in: every row missing
        timed_out = False
        rows = []
        for c in cells:
            if missing:
                status, message = "missing", "notebook not submitted"
            elif c.kind == "manual":
                status = rng.choices(["needs manual grade", "passed", "failed"], [0.7, 0.2, 0.1])[0]
                message = ("graded by hand: no score until a grader gives one" if status == "needs manual grade"
                           else "")
            else:
                weights = [0.55, 0.25, 0.1, 0.04, 0.06] if kinds.get(student) != "blank" else [0, 0, 0.1, 0, 0.9]
                status = rng.choices(["passed", "failed", "error", "timeout", "missing"], weights)[0]
                ex = c.exercises[0] if c.exercises else c.grade_id
                names = cases.get(ex) or ["case 1"]
                k = rng.randrange(len(names))
                where = f"{ex}, case {k + 1}/{len(names)} '{names[k]}' on cpu"
                if status == "passed":
                    message = f"{ex}: {len(names)} cases passed on cpu"
                elif status == "failed":
                    message = rng.choice([
                        f"{where}: output values differ: largest error 0.{rng.randint(1, 10**6):06d}",
                        f"{where}: output values differ: largest error {rng.randint(1, 9)}.{rng.randint(0, 999):03d}e-0{rng.randint(2, 5)}",
                        f"{where}: output has shape ({rng.randint(1, 64)}, {rng.randint(1, 64)}), expected (8, 16)",
                        f"{where}: output dtype torch.float64, expected torch.float32"])
                elif status == "error":
                    message = rng.choice([
                        f"{where}: your function raised RuntimeError: The size of tensor a ({rng.randint(2, 64)}) "
                        f"must match the size of tensor b ({rng.randint(2, 64)}) at non-singleton dimension 1",
                        f"{where}: not implemented yet (the function raised NotImplementedError)",
                        "NameError: name 'rope_thetas' is not defined"])
                elif status == "timeout":
                    timed_out = True
                    message = f"CellTimeoutError: the cell ran past its {rng.choice([10, 20, 30])} s limit"
                else:
                    message = "not answered: the cell is as released (nbgrader scores it 0)"
            rows.append(CellResult.of(c, score=c.max_score if status == "passed" else 0.0, status=status,
                                      message=message))
        results.append(StudentResult(student=student, rows=rows, outcome=TIMED_OUT if timed_out else GRADED,
                                     seconds=None if missing else round(rng.uniform(4.0, 40.0), 2),
                                     cached=rng.random() < 0.1))
    return results


def main() -> None:
    from autograder.outputs import report
    from autograder.outputs import similarity
    sizes = _sizes()
    rows, sim_s, rep_s = [], [], []
    for n in sizes:
        rng = random.Random(0)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            release_dir, students, kinds = make_class(out, n, rng)
            start = time.perf_counter()
            pairs = similarity.write(out, "rope", release_dir, students)
            t_sim = time.perf_counter() - start
            results = make_results(students, kinds, rng)
            start = time.perf_counter()
            report.write(out, "rope", results)
            t_rep = time.perf_counter() - start
        mix = {k: sum(v == k for v in kinds.values()) for k in ("complete", "partial", "blank", "renamed")}
        sim_s.append(t_sim)
        rep_s.append(t_rep)
        rows.append([n, " / ".join(str(mix[k]) for k in mix), f"{t_sim:.2f}", len(pairs), sum(p.flagged for p in pairs),
                     f"{t_rep:.2f}"])
    print("\nSimilarity and class reports over a synthetic RoPE class (one run each, seconds)")
    print(table(["N", "complete / partial / blank / renamed", "similarity s", "pairs compared", "flagged",
                 "report s"], rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, sim_s, marker="o", label="similarity.write")
    ax.plot(sizes, rep_s, marker="s", label="report.write")
    ax.set(xscale="log", yscale="log", xlabel="students N", ylabel="seconds",
           title="End-of-grading reports against class size (RoPE)")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "report.png", dpi=120)
    print(f"plot: {OUT / 'report.png'}")


if __name__ == "__main__":
    main()
