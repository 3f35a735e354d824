"""The contract shared by producer, worker and store: messages, statuses, errors, settings, tables.

Importing this package never imports torch or Celery.
"""

from schemas.errors import (
    InvalidInput,
    PermanentError,
    RetryableError,
    TtsfleetError,
)
from schemas.messages import JobRequest, JobView, SynthesizeMessage
from schemas.status import AudioFormat, BreakKind, JobStatus, Precision, WorkerState

__all__ = [
    "AudioFormat",
    "BreakKind",
    "InvalidInput",
    "JobRequest",
    "JobStatus",
    "JobView",
    "PermanentError",
    "Precision",
    "RetryableError",
    "SynthesizeMessage",
    "TtsfleetError",
    "WorkerState",
]
