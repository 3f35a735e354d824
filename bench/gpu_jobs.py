"""GPU check step 6: N jobs through `ttsfleet run --device D` (embedded mode, SQLite in a scratch folder),
with the device memory read after each job, to see whether it creeps.

The parent runs a child process (`python -m bench.gpu_jobs ...`) so the reading is not disturbed by the
check's own engines. The child runs the real `ttsfleet run` command in-process, each job alone
(`TTSFLEET_JOIN_JOBS=1`); its only addition is a wrapper around the job pipeline's `run_unit` that, after
each job (the engine has cleaned up by then), appends one JSON line: CUDA allocated and reserved bytes, or
on a CPU the process's resident bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu_check import ROOT, Check, Outcome
from bench.gpu_steps import SENTENCES

# Creep allowed from the first reading after warm-up to the largest later one, in bytes: the engine keeps
# no tensors between jobs, so CUDA allocated memory must come back; CPU RSS grows a little with oneDNN's
# per-shape kernel cache (docs/precision.md), so it gets a looser bound.
CREEP_LIMIT = {"cuda": 1 * 2**20, "cpu": 64 * 2**20}
WARMUP_JOBS = 3


def jobs_step(check: Check) -> Outcome:
    """Run the child, then judge: every job succeeded and memory after warm-up stayed within the limit."""
    folder = check.work / "jobs"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh store: job ids from an earlier run would clash
    folder.mkdir(parents=True)
    command = [sys.executable, "-m", "bench.gpu_jobs", "--device", check.device_spec, "--voice", check.voice,
               "--jobs", str(check.sizes.jobs), "--folder", str(folder)]
    env = {**os.environ, "TTSFLEET_VOICES_CACHE_DIR": str(check.voices_cache)}
    if Path(check.voice).is_dir():  # a folder voice the check chose: its parent is a voice directory here
        dirs = [str(Path(check.voice).resolve().parent), os.environ.get("TTSFLEET_VOICE_DIRS", "")]
        env["TTSFLEET_VOICE_DIRS"] = os.pathsep.join(d for d in dirs if d)
    timeout_s = max(60.0, min(360.0, check.deadline - time.monotonic() + 60.0))  # within the check's budget
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False, env=env,
                            cwd=ROOT)
    readings = [json.loads(line) for line in (folder / "memory.jsonl").read_text().splitlines()] \
        if (folder / "memory.jsonl").is_file() else []
    views = json.loads(result.stdout) if result.stdout.strip().startswith("[") else []
    data = summarize(readings, views)
    if not views:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return Outcome("failed", f"ttsfleet run exited {result.returncode}: {tail}", data)
    failed = [v["id"] for v in views if v["status"] != "succeeded"]
    if failed or len(views) != check.sizes.jobs:
        return Outcome("failed", f"{len(views) - len(failed)} of {check.sizes.jobs} jobs succeeded", data)
    limit = CREEP_LIMIT["cuda" if data["backend"] == "cuda" else "cpu"]
    if data["creep_bytes"] is None:
        return Outcome("failed", "no memory reading after the jobs", data)
    if data["creep_bytes"] > limit:
        return Outcome("failed", f"memory crept {data['creep_bytes'] / 2**20:.1f} MiB over {len(readings)} jobs "
                                 f"(limit {limit / 2**20:.0f} MiB)", data)
    return Outcome("ok", data=data)


def summarize(readings: list[dict[str, Any]], views: list[dict[str, Any]]) -> dict[str, Any]:
    """Jobs, audio, and creep: the largest reading after warm-up minus the first reading after warm-up."""
    key = "allocated_bytes" if readings and readings[0]["backend"] == "cuda" else "rss_bytes"
    values = [r[key] for r in readings if r.get(key) is not None]
    settled = values[WARMUP_JOBS:] if len(values) > WARMUP_JOBS else values[-1:]
    return {"jobs": len(views), "succeeded": sum(1 for v in views if v["status"] == "succeeded"),
            "audio_s": sum(v.get("audio_s") or 0.0 for v in views), "backend": readings[0]["backend"] if readings
            else None, "measure": key, "readings": readings,
            "creep_bytes": (max(settled) - settled[0]) if settled else None}


# --- the child process --------------------------------------------------------------------------------

def child(argv: list[str] | None = None) -> None:
    """Write N one-sentence jobs as JSONL and run `ttsfleet run FILE --device D --json` in this process."""
    parser = argparse.ArgumentParser(description="ttsfleet run with device memory read after each job")
    parser.add_argument("--device", required=True)
    parser.add_argument("--voice", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args(argv)
    inputs = args.folder / "jobs.jsonl"
    lines = [json.dumps({"id": f"check-{i:03d}", "text": f"Notice {i + 1}. {SENTENCES[i % len(SENTENCES)]}"})
             for i in range(args.jobs)]
    inputs.write_text("\n".join(lines) + "\n")
    _read_memory_after_each_job(args.folder / "memory.jsonl")
    from producer.cli import main

    main(["run", str(inputs), "--device", args.device, "--voice", args.voice, "--json",
          "--database-url", f"sqlite:///{args.folder / 'store.db'}", "--output-dir", str(args.folder / "audio")])


def _read_memory_after_each_job(log_file: Path) -> None:
    """Run each job alone and wrap the pipeline's `run_unit`, so that each finished job appends a memory
    reading to `log_file`."""
    from worker import job
    from worker.context import JobContext
    from worker.events import JobOutcome
    from worker.unit import Unit

    os.environ["TTSFLEET_JOIN_JOBS"] = "1"
    original = job.run_unit

    def run_unit_then_read(unit: Unit, ctx: JobContext) -> list[JobOutcome]:
        outcomes = original(unit, ctx)
        device = ctx.engine_for(ctx.settings.voice).device.torch_device
        for outcome in outcomes:
            reading = {"job": outcome.job_id, "status": str(outcome.status), **memory_now(device)}
            with log_file.open("a", encoding="utf-8") as log:
                log.write(json.dumps(reading) + "\n")
        return outcomes

    job.run_unit = run_unit_then_read  # type: ignore[assignment]


def memory_now(torch_device: str) -> dict[str, Any]:
    """Device memory now: CUDA allocated/reserved bytes, or the process's resident bytes (Linux)."""
    if torch_device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch_device)
        return {"backend": "cuda", "allocated_bytes": torch.cuda.memory_allocated(torch_device),
                "reserved_bytes": torch.cuda.memory_reserved(torch_device)}
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"backend": "cpu", "rss_bytes": rss}


if __name__ == "__main__":
    child()
