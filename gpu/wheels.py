"""``python -m gpu.wheels [--dest DIR] [--pythons 3.10,3.11,3.12,3.13]``: the wheelhouse a GPU machine
without a package registry needs to grade (``build/gpu-wheels/`` by default).

What goes in: every package that grading and the CUDA tests need beyond torch, at the versions installed
here (the tested pins of ``pyproject.toml``), found by walking the requirements of ``ROOTS`` in this
environment's metadata, minus

* torch, its CUDA libraries (``nvidia-*``) and triton: the GPU machine has its own CUDA build of torch;
* what grading never imports: JupyterLab, Notebook, jupyterlab-server, ipywidgets (nbgrader 0.9.6 asks
  for them for its formgrader and labextensions; ``nbgrader autograde``/``generate_feedback`` run without
  them, so nbgrader itself is installed with ``--no-deps`` and its other requirements are listed);
* compiled packages that the lent machines' image already has (``IMAGE_HAS``: numpy, matplotlib, pillow,
  scipy, scikit-learn, scikit-image, pyyaml, ...: 60+ MiB for four Pythons), unless ``--with-image-packages``.

Compiled packages are fetched as binary wheels for each CPython of ``--pythons`` (``pip download
--only-binary=:all: --python-version X --platform manylinux...``); pure-Python ones once. The folder also
gets ``requirements.txt`` (what ``gpu.check`` installs, resolved by pip against what the machine already
has) and ``manifest.json`` (packages, Pythons, total size). The total must fit the device tool's carry
limit (64 MiB with the working tree): the command fails, in one line, when it does not.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / "build" / "gpu-wheels"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_26_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux1_x86_64")
# Compiled packages that also publish a pure-Python wheel, which runs everywhere (slower, not on grading's
# hot path): carried once as that wheel instead of once per Python (SQLAlchemy: 4.6 MiB each).
PURE = {"sqlalchemy", "debugpy"}
LIMIT_MIB = 56          # the device tool carries 64 MiB in all; the working tree itself is about 3 MiB

# What grading (nbgrader + our autograder), the hidden tests and `pytest -m cuda` import, beyond torch.
ROOTS = ("nbgrader", "nbval", "pytest", "pytest-xdist", "hypothesis", "jsonschema", "latex2mathml", "copydetect",
         "pyseccomp", "pyyaml", "tqdm", "ipykernel", "matplotlib", "scikit-learn", "scikit-image")
# Installed with --no-deps: their requirements that grading never imports are left out (NEVER).
NO_DEPS = ("nbgrader",)
NEVER = {"torch", "triton", "jupyterlab", "notebook", "jupyterlab-server", "ipywidgets", "setuptools", "pip"}
# Compiled packages the lent machines' image holds (/work/.library/device/KINDS.md, "Python packages already
# there"): not carried unless --with-image-packages.
IMAGE_HAS = {"numpy", "matplotlib", "pillow", "contourpy", "kiwisolver", "fonttools", "scipy", "scikit-learn",
             "scikit-image", "pyyaml", "markupsafe", "psutil", "coverage", "charset-normalizer", "imageio",
             "tifffile", "lazy-loader", "networkx", "joblib", "threadpoolctl", "pyparsing", "cycler",
             "python-dateutil", "six", "packaging", "pygments", "jinja2", "requests", "urllib3", "idna",
             "certifi", "attrs", "typing-extensions", "pluggy", "iniconfig", "execnet", "sortedcontainers",
             "tqdm", "pytest", "pytest-xdist", "hypothesis", "h11", "anyio", "httpx", "httpcore"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=ROOTS) -> dict[str, str]:
    """{distribution: installed version} of ``roots`` and everything they require here (markers evaluated
    for this platform, no extras), without NEVER, the requirements of NO_DEPS packages that lead only to
    NEVER, torch's CUDA libraries."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    stack = [(norm(r), "") for r in roots]            # (distribution, one extra asked of it, or "")
    while stack:
        name, extra = stack.pop()
        if (name, extra) in done or name in NEVER or name.startswith("nvidia-"):
            continue
        done.add((name, extra))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"gpu.wheels: {name} is not installed here: run `make setup` first") from None
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({"extra": extra}):
                continue
            if extra and not (req.marker and "extra" in str(req.marker)):
                continue                              # the extra's own lines only: the rest came with ""
            stack += [(norm(req.name), "")] + [(norm(req.name), e) for e in req.extras]
    return found


