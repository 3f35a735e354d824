"""Jobs' leases in SQL: claim jobs, store a long job's chunks, finish, fail or put jobs back, each once.

Every state change is a compare-and-set guarded by the current status and the lease owner, so a
redelivered message, a second worker or a cancel can never make a job finish twice or go backwards.
Statements are batched per unit of work: one claim for every job a message carries, one transaction per
stored batch of chunks, one transaction to finish the jobs that are ready (still a compare-and-set per job).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, exists, func, insert, or_, select, update

from schemas.db import Store, compare_and_set
from schemas.errors import JobInterrupted, first_line
from schemas.job_options import JobOptions
from schemas.status import BreakKind, JobStatus
from schemas.tables import Chunk, Job, JobError, JobMetrics, Segment, utcnow
from worker.events import JobFigures

# Core on the hot path: no ORM unit of work per row
JOBS: Table = Job.__table__  # type: ignore[assignment]
CHUNKS: Table = Chunk.__table__  # type: ignore[assignment]
ERRORS: Table = JobError.__table__  # type: ignore[assignment]
METRICS: Table = JobMetrics.__table__  # type: ignore[assignment]
SEGMENTS: Table = Segment.__table__  # type: ignore[assignment]
J, C, SEG = JOBS.c, CHUNKS.c, SEGMENTS.c


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker now holds, as it was at claim time."""

    job_id: str
    attempt: int
    voice: str
    format: str
    title: str | None
    group_id: str | None
    group_title: str | None
    group_index: int | None
    options: JobOptions
    warnings: tuple[str, ...]
    chunks_total: int
    output_name: str | None = None  # the audio's path under the output folder; None: named by id
    chars: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A chunk without audio yet: what to say, how, and the break after it (for the job's assembly)."""

    idx: int
    text: str
    voice: str | None = None  # None: the job's voice
    speed: float | None = None  # a factor on the job's speed (an SSML prosody rate span); None: 1
    break_after: BreakKind = BreakKind.SENTENCE
    written: str | None = None  # the written text it says, for subtitles (schemas.tables.Chunk.written)

    def speed_with(self, job_speed: float) -> float:
        """The speed this chunk is said at: its own factor times the job's."""
        return job_speed * (self.speed if self.speed is not None else 1.0)


@dataclass(frozen=True, slots=True)
class Refused:
    """A job a claim did not take: its status, whether another worker's lease on it is alive, and whether
    it is a long job cut into segments (whose delivery may be a call for help)."""

    status: JobStatus
    held_elsewhere: bool
    segmented: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim took: the claims (in the order asked), their chunks without audio, and the jobs it
    refused (absent: no such job)."""

    claims: list[Claim]
    pending: dict[str, list[PendingChunk]]
    refused: dict[str, Refused]


_CLAIM_COLUMNS = (J.id, J.attempts, J.voice, J.format, J.title, J.group_id, J.group_title, J.group_index,
                  J.options, J.warnings, J.chunks_total, J.output_name, J.chars, J.created_at, J.started_at)


def _claim_of_row(row: Any) -> Claim:
    return Claim(row.id, row.attempts, row.voice, row.format, row.title, row.group_id, row.group_title,
                 row.group_index, JobOptions.from_stored(row.options), tuple(row.warnings or ()), row.chunks_total,
                 row.output_name, row.chars or 0, row.created_at, row.started_at)


def claim_of(job: Job) -> Claim:
    """The `Claim` a job row stands for."""
    return _claim_of_row(job)


def claim_jobs(store: Store, job_ids: Sequence[str], owner: str, lease_s: float, *,
               queued_only: bool = False) -> Claimed:
    """Take every job of `job_ids` that is queued, whose lease expired, or that we hold already (only queued
    ones with `queued_only`), with their pending chunks. A delivery of jobs that all ended or are held
    elsewhere costs one indexed read; taking some costs one write transaction (a compare-and-set per row:
    a job another worker takes first is left alone). A holder coming back (a Celery retry) is the same
    attempt, not a new one."""
    if not job_ids:
        return Claimed([], {}, {})
    now = utcnow()
    segmented = exists().where(SEG.job_id == J.id)
    with store.read() as session:
        states = session.execute(select(J.id, J.status, J.lease_owner, J.lease_expires_at,
                                        segmented.label("segmented")).where(J.id.in_(list(job_ids)))).all()
    mine = {s.id for s in states if s.status == JobStatus.QUEUED or (not queued_only and s.status == JobStatus.RUNNING
            and (s.lease_owner == owner or (s.lease_expires_at is not None and s.lease_expires_at < now)))}
    refused = {s.id: Refused(JobStatus(s.status), s.status == JobStatus.RUNNING and s.id not in mine,
                             bool(s.segmented)) for s in states if s.id not in mine}
    if not mine:
        return Claimed([], {}, refused)
    reentry = and_(J.status == JobStatus.RUNNING, J.lease_owner == owner)
    claimable = or_(J.status == JobStatus.QUEUED, *(() if queued_only else (
        reentry, and_(J.status == JobStatus.RUNNING, J.lease_expires_at < now))))
    with store.session() as session:
        rows = session.execute(
            update(JOBS).where(J.id.in_(sorted(mine)), claimable).values(
                status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=case((reentry, J.attempts), else_=J.attempts + 1),
                started_at=func.coalesce(J.started_at, now), worker_id=owner,
            ).returning(*_CLAIM_COLUMNS)).all()
        taken = {row.id: _claim_of_row(row) for row in rows}
        pending = _pending(session, list(taken))
    for job_id in mine - taken.keys():  # taken by another worker between the read and the update
        refused[job_id] = Refused(JobStatus.RUNNING, True, False)
    return Claimed([taken[j] for j in job_ids if j in taken], pending, refused)


def claim(store: Store, job_id: str, owner: str, lease_s: float) -> Claim | None:
    """`claim_jobs` of one job: its claim, or None (someone else has it, or it ended)."""
    claims = claim_jobs(store, [job_id], owner, lease_s).claims
    return claims[0] if claims else None


def claim_queued(store: Store, job_ids: Sequence[str], owner: str, lease_s: float) -> list[Claim]:
    """Take every job of `job_ids` that is still queued, in one transaction, in the order of `job_ids`."""
    return claim_jobs(store, job_ids, owner, lease_s, queued_only=True).claims


def _pending(session: Any, job_ids: list[str]) -> dict[str, list[PendingChunk]]:
    pending: dict[str, list[PendingChunk]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        rows = session.execute(
            select(C.job_id, C.idx, C.text, C.voice, C.speed, C.break_after, C.written)
            .where(C.job_id.in_(job_ids), C.audio_path.is_(None)).order_by(C.job_id, C.idx)).all()
        for job_id, idx, text, voice, speed, break_after, written in rows:
            pending[job_id].append(PendingChunk(idx, text, voice, speed, BreakKind(break_after), written))
    return pending


def pending_chunks_of(store: Store, job_ids: Sequence[str]) -> dict[str, list[PendingChunk]]:
    """Chunks of each job without audio yet, in order (one query): where a resumed job starts."""
    with store.read() as session:
        return _pending(session, list(job_ids))


def pending_chunks(store: Store, job_id: str) -> list[PendingChunk]:
    return pending_chunks_of(store, [job_id])[job_id]


def done_chunks(store: Store, job_id: str) -> list[Chunk]:
    """Every chunk row of `job_id`, in order (with or without audio)."""
    with store.read() as session:
        return list(session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)))


def store_chunks(store: Store, job_id: str, owner: str, lease_s: float, rows: Sequence[dict[str, Any]]) -> int:
    """Record stored chunks' audio (`idx` plus `chunk_columns`' keys, one dict a chunk) under our job lease,
    extending it, in one transaction; returns how many were not recorded before (a chunk already recorded
    keeps its first audio).

    Raises:
        JobInterrupted: the job was cancelled or is no longer ours; nothing is recorded.
    """
    now = utcnow()
    with store.session() as session:
        new = record_chunks(session, job_id, rows, now)
        if not compare_and_set(session, update(JOBS).where(
                J.id == job_id, J.status == JobStatus.RUNNING, J.lease_owner == owner)
                .values(lease_expires_at=now + timedelta(seconds=lease_s), chunks_done=J.chunks_done + new)):
            raise JobInterrupted(f"job {job_id} was cancelled or taken over")  # rolls the chunk rows back
    return new


def record_chunks(session: Any, job_id: str, rows: Sequence[dict[str, Any]], now: datetime) -> int:
    """Inside a caller's transaction: set the audio columns of those `rows` whose chunk has none yet (their
    rows locked first, so a former holder still running cannot record the same chunk meanwhile); returns
    how many that was."""
    new = set(session.scalars(select(C.idx).where(
        C.job_id == job_id, C.idx.in_([r["idx"] for r in rows]), C.audio_path.is_(None))
        .with_for_update()))
    params = [{**{f"b_{k}": v for k, v in row.items()}, "b_job": job_id, "b_done": now}
              for row in rows if row["idx"] in new]
    if params:
        columns = [k for k in rows[0] if k != "idx"]
        session.execute(update(CHUNKS).where(C.job_id == bindparam("b_job"), C.idx == bindparam("b_idx"))
                        .values(done_at=bindparam("b_done"), **{k: bindparam(f"b_{k}") for k in columns}), params)
    return len(new)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job ready to finish: where its result goes, what it is, and what making it cost."""

    job_id: str
    audio_path: str
    sample_rate_hz: int
    warnings: list[str]
    figures: JobFigures
    # What this attempt made of chunks kept in memory (`idx` and MADE_COLUMNS): their rows get these figures
    # with the result, in the same transaction; they point at no file.
    chunks: tuple[dict[str, Any], ...] = ()


