"""SQL tables: the source of truth for jobs, their chunks, the workers and each job's metrics.

Times are naive UTC (`utcnow()`), the one representation used on SQLite and PostgreSQL alike.
Enums are stored as short strings (no native enum types), so adding a state needs no type migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas.settings import DEFAULT_QUEUE
from schemas.status import BreakKind, JobStatus, WebhookState, WorkerState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Naive UTC now, the only timestamp form stored."""
    return datetime.now(UTC).replace(tzinfo=None)


def _enum(enum_cls: type[Any]) -> Enum:
    return Enum(enum_cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
                validate_strings=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One text to speak: its text, options, lease and final result."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    # The broker queue the job was published to: a re-publish (lost message, dead worker) goes back there.
    queue: Mapped[str] = mapped_column(String(128), default=DEFAULT_QUEUE, server_default=DEFAULT_QUEUE)
    voice: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(1024))
    title: Mapped[str | None] = mapped_column(String(512))
    group_id: Mapped[str | None] = mapped_column(String(64), index=True)
    group_title: Mapped[str | None] = mapped_column(String(512))
    group_index: Mapped[int | None] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    chars: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    audio_path: Mapped[str | None] = mapped_column(String(1024))
    # The audio file's path under the output folder, named after the input ("story.wav", "Book/01 - X.wav"),
    # chosen once at submit; None for jobs stored before names existed (they are named by id).
    output_name: Mapped[str | None] = mapped_column(String(1024), unique=True, index=True)
    audio_s: Mapped[float | None] = mapped_column(Float)
    sample_rate_hz: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    audio_purged_at: Mapped[datetime | None] = mapped_column(DateTime)  # `gc` deleted the audio (result TTL)

    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_status_finished", "status", "finished_at"),
    )


class Book(Base):
    """A book (an EPUB or PDF submitted): its metadata and options; its chapters are the jobs whose
    `group_id` is the book's id (chosen at submit from the file, the book's title and the jobs' shape)."""

    __tablename__ = "books"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(512))
    author: Mapped[str | None] = mapped_column(String(512))
    language: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(1024))  # the file's name as given
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    # The cover as the .m4b carries it (JPEG or PNG; an SVG cover rasterized to PNG), at most 8 MB.
    cover: Mapped[bytes | None] = mapped_column(LargeBinary)
    cover_type: Mapped[str | None] = mapped_column(String(32))
    # voice, format, the chapter selection and how the book was read (matter, notes, captions)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)  # the book's own (an unusable cover)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)  # the API key whose book it is
    m4b_path: Mapped[str | None] = mapped_column(String(1024))  # where the .m4b was last built
    m4b_built_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Chunk(Base):
    """One sentence-aligned piece of a job's normalized text. A long job's chunk audio is stored as it is
    made (per engine batch); a short job's chunks keep none (the job is redone whole after a crash)."""

    __tablename__ = "chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    # The written text this chunk says, for subtitles ("6 p.m." where `text` says "six P M"): None where
    # it is `text`, "" where the chunk goes on with the written text of the chunk before (migration 0014)
    written: Mapped[str | None] = mapped_column(Text)
    break_after: Mapped[BreakKind] = mapped_column(_enum(BreakKind), default=BreakKind.SENTENCE)
    chars: Mapped[int] = mapped_column(Integer)
    # The voice that says this chunk when it is not the job's (dialogue spoken by a second voice)
    voice: Mapped[str | None] = mapped_column(String(512))
    # This chunk's speed factor (an SSML prosody rate span), times the job's speed; None: 1
    speed: Mapped[float | None] = mapped_column(Float)
    audio_path: Mapped[str | None] = mapped_column(String(1024))
    # Where the chunk's audio starts in its file, in samples: a long job's chunks of one engine batch are
    # stored in one file (`samples` long from here); None: the file holds this chunk alone.
    audio_offset: Mapped[int | None] = mapped_column(Integer)
    samples: Mapped[int | None] = mapped_column(Integer)
    audio_s: Mapped[float | None] = mapped_column(Float)
    synth_s: Mapped[float | None] = mapped_column(Float)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int | None] = mapped_column(Integer)
    dtype: Mapped[str | None] = mapped_column(String(16))
    fp32_redo: Mapped[bool] = mapped_column(Boolean, default=False)
    done_at: Mapped[datetime | None] = mapped_column(DateTime)


class Segment(Base):
    """A run of consecutive chunks of a long job, leased on its own (same lease columns as a job), so idle
    workers help finish the job; the chunks' rows still hold the audio."""

    __tablename__ = "segments"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_chunk: Mapped[int] = mapped_column(Integer)
    end_chunk: Mapped[int] = mapped_column(Integer)  # exclusive
    chars: Mapped[int] = mapped_column(Integer)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker_id: Mapped[str | None] = mapped_column(String(128))  # who holds it now, or finished it
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_segments_status_lease", "status", "lease_expires_at"),)


