"""Reading and steering stored jobs: status views, cancellation, waiting for completion."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update

from schemas.db import Store
from schemas.errors import JobNotFound
from schemas.messages import JobView
from schemas.status import AudioFormat, JobStatus
from schemas.tables import Job, utcnow


def _view(job: Job) -> JobView:
    return JobView(
        id=job.id, status=job.status, chunks_done=job.chunks_done, chunks_total=job.chunks_total,
        audio_path=job.audio_path, audio_s=job.audio_s, error=job.error, voice=job.voice,
        format=AudioFormat(job.format), priority=job.priority, title=job.title, warnings=list(job.warnings or []),
        attempts=job.attempts, created_at=_utc_iso(job.created_at),
        finished_at=_utc_iso(job.finished_at) if job.finished_at else None,
        book_path=(job.options or {}).get("book_path"),
    )


def _utc_iso(moment: datetime) -> str:
    """Stored times are naive UTC; say so in the text (`...+00:00`)."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def job_views(store: Store, job_ids: Sequence[str] = (), *, limit: int = 100) -> list[JobView]:
    """Views of `job_ids` in the order given, or of the `limit` newest jobs when none are given.

    Raises:
        JobNotFound: one of `job_ids` is not in the store.
    """
    with store.read() as session:
        if not job_ids:
            jobs = session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)).all()
            return [_view(j) for j in jobs]
        found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(list(job_ids))))}
    missing = [j for j in job_ids if j not in found]
    if missing:
        raise JobNotFound(f"no such job: {', '.join(missing)}")
    return [_view(found[j]) for j in job_ids]


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
