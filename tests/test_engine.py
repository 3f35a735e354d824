"""The engine on a real (tiny, random) transformers VITS on the CPU, with injected faults.

Faults are injected by wrapping the model instance's `forward`: out-of-memory above N items, a CUDA-style
AcceleratorError, and NaN output under autocast (what fp16 does on a GTX 16xx).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import DeviceLost, SynthesisFailed
from worker.batching import CPU_TOKEN_BUDGET
from worker.device import DeviceInfo, detect_device
from worker.engine import ChunkAudio, ChunkInput, Engine, EngineRun, start_engine
from worker.loaded_voice import LoadedVoice, load_folder_voice
from worker.precision import VITS_FP32_MODULES, Policy, choose_policy

TEXTS = [
    "The first sentence is here.",
    "A second one, a little longer than the first sentence was.",
    "Short.",
    "Then a fourth sentence of middling length.",
    "And the fifth and last one ends the job!",
    "Six.",
]
# bf16 under CPU autocast: lets the low-precision paths (canary, guard, fp32 redo) run without a GPU.
CPU_BF16 = Policy(dtype="bfloat16", tf32=False, mode="autocast", reason="test: bf16 autocast on the CPU",
                  keep_fp32=VITS_FP32_MODULES, run_on="cpu")


@pytest.fixture
def voice(tiny_vits_dir: Path) -> LoadedVoice:
    return load_folder_voice(tiny_vits_dir, name="tiny")


@pytest.fixture
def cpu() -> DeviceInfo:
    return detect_device("cpu")


def _chunks(texts: list[str] = TEXTS, seed0: int = 100) -> list[ChunkInput]:
    return [ChunkInput(idx=i, text=t, seed=seed0 + i) for i, t in enumerate(texts)]


def _run(engine: Engine, chunks: list[ChunkInput]) -> tuple[dict[int, ChunkAudio], EngineRun]:
    got: dict[int, ChunkAudio] = {}

    def keep(audio: ChunkAudio) -> None:
        assert audio.idx not in got
        got[audio.idx] = audio

    run = engine.synthesize(chunks, keep)
    assert sorted(got) == sorted(c.idx for c in chunks)
    return got, run


def _wrap_forward(voice: LoadedVoice, fault: Callable[[Any, Any], Any]) -> list[int]:
    """Make `voice.model.forward` call `fault(input_ids, output)`; returns the batch sizes seen."""
    original = voice.model.forward
    sizes: list[int] = []

    def forward(input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        sizes.append(int(input_ids.shape[0]))
        fault(input_ids, None)
        out = original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return fault(input_ids, out) or out

    voice.model.forward = forward
    return sizes


def _oom_above(max_items: int) -> Callable[[Any, Any], Any]:
    import torch

    def fault(input_ids: Any, out: Any) -> None:
        if out is None and input_ids.shape[0] > max_items:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {input_ids.shape[0]} items)")

    return fault


def _nan_under_autocast(token: int | None = None) -> Callable[[Any, Any], Any]:
    """NaN waveforms under autocast: every row, or only rows holding `token`."""
    import torch

    def fault(input_ids: Any, out: Any) -> None:
        if out is None or not torch.is_autocast_enabled("cpu"):
            return
        rows = range(input_ids.shape[0]) if token is None else [
            r for r in range(input_ids.shape[0]) if bool((input_ids[r] == token).any())]
        for row in rows:
            out.waveform[row] = float("nan")

    return fault


def test_start_on_cpu(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu))
    assert engine.policy.dtype == "float32" and engine.notes == []
    assert engine.canary_s > 0 and engine.token_budget == CPU_TOKEN_BUDGET
    assert (engine.sample_rate_hz, engine.voice_name, engine.device) == (16000, "tiny", cpu)
    assert start_engine(voice, cpu, choose_policy(cpu), token_budget=77).token_budget == 77


def test_synthesize_every_chunk_once(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu), token_budget=150)
    got, run = _run(engine, _chunks())
    for chunk in _chunks():
        audio = got[chunk.idx]
        assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
        assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0.01
        assert 0.01 < len(audio.samples) / 16000 / len(chunk.text) < 1.0
        assert audio.dtype == "float32" and not audio.fp32_redo and audio.synth_s > 0 and audio.dropped == ""
    assert run.batches >= 2 and run.max_batch_size >= 2 and run.oom_retries == 0 and run.fp32_fallbacks == 0
    assert run.synth_s > 0 and run.peak_mem_bytes is not None and run.peak_mem_bytes > 0
    # Longer texts give longer audio (the batches are sorted and trimmed, never mixed up).
    assert len(got[1].samples) > len(got[0].samples) > len(got[2].samples)


def test_dropped_characters_are_reported(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu))
    got, _ = _run(engine, _chunks(["snow ☃ man"]))
    assert got[0].dropped == "☃"


def _oom_above_tokens(limit: list[int], seen: list[int], ooms: list[int]) -> Callable[[Any, Any], Any]:
    """Out-of-memory when a batch's padded input tokens exceed `limit[0]` (what memory really bounds);
    records each batch's padded tokens in `seen` and counts the injected errors in `ooms[0]`."""
    import torch

    def fault(input_ids: Any, out: Any) -> None:
        if out is None:
            seen.append(int(input_ids.numel()))
            if input_ids.numel() > limit[0]:
                ooms[0] += 1
                raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {input_ids.numel()} tokens)")

    return fault