def requires_nothing(name: str) -> bool:
    import importlib.metadata as md
    return not md.distribution(name).requires


def requirements(pins: dict[str, str]) -> list[str]:
    """The lines of requirements.txt: the roots, pinned where the wheelhouse carries them, left to the
    machine's own version where it is an image package (any version it has is taken)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    names = [norm(r) for r in ROOTS if norm(r) not in NO_DEPS]
    for package in NO_DEPS:                       # what nbgrader needs that grading imports: listed by hand here
        for line in md.distribution(package).requires or []:
            req = Requirement(line)
            if not (req.marker and not req.marker.evaluate({"extra": ""})) and norm(req.name) not in NEVER:
                names.append(norm(req.name))
    return [name if name in IMAGE_HAS else f"{name}=={pins[name]}" for name in dict.fromkeys(names)]


def _download(specs: list[str], dest: Path, python: str | None) -> subprocess.CompletedProcess:
    """pip download of ``specs`` for CPython ``python`` on x86-64 Linux; python None: pure wheels only."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "-d", str(dest)]
    if python is None:
        cmd += ["--python-version", "3.12", "--implementation", "py", "--abi", "none", "--platform", "any"]
    else:
        cmd += ["--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}",
                "--abi", "abi3", "--abi", "none"]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        cmd += ["--platform", "any"]
    return subprocess.run(cmd + specs, capture_output=True, text=True)


DEBS = ("bubblewrap", "acl", "libacl1")


def fetch_debs(dest: Path) -> list[Path]:
    """The grading sandbox's tools as Debian packages (bwrap; setfacl for the uid tier), about 150 KiB, for
    a machine without them: ``gpu.check`` unpacks them under /tmp (never into /) and puts them on PATH.
    Fetched with ``apt-get download`` where this machine has apt (x86-64 only); else none, said."""
    import platform
    if shutil.which("apt-get") is None or platform.machine() != "x86_64":
        print("gpu.wheels: no apt-get (or not x86-64) here: bubblewrap is not carried; the GPU machine grades "
              "with the sandbox it has", file=sys.stderr)
        return []
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", *DEBS], cwd=dest, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"gpu.wheels: apt-get download {' '.join(DEBS)} failed ({(done.stderr.strip().splitlines() or ['?'])[-1]}): "
              "bubblewrap is not carried", file=sys.stderr)
    debs = sorted(dest.glob("*.deb"))
    for old in debs[:-1]:                      # an earlier download of another version
        if any(o.name.split("_")[0] == old.name.split("_")[0] for o in debs if o is not old and o.stat().st_mtime > old.stat().st_mtime):
            old.unlink()
    return sorted(dest.glob("*.deb"))


