"""Mutants of the exercises' references, made from their syntax trees: the measure of the hidden cases.

Why ``ast`` and not mutmut or cosmic-ray: both mutate a module's file and run a test command. Here the
test (``course_lib.grading.verify``) compares a function with the *reference itself*: a mutated file would
change the reference the mutant is compared with, and every mutant would survive. So each mutant is a
new function object compiled from the reference's source with one change, in a copy of the reference's
module namespace; the reference stays as it is, and the mutant goes through ``record``/``verify`` exactly
as a student's function does. A mutant is killed when ``verify`` fails it.

The reference's own code is mutated, every line of it, and that of the course_lib functions it calls (the
student writes the whole computation, helpers included), two levels deep: of those helpers, only the
statements the reference runs on the exercise's own cases (line coverage, ``sys.settrace``), since a
shared helper's other branches belong to other callers (``conv.conv2d``'s padding, which the one-image
``convolve2d`` never passes).

Operators (each site gives one mutant per replacement):
- arithmetic: ``+`` ↔ ``-``, ``*`` ↔ ``/``, ``//`` → ``/``, ``%`` → ``//``, ``**`` → ``*``, ``@`` → ``*``,
  ``&`` ↔ ``|``, ``^`` → ``|``; a term dropped (``a + b`` → ``a``, ``a / b`` → ``a``);
- unary ``-``, ``not``, ``~`` dropped; comparisons ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``,
  ``is`` ↔ ``is not``, ``in`` ↔ ``not in``; ``and`` ↔ ``or``;
- constants: an int n → n + 1 and n - 1, a float x → 2x (0.0 → 1.0), True ↔ False;
- calls: a keyword argument dropped (``dim=``, ``keepdim=``, ``device=``, ``dtype=``, ...); a method call
  replaced by its receiver (``x.float()`` → ``x``, ``x.transpose(1, 2)`` → ``x``); a one-argument call
  replaced by its argument (``torch.exp(x)`` → ``x``); a method swapped for its twin (``amax`` ↔ ``amin``,
  ``sum`` ↔ ``mean``, ``triu`` ↔ ``tril``, ``cos`` ↔ ``sin``, ...);
- statements: an expression statement, an augmented assignment, an assignment into a subscript or
  attribute, or a reassignment of a name, replaced by ``pass``;
- for exercises that are differentiable (``Exercise.grad``): every returned value detached.
Not mutated: input validation, which the cases never reach (they call a function with valid arguments
only; the visible tests check the errors): ``raise`` and ``assert`` statements, an ``if`` whose body only
raises, and calls of functions that only validate (``_check_w(w)``); docstrings, strings, annotations.
"""
from __future__ import annotations

import ast
import copy
import inspect
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

_BINOP = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult],
          ast.FloorDiv: [ast.Div], ast.Mod: [ast.FloorDiv], ast.Pow: [ast.Mult], ast.MatMult: [ast.Mult],
          ast.BitAnd: [ast.BitOr], ast.BitOr: [ast.BitAnd], ast.BitXor: [ast.BitOr]}
_DROP_RIGHT = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)
_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_TWINS = {"amax": "amin", "amin": "amax", "max": "min", "min": "max", "sum": "mean", "mean": "sum",
          "argmax": "argmin", "argmin": "argmax", "triu": "tril", "tril": "triu", "floor": "ceil",
          "ceil": "floor", "maximum": "minimum", "minimum": "maximum", "cos": "sin", "sin": "cos",
          "exp": "log", "log": "exp", "sigmoid": "tanh", "tanh": "sigmoid", "relu": "gelu", "gelu": "relu",
          "silu": "sigmoid", "cumsum": "cumprod", "any": "all", "all": "any", "log_softmax": "softmax",
          "softmax": "log_softmax", "logsumexp": "amax", "flip": "clone", "topk": "sort"}
DETACH = "__mutant_detach__"


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach(o) for o in obj)
    return obj


def _src(node: ast.AST) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= 70 else text[:67] + "..."


