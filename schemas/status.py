"""Job, chunk-break and worker states shared by producer, worker and store."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Life of a job. `queued -> running -> succeeded | failed | cancelled`; a crashed `running` job
    whose lease expired is claimed again and resumes."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class BreakKind(StrEnum):
    """What follows a chunk; decides the pause inserted after it when the job's audio is assembled."""

    NONE = "none"  # the chunk was cut inside a sentence (hard length cap)
    SENTENCE = "sentence"
    PARAGRAPH = "paragraph"
    CHAPTER = "chapter"
    HEADING = "heading"  # after a book's heading ("Chapter Three")
    LINE = "line"  # a line break inside a paragraph, such as the end of a verse line


class WorkerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    STOPPED = "stopped"


class AudioFormat(StrEnum):
    WAV = "wav"
    FLAC = "flac"
    OGG = "ogg"


class Precision(StrEnum):
    """What a user may ask of `worker --precision` / `doctor --precision`."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"
