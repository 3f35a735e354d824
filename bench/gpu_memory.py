"""GPU check steps 4-5 (CUDA only): the memory-per-token probe against a real peak, and a real
out-of-memory recovery. Memory in bytes; the probe's unit is bytes of device memory per padded input token.

Both steps use the engine of the device's own policy and set its public `token_budget` / `max_batch_items`
fields directly (restored afterwards), so they start no extra engine.
"""

from __future__ import annotations

from typing import Any

from bench.gpu_check import Check, Outcome
from bench.gpu_steps import chapter_chunks, run_counted

# The probe may err by this much on the high side before the step fails: the budget only uses half of
# the free memory, so a 25 % underestimate still fits.
PROBE_TOLERANCE = 1.25
# Memory caps tried for the out-of-memory run: headroom above the model of K x (longest chunk's tokens x
# bytes per token); the tightest that still lets one chunk through wins.
CAP_CHUNKS = (2, 4, 8, 16, 32)


def _cuda_only(check: Check) -> Outcome | None:
    if check.device is None or check.device.backend != "cuda":
        return Outcome("skipped", "CUDA only: off CUDA the token budget is a fixed 1024 tokens and "
                                  "the process cannot cap its device memory")
    return None


def memory_probe_step(check: Check) -> Outcome:
    """Predicted peak (bytes per token x the largest padded batch planned) vs the peak seen on a chapter."""
    import torch

    from worker.batching import Item, padded_tokens, plan_batches
    from worker.precision import apply_process_settings

    skip = _cuda_only(check)
    if skip is not None:
        return skip
    name, engine = check.auto_engine()
    if engine.bytes_per_token is None:
        return Outcome("failed", "the engine has no bytes-per-token figure (its probe ran out of memory)")
    apply_process_settings(engine.policy, check.device)
    chunks = chapter_chunks(check.sizes.chapter_chunks)
    items = [Item(i, len(engine.voice.encode(c.text).ids)) for i, c in enumerate(chunks)]
    largest = max(padded_tokens(batch) for batch in plan_batches(items, engine.token_budget))
    predicted = engine.bytes_per_token * largest
    engine.cleanup()
    where = check.device.torch_device
    baseline = torch.cuda.memory_allocated(where)
    free_bytes, total_bytes = torch.cuda.mem_get_info(where)
    lengths, run, _wall = run_counted(engine, chunks)
    measured = (run.peak_mem_bytes or 0) - baseline
    audio_s = sum(lengths.values()) / engine.sample_rate_hz
    data = {"precision": name, "bytes_per_token": engine.bytes_per_token, "token_budget": engine.token_budget,
            "chunks": len(chunks), "tokens": sum(item.n_tokens for item in items),
            "largest_padded_tokens": largest, "predicted_bytes": int(predicted), "measured_bytes": measured,
            "ratio": round(measured / predicted, 3), "model_bytes": baseline, "free_bytes": free_bytes,
            "total_bytes": total_bytes, "batches": run.batches, "oom_retries": run.oom_retries,
            "audio_s": audio_s, "synth_s": run.synth_s, "speed_x": audio_s / run.synth_s}
    if measured > predicted * PROBE_TOLERANCE:
        return Outcome("failed", f"the probe underestimates: peak {measured / 2**20:.0f} MiB above the model, "
                                 f"predicted {predicted / 2**20:.0f} MiB", data)
    return Outcome("ok", data=data)


def oom_step(check: Check) -> Outcome:
    """Uncapped reference run, then the same chunks with one huge batch under a memory cap: the engine must
    run out of memory, lower its budget and finish with the same samples per chunk (noise off)."""
    import torch

    from worker.precision import apply_process_settings

    skip = _cuda_only(check)
    if skip is not None:
        return skip
    name, engine = check.auto_engine()
    if engine.bytes_per_token is None:
        return Outcome("failed", "the engine has no bytes-per-token figure to size the memory cap with")
    apply_process_settings(engine.policy, check.device)
    chunks = chapter_chunks(check.sizes.oom_chunks)
    reference, ref_run, _ = run_counted(engine, chunks)
    budget = engine.token_budget
    longest = max(len(engine.voice.encode(c.text).ids) for c in chunks)
    data: dict[str, Any] = {"precision": name, "chunks": len(chunks), "longest_tokens": longest,
                            "reference_batches": ref_run.batches, "token_budget": budget, "attempts": []}
    try:
        for k in CAP_CHUNKS:
            attempt = _capped_run(engine, chunks, longest * len(chunks), engine.bytes_per_token * longest * k)
            attempt["cap_chunks"] = k
            data["attempts"].append(attempt)
            if "lengths" in attempt:
                break
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, check.device.torch_device)
        engine.token_budget = budget
        engine.cleanup()
    return judge_oom(data, reference, engine.sample_rate_hz)


def _capped_run(engine: Any, chunks: list[Any], forced_budget: int, headroom: float) -> dict[str, Any]:
    """One run with every chunk planned into one batch and device memory capped at what is reserved now
    plus `headroom` bytes. Returns the cap and either the run's figures and lengths, or why it failed."""
    import torch

    from schemas.errors import SynthesisFailed

    where = engine.device.torch_device
    engine.cleanup()
    total = torch.cuda.get_device_properties(where).total_memory
    cap = torch.cuda.memory_reserved(where) + int(headroom)
    engine.token_budget = forced_budget
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), where)
    attempt: dict[str, Any] = {"cap_bytes": cap, "forced_budget": forced_budget}
    try:
        lengths, run, _ = run_counted(engine, chunks)
    except SynthesisFailed as err:  # one chunk alone did not fit under this cap: try a looser one
        attempt["error"] = str(err)
        return attempt
    attempt.update(lengths=lengths, oom_retries=run.oom_retries, batches=run.batches,
                   budget_after=engine.token_budget, peak_mem_bytes=run.peak_mem_bytes, notes=list(engine.notes))
    return attempt


def judge_oom(data: dict[str, Any], reference: dict[int, int], rate_hz: int) -> Outcome:
    """ok when the capped run ran out of memory at least once and made every chunk the same length."""
    last = data["attempts"][-1] if data["attempts"] else {}
    lengths = last.pop("lengths", None)
    data["reference_audio_s"] = sum(reference.values()) / rate_hz
    if lengths is None:
        return Outcome("failed", "one chunk did not fit alone even under the loosest cap", data)
    data["capped_audio_s"] = sum(lengths.values()) / rate_hz
    if last["oom_retries"] == 0:
        return Outcome("failed", "no out-of-memory happened under the cap", data)
    differing = sorted(idx for idx in reference if reference[idx] != lengths.get(idx))
    data["chunks_with_other_length"] = differing
    if differing:
        return Outcome("failed", f"{len(differing)} chunks came out with another length after the recovery", data)
    return Outcome("ok", data=data)
