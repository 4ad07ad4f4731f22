"""``python -m gpu.check [--out DIR] [--parts LIST] [--quick] [--budget S]``: the CUDA half of the project in
one call (issue 27), made for a lent GPU machine (torch and CUDA, no package registry) and tried on the CPU.

Parts, in order, each in its own process group with a time limit (a part past it is killed and reported
``timed out``; the whole run stays inside ``--budget``, default 470 s: under 8 minutes):

1. ``install``   what grading needs beyond torch, from the carried wheelhouse ``build/gpu-wheels/`` (``make
   gpu-wheels`` here), with pip, offline, into the Python that runs this script (on the lent machine its
   own, thrown away after the call), then the project itself (``pip install --no-deps -e .``); the
   carried bubblewrap and acl (Debian packages) are unpacked under /tmp and put on PATH where the machine
   has none. Skipped when everything imports already.
2. ``env``       torch, CUDA, the device, bwrap, the sandbox tier ``--sandbox auto`` would use, and which of
   the project's packages import.
3. ``cuda-tests`` ``pytest -m cuda`` over tests/course_lib (the library and course_lib.grading tests).
4. ``grading``   one assignment (rope) graded by ``python -m autograder grade`` in the sandbox: a complete
   submission (full marks on every autograded cell), a wrong one (loses apply_rope_pairs's points), and a
   device-escaping one (correct on the CPU, but makes its frequencies without ``device=``): it loses that
   exercise, with a verdict naming ``cuda`` on a GPU, ``meta`` without one (course_lib.grading.FAKE_DEVICE).
   Where the sandboxed run misses on CUDA, it is graded again with ``--sandbox off`` to tell the two apart.
5. ``bench``     GPU rows (gpu/bench.py): sliding window (chunks, naive, SDPA with a band mask) at n = 8k,
   16k, 32k; KV-cache decoding vs recomputation; im2col convolution vs cuDNN; float32 and bfloat16. Without
   CUDA: a tiny CPU smoke size, labelled as such, so that the code path runs.

6. ``course-lib`` the rest of tests/course_lib (``-m "not cuda"``, pytest-xdist): with a GPU present the
   hidden-case tests grade on CUDA as well, and their device checks run on CUDA instead of ``meta``.
   Last, in what is left of the budget.

``COURSE_GRADING_DEVICES=cpu`` (or no GPU) reports the CUDA parts as skipped, with the reason. Results:
``gpu-check.json``, ``gpu-check.md``, ``bench.json`` and ``work.tar.gz`` (every part's log, the graded
CSVs and feedback, pytest's junit XML) under ``--out`` (default ``$OUT`` when set, else build/gpu-check/;
the parts work in build/gpu-check-work/), the table printed at the end; exit status 0 when no part failed
or timed out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / "build" / "gpu-wheels"
WORK = REPO / "build" / "gpu-check-work"      # the parts' scratch (ignored by git: build/)
PARTS = ("install", "env", "cuda-tests", "grading", "bench", "course-lib")
LIMITS = {"install": 120, "env": 60, "cuda-tests": 150, "grading": 150, "bench": 180,   # seconds, at most
          "course-lib": 300}
BUDGET = 470
# What grading and the tests import beyond torch (module: distribution), checked by `env` and `install`.
MODULES = {"nbgrader": "nbgrader", "jupyter_client": "jupyter-client", "ipykernel": "ipykernel",
           "nbconvert": "nbconvert", "nbclient": "nbclient", "nbformat": "nbformat", "sqlalchemy": "sqlalchemy",
           "latex2mathml": "latex2mathml", "copydetect": "copydetect", "jsonschema": "jsonschema",
           "pytest": "pytest", "xdist": "pytest-xdist", "hypothesis": "hypothesis", "nbval": "nbval",
           "matplotlib": "matplotlib", "sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "pyyaml",
           "tqdm": "tqdm", "numpy": "numpy"}
ASSIGNMENT = "rope"
ESCAPE = ("rope_thetas(x.shape[-1], base, dtype=dt, device=x.device)", "rope_thetas(x.shape[-1], base, dtype=dt)")
WRONG = ("+ swapped * sin", "- swapped * sin")


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "build" / "gpu-check"


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_bounded(cmd: list[str], seconds: float, log: Path, env: dict | None = None, cwd: Path = REPO):
    """Run ``cmd`` in its own process group, stdout+stderr into ``log``; (returncode or None if it ran past
    ``seconds`` and was killed with its group, the output)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, seconds))
        except subprocess.TimeoutExpired:
            rc = None
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
    return rc, log.read_text(errors="replace")