def _replacements(node: ast.AST, grad: bool, assigned: set[str]) -> list[tuple[str, ast.AST]]:
    """The mutants of one node: (what changed, the node that replaces it)."""
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.BinOp):
        for op in _BINOP.get(type(node.op), []):
            out.append(("operator", ast.BinOp(copy.deepcopy(node.left), op(), copy.deepcopy(node.right))))
        if isinstance(node.op, _DROP_RIGHT):
            out.append(("term dropped", copy.deepcopy(node.left)))
        if isinstance(node.op, ast.Add):
            out.append(("term dropped", copy.deepcopy(node.right)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
        out.append(("unary dropped", copy.deepcopy(node.operand)))
    elif isinstance(node, ast.Compare) and type(node.ops[0]) in _CMP:
        new = copy.deepcopy(node)
        new.ops[0] = _CMP[type(node.ops[0])]()
        out.append(("comparison", new))
    elif isinstance(node, ast.BoolOp):
        out.append(("boolean", ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(),
                                          copy.deepcopy(node.values))))
    elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
        v = node.value
        if isinstance(v, bool):
            out.append(("constant", ast.Constant(not v)))
        elif isinstance(v, int):
            out.append(("constant", ast.Constant(v + 1)))
            out.append(("constant", ast.Constant(v - 1)))
        elif isinstance(v, float):
            out.append(("constant", ast.Constant(1.0 if v == 0 else 2 * v)))
    elif isinstance(node, ast.Call):
        for j in range(len(node.keywords)):
            if node.keywords[j].arg is None:
                continue
            new = copy.deepcopy(node)
            del new.keywords[j]
            out.append((f"{node.keywords[j].arg}= dropped", new))
        f = node.func
        if isinstance(f, ast.Attribute):
            if not (isinstance(f.value, ast.Name) and f.value.id in ("torch", "F", "math", "np", "nn")):
                out.append(("call dropped", copy.deepcopy(f.value)))
            if f.attr in _TWINS:
                new = copy.deepcopy(node)
                new.func.attr = _TWINS[f.attr]
                out.append(("twin", new))
        if len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred):
            out.append(("call dropped", copy.deepcopy(node.args[0])))
    elif isinstance(node, (ast.Expr, ast.AugAssign)) or (
            isinstance(node, ast.Assign) and (
                any(isinstance(t, (ast.Subscript, ast.Attribute)) for t in node.targets)
                or all(isinstance(t, ast.Name) and t.id in assigned for t in node.targets))):
        out.append(("statement deleted", ast.Pass()))
    elif isinstance(node, ast.Return) and grad and node.value is not None:
        out.append(("output detached", ast.Return(ast.Call(ast.Name(DETACH, ast.Load()),
                                                           [copy.deepcopy(node.value)], []))))
    return out


def _validates(stmt: ast.stmt, namespace: dict) -> bool:
    """True for a statement that only checks its inputs: raise, assert, ``if ...: raise``, a call of a
    function that only validates, or returning a parameter unchanged."""
    if isinstance(stmt, (ast.Raise, ast.Assert, ast.Pass)) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
        return True
    if isinstance(stmt, ast.If):
        return all(_validates(s, namespace) for s in stmt.body + stmt.orelse) and \
            any(isinstance(n, ast.Raise) for n in ast.walk(stmt))
    if isinstance(stmt, ast.For):
        return all(_validates(s, namespace) for s in stmt.body) and not stmt.orelse
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name):
        return _only_validates(namespace.get(stmt.value.func.id))
    return False


def _only_validates(fn: Any) -> bool:
    """A function whose every statement validates (``_check_w``, ``_positive_int``)."""
    if not isinstance(fn, types.FunctionType):
        return False
    src = _source(fn)
    if src is None:
        return False
    params = {a.arg for a in ast.walk(src.tree.args) if isinstance(a, ast.arg)}
    body = src.tree.body
    if body and isinstance(body[-1], ast.Return) and (body[-1].value is None or (
            isinstance(body[-1].value, ast.Name) and body[-1].value.id in params)):
        body = body[:-1]
    return all(_validates(s, fn.__globals__) for s in body)


class _Mutator(ast.NodeTransformer):
    """Visits the sites in a fixed order; replaces the ``target``-th one (-1: none, just count)."""

    def __init__(self, target: int, grad: bool, params: set[str], namespace: dict,
                 reached: Callable[[int], bool] = lambda line: True):
        self.target, self.grad, self.count, self.namespace = target, grad, 0, namespace
        self.reached, self.line = reached, 0
        self.assigned = set(params)
        self.applied: tuple[str, ast.AST, ast.AST] | None = None

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, (ast.JoinedStr,)) or (isinstance(node, ast.stmt) and _validates(node, self.namespace)):
            return node
        if isinstance(node, ast.stmt):
            self.line = node.lineno
        for kind, new in (_replacements(node, self.grad, self.assigned) if self.reached(self.line) else []):
            if self.count == self.target:
                self.applied = (kind, node, new)
                self.count += 1
                return ast.copy_location(new, node)
            self.count += 1
        if isinstance(node, (ast.FunctionDef, ast.arguments)):
            if isinstance(node, ast.FunctionDef):
                node.body = [self.visit(s) for s in node.body]
            return node
        result = self.generic_visit(node)
        for t in getattr(node, "targets", []) + ([node.target] if isinstance(node, (ast.AugAssign, ast.For)) else []):
            self.assigned.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        return result


@dataclass
class Mutant:
    exercise: str
    label: str                 # "<function> line N: <kind> `old` -> `new`" (line counted in the function)
    fn: Callable | None        # the mutated reference, or None when it did not compile
    killed: bool | None = None
    why: str = ""


@dataclass
class _Source:
    fn: Callable
    tree: ast.FunctionDef
    first_line: int
    helpers: dict[str, "_Source"] = field(default_factory=dict)


