"""Grading throughput against --workers, the sandbox's overhead, and what grading costs per assignment.

1. Grades N copies of the complete RoPE sample (autograder/samples/rope/alice) with 1, 2 and 4 workers in
   the sandbox, and with the sandbox off at the fastest worker count; prints a markdown table (submissions
   per minute) and writes build/bench/grading.png.
2. For every assignment (``BENCH_ASSIGNMENTS=rope,gqa`` for some), one worker, side by side in one run:
   seconds for a complete submission with the illustrative cells run and skipped (``--force`` into an OUT
   graded before, the faster of two), beside the plain execution of the graded cells (``jupyter nbconvert
   --execute`` in a process of its own, on the same notebook with the skipped cells removed); and the cost
   of a submission whose every function loops forever (each test cell stopped at its own limit). ``BENCH_BEFORE=1`` also grades that one the way
   grading worked before the test cells' limits (every cell the 60 s cell timeout, illustrative cells
   run): minutes per assignment. Writes build/bench/grading_assignments.png.

3. Submissions per minute on a real Dask scheduler with 1 and 2 workers on this machine, beside
   ``--workers 2``; and a class of 20 graded from scratch, then rerun after one resubmission.

``BENCH_GRADING=throughput``, ``=assignments`` or ``=cluster`` runs one part.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from autograder.course.source import REPO
from autograder.outputs.grade import grade
from autograder.sandbox.kernel import check

from .common import OUT, execute, table

N = 8


def _auto_max(result: dict) -> float:
    """The points the autograder gives (written answers await a grader)."""
    return sum(row["max_score"] for row in result["rows"] if row.get("kind") != "manual")


def throughput() -> None:
    sample = REPO / "autograder" / "samples" / "rope" / "alice" / "rope.ipynb"
    sandbox = "on" if check() is None else "off"
    rows, per_minute = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        for i in range(N):
            (subs / f"s{i:02d}").mkdir(parents=True)
            shutil.copy(sample, subs / f"s{i:02d}" / "rope.ipynb")
        runs = [(w, sandbox) for w in (1, 2, 4)] + ([(2, "off")] if sandbox == "on" else [])
        for workers, mode in runs:
            start = time.perf_counter()
            results = grade("rope", subs, Path(tmp) / f"out-{workers}-{mode}", workers=workers, quiet=True,
                            sandbox=mode)
            seconds = time.perf_counter() - start
            assert all(r["score"] == _auto_max(r) for r in results), "a complete submission lost points"
            per_minute[(workers, mode)] = 60 * N / seconds
            rows.append([workers, mode, f"{seconds:.1f}", f"{seconds / N:.1f}", f"{60 * N / seconds:.1f}"])
    print(f"\nGrading {N} complete RoPE submissions (2 CPU cores here)")
    print(table(["workers", "sandbox", "seconds", "s / submission", "submissions / min"], rows))
    if (2, "off") in per_minute and (2, "on") in per_minute:
        overhead = 60 / per_minute[(2, "on")] - 60 / per_minute[(2, "off")]
        print(f"sandbox overhead at 2 workers: {overhead:+.2f} s per notebook")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ws = [w for w, m in per_minute if m == sandbox]
    ax.plot(ws, [per_minute[(w, sandbox)] for w in ws], marker="o", label=f"sandbox {sandbox}")
    if (2, "off") in per_minute and sandbox == "on":
        ax.plot([2], [per_minute[(2, "off")]], marker="s", linestyle="", label="sandbox off")
    ax.set(xlabel="--workers", ylabel="submissions per minute", title="Grading throughput (RoPE notebook)")
    ax.set_xticks(ws)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "grading.png", dpi=120)
    print(f"plot: {OUT / 'grading.png'}")


def _all_loop(release, solution):
    """The complete submission with every function of every answer cell redefined to loop forever."""
    import ast

    from autograder.intake import samples as subs
    nb = subs.fill(release, solution)
    for gid, answer in subs.answers(solution).items():
        try:
            names = [n.name for n in ast.parse(answer).body if isinstance(n, ast.FunctionDef)]
        except SyntaxError:
            continue
        loops = "".join(f"\n\ndef {n}(*args, **kwargs):\n    while True:\n        pass\n" for n in names)
        if loops:
            nb = subs.edit(nb, gid, lambda s, loops=loops: s + loops)
    return nb


def _nbconvert(path: Path, env: dict) -> float:
    """Seconds of ``jupyter nbconvert --execute`` of ``path`` (a process of its own, as an instructor runs it)."""
    import os
    import subprocess
    import sys
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("jupyter")), "nbconvert", "--execute", "--to", "notebook",
                    "--output", f"{path.stem}.out", str(path)], env={**os.environ, **env}, check=True,
                   capture_output=True, cwd=path.parent)
    return time.perf_counter() - start


def per_assignment() -> None:
    import os

    import nbformat

    from autograder.intake import samples as subs
    from autograder.course.cells import SkipPlan, without_skipped
    from autograder.course.source import assignments, source_notebooks
    names = [a for a in os.environ.get("BENCH_ASSIGNMENTS", "").split(",") if a] or assignments()
    before = bool(os.environ.get("BENCH_BEFORE"))
    sandbox = "on" if check() is None else "off"
    env = dict(NBGRADER_EXECUTION="autograde", WANDB_MODE="disabled", MPLBACKEND="Agg")
    rows, plot = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            dirs = {k: tmp / name / k for k in ("complete", "all_loop")}
            plains = []
            for path in source_notebooks(name):
                release, solution = subs.load(name, path.stem)
                complete = subs.fill(release, solution)
                subs.write(complete, dirs["complete"] / "student" / path.name)
                subs.write(_all_loop(release, solution), dirs["all_loop"] / "student" / path.name)
                work = tmp / name / "plain"
                work.mkdir(parents=True, exist_ok=True)
                for entry in path.parent.iterdir():        # the files the notebook reads, beside it
                    if entry.suffix != ".ipynb" and not entry.name.startswith("."):
                        if entry.is_dir():
                            shutil.copytree(entry, work / entry.name, dirs_exist_ok=True)
                        else:
                            shutil.copyfile(entry, work / entry.name)
                plains.append(subs.write(without_skipped(complete, SkipPlan(nbformat.read(path, as_version=4))),
                                         work / path.name))
            times = {}
            runs = [("run", dirs["complete"], dict(run_illustrative=True)), ("skipped", dirs["complete"], {}),
                    ("loop", dirs["all_loop"], {})]
            if before:
                runs.append(("loop before", dirs["all_loop"], dict(run_illustrative=True, test_cell_timeout=60)))
            plain = []
            for attempt in range(2):       # side by side, twice; the faster of the two (noise only adds time)
                plain.append(sum(_nbconvert(p, env) for p in plains))
                for label, folder, kw in runs if attempt == 0 else runs[:2]:
                    start = time.perf_counter()
                    results = grade(name, folder, tmp / name / f"out-{label}", workers=1, quiet=True,
                                    sandbox=sandbox, force=True, **kw)
                    times[label] = min(times.get(label, float("inf")), time.perf_counter() - start)
                    if label in ("run", "skipped"):
                        assert all(r["score"] == _auto_max(r) for r in results), f"{name}: a complete submission lost points"
                    else:
                        assert all(r["score"] == 0 for r in results), f"{name}: an all-looping submission scored"
            plain = min(plain)
            plot[name] = times | {"plain": plain}
            rows.append([name, f"{times['run']:.1f}", f"{times['skipped']:.1f}", f"{plain:.1f}",
                         f"{times['skipped'] / plain:.2f}", f"{times['loop']:.1f}"]
                        + ([f"{times['loop before']:.1f}"] if before else []))
    print(f"\nOne submission per assignment, 1 worker, sandbox {sandbox}: seconds of grade() (the work of"
          f" `python -m autograder grade`, not its interpreter's start), --force into an OUT graded before (the grader's start included; a fresh OUT adds the template\n"
          f"gradebook and the kernels' course_lib once, about 3 s) beside `jupyter nbconvert --execute` of the graded"
          f" cells; the faster of two runs side by side")
    print(table(["assignment", "complete, illustrative run", "complete, skipped", "plain execution",
                 "skipped / plain", "all functions loop"] + (["all loop, before"] if before else []), rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    keys = ["run", "skipped", "plain", "loop"] + (["loop before"] if before else [])
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar([i + k * width for i in range(len(plot))], [plot[n][key] for n in plot], width, label=key)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(plot))], list(plot), rotation=30)
    ax.set(ylabel="seconds", title="Grading one submission")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "grading_assignments.png", dpi=120)
    print(f"plot: {OUT / 'grading_assignments.png'}")


def _dask_cluster(n_workers: int):
    """A real `dask scheduler` and ``n_workers`` `dask worker` processes on 127.0.0.1: (address, stop)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"], **quiet)
              for _ in range(n_workers)]
    from distributed import Client
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=120)

    def stop():
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return address, stop


