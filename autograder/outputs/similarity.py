"""Which students handed in the same code: a similarity report over the class's solution cells.

The measure is copydetect's (winnowed k-gram fingerprints, as MOSS: Schleimer, Wilkerson and Aiken, 2003),
not ours. copydetect tokenises with Pygments and writes every name as ``V`` and every string as ``S``, so a
copy with renamed variables and new comments has the same fingerprints as its original. What is ours is
only what goes into it, because a notebook is not a source file:

* a student's code is their **solution cells** (nbgrader's ``solution: true`` code cells, written answers
  left out), notebook by notebook, in the release's order;
* of each cell, only the **lines the student wrote**: the lines ``difflib`` finds inserted or changed
  against the same cell of the released template. Removing the template's k-grams alone (copydetect's
  boilerplate, also applied) leaves the k-grams that straddle a template line and a one-line fill, so two
  students who filled ``total += x`` into the same scaffold would score 1.0;
* a pair is **flagged** when one of them has at least ``FLAG_SIMILARITY`` of their code in the other's and
  they share at least ``FLAG_OVERLAP`` characters of normalised code: a short answer written the same way
  by two students is not evidence (copydetect's ``display_t`` alone would flag it).

``noise_t = guarantee_t = K`` (copydetect's default 25, window 1): every k-gram is kept, so scores do not
depend on Python's string-hash seed (a window over hashes would pick different k-grams per process).

Pairs are ranked flagged first, then by the larger of the two similarities, then the smaller, then the
overlap: a renamed copy of a whole submission (1.0 both ways) ranks above a partial submission all of
whose code is also in a complete one (1.0 one way). ``write`` makes ``OUT/report/similarity.csv`` (every pair sharing anything)
and ``OUT/report/similarity.html`` (offline, the two students' code side by side, what they share marked).
"""
from __future__ import annotations

import csv
import difflib
import html
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

K = 25                      # copydetect's noise_t = guarantee_t (characters of normalised code)
FLAG_SIMILARITY = 0.5       # share of one student's code found in the other's
FLAG_OVERLAP = 75           # characters of normalised code the two share (3 k-grams' worth)
MAX_CODE = 200_000          # characters of a student's code compared (a notebook can be anything)
SHOWN = 30                  # pairs shown side by side in the HTML (every pair is in the CSV)
COLUMNS = ["rank", "student_a", "student_b", "similarity_a", "similarity_b", "overlap", "flagged"]


@dataclass
class Pair:
    a: str
    b: str
    similarity_a: float       # share of a's code found in b's
    similarity_b: float       # share of b's code found in a's
    overlap: int              # characters of normalised code they share
    slices: tuple = field(default=((), ()), repr=False)   # copydetect's: where in each one's code the shared part is
    marked: tuple[str, str] = field(default=("", ""), repr=False)   # HTML of each one's code, shared part marked

    @property
    def flagged(self) -> bool:
        return max(self.similarity_a, self.similarity_b) >= FLAG_SIMILARITY and self.overlap >= FLAG_OVERLAP

    def rank_key(self):
        return (not self.flagged, -max(self.similarity_a, self.similarity_b), -min(self.similarity_a, self.similarity_b),
                -self.overlap, self.a, self.b)


