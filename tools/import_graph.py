"""The import graph of a package, read from its source (nothing is imported): ``python tools/import_graph.py
[PACKAGE_DIR]`` (default ``autograder``) prints its modules by level (a module's level is one more than the
highest level it imports; modules that import nothing of the package are level 0), its import cycles, the
largest modules, and, for ``autograder``, every import that goes against the stages' order.

Every import counts, those inside functions too: an import hidden in a function to dodge a cycle is still a
cycle.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

# autograder's stages, in the order the data travels; a module may import its own stage and the ones before.
STAGES = ["course", "release", "intake", "sandbox", "grading", "batch", "outputs", "cli"]


def modules(root: Path) -> dict[str, Path]:
    """{dotted name: file} of every module of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (``from pkg import mod`` counts as importing ``mod``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    g = {name: imports(name, path, known) for name, path in known.items()}
    for name in g:       # importing a package's module runs the package's __init__: not an import of it here
        g[name] = {t for t in g[name] if not name.startswith(t + ".")}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def levels(g: dict[str, set[str]]) -> dict[str, int]:
    """Each module's level; the modules of a cycle share one (the cycle counted as one node)."""
    comp_of = {v: i for i, c in enumerate(cycles(g)) for v in c}
    level: dict[str, int] = {}

    def of(v, seen=()):
        if v in level:
            return level[v]
        group = {w for w, i in comp_of.items() if i == comp_of[v]} if v in comp_of else {v}
        deps = {w for u in group for w in g[u]} - group
        lv = 1 + max((of(w) for w in deps), default=-1)
        for u in group:
            level[u] = lv
        return lv
    for v in sorted(g):
        of(v)
    return level


def stage_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None                                   # the package itself
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def against_the_stages(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a stage imports a later one, or a module outside the stages is
    imported by one of them."""
    bad = []
    for src, targets in sorted(g.items()):
        s = stage_of(src)
        for t in sorted(targets):
            st = stage_of(t)
            if s is None:
                continue                                  # autograder/__main__.py, __init__.py: the top
            if st is None or st > s:
                bad.append((src, t))
    return bad


def report(root: Path, out=sys.stdout) -> dict:
    g = graph(root)
    lv = levels(g)
    cyc = cycles(g)
    sizes = {n: len(p.read_text().splitlines()) for n, p in modules(root).items()}
    print(f"{root.name}: {len(g)} modules, {sum(sizes.values())} lines, {max(lv.values()) + 1} levels, "
          f"{len(cyc)} cycles", file=out)
    for level in range(max(lv.values()) + 1):
        print(f"  level {level}: {', '.join(sorted(n for n, v in lv.items() if v == level))}", file=out)
    for c in cyc:
        print(f"  cycle: {' <-> '.join(c)}", file=out)
    print("  largest: " + ", ".join(f"{n} ({k})" for n, k in sorted(sizes.items(), key=lambda x: -x[1])[:6]), file=out)
    staged = root.name == "autograder" and any((root / s).is_dir() for s in STAGES)
    if staged:                                        # the stages' own graph: which stage imports which
        for i, stage in enumerate(STAGES):
            uses = sorted({STAGES[stage_of(t)] for n, ts in g.items() if stage_of(n) == i for t in ts
                           if stage_of(t) is not None and stage_of(t) != i}, key=STAGES.index)
            print(f"  stage {stage:<8} imports {', '.join(uses) or '-'}", file=out)
    bad = against_the_stages(g) if staged else []
    for src, t in bad:
        print(f"  against the stages: {src} imports {t}", file=out)
    return dict(levels=max(lv.values()) + 1, cycles=cyc, against=bad)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)     # `| head` ends it quietly
    report(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "autograder"))
