"""The worker registry in SQL: each worker's row, its heartbeat, and taking back what dead
predecessors of the same worker slot left running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from schemas.broker import MAX_PRIORITY
from schemas.db import Store, compare_and_set
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, Segment, Worker, utcnow
from worker.reaper import Republish


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


def heartbeat(store: Store, worker_id: str, lease_s: float, job_ids: Sequence[str] = (),
              segments: Sequence[tuple[str, int]] = ()) -> set[str]:
    """Mark the worker alive and extend the leases it holds: the jobs `job_ids` (only those: a job this
    process lost track of must be allowed to expire and be taken over) and the segments `segments` (job id,
    index), each of which keeps its job's lease alive too, whoever holds that. Returns the jobs of `job_ids`
    whose lease is no longer ours (cancelled, taken over), in one transaction."""
    now = utcnow()
    until = now + timedelta(seconds=lease_s)
    with store.session() as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now))
        kept: set[str] = set()
        if job_ids:
            kept = set(session.scalars(update(Job).where(
                Job.id.in_(list(job_ids)), Job.status == JobStatus.RUNNING, Job.lease_owner == worker_id)
                .values(lease_expires_at=until).returning(Job.id)))
        for job_id, idx in segments:
            if compare_and_set(session, update(Segment).where(
                    Segment.job_id == job_id, Segment.idx == idx, Segment.status == JobStatus.RUNNING,
                    Segment.lease_owner == worker_id).values(lease_expires_at=until)):
                session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                                .values(lease_expires_at=until))
    return set(job_ids) - kept


def release_previous_incarnations(store: Store, slot: str, worker_id: str, host: str,
                                  lease_s: float) -> list[Republish]:
    """Put back jobs held by earlier, dead processes of this worker slot (crashed and restarted by a
    supervisor), so they resume now instead of when their lease runs out. An earlier process is dead when
    it ran on this host and its pid is gone, or when its heartbeat is older than half a lease. Returns them
    to re-publish at top priority, so they run before new work."""
    now = utcnow()
    with store.session() as session:
        siblings = session.execute(select(Worker.id, Worker.host, Worker.pid, Worker.heartbeat_at).where(
            func.substr(Worker.id, 1, len(slot)) == slot, Worker.id != worker_id)).all()
        dead = [wid for wid, whost, pid, beat in siblings
                if (whost == host and not _pid_alive(pid)) or beat < now - timedelta(seconds=lease_s / 2)]
        if not dead:
            return []
        rows = list(session.execute(
            update(Job).where(Job.status == JobStatus.RUNNING, Job.lease_owner.in_(dead))
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None)
            .returning(Job.id, Job.queue)).all())
        rows += session.execute(  # their segments too: the job is delivered again and a helper resumes them
            update(Segment).where(Segment.status == JobStatus.RUNNING, Segment.lease_owner.in_(dead))
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None)
            .returning(Segment.job_id, select(Job.queue).where(Job.id == Segment.job_id).scalar_subquery())).all()
        session.execute(update(Worker).where(Worker.id.in_(dead)).values(state=WorkerState.STOPPED))
    queues: dict[str, str] = {str(job_id): str(queue) for job_id, queue in rows}  # one delivery a job
    return [Republish(job_id, MAX_PRIORITY, queue) for job_id, queue in queues.items()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_worker_state(store: Store, worker_id: str, state: WorkerState) -> None:
    with store.session() as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(state=state, heartbeat_at=utcnow()))