def _is_solution_code(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return cell.get("cell_type") == "code" and isinstance(meta, dict) and bool(meta.get("solution"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def template_cells(release: Path) -> dict[tuple[str, str], str]:
    """{(notebook, grade id): source} of the solution cells of the released notebooks in ``release``."""
    cells = {}
    for path in sorted(Path(release).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb.get("cells", []):
            if _is_solution_code(cell):
                gid = cell["metadata"]["nbgrader"].get("grade_id")
                cells[(path.stem, str(gid))] = _source(cell)
    return cells


def own_lines(student: str, template: str) -> str:
    """The lines of ``student`` that ``difflib`` finds inserted or changed against ``template``."""
    a, b = template.splitlines(), student.splitlines()
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return "\n".join(line for op, _, _, j1, j2 in ops if op in ("insert", "replace") for line in b[j1:j2])


def solution_code(notebooks: dict[str, Path], template: dict[tuple[str, str], str]) -> str | None:
    """One student's own lines of their solution cells, cell after cell, each under a comment naming it
    (comments do not count: copydetect drops them). None when no notebook could be read."""
    parts, read = [], False
    for name in sorted(notebooks):
        try:
            nb = json.loads(Path(notebooks[name]).read_text(errors="replace"))
            cells = nb["cells"] if isinstance(nb, dict) and isinstance(nb.get("cells"), list) else None
        except (OSError, ValueError):
            cells = None
        if cells is None:
            continue
        read = True
        for cell in cells:
            if not isinstance(cell, dict) or not _is_solution_code(cell):
                continue
            gid = str(cell["metadata"]["nbgrader"].get("grade_id"))
            mine = own_lines(_source(cell), template.get((name, gid), ""))
            if mine.strip():
                parts.append(f"# {name}.ipynb, {gid}\n{mine}\n")
    return "".join(parts)[:MAX_CODE] if read else None


def compare(codes: dict[str, str], template: str = "") -> list[Pair]:
    """Every pair of students whose code shares a fingerprint, ranked (most similar first). ``template``:
    code whose k-grams count for nobody (copydetect's boilerplate)."""
    import numpy as np
    from copydetect import CodeFingerprint, compare_files
    from copydetect.utils import highlight_overlap
    boilerplate = np.unique(np.array(list(CodeFingerprint("template.py", K, 1, fp=io.StringIO(template)).hashes)
                                     if template.strip() else [], dtype=np.int64))
    prints = {s: CodeFingerprint(f"{s}.py", K, 1, boilerplate=boilerplate, fp=io.StringIO(code))
              for s, code in sorted(codes.items()) if code.strip()}
    holders: dict[int, list[str]] = {}         # who has each fingerprint: only pairs sharing one are compared
    for s, fp in prints.items():
        for h in fp.hashes:
            holders.setdefault(h, []).append(s)
    candidates = {pair for names in holders.values() for pair in itertools.combinations(sorted(names), 2)}
    pairs = []
    for a, b in sorted(candidates):
        overlap, (sim_a, sim_b), (slices_a, slices_b) = compare_files(prints[a], prints[b])
        if not overlap:
            continue
        pairs.append(Pair(a, b, float(min(sim_a, 1.0)), float(min(sim_b, 1.0)), int(overlap), (slices_a, slices_b)))
    pairs.sort(key=Pair.rank_key)
    for p in pairs[:SHOWN]:                    # the pairs the HTML shows side by side
        p.marked = tuple(highlight_overlap(prints[s].raw_code, sl, "<mark>", "</mark>", escape_html=True)[0]
                         for s, sl in ((p.a, p.slices[0]), (p.b, p.slices[1])))
    return pairs


def class_codes(out: Path, assignment: str, release: Path) -> tuple[dict[str, str], str]:
    """({student: own code} of those with a readable notebook, the template's solution code) of the class
    in ``OUT/submitted`` (nbgrader's layout: the copies grading made)."""
    template = template_cells(release)
    codes = {}
    for folder in sorted((Path(out) / "submitted").glob(f"*/{assignment}")):
        notebooks = {p.stem: p for p in sorted(folder.glob("*.ipynb")) if p.is_file()}
        code = solution_code(notebooks, template)
        if code is not None:
            codes[folder.parent.name] = code
    return codes, "\n".join(template.values())


def write(out: Path, assignment: str, release: Path, students: list[str]) -> list[Pair]:
    """``OUT/report/similarity.csv`` and ``similarity.html`` for the class; returns the ranked pairs."""
    from autograder.outputs.report import load_matplotlib
    load_matplotlib(out)                       # copydetect imports matplotlib: not into HOME
    folder = Path(out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    codes, template = class_codes(out, assignment, release)
    pairs = compare(codes, template)
    with open(folder / "similarity.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, p in enumerate(pairs, 1):
            w.writerow([i, p.a, p.b, f"{p.similarity_a:.3f}", f"{p.similarity_b:.3f}", p.overlap,
                        "yes" if p.flagged else "no"])
    nothing = sorted(set(students) - {s for s, c in codes.items() if c.strip()})
    (folder / "similarity.html").write_text(_page(assignment, pairs, len(students), nothing))
    return pairs


def _page(assignment: str, pairs: list[Pair], n_students: int, nothing: list[str]) -> str:
    e = html.escape
    flagged = [p for p in pairs if p.flagged]
    rows = "".join(
        f"<tr class='{'flag' if p.flagged else ''}'><td>{i}</td><td>{e(p.a)}</td><td>{e(p.b)}</td>"
        f"<td>{p.similarity_a:.0%}</td><td>{p.similarity_b:.0%}</td><td>{p.overlap}</td>"
        f"<td>{'yes' if p.flagged else 'no'}</td><td><a href='#pair-{i}'>side by side</a></td></tr>"
        for i, p in enumerate(pairs[:SHOWN], 1))
    sides = "".join(
        f"<section id='pair-{i}'><h3>{i}. {e(p.a)} and {e(p.b)}: {p.similarity_a:.0%} of {e(p.a)}'s code is in "
        f"{e(p.b)}'s, {p.similarity_b:.0%} the other way ({p.overlap} characters of normalised code)</h3>"
        f"<div class='sides'><div><h4>{e(p.a)}</h4><pre>{p.marked[0]}</pre></div>"
        f"<div><h4>{e(p.b)}</h4><pre>{p.marked[1]}</pre></div></div></section>"
        for i, p in enumerate(pairs[:SHOWN], 1))
    more = f"<p>{len(pairs) - SHOWN} more pairs share something: similarity.csv has them all.</p>" if len(pairs) > SHOWN else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Similarity: {e(assignment)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 110em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .25em .6em; text-align: left; }}
tr.flag td {{ background: #fde2e2; }}
.sides {{ display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1em; }}
pre {{ background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 85%; }}
mark {{ background: #ffd27a; }}
</style></head><body>
<h1>Similarity of the solution cells: {e(assignment)}</h1>
<p>{n_students} students; {len(pairs)} pairs share code; <strong>{len(flagged)} flagged</strong> (one of the two
has at least {FLAG_SIMILARITY:.0%} of their code in the other's, and they share at least {FLAG_OVERLAP} characters).
Measured by <a href="https://github.com/blingenf/copydetect">copydetect</a> (k-grams of {K} characters of code with
every name written as V, so renaming variables changes nothing) over the lines each student wrote in the
solution cells: the released template is taken out. A high score is a reason to look, not a verdict.</p>
<p>With no code of their own to compare (blank, missing or unreadable): {e(', '.join(nothing)) or 'nobody'}.</p>
<table><tr><th>rank</th><th>student A</th><th>student B</th><th>A's code in B's</th><th>B's code in A's</th>
<th>shared characters</th><th>flagged</th><th></th></tr>{rows}</table>{more}
{sides}
</body></html>
"""
