"""When a job should finish: the backlog ahead of it over the fleet's measured throughput.

Throughput is measured, never assumed: characters per synthesis second over the most recent finished jobs
(`job_metrics`), times the workers alive now. The backlog is the characters still to speak in every queued
or running job at a higher priority, or at the same priority and submitted no later, plus the job's own.
A job's remaining characters are estimated as `chars * (1 - chunks_done / chunks_total)`: one read of the
jobs table, no scan of chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Float, and_, cast, func, or_, select

from schemas.db import Store
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, JobMetrics, Worker, utcnow

RECENT_JOBS = 200  # finished jobs whose throughput is averaged
ALIVE_AFTER_S = 60.0  # a worker whose heartbeat is older is not counted


@dataclass(frozen=True, slots=True)
class Throughput:
    """The fleet's measured speed: characters per synthesis second of one worker, and workers alive."""

    chars_per_s_per_worker: float | None
    workers: int

    @property
    def chars_per_s(self) -> float | None:
        if self.chars_per_s_per_worker is None:
            return None
        return self.chars_per_s_per_worker * max(self.workers, 1)


@dataclass(frozen=True, slots=True)
class Eta:
    """A job's expected finish: seconds from now and the UTC moment, or None when nothing is measured yet
    (or the job has ended: then `eta_s` is 0)."""

    eta_s: float | None
    eta_at: datetime | None
    backlog_chars: int


def fleet_throughput(store: Store, now: datetime | None = None) -> Throughput:
    """Characters per synthesis second over the newest RECENT_JOBS finished jobs, and the live workers."""
    now = now or utcnow()
    recent = select(JobMetrics.chars, JobMetrics.synth_s).order_by(JobMetrics.finished_at.desc()) \
        .limit(RECENT_JOBS).subquery()
    with store.read() as session:
        chars, synth_s = session.execute(select(func.sum(recent.c.chars), func.sum(recent.c.synth_s))).one()
        workers = session.scalar(select(func.count()).select_from(Worker).where(
            Worker.state == WorkerState.READY, Worker.heartbeat_at >= now - timedelta(seconds=ALIVE_AFTER_S)))
    rate = float(chars) / float(synth_s) if chars and synth_s else None
    return Throughput(chars_per_s_per_worker=rate, workers=int(workers or 0))


def job_eta(store: Store, job_id: str, throughput: Throughput | None = None, now: datetime | None = None) -> Eta:
    """The expected finish of `job_id` (which must exist; an unknown id gives no estimate)."""
    now = now or utcnow()
    with store.read() as session:
        job = session.execute(select(Job.status, Job.priority, Job.created_at).where(Job.id == job_id)).first()
        if job is None:
            return Eta(None, None, 0)
        if JobStatus(job.status).is_terminal:
            return Eta(0.0, None, 0)
        remaining = Job.chars * (1.0 - cast(Job.chunks_done, Float)
                                 / func.nullif(Job.chunks_total, 0))
        ahead = or_(Job.priority > job.priority,
                    and_(Job.priority == job.priority, Job.created_at <= job.created_at))
        backlog = session.scalar(select(func.coalesce(func.sum(remaining), 0.0)).where(
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]), ahead))
    rate = (throughput or fleet_throughput(store, now)).chars_per_s
    backlog_chars = round(float(backlog or 0.0))
    if rate is None:
        return Eta(None, None, backlog_chars)
    eta_s = backlog_chars / rate
    return Eta(round(eta_s, 1), (now + timedelta(seconds=eta_s)).replace(tzinfo=UTC), backlog_chars)
