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
           "verify", "load_record", "RECORD_ENV"]

RECORD_ENV = "COURSE_GRADING_RECORD"

# (atol, rtol) by dtype: a correct implementation in another, equally valid order of operations passes;
# a wrong formula (errors of order 1) does not.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-8, 1e-7),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


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
    forbidden: tuple[str, ...] = ()    # "torch.nn.functional.conv2d" (Python level) or "aten::convolution"
    gives_away: tuple[Callable, ...] = ()   # other course_lib functions that hold the answer (a loop version):
                                            # removed from the student bundle along with the reference


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


def check(exercise: str, fn: Callable, *, device: Sequence[str | torch.device] | None = None) -> None:
    """Compare ``fn`` with the reference of ``exercise`` on all its cases; raise AssertionError on the
    first mismatch, print "NAME: N cases passed on DEVICES" otherwise. Under the autograder
    (``COURSE_GRADING_RECORD`` set) only record the outputs, for the grader to verify."""
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
    {"exercise", "devices", "cases": [{"device", "case", "output", "error", "modified", "forbidden"}]}."""
    ex = _exercise(exercise)
    if not callable(fn):
        raise TypeError(f"{exercise}: expected the function you wrote, got {type(fn).__name__} {fn!r:.60}")
    devs = [torch.device(d) for d in device] if device is not None else devices()
    entries = []
    for dev in devs:
        for i, case in enumerate(ex.cases):
            args, kwargs = case.make(torch.Generator().manual_seed(1000 + i), dev)
            mine_args, mine_kwargs = _clone(args), _clone(kwargs)
            entry = {"device": str(dev), "case": i, "output": None, "error": None, "modified": None,
                     "forbidden": []}
            try:
                with _stderr_to_stdout(), _tripwires(ex.forbidden) as used:
                    got = fn(*mine_args, **mine_kwargs)
                entry["output"] = _encode(got)
            except NotImplementedError as e:
                entry["error"] = "NotImplementedError" + (f": {_first_line(e)}" if str(e).strip() else "")
            except Exception as e:  # the student's error, reported in one line
                entry["error"] = f"{type(e).__name__}: {_first_line(e)}"
            entry["forbidden"] = sorted(used)
            entry["modified"] = _modified(mine_args, args, mine_kwargs, kwargs)
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
    device available here). Runs the reference in this process: nothing of the student's is executed."""
    exercise = rec.get("exercise")
    try:
        ex = _exercise(exercise)
    except ValueError as e:
        return Verdict(str(exercise), False, str(e))
    required = [str(torch.device(d)) for d in (on if on is not None else devices())]
    by_key = {(e.get("device"), e.get("case")): e for e in rec.get("cases", []) if isinstance(e, dict)}
    shortcut = None
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
                args, kwargs = case.make(torch.Generator().manual_seed(1000 + i), ref_dev)
                expected = _encode(ex.reference(*args, **kwargs), device_as=dev)
                _compare(where, entry.get("output"), expected, ex.hint)
                if entry.get("forbidden") and shortcut is None:   # reported once every value is right
                    shortcut = (f"{where}: your function uses {', '.join(map(str, entry['forbidden']))}, "
                                f"which this exercise asks you to implement yourself")
                if entry.get("modified") is not None:
                    raise AssertionError(f"{where}: your function modified its input tensor (argument "
                                         f"{entry['modified'] + 1}) in place; return a new tensor instead")
        if shortcut:
            raise AssertionError(shortcut)
    except AssertionError as e:
        return Verdict(exercise, False, str(e))
    return Verdict(exercise, True, f"{exercise}: {len(ex.cases)} cases passed on {', '.join(required)}")


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
except ImportError:  # pragma: no cover - torch without dispatch modes: Python-level tripwires only
    _OpLog = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def _clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


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
                                               and torch.equal(after, before)):
            return k
    return None


def _encode(obj: Any, device_as: str | None = None) -> Any:
    """Plain data for a record: tensors on the CPU (with the device they were on), sequences, numbers."""
    if isinstance(obj, Tensor):
        data = torch.empty(obj.shape, dtype=obj.dtype) if obj.is_meta else obj.detach().to("cpu").clone()
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
