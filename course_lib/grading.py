"""The one entry point that notebook tests call: ``check(exercise, student_function)``.

For the named exercise it runs the student's function on seeded cases, on every available device (the
CPU always; CUDA when ``torch.cuda.is_available()``), and compares each output with the ``course_lib``
reference: type, shape, dtype, device and values (tolerances by dtype). The first mismatch raises an
``AssertionError`` whose one-line message names the exercise, the case, the device and the largest
error: that message is what a student reads in the feedback.

    >>> from course_lib.grading import check
    >>> check("apply_rope_pairs", my_apply_rope_pairs)
    apply_rope_pairs: 9 cases passed on cpu

Two steps, so that grading can be made tamper-proof: ``record`` runs the student's function and keeps
its outputs (plain data: tensors, numbers, strings), and ``verify`` compares a record with the reference.
When the autograder sets ``COURSE_GRADING_RECORD`` to a folder, ``check`` only records (to
``<folder>/<exercise>.pt``) and the grader verifies outside the student's kernel, in its own process:
nothing the student's code patches (``torch.allclose``, this module, IPython's exception handling)
changes a score.

Exercises may forbid shortcuts (``Exercise.forbidden``: e.g. ``torch.nn.functional.conv2d`` in an
exercise about convolution): calls are caught at the Python level and, for ``aten::`` names, at
PyTorch's dispatcher; a case whose computation used one fails with a message that says so.

``check`` returns None (a value would become the cell's ``Out[]``, which nbgrader reads as a partial
score). Whatever the student's code writes to stderr, warnings included, is shown on stdout instead:
nbgrader gives 0 points to a test cell that wrote to stderr.

Exercises are registered per assignment in ``course_lib/exercises/<assignment>.py``. Set
``COURSE_GRADING_DEVICES=cpu`` (comma-separated list) to restrict the devices.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["Case", "Exercise", "Verdict", "check", "devices", "exercises", "exercises_of", "record", "register", "tolerance",
           "verify", "load_record", "noncontiguous", "RECORD_ENV", "FAKE_DEVICE", "PROPERTIES"]

RECORD_ENV = "COURSE_GRADING_RECORD"

# (atol, rtol) by dtype: a correct implementation in another, equally valid order of operations passes;
# a wrong formula (errors of order 1) does not.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-8, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


# The rules every exercise is graded by, besides its values, in the order verify applies them. Each exercise
# of the registry states which of the optional ones it uses (Exercise.grad, Exercise.may_alias) and its
# own cases add the sizes, dtypes and ignored positions its contract names (``noncontiguous(case)`` makes a
# case's inputs non-contiguous: each float tensor a view with stride 2 whose gaps hold NaN).
PROPERTIES = {
    "values": "type, shape, dtype, device and values of every output equal the reference's (TOLERANCES by dtype)",
    "inputs unchanged": "no input tensor is modified in place",
    "new tensors": "no output is an input or shares memory with one (unless the exercise says it may)",
    "gradients": "where the exercise is differentiable, the gradient of a seeded weighted sum of the outputs "
                 "with respect to each float32/float64 input equals the reference's",
    "forbidden": "none of the exercise's forbidden shortcuts is called",
    "device": "new tensors are created on the input's device and the output is returned there: on CUDA when "
              "present, else on PyTorch's meta device (FAKE_DEVICE), where only shapes, dtypes and devices "
              "exist and a case the reference cannot run there, or the student's code cannot (.item(), "
              "nonzero, ...), is not checkable rather than failed",
}

# Where no GPU is present, the device contract is checked on PyTorch's "meta" device, which needs no
# hardware: its tensors have shapes, dtypes and a device but no data, and an operation that meets a tensor
# of another device (one created without ``device=``, as on a GPU) raises. (FakeTensor's simulated CUDA
# tensors would read better, but a CPU-only PyTorch cannot index them: "not linked with support for cuda".)
FAKE_DEVICE = "meta"


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing outputs of this dtype; exact for integers and booleans."""
    return TOLERANCES.get(dtype, (0.0, 0.0))


