"""Which assignments a notebook needs, found from the code (never typed by hand).

An assignment B *uses* an assignment A when the code of B's notebook (its code cells, solution cells
included, hidden tests left out: they run only under grading, where ``course_lib.grading`` is the
grader's) reaches, through ``course_lib``, a function that A's exercises remove from the student's
``course_lib`` (``autograder.release.bundle.exercise_functions``: A's references and the functions that give
them away). Then B can be handed out only once A is due: before that, B's notebook would call a removed
body and fail (kv_cache's ``TinyDecoder(rope=apply_rope_pairs)``, the capstone's model on GQA's
``grouped_query_attention``).

*Reaches* is a reference graph over ``course_lib``'s functions and classes, read from their source with
``ast`` and resolved with the objects themselves (so that re-exports, ``import ... as`` and package
``__init__`` files resolve to where a function is defined):

* a function reaches every course_lib function or class its source names (decorators, default values and
  nested functions included);
* a class reaches everything its body names (all its methods: an instance may call any of them) and its
  bases;
* a module-level value (a table of functions, a default config) reaches what the module's top-level
  statements name;
* a module used as a whole (passed around rather than ``module.name``) reaches all of its top level.

Python's dynamic lookups (``getattr(module, "name")``) are not seen: ``tests/notebooks/test_bundle.py``
runs every filled solution notebook with the bundle cut at its release, which catches what this misses.
No maintained library builds such a graph at this granularity (pydeps and modulegraph stop at modules,
which would make every assignment that imports ``course_lib.attention`` depend on all of its exercises).
``course_lib.grading`` and ``course_lib.exercises`` are not followed: they name every reference, and run
only under grading.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nbformat

from autograder.course.source import REPO, assignments, source_notebooks
from autograder.course.source import split_hidden

PACKAGE = "course_lib"
NOT_FOLLOWED = ("course_lib.grading", "course_lib.exercises")
TOP = "<module>"                      # the qualname of a module's top-level statements

Node = tuple[str, str]                # (module, qualname)


@dataclass(frozen=True)
class Use:
    """Assignment ``user``'s notebook reaches ``target``, one of ``owner``'s removed functions."""
    user: str
    owner: str
    exercise_function: str            # e.g. "course_lib.attention.rope.apply_rope_pairs"
    path: tuple[str, ...]             # the chain from the notebook to it

    def describe(self) -> str:
        return " -> ".join((f"the {self.user} notebook",) + self.path)


# ------------------------------------------------------------------------------------------ the graph
def _ours(obj) -> bool:
    mod = getattr(obj, "__module__", None) if not isinstance(obj, types.ModuleType) else obj.__name__
    return isinstance(mod, str) and (mod == PACKAGE or mod.startswith(PACKAGE + ".")) \
        and not mod.startswith(NOT_FOLLOWED)


def _chains(tree: ast.AST):
    """Every dotted name a tree mentions, longest form only, as a list of parts: ``a.b.c`` -> ["a", "b", "c"]
    (not also ``a.b`` and ``a``)."""
    inner: set[int] = set()
    for node in ast.walk(tree):           # breadth first: an outer Attribute comes before its parts
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                inner.add(id(cur.value))
                cur = cur.value
            if isinstance(cur, ast.Name):
                yield [cur.id, *reversed(parts)]
        elif isinstance(node, ast.Name) and id(node) not in inner:
            yield [node.id]


@lru_cache(maxsize=None)
def _module_ast(module: str) -> ast.Module:
    mod = importlib.import_module(module)
    return ast.parse(Path(inspect.getsourcefile(mod)).read_text())


def _resolve(parts: list[str], namespace: dict, module: str) -> Node | None:
    """The course_lib node a dotted name denotes in ``namespace`` (a module's globals), or None."""
    if parts[0] not in namespace:
        return None
    obj = namespace[parts[0]]
    holder, rest = module, parts[1:]
    while True:
        if isinstance(obj, types.ModuleType):
            if not _ours(obj):
                return None
            if not rest or not hasattr(obj, rest[0]):
                return (obj.__name__, "*")                     # the module as a whole
            holder, obj, rest = obj.__name__, getattr(obj, rest[0]), rest[1:]
            if not isinstance(obj, (types.ModuleType, type)) and not callable(obj):
                return (holder, TOP)
            continue
        obj = inspect.unwrap(obj) if callable(obj) else obj
        if isinstance(obj, type) or inspect.isfunction(obj):
            if not _ours(obj):
                return None
            if isinstance(obj, type) and rest and inspect.isfunction(inspect.unwrap(getattr(obj, rest[0], None) or 0)):
                method = inspect.unwrap(getattr(obj, rest[0]))
                if _ours(method):
                    return (method.__module__, method.__qualname__)
            return (obj.__module__, obj.__qualname__)
        # a module-level value (a dict of functions, a config instance): the module's top level
        return (holder, TOP) if holder.startswith(PACKAGE) and not holder.startswith(NOT_FOLLOWED) else None


def _definition(node: Node) -> ast.AST | list[ast.stmt] | None:
    module, qualname = node
    tree = _module_ast(module)
    if qualname == TOP:
        return [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                                              ast.Import, ast.ImportFrom))]
    if qualname == "*":
        return [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    scope: list[ast.stmt] = tree.body
    found = None
    parts = qualname.split(".")
    if any(p.startswith("<") for p in parts):        # a nested function or lambda: its enclosing definition
        parts = parts[:next(i for i, p in enumerate(parts) if p.startswith("<"))] or [TOP]
        if parts == [TOP]:
            return _definition((module, TOP))
    for part in parts:
        found = next((s for s in scope if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and s.name == part), None)
        if found is None:
            return None
        scope = found.body
    return found


@lru_cache(maxsize=None)
def edges(node: Node) -> tuple[Node, ...]:
    """The course_lib nodes that ``node``'s source names."""
    module, _ = node
    definition = _definition(node)
    if definition is None:
        return ()
    namespace = vars(importlib.import_module(module))
    trees = definition if isinstance(definition, list) else [definition]
    found: list[Node] = []
    for tree in trees:
        for parts in _chains(tree):
            target = _resolve(parts, namespace, module)
            if target is not None and target != node and target not in found:
                found.append(target)
    return tuple(found)


# ------------------------------------------------------------------------------------------ notebooks
_MAGIC = re.compile(r"^\s*[%!]")


def notebook_code(assignment: str, repo: Path = REPO) -> str:
    """The code a student's filled notebook runs: every code cell of the solution notebooks (solutions
    included), the hidden tests left out, IPython magics and cell magics (``%%bash``) dropped. A cell that
    is not Python raises UsageError naming it."""
    from autograder.course.source import UsageError

    sources = []
    for path in source_notebooks(assignment, repo):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells, 1):
            if cell.cell_type != "code" or cell.source.lstrip().startswith("%%"):
                continue
            visible, _ = split_hidden(cell.source)
            code = "\n".join(line for line in visible if not _MAGIC.match(line))
            try:
                _parse(code)
            except SyntaxError as e:
                raise UsageError(f"{path.relative_to(repo)}: cell {i} is not Python ({e.msg}, line {e.lineno})")
            sources.append(code)
    return "\n\n".join(sources)


