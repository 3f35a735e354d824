"""The `null:` voice's engine: silence as long as the text would take to say, made instantly, no model.

It has the real engine's interface, so everything around synthesis — claims, the chunk store, assembly,
results, metrics, the broker — runs exactly as with a voice, at the speed a card that synthesizes in no
time would ask of it. `make bench-bookkeeping` and the tests of the queue, store and storage use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas.scheduling import CHARS_PER_AUDIO_S
from schemas.status import Runtime
from schemas.voices import NULL_SAMPLE_RATE_HZ, NULL_VOICE
from worker.device import DeviceInfo
from worker.engine import ChunkAudio, ChunkInput, EngineRun
from worker.precision import Policy

NULL_BATCH_ITEMS = 64  # chunks per "batch", as a card would run them


def null_samples(text: str, speed: float = 1.0, sample_rate_hz: int = NULL_SAMPLE_RATE_HZ) -> int:
    """Samples of silence for `text` said at `speed`: its estimated spoken length (at least one sample)."""
    return max(1, round(len(text.strip()) / CHARS_PER_AUDIO_S / speed * sample_rate_hz))


@dataclass
class NullEngine:
    """An engine that speaks silence (see the module docstring); `synth_s` of every chunk is 0."""

    device: DeviceInfo
    policy: Policy
    sample_rate_hz: int = NULL_SAMPLE_RATE_HZ
    voice_name: str = NULL_VOICE
    runtime: Runtime = Runtime.NONE
    notes: list[str] = field(default_factory=list)
    num_speakers: int = 1
    fidelity: None = None  # no model, nothing measured against fp32
    _zeros: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
        """Call `on_chunk` with each chunk's silence, in batches of NULL_BATCH_ITEMS. Raises whatever
        `on_chunk` raises."""
        batches = 0
        for start in range(0, len(chunks), NULL_BATCH_ITEMS):
            batch = chunks[start:start + NULL_BATCH_ITEMS]
            batches += 1
            for chunk in batch:
                samples = self._silence(null_samples(chunk.text, chunk.speed, self.sample_rate_hz))
                on_chunk(ChunkAudio(idx=chunk.idx, samples=samples, synth_s=0.0, batch_size=len(batch),
                                    dtype=self.policy.dtype, fp32_redo=False, dropped=""))
        return EngineRun(synth_s=0.0, peak_mem_bytes=None, oom_retries=0, fp32_fallbacks=0, batches=batches,
                         max_batch_size=min(len(chunks), NULL_BATCH_ITEMS))

    def cleanup(self) -> None:
        """Nothing to release."""

    def _silence(self, samples: int) -> np.ndarray:
        """`samples` of silence: a read-only view of one shared buffer (making audio costs nothing here)."""
        if len(self._zeros) < samples:
            self._zeros = np.zeros(max(samples, 2 * len(self._zeros)), dtype=np.float32)
            self._zeros.setflags(write=False)
        return self._zeros[:samples]