@dataclass(frozen=True)
class Case:
    """One seeded test case: ``make(generator, device) -> (args, kwargs)``, built on the CPU generator so
    that every device sees the same numbers."""
    name: str
    make: Callable[[torch.Generator, torch.device], tuple[tuple, dict]]


@dataclass(frozen=True)
class Exercise:
    name: str
    reference: Callable
    cases: Sequence[Case]
    hint: str = ""                     # appended to value mismatches, e.g. a common mistake to look for
    forbidden: tuple[str, ...] = ()    # "torch.nn.functional.conv2d" (Python level) or "aten::<op name prefix>"
    gives_away: tuple[Callable, ...] = ()   # other course_lib functions that hold the answer (a loop version):
                                            # removed from the student bundle along with the reference
    # Properties checked on every case besides the values (see PROPERTIES):
    grad: bool | tuple[str, ...] = False   # gradients flow: d(w·output)/d(input) equals the reference's, for every
                                       # float32/float64 input tensor (or only those named: ("q", "k", "v"),
                                       # "weights" covering weights[0], ...), on the cases where the reference has one
    may_alias: bool = False            # an output may be an input or a view of one (else: new tensors only)


@dataclass(frozen=True)
class Verdict:
    exercise: str
    passed: bool
    message: str          # one line: "N cases passed on DEVICES" or the first mismatch


_REGISTRY: dict[str, Exercise] = {}
_ASSIGNMENT: dict[str, str] = {}      # exercise name -> assignment (the course_lib.exercises module's name)
_LOADED = False


def register(exercise: Exercise) -> Exercise:
    if exercise.name in _REGISTRY and _REGISTRY[exercise.name] is not exercise:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    _REGISTRY[exercise.name] = exercise
    _ASSIGNMENT[exercise.name] = sys._getframe(1).f_globals.get("__name__", "").rpartition(".")[2]
    return exercise


def exercises_of(assignment: str) -> dict[str, Exercise]:
    """The exercises that ``course_lib/exercises/<assignment>.py`` registers."""
    return {name: ex for name, ex in exercises().items() if _ASSIGNMENT.get(name) == assignment}


def exercises() -> dict[str, Exercise]:
    """All registered exercises, by name (loads every module of ``course_lib.exercises`` once)."""
    global _LOADED
    if not _LOADED:
        from . import exercises as package
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED = True
    return _REGISTRY


def devices() -> list[torch.device]:
    """The devices to grade on: the CPU, plus CUDA when present; ``COURSE_GRADING_DEVICES`` overrides."""
    wanted = os.environ.get("COURSE_GRADING_DEVICES")
    if wanted:
        return [torch.device(d.strip()) for d in wanted.split(",") if d.strip()]
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


def _exercise(exercise: str) -> Exercise:
    known = exercises()
    if not isinstance(exercise, str) or exercise not in known:
        raise ValueError(f"unknown exercise {exercise!r}; known exercises: {', '.join(sorted(known))}")
    return known[exercise]


HIDDEN_AT_GRADING = ("{exercise}: the hidden cases run only when your notebook is graded (they are not "
                     "part of your course_lib); the visible tests above are the ones you can run")


