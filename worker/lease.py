"""A job's lease in SQL: claim it, store each chunk, finish, fail or release it once.

Every state change is a compare-and-set guarded by the current status and the lease owner, so a
redelivered message, a second worker or a cancel can never make a job finish twice or go backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update

from schemas.db import Store
from schemas.errors import JobInterrupted, first_line
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, JobError, JobMetrics, utcnow
from worker.events import JobFigures


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
    options: dict[str, Any]
    warnings: list[str]
    chunks_total: int
    output_name: str | None = None  # the audio's path under the output folder; None: named by id


@dataclass(frozen=True, slots=True)
class PendingChunk:
    idx: int
    text: str
    voice: str | None = None  # None: the job's voice
    speed: float | None = None  # a factor on the job's speed (an SSML prosody rate span); None: 1

    def speed_with(self, job_speed: float) -> float:
        """The speed this chunk is said at: its own factor times the job's."""
        return job_speed * (self.speed if self.speed is not None else 1.0)


def claim(store: Store, job_id: str, owner: str, lease_s: float) -> Claim | None:
    """Take `job_id` if it is queued, its lease expired, or we already hold it. None: someone else has it,
    or it is finished or cancelled (the message is then simply acknowledged)."""
    now = utcnow()
    reentry = and_(Job.status == JobStatus.RUNNING, Job.lease_owner == owner)
    claimable = or_(Job.status == JobStatus.QUEUED, reentry,
                    and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now))
    with store.session() as session:
        updated = session.execute(
            update(Job).where(Job.id == job_id, claimable).values(
                status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                # the holder coming back (a Celery retry) is the same attempt, not a new one
                attempts=case((reentry, Job.attempts), else_=Job.attempts + 1),
                started_at=func.coalesce(Job.started_at, now), worker_id=owner,
            ).execution_options(synchronize_session=False)
        )
        if updated.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return claim_of(session.get_one(Job, job_id, populate_existing=True))


def claim_queued(store: Store, job_ids: Sequence[str], owner: str, lease_s: float) -> list[Claim]:
    """Take every job of `job_ids` that is still queued, in one transaction (one compare-and-set per row:
    a job another worker took first is left alone). Returns the claims in the order of `job_ids`."""
    if not job_ids:
        return []
    now = utcnow()
    with store.session() as session:
        taken = list(session.scalars(
            update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED).values(
                status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now), worker_id=owner,
            ).returning(Job.id).execution_options(synchronize_session=False)
        ))
        held = {job.id: claim_of(job) for job in session.scalars(select(Job).where(Job.id.in_(taken)))}
    return [held[job_id] for job_id in job_ids if job_id in held]


def claim_of(job: Job) -> Claim:
    """The `Claim` a held job row stands for."""
    return Claim(job.id, job.attempts, job.voice, job.format, job.title, job.group_id, job.group_title,
                 job.group_index, dict(job.options or {}), list(job.warnings or []), job.chunks_total,
                 job.output_name)


def pending_chunks(store: Store, job_id: str) -> list[PendingChunk]:
    """Chunks of `job_id` that have no audio yet, in order: where a resumed job starts."""
    return pending_chunks_of(store, [job_id])[job_id]


def pending_chunks_of(store: Store, job_ids: Sequence[str]) -> dict[str, list[PendingChunk]]:
    """`pending_chunks` of several jobs in one query: job id -> its chunks without audio, in order."""
    pending: dict[str, list[PendingChunk]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return pending
    with store.session() as session:
        rows = session.execute(
            select(Chunk.job_id, Chunk.idx, Chunk.text, Chunk.voice, Chunk.speed)
            .where(Chunk.job_id.in_(job_ids), Chunk.audio_path.is_(None)).order_by(Chunk.job_id, Chunk.idx)
        ).all()
    for job_id, idx, text, voice, speed in rows:
        pending[job_id].append(PendingChunk(idx, text, voice, speed))
    return pending


def done_chunks(store: Store, job_id: str) -> list[Chunk]:
    with store.session() as session:
        return list(session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)))


