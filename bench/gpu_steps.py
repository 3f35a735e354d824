"""GPU check steps 1-3: `doctor`, the canary under every precision, and the engine comparison.

Speeds are audio-seconds per synthesis-second ("x real time"); memory is in bytes in the JSON (MiB in the
Markdown): CUDA max allocated bytes, or on a CPU the process's peak resident set (see EngineRun).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict
from typing import Any

from bench.engine import SENTENCES
from bench.gpu_check import DTYPE_NAMES, PRECISIONS, ROOT, Check, Outcome, first_line, ttsfleet_command

DOCTOR_KEYS = {"device", "name", "capability", "memory_gb", "dtype", "tf32", "reason"}


def sentence_chunks(count: int) -> list[Any]:
    """`count` chunks of one sentence each, short and long mixed."""
    from worker.engine import ChunkInput

    return [ChunkInput(idx=i, text=SENTENCES[i % len(SENTENCES)], seed=i) for i in range(count)]


def chapter_chunks(count: int) -> list[Any]:
    """`count` chunks of one to five sentences (up to ~400 characters), as a chapter is chunked."""
    from worker.engine import ChunkInput

    chunks = []
    for i in range(count):
        size = 1 + i % 5
        text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(size))
        chunks.append(ChunkInput(idx=i, text=text, seed=i))
    return chunks


def run_counted(engine: Any, chunks: list[Any]) -> tuple[dict[int, int], Any, float]:
    """Synthesize `chunks` once: ({chunk idx: samples}, EngineRun, wall seconds), then clean up."""
    lengths: dict[int, int] = {}

    def keep(audio: Any) -> None:
        lengths[audio.idx] = len(audio.samples)

    started = time.perf_counter()
    try:
        run = engine.synthesize(chunks, keep)
    finally:
        engine.cleanup()
    return lengths, run, time.perf_counter() - started


# --- step 1 ------------------------------------------------------------------------------------------

def doctor_step(check: Check) -> Outcome:
    """`ttsfleet doctor --json --device D` in a subprocess, as a user runs it."""
    command = [*ttsfleet_command(), "doctor", "--json", "--device", check.device_spec]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        return Outcome("failed", f"doctor exited {result.returncode}: {lines[-1]}")
    report = json.loads(result.stdout)
    missing = DOCTOR_KEYS - report.keys()
    if missing:
        return Outcome("failed", f"doctor --json lacks {sorted(missing)}", {"report": report})
    if report.get("simulated"):
        return Outcome("failed", "doctor described a simulated device", {"report": report})
    return Outcome("ok", data={"report": report})


# --- step 2 ------------------------------------------------------------------------------------------

def canary_step(check: Check) -> Outcome:
    """Start an engine (noise off) under every precision the device accepts; record refusals."""
    from worker.device import detect_device
    from worker.precision import choose_policy

    check.device = detect_device(check.device_spec)
    check.auto_precision = DTYPE_NAMES[choose_policy(check.device).dtype]
    rows: dict[str, Any] = {}
    problems = []
    for name in PRECISIONS:
        rows[name] = _start_one(check, name)
        if rows[name].get("problem"):
            problems.append(f"{name}: {rows[name]['problem']}")
    accepted = [name for name, row in rows.items() if row["accepted"]]
    data = {"device": check.device.name, "auto": check.auto_precision, "accepted": accepted, "precisions": rows}
    return Outcome("failed" if problems else "ok", "; ".join(problems), data)


def _start_one(check: Check, name: str) -> dict[str, Any]:
    """One precision: refused (with the reason), or an engine started and kept in `check.engines`."""
    from schemas.errors import PrecisionRefused
    from worker.engine import start_engine
    from worker.precision import choose_policy

    try:
        policy = choose_policy(check.device, name)
    except PrecisionRefused as err:
        return {"accepted": False, "refusal": str(err)}
    row: dict[str, Any] = {"accepted": True, "requested_dtype": policy.dtype, "requested_tf32": policy.tf32}
    started = time.perf_counter()
    try:
        voice = check.load_voice()
        row["voice_load_s"] = round(time.perf_counter() - started, 2)
        engine = start_engine(voice, check.device, policy, deterministic=True)
    except Exception as err:  # the canary failed even in strict fp32, or the voice did not load
        return {**row, "problem": first_line(err)}
    check.engines[name] = engine
    row.update(dtype=engine.policy.dtype, tf32=engine.policy.tf32, canary_s=round(engine.canary_s, 3),
               bytes_per_token=engine.bytes_per_token, token_budget=engine.token_budget, notes=list(engine.notes),
               keep_fp32=list(engine.policy.keep_fp32),
               fidelity=None if engine.fidelity is None else asdict(engine.fidelity))
    if engine.policy.dtype != policy.dtype or engine.policy.tf32 != policy.tf32:
        row["problem"] = "canary fell back: " + "; ".join(engine.notes)
    return row


# --- step 3 ------------------------------------------------------------------------------------------

def engines_step(check: Check) -> Outcome:
    """Every started engine at batch sizes 1..largest, then the naive per-sentence loop."""
    from worker.precision import apply_process_settings
    from worker.synthesis import policy_quality

    if not check.engines:
        return Outcome("failed", "no engine started (see the canary step)")
    chunks = sentence_chunks(check.sizes.engine_chunks)
    rows = []
    for name, engine in check.engines.items():
        apply_process_settings(engine.policy, check.device)
        run_counted(engine, chunks)  # warm-up, untimed: kernel caches and handles for these shapes
        for size in batch_sizes(engine, chunks):
            engine.max_batch_items = size
            rows.append({"precision": name, "dtype": engine.policy.dtype, "tf32": engine.policy.tf32,
                         **_best_of(engine, chunks, check.sizes.repeats), "max_batch_items": size,
                         **policy_quality(engine.policy, engine.fidelity)})
        engine.max_batch_items = None
    naive = naive_loop(check, chunks)
    data = {"chunks": len(chunks), "rows": rows, "naive": naive, "ratios": ratios(rows, naive)}
    lengths: dict[str, set[float]] = {}
    for row in rows:
        lengths.setdefault(row["precision"], set()).add(round(row["audio_s"], 4))
    if len(set().union(*lengths.values())) > 1:
        seen = ", ".join(f"{name} {sorted(values)}" for name, values in lengths.items())
        return Outcome("failed", f"audio length (s) differs between configurations with noise off: {seen}", data)
    return Outcome("ok", data=data)


def batch_sizes(engine: Any, chunks: list[Any]) -> list[int]:
    """1, 2, 4, ... below the largest batch the engine's token budget allows for `chunks`, then that."""
    from worker.batching import Item, plan_batches

    items = [Item(i, len(engine.voice.encode(c.text).ids)) for i, c in enumerate(chunks)]
    largest = max(len(batch) for batch in plan_batches(items, engine.token_budget))
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return [*sizes, largest]