def check(exercise: str, fn: Callable, *, device: Sequence[str | torch.device] | None = None) -> None:
    """Compare ``fn`` with the reference of ``exercise`` on all its cases; raise AssertionError on the
    first mismatch, print "NAME: N cases passed on DEVICES" otherwise. Under the autograder
    (``COURSE_GRADING_RECORD`` set) only record the outputs, for the grader to verify. In a student's
    course_lib, which holds no hidden case (``course_lib.exercises`` is cut out of the bundle), say so in
    one line and return."""
    if not os.environ.get(RECORD_ENV) and not exercises() and isinstance(exercise, str):
        print(HIDDEN_AT_GRADING.format(exercise=exercise))
        return None
    rec = record(exercise, fn, device=device)
    folder = os.environ.get(RECORD_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        torch.save(rec, Path(folder) / f"{exercise}.pt")
        print(f"{exercise}: outputs of {len(_exercise(exercise).cases)} cases on {', '.join(rec['devices'])} "
              f"recorded; the grader compares them with the reference")
        return None
    verdict = verify(rec, on=rec["devices"])
    if not verdict.passed:
        raise AssertionError(verdict.message)
    print(verdict.message)
    return None


def record(exercise: str, fn: Callable, *, device: Sequence[str | torch.device] | None = None) -> dict:
    """Run ``fn`` on every case of ``exercise`` on every device; return plain data (no code objects):
    {"exercise", "devices", "cases": [{"device", "case", "output", "error", "modified", "forbidden",
    "aliases", "grads", "grad_error"}]}, plus, where no CUDA device is graded, one entry per case on
    FAKE_DEVICE (the device contract: shapes, dtypes and devices only)."""
    ex = _exercise(exercise)
    if not callable(fn):
        raise TypeError(f"{exercise}: expected the function you wrote, got {type(fn).__name__} {fn!r:.60}")
    _import_dynamo_quietly()
    devs = [torch.device(d) for d in device] if device is not None else devices()
    entries = []
    for dev in devs:
        for i, case in enumerate(ex.cases):
            args, kwargs = case.make(_generator(i), dev)
            mine_args, mine_kwargs = _clone(args), _clone(kwargs)
            entry = {"device": str(dev), "case": i, "output": None, "error": None, "modified": None,
                     "forbidden": [], "aliases": None, "grads": None, "grad_error": None}
            try:
                with _stderr_to_stdout(), _tripwires(ex.forbidden) as used:
                    got = fn(*mine_args, **mine_kwargs)
                entry["output"] = _encode(got)
                if not ex.may_alias:
                    entry["aliases"] = _aliases(got, mine_args, mine_kwargs, _names(ex.reference, args, kwargs))
            except NotImplementedError as e:
                entry["error"] = "NotImplementedError" + (f": {_first_line(e)}" if str(e).strip() else "")
            except Exception as e:  # the student's error, reported in one line
                entry["error"] = f"{type(e).__name__}: {_first_line(e)}"
            entry["forbidden"] = sorted(used)
            entry["modified"] = _modified(mine_args, args, mine_kwargs, kwargs)
            if ex.grad and entry["error"] is None:
                try:
                    with _stderr_to_stdout():
                        entry["grads"] = _gradients(fn, args, kwargs, i, _names(ex.reference, args, kwargs), ex.grad)
                except Exception as e:
                    entry["grad_error"] = f"{type(e).__name__}: {_first_line(e)}"
            entries.append(entry)
    if _meta_check(devs):
        for i, case in enumerate(ex.cases):
            entry = {"device": FAKE_DEVICE, "case": i}
            with _stderr_to_stdout():
                entry.update(_run_on_meta(fn, case, i))
            entries.append(entry)
    return {"exercise": exercise, "devices": [str(d) for d in devs], "cases": entries}


def load_record(path: str | Path, max_bytes: int = 256 * 2**20) -> dict:
    """Read a record written by ``check`` in a student's kernel: plain data only (``weights_only``)."""
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise ValueError(f"record {path.name} is larger than {max_bytes // 2**20} MiB")
    rec = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(rec, dict) or not isinstance(rec.get("cases"), list):
        raise ValueError(f"record {path.name} is not a grading record")
    return rec


def verify(rec: dict, *, on: Sequence[str | torch.device] | None = None) -> Verdict:
    """Compare a record with the reference, case by case, on the devices required (default: every
    device available here; where none of them is CUDA, also the device contract on FAKE_DEVICE). Runs the
    reference in this process: nothing of the student's is executed."""
    exercise = rec.get("exercise")
    try:
        ex = _exercise(exercise)
    except ValueError as e:
        return Verdict(str(exercise), False, str(e))
    required = [str(torch.device(d)) for d in (on if on is not None else devices())]
    _import_dynamo_quietly()
    by_key = {(e.get("device"), e.get("case")): e for e in rec.get("cases", []) if isinstance(e, dict)}
    shortcut = None
    unchecked = checked = 0
    try:
        for dev in required:
            for i, case in enumerate(ex.cases):
                where = f"{exercise}, case {i + 1}/{len(ex.cases)} '{case.name}' on {dev}"
                entry = by_key.get((dev, i))
                if entry is None:
                    raise AssertionError(f"{where}: no output was recorded for this case")
                if entry.get("error"):
                    err = str(entry["error"])
                    if err.startswith("NotImplementedError"):
                        raise AssertionError(f"{where}: not implemented yet (the function raised {err})")
                    raise AssertionError(f"{where}: your function raised {err}")
                ref_dev = torch.device(dev) if _device_ok(dev) else torch.device("cpu")
                args, kwargs = case.make(_generator(i), ref_dev)
                expected = _encode(ex.reference(*args, **kwargs), device_as=dev)
                _compare(where, entry.get("output"), expected, ex.hint)
                if entry.get("forbidden") and shortcut is None:   # reported once every value is right
                    shortcut = (f"{where}: your function uses {', '.join(map(str, entry['forbidden']))}, "
                                f"which this exercise asks you to implement yourself")
                if entry.get("modified") is not None:
                    raise AssertionError(f"{where}: your function modified its input tensor (argument "
                                         f"{entry['modified'] + 1}) in place; return a new tensor instead")
                if not ex.may_alias and entry.get("aliases"):
                    raise AssertionError(f"{where}: {entry['aliases']}; return a new tensor (the caller may "
                                         f"change it in place), e.g. with .clone()")
                if ex.grad:
                    _verify_gradients(where, entry, ex, args, kwargs, i)
        if _meta_check(required):
            for i, case in enumerate(ex.cases):
                where = f"{exercise}, case {i + 1}/{len(ex.cases)} '{case.name}' on {FAKE_DEVICE}"
                entry = by_key.get((FAKE_DEVICE, i))
                if entry is None:
                    raise AssertionError(f"{where}: no output was recorded for this case")
                expected = _run_on_meta(ex.reference, case, i)
                if expected["status"] != "ok":      # the reference cannot run there: nothing to check
                    continue
                if entry.get("status") == "uncheckable":
                    unchecked += 1
                    continue
                if entry.get("status") == "mismatch":
                    raise AssertionError(f"{where}: {entry.get('error')}: create new tensors on the input's "
                                         f"device (device=x.device, torch.zeros_like, x.new_zeros)")
                if entry.get("status") != "ok":
                    raise AssertionError(f"{where}: your function raised {entry.get('error')}")
                _compare(where, entry.get("output"), expected["output"], "")
                checked += 1
        if shortcut:
            raise AssertionError(shortcut)
    except AssertionError as e:
        return Verdict(exercise, False, str(e))
    message = f"{exercise}: {len(ex.cases)} cases passed on {', '.join(required)}"
    if checked or unchecked:
        message += (f"; device contract checked on {FAKE_DEVICE} (no GPU here) for "
                    f"{checked} cases" + (f", {unchecked} not checkable on this machine (data-dependent "
                                          f"operations such as .item() need real data)" if unchecked else ""))
    return Verdict(exercise, True, message)


# ------------------------------------------------------------------------------------------ properties
def noncontiguous(case: Case) -> Case:
    """The same case with every input tensor non-contiguous: its last two dimensions of size > 1 swapped in
    memory (``.view(-1)`` on it raises, as on a transposed tensor) and a stride of 2 along one of them, the
    gaps holding NaN (floats) or zeros, so that code reading memory as if it were contiguous reads the gaps."""
    def make(g: torch.Generator, dev: torch.device):
        args, kwargs = case.make(g, dev)
        return _map(_strided, args), _map(_strided, kwargs)
    return Case(f"{case.name}, non-contiguous", make)


def _map(f: Callable, obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(f, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(f, v) for k, v in obj.items()}
    return f(obj)


def _strided(t: Any) -> Any:
    if not isinstance(t, Tensor) or t.numel() == 0 or not any(s > 1 for s in t.shape):
        return t
    big = [i for i, s in enumerate(t.shape) if s > 1]
    order = list(range(t.dim()))
    if len(big) >= 2:
        order[big[-1]], order[big[-2]] = order[big[-2]], order[big[-1]]
    p = t.permute(order)                      # laid out in this order in memory
    d = max(i for i, s in enumerate(p.shape) if s > 1)
    wide = list(p.shape)
    wide[d] *= 2
    buf = torch.full(wide, math.nan if t.is_floating_point() else 0, dtype=t.dtype, device=t.device)
    view = buf[(slice(None),) * d + (slice(None, None, 2),)]
    view.copy_(p)
    return view.permute(order)                # a swap is its own inverse


def _generator(case: int, stream: int = 0) -> torch.Generator:
    """The seeded generator of a case (stream 0: its inputs; stream 1: the weights of its gradient check)."""
    return torch.Generator().manual_seed(1000 + case + 100_000 * stream)


def _names(reference: Callable, args: tuple, kwargs: dict) -> list[str]:
    """A name for every leaf of ``_flat(args) + _flat(kwargs)``, from the reference's signature: ``x``,
    ``weights[1]``, ``mask``."""
    import inspect
    try:
        params = [p.name for p in inspect.signature(reference).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []

    def walk(obj, name):
        if isinstance(obj, dict):
            return [n for k in sorted(obj) for n in walk(obj[k], f"{name}[{k!r}]")]
        if isinstance(obj, (list, tuple)):
            return [n for j, o in enumerate(obj) for n in walk(o, f"{name}[{j}]")]
        return [name]
    names = [n for k, a in enumerate(args) for n in walk(a, params[k] if k < len(params) else f"argument {k + 1}")]
    return names + [n for k in sorted(kwargs) for n in walk(kwargs[k], k)]


def _aliases(out: Any, args: tuple, kwargs: dict, names: list[str]) -> str | None:
    """How an output shares memory with an input, in words, or None."""
    inputs = [(n, t) for n, t in zip(names, _flat(args) + _flat(kwargs)) if isinstance(t, Tensor)]
    outs = [("output", out)] if isinstance(out, Tensor) else \
        [(f"output[{j}]", o) for j, o in enumerate(_flat(out)) if isinstance(o, Tensor)] \
        if isinstance(out, (list, tuple, dict)) else []
    for where, o in outs:
        for name, t in inputs:
            if o is t:
                return f"{where} is the input {name} itself"
            if o.numel() and t.numel() and not o.is_meta and not t.is_meta and \
                    o.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                return f"{where} shares memory with the input {name} (it is a view of {name})"
    return None


def _gradients(fn: Callable, args: tuple, kwargs: dict, case: int, names: list[str],
               wanted: bool | tuple[str, ...] = True) -> dict | None:
    """{"names", "values"}: the gradient of Σ w·output (w seeded, one weight per output entry, in float64)
    with respect to each float32/float64 input tensor (None where nothing flows back); None when the
    case has no such input."""
    args, kwargs = _clone(args), _clone(kwargs)
    leaves = _flat(args) + _flat(kwargs)
    named = (lambda n: True) if wanted is True else \
        (lambda n: any(n == w or n.startswith(f"{w}[") for w in wanted))
    wrt = [j for j, t in enumerate(leaves) if isinstance(t, Tensor) and t.dtype in (torch.float32, torch.float64)
           and t.numel() and named(names[j] if j < len(names) else "")]
    if not wrt:
        return None
    for j in wrt:
        leaves[j].requires_grad_(True)
    with torch.enable_grad():
        out = fn(*args, **kwargs)
        outs = [o for o in _flat(out if isinstance(out, (list, tuple, dict)) else [out])
                if isinstance(o, Tensor) and o.is_floating_point()]
        g = _generator(case, 1)
        weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device) for o in outs]
        terms = [(o.to(torch.float64) * w).sum() for o, w in zip(outs, weights) if o.requires_grad]
        grads = torch.autograd.grad(sum(terms), [leaves[j] for j in wrt], allow_unused=True) if terms \
            else [None] * len(wrt)
    return {"names": [names[j] if j < len(names) else f"input {j + 1}" for j in wrt],
            "values": [None if d is None else _encode(d) for d in grads]}


def _verify_gradients(where: str, entry: dict, ex: Exercise, args: tuple, kwargs: dict, case: int) -> None:
    expected = _gradients(ex.reference, args, kwargs, case, _names(ex.reference, args, kwargs), ex.grad)
    if expected is None:
        return
    if entry.get("grad_error"):
        raise AssertionError(f"{where}: computing gradients through your function raised {entry['grad_error']}")
    got = entry.get("grads") if isinstance(entry.get("grads"), dict) else {}
    mine = dict(zip(got.get("names", []), got.get("values", [])))
    for name, want in zip(expected["names"], expected["values"]):
        if want is None:
            continue
        have = mine.get(name)
        if have is None and not bool(want["tensor"].ne(0).any()):
            continue                          # nothing flows back in the reference either: all zeros
        if have is None:
            raise AssertionError(f"{where}: no gradient reaches {name} through your output (computed under "
                                 f"torch.no_grad(), detached, or rebuilt from Python numbers?): training "
                                 f"through this function would stop")
        _compare(where, have, want, "", path=f"the gradient with respect to {name}")


def _meta_check(devs: Sequence[str | torch.device]) -> bool:
    """The device contract is checked on FAKE_DEVICE when none of the graded devices is CUDA."""
    return not any(str(d) != FAKE_DEVICE and torch.device(d).type == "cuda" for d in devs)


def _run_on_meta(fn: Callable, case: Case, i: int) -> dict:
    """Run ``fn`` on the case's inputs moved to FAKE_DEVICE ("meta": tensors with shapes, dtypes and a
    device but no data; torch.device("cpu") arguments become "meta" too). {"status": "ok" | "mismatch" |
    "uncheckable", "output", "error"}: "mismatch" when a tensor of another device (one created without
    ``device=``) met the inputs in one operation, as it would on a GPU."""
    _import_dynamo_quietly()
    args, kwargs = case.make(_generator(i), torch.device("cpu"))
    meta = torch.device(FAKE_DEVICE)

    def on_meta(obj):
        if isinstance(obj, Tensor):           # same shape, strides and dtype, no data
            return torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype, device=meta)
        if isinstance(obj, torch.device) and obj.type == "cpu":
            return meta
        return obj
    try:
        with (_DeviceMeeting() if _DeviceMeeting is not None else contextlib.nullcontext()):
            out = fn(*_map(on_meta, args), **_map(on_meta, kwargs))
        return {"status": "ok", "output": _encode(out), "error": None}
    except Exception as e:
        text = str(e)
        if "is not on the expected device" in text or "same device" in text:
            return {"status": "mismatch", "output": None, "error": f"{type(e).__name__}: {_first_line(e)}"}
        return {"status": "uncheckable", "output": None, "error": f"{type(e).__name__}: {_first_line(e)}"}


