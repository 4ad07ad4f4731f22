"""gpu/check.py, the one-call GPU check of issue 27, on its CPU path (``COURSE_GRADING_DEVICES=cpu``).

The real script runs as a subprocess, in its quick mode, with the parts that mean something here: the
environment, the CUDA tests (skipped: no CUDA device), grading the rope assignment's complete, wrong and
device-escaping submissions with the real ``python -m autograder grade`` (verdicts read from its CSVs), and
the benchmarks' CPU smoke size. The JSON it writes is checked against what the submissions are (made here
independently of the script: the escaping one really is correct on the CPU, and really lacks ``device=``).
The judging of the verdicts is also fed rows that must fail it. On a GPU machine the CUDA checks run
instead (``python -m gpu.check``, see README "Benchmarks"), and this test is skipped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.autograder


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if _cuda():
        pytest.skip("a CUDA device is here: run `python -m gpu.check` itself (its CUDA parts are what count)")
    tmp = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "COURSE_GRADING_DEVICES": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, "-m", "gpu.check", "--quick", "--parts", "env,cuda-tests,grading",
                           "--out", str(tmp / "out"), "--work", str(tmp / "work"), "--budget", "240"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp / "out" / "gpu-check.json").read_text())
    data["_out"], data["_stdout"] = tmp / "out", done.stdout
    return data


def _part(report, name):
    return next(p for p in report["parts"] if p["part"] == name)


def test_cuda_parts_are_skipped_naming_no_cuda_device(report):
    assert _part(report, "cuda-tests")["status"] == "skipped"
    assert "no CUDA device" in _part(report, "cuda-tests")["reason"]


@pytest.mark.slow
def test_the_benchmark_part_runs_its_cpu_smoke_size(tmp_path):
    """``bench`` without CUDA: skipped as a benchmark, its code run at a tiny CPU size (``pytest -m slow``;
    15 s of the suite's time otherwise)."""
    env = {**os.environ, "COURSE_GRADING_DEVICES": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, "-m", "gpu.check", "--quick", "--parts", "bench", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work"), "--budget", "200"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = next(p for p in json.loads((tmp_path / "out" / "gpu-check.json").read_text())["parts"] if p["part"] == "bench")
    assert (tmp_path / "out" / "bench.json").is_file()
    assert bench["status"] == "skipped" and "no CUDA device" in bench["reason"]
    assert bench["details"]["smoke"] and "NOT a benchmark" in bench["details"]["markdown"]
    tables = {r["table"] for r in bench["details"]["rows"]}
    assert tables == {"sliding window", "kv cache", "convolution"}
    assert all(r["ms"] is not None for r in bench["details"]["rows"]), bench["details"]["rows"]


def test_environment_part(report):
    env = _part(report, "env")
    assert env["status"] == "passed", env["reason"]
    assert env["details"]["cuda_available"] is False
    assert not [d for d, v in env["details"]["imports"].items() if str(v).startswith("MISSING")]


def test_grading_verdicts(report):
    grading = _part(report, "grading")
    assert grading["status"] == "passed", grading["reason"]
    run = grading["details"]["runs"][0]
    assert run["sandbox"] == "auto" and len(grading["details"]["runs"]) == 1      # no rerun without the sandbox
    checks = {c["check"]: c for c in run["checks"]}
    assert checks["complete: full marks on every autograded cell"]["status"] == "passed"
    assert checks["wrong: loses apply_rope_pairs's points, keeps the others"]["status"] == "passed"
    assert checks["escaping: loses apply_rope_pairs's points, keeps the others"]["status"] == "passed"
    assert checks["escaping: caught on meta (no GPU)"]["status"] == "passed"
    assert "on meta" in checks["escaping: caught on meta (no GPU)"]["reason"]
    cuda = checks["escaping: the verdict names cuda"]
    assert cuda["status"] == "skipped" and "no CUDA device" in cuda["reason"]
    # the scores, read here from the autograder's own table, not from the script's judgement
    assert run["scores"]["complete"] == "10/12"                  # 10 autograded points; 2 graded by hand
    assert run["scores"]["wrong"] == run["scores"]["escaping"] == "7/12"


def test_outputs_fit_what_the_device_tool_brings_back(report):
    files = sorted(p.name for p in report["_out"].iterdir())
    assert files == ["gpu-check.json", "gpu-check.md", "work.tar.gz"]      # bench.json too where bench ran
    assert all((report["_out"] / f).stat().st_size < 16 * 2**20 for f in files)
    table = report["_stdout"].split("\npart")[-1]
    for part in ("env", "cuda-tests", "grading", "total"):
        assert part in table


def test_the_submissions_are_what_they_claim(tmp_path):
    """The escaping submission is correct on the CPU and makes its frequencies without device=: an oracle
    of our own (the lecture's formula, in float64) on CPU input, and on meta input it raises."""
    import torch
    from gpu.check import make_submissions
    import nbformat
    paths = make_submissions(tmp_path)
    cell = next(c for c in nbformat.read(paths["escaping"], as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "apply_rope_pairs")
    scope = {"torch": torch}
    rope_thetas = "def rope_thetas(d, base=10000.0, *, dtype=torch.float32, device=None):\n" \
                  "    i = torch.arange(1, d // 2 + 1, dtype=torch.float64, device=device)\n" \
                  "    return (base ** (-2.0 * (i - 1) / d)).to(dtype)\n"
    exec(rope_thetas + cell.source, scope)                                   # noqa: S102 - our own notebook
    x, pos = torch.randn(3, 8, dtype=torch.float64), torch.arange(3)
    theta = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angle = pos[:, None].double() * theta
    want = torch.empty_like(x)
    want[:, 0::2] = x[:, 0::2] * angle.cos() - x[:, 1::2] * angle.sin()
    want[:, 1::2] = x[:, 0::2] * angle.sin() + x[:, 1::2] * angle.cos()
    torch.testing.assert_close(scope["apply_rope_pairs"](x, pos), want)
    with pytest.raises(RuntimeError):
        scope["apply_rope_pairs"](x.to("meta"), pos.to("meta"))


def _rows(escaping_message: str, complete_score="3"):
    cell = lambda student, gid, score, msg="": {"student": student, "grade_id": gid, "score": score,  # noqa: E731
                                                  "max_score": "3", "status": "passed" if score == "3" else "failed",
                                                  "message": msg}
    return {"complete": [cell("complete", "test_apply_rope_pairs", complete_score), cell("complete", "test_x", "3")],
            "wrong": [cell("wrong", "test_apply_rope_pairs", "0"), cell("wrong", "test_x", "3")],
            "escaping": [cell("escaping", "test_apply_rope_pairs", "0", escaping_message), cell("escaping", "test_x", "3")]}


def test_judge_fails_what_it_must():
    from gpu.check import judge
    by = lambda checks: {c["check"].split(":")[0] + ":" + c["check"].split(":")[1][:12]: c["status"] for c in checks}  # noqa: E731
    on_cuda = "apply_rope_pairs, case 1/13 'x(1, 2) float64, position 1' on cuda: RuntimeError: Expected all tensors"
    ok = judge(_rows(on_cuda), cuda=True)
    assert all(c["status"] in ("passed", "skipped") for c in ok), ok
    assert [c["status"] for c in ok if "names cuda" in c["check"]] == ["passed"]
    # a GPU run whose escaping verdict was caught on meta or the CPU does not prove the CUDA path
    assert [c["status"] for c in judge(_rows(on_cuda.replace("on cuda", "on meta")), cuda=True)
            if "names cuda" in c["check"]] == ["failed"]
    # a complete submission short of full marks fails the check
    assert "failed" in by(judge(_rows(on_cuda, complete_score="2"), cuda=True)).values()
    # on the CPU: the meta verdict is required
    assert [c["status"] for c in judge(_rows(on_cuda), cuda=False) if "meta" in c["check"]] == ["failed"]


def test_bad_parts_is_one_line_and_nonzero(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gpu.check", "--parts", "env,nonsense", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nonsense" in done.stderr