def _best_of(engine: Any, chunks: list[Any], repeats: int) -> dict[str, Any]:
    """The fastest of `repeats` runs: audio_s, synth_s, speed_x, peak_mem_bytes, batches."""
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        resident = allocated_now(engine.device.torch_device)
        lengths, run, _wall = run_counted(engine, chunks)
        audio_s = sum(lengths.values()) / engine.sample_rate_hz
        row = {"audio_s": audio_s, "synth_s": run.synth_s, "speed_x": audio_s / run.synth_s,
               "peak_mem_bytes": run.peak_mem_bytes, "resident_bytes": resident, "batches": run.batches,
               "largest_batch": run.max_batch_size, "oom_retries": run.oom_retries,
               "fp32_fallbacks": run.fp32_fallbacks}
        if best is None or row["synth_s"] < best["synth_s"]:
            best = row
    assert best is not None
    return best


def allocated_now(torch_device: str) -> int | None:
    """CUDA bytes allocated now (the weights of every engine the check holds, and nothing else between
    runs); None off CUDA."""
    if not torch_device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.memory_allocated(torch_device))


def naive_loop(check: Check, chunks: list[Any]) -> dict[str, Any]:
    """A plain VitsModel on the same device, one sentence per forward, fp32 with torch's default settings
    (TF32 matmuls off, cuDNN TF32 convolutions on), noise on, as a script without ttsfleet would run it.
    The fastest of two or more passes (the first warms up): audio_s, synth_s, speed_x, peak_mem_bytes."""
    import torch

    from worker.model import free_memory, peak_bytes, reset_peak

    voice = check.load_voice()
    where = check.device.torch_device
    torch.set_float32_matmul_precision("highest")  # torch's defaults, as a plain script has them
    torch.backends.cudnn.allow_tf32 = True
    model = voice.model.to(where)
    ids = [voice.encode(chunk.text).ids for chunk in chunks]
    best: dict[str, Any] | None = None
    for _ in range(max(2, check.sizes.repeats)):
        reset_peak(where)
        started = time.perf_counter()
        samples = _naive_pass(model, ids, where)
        elapsed = time.perf_counter() - started
        audio_s = samples / _sample_rate(check)
        row = {"audio_s": audio_s, "synth_s": elapsed, "speed_x": audio_s / elapsed,
               "peak_mem_bytes": peak_bytes(where)}
        if best is None or row["synth_s"] < best["synth_s"]:
            best = row
    del model, voice
    free_memory(where)
    assert best is not None
    return best


def _naive_pass(model: Any, ids: list[list[int]], where: str) -> int:
    """One forward per sentence, each waveform cut and copied to the host; returns the samples made."""
    import torch

    samples = 0
    with torch.inference_mode():
        for one in ids:
            out = model(input_ids=torch.tensor([one], device=where))
            length = int(out.sequence_lengths[0])
            samples += out.waveform[0, :length].float().cpu().numel()
    return samples


def _sample_rate(check: Check) -> int:
    return int(next(iter(check.engines.values())).sample_rate_hz)


def ratios(rows: list[dict[str, Any]], naive: dict[str, Any]) -> dict[str, float]:
    """Per precision: best batched / batch size 1; each precision's best / fp32's best; best / naive loop."""
    best: dict[str, float] = {}
    out: dict[str, float] = {}
    for name in {row["precision"] for row in rows}:
        mine = [row for row in rows if row["precision"] == name]
        best[name] = max(row["speed_x"] for row in mine)
        single = next(row["speed_x"] for row in mine if row["max_batch_items"] == 1)
        out[f"{name}_batched_vs_batch1"] = best[name] / single
        out[f"{name}_best_vs_naive_loop"] = best[name] / naive["speed_x"]
    for name, speed in best.items():
        if name != "fp32" and "fp32" in best:
            out[f"{name}_vs_fp32"] = speed / best["fp32"]
    return {key: round(value, 3) for key, value in sorted(out.items())}
