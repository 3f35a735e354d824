"""Reading and steering stored jobs: status views (filtered and paged), cancellation, retry, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, delete, select, update

from producer.naming import display_title
from producer.results import lease_is_free
from schemas.db import Store, changed_rows
from schemas.errors import InvalidInput, JobNotFound
from schemas.job_options import JobOptions
from schemas.messages import AttemptError, JobView
from schemas.status import AudioFormat, JobStatus
from schemas.tables import Chunk, Job, JobError, Segment, utcnow

MAX_PAGE = 1000  # jobs one `status` call returns at most


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which stored jobs to list, newest first: by status, created at or after `since` (naive UTC), then
    `limit` of them after skipping `offset` (paging)."""

    status: JobStatus | None = None
    since: datetime | None = None
    limit: int = 100
    offset: int = 0


def _view(job: Job, errors: Sequence[JobError] = (), segments: Sequence[Segment] = ()) -> JobView:
    return JobView(
        id=job.id, status=job.status, chunks_done=job.chunks_done, chunks_total=job.chunks_total,
        audio_path=job.audio_path, audio_s=job.audio_s, error=job.error, voice=job.voice,
        format=AudioFormat(job.format), priority=job.priority,
        title=display_title(job.title, job.source, job.text), warnings=list(job.warnings or []),
        attempts=job.attempts, created_at=_utc_iso(job.created_at),
        finished_at=_utc_iso(job.finished_at) if job.finished_at else None,
        book_path=JobOptions.from_stored(job.options).book_path,
        book_id=job.group_id,
        audio_purged_at=_utc_iso(job.audio_purged_at) if job.audio_purged_at else None,
        attempt_errors=[AttemptError(attempt=e.attempt, worker_id=e.worker_id, at=_utc_iso(e.at), error=e.error)
                        for e in errors],
        segments_total=len(segments), segments_done=sum(1 for s in segments if s.status == JobStatus.SUCCEEDED),
        segment_holders=[str(s.lease_owner) for s in segments if s.status == JobStatus.RUNNING and s.lease_owner],
    )


def _utc_iso(moment: datetime) -> str:
    """Stored times are naive UTC; say so in the text (`...+00:00`)."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def job_views(store: Store, job_ids: Sequence[str] = (), *, where: JobFilter | None = None) -> list[JobView]:
    """Views of `job_ids` in the order given, or of the jobs `where` selects (default: the 100 newest).

    Raises:
        JobNotFound: one of `job_ids` is not in the store.
        InvalidInput: a limit outside 1..MAX_PAGE or a negative offset.
    """
    with store.read() as session:
        if not job_ids:
            jobs = session.scalars(_select(where or JobFilter())).all()
        else:
            found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(list(job_ids))))}
            missing = [j for j in job_ids if j not in found]
            if missing:
                raise JobNotFound(f"no such job: {', '.join(missing)}")
            jobs = [found[j] for j in job_ids]
        errors: dict[str, list[JobError]] = {}
        for error in session.scalars(select(JobError).where(JobError.job_id.in_([j.id for j in jobs]))
                                     .order_by(JobError.id)):
            errors.setdefault(error.job_id, []).append(error)
        parts: dict[str, list[Segment]] = {}
        for seg in session.scalars(select(Segment).where(Segment.job_id.in_([j.id for j in jobs]))
                                   .order_by(Segment.idx)):
            parts.setdefault(seg.job_id, []).append(seg)
    return [_view(j, errors.get(j.id, ()), parts.get(j.id, ())) for j in jobs]


def _select(where: JobFilter) -> Select[Job]:
    if not 1 <= where.limit <= MAX_PAGE:
        raise InvalidInput(f"--limit must be 1..{MAX_PAGE}, got {where.limit}")
    if where.offset < 0:
        raise InvalidInput(f"--offset must be 0 or more, got {where.offset}")
    query = select(Job).order_by(Job.created_at.desc(), Job.id)
    if where.status is not None:
        query = query.where(Job.status == where.status)
    if where.since is not None:
        query = query.where(Job.created_at >= where.since)
    return query.limit(where.limit).offset(where.offset)


# A chunk's stored audio: cleared when that audio is gone, so the chunk is synthesized again.
CHUNK_AUDIO_RESET = {"audio_path": None, "samples": None, "audio_s": None, "synth_s": None, "batch_size": None,
                     "attempt": None, "dtype": None, "fp32_redo": False, "done_at": None}


def retry_jobs(store: Store, job_ids: Sequence[str]) -> list[str]:
    """Put failed jobs back in the queue, attempts counted afresh; their error history stays in
    `attempt_errors`. A failed job's chunk audio was deleted when it failed (the worker keeps none for a job
    without a result), so its chunks are reset and synthesized again: rows pointing at deleted files made
    every retry fail. Returns the ids to publish.

    Raises:
        JobNotFound: one of `job_ids` is not in the store.
        InvalidInput: one of them is not failed, or `gc` is deleting its files right now; nothing is changed.
    """
    views = job_views(store, job_ids)
    not_failed = [f"{v.id} is {v.status.value}" for v in views if v.status != JobStatus.FAILED]
    if not_failed:
        raise InvalidInput(f"only failed jobs can be retried: {', '.join(not_failed)}")
    ids = list(job_ids)
    with store.session() as session:
        changed = changed_rows(session, update(Job).where(
            Job.id.in_(ids), Job.status == JobStatus.FAILED, lease_is_free(utcnow())).values(
            status=JobStatus.QUEUED, attempts=0, error=None, finished_at=None, started_at=None, lease_owner=None,
            lease_expires_at=None, worker_id=None, audio_path=None, audio_s=None, chunks_done=0,
            audio_purged_at=None, published_at=utcnow()))
        if changed != len(set(ids)):
            raise InvalidInput("a job changed state or is being cleaned up by `gc`; nothing was retried; try again")
        session.execute(update(Chunk).where(Chunk.job_id.in_(ids)).values(**CHUNK_AUDIO_RESET))
        session.execute(delete(Segment).where(Segment.job_id.in_(ids)))  # cut afresh when the job is leased
    return ids


def cancel_jobs(store: Store, job_ids: Sequence[str]) -> list[JobView]:
    """Cancel queued or running jobs; a running job stops at its next chunk boundary.
    Finished jobs are left as they are.

    Raises:
        JobNotFound: one of `job_ids` is not in the store.
    """
    job_views(store, job_ids)  # refuse unknown ids before changing anything
    with store.session() as session:
        session.execute(
            update(Job).where(Job.id.in_(list(job_ids)), Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .values(status=JobStatus.CANCELLED, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
        )
    return job_views(store, job_ids)


def wait_for(store: Store, job_ids: Sequence[str], *, timeout_s: float | None,
             on_poll: Callable[[list[JobView]], None] | None = None, poll_s: float = 0.5) -> tuple[list[JobView], bool]:
    """Poll until every job is terminal or `timeout_s` passes; returns (views, timed_out)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        views = job_views(store, job_ids)
        if on_poll is not None:
            on_poll(views)
        if all(v.status.is_terminal for v in views):
            return views, False
        if deadline is not None and time.monotonic() >= deadline:
            return views, True
        time.sleep(poll_s)