def _import_dynamo_quietly() -> None:
    """The meta device's kernels import torch._dynamo, whose import makes TMPDIR/torchinductor_<user> (a
    compilation cache nothing here uses): import it once with that folder in a temporary one of ours,
    removed at once, so that grading leaves nothing in TMPDIR."""
    if "torch._dynamo" in sys.modules or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    import tempfile
    with tempfile.TemporaryDirectory(prefix="course-grading-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            import torch._dynamo  # noqa: F401
        except Exception:     # pragma: no cover - a torch without dynamo: nothing to keep quiet
            pass
        finally:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _device_ok(dev: str) -> bool:
    d = torch.device(dev)
    return d.type == "cpu" or (d.type == "cuda" and torch.cuda.is_available())


# ------------------------------------------------------------------------------------------ plumbing
@contextlib.contextmanager
def _stderr_to_stdout():
    """Run the student's code with stderr (and warnings, which go there) shown on stdout."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"warning from your code: {w.category.__name__}: {w.message}")


@contextlib.contextmanager
def _tripwires(names: Sequence[str]):
    """Yield a set that collects the forbidden ``names`` used inside the block: Python functions
    ("torch.nn.functional.conv2d", of modules already loaded) are wrapped for the block's duration,
    ``aten::`` ops are seen by a dispatch mode (whatever Python name reached them)."""
    used: set[str] = set()
    if not names:
        yield used
        return
    restore = []
    for name in (n for n in names if not n.startswith("aten::")):
        module_name, _, attr = name.rpartition(".")
        owner = sys.modules.get(module_name)     # only what is loaded: importing (flex attention) is slow
        original = getattr(owner, attr, None)
        if original is None or isinstance(original, type):   # classes: their ops reach the dispatcher
            continue

        def wire(*args, __name=name, __original=original, **kwargs):
            used.add(__name)
            return __original(*args, **kwargs)
        setattr(owner, attr, wire)
        restore.append((owner, attr, original))
    aten = tuple(n for n in names if n.startswith("aten::"))
    mode = _OpLog(aten, used) if aten and _OpLog is not None else contextlib.nullcontext()
    try:
        with mode:
            yield used
    finally:
        for owner, attr, original in restore:
            setattr(owner, attr, original)


try:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _OpLog(TorchDispatchMode):
        """Notes every aten op whose name starts with one of ``prefixes``."""

        def __init__(self, prefixes: tuple[str, ...], used: set[str]):
            super().__init__()
            self.prefixes, self.used = prefixes, used

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name
            if name.startswith(self.prefixes):
                self.used.add(name)
            return func(*args, **(kwargs or {}))
    class _DeviceMeeting(TorchDispatchMode):
        """On the meta device, an operation that meets a CPU tensor of one or more dimensions raises, as it
        would on a GPU: meta's own kernels let some through (``x += cpu``, ``x[i] = cpu``, ``x @ cpu``).
        Moving data (``.to``, ``copy_``) and CPU index tensors (allowed on CUDA) are let through."""
        MOVES = {"aten::_to_copy", "aten::copy_", "aten::to", "aten::lift_fresh", "aten::lift_fresh_copy",
                 "aten::_local_scalar_dense", "aten::index", "aten::detach", "aten::alias", "aten::view",
                 "aten::_unsafe_view", "aten::empty", "aten::set_"}
        PUTS = {"aten::index_put", "aten::index_put_", "aten::_index_put_impl", "aten::_index_put_impl_"}
        # x[i] = v: the index i may be on the CPU (as on CUDA), the values v may not

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func._schema.name
            if name in self.PUTS or name not in self.MOVES:
                tensors = [args[0], args[2]] if name in self.PUTS and len(args) > 2 else \
                    [t for t in _flat(list(args)) + _flat(kwargs) if isinstance(t, Tensor)]
                tensors = [t for t in tensors if isinstance(t, Tensor)]
                if any(t.is_meta for t in tensors):
                    other = next((t for t in tensors if not t.is_meta and t.dim() > 0), None)
                    if other is not None:
                        raise RuntimeError(f"Tensor on device {other.device} is not on the expected device "
                                           f"meta! ({func._schema.name})")
            return func(*args, **kwargs)
except ImportError:  # pragma: no cover - torch without dispatch modes: Python-level tripwires only
    _OpLog = None
    _DeviceMeeting = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def _clone(obj: Any) -> Any:
    return _map(lambda t: _clone_layout(t) if isinstance(t, Tensor) else t, obj)


def _clone_layout(t: Tensor) -> Tensor:
    """A copy with the same strides, non-contiguous ones included (``clone`` makes those contiguous), its
    gaps NaN (floats) or zero."""
    if t.is_contiguous() or t.numel() == 0 or 0 in t.stride() or t.is_meta:
        return t.clone()
    size = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    flat = torch.full((size,), math.nan if t.is_floating_point() else 0, dtype=t.dtype, device=t.device)
    out = flat.as_strided(t.shape, t.stride())
    out.copy_(t)
    return out.requires_grad_(t.requires_grad) if t.is_leaf and t.requires_grad else out


def _flat(obj: Any) -> list:
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _flat(o)]
    return [obj]


def _modified(mine_args, args, mine_kwargs, kwargs) -> int | None:
    """Index of the first input tensor the student's function changed in place, else None."""
    for k, (after, before) in enumerate(zip(_flat(mine_args) + _flat(mine_kwargs), _flat(args) + _flat(kwargs))):
        if isinstance(before, Tensor) and not (isinstance(after, Tensor) and after.shape == before.shape
                                               and after.dtype == before.dtype and _equal(after, before)):
            return k
    return None


def _equal(a: Tensor, b: Tensor) -> bool:
    """Equal entry by entry, NaN equal to NaN (inputs may hold NaN at positions a function ignores)."""
    if a.is_meta or b.is_meta:
        return True
    same = a == b
    if a.is_floating_point() or a.is_complex():
        same = same | (a.isnan() & b.isnan())
    return bool(same.all())


def _encode(obj: Any, device_as: str | None = None) -> Any:
    """Plain data for a record: tensors on the CPU (with the device they were on), sequences, numbers."""
    if isinstance(obj, Tensor):
        # FAKE_DEVICE ("meta") has no values: compared as zeros, i.e. shape, dtype and device only
        data = torch.zeros(obj.shape, dtype=obj.dtype) if obj.is_meta else obj.detach().to("cpu").clone()
        return {"tensor": data, "device": device_as or str(obj.device)}
    if isinstance(obj, (tuple, list)):
        return {"seq": [_encode(o, device_as) for o in obj], "type": type(obj).__name__,
                "repr": f"{type(obj).__name__} {obj!r:.60}"}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    return {"repr": f"{type(obj).__name__} {obj!r:.60}"}


def _describe(enc: Any) -> str:
    if not isinstance(enc, dict):
        return "nothing"
    if "tensor" in enc:
        return f"a tensor of shape {tuple(enc['tensor'].shape)}"
    if "repr" in enc:
        return str(enc["repr"])
    if "value" in enc:
        return f"{type(enc['value']).__name__} {enc['value']!r:.60}"
    return "an unknown value"


def _compare(where: str, got: Any, expected: Any, hint: str = "", path: str = "output") -> None:
    """Raise AssertionError(one line) unless the encoded ``got`` matches the encoded ``expected``."""
    got = got if isinstance(got, dict) else {}
    if "seq" in expected:
        n = len(expected["seq"])
        if "seq" not in got or len(got["seq"]) != n:
            raise AssertionError(f"{where}: expected a {expected['type']} of {n} values as {path}, got {_describe(got)}")
        for j, (g, e) in enumerate(zip(got["seq"], expected["seq"])):
            _compare(where, g, e, hint, f"{path}[{j}]")
        return
    if "value" in expected:
        want, have = expected["value"], got.get("value", got.get("repr", _describe(got)))
        if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool) \
                and math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-9):
            return
        if type(want) in (int, bool) and "value" in got and type(have) is not type(want):   # 6.0 is not the int 6
            raise AssertionError(f"{where}: {path} should be the {type(want).__name__} {want!r}, got "
                                 f"{type(have).__name__} {have!r}")
        if "value" not in got or have != want:
            raise AssertionError(f"{where}: {path} should be {want!r}, got {have!r}")
        return
    if "tensor" not in got or not isinstance(got["tensor"], Tensor):
        raise AssertionError(f"{where}: {path} should be a torch.Tensor, got {_describe(got)}")
    g, e = got["tensor"], expected["tensor"]
    if g.shape != e.shape:
        raise AssertionError(f"{where}: {path} has shape {tuple(g.shape)}, expected {tuple(e.shape)}")
    if g.dtype != e.dtype:
        raise AssertionError(f"{where}: {path} has dtype {g.dtype}, expected {e.dtype}")
    if str(got.get("device")) != str(expected["device"]):
        raise AssertionError(f"{where}: {path} is on {got.get('device')}, expected {expected['device']} "
                             f"(create new tensors on the input's device)")
    if e.numel() == 0:
        return
    atol, rtol = tolerance(e.dtype)
    g, e = g.to(torch.float64), e.to(torch.float64)
    bad_nan = torch.isnan(g) != torch.isnan(e)
    err = (g - e).abs().nan_to_num(nan=0.0)
    err = torch.where(bad_nan, torch.full_like(err, math.inf), err)
    excess = err - (atol + rtol * e.abs().nan_to_num(nan=0.0))
    if bool((excess > 0).any()):
        idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(excess), excess.shape)) if excess.dim() else ()
        msg = (f"{where}: {path} values differ: largest error {float(err.max()):.3g} "
               f"(at index {idx}: got {float(g[idx]):.8g}, expected {float(e[idx]):.8g}; "
               f"tolerance atol={atol:g}, rtol={rtol:g} for {expected['tensor'].dtype})")
        raise AssertionError(msg + (f". Hint: {hint}" if hint else ""))