def cluster_and_reruns() -> None:
    """Submissions per minute on Dask workers here (1 and 2) beside --workers 2; and a rerun of a class
    of 20 after one student resubmitted, beside grading the class from scratch."""
    from autograder.intake import samples as subs
    sample = REPO / "autograder" / "samples" / "rope" / "alice" / "rope.ipynb"
    sandbox = "on" if check() is None else "off"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(N):
            (tmp / "subs" / f"s{i:02d}").mkdir(parents=True)
            shutil.copy(sample, tmp / "subs" / f"s{i:02d}" / "rope.ipynb")
        runs = [("--workers 2", None, 2)] + [(f"Dask, {n} worker{'s' if n > 1 else ''}", n, 1) for n in (1, 2)]
        for label, n, workers in runs:
            address, stop = _dask_cluster(n) if n else (None, lambda: None)
            try:
                start = time.perf_counter()
                results = grade("rope", tmp / "subs", tmp / f"out-{label}", workers=workers, quiet=True,
                                sandbox=sandbox, scheduler=address, force=True)
                seconds = time.perf_counter() - start
            finally:
                stop()
            assert all(r["score"] == _auto_max(r) for r in results)
            rows.append([label, f"{seconds:.1f}", f"{60 * N / seconds:.1f}"])
        print(f"\nGrading {N} complete RoPE submissions, sandbox {sandbox}, Dask scheduler and workers on this machine")
        print(table(["how", "seconds", "submissions / min"], rows))

        release, solution = subs.load("rope", "rope")
        klass = tmp / "class"
        for i in range(20):
            subs.write(subs.fill(release, solution) if i % 2 else release, klass / f"s{i:02d}" / "rope.ipynb")
        out = tmp / "class-out"
        start = time.perf_counter()
        grade("rope", klass, out, workers=2, quiet=True, sandbox=sandbox)
        scratch = time.perf_counter() - start
        subs.write(subs.fill(release, solution), klass / "s00" / "rope.ipynb")          # one resubmission
        start = time.perf_counter()
        results = grade("rope", klass, out, workers=2, quiet=True, sandbox=sandbox)
        rerun = time.perf_counter() - start
        assert sum(not r.get("cached") for r in results) == 1
    print("\nA class of 20 RoPE submissions, --workers 2: from scratch, then a rerun after 1 resubmission")
    print(table(["run", "seconds", "graded", "reused"], [["from scratch", f"{scratch:.1f}", 20, 0],
                                                        ["rerun", f"{rerun:.1f}", 1, 19]]))


def main() -> None:
    import os
    parts = os.environ.get("BENCH_GRADING", "throughput,assignments,cluster").split(",")
    if "throughput" in parts:
        throughput()
    if "assignments" in parts:
        per_assignment()
    if "cluster" in parts:
        cluster_and_reruns()


if __name__ == "__main__":
    main()
