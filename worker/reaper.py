"""Finding jobs that need a new broker message: those whose worker died, and queued jobs that nobody
claimed for a lease period (their message may be lost: a broker restarted without persistence, a
message dropped). Re-publishing is always safe: a claim is a compare-and-set, so the copy that arrives
second is refused. Queued jobs are re-sent whatever the queue's depth: under steady load the queue is
never empty, and a lost message must not starve behind the backlog. Each job is sent again at most once
per lease period, and each pass sends at most `REAP_LIMIT`, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, select, update

from schemas.db import Store
from schemas.status import JobStatus
from schemas.tables import Job, Segment, utcnow

REAP_LIMIT = 50  # jobs one reaper pass re-publishes at most


@dataclass(frozen=True, slots=True)
class Republish:
    """A job to send to the broker again: its id, priority (0-9) and the queue it was submitted to."""

    job_id: str
    priority: int
    queue: str


def orphaned_jobs(store: Store, *, lease_s: float, limit: int = REAP_LIMIT) -> list[Republish]:
    """Published jobs whose worker died: running with an expired lease. Each is returned at most once per
    lease period (its `published_at` is stamped now), so several reapers do not flood the broker."""
    return _stamp(store, [Job.status == JobStatus.RUNNING, Job.lease_expires_at < utcnow(),
                          Job.published_at < utcnow() - timedelta(seconds=lease_s)], limit)


def orphaned_segments(store: Store, *, lease_s: float, limit: int = REAP_LIMIT) -> list[Republish]:
    """Live jobs with a segment whose worker died (running, lease expired) while other workers keep the
    job's own lease alive: a delivery of the job lets an idle worker take the segment over."""
    stale = select(Segment.job_id).where(Segment.status == JobStatus.RUNNING, Segment.lease_expires_at < utcnow())
    return _stamp(store, [Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)), Job.id.in_(stale),
                          Job.published_at < utcnow() - timedelta(seconds=lease_s)], limit)


def stranded_jobs(store: Store, *, older_than_s: float, limit: int = REAP_LIMIT) -> list[Republish]:
    """Queued jobs published more than `older_than_s` ago and not claimed since, oldest first. Each is
    stamped as published now, so it is returned at most once per `older_than_s`."""
    return _stamp(store, [Job.status == JobStatus.QUEUED,
                          Job.published_at < utcnow() - timedelta(seconds=older_than_s)], limit)


def due(store: Store, *, lease_s: float, limit: int = REAP_LIMIT) -> list[Republish]:
    """Everything one reaper pass re-publishes: orphans of dead workers first, then stranded queued jobs,
    at most `limit` in all."""
    orphans = orphaned_jobs(store, lease_s=lease_s, limit=limit)
    orphans += orphaned_segments(store, lease_s=lease_s, limit=limit - len(orphans)) if len(orphans) < limit else []
    if len(orphans) >= limit:
        return orphans
    return orphans + stranded_jobs(store, older_than_s=lease_s, limit=limit - len(orphans))


def _stamp(store: Store, where: list[ColumnElement[bool]], limit: int) -> list[Republish]:
    """Up to `limit` jobs matching `where`, oldest publication first, stamped as published now."""
    with store.session() as session:
        rows = session.execute(select(Job.id, Job.priority, Job.queue).where(*where)
                               .order_by(Job.published_at).limit(limit)).all()
        if rows:
            session.execute(update(Job).where(Job.id.in_([r[0] for r in rows])).values(published_at=utcnow()))
    return [Republish(job_id, priority, queue) for job_id, priority, queue in rows]


def route(store: Store, job_id: str, priority: int) -> Republish | None:
    """`job_id` to re-publish at `priority` to the queue it was submitted to; None if it is not stored."""
    with store.read() as session:
        queue = session.scalar(select(Job.queue).where(Job.id == job_id))
    return None if queue is None else Republish(job_id, priority, queue)
