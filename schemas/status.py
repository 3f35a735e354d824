"""Statuses and modes shared by producer, worker and store: every closed set of names is an enum here."""

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


class DType(StrEnum):
    """The floating-point type a worker computes in (torch's names; stored and printed as these)."""

    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class PrecisionMode(StrEnum):
    """How a precision policy is applied: nothing lowered, or torch.autocast around an fp32 model."""

    FP32 = "fp32"
    AUTOCAST = "autocast"


class Backend(StrEnum):
    """The kind of device a worker computes on."""

    CUDA = "cuda"
    CPU = "cpu"
    MPS = "mps"


class Runtime(StrEnum):
    """The inference runtime a worker's engine runs the voice with: PyTorch (any voice, any device, batched)
    or ONNX Runtime (CPU, voices that ship an ONNX model: Piper voices; one chunk per call); none for the
    model-free `null:` voice."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    NONE = "none"  # the model-free `null:` voice


class WebhookState(StrEnum):
    """A job's webhook: `waiting` for the job to end, then `delivered`, or `failed` after the last attempt."""

    WAITING = "waiting"
    DELIVERED = "delivered"
    FAILED = "failed"
