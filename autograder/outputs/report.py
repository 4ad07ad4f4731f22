"""What the class did: ``OUT/report.html`` and the same numbers as CSV in ``OUT/report/``.

Written at the end of every grading run and of ``export`` (``autograder.outputs.export.finish``), from the rows
of ``details.csv`` (the same dicts), so reused submissions of an incremental rerun and manual grades count
as they do there:

* the score histogram (``scores.csv``);
* per exercise: the pass rate and the count of each status (``exercises.csv``);
* per exercise, the most common verdicts, grouped by hidden case and device: ``course_lib.grading``'s
  one-line messages name them ("apply_rope_pairs, case 6/9 'bfloat16' on cuda: output values differ ..."),
  the numbers after the case replaced by ``#``, so that "largest error 0.21" and "0.34" are one verdict
  (``verdicts.csv``);
* grading time per submission, the slowest named (``times.csv``);
* students with missing or unreadable notebooks (``problems.csv``);
* a link to the similarity report (``autograder.outputs.similarity``) and its top pairs.

The figures are also ``report/figure-N.png``.

Only messages are shown: what a student's feedback already shows, never a hidden test's source. The
figures are matplotlib's (its object API: no pyplot state in the grader), embedded as PNG in the page so
that it opens offline, from anywhere, alone.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

from autograder.grading.records import GRADED_BY_HAND, NEEDS_MANUAL
from autograder.outputs.tables import is_final

STATUSES = ["passed", "failed", "error", "timeout", "missing", NEEDS_MANUAL, GRADED_BY_HAND]
COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#ef6c00", "timeout": "#6a1b9a",
          "missing": "#9e9e9e", NEEDS_MANUAL: "#1565c0", GRADED_BY_HAND: "#64b5f6"}
CASE = re.compile(r"^(?P<exercise>[\w.]+), case (?P<case>\d+/\d+ '[^']*') on (?P<device>[\w:]+): (?P<what>.*)$", re.S)
NUMBER = re.compile(r"(?<![\w/])[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?(?![\w/])")
TOP = 5                      # verdicts per exercise, slowest submissions shown in the page
UNREADABLE = ("not a readable notebook", "notebook not submitted")


def load_matplotlib(out: Path) -> None:
    """Import matplotlib with its configuration and font cache in ``OUT/.cache/.matplotlib`` (unless
    ``MPLCONFIGDIR`` names a folder): the grader writes nothing into HOME. matplotlib keeps the folder it
    found at its first import, so the variable is set for that import only (kernels get their own)."""
    if "matplotlib" in sys.modules or os.environ.get("MPLCONFIGDIR"):
        return
    from autograder.batch.cache import DIR
    folder = Path(out) / DIR / ".matplotlib"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["MPLCONFIGDIR"] = str(folder)
    try:
        import matplotlib
        matplotlib.get_configdir(), matplotlib.get_cachedir()
        import matplotlib.font_manager  # noqa: F401  (its font cache, written once)
    finally:
        del os.environ["MPLCONFIGDIR"]


def verdict_of(message: str) -> tuple[str, str, str]:
    """(case, device, verdict) of a row's message: the case and device ``course_lib.grading`` names, and
    the rest with its numbers as ``#`` (the errors and values differ from student to student). Other
    messages (a timeout, an exception, a missing notebook) are the verdict as they are, case and device empty."""
    m = CASE.match(message.strip())
    if m:
        return m["case"], m["device"], NUMBER.sub("#", m["what"]).strip()
    return "", "", message.strip()


def exercise_stats(results: list[dict]) -> list[dict]:
    """One dict per graded cell, in the order of the rows: its points, the count of each status, the pass
    rate (passed / students) and the mean score."""
    by = {}
    for r in results:
        for row in r.rows:
            e = by.setdefault((row.notebook, row.grade_id), dict(
                notebook=row.notebook, grade_id=row.grade_id, kind=row.kind,
                max_score=row.max_score, students=0, scored=0, points=0.0, **{s: 0 for s in STATUSES}))
            e["students"] += 1
            e[row.status] = e.get(row.status, 0) + 1
            if row.status != NEEDS_MANUAL:
                e["scored"] += 1
                e["points"] += row.score
    for e in by.values():
        e["pass_rate"] = e["passed"] / e["students"] if e["students"] else 0.0
        e["mean_score"] = e["points"] / e["scored"] if e["scored"] else None
    return list(by.values())


def common_verdicts(results: list[dict]) -> list[dict]:
    """Every verdict that is not a pass, with how many students got it, most common first per exercise."""
    groups = defaultdict(list)
    for r in results:
        for row in r.rows:
            if row.status in ("passed", NEEDS_MANUAL, GRADED_BY_HAND):
                continue
            case, device, what = verdict_of(row.message or row.status)
            groups[(row.notebook, row.grade_id, row.status, case, device, what)].append(
                (r.student, row.message))
    order = {}
    for r in results:
        for row in r.rows:
            order.setdefault((row.notebook, row.grade_id), len(order))
    out = [dict(notebook=k[0], grade_id=k[1], status=k[2], case=k[3], device=k[4], verdict=k[5],
                students=len(v), who=" ".join(sorted(s for s, _ in v)), example=v[0][1]) for k, v in groups.items()]
    return sorted(out, key=lambda d: (order[(d["notebook"], d["grade_id"])], -d["students"], d["status"], d["verdict"]))


def problems(results: list[dict]) -> list[dict]:
    """Students whose notebook was missing or could not be read, one row per notebook."""
    seen = {}
    for r in results:
        for row in r.rows:
            msg = row.message or ""
            if msg.startswith(UNREADABLE):
                seen.setdefault((r.student, row.notebook),
                                dict(student=r.student, notebook=row.notebook, status=row.status, problem=msg))
    return list(seen.values())


def times(results: list[dict]) -> list[dict]:
    """Seconds each submission took to grade (when it was graded: a reused one keeps its first run's), slowest first."""
    rows = [dict(student=r.student, seconds=float(r.seconds), reused="yes" if r.cached else "no",
                 timed_out="yes" if r.timed_out else "no") for r in results if r.seconds is not None]
    return sorted(rows, key=lambda d: (-d["seconds"], d["student"]))


def score_bins(results: list[dict]) -> tuple[list[float], list[int]]:
    """Bin edges (one point wide, up to 20 bins) over 0..max_score and the students in each."""
    import numpy as np
    top = max([r.max_score for r in results] + [1.0])
    edges = np.linspace(0.0, top, int(min(20, max(1, np.ceil(top)))) + 1)
    counts, _ = np.histogram([min(max(r.score, 0.0), top) for r in results], bins=edges)
    return [float(e) for e in edges], [int(c) for c in counts]


# ------------------------------------------------------------------------------------------------ figures
def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(assignment, results, stats, timing) -> dict[str, tuple[str, str]]:
    """{name: (title, base64 PNG)}: what each shows is its title (no pass-rate figure without autograded
    cells, no time figure without times)."""
    from matplotlib.figure import Figure
    figs = {}
    edges, counts = score_bins(results)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
           color="#1565c0", edgecolor="white")
    top = max(r.max_score for r in results) if results else 0
    title = f"Scores of the {len(results)} students in {assignment} (out of {top:g} points)"
    ax.set(title=title, xlabel="score (points)", ylabel="students")
    ax.yaxis.get_major_locator().set_params(integer=True)
    figs["scores"] = (title, _png(fig))

    labels = [f"{e['grade_id']} ({e['max_score']:g} pt)" for e in stats]
    height = 0.6 + 0.32 * len(stats)
    auto = [e for e in stats if e["kind"] != "manual"]
    if auto:
        fig = Figure(figsize=(7, 0.6 + 0.32 * len(auto)))
        ax = fig.add_subplot()
        ax.barh(range(len(auto)), [100 * e["pass_rate"] for e in auto], color="#2e7d32")
        ax.set_yticks(range(len(auto)), [f"{e['grade_id']} ({e['max_score']:g} pt)" for e in auto])
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        title = "Pass rate per autograded exercise (% of students whose test cell passed)"
        ax.set(title=title, xlabel="% of students")
        figs["pass_rate"] = (title, _png(fig))

    fig = Figure(figsize=(7, height + 0.5))
    ax = fig.add_subplot()
    left = [0] * len(stats)
    for s in STATUSES:
        n = [e[s] for e in stats]
        if any(n):
            ax.barh(range(len(stats)), n, left=left, color=COLORS[s], label=s)
            left = [a + b for a, b in zip(left, n)]
    ax.set_yticks(range(len(stats)), labels)
    ax.invert_yaxis()
    title = "Statuses per exercise (students in each)"
    ax.set(title=title, xlabel="students")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize="small", frameon=False)
    figs["statuses"] = (title, _png(fig))

    if timing:
        fig = Figure(figsize=(7, 3.2))
        ax = fig.add_subplot()
        secs = [t["seconds"] for t in timing]
        ax.hist(secs, bins=min(30, max(5, len(secs))), color="#6a1b9a", edgecolor="white")
        slow = timing[0]
        ax.annotate(f"slowest: {slow['student']} ({slow['seconds']:.1f} s)", xy=(slow["seconds"], 0),
                    xytext=(0.55, 0.8), textcoords="axes fraction", arrowprops=dict(arrowstyle="->"))
        title = f"Grading time per submission (seconds, {len(secs)} submissions)"
        ax.set(title=title, xlabel="seconds", ylabel="submissions")
        figs["times"] = (title, _png(fig))
    return figs