def save_chunk(store: Store, job_id: str, owner: str, idx: int, lease_s: float, **audio: Any) -> None:
    """Record chunk `idx`'s audio (`audio_path`, `samples`, `audio_s`, ...) and extend our lease.

    Raises:
        JobInterrupted: the job was cancelled or is no longer ours; nothing is recorded.
    """
    now = utcnow()
    with store.session() as session:
        first_time = session.execute(
            update(Chunk).where(Chunk.job_id == job_id, Chunk.idx == idx, Chunk.audio_path.is_(None))
            .values(done_at=now, **audio).execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]
        held = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=lease_s),
                    chunks_done=Job.chunks_done + (1 if first_time else 0))
            .execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]
        if not held:  # leaving the block with an exception rolls the chunk update back too
            raise JobInterrupted(f"job {job_id} was cancelled or taken over")


def finish(store: Store, job_id: str, owner: str, *, audio_path: str, sample_rate_hz: int, warnings: list[str],
           figures: JobFigures, publish: Callable[[], object] = lambda: None) -> bool:
    """running -> succeeded, with the job's metrics row (`figures` plus what the row knows: voice, text
    length, attempts, queue wait and latency), in one transaction. False: not ours any more.

    `publish` (moving the job's files into place) runs only when the compare-and-set has won, inside the
    transaction, before the commit: only the lease holder ever writes what the row points to. If it
    raises, nothing is recorded; a crash between it and the commit leaves the job running under our
    lease, and the next attempt publishes the same result again.
    """
    now = utcnow()
    with store.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return False
        done = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner).values(
                status=JobStatus.SUCCEEDED, finished_at=now, audio_path=audio_path, audio_s=figures.audio_s,
                sample_rate_hz=sample_rate_hz, lease_owner=None, lease_expires_at=None, error=None,
                warnings=warnings,
            ).execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]
        if not done:
            return False
        publish()
        started = job.started_at or now
        session.execute(insert(JobMetrics), [{
            **_plain(asdict(figures)), "job_id": job_id, "worker_id": owner, "voice": job.voice, "chars": job.chars,
            "attempts": job.attempts, "finished_at": now,
            "queue_wait_s": max(0.0, (started - job.created_at).total_seconds()),
            "latency_s": max(0.0, (now - job.created_at).total_seconds()),
        }])
    return True


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Enum members as their plain string values, as every driver stores them."""
    return {key: str(value) if isinstance(value, StrEnum) else value for key, value in values.items()}


def fail(store: Store, job_id: str, owner: str, error: str) -> bool:
    """running -> failed with a readable error, if we hold the job."""
    guard = [Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner]
    with store.session() as session:
        return session.execute(
            update(Job).where(*guard).values(status=JobStatus.FAILED, error=error[:4000], finished_at=utcnow(),
                                             lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]


def release(store: Store, job_id: str, owner: str) -> bool:
    """running -> queued, keeping stored chunks, so the next claim resumes where we stopped."""
    with store.session() as session:
        return session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner)
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]


def record_error(store: Store, job_id: str, attempt: int, owner: str, error: BaseException | str) -> None:
    """Keep why attempt `attempt` at `job_id` stopped (type and first line of the error)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {first_line(error)}"
    with store.session() as session:
        session.add(JobError(job_id=job_id, attempt=attempt, worker_id=owner, at=utcnow(), error=text[:4000]))


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
    with store.session() as session:
        return list(session.scalars(select(Job).where(Job.group_id == group_id).order_by(Job.group_index, Job.id)))


def set_options(store: Store, job_ids: list[str], **values: Any) -> None:
    with store.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids)).with_for_update()):
            job.options = {**(job.options or {}), **values}


def job_options(store: Store, job_id: str) -> dict[str, Any]:
    with store.read() as session:
        return dict(session.scalar(select(Job.options).where(Job.id == job_id)) or {})


def claim_of_job(store: Store, job_id: str) -> Claim | None:
    """The job as a `Claim` (read only: for what follows a finish, such as building a book)."""
    with store.read() as session:
        job = session.get(Job, job_id)
        return None if job is None else claim_of(job)


def job_status(store: Store, job_id: str) -> JobStatus | None:
    with store.session() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))
