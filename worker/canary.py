"""What an engine runs once at start: the canary (a sentence checked for NaN/inf, silence and a plausible
duration, falling back to safer precisions until one passes), the fidelity check (a low-precision policy's
audio against fp32's, keeping the decoder, then the flow, in fp32 until it meets the bar: a mixed policy)
and, on CUDA, the probe that measures memory per input token to size the token budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from schemas.errors import DeviceLost, SynthesisFailed, first_line
from schemas.status import Runtime
from worker.batching import budget_from_memory
from worker.fidelity import FIDELITY_SENTENCES, Fidelity, FidelityBar, measure, reference_audio
from worker.model import bad_audio
from worker.precision import MIXED_ORDER, Policy, apply_process_settings, safer, with_fp32

if TYPE_CHECKING:
    from collections.abc import Callable

    from worker.device import DeviceInfo
    from worker.engine import Engine
    from worker.loaded_voice import LoadedVoice
    from worker.runner import Runner

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


def settle_fidelity(runner: Runner, device: DeviceInfo, encode: Callable[[str], list[int]], sample_rate_hz: int,
                    bar: FidelityBar) -> tuple[Fidelity | None, str | None]:
    """Measure the runner's policy against strict fp32 (worker.fidelity) and, below `bar`, keep the modules
    of MIXED_ORDER in fp32 one more at a time (decoder, then flow) until it meets the bar; if even that
    fails, fall back to `safer` policies. The runner is left on the policy that met the bar.

    Returns (its fidelity, one line saying what changed and why, or None when nothing did). The fidelity
    is None for a policy that is itself the reference (strict fp32) or runs no autocast (onnxruntime).
    """
    if runner.runtime != Runtime.TORCH or not (runner.policy.low_precision or runner.policy.tf32):
        return None, None
    ids = [encode(sentence) for sentence in FIDELITY_SENTENCES]
    reference = reference_audio(runner, device, ids)
    settled = _settle(runner, device, ids, reference, sample_rate_hz, bar,
                      measure(runner, device, ids, sample_rate_hz, reference))
    return settled.fidelity, settled.note


@dataclass(frozen=True, slots=True)
class Settled:
    """What the fidelity check found: the policy as asked (`first`, its `measured` fidelity), the policy the
    runner is left on (`policy`, its `fidelity`: None for strict fp32, the reference), and the one-line
    `note` saying what changed and why (None when the policy as asked met the bar)."""

    first: Policy
    measured: Fidelity
    policy: Policy
    fidelity: Fidelity | None
    note: str | None


def _settle(runner: Runner, device: DeviceInfo, ids: list[list[int]], reference: list[np.ndarray],
            sample_rate_hz: int, bar: FidelityBar, measured: Fidelity) -> Settled:
    first = runner.policy
    problem = bar.problem(measured)
    if problem is None:
        return Settled(first, measured, first, measured, None)
    note = f"fidelity under {_label(first)} below the bar ({problem})"
    candidates: list[Policy] = []
    for n in range(1, len(MIXED_ORDER) + 1 if first.low_precision else 1):
        modules = MIXED_ORDER[:n]
        candidates.append(with_fp32(first, modules, f"{', '.join(modules)} kept in fp32 for fidelity"))
    fallback = safer(first)
    while fallback is not None:  # fp32 with TF32 is measured too; strict fp32 is the reference itself
        candidates.append(fallback)
        fallback = safer(fallback) if fallback.tf32 else None
    for policy in candidates:
        runner.set_policy(policy)
        apply_process_settings(policy, device)
        if not (policy.low_precision or policy.tf32):
            return Settled(first, measured, policy, None, f"{note}; falling back to {_label(policy)}")
        fidelity = measure(runner, device, ids, sample_rate_hz, reference)
        if bar.problem(fidelity) is None:
            return Settled(first, measured, policy, fidelity, f"{note}; {_describe(policy)}: {fidelity.summary()}")
    raise AssertionError("unreachable: the last candidate is strict fp32")


def fidelity_report(voice: LoadedVoice, device: DeviceInfo, policy: Policy, bar: FidelityBar) -> Settled:
    """`doctor --fidelity`: `voice` (with its torch model) under `policy` on `device` measured against strict
    fp32 — whatever the policy, fp32 included (its runs are compared too) — and, below `bar`, what the
    start-up check would settle on. The model is left with its noise and policy wrappers removed."""
    from worker.model import ModelRunner

    runner = ModelRunner(voice.model, device, policy, noise_off=True)
    try:
        apply_process_settings(policy, device)
        ids = [voice.encode(sentence).ids for sentence in FIDELITY_SENTENCES]
        reference = reference_audio(runner, device, ids)
        measured = measure(runner, device, ids, voice.sample_rate_hz, reference)
        if not (policy.low_precision or policy.tf32):
            return Settled(policy, measured, policy, None, None)
        return _settle(runner, device, ids, reference, voice.sample_rate_hz, bar, measured)
    finally:
        runner.restore()


def _describe(policy: Policy) -> str:
    """`decoder, flow kept in fp32` for a mixed policy, else `falling back to float32 with TF32`."""
    extra = [m for m in policy.keep_fp32 if m in MIXED_ORDER]
    if policy.low_precision and extra:
        return f"{', '.join(extra)} kept in fp32"
    return f"falling back to {_label(policy)}"


def _label(policy: Policy) -> str:
    return policy.dtype + (" with TF32" if policy.tf32 else "")