MADE_COLUMNS = ("samples", "audio_s", "synth_s", "batch_size", "attempt", "dtype", "fp32_redo")


def finish_jobs(store: Store, owner: str, finished: Sequence[Finished],
                publish: Callable[[list[str]], object] = lambda _ids: None) -> list[str]:
    """running -> succeeded for each of `finished` we still hold, with its metrics row, in one transaction
    (a compare-and-set per job); returns the ids that were ours.

    `publish(ids)` (moving those jobs' files into place) runs only for the jobs whose compare-and-set won,
    inside the transaction, before the commit: only the lease holder ever writes what a row points to. If
    it raises, nothing is recorded; a crash between it and the commit leaves the jobs running under our
    lease, and the next attempt publishes the same results again.
    """
    if not finished:
        return []
    now = utcnow()
    by_id = {f.job_id: f for f in finished}
    with store.session() as session:
        won = session.execute(
            update(JOBS).where(J.id.in_(list(by_id)), J.status == JobStatus.RUNNING, J.lease_owner == owner)
            .values(status=JobStatus.SUCCEEDED, finished_at=now, lease_owner=None, lease_expires_at=None, error=None,
                    chunks_done=J.chunks_total)
            .returning(J.id, J.voice, J.chars, J.attempts, J.created_at, J.started_at)).all()
        if not won:
            return []
        session.execute(update(JOBS).where(J.id == bindparam("b_id")).values(
            audio_path=bindparam("b_path"), audio_s=bindparam("b_audio_s"), sample_rate_hz=bindparam("b_rate"),
            warnings=bindparam("b_warnings", type_=JOBS.c.warnings.type)), [
            {"b_id": row.id, "b_path": by_id[row.id].audio_path, "b_audio_s": by_id[row.id].figures.audio_s,
             "b_rate": by_id[row.id].sample_rate_hz, "b_warnings": by_id[row.id].warnings} for row in won])
        chunk_params = [{**{f"b_{k}": v for k, v in chunk.items()}, "b_job": row.id, "b_done": now}
                        for row in won for chunk in by_id[row.id].chunks]
        if chunk_params:
            session.execute(update(CHUNKS).where(C.job_id == bindparam("b_job"), C.idx == bindparam("b_idx"))
                            .values(done_at=bindparam("b_done"), **{k: bindparam(f"b_{k}") for k in MADE_COLUMNS}),
                            chunk_params)
        publish([row.id for row in won])
        session.execute(insert(METRICS), [_metrics_row(row, owner, by_id[row.id].figures, now)
                                                        for row in won])
    return [row.id for row in won]