def build(dest: Path = DEST, pythons=PYTHONS, with_image: bool = False) -> dict:
    pins = closure()
    carry = {n: v for n, v in sorted(pins.items()) if with_image or n not in IMAGE_HAS}
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={v}" for n, v in carry.items() if n not in PURE]
    pure = [f"{n}=={v}" for n, v in carry.items() if n in PURE]
    if pure and (done := _download(pure, dest, None)).returncode != 0:
        raise SystemExit(f"gpu.wheels: no pure-Python wheel of {', '.join(pure)}: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    missing: dict[str, list[str]] = {}
    older: dict[str, list[str]] = {}
    for python in pythons:
        todo = list(specs)
        while True:                  # a pin with no wheel for this Python: left out, that Python said unsupported
            done = _download(todo, dest, python)
            if done.returncode == 0:
                break
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            hit = (re.search(r"No matching distribution found for ([\w.-]+)", last)
                   or re.search(r"Package '([\w.-]+)' requires a different Python", last))
            spec = next((t for t in todo if hit and norm(t.split("==")[0]) == norm(hit.group(1).split("==")[0])), None)
            if spec is None:
                raise SystemExit(f"gpu.wheels: pip download for CPython {python} failed: {last}")
            todo.remove(spec)
            name, pin = spec.split("==")
            if not requires_nothing(name) or _download([f"{name}<={pin}"], dest, python).returncode != 0:
                missing.setdefault(python, []).append(spec)
            else:                    # a package without requirements: its newest earlier version for this Python
                older.setdefault(python, []).append(f"{name}<={pin}")
    def unsupported(wheel: Path) -> bool:        # a compiled wheel only for a Python that cannot grade anyway
        tag = wheel.name.split("-")[-3]            # cp310, py3, py2.py3
        return wheel.name.split("-")[-2] != "abi3" and any(tag == f"cp{p.replace('.', '')}" for p in missing)

    stale = [w for w in dest.glob("*.whl") if norm(w.name.split("-")[0]) not in carry
             or (w.name.split("-")[1] != carry.get(norm(w.name.split("-")[0]))
                 and not any(o.startswith(f"{norm(w.name.split('-')[0])}<=") for v in older.values() for o in v))
             or (norm(w.name.split("-")[0]) in PURE and not w.name.endswith("-none-any.whl"))
             or unsupported(w)]
    for w in stale:                                   # an earlier run's versions: two versions break the install
        w.unlink()
    debs = fetch_debs(dest / "debs")
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) + sum(d.stat().st_size for d in debs)
    (dest / "requirements.txt").write_text("\n".join(requirements(pins)) + "\n")
    manifest = {"pythons": [p for p in pythons if p not in missing],
                "unsupported": {p: f"no wheel of {', '.join(m)} for CPython {p}" for p, m in missing.items()},
                "older_versions": older, "no_deps": [f"{n}=={pins[n]}" for n in NO_DEPS],
                "carried": carry, "left_to_the_image": sorted(set(pins) - set(carry)),
                "wheels": len(wheels), "debs": [d.name for d in debs], "bytes": total, "mib": round(total / 2**20, 1)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu.wheels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEST, help="the wheelhouse (default build/gpu-wheels)")
    parser.add_argument("--pythons", default=",".join(PYTHONS), help="CPython versions (default 3.10-3.13)")
    parser.add_argument("--with-image-packages", action="store_true",
                        help="also carry the compiled packages the lent machines' image has (numpy, ...)")
    args = parser.parse_args(argv)
    pythons = [p.strip() for p in args.pythons.split(",") if p.strip()]
    if not pythons or any(not re.fullmatch(r"3\.\d+", p) for p in pythons):
        print(f"gpu.wheels: --pythons takes versions such as 3.12, got {args.pythons!r}", file=sys.stderr)
        return 2
    manifest = build(args.dest, pythons, args.with_image_packages)
    for python, why in manifest["unsupported"].items():
        print(f"gpu.wheels: CPython {python} cannot grade with these pins: {why}", file=sys.stderr)
    print(f"{args.dest}: {manifest['wheels']} wheels and {len(manifest['debs'])} Debian packages, {manifest['mib']} MiB for CPython "
          f"{', '.join(manifest['pythons'])} "
          f"({len(manifest['carried'])} packages carried, {len(manifest['left_to_the_image'])} left to the "
          f"machine's image)")
    if manifest["bytes"] > LIMIT_MIB * 2**20:
        print(f"gpu.wheels: {manifest['mib']} MiB is over the {LIMIT_MIB} MiB the device tool can carry beside "
              f"the working tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
