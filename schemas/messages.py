"""Messages that cross process boundaries: small, frozen, JSON-only, validated at the edges.

The broker carries `SynthesizeMessage` (a job id and nothing else); text lives in SQL and audio on disk.
`JobRequest` is one validated unit of user input before it becomes a job row; `JobView` is what
`status --json` prints.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.status import AudioFormat, JobStatus

SYNTHESIZE_TASK = "ttsfleet.synthesize"
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SynthesizeMessage(BaseModel):
    """The only payload on the broker: which job to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str = Field(pattern=JOB_ID_PATTERN.pattern)


class JobRequest(BaseModel):
    """One job as the user asked for it, before it is stored.

    `text` is the raw text; the producer normalizes and chunks it. `title`/`group_*` describe a book
    chapter (one job per chapter, in reading order).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    id: str | None = Field(default=None, pattern=JOB_ID_PATTERN.pattern)
    voice: str | None = None
    format: AudioFormat = AudioFormat.WAV
    priority: int = Field(default=5, ge=0, le=9)
    loudness_lufs: float | None = Field(default=None, ge=-70, le=-5)  # normalize the job's audio to this
    source: str | None = None  # file name or "stdin", for messages
    title: str | None = None
    group_title: str | None = None
    group_index: int | None = None

    @field_validator("text")
    @classmethod
    def _text_is_storable(cls, text: str) -> str:
        if "\x00" in text:
            raise ValueError("text contains a NUL byte")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"text is not valid Unicode at character {err.start}") from err
        return text


class JobView(BaseModel):
    """A job as `status --json` shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    chunks_done: int
    chunks_total: int
    audio_path: str | None
    audio_s: float | None
    error: str | None
    voice: str
    format: AudioFormat
    priority: int
    title: str | None = None
    warnings: list[str] = Field(default_factory=list)
    attempts: int = 0
    created_at: str
    finished_at: str | None = None
    book_path: str | None = None  # a book's .m4b, on each of its chapters once all are done