# ------------------------------------------------------------------------------------------------ output
def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()})


EXERCISE_COLUMNS = ["notebook", "grade_id", "kind", "max_score", "students", *STATUSES, "pass_rate", "mean_score"]
VERDICT_COLUMNS = ["notebook", "grade_id", "status", "case", "device", "verdict", "students", "who", "example"]


def write(out: Path, assignment: str, results: list[dict]) -> Path:
    """``OUT/report.html`` and ``OUT/report/*.csv`` for ``results`` (the rows of details.csv); returns the page."""
    out = Path(out)
    load_matplotlib(out)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    stats, verdicts, trouble, timing = exercise_stats(results), common_verdicts(results), problems(results), times(results)
    edges, counts = score_bins(results)
    _write_csv(folder / "exercises.csv", stats, EXERCISE_COLUMNS)
    _write_csv(folder / "verdicts.csv", verdicts, VERDICT_COLUMNS)
    _write_csv(folder / "times.csv", timing, ["student", "seconds", "reused", "timed_out"])
    _write_csv(folder / "problems.csv", trouble, ["student", "notebook", "status", "problem"])
    _write_csv(folder / "scores.csv", [dict(low=a, high=b, students=n) for a, b, n in zip(edges, edges[1:], counts)],
               ["low", "high", "students"])
    figures = _figures(assignment, results, stats, timing)
    for old in folder.glob("figure-*.png"):
        old.unlink()
    for i, (title, png) in enumerate(figures.values(), 1):          # the figures as files too, for slides or an email
        (folder / f"figure-{i}.png").write_bytes(base64.b64decode(png))
    page = out / "report.html"
    page.write_text(_page(assignment, results, dict(stats=stats, verdicts=verdicts, trouble=trouble, timing=timing),
                          figures, _similarity(folder)))
    return page