def test_injected_oom_lowers_the_budget_for_good(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu), deterministic=True, token_budget=10_000)
    reference, clean = _run(engine, _chunks())
    assert clean.max_batch_size == len(TEXTS) and clean.oom_retries == 0
    longest = max(len(voice.encode(text).ids) for text in TEXTS)
    limit, seen, ooms = [4 * longest], list[int](), [0]
    _wrap_forward(voice, _oom_above_tokens(limit, seen, ooms))

    def job() -> EngineRun:
        seen.clear()
        got, run = _run(engine, _chunks())
        assert {idx: len(a.samples) for idx, a in got.items()} == {
            idx: len(a.samples) for idx, a in reference.items()}
        return run

    run = job()
    # One OOM on the 6-item batch; the budget drops to half of it and every later batch fits.
    assert ooms == [1] and run.oom_retries == 1 and seen[0] == 6 * longest
    assert engine.token_budget == 3 * longest and max(seen[1:]) <= engine.token_budget
    assert run.max_batch_size == 3 and len(engine.notes) == 1 and "lowered from 10000" in engine.notes[0]
    run = job()  # the next job is planned at the lowered budget from the start
    assert ooms == [1] and run.oom_retries == 0 and max(seen) <= 3 * longest
    limit[0] = 2 * longest  # less memory again: one more OOM, one more cut, no second note
    run = job()
    assert ooms == [2] and run.oom_retries == 1 and engine.token_budget < 3 * longest
    assert max(seen[1:]) <= engine.token_budget <= limit[0] and len(engine.notes) == 1
    assert job().oom_retries == 0 and ooms == [2]


def test_single_chunk_oom_fails_the_job_and_the_next_job_runs(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu))
    original = voice.model.forward
    _wrap_forward(voice, _oom_above(0))
    with pytest.raises(SynthesisFailed, match=r"chunk 0 does not fit in device memory even alone"):
        engine.synthesize(_chunks(TEXTS[:1]), lambda audio: None)
    voice.model.forward = original
    got, run = _run(engine, _chunks(TEXTS[:2]))
    assert len(got) == 2 and run.oom_retries == 0


