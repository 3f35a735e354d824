"""The synthesis engine: a voice pinned to one device under one precision policy.

`start_engine` moves the model, runs a canary (falling back to safer policies when it fails) and sizes
the token budget; `Engine.synthesize` runs length-sorted batches with an out-of-memory back-off (which
lowers the budget for good) and a per-chunk NaN/silence guard; `Engine.cleanup` releases memory between
jobs. A CUDA error other than out-of-memory marks the engine broken: CUDA errors are sticky, so from then
on every call into the context fails again.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from schemas.errors import DeviceLost, SynthesisFailed, first_line
from schemas.status import DType, Runtime
from worker.batching import (
    CPU_TOKEN_BUDGET,
    MAX_TOKEN_BUDGET,
    Item,
    lowered_budget,
    padded_tokens,
    plan_batches,
)
from worker.canary import measure_budget, run_canary, settle_fidelity
from worker.device import DeviceInfo
from worker.fidelity import DEFAULT_BAR, Fidelity, FidelityBar
from worker.loaded_voice import LoadedVoice
from worker.model import bad_audio, free_memory, peak_bytes, reset_peak
from worker.precision import Policy, apply_process_settings
from worker.runner import LaneItem, Runner
from worker.runners import make_runner
from worker.synthesis import ChunkAudio, ChunkInput, EngineRun

if TYPE_CHECKING:
    from worker import synthesis

__all__ = ["ChunkAudio", "ChunkInput", "Engine", "EngineRun", "start_engine"]

log = logging.getLogger(__name__)

UNSPEAKABLE_PAUSE_S = 0.3


@dataclass(slots=True)
class _Counts:
    oom_retries: int = 0
    fp32_fallbacks: int = 0
    batches: int = 0
    max_batch_size: int = 0


@dataclass
class Engine:
    """A started engine (a `worker.synthesis.Engine`). Build it with `start_engine`.

    `token_budget` (padded input tokens per batch) only ever goes down: an out-of-memory lowers it for
    this and every later job. `broken` is set once a device error was seen; the engine is then useless.
    `fidelity`: the policy's audio against strict fp32's, measured at start on this device (None where
    the policy is fp32 itself); for a voice exported to ONNX, the export's against PyTorch.
    """

    voice: LoadedVoice
    device: DeviceInfo
    runner: Runner
    token_budget: int
    deterministic: bool = False
    max_batch_items: int | None = None
    bytes_per_token: float | None = None
    canary_s: float = 0.0
    fidelity: Fidelity | None = None
    notes: list[str] = field(default_factory=list)
    broken: bool = field(default=False, init=False)
    _budget_noted: bool = field(default=False, init=False, repr=False)

    @property
    def policy(self) -> Policy:
        return self.runner.policy

    @property
    def runtime(self) -> Runtime:
        """Which runtime runs the voice: torch or onnxruntime."""
        return self.runner.runtime

    @property
    def sample_rate_hz(self) -> int:
        return self.voice.sample_rate_hz

    @property
    def voice_name(self) -> str:
        return self.voice.name

    @property
    def num_speakers(self) -> int:
        """The voice's speaker count (1: a single-speaker voice)."""
        return self.voice.num_speakers

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
        """Synthesize `chunks`, calling `on_chunk` as each chunk's audio exists (not in input order).

        Raises SynthesisFailed (one chunk that does not fit in memory, NaN in fp32), DeviceLost (a CUDA
        error other than out-of-memory, now or in an earlier call), or whatever `on_chunk` raises; memory
        is freed before any of them propagates.
        """
        if self.broken:
            raise DeviceLost(f"device {self.device.name} is unusable after an earlier device error")
        # Process-wide (TF32): another voice's engine in this process may run under another policy.
        apply_process_settings(self.policy, self.device)
        encoded = [self._encode(chunk) for chunk in chunks]
        # A chunk the voice cannot say at all (a "* * *" break on a character-vocabulary voice) becomes a
        # short pause, reported through `dropped`, rather than failing a whole chapter.
        for chunk, (ids, dropped) in zip(chunks, encoded, strict=True):
            if not ids:
                on_chunk(ChunkAudio(idx=chunk.idx, samples=np.zeros(round(UNSPEAKABLE_PAUSE_S * self.sample_rate_hz),
                                                                    dtype=np.float32),
                                    synth_s=0.0, batch_size=0, dtype=self.policy.dtype, fp32_redo=False,
                                    dropped=dropped))
        items = [Item(pos, len(ids)) for pos, (ids, _) in enumerate(encoded) if ids]
        counts = _Counts()
        torch_device = self.runner.torch_device
        started = time.perf_counter()
        try:
            reset_peak(torch_device)
            if self.runner.lanes > 1 and len(items) > 1:
                self._run_lanes(chunks, encoded, items, on_chunk, counts)
            else:
                for speed in sorted({chunks[item.key].speed for item in items}):  # one speed per batch
                    self._run_batches(chunks, encoded, [i for i in items if chunks[i.key].speed == speed],
                                      on_chunk, counts)
            self.runner.synchronize()
            peak_mem_bytes = peak_bytes(torch_device)
        except BaseException as err:
            lost = self._device_lost(err)
            self.free()  # raises DeviceLost itself when freeing is what finds the device dead
            if lost is None or lost is err:
                raise
            raise lost from err
        return EngineRun(synth_s=time.perf_counter() - started, peak_mem_bytes=peak_mem_bytes,
                         oom_retries=counts.oom_retries, fp32_fallbacks=counts.fp32_fallbacks,
                         batches=counts.batches, max_batch_size=counts.max_batch_size)

    def cleanup(self) -> None:
        """Release what the last job left: collect garbage, empty the CUDA cache (CPU: trim the heap).

        Never raises for a dead device (the job layer calls this in a `finally:` and must see the job's
        own DeviceLost): after a device error only garbage is collected, and a device error found here is
        logged and marks the engine broken, so its next `synthesize` raises DeviceLost.
        """
        try:
            self.free()
        except DeviceLost as err:
            log.error("%s; device memory not released", err)

    def _run_batches(self, chunks: Sequence[ChunkInput], encoded: list[tuple[list[int], str]], items: list[Item],
                     on_chunk: Callable[[ChunkAudio], object], counts: _Counts) -> None:
        """Run `items` in batches planned at the token budget. On out-of-memory the budget is lowered and
        what is left re-planned, so later batches do not run out again; one chunk alone that does not fit
        raises SynthesisFailed."""
        pending = self._plan(items, chunks)
        while pending:
            batch = pending.popleft()
            keys = [item.key for item in batch]
            first = chunks[keys[0]]
            waves, batch_s = self.forward([encoded[k][0] for k in keys], self._seed(chunks, keys),
                                          speed=first.speed, speaker_id=first.speaker_id)
            if waves is None:  # out of memory, already freed
                counts.oom_retries += 1
                if len(batch) == 1:
                    raise SynthesisFailed(f"chunk {chunks[keys[0]].idx} does not fit in device memory "
                                          f"even alone ({batch[0].n_tokens} tokens)")
                self._lower_budget(batch)
                # The failed batch holds the longest items left, so its first re-planned batch is smaller.
                left = [*batch, *(item for queued in pending for item in queued)]
                pending = self._plan(left, chunks)
                continue
            counts.batches += 1
            counts.max_batch_size = max(counts.max_batch_size, len(batch))
            total = sum(len(w) for w in waves) or 1
            for key, wave in zip(keys, waves, strict=True):
                on_chunk(self._checked(chunks[key], encoded[key], wave, batch_s * len(wave) / total,
                                       len(batch), counts))
            del waves

    def _run_lanes(self, chunks: Sequence[ChunkInput], encoded: list[tuple[list[int], str]], items: list[Item],
                   on_chunk: Callable[[ChunkAudio], object], counts: _Counts) -> None:
        """Run every item on the runner's lanes as one stream, longest first (the last to start are the
        shortest, so the lanes finish close together), storing each through `on_chunk` while the lanes run
        on: no lane waits for another, nor for the store. A chunk's `synth_s` is its lane time divided by
        the lanes (its share of the wall time, as a batch's is split among its chunks). An item that runs
        out of memory is redone alone on the all-core session; one that fails again raises SynthesisFailed."""
        runner = self.runner
        order = sorted(items, key=lambda item: -item.n_tokens)
        side_by_side = min(runner.lanes, len(order))
        stream = runner.stream([LaneItem(encoded[i.key][0], chunks[i.key].speed, chunks[i.key].speaker_id)
                                for i in order])
        try:
            for pos, wave, lane_s in stream:
                chunk = chunks[order[pos].key]
                if isinstance(wave, Exception):
                    if not runner.is_out_of_memory(wave):
                        raise wave
                    counts.oom_retries += 1
                    waves, lane_s = self.forward([encoded[order[pos].key][0]], None, speed=chunk.speed,
                                                 speaker_id=chunk.speaker_id)
                    if waves is None:
                        raise SynthesisFailed(f"chunk {chunk.idx} does not fit in memory even alone "
                                              f"({order[pos].n_tokens} tokens)") from wave
                    wave = waves[0]
                else:  # its share of the wall time: the lanes ran side by side
                    lane_s /= side_by_side
                counts.batches += 1
                on_chunk(self._checked(chunk, encoded[order[pos].key], wave, lane_s, side_by_side, counts))
        finally:
            stream.close()
        counts.max_batch_size = max(counts.max_batch_size, side_by_side)

    def _plan(self, items: list[Item], chunks: Sequence[ChunkInput]) -> deque[list[Item]]:
        """Batches at the token budget, one speaker per batch (a model call takes one speaker id)."""
        speakers = dict.fromkeys(chunks[item.key].speaker_id for item in items)
        return deque(batch for speaker in speakers
                     for batch in plan_batches([i for i in items if chunks[i.key].speaker_id == speaker],
                                               self.token_budget, self.max_batch_items))

    def _lower_budget(self, failed: list[Item]) -> None:
        """Lower the token budget below the `failed` batch's padded size, for good: device memory that ran
        short does not come back by itself. The first time is noted in `notes`."""
        old, padded = self.token_budget, padded_tokens(failed)
        self.token_budget = lowered_budget(failed, old)
        log.warning("out of memory on a batch of %d chunks (%d padded tokens); token budget %d -> %d",
                    len(failed), padded, old, self.token_budget)
        if not self._budget_noted:
            self._budget_noted = True
            self.notes.append(f"out of memory on a batch of {padded} padded tokens; token budget lowered "
                              f"from {old} to {self.token_budget}")

    def _device_lost(self, err: BaseException) -> DeviceLost | None:
        """`err` as a DeviceLost (itself, or one for a raw CUDA error), marking the engine broken; None
        when `err` is no device error."""
        if isinstance(err, DeviceLost):
            lost = err
        elif isinstance(err, RuntimeError) and _is_device_error(err, self.runner.device_type):
            lost = DeviceLost(f"device error on {self.device.name}: {first_line(err)}")
        else:
            return None
        self.broken = True
        return lost

    def free(self) -> None:
        """Release cached memory now (`free_memory`), except on a broken engine, where only garbage is
        collected: CUDA errors are sticky and `empty_cache` would raise again.

        Unlike `cleanup`, raises DeviceLost (marking the engine broken) when freeing hits a device error.
        """
        if self.broken:
            gc.collect()
            return
        try:
            self.runner.release_memory()
            free_memory(self.runner.torch_device)
        except RuntimeError as err:
            lost = self._device_lost(err)
            if lost is None:
                raise
            raise lost from err

    def _encode(self, chunk: ChunkInput) -> tuple[list[int], str]:
        """Token ids and dropped characters; no ids at all when nothing in the chunk is speakable."""
        encoded = self.voice.encode(chunk.text.strip())
        if not any(i != self.runner.pad_id for i in encoded.ids):
            unsaid = "".join(sorted({c for c in chunk.text if not c.isspace()}))
            return [], encoded.dropped or unsaid
        return list(encoded.ids), encoded.dropped

    def _seed(self, chunks: Sequence[ChunkInput], keys: list[int]) -> int | None:
        """None with noise off; a chunk's own seed when alone; else a mix of the batch's seeds (batch
        mates change an item's noise, so only batch size 1 makes a chunk's audio independent of them)."""
        if self.deterministic:
            return None
        seed = 0
        for key in keys:
            seed = (seed * 1_000_003 + chunks[key].seed) % (1 << 63)
        return seed

    def forward(self, ids: list[list[int]], seed: int | None, fp32: bool = False,
                speed: float = 1.0, speaker_id: int | None = None) -> tuple[list[np.ndarray] | None, float]:
        """Run one batch of token-id lists as it is (no planning, no guard): float32 waves and wall seconds,
        or (None, seconds) on out-of-memory, with memory freed outside the except block (the exception's
        frames hold the batch's tensors). `seed` seeds the noise (None: noise as configured); `fp32` runs
        with autocast off; `speed` multiplies the voice's speaking rate; `speaker_id` picks a multi-speaker
        voice's speaker. The canary, the memory probe and benchmarks use it.

        Raises:
            DeviceLost: a CUDA error other than out-of-memory.
        """
        started = time.perf_counter()
        try:
            waves = self.runner.run(ids, seed=seed, fp32=fp32, speed=speed, speaker_id=speaker_id)
            self.runner.synchronize()
            return waves, time.perf_counter() - started
        except Exception as err:
            if not self.runner.is_out_of_memory(err):
                lost = self._device_lost(err)
                if lost is None:
                    raise
                raise lost from err
        self.free()
        return None, time.perf_counter() - started

    def _checked(self, chunk: ChunkInput, encoded: tuple[list[int], str], wave: np.ndarray, synth_s: float,
                 batch_size: int, counts: _Counts) -> ChunkAudio:
        """The chunk's audio after the guard: a low-precision result with NaN/inf or silence is redone
        alone in fp32; NaN/inf in fp32 fails the job."""
        problem = bad_audio(wave)
        redo = self.policy.low_precision and problem is not None
        if redo:
            log.warning("chunk %d: %s under %s; redoing it in fp32", chunk.idx, problem, self.policy.dtype)
            counts.fp32_fallbacks += 1
            waves, redo_s = self.forward([encoded[0]], None if self.deterministic else chunk.seed, fp32=True,
                                         speed=chunk.speed, speaker_id=chunk.speaker_id)
            if waves is None:
                raise SynthesisFailed(f"chunk {chunk.idx} does not fit in device memory for its fp32 redo")
            wave, synth_s = waves[0], synth_s + redo_s
            problem = bad_audio(wave)
        if problem is not None and problem != "silent output":
            raise SynthesisFailed(f"chunk {chunk.idx}: {problem} even in fp32")
        return ChunkAudio(idx=chunk.idx, samples=wave, synth_s=synth_s, batch_size=batch_size,
                          dtype=DType.FLOAT32 if redo else self.policy.dtype, fp32_redo=redo, dropped=encoded[1])


