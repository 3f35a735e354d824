"""The SQL side of running a job: claim with a lease, store each chunk, finish once.

Every state change is a compare-and-set guarded by the current status and the lease owner, so a
redelivered message, a second worker or a cancel can never make a job finish twice or go backwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update

from schemas.db import Store
from schemas.errors import TtsfleetError
from schemas.status import JobStatus, WorkerState
from schemas.tables import Chunk, Job, JobMetrics, Worker, utcnow


class JobInterrupted(TtsfleetError):
    """Raised when a job we hold was cancelled or its lease was taken over; stop at this chunk boundary."""


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


@dataclass(frozen=True, slots=True)
class PendingChunk:
    idx: int
    text: str


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
        job = session.get_one(Job, job_id, populate_existing=True)
        return Claim(job.id, job.attempts, job.voice, job.format, job.title, job.group_id, job.group_title,
                     job.group_index, dict(job.options or {}), list(job.warnings or []), job.chunks_total)


def pending_chunks(store: Store, job_id: str) -> list[PendingChunk]:
    """Chunks of `job_id` that have no audio yet, in order: where a resumed job starts."""
    with store.session() as session:
        rows = session.execute(
            select(Chunk.idx, Chunk.text)
            .where(Chunk.job_id == job_id, Chunk.audio_path.is_(None)).order_by(Chunk.idx)
        ).all()
    return [PendingChunk(idx, text) for idx, text in rows]


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


def finish(store: Store, job_id: str, owner: str, *, audio_path: str, audio_s: float, sample_rate_hz: int,
           warnings: list[str], metrics: dict[str, Any]) -> bool:
    """running -> succeeded, with the job's metrics row, in one transaction. False: not ours any more."""
    now = utcnow()
    with store.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return False
        done = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == owner).values(
                status=JobStatus.SUCCEEDED, finished_at=now, audio_path=audio_path, audio_s=audio_s,
                sample_rate_hz=sample_rate_hz, lease_owner=None, lease_expires_at=None, error=None,
                warnings=warnings,
            ).execution_options(synchronize_session=False)
        ).rowcount == 1  # type: ignore[attr-defined]
        if not done:
            return False
        started = job.started_at or now
        session.execute(insert(JobMetrics), [{
            "job_id": job_id, "worker_id": owner, "voice": job.voice, "chars": job.chars,
            "chunks": job.chunks_total, "attempts": job.attempts, "finished_at": now,
            "queue_wait_s": max(0.0, (started - job.created_at).total_seconds()),
            "latency_s": max(0.0, (now - job.created_at).total_seconds()), **metrics,
        }])
    return True


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


def job_status(store: Store, job_id: str) -> JobStatus | None:
    with store.session() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def register_worker(store: Store, row: dict[str, Any]) -> None:
    """Insert or refresh this worker's registry row (state ready, heartbeat now)."""
    now = utcnow()
    with store.session() as session:
        existing = session.get(Worker, row["id"])
        values = {**row, "state": WorkerState.READY, "heartbeat_at": now}
        if existing is None:
            session.add(Worker(started_at=now, **values))
        else:
            for key, value in values.items():
                setattr(existing, key, value)
            existing.started_at = now


def heartbeat(store: Store, worker_id: str, lease_s: float, job_id: str | None) -> None:
    """Mark the worker alive and extend the lease of `job_id`, the job it is running right now (only that
    one: a job this process lost track of must be allowed to expire and be taken over)."""
    now = utcnow()
    with store.session() as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now))
        if job_id is not None:
            session.execute(
                update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == worker_id)
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
            )


def release_previous_incarnations(store: Store, slot: str, worker_id: str, host: str, lease_s: float) -> list[str]:
    """Put back jobs held by earlier, dead processes of this worker slot (crashed and restarted by a
    supervisor), so they resume now instead of when their lease runs out. An earlier process is dead when
    it ran on this host and its pid is gone, or when its heartbeat is older than half a lease. Returns ids."""
    now = utcnow()
    with store.session() as session:
        siblings = session.execute(select(Worker.id, Worker.host, Worker.pid, Worker.heartbeat_at).where(
            func.substr(Worker.id, 1, len(slot)) == slot, Worker.id != worker_id)).all()
        dead = [wid for wid, whost, pid, beat in siblings
                if (whost == host and not _pid_alive(pid)) or beat < now - timedelta(seconds=lease_s / 2)]
        if not dead:
            return []
        ids = list(session.scalars(
            update(Job).where(Job.status == JobStatus.RUNNING, Job.lease_owner.in_(dead))
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None).returning(Job.id)))
        session.execute(update(Worker).where(Worker.id.in_(dead)).values(state=WorkerState.STOPPED))
    return ids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned_jobs(store: Store, *, lease_s: float) -> list[tuple[str, int]]:
    """Published jobs whose worker died: running with an expired lease. Each is returned at most once per
    lease period (its `published_at` is stamped now), so several reapers do not flood the broker.
    Returns (job id, priority)."""
    now = utcnow()
    with store.session() as session:
        rows = session.execute(select(Job.id, Job.priority).where(
            Job.status == JobStatus.RUNNING, Job.lease_expires_at < now,
            Job.published_at < now - timedelta(seconds=lease_s),
        ).limit(100)).all()
        if rows:
            session.execute(update(Job).where(Job.id.in_([r[0] for r in rows])).values(published_at=now))
    return [(r[0], r[1]) for r in rows]


def stranded_jobs(store: Store, *, older_than_s: float) -> list[tuple[str, int]]:
    """Queued jobs published more than `older_than_s` ago. Call it only when the broker's queue is empty:
    then their messages are gone (a broker restarted without persistence) and they need new ones.
    Each is stamped as published now, so it is returned at most once per `older_than_s`.
    Returns (job id, priority), oldest first, at most 100."""
    now = utcnow()
    with store.session() as session:
        rows = session.execute(select(Job.id, Job.priority).where(
            Job.status == JobStatus.QUEUED, Job.published_at < now - timedelta(seconds=older_than_s),
        ).order_by(Job.published_at).limit(100)).all()
        if rows:
            session.execute(update(Job).where(Job.id.in_([r[0] for r in rows])).values(published_at=now))
    return [(r[0], r[1]) for r in rows]


def set_worker_state(store: Store, worker_id: str, state: WorkerState) -> None:
    with store.session() as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(state=state, heartbeat_at=utcnow()))
