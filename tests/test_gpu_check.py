"""The GPU check harness (bench/gpu_check.py): its runner, its wheel list, and its CPU form end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from bench.gpu_check import SMALL, Check, Outcome, run_all
from bench.gpu_jobs import summarize
from bench.gpu_memory import judge_oom
from bench.gpu_pack import _record_line, trim_wheel
from bench.gpu_wheels import image_names, read_sections, uncovered_project_deps, voice_distributions

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["doctor", "canary", "engines", "fidelity", "memory_probe", "oom", "jobs", "intelligibility"]


def _check(tmp_path: Path, deadline_s: float = 60.0) -> Check:
    return Check(device_spec="cpu", voice="piper:joe", out=tmp_path, work=tmp_path, sizes=SMALL, small=True,
                 deadline=time.monotonic() + deadline_s)


def test_runner_records_a_failure_and_goes_on(tmp_path: Path) -> None:
    def boom(_check: Check) -> Outcome:
        raise RuntimeError("boom\nsecond line")

    plan = [("first", boom), ("second", lambda _c: Outcome("ok", data={"x": 1}))]
    results = run_all(_check(tmp_path), plan)
    assert [(s["step"], s["status"], s["why"]) for s in results["steps"]] == [
        ("first", "failed", "RuntimeError: boom"), ("second", "ok", "")]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == {"ok": 1, "failed": 1, "skipped": 0}
    assert "| first | failed |" in (tmp_path / "results.md").read_text()


def test_runner_skips_steps_past_the_deadline(tmp_path: Path) -> None:
    ran = []
    results = run_all(_check(tmp_path, deadline_s=-1.0), [("late", lambda c: ran.append(c) or Outcome("ok"))])
    assert ran == [] and results["steps"][0]["status"] == "skipped"


def test_wheel_list_covers_the_project_and_never_carries_torch() -> None:
    sections = read_sections(ROOT / "bench" / "gpu-wheels.txt")
    wheels = [req for name, reqs in sections.items() if name != "voice" for req in reqs]
    names = {canonicalize_name(req.split("==")[0]) for req in wheels}
    assert all("==" in req for req in wheels)  # pinned, so the trip size is known
    image = image_names(ROOT / "bench" / "gpu-image.txt")
    assert not names & {"torch", "transformers", "numpy", "nvidia-cublas"}
    assert not names & image, "carried twice: already on the image"
    carried = names | voice_distributions(sections["voice"])
    assert uncovered_project_deps(carried | image) == []
    assert uncovered_project_deps(names | image) != []  # the voice package is covered only by its conversion


def test_trimmed_wheel_keeps_code_and_a_valid_record(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    files = {"piper/__init__.py": b"x = 1\n", "piper/hebrew/nakdimon.onnx": b"0" * 5000,
             "piper/espeak-ng-data/en_dict": b"e" * 100, "piper/espeak-ng-data/ru_dict": b"r" * 5000,
             "piper/espeak-ng-data/lang/ru": b"kept", "demo-1.0.dist-info/METADATA": b"Name: demo\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("demo-1.0.dist-info/RECORD", "stale\n")
    assert trim_wheel(wheel) > 0
    with zipfile.ZipFile(wheel) as archive:
        kept = set(archive.namelist())
        record = archive.read("demo-1.0.dist-info/RECORD").decode().splitlines()
        assert all(_record_line(name, archive.read(name)) in record for name in kept - {"demo-1.0.dist-info/RECORD"})
    assert kept == set(files) - {"piper/hebrew/nakdimon.onnx", "piper/espeak-ng-data/ru_dict"} | {
        "demo-1.0.dist-info/RECORD"}


def test_oom_judgement() -> None:
    recovered = {"attempts": [{"cap_chunks": 2, "lengths": {0: 10, 1: 20}, "oom_retries": 2}]}
    assert judge_oom(recovered, {0: 10, 1: 20}, 10).status == "ok"
    changed = {"attempts": [{"cap_chunks": 2, "lengths": {0: 10, 1: 21}, "oom_retries": 2}]}
    assert judge_oom(changed, {0: 10, 1: 20}, 10).status == "failed"
    no_oom = {"attempts": [{"cap_chunks": 2, "lengths": {0: 10, 1: 20}, "oom_retries": 0}]}
    assert "no out-of-memory" in judge_oom(no_oom, {0: 10, 1: 20}, 10).why
    too_tight = {"attempts": [{"cap_chunks": 32, "error": "does not fit"}]}
    assert judge_oom(too_tight, {0: 10}, 10).status == "failed"


def test_creep_is_measured_after_warm_up() -> None:
    readings = [{"job": str(i), "backend": "cuda", "allocated_bytes": b}
                for i, b in enumerate([900, 500, 100, 100, 100, 150, 120])]
    assert summarize(readings, [])["creep_bytes"] == 50


@pytest.mark.slow
def test_cpu_small_check_end_to_end(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CI form: every step gives a result; fp16/bf16 refusals and the CUDA-only skips are results."""
    out = tmp_path / "out"
    env = {**os.environ, "TTSFLEET_VOICES_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "voices-cache")}
    command = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--small", "--out", str(out),
               "--work", str(tmp_path / "work")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    steps = {s["step"]: s for s in results["steps"]}
    assert list(steps) == STEPS and results["mode"] == "small"
    assert {"date_utc", "commit", "python", "torch", "card", "driver"} <= results["environment"].keys()
    assert {name: s["status"] for name, s in steps.items()} == {
        "doctor": "ok", "canary": "ok", "engines": "ok", "fidelity": "skipped", "memory_probe": "skipped",
        "oom": "skipped", "jobs": "ok", "intelligibility": "ok"}
    assert steps["doctor"]["data"]["report"]["dtype"] == "float32"
    canary = steps["canary"]["data"]
    assert canary["accepted"] == ["fp32"] and canary["auto"] == "fp32"
    assert all("refused" in canary["precisions"][p]["refusal"] for p in ("bf16", "fp16"))
    engines = steps["engines"]["data"]
    assert engines["rows"][0]["max_batch_items"] == 1 and len(engines["rows"]) >= 2
    assert all(r["speed_x"] > 0 and r["audio_s"] > 1 for r in [*engines["rows"], engines["naive"]])
    assert all(r["fidelity_snr_db"] is None and r["keep_fp32"] == "" for r in engines["rows"])  # fp32: the reference
    assert "CUDA only" in steps["fidelity"]["why"] and "reference (fp32)" in (out / "results.md").read_text()
    assert "fp32_batched_vs_batch1" in engines["ratios"]
    assert all("CUDA only" in steps[s]["why"] for s in ("memory_probe", "oom"))
    jobs = steps["jobs"]["data"]
    assert jobs["jobs"] == jobs["succeeded"] == SMALL.jobs and len(jobs["readings"]) == SMALL.jobs
    wer = steps["intelligibility"]["data"]
    assert (out / wer["files"]["fp32"]).is_file() and wer["wer"]["fp32"] <= wer["max_wer"]
    markdown = (out / "results.md").read_text()
    for line in ("| doctor | ok |", "| bf16 | refused |", "naive VitsModel loop", "| intelligibility | ok |"):
        assert line in markdown
    # `--wer DIR --out NEW`: what the device machine returns is read-only, so the update can go elsewhere
    again = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--wer", str(out), "--out", str(tmp_path / "new")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    redone = next(s for s in json.loads((tmp_path / "new" / "results.json").read_text())["steps"]
                  if s["step"] == "intelligibility")
    assert redone["measured_elsewhere"] and redone["data"]["wer"]["fp32"] == wer["wer"]["fp32"]
    assert (tmp_path / "new" / wer["files"]["fp32"]).is_file() and (tmp_path / "new" / "results.md").is_file()