def part_env() -> dict:
    """Environment of the parts: the project importable, W&B off, no plots on screen, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(WANDB_MODE="disabled", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def cuda_wanted() -> tuple[bool, str]:
    """Whether the CUDA parts run, or the reason they do not (one line)."""
    wanted = os.environ.get("COURSE_GRADING_DEVICES")
    if wanted is not None and "cuda" not in [d.strip().split(":")[0] for d in wanted.split(",")]:
        return False, f"no CUDA device asked for (COURSE_GRADING_DEVICES={wanted})"
    try:
        import torch
    except ImportError:
        return False, "no CUDA device: torch does not import here"
    if not torch.cuda.is_available():
        return False, "no CUDA device: torch.cuda.is_available() is False"
    return True, ""


# --------------------------------------------------------------------------------------------- install
def missing_modules() -> list[str]:
    import importlib.util
    return [m for m in MODULES if importlib.util.find_spec(m) is None]


def install(wheels: Path, log_dir: Path, seconds: float, force: bool = False) -> dict:
    """Install the wheelhouse offline into this Python, and the project with --no-deps; put the carried
    bwrap/setfacl on PATH where the machine has none."""
    details: dict = {"python": sys.executable, "version": sys.version.split()[0]}
    notes = []
    debs = wheels / "debs"
    missing_tools = [t for t in ("bwrap", "setfacl") if shutil.which(t) is None]
    if missing_tools and debs.is_dir() and shutil.which("dpkg"):
        root = Path("/tmp/gpu-check-debs")
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True)
        os.environ["PATH"] = os.pathsep.join([str(root / "usr" / "bin"), str(root / "bin"), os.environ.get("PATH", "")])
        libs = [str(p) for p in (root / "usr" / "lib" / "x86_64-linux-gnu", root / "lib" / "x86_64-linux-gnu")
                if p.is_dir()]
        if libs and subprocess.run(["sh", "-c", "ldconfig -p | grep -q libacl.so.1"]).returncode != 0:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        notes.append(f"unpacked {', '.join(p.name for p in sorted(debs.glob('*.deb')))} into {root}")
    details["bwrap"] = shutil.which("bwrap")
    missing = missing_modules()
    details["missing_before"] = missing
    if not missing and not force:
        return {"status": "skipped", "reason": "everything grading needs imports already" +
                (f" ({'; '.join(notes)})" if notes else ""), "details": details}
    manifest = wheels / "manifest.json"
    if not manifest.is_file():
        return {"status": "skipped", "reason": f"no wheelhouse at {wheels} (make gpu-wheels here, carry "
                f"build/gpu-wheels): {', '.join(missing)} missing", "details": details}
    info = json.loads(manifest.read_text())
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    if py in info.get("unsupported", {}) or py not in info.get("pythons", []):
        why = info.get("unsupported", {}).get(py, f"the wheelhouse was made for CPython {', '.join(info['pythons'])}")
        return {"status": "skipped", "reason": f"this is CPython {py}: {why}", "details": details}
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
           "--disable-pip-version-check", "--no-cache-dir", "--no-compile", "--progress-bar", "off"]
    start = time.monotonic()
    steps = [pip + ["--no-deps", *info.get("no_deps", [])],
             pip + ["-r", str(wheels / "requirements.txt")],
             pip + ["--no-deps", "--no-build-isolation", "-e", str(REPO)]]
    for i, cmd in enumerate(steps):
        left = seconds - (time.monotonic() - start)
        rc, out = run_bounded(cmd, left, log_dir / f"install-{i + 1}.log")
        if rc is None:
            return {"status": "timed out", "reason": f"pip step {i + 1} ran past {seconds:.0f} s", "details": details}
        if rc != 0 and i < 2:
            return {"status": "failed", "reason": f"pip step {i + 1}: {_one_line(out)}", "details": details,
                    "log": _tail(out)}
        if rc != 0:
            errors = [line.strip() for line in out.splitlines() if line.strip().lower().startswith("error")]
            notes.append(f"the project itself did not install ({(errors or [_one_line(out)])[0][:120]}): "
                         f"PYTHONPATH={REPO} instead")
    still = missing_modules()
    details["missing_after"] = still
    if still:
        return {"status": "failed", "reason": f"still missing after the install: {', '.join(still)}", "details": details}
    return {"status": "passed", "reason": f"installed offline from {wheels.name} ({len(missing)} were missing)"
            + (f"; {'; '.join(notes)}" if notes else ""), "details": details}


# ------------------------------------------------------------------------------------------------ env
def worker_env() -> dict:
    import importlib
    import platform
    details: dict = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
                     "cpus": os.cpu_count(), "COURSE_GRADING_DEVICES": os.environ.get("COURSE_GRADING_DEVICES")}
    try:
        import torch
        details["torch"] = torch.__version__
        details["cuda_available"] = torch.cuda.is_available()
        details["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            details.update(device=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                           memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                           cudnn=torch.backends.cudnn.version())
    except Exception as exc:                                    # noqa: BLE001 - reported, not raised
        details["torch"] = f"does not import: {type(exc).__name__}: {exc}"
    details["bwrap"] = shutil.which("bwrap")
    details["setfacl"] = shutil.which("setfacl")
    details["nvidia_device_nodes"] = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    imports = {}
    for module, dist in MODULES.items():
        try:
            mod = importlib.import_module(module)
            imports[dist] = getattr(mod, "__version__", "ok")
        except Exception as exc:                                # noqa: BLE001
            imports[dist] = f"MISSING ({type(exc).__name__})"
    details["imports"] = imports
    try:
        check = subprocess.run([sys.executable, "-m", "autograder.sandbox", "check"], capture_output=True, text=True,
                               timeout=40, cwd=REPO, env=part_env())
        details["sandbox_check"] = check.stdout[-3000:]
        hit = re.search(r"--sandbox auto uses: (.+)", check.stdout)
        details["sandbox_auto"] = hit.group(1).strip() if hit else _one_line(check.stderr) or "?"
    except subprocess.TimeoutExpired:
        details["sandbox_auto"] = "python -m autograder.sandbox check timed out"
    bad = [d for d, v in imports.items() if str(v).startswith("MISSING")]
    status = "failed" if bad or "does not import" in str(details.get("torch")) else "passed"
    reason = (f"missing: {', '.join(bad)}" if bad else
              f"torch {details.get('torch')}, " + (f"CUDA: {details['device']}" if details.get("cuda_available")
                                                    else "no CUDA device") + f", sandbox auto: {details['sandbox_auto']}")
    return {"status": status, "reason": reason, "details": details}


# ------------------------------------------------------------------------------------------ cuda-tests
def cuda_tests(out: Path, seconds: float, everything: bool = False) -> dict:
    """``pytest -m cuda tests/course_lib``; ``everything``: the rest of tests/course_lib (``-m "not cuda"``), in
    which the hidden-case tests grade on CUDA too where it is present (their device checks run on it instead
    of on meta), with pytest-xdist's workers."""
    ok, why = cuda_wanted()
    if not ok:
        return {"status": "skipped", "reason": why + ("; the rest of tests/course_lib runs in `make test`"
                                                      if everything else "")}
    name = "course-lib" if everything else "cuda-tests"
    xml = out / f"{name}.xml"
    marker = "not cuda" if everything else "cuda"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", marker, "-q", "-rfE",
           f"--junitxml={xml}", "tests/course_lib"]
    if everything:
        import importlib.util
        if importlib.util.find_spec("xdist"):
            cmd[3:3] = ["-n", str(max(2, min(12, (os.cpu_count() or 2) - 2)))]
    env = {**part_env(), "NBGRADER_EXECUTION": "ci"}
    rc, text = run_bounded(cmd, seconds, out / f"{name}.log", env=env)
    if rc is None:
        return {"status": "timed out", "reason": f"pytest -m {marker!r} ran past {seconds:.0f} s",
                "log": _tail(text, 4000)}
    counts = junit_counts(xml)
    summary = _one_line(text)
    if rc == 0 and counts.get("tests", 0) > 0:
        return {"status": "passed", "reason": summary, "details": counts}
    return {"status": "failed", "reason": summary or f"pytest exited {rc}", "details": counts, "log": _tail(text, 4000)}