def start_engine(voice: LoadedVoice, device: DeviceInfo, policy: Policy, *, token_budget: int | None = None,
                 deterministic: bool = False, max_batch_items: int | None = None,
                 threads: int | None = None, fidelity_bar: FidelityBar | None = DEFAULT_BAR) -> Engine:
    """Pick the runner (`make_runner`: onnxruntime or torch, as the policy says and the voice allows; on
    onnxruntime a batch is one chunk per lane, run side by side), move `voice.model` to `device` under
    `policy`, run the canary (falling back to `safer` policies, each fallback recorded in `engine.notes`),
    measure the fidelity of a low-precision policy against fp32 (`settle_fidelity`: below `fidelity_bar`,
    the decoder and then the flow are kept in fp32, said in one line in `engine.notes`; None skips it),
    and size the token budget: `token_budget` if given, else measured free memory / memory per token on
    CUDA, else CPU_TOKEN_BUDGET (no limit on onnxruntime, which pads nothing).

    `deterministic` sets the model's noise to zero (identical audio for identical text, any batching);
    otherwise chunk seeds drive the noise, reproducible per chunk only at `max_batch_items=1`.
    `threads`: intra-op threads of the runtime (None: its default, all cores given to the process).
    Raises SynthesisFailed when even the safest policy fails the canary, DeviceLost on a CUDA error.
    """
    runner = make_runner(voice, device, policy, noise_off=deterministic, threads=threads)
    apply_process_settings(runner.policy, device)
    if not runner.padded_batches:
        # ONNX graphs return no output lengths, so no padded batches: a "batch" is the items the runner
        # synthesizes side by side, one per lane.
        max_batch_items = runner.lanes
        # No padding either: lanes hold one item each, so the budget that bounds padded batches does not apply.
        token_budget = token_budget or MAX_TOKEN_BUDGET
    engine = Engine(voice=voice, device=device, runner=runner, token_budget=token_budget or CPU_TOKEN_BUDGET,
                    deterministic=deterministic, max_batch_items=max_batch_items)
    started = time.perf_counter()
    run_canary(engine)
    if fidelity_bar is not None:
        engine.fidelity, note = settle_fidelity(runner, device, lambda text: voice.encode(text).ids,
                                                voice.sample_rate_hz, fidelity_bar)
        if note is not None:
            log.warning("%s", note)
            engine.notes.append(note)
    if runner.runtime == Runtime.ONNXRUNTIME and voice.onnx is not None:
        engine.fidelity = voice.onnx.checked
    engine.canary_s = time.perf_counter() - started
    if token_budget is None and runner.device_type == "cuda":
        engine.bytes_per_token, engine.token_budget = measure_budget(engine)
    engine.free()  # unlike cleanup(), lets a dead device surface here as DeviceLost
    return engine


def _is_device_error(err: RuntimeError, device_type: str) -> bool:
    """True for errors that leave CUDA unusable (device-side assert, illegal address, AcceleratorError).
    torch is not imported for it: an AcceleratorError can only come from an already imported torch."""
    torch = sys.modules.get("torch")
    accelerator_error = getattr(torch, "AcceleratorError", None) if torch is not None else None
    if accelerator_error is not None and isinstance(err, accelerator_error):
        return True
    text = str(err)
    markers = ("CUDA error", "device-side assert", "illegal memory access", "cuDNN error")
    return device_type == "cuda" and any(marker in text for marker in markers)


if TYPE_CHECKING:
    def _satisfies(engine: Engine) -> synthesis.Engine:
        """Never called: mypy checks here that the engine satisfies the protocol the job pipeline uses."""
        return engine