class Worker(Base):
    """A registered worker: one process bound to one device, with the precision policy it pinned."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    device_index: Mapped[int | None] = mapped_column(Integer)
    card: Mapped[str] = mapped_column(String(256))
    capability: Mapped[str | None] = mapped_column(String(8))
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    backend: Mapped[str] = mapped_column(String(16))
    torch_version: Mapped[str] = mapped_column(String(64))
    cuda_version: Mapped[str | None] = mapped_column(String(32))
    dtype: Mapped[str] = mapped_column(String(16))
    tf32: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_reason: Mapped[str] = mapped_column(Text, default="")
    voice: Mapped[str] = mapped_column(String(512), default="")
    queues: Mapped[str] = mapped_column(String(256), default="")
    state: Mapped[WorkerState] = mapped_column(_enum(WorkerState), default=WorkerState.STARTING)
    # The modules a mixed policy keeps in fp32 ("text_encoder,duration_predictor,decoder"), and the policy's
    # fidelity against fp32 measured at start on this device (None: fp32 is the reference itself).
    keep_fp32: Mapped[str] = mapped_column(String(128), default="", server_default="")
    fidelity_mel_db: Mapped[float | None] = mapped_column(Float)
    fidelity_snr_db: Mapped[float | None] = mapped_column(Float)
    fidelity_duration_error: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JobMetrics(Base):
    """What one finished job cost on the worker that finished it; written once, with the result."""

    __tablename__ = "job_metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), index=True)
    voice: Mapped[str] = mapped_column(String(512))
    card: Mapped[str] = mapped_column(String(256))
    capability: Mapped[str | None] = mapped_column(String(8))
    backend: Mapped[str] = mapped_column(String(16))
    dtype: Mapped[str] = mapped_column(String(16))
    chars: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer)
    audio_s: Mapped[float] = mapped_column(Float)
    synth_s: Mapped[float] = mapped_column(Float)
    queue_wait_s: Mapped[float] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float)  # created -> finished, end to end
    peak_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    oom_retries: Mapped[int] = mapped_column(Integer, default=0)
    fp32_fallbacks: Mapped[int] = mapped_column(Integer, default=0)
    batches: Mapped[int] = mapped_column(Integer, default=0)
    runtime: Mapped[str] = mapped_column(String(16), default="torch", server_default="torch")  # or onnxruntime
    # The policy's fp32 modules and its measured fidelity, as on the worker's row (the quality the
    # throughput above was bought at).
    keep_fp32: Mapped[str] = mapped_column(String(128), default="", server_default="")
    fidelity_mel_db: Mapped[float | None] = mapped_column(Float)
    fidelity_snr_db: Mapped[float | None] = mapped_column(Float)
    fidelity_duration_error: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    __table_args__ = (Index("ix_job_metrics_card_dtype", "card", "dtype"),)


class JobError(Base):
    """Why one attempt at a job stopped: an error that put the job back or failed it. Kept in SQL, so a
    poison job's real cause is found with `status`, not only in some worker's log."""

    __tablename__ = "job_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    error: Mapped[str] = mapped_column(Text)


class ApiKey(Base):
    """An HTTP API key: only its SHA-256 is stored (the key itself is shown once, at creation)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # An admin key sees every tenant's jobs; any other key only those it submitted.
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ServiceJob(Base):
    """What the HTTP service knows of a job it accepted: the key that sent it, the client's
    `Idempotency-Key`, and its webhook (claimed for delivery with a compare-and-set under a lease)."""

    __tablename__ = "service_jobs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), default="")  # "" when keys are not required
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_state: Mapped[WebhookState | None] = mapped_column(_enum(WebhookState))
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[datetime | None] = mapped_column(DateTime)
    webhook_claimed_by: Mapped[str | None] = mapped_column(String(128))
    webhook_claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_service_jobs_key_idempotency"),
        Index("ix_service_jobs_key_id", "key_id"),
        Index("ix_service_jobs_webhook", "webhook_state", "webhook_next_at"),
    )


class QuotaReservation(Base):
    """Jobs one key is submitting right now, counted against its quota until their rows exist (the HTTP
    service takes the quota in a short locked step, then submits without holding the lock)."""

    __tablename__ = "quota_reservations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    jobs: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime)  # a process that died mid-submit holds it until then


class WebhookAttempt(Base):
    """One POST of a job's webhook: when, the HTTP status or the error, and when the next try is due."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