def test_other_device_errors_raise_device_lost(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    import torch

    engine = start_engine(voice, cpu, choose_policy(cpu))

    def fault(input_ids: Any, out: Any) -> None:
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    _wrap_forward(voice, fault)
    with pytest.raises(DeviceLost, match="illegal memory access") as caught:
        engine.synthesize(_chunks(), lambda audio: None)
    assert isinstance(caught.value.__cause__, torch.AcceleratorError)


CUDA_ILLEGAL = "CUDA error: an illegal memory access was encountered"


def _sticky_free(monkeypatch: pytest.MonkeyPatch, error: Callable[[], RuntimeError]) -> list[int]:
    """Make the engine's `free_memory` raise `error()` as a dead CUDA context's `empty_cache` does (CUDA
    errors are sticky); returns a one-element call counter."""
    calls = [0]

    def free_memory(torch_device: str) -> None:
        calls[0] += 1
        raise error()

    monkeypatch.setattr("worker.engine.free_memory", free_memory)
    return calls


def test_device_lost_survives_a_failing_free(voice: LoadedVoice, cpu: DeviceInfo,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    engine = start_engine(voice, cpu, choose_policy(cpu))

    def fault(input_ids: Any, out: Any) -> None:
        raise torch.AcceleratorError(CUDA_ILLEGAL)

    _wrap_forward(voice, fault)
    _sticky_free(monkeypatch, lambda: RuntimeError(CUDA_ILLEGAL))
    with pytest.raises(DeviceLost, match="illegal memory access") as caught:
        engine.synthesize(_chunks(), lambda audio: None)
    assert isinstance(caught.value.__cause__, torch.AcceleratorError) and engine.broken
    engine.cleanup()  # the job layer's `finally:`; must not replace the DeviceLost
    with pytest.raises(DeviceLost, match="unusable after an earlier device error"):
        engine.synthesize(_chunks(), lambda audio: None)
    engine.cleanup()


def test_device_error_found_while_freeing_is_device_lost(voice: LoadedVoice, cpu: DeviceInfo,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    engine = start_engine(voice, cpu, choose_policy(cpu))
    fresh = start_engine(load_folder_voice(voice.folder), cpu, choose_policy(cpu))  # type: ignore[arg-type]
    calls = _sticky_free(monkeypatch, lambda: torch.AcceleratorError(CUDA_ILLEGAL))

    def stop(audio: ChunkAudio) -> None:
        raise KeyError("the job was cancelled")

    with pytest.raises(DeviceLost, match="illegal memory access") as caught:
        engine.synthesize(_chunks(), stop)
    cause = caught.value.__cause__
    assert isinstance(cause, torch.AcceleratorError) and isinstance(cause.__context__, KeyError)
    assert engine.broken and calls == [1]
    engine.cleanup()  # broken: only garbage collection, no second call into the dead context
    assert calls == [1]
    fresh.cleanup()  # a device error first seen in cleanup is logged, not raised
    assert calls == [2] and fresh.broken
    with pytest.raises(DeviceLost, match="illegal memory access"):  # start-up lets it surface
        start_engine(load_folder_voice(voice.folder), cpu, choose_policy(cpu))  # type: ignore[arg-type]


def test_unspeakable_chunk_becomes_a_pause_and_is_reported(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu))
    got: dict[int, ChunkAudio] = {}
    engine.synthesize([*_chunks(TEXTS[:3]), ChunkInput(3, "☃☃", 1)], lambda audio: got.setdefault(audio.idx, audio))
    assert sorted(got) == [0, 1, 2, 3]
    assert got[3].dropped == "☃" and not np.any(got[3].samples) and len(got[3].samples) > 0
    assert all(len(got[i].samples) > 0 and got[i].dropped == "" for i in range(3))


def test_on_chunk_error_propagates_and_engine_stays_usable(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu), token_budget=100)

    class Cancelled(Exception):
        pass

    def stop(audio: ChunkAudio) -> None:
        raise Cancelled(f"job cancelled at chunk {audio.idx}")

    with pytest.raises(Cancelled):
        engine.synthesize(_chunks(), stop)
    got, _ = _run(engine, _chunks())
    assert len(got) == len(TEXTS)


def test_canary_falls_back_when_low_precision_gives_nan(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    _wrap_forward(voice, _nan_under_autocast())
    engine = start_engine(voice, cpu, CPU_BF16)
    assert engine.policy.dtype == "float32" and engine.policy.mode == "fp32"
    assert len(engine.notes) == 1 and "NaN/inf" in engine.notes[0] and "bfloat16" in engine.notes[0]
    got, run = _run(engine, _chunks())
    assert all(a.dtype == "float32" and not a.fp32_redo for a in got.values()) and run.fp32_fallbacks == 0


def test_canary_passes_under_bf16_autocast(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, CPU_BF16, deterministic=True)
    assert engine.policy.dtype == "bfloat16" and engine.notes == []
    low, _ = _run(engine, _chunks(TEXTS[:3]))
    fp32 = start_engine(load_folder_voice(voice.folder), cpu, choose_policy(cpu),  # type: ignore[arg-type]
                        deterministic=True)
    reference, _ = _run(fp32, _chunks(TEXTS[:3]))
    for idx, audio in low.items():
        assert audio.dtype == "bfloat16"
        # Durations are decided in the fp32 parts, so the lengths match fp32 exactly.
        assert len(audio.samples) == len(reference[idx].samples)
        assert np.corrcoef(audio.samples, reference[idx].samples)[0, 1] > 0.99


def test_bad_chunk_is_redone_in_fp32(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    bang = voice.encode("!").ids[1]  # only chunk 4 holds a "!"; the canary has none
    _wrap_forward(voice, _nan_under_autocast(bang))
    engine = start_engine(voice, cpu, CPU_BF16, token_budget=10_000)
    assert engine.policy.dtype == "bfloat16"
    got, run = _run(engine, _chunks())
    assert run.fp32_fallbacks == 1
    assert got[4].fp32_redo and got[4].dtype == "float32" and np.isfinite(got[4].samples).all()
    assert all(not a.fp32_redo and a.dtype == "bfloat16" for i, a in got.items() if i != 4)


def test_nan_in_fp32_fails_and_canary_without_fallback_fails(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, choose_policy(cpu))
    bang = voice.encode("!").ids[1]

    def nan_rows(input_ids: Any, out: Any) -> None:
        if out is not None:
            for row in range(input_ids.shape[0]):
                if bool((input_ids[row] == bang).any()):
                    out.waveform[row] = float("nan")

    _wrap_forward(voice, nan_rows)
    with pytest.raises(SynthesisFailed, match=r"chunk 4: NaN/inf in output even in fp32"):
        engine.synthesize(_chunks(), lambda audio: None)
    _wrap_forward(voice, _nan_under_autocast())
    voice.model.forward = _always_nan(voice.model.forward)
    with pytest.raises(SynthesisFailed, match=r"canary failed .* under float32: NaN/inf"):
        start_engine(voice, cpu, CPU_BF16)


def _always_nan(forward: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(**kwargs: Any) -> Any:
        out = forward(**kwargs)
        out.waveform[:] = float("nan")
        return out

    return wrapper


def test_reproducible_output(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    # Noise off: identical audio whatever the batching.
    engine = start_engine(voice, cpu, choose_policy(cpu), deterministic=True, token_budget=10_000)
    together, _ = _run(engine, _chunks())
    alone, _ = _run(engine, _chunks(TEXTS[3:4]))
    np.testing.assert_allclose(alone[0].samples[:-512], together[3].samples[:-512], atol=1e-4)
    assert len(alone[0].samples) == len(together[3].samples)
    # Noise on, one chunk per batch: a chunk's seed alone decides its audio.
    seeded = start_engine(load_folder_voice(voice.folder), cpu, choose_policy(cpu),  # type: ignore[arg-type]
                          max_batch_items=1)
    first, run = _run(seeded, _chunks())
    assert run.max_batch_size == 1
    again, _ = _run(seeded, [c for c in _chunks() if c.idx in (1, 4)])
    np.testing.assert_array_equal(again[1].samples, first[1].samples)
    np.testing.assert_array_equal(again[4].samples, first[4].samples)
    other, _ = _run(seeded, _chunks(TEXTS[1:2], seed0=999))
    assert len(other[0].samples) != len(first[1].samples) or not np.array_equal(
        other[0].samples, first[1].samples)


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


def _live_tensors() -> int:
    import torch

    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))  # no __class__ lookups


@pytest.mark.slow
def test_memory_returns_to_baseline_after_many_jobs(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    """CPU: after cleanup, live tensors return exactly to the baseline and RSS stays within a few MB of it.

    The jobs cycle through a fixed set of shapes: oneDNN caches kernels per input shape (a bounded cache,
    see docs/precision.md), which would otherwise read as growth; a leak grows with the job count anyway.
    """
    engine = start_engine(voice, cpu, choose_policy(cpu), token_budget=300)
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over a lazy dog while it rains".split()
    jobs = [[" ".join(rng.choice(words, size=int(rng.integers(1, 7)))) + "." for _ in range(n)]
            for n in (2, 4, 3, 5)]

    def run_all() -> None:
        for texts in jobs:
            _run(engine, _chunks(texts))
            engine.cleanup()

    run_all()  # warm-up: allocator pools, lazy imports, per-shape kernels
    run_all()
    tensors, rss = _live_tensors(), _rss_bytes()
    for _ in range(3):  # 12 more jobs, 20 in all
        run_all()
    assert _live_tensors() == tensors
    assert _rss_bytes() - rss < 8 * 1024 * 1024