def _source(fn: Callable) -> _Source | None:
    fn = inspect.unwrap(fn)
    if not isinstance(fn, types.FunctionType) or fn.__code__.co_freevars:
        return None
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    tree = ast.parse(text).body[0]
    if not isinstance(tree, ast.FunctionDef):
        return None
    return _Source(fn, tree, tree.lineno)


def _helpers(src: _Source, depth: int, seen: set) -> None:
    """The course_lib functions ``src`` calls by a plain name (``causal_mask(...)``) or through a course_lib
    module (``conv.conv2d_image(...)``), mutated too (``depth`` levels)."""
    if depth == 0:
        return
    for node in ast.walk(src.tree):
        if not isinstance(node, ast.Call):
            continue
        f, key, target = node.func, None, None
        if isinstance(f, ast.Name):
            key, target = f.id, src.fn.__globals__.get(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            module = src.fn.__globals__.get(f.value.id)
            if isinstance(module, types.ModuleType) and module.__name__.startswith("course_lib"):
                key, target = f"{f.value.id}.{f.attr}", getattr(module, f.attr, None)
        if isinstance(target, types.FunctionType) and target.__module__.startswith("course_lib") \
                and not target.__module__.startswith("course_lib.grading") and target not in seen \
                and not _only_validates(target):
            seen.add(target)
            h = _source(target)
            if h is not None:
                src.helpers[key] = h
                _helpers(h, depth - 1, seen)


def _compile(src: _Source, tree: ast.FunctionDef, overrides: dict[str, Callable]) -> Callable:
    namespace = dict(src.fn.__globals__)
    for key, value in overrides.items():
        if "." in key:                 # module.function: a copy of the module with that function replaced
            alias, attr = key.split(".", 1)
            proxy = types.ModuleType(namespace[alias].__name__)
            proxy.__dict__.update(vars(namespace[alias]))
            setattr(proxy, attr, value)
            value, key = proxy, alias
        namespace[key] = value
    namespace[DETACH] = _detach
    module = ast.fix_missing_locations(ast.Module(body=[tree], type_ignores=[]))
    exec(compile(module, f"<mutant of {src.fn.__qualname__}>", "exec"), namespace)
    return namespace[tree.name]


def coverage(run: Callable[[], Any]) -> set[tuple[str, int]]:
    """(file, line) of every line of course_lib that ``run()`` executes."""
    import sys
    lines: set[tuple[str, int]] = set()

    def tracer(frame, event, arg):
        if "course_lib" not in frame.f_code.co_filename:
            return None
        if event == "line":
            lines.add((frame.f_code.co_filename, frame.f_lineno))
        return tracer
    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(old)
    return lines


def mutants(exercise: str, reference: Callable, grad: bool = False,
            covered: set[tuple[str, int]] | None = None) -> Iterator[Mutant]:
    """Every mutant of ``reference`` and of the course_lib helpers it calls (of those, only the lines in
    ``covered``, when given)."""
    root = _source(reference)
    if root is None:
        return
    _helpers(root, 2, {root.fn})
    yield from _mutants_of(exercise, root, grad, chain=[], covered=covered, seen={})


def _mutants_of(exercise: str, src: _Source, grad: bool, chain: list[tuple[_Source, str]],
                covered: set[tuple[str, int]] | None, seen: dict[str, int]) -> Iterator[Mutant]:
    """``seen`` counts labels over the whole exercise: a label names one mutant (``#2`` for the next one that
    would read the same, e.g. the same helper name in two modules)."""
    params = {a.arg for a in ast.walk(src.tree.args) if isinstance(a, ast.arg)}
    code = src.fn.__code__
    reached = (lambda line: True) if not chain or covered is None else \
        (lambda line: (code.co_filename, code.co_firstlineno + line - 1) in covered)
    counter = _Mutator(-1, grad and not chain, params, src.fn.__globals__, reached)
    counter.visit(copy.deepcopy(src.tree))
    for k in range(counter.count):
        m = _Mutator(k, grad and not chain, params, src.fn.__globals__, reached)
        tree = m.visit(copy.deepcopy(src.tree))
        kind, old, new = m.applied
        line = getattr(old, "lineno", src.first_line) - src.first_line + 1
        label = f"{src.fn.__name__} line {line}: {kind} `{_src(old)}` -> `{_src(new)}`"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label += f" #{seen[label]}"
        try:
            fn = _compile(src, tree, {})
            for parent, name in reversed(chain):      # install the mutated helper up to the reference
                fn = _compile(parent, copy.deepcopy(parent.tree), {name: fn})
        except Exception as e:     # a mutant that does not compile (e.g. a deleted statement left a block empty)
            yield Mutant(exercise, label, None, None, f"does not compile: {type(e).__name__}")
            continue
        yield Mutant(exercise, label, fn)
    for name, helper in src.helpers.items():
        yield from _mutants_of(exercise, helper, grad, chain + [(src, name)], covered, seen)