def _plain(value: Any) -> Any:
    """Enum members as their plain string values, as every driver stores them."""
    return str(value) if isinstance(value, StrEnum) else value


def _metrics_row(job: Any, owner: str, figures: JobFigures, now: datetime) -> dict[str, Any]:
    started = job.started_at or now
    values = {f.name: _plain(getattr(figures, f.name)) for f in fields(figures)}
    return {**values, "job_id": job.id, "worker_id": owner, "voice": job.voice, "chars": job.chars,
            "attempts": job.attempts, "finished_at": now,
            "queue_wait_s": max(0.0, (started - job.created_at).total_seconds()),
            "latency_s": max(0.0, (now - job.created_at).total_seconds())}


def finish(store: Store, job_id: str, owner: str, *, audio_path: str, sample_rate_hz: int, warnings: list[str],
           figures: JobFigures, publish: Callable[[], object] = lambda: None) -> bool:
    """`finish_jobs` of one job: True when it was ours."""
    return bool(finish_jobs(store, owner, [Finished(job_id, audio_path, sample_rate_hz, warnings, figures)],
                            lambda _ids: publish()))


def still_held(store: Store, owner: str, job_ids: Sequence[str]) -> set[str]:
    """Which of `job_ids` are still running under our lease (one read; the others were cancelled or taken)."""
    with store.read() as session:
        return set(session.scalars(select(J.id).where(J.id.in_(list(job_ids)), J.status == JobStatus.RUNNING,
                                                         J.lease_owner == owner)))


