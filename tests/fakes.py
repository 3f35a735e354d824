"""A fake engine with the real engine's interface: a tone per chunk, length proportional to the text.

Lets the job pipeline (claims, resume, cancel, metrics) be tested in milliseconds and with injected
faults; the real engine has its own tests. mypy checks this module (pyproject's `modules`): `_typed` below
fails to type-check if FakeEngine stops satisfying the `worker.synthesis.Engine` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas.status import Backend, DType, PrecisionMode, Runtime
from worker.device import DeviceInfo
from worker.fidelity import Fidelity
from worker.precision import Policy
from worker.synthesis import ChunkAudio, ChunkInput, Engine, EngineRun

SAMPLE_RATE_HZ = 16_000


class Crash(BaseException):
    """Stands in for a process dying mid-job: not an Exception, so nothing in the job path catches it."""


@dataclass
class FakeEngine:
    voice_name: str = "fake"
    sample_rate_hz: int = SAMPLE_RATE_HZ
    crash_after: int | None = None  # die after this many chunks of one call
    fail_with: Exception | None = None
    seen: list[int] = field(default_factory=list)
    cleanups: int = 0
    device: DeviceInfo = field(default_factory=lambda: DeviceInfo(
        backend=Backend.CPU, name="Fake CPU", capability=None, memory_bytes=None, index=None, torch_device="cpu"))
    policy: Policy = field(default_factory=lambda: Policy(
        dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, reason="fake engine", run_on=Backend.CPU))
    notes: list[str] = field(default_factory=list)
    runtime: Runtime = Runtime.ONNXRUNTIME  # not the column's default, so the tests see it was stored
    num_speakers: int = 1
    fidelity: Fidelity | None = None

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
        for n, chunk in enumerate(chunks):
            if self.fail_with is not None:
                raise self.fail_with
            if self.crash_after is not None and n >= self.crash_after:
                raise Crash(f"crashed before chunk {chunk.idx}")
            self.seen.append(chunk.idx)
            on_chunk(ChunkAudio(idx=chunk.idx, samples=tone(len(chunk.text)), synth_s=0.01, batch_size=1,
                                dtype=DType.FLOAT32, fp32_redo=False, dropped=""))
        return EngineRun(synth_s=0.01 * len(chunks), peak_mem_bytes=None, oom_retries=0, fp32_fallbacks=0,
                         batches=len(chunks), max_batch_size=1)

    def cleanup(self) -> None:
        self.cleanups += 1


def tone(chars: int, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """0.05 s of 220 Hz per character."""
    t = np.arange(int(0.05 * chars * sample_rate_hz)) / sample_rate_hz
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _typed(engine: FakeEngine) -> Engine:
    """Never called: mypy checks here that FakeEngine satisfies the Engine protocol the pipeline uses."""
    return engine
