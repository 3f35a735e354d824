"""What a job's life tells the rest of a worker process: outcomes, measured figures, and listeners.

Listeners are how anything hooks into a running job (Prometheus metrics, the embedded progress bar,
webhooks) without patching the runtime: a small set of no-op hooks, overridden as needed, called in
order by `Listeners`. A listener that raises is logged and skipped; it never fails or stops a job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.status import Backend, DType, JobStatus, Runtime

log = logging.getLogger("ttsfleet.events")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What one `synthesize_job` call did. `status` None: nothing to do (finished, cancelled or held by
    another worker); `detail` is the output path, the error, or why nothing was done."""

    job_id: str
    status: JobStatus | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class JobFigures:
    """What synthesizing one job cost, measured on the worker that finished it; stored once with the
    result (`job_metrics`) and passed whole to listeners.

    `synth_s` sums the chunks' synthesis seconds over every attempt (a resumed job counts the chunks an
    earlier attempt made); `peak_mem_bytes` is device memory on a GPU, the process's peak RSS on a CPU,
    for this attempt's synthesis (None when nothing was left to synthesize or it cannot be read);
    `runtime` is what ran the voice (torch or onnxruntime). `keep_fp32` and `fidelity_*` are the engine's
    policy's fp32 modules and fidelity against fp32 (`worker.synthesis.policy_quality` gives them;
    None: not measured, the policy being fp32 itself).
    """

    card: str
    capability: str | None
    backend: Backend
    dtype: DType
    chunks: int
    audio_s: float
    synth_s: float
    peak_mem_bytes: int | None
    oom_retries: int
    fp32_fallbacks: int
    batches: int
    runtime: Runtime = Runtime.TORCH
    keep_fp32: str = ""
    fidelity_mel_db: float | None = None
    fidelity_snr_db: float | None = None
    fidelity_duration_error: float | None = None


class Listener:
    """Hooks around a job's life, called on the thread that runs the job. Override what you need;
    keep each hook quick (no network calls on the synthesis path)."""

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        """A chunk's audio was stored: `done` of `total` chunks of `job_id` now exist."""

    def job_finished(self, outcome: JobOutcome, figures: JobFigures) -> None:
        """The job succeeded; `figures` are what was stored with it."""

    def job_failed(self, outcome: JobOutcome) -> None:
        """The job failed for good (`outcome.detail` says why); it will not be retried."""


class Listeners(Listener):
    """Several listeners called in order; an exception in one is logged, never raised."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners = list(listeners)

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        for listener in self._listeners:
            try:
                listener.chunk_done(job_id, done, total)
            except Exception:  # a listener must never fail a job
                log.exception("listener %r failed on chunk_done", listener)

    def job_finished(self, outcome: JobOutcome, figures: JobFigures) -> None:
        for listener in self._listeners:
            try:
                listener.job_finished(outcome, figures)
            except Exception:
                log.exception("listener %r failed on job_finished", listener)

    def job_failed(self, outcome: JobOutcome) -> None:
        for listener in self._listeners:
            try:
                listener.job_failed(outcome)
            except Exception:
                log.exception("listener %r failed on job_failed", listener)
