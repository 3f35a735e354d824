"""What the job pipeline needs from an engine: the `Engine` protocol and the records it speaks in.

The real engine (`worker.engine.Engine`, built by `start_engine`) and the tests' fake engine both satisfy
`Engine` under mypy, so the pipeline depends on this small shape, not on torch, ONNX Runtime or the
engine's internals. Imports numpy only (and the torch-free policy and device records).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np

from schemas.status import DType, Runtime

if TYPE_CHECKING:
    from worker.device import DeviceInfo
    from worker.fidelity import Fidelity
    from worker.precision import Policy


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """One chunk to say; `speed` multiplies the voice's speaking rate (2.0: twice as fast)."""

    idx: int
    text: str
    seed: int
    speaker_id: int | None = None  # a multi-speaker voice's speaker; chunks of one speaker share batches
    speed: float = 1.0


@dataclass(frozen=True, slots=True)
class ChunkAudio:
    """One chunk's audio: float32 mono at the engine's sample rate. `synth_s` is its share of its batch's
    wall time (plus any fp32 redo); `fp32_redo` says the low-precision result failed the guard."""

    idx: int
    samples: np.ndarray
    synth_s: float
    batch_size: int
    dtype: DType
    fp32_redo: bool
    dropped: str


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One `synthesize` call. `peak_mem_bytes`: CUDA max allocated bytes, or on CPU the process's peak RSS
    during the call (Linux; None elsewhere)."""

    synth_s: float
    peak_mem_bytes: int | None
    oom_retries: int
    fp32_fallbacks: int
    batches: int
    max_batch_size: int


class Engine(Protocol):
    """A voice pinned to one device under the precision policy that really runs (after the runtime's
    choice, the canary's fallbacks and the fidelity check: `policy`, not what was requested).

    `num_speakers`: the voice's speaker count (1 for a single-speaker voice); a chunk's `speaker_id` must
    be below it. `notes`: what start-up changed and why (fallbacks, a lowered token budget), one line each.
    `fidelity`: the policy's audio against fp32's, measured at start (None: the policy is fp32 itself).
    """

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def device(self) -> DeviceInfo: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def voice_name(self) -> str: ...

    @property
    def num_speakers(self) -> int: ...

    @property
    def notes(self) -> list[str]: ...

    @property
    def fidelity(self) -> Fidelity | None: ...

    def synthesize(self, chunks: Sequence[ChunkInput], on_chunk: Callable[[ChunkAudio], object]) -> EngineRun:
        """Synthesize `chunks`, calling `on_chunk` as each chunk's audio exists (not in input order); what
        `on_chunk` raises propagates after the engine freed its memory."""
        ...

    def cleanup(self) -> None:
        """Release what the last call left (never raises for a dead device)."""
        ...



class PolicyQuality(TypedDict):
    """The columns a workers row and a job's metrics store about the quality of a policy (named as
    `worker.events.JobFigures`' fields): its fp32 modules, comma-separated, and its fidelity against fp32
    (None where the policy is fp32 itself)."""

    keep_fp32: str
    fidelity_mel_db: float | None
    fidelity_snr_db: float | None
    fidelity_duration_error: float | None


def policy_quality(policy: Policy, fidelity: Fidelity | None) -> PolicyQuality:
    """`PolicyQuality` of an engine's policy and fidelity: `JobFigures(..., **policy_quality(engine.policy,
    engine.fidelity))`."""
    return PolicyQuality(keep_fp32=",".join(policy.keep_fp32),
                         fidelity_mel_db=None if fidelity is None else fidelity.mel_distance_db,
                         fidelity_snr_db=None if fidelity is None else fidelity.snr_db,
                         fidelity_duration_error=None if fidelity is None else fidelity.duration_error)