def _similarity(folder: Path) -> list[dict] | None:
    path = folder / "similarity.csv"
    if not path.is_file():
        return None
    with open(path) as f:
        return list(csv.DictReader(f))


def _table(head: list[str], rows: list[list]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _figure_html(figures: dict, *names: str) -> list[str]:
    e = html.escape
    return [f"<figure><img alt='{e(t)}' src='data:image/png;base64,{png}'><figcaption>{e(t)}</figcaption></figure>"
            for t, png in (figures[n] for n in names if n in figures)]


def _page(assignment, results, tables: dict, figures, similar) -> str:
    """The page; ``tables``: the per-exercise ``stats``, common ``verdicts``, ``trouble`` and ``timing`` rows."""
    stats, verdicts, trouble, timing = tables["stats"], tables["verdicts"], tables["trouble"], tables["timing"]
    e = html.escape
    scores = [r.score for r in results]
    final = sum(is_final(r) for r in results)
    mean = sum(scores) / len(scores) if scores else 0.0
    top = max([r.max_score for r in results] + [0])
    parts = [f"<h1>Class report: {e(assignment)}</h1>",
             f"<p>{len(results)} students; mean score {mean:.2f} of {top:g} points; {final} of {len(results)} totals "
             f"final ({len(results) - final} await a grader). The numbers are those of <code>details.csv</code>; "
             f"the same as CSV in <code>report/</code>.</p>"]
    parts += _figure_html(figures, "scores")
    parts.append("<h2>Exercises</h2>")
    parts += _figure_html(figures, "pass_rate", "statuses")
    parts.append(_table(["notebook", "exercise", "points", "students", *STATUSES, "pass rate", "mean score"],
                        [[e(s["notebook"]), e(s["grade_id"]), f"{s['max_score']:g}", s["students"], *[s[k] for k in STATUSES],
                          "" if s["kind"] == "manual" else f"{s['pass_rate']:.0%}",
                          "" if s["mean_score"] is None else f"{s['mean_score']:.2f}"] for s in stats]))
    parts.append("<h2>Most common verdicts</h2><p>Per exercise, the verdicts that were not a pass, grouped by the "
                 "hidden case and device they name (numbers written as #), with how many students got each.</p>")
    by = defaultdict(list)
    for v in verdicts:
        by[(v["notebook"], v["grade_id"])].append(v)
    for (nb, gid), vs in by.items():
        parts.append(f"<h3>{e(gid)} <small>({e(nb)}.ipynb)</small></h3>")
        parts.append(_table(["students", "status", "case", "device", "verdict"],
                            [[v["students"], e(v["status"]), e(v["case"]), e(v["device"]), e(v["verdict"])] for v in vs[:TOP]]))
        if len(vs) > TOP:
            parts.append(f"<p>{len(vs) - TOP} more in report/verdicts.csv.</p>")
    if not by:
        parts.append("<p>Every graded cell passed.</p>")
    if timing:
        parts.append("<h2>Grading time</h2>")
        parts += _figure_html(figures, "times")
        reused = sum(t["reused"] == "yes" for t in timing)
        parts.append(f"<p>Slowest {min(TOP, len(timing))} ({reused} of {len(timing)} reused from an earlier run: "
                     "their time is that run's):</p>")
        parts.append(_table(["student", "seconds", "reused", "stopped at its budget"],
                            [[e(t["student"]), f"{t['seconds']:.1f}", t["reused"], t["timed_out"]] for t in timing[:TOP]]))
    parts.append("<h2>Missing or unreadable notebooks</h2>")
    parts.append(_table(["student", "notebook", "status", "problem"],
                        [[e(p["student"]), e(p["notebook"]), e(p["status"]), e(p["problem"])] for p in trouble])
                 if trouble else "<p>None: every student handed in readable notebooks.</p>")
    parts.append("<h2>Similarity</h2>")
    if similar is None:
        parts.append("<p>No similarity report (fewer than two students, or it could not be made: see the grading output).</p>")
    else:
        flagged = [s for s in similar if s["flagged"] == "yes"]
        parts.append(f"<p><a href='report/similarity.html'>The similarity report</a> (and report/similarity.csv): "
                     f"{len(flagged)} pairs flagged of {len(similar)} that share code. Top pairs:</p>")
        parts.append(_table(["rank", "student A", "student B", "A's code in B's", "B's code in A's", "shared characters", "flagged"],
                            [[s["rank"], e(s["student_a"]), e(s["student_b"]), f"{float(s['similarity_a']):.0%}",
                              f"{float(s['similarity_b']):.0%}", s["overlap"], s["flagged"]] for s in similar[:TOP]]))
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Class report: {e(assignment)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; max-width: 100%; }} td, th {{ border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }}
td {{ overflow-wrap: anywhere; word-break: break-word; }} pre {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 90%; }}
</style></head><body>
{body}
</body></html>
"""