def _notebook_namespace(tree: ast.Module) -> dict:
    """What the notebook's ``import`` statements bind to course_lib objects, imported here to resolve them."""
    ns: dict = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name.split(".")[0] == PACKAGE:
                    if alias.asname:
                        ns[alias.asname] = importlib.import_module(alias.name)
                    else:
                        ns[PACKAGE] = importlib.import_module(PACKAGE)
                        importlib.import_module(alias.name)          # so that attributes resolve
        elif isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0 \
                and stmt.module.split(".")[0] == PACKAGE:
            mod = importlib.import_module(stmt.module)
            for alias in stmt.names:
                if alias.name == "*":
                    ns.update({k: v for k, v in vars(mod).items() if not k.startswith("_")})
                    continue
                try:
                    ns[alias.asname or alias.name] = getattr(mod, alias.name)
                except AttributeError:
                    ns[alias.asname or alias.name] = importlib.import_module(f"{stmt.module}.{alias.name}")
    return ns


def reached(assignment: str, repo: Path = REPO) -> dict[Node, tuple[str, ...]]:
    """{course_lib node: the chain of names that leads there} for everything the notebook reaches."""
    return _reached(notebook_code(assignment, repo))


def _parse(code: str) -> ast.Module:
    """Notebook code: top-level ``await`` is allowed there (IPython runs it)."""
    return compile(code, "<notebook>", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@lru_cache(maxsize=None)
def _reached(code: str) -> dict[Node, tuple[str, ...]]:
    tree = _parse(code)
    ns = _notebook_namespace(tree)
    paths: dict[Node, tuple[str, ...]] = {}
    queue: deque[Node] = deque()
    for parts in _chains(tree):
        target = _resolve(parts, ns, "__notebook__")
        if target is not None and target not in paths:
            paths[target] = (_label(target),)
            queue.append(target)
    while queue:
        node = queue.popleft()
        for nxt in edges(node):
            if nxt not in paths:
                paths[nxt] = paths[node] + (_label(nxt),)
                queue.append(nxt)
    return paths


def _label(node: Node) -> str:
    module, qualname = node
    return module if qualname in (TOP, "*") else f"{module}.{qualname}"


# ------------------------------------------------------------------------------------------ assignments
def removed_functions(assignment: str) -> dict[Node, str]:
    """{node: exercise function's name} of what the bundle removes for ``assignment``."""
    from course_lib import grading

    out: dict[Node, str] = {}
    for ex in grading.exercises_of(assignment).values():
        for fn in (ex.reference, *ex.gives_away):
            fn = inspect.unwrap(fn)
            out[(fn.__module__, fn.__qualname__)] = f"{fn.__module__}.{fn.__qualname__}"
    return out


def uses(repo: Path = REPO, names: list[str] | None = None) -> list[Use]:
    """Every (user, owner) pair with the first chain found, ``user`` == ``owner`` included (a notebook
    that reaches its own assignment's removed reference: it cannot run in the student's bundle)."""
    names = names if names is not None else assignments(repo)
    removed = {name: removed_functions(name) for name in names}
    found = []
    for user in names:
        paths = reached(user, repo)
        for owner in names:
            hits = sorted((paths[n], label) for n, label in removed[owner].items() if n in paths)
            if hits:
                path, label = min(hits, key=lambda h: len(h[0]))
                found.append(Use(user, owner, label, path))
    return found


def dependencies(repo: Path = REPO, names: list[str] | None = None) -> dict[str, dict[str, Use]]:
    """{assignment: {assignment it uses: the evidence}}, self-uses excluded (see ``self_uses``)."""
    out: dict[str, dict[str, Use]] = {name: {} for name in (names if names is not None else assignments(repo))}
    for use in uses(repo, list(out)):
        if use.user != use.owner:
            out[use.user][use.owner] = use
    return out


def self_uses(repo: Path = REPO) -> list[Use]:
    return [u for u in uses(repo) if u.user == u.owner]


def builds_on(repo: Path = REPO, names: list[str] | None = None) -> dict[str, dict[str, Use]]:
    """{assignment: {assignment whose given code it uses: the evidence}}.

    A module that holds an assignment's exercises holds the code that assignment teaches around them
    (``kv_cache.KVCache``, ``sliding_window.rolling_buffer_slots``). A notebook that uses such code of a
    module holding none of its own exercises builds on that assignment: it comes later in the course."""
    names = names if names is not None else assignments(repo)
    owners: dict[str, set[str]] = {}
    for name in names:
        for module, _ in removed_functions(name):
            if not module.startswith(NOT_FOLLOWED):
                owners.setdefault(module, set()).add(name)
    out: dict[str, dict[str, Use]] = {name: {} for name in names}
    for user in names:
        paths = reached(user, repo)
        for node, path in sorted(paths.items(), key=lambda item: len(item[1])):
            for owner in sorted(owners.get(node[0], set())):
                if user not in owners[node[0]] and owner not in out[user]:
                    out[user][owner] = Use(user, owner, _label(node), path)
    return out
