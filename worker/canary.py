"""What an engine runs once at start: the canary (a sentence checked for NaN/inf, silence and a plausible
duration, falling back to safer precisions until one passes) and, on CUDA, the probe that measures memory
per input token to size the token budget."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from schemas.errors import DeviceLost, SynthesisFailed, first_line
from worker.batching import budget_from_memory
from worker.model import bad_audio
from worker.precision import Policy, apply_process_settings, safer

if TYPE_CHECKING:
    from worker.engine import Engine

log = logging.getLogger("worker.engine")

CANARY_TEXT = "The quick brown fox jumps over the lazy dog."
# A voice of another language says a sentence of its own (an English pangram spelled out letter by letter
# by a Japanese front end is a long, slow canary).
CANARY_TEXTS = {"ja": "吾輩は猫である。"}
CANARY_SEED = 20240229
# Plausible speech: seconds per character of text (real voices say ~0.06-0.08).
CANARY_S_PER_CHAR = (0.01, 1.0)
# Padded input tokens of the batch that measures memory per token on CUDA.
PROBE_ITEMS, PROBE_TOKENS = 4, 256


def run_canary(engine: Engine) -> None:
    """Synthesize CANARY_TEXT; on NaN/inf, silence, an implausible duration or an error, switch to the next
    safer policy and say why. Raises SynthesisFailed when nothing safer is left."""
    text = CANARY_TEXTS.get(engine.voice.language, CANARY_TEXT)
    ids = engine.voice.encode(text).ids
    while True:
        problem = _canary_problem(engine, ids, len(text))
        if problem is None:
            return
        policy = engine.policy
        fallback = safer(policy)
        if fallback is None:
            raise SynthesisFailed(f"canary failed on {engine.device.name} under {_label(policy)}: {problem}")
        note = f"canary failed under {_label(policy)} ({problem}); falling back to {_label(fallback)}"
        log.warning("%s", note)
        engine.notes.append(note)
        apply_process_settings(fallback, engine.device)
        engine.runner.set_policy(fallback)


def _canary_problem(engine: Engine, ids: list[int], chars: int) -> str | None:
    problem: str | None = None
    try:
        waves, _ = engine.forward([ids], None if engine.deterministic else CANARY_SEED)
    except DeviceLost:
        raise
    except Exception as err:  # a dtype mismatch under autocast is a failed canary, not a crash
        problem, waves = f"{type(err).__name__}: {first_line(err)}", None
    if problem is not None or waves is None:
        engine.free()
        return problem or "out of memory"
    audio_s = len(waves[0]) / engine.sample_rate_hz
    low, high = (bound * chars for bound in CANARY_S_PER_CHAR)
    problem = bad_audio(waves[0])
    if problem is None and not low <= audio_s <= high:
        problem = f"implausible duration {audio_s:.2f} s for {chars} characters"
    return problem


def measure_budget(engine: Engine) -> tuple[float | None, int]:
    """(bytes per input token, token budget) measured on CUDA with a padded probe batch."""
    import torch

    ids = engine.voice.encode(CANARY_TEXTS.get(engine.voice.language, CANARY_TEXT)).ids
    probe = [(ids * (PROBE_TOKENS // max(len(ids), 1) + 1))[:PROBE_TOKENS]] * PROBE_ITEMS
    where = engine.runner.torch_device
    engine.free()
    baseline = torch.cuda.memory_allocated(where)
    torch.cuda.reset_peak_memory_stats(where)
    waves, _ = engine.forward(probe, 0)
    free_bytes, _total = torch.cuda.mem_get_info(where)
    if waves is None:
        engine.notes.append("memory probe ran out of memory; using the smallest token budget")
        return None, budget_from_memory(0, 1.0)
    bytes_per_token = max(torch.cuda.max_memory_allocated(where) - baseline, 1) / (PROBE_ITEMS * PROBE_TOKENS)
    return bytes_per_token, budget_from_memory(free_bytes, bytes_per_token)


def _label(policy: Policy) -> str:
    return policy.dtype + (" with TF32" if policy.tf32 else "")
