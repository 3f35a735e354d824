"""Messages that cross process boundaries: small, frozen, JSON-only, validated at the edges.

The broker carries `SynthesizeMessage` (job ids and nothing else); text lives in SQL and audio on disk.
`JobRequest` is one validated unit of user input before it becomes a job row; `JobView` is what
`status --json` prints.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.status import AudioFormat, JobStatus

SYNTHESIZE_TASK = "ttsfleet.synthesize"
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Column widths of schemas/tables.py `jobs`: longer values are refused or shortened here, so SQLite (which
# would store them) and PostgreSQL (which would refuse them) accept exactly the same requests.
MAX_VOICE_CHARS = 512
MAX_TITLE_CHARS = 512
MAX_SOURCE_CHARS = 1024
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MAX_LEXICON_ENTRIES = 10_000
MAX_COVER_BYTES = 8 * 1024 * 1024  # a book's cover image travels in SQL with its first chapter


def storable(value: str, what: str) -> str:
    """`value` if every SQL store can hold it: no NUL byte, valid Unicode (no lone surrogate).

    Raises:
        ValueError: naming `what` and the position, never echoing the bad character.
    """
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte at character {value.index(chr(0))}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not valid Unicode at character {err.start}") from err
    return value


def _shortened(value: str, max_chars: int) -> str:
    return value if len(value) <= max_chars else value[: max_chars - 1].rstrip() + "…"


MAX_MESSAGE_JOBS = 64  # job ids one message carries at most (a group of short jobs, `submit` groups them)


class SynthesizeMessage(BaseModel):
    """The only payload on the broker: which job to run (version 1), or which jobs to run together (version 2:
    short jobs of one voice, priority and queue, sent as one message so a fast card is not kept waiting by
    the broker; each job is still claimed on its own in SQL). A worker reads both versions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1, 2] = 1
    job_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN.pattern)
    job_ids: tuple[str, ...] = Field(default=(), max_length=MAX_MESSAGE_JOBS)

    @field_validator("job_ids")
    @classmethod
    def _ids_are_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for job_id in value:
            if not JOB_ID_PATTERN.match(job_id):
                raise ValueError(f"not a job id: {job_id[:80]!r}")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> SynthesizeMessage:
        if self.schema_version == 1 and (self.job_id is None or self.job_ids):
            raise ValueError("a version 1 message carries one job_id")
        if self.schema_version == 2 and (self.job_id is not None or not self.job_ids):
            raise ValueError("a version 2 message carries job_ids")
        return self

    @classmethod
    def of(cls, job_ids: list[str] | tuple[str, ...]) -> SynthesizeMessage:
        """The message for `job_ids`: version 1 for one job (what every worker reads), else version 2."""
        return cls(job_id=job_ids[0]) if len(job_ids) == 1 else cls(schema_version=2, job_ids=tuple(job_ids))

    @property
    def ids(self) -> tuple[str, ...]:
        """The job ids this message carries, in order."""
        return (self.job_id,) if self.job_id is not None else self.job_ids


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
    # Speaking rate: 2.0 is twice as fast (the model's length scale is 1 / speed). None: the voice's own.
    speed: float | None = Field(default=None, ge=MIN_SPEED, le=MAX_SPEED)
    # Pronunciation lexicon, word -> replacement text or `[[ phonemes ]]` (docs/text.md "Lexicons").
    lexicon: dict[str, str] | None = Field(default=None, max_length=MAX_LEXICON_ENTRIES)
    source: str | None = None  # file name or "stdin", for messages
    title: str | None = None
    group_title: str | None = None
    group_index: int | None = None
    chapter: int | None = Field(default=None, ge=0)  # its number in the book's chapter list (0: the opening)
    author: str | None = None  # a book's author, for the .m4b's metadata
    cover_image: bytes | None = Field(default=None, max_length=MAX_COVER_BYTES)  # a book's first job only

    @field_validator("text", "voice")
    @classmethod
    def _is_storable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.field_name == "voice" and len(value) > MAX_VOICE_CHARS:
            raise ValueError(f"voice has {len(value)} characters; at most {MAX_VOICE_CHARS}")
        return storable(value, str(info.field_name))

    @field_validator("lexicon")
    @classmethod
    def _lexicon_is_storable(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for word, replacement in value.items():
            if not word.strip() or not replacement.strip():
                raise ValueError(f"lexicon entry {word!r}: word and replacement must not be empty")
            storable(word, "lexicon word")
            storable(replacement, "lexicon replacement")
            if re.sub(r"\[\[.*?\]\]", "", replacement, flags=re.DOTALL).count("[[") or "]]" in re.sub(
                    r"\[\[.*?\]\]", "", replacement, flags=re.DOTALL):
                raise ValueError(f"lexicon entry {word!r}: unbalanced [[ ]] in the replacement")
        return {w.strip(): r.strip() for w, r in value.items()}

    @field_validator("title", "group_title", "author")
    @classmethod
    def _title_is_storable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Titles are display text: a long one (a markdown heading that is a paragraph) is shortened."""
        if value is None:
            return None
        return _shortened(storable(value, str(info.field_name)), MAX_TITLE_CHARS)

    @field_validator("source")
    @classmethod
    def _source_is_storable(cls, value: str | None) -> str | None:
        """A file name shown in messages: undecodable bytes (a surrogate-escaped path) become U+FFFD and
        control characters (a newline in a name) a space, so every error stays one printable line."""
        if value is None:
            return None
        clean = value.encode("utf-8", "replace").decode("utf-8")
        clean = "".join(" " if unicodedata.category(c) == "Cc" else c for c in clean)
        return _shortened(clean, MAX_SOURCE_CHARS)


class AttemptError(BaseModel):
    """Why one attempt at a job stopped, as `status --json` shows it (`at`: ISO time, UTC)."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    worker_id: str | None
    at: str
    error: str


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
    book_id: str | None = None  # the book this job is a chapter of (`status BOOK_ID`, /v1/books/{id})
    attempt_errors: list[AttemptError] = Field(default_factory=list)  # oldest first
    # Presigned HTTP URLs of the audio and the book where the output store has them (S3, GCS), else None.
    audio_url: str | None = None
    book_url: str | None = None
    audio_purged_at: str | None = None  # when the result TTL deleted the audio (`ttsfleet gc`)
    eta_s: float | None = None  # expected seconds to finish (producer/eta.py); None: not measured or not asked
    # A long job leased in segments: how many, how many finished, and the workers holding one now.
    segments_total: int = 0
    segments_done: int = 0
    segment_holders: list[str] = Field(default_factory=list)