def fail(store: Store, job_id: str, owner: str, error: str) -> bool:
    """running -> failed with a readable error, if we hold the job."""
    with store.session() as session:
        return compare_and_set(session, update(JOBS).where(
            Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner).values(
            status=JobStatus.FAILED, error=error[:4000], finished_at=utcnow(), lease_owner=None,
            lease_expires_at=None))


def release(store: Store, job_ids: str | Sequence[str], owner: str, *, counted: bool = True) -> list[str]:
    """running -> queued for the jobs we hold, keeping stored chunks, so the next claim resumes where we
    stopped; returns those put back. `counted=False`: the attempt does not count towards poison (the job
    was put back cleanly: a transient error, or a claim that was never run)."""
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    if not ids:
        return []
    with store.session() as session:
        return list(session.scalars(
            update(JOBS).where(J.id.in_(ids), J.status == JobStatus.RUNNING, J.lease_owner == owner)
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                    attempts=J.attempts if counted else case((J.attempts > 0, J.attempts - 1), else_=0))
            .returning(J.id)))


def record_errors(store: Store, errors: Sequence[tuple[str, int]], owner: str, error: BaseException | str) -> None:
    """Keep why attempts stopped: `error` (type and first line) for each (job id, attempt) of `errors`."""
    if not errors:
        return
    text = error if isinstance(error, str) else f"{type(error).__name__}: {first_line(error)}"
    now = utcnow()
    with store.session() as session:
        session.execute(insert(ERRORS), [{"job_id": job_id, "attempt": attempt, "worker_id": owner,
                                                       "at": now, "error": text[:4000]} for job_id, attempt in errors])


def record_error(store: Store, job_id: str, attempt: int, owner: str, error: BaseException | str) -> None:
    record_errors(store, [(job_id, attempt)], owner, error)


def last_error(store: Store, job_id: str) -> str | None:
    """The most recently recorded attempt error of `job_id`, or None."""
    with store.read() as session:
        return session.scalar(select(JobError.error).where(JobError.job_id == job_id)
                              .order_by(JobError.id.desc()).limit(1))


def add_warning(store: Store, job_id: str, warning: str) -> None:
    """Append `warning` to the job's warnings once (read-modify-write inside one transaction)."""
    with store.session() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is not None and warning not in (job.warnings or []):
            job.warnings = [*(job.warnings or []), warning]


def group_jobs(store: Store, group_id: str) -> list[Job]:
    """All chapter jobs of one book, in reading order."""
    with store.read() as session:
        return list(session.scalars(select(Job).where(Job.group_id == group_id).order_by(Job.group_index, Job.id)))


def set_book_path(store: Store, job_ids: list[str], book_path: str) -> None:
    """Record the book's `.m4b` in each chapter's options."""
    with store.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids)).with_for_update()):
            job.options = {**(job.options or {}), "book_path": book_path}


def claim_of_job(store: Store, job_id: str) -> Claim | None:
    """The job as a `Claim` (read only: for what follows a finish, such as building a book)."""
    with store.read() as session:
        job = session.get(Job, job_id)
        return None if job is None else claim_of(job)


def job_status(store: Store, job_id: str) -> JobStatus | None:
    with store.read() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))
