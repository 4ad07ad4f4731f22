"""The one entry point that notebook tests call: ``check(exercise, student_function)``.

For the named exercise it runs the student's function and the ``course_lib`` reference on the same
seeded cases, on every available device (the CPU always; CUDA when ``torch.cuda.is_available()``), and
checks each output's type, shape, dtype, device and values (tolerances by dtype). The first mismatch
raises an ``AssertionError`` whose one-line message names the exercise, the case, the device and the
largest error: that message is what a student reads in the feedback.

    >>> from course_lib import grading
    >>> grading.check("apply_rope_pairs", apply_rope_pairs)
    apply_rope_pairs: 9 cases passed on cpu

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
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["Case", "Exercise", "check", "devices", "exercises", "register", "tolerance"]

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


_REGISTRY: dict[str, Exercise] = {}
_LOADED = False


def register(exercise: Exercise) -> Exercise:
    if exercise.name in _REGISTRY and _REGISTRY[exercise.name] is not exercise:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    _REGISTRY[exercise.name] = exercise
    return exercise


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


def check(exercise: str, fn: Callable, *, device: Sequence[str | torch.device] | None = None) -> None:
    """Compare ``fn`` with the reference of ``exercise`` on all its cases; raise AssertionError on the
    first mismatch, print "NAME: N cases passed on DEVICES" otherwise."""
    known = exercises()
    if not isinstance(exercise, str) or exercise not in known:
        raise ValueError(f"unknown exercise {exercise!r}; known exercises: {', '.join(sorted(known))}")
    if not callable(fn):
        raise TypeError(f"{exercise}: expected the function you wrote, got {type(fn).__name__} {fn!r:.60}")
    ex = known[exercise]
    devs = [torch.device(d) for d in device] if device is not None else devices()
    for dev in devs:
        for i, case in enumerate(ex.cases):
            where = f"{exercise}, case {i + 1}/{len(ex.cases)} '{case.name}' on {dev}"
            gen = torch.Generator().manual_seed(1000 + i)
            args, kwargs = case.make(gen, dev)
            expected = ex.reference(*_clone(args), **_clone(kwargs))
            mine_args, mine_kwargs = _clone(args), _clone(kwargs)
            try:
                with _stderr_to_stdout():
                    got = fn(*mine_args, **mine_kwargs)
            except NotImplementedError:
                raise AssertionError(f"{where}: not implemented yet (the function raised NotImplementedError)") from None
            except Exception as e:  # the student's error, reported in one line
                raise AssertionError(f"{where}: your function raised {type(e).__name__}: {_first_line(e)}") from None
            _compare(where, got, expected, ex.hint)
            _unchanged(where, mine_args, args, mine_kwargs, kwargs)
    print(f"{exercise}: {len(ex.cases)} cases passed on {', '.join(str(d) for d in devs)}")


@contextlib.contextmanager
def _stderr_to_stdout():
    """Run the student's code with stderr (and warnings, which go there) shown on stdout."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"warning from your code: {w.category.__name__}: {w.message}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else "(no message)"


def _clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _unchanged(where: str, mine_args, args, mine_kwargs, kwargs) -> None:
    for k, (after, before) in enumerate(zip(_flat(mine_args) + _flat(mine_kwargs), _flat(args) + _flat(kwargs))):
        if isinstance(before, Tensor) and not torch.equal(after, before):
            raise AssertionError(f"{where}: your function modified its input tensor (argument {k + 1}) in place; "
                                 f"return a new tensor instead")


def _flat(obj: Any) -> list:
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in _flat(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _flat(o)]
    return [obj]


def _compare(where: str, got: Any, expected: Any, hint: str = "", path: str = "output") -> None:
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise AssertionError(f"{where}: expected a {type(expected).__name__} of {len(expected)} values as "
                                 f"{path}, got {_describe(got)}")
        for j, (g, e) in enumerate(zip(got, expected)):
            _compare(where, g, e, hint, f"{path}[{j}]")
        return
    if not isinstance(expected, Tensor):
        if isinstance(expected, float) and isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            return
        if got != expected:
            raise AssertionError(f"{where}: {path} should be {expected!r}, got {got!r}")
        return
    if not isinstance(got, Tensor):
        raise AssertionError(f"{where}: {path} should be a torch.Tensor, got {_describe(got)}")
    if got.shape != expected.shape:
        raise AssertionError(f"{where}: {path} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if got.dtype != expected.dtype:
        raise AssertionError(f"{where}: {path} has dtype {got.dtype}, expected {expected.dtype}")
    if got.device != expected.device:
        raise AssertionError(f"{where}: {path} is on {got.device}, expected {expected.device} "
                             f"(create new tensors on the input's device)")
    atol, rtol = tolerance(expected.dtype)
    if expected.numel() == 0:
        return
    g, e = got.detach().to("cpu", torch.float64), expected.detach().to("cpu", torch.float64)
    bad_nan = torch.isnan(g) != torch.isnan(e)
    err = (g - e).abs().nan_to_num(nan=0.0)
    err = torch.where(bad_nan, torch.full_like(err, math.inf), err)
    excess = err - (atol + rtol * e.abs().nan_to_num(nan=0.0))
    if bool((excess > 0).any()):
        idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(excess), excess.shape)) if excess.dim() else ()
        msg = (f"{where}: {path} values differ: largest error {float(err.max()):.3g} "
               f"(at index {idx}: got {float(g[idx]):.8g}, expected {float(e[idx]):.8g}; "
               f"tolerance atol={atol:g}, rtol={rtol:g} for {expected.dtype})")
        raise AssertionError(msg + (f". Hint: {hint}" if hint else ""))


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"{type(obj).__name__} {obj!r:.60}"