def junit_counts(xml: Path) -> dict:
    if not xml.is_file():
        return {}
    import xml.etree.ElementTree as ET
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}


# --------------------------------------------------------------------------------------------- grading
def make_submissions(dest: Path) -> dict[str, Path]:
    """complete, wrong and escaping submissions of ASSIGNMENT, typed into the release as a student would:
    the instructor's answers (markers removed), then one edit each (a KeyError/ValueError if the solution
    changed so that the edit no longer applies: the check must not pass silently)."""
    import nbformat
    marker = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
    release = nbformat.read(REPO / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    solution = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    gid = lambda c: c.metadata.get("nbgrader", {}).get("grade_id")                     # noqa: E731
    answers = {gid(c): "\n".join(l for l in c.source.splitlines() if not marker.match(l))
               for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        if gid(cell) in answers:
            cell.source = answers[gid(cell)]
    made = {}
    for student, (old, new) in {"complete": ("", ""), "wrong": WRONG, "escaping": ESCAPE}.items():
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        if old:
            cell = next(c for c in nb.cells if gid(c) == "apply_rope_pairs")
            if old not in cell.source:
                raise ValueError(f"{old!r} is no longer in the solution of apply_rope_pairs: update gpu/check.py")
            cell.source = cell.source.replace(old, new, 1)
        path = dest / student / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        made[student] = path
    return made


def read_details(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with open(out / "details.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["student"], []).append(row)
    return rows


def judge(rows: dict[str, list[dict]], cuda: bool) -> list[dict]:
    """The checks of the three verdicts: [{check, status, reason}]."""
    checks = []

    def add(name, ok, reason, skip=None):
        checks.append({"check": name, "status": "skipped" if skip else ("passed" if ok else "failed"),
                       "reason": skip or reason})

    def cells(student):
        return {r["grade_id"]: r for r in rows.get(student, []) if r["status"] != "needs manual grade"}

    complete = cells("complete")
    short = {g: r["message"][:200] for g, r in complete.items() if r["score"] != r["max_score"]}
    add("complete: full marks on every autograded cell", complete and not short,
        f"{len(complete)} cells full" if complete and not short else f"short: {short or 'no rows'}")
    wrong = cells("wrong")
    pairs = wrong.get("test_apply_rope_pairs", {})
    others = {g: r["score"] for g, r in wrong.items() if g != "test_apply_rope_pairs" and r["score"] != r["max_score"]}
    add("wrong: loses apply_rope_pairs's points, keeps the others", pairs and pairs["score"] == "0" and not others,
        f"apply_rope_pairs {pairs.get('score')}/{pairs.get('max_score')}: {pairs.get('message', '')[:160]}"
        + (f"; others short: {others}" if others else ""))
    esc = cells("escaping")
    pairs = esc.get("test_apply_rope_pairs", {})
    msg = pairs.get("message", "")
    others = {g: r["score"] for g, r in esc.items() if g != "test_apply_rope_pairs" and r["score"] != r["max_score"]}
    add("escaping: loses apply_rope_pairs's points, keeps the others", pairs and pairs["score"] == "0" and not others,
        f"apply_rope_pairs {pairs.get('score')}/{pairs.get('max_score')}" + (f"; others short: {others}" if others else ""))
    add("escaping: the verdict names cuda", re.search(r"\bon cuda", msg) is not None, msg[:300],
        skip=None if cuda else "no CUDA device: the device contract is checked on meta instead")
    add("escaping: caught on meta (no GPU)", re.search(r"\bon meta\b", msg) is not None, msg[:300],
        skip="a GPU is graded on: the device contract is checked on CUDA itself" if cuda else None)
    return checks


def grading(out: Path, seconds: float, quick: bool) -> dict:
    cuda, why = cuda_wanted()
    start = time.monotonic()
    subs = out / "grading-submissions"
    shutil.rmtree(subs, ignore_errors=True)
    try:
        make_submissions(subs)
    except Exception as exc:                                    # noqa: BLE001
        return {"status": "failed", "reason": f"could not make the submissions: {type(exc).__name__}: {exc}"}
    runs = []
    first = os.environ.get("GPU_CHECK_SANDBOX", "auto")         # auto: the strongest tier that works here
    for sandbox in dict.fromkeys((first, "off")):
        left = seconds - (time.monotonic() - start)
        if runs and (not cuda or left < 45):           # the rerun without the sandbox: only to tell CUDA apart
            break
        dest = out / f"grading-{sandbox}"
        shutil.rmtree(dest, ignore_errors=True)
        cmd = [sys.executable, "-m", "autograder", "grade", ASSIGNMENT, "--submissions", str(subs), "--out", str(dest),
               "--workers", "3", "--sandbox", sandbox, "--force"]
        rc, text = run_bounded(cmd, left, out / f"grading-{sandbox}.log", env=part_env())
        tier = re.search(r"^sandbox: (.*)$", text, re.M)
        run = {"sandbox": sandbox, "tier": tier.group(1)[:200] if tier else "?", "rc": rc}
        if rc is None:
            run.update(status="timed out", reason=f"grading ran past {left:.0f} s")
        elif rc != 0 or not (dest / "details.csv").is_file():
            run.update(status="failed", reason=f"python -m autograder grade exited {rc}: {_one_line(text)}",
                       log=_tail(text, 3000))
        else:
            rows = read_details(dest)
            run["checks"] = judge(rows, cuda)
            run["scores"] = {s: f"{sum(int(r['score'] or 0) for r in rs)}/{sum(int(r['max_score']) for r in rs)}"
                             for s, rs in sorted(rows.items())}
            failed = [c for c in run["checks"] if c["status"] == "failed"]
            run.update(status="failed" if failed else "passed",
                       reason="; ".join(f"{c['check']}: {c['reason']}" for c in failed) or
                       f"scores {run['scores']}" + ("" if cuda else f"; CUDA checks skipped ({why})"))
        runs.append(run)
        if run["status"] == "passed":
            break                      # the sandboxed run is right: no need to grade again without it
    first = runs[0]
    details = {"runs": runs, "cuda": cuda}
    if first["status"] != "passed" and len(runs) > 1:
        first = {**first, "reason": f"{first['reason']} (with --sandbox off: {runs[1]['status']}: {runs[1]['reason']})"}
    return {"status": first["status"], "reason": f"[{first['tier'][:60]}] {first['reason']}", "details": details}


# ----------------------------------------------------------------------------------------------- bench
def bench(out: Path, seconds: float, quick: bool) -> dict:
    cuda, why = cuda_wanted()
    cmd = [sys.executable, "-m", "gpu.bench", "--out", str(out), "--device", "cuda" if cuda else "cpu"]
    if quick:
        cmd.append("--quick")
    rc, text = run_bounded(cmd, seconds, out / "bench.log", env=part_env())
    if rc is None:
        return {"status": "timed out", "reason": f"the benchmarks ran past {seconds:.0f} s (rows so far in bench.md)",
                "log": _tail(text)}
    if rc != 0:
        return {"status": "failed", "reason": _one_line(text), "log": _tail(text, 4000)}
    result = json.loads((out / "bench.json").read_text())
    if not cuda:
        return {"status": "skipped", "reason": f"{why}; ran a CPU smoke size instead ({len(result['rows'])} rows, "
                "not a benchmark)", "details": result}
    return {"status": "ran", "reason": f"{len(result['rows'])} rows on {result['device']}", "details": result}


# ---------------------------------------------------------------------------------------------- driver
def worker(part: str, out: Path, seconds: float, quick: bool) -> None:
    """Runs in a child process: one part, its result written to out/part-PART.json."""
    result = {"env": lambda: worker_env(), "cuda-tests": lambda: cuda_tests(out, seconds),
              "course-lib": lambda: cuda_tests(out, seconds, everything=True),
              "grading": lambda: grading(out, seconds, quick), "bench": lambda: bench(out, seconds, quick)}[part]()
    (out / f"part-{part}.json").write_text(json.dumps(result, indent=1, default=str))


def run_part(part: str, out: Path, seconds: float, quick: bool) -> dict:
    if part == "install":
        return install(WHEELS, out, seconds, force=os.environ.get("GPU_CHECK_INSTALL") == "force")
    result_file = out / f"part-{part}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "gpu.check", "--worker", part, "--out", str(out), "--budget", str(int(seconds))]
    if quick:
        cmd.append("--quick")
    # the worker bounds its own subprocesses a little inside the part's limit; this one bounds the worker
    rc, text = run_bounded(cmd, seconds + 10, out / f"part-{part}.log", env=part_env())
    if rc is None:
        return {"status": "timed out", "reason": f"ran past its limit of {seconds:.0f} s", "log": _tail(text)}
    if not result_file.is_file():
        return {"status": "failed", "reason": f"the part's process exited {rc}: {_one_line(text)}", "log": _tail(text, 4000)}
    return json.loads(result_file.read_text())


def pack(work: Path, dest: Path, biggest: int = 2 * 2**20) -> None:
    """WORK's logs, CSVs, JSON and submissions as one archive (files over ``biggest`` bytes left out)."""
    import tarfile
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.stat().st_size <= biggest and "/.cache/" not in str(path) \
                    and path.suffix in (".log", ".csv", ".json", ".xml", ".md", ".ipynb", ".html", ".txt"):
                tar.add(path, arcname=str(path.relative_to(work)))


def markdown(report: dict) -> str:
    env = next((p.get("details", {}) for p in report["parts"] if p["part"] == "env"), {})
    lines = [f"# gpu-check ({report['when']})", "",
             f"`{report['command']}` on {env.get('device') or 'no CUDA device'}, torch {env.get('torch', '?')}, "
             f"Python {env.get('python', '?')}; total {report['total_s']:.0f} s (budget {report['budget_s']} s)", "",
             "| part | status | seconds | detail |", "| --- | --- | ---: | --- |"]
    for p in report["parts"]:
        lines.append(f"| {p['part']} | {p['status']} | {p['seconds']:.1f} | {p['reason'].replace('|', '/')} |")
    grading_part = next((p for p in report["parts"] if p["part"] == "grading"), None)
    for run in (grading_part or {}).get("details", {}).get("runs", []):
        lines += ["", f"## grading with --sandbox {run['sandbox']} ({run['tier']})", ""]
        lines += [f"- {c['status']}: {c['check']}: {c['reason']}" for c in run.get("checks", [])]
    bench_part = next((p for p in report["parts"] if p["part"] == "bench"), None)
    if bench_part and bench_part.get("details", {}).get("markdown"):
        lines += ["", bench_part["details"]["markdown"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder (default $OUT, else build/gpu-check)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="smallest sizes (the regression test's mode)")
    parser.add_argument("--budget", type=int, default=BUDGET, help=f"seconds for the whole run (default {BUDGET})")
    parser.add_argument("--work", type=Path, default=WORK, help="the parts' scratch folder (default build/gpu-check-work)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = (args.out or default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, out, args.budget, args.quick)
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        print(f"gpu.check: unknown part(s) {', '.join(unknown) or '(none given)'}; the parts are {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    if args.budget < 30:
        print(f"gpu.check: --budget {args.budget} is too short (at least 30 s)", file=sys.stderr)
        return 2
    # The parts work in WORK (logs, graded folders); OUT gets four files (the device tool brings back at
    # most 8 files from $OUT): gpu-check.json, gpu-check.md, bench.json, work.tar.gz (WORK's logs and CSVs).
    work = args.work.resolve()
    if work == out or out.is_relative_to(work):
        print(f"gpu.check: --work {work} must not hold --out {out}", file=sys.stderr)
        return 2
    if work.is_dir() and any(work.iterdir()) and not (work / ".gpu-check-work").is_file():
        print(f"gpu.check: --work {work} is a folder that gpu.check did not make: give an empty or new one",
              file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / ".gpu-check-work").write_text("scratch of python -m gpu.check: emptied by each run\n")
    start = time.monotonic()
    results = []
    for part in [p for p in PARTS if p in parts]:
        left = args.budget - (time.monotonic() - start)
        t0 = time.monotonic()
        if left < 15:
            result = {"status": "skipped", "reason": f"the run's budget of {args.budget} s is used up"}
        else:
            print(f"gpu.check: {part} (at most {min(LIMITS[part], left):.0f} s) ...", file=sys.stderr, flush=True)
            result = run_part(part, work, min(LIMITS[part], left), args.quick)
        results.append({"part": part, "seconds": round(time.monotonic() - t0, 1), **result})
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python -m gpu.check " + " ".join(argv if argv is not None else sys.argv[1:]),
              "budget_s": args.budget, "total_s": round(time.monotonic() - start, 1), "parts": results}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    if (work / "bench.json").is_file():
        shutil.copy(work / "bench.json", out / "bench.json")
    pack(work, out / "work.tar.gz")
    (out / "gpu-check.md").write_text(markdown(report))
    width = max(len(r["part"]) for r in results)
    print(f"\n{'part':<{width}}  {'status':<9}  {'seconds':>7}  detail")
    for r in results:
        print(f"{r['part']:<{width}}  {r['status']:<9}  {r['seconds']:7.1f}  {r['reason'][:160]}")
    print(f"{'total':<{width}}  {'':<9}  {report['total_s']:7.1f}  (budget {args.budget} s)  -> {out / 'gpu-check.md'}")
    return 1 if any(r["status"] in ("failed", "timed out") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
