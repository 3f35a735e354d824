"""Segment leases: the parts of a long job that idle workers lease on their own.

A segment row has the same lease columns as a job (status, lease owner, lease expiry, attempts) and the
same compare-and-set rules: queued, expired or already ours is claimable, everything else is refused.
A chunk stored under a segment lease is guarded by that lease and by the job being alive (queued or
running), so a cancel stops every helper at its next chunk. The worker whose chunk completes the job
(the `chunks_done` counter reaching `chunks_total`, read back from the same guarded `UPDATE`) is the one
that takes the job's lease and assembles; the job's own `finish` compare-and-set keeps it exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from schemas.db import Store, compare_and_set
from schemas.errors import JobInterrupted
from schemas.scheduling import CANDIDATES_WINDOW, CHARS_PER_AUDIO_S, Candidate, choose, plan_segments
from schemas.status import BreakKind, JobStatus
from schemas.tables import Chunk, Job, JobMetrics, Segment, utcnow
from worker.lease import Claim, PendingChunk, claim_of, record_chunks
from worker.reaper import Republish

ALIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class SegmentClaim:
    """A segment this worker now holds: chunks `first_chunk` to `end_chunk` (exclusive) of `job_id`."""

    job_id: str
    idx: int
    first_chunk: int
    end_chunk: int
    attempt: int
    voice: str


def ensure_segments(store: Store, job_id: str, segment_chars: int) -> int:
    """Cut `job_id` into segments once (by its lease holder); how many it has (0: a short job, one lease).
    A second caller (a stalled former holder) finds the rows there and changes nothing."""
    with store.read() as session:
        count = session.scalar(select(func.count()).select_from(Segment).where(Segment.job_id == job_id)) or 0
        if count:
            return count
        chars = list(session.scalars(select(Chunk.chars).where(Chunk.job_id == job_id).order_by(Chunk.idx)))
    spans = plan_segments(chars, segment_chars)
    if not spans:
        return 0
    try:
        with store.session() as session:
            session.execute(insert(Segment), [
                {"job_id": job_id, "idx": i, "first_chunk": first, "end_chunk": end, "chars": n,
                 "status": JobStatus.QUEUED, "attempts": 0} for i, (first, end, n) in enumerate(spans)])
    except IntegrityError:
        pass  # cut concurrently: the same spans are there
    return len(spans)


def _claimable(owner: str, now: Any) -> Any:
    return or_(Segment.status == JobStatus.QUEUED,
               and_(Segment.status == JobStatus.RUNNING, Segment.lease_owner == owner),
               and_(Segment.status == JobStatus.RUNNING, Segment.lease_expires_at < now))


def candidates(store: Store, owner: str, job_id: str | None = None) -> list[Candidate]:
    """Leasable segments of live jobs (of `job_id` only, when given), highest priority first."""
    now = utcnow()
    where = [_claimable(owner, now), Job.status.in_(ALIVE)] + ([Segment.job_id == job_id] if job_id else [])
    with store.read() as session:
        rows = session.execute(
            select(Segment.job_id, Segment.idx, Segment.chars, Job.priority, Job.created_at)
            .join(Job, Job.id == Segment.job_id).where(*where)
            .order_by(Job.priority.desc(), Job.created_at, Segment.idx).limit(CANDIDATES_WINDOW)).all()
    left: dict[str, float] = {}
    for row in rows:
        left[row.job_id] = left.get(row.job_id, 0.0) + row.chars / CHARS_PER_AUDIO_S
    return [Candidate(f"{r.job_id}:{r.idx}", r.priority, r.created_at.timestamp() + r.idx * 1e-6,
                      r.chars / CHARS_PER_AUDIO_S, left[r.job_id]) for r in rows]


def lease_segment(store: Store, owner: str, lease_s: float, *, job_id: str | None = None,
                  my_speed: float | None = None, typical_speed: float | None = None) -> SegmentClaim | None:
    """Take the free segment `schemas.scheduling.choose` picks for this card (of `job_id` only, when given);
    None when no segment is free. A lost race moves on to the next choice."""
    pool = candidates(store, owner, job_id)
    while (pick := choose(pool, my_speed, typical_speed)) is not None:
        pool.remove(pick)
        seg_job, seg_idx = pick.key.rsplit(":", 1)
        held = _take(store, seg_job, int(seg_idx), owner, lease_s)
        if held is not None:
            return held
    return None


def _take(store: Store, job_id: str, idx: int, owner: str, lease_s: float) -> SegmentClaim | None:
    now = utcnow()
    reentry = and_(Segment.status == JobStatus.RUNNING, Segment.lease_owner == owner)
    with store.session() as session:
        updated = compare_and_set(session, update(Segment).where(
            Segment.job_id == job_id, Segment.idx == idx, _claimable(owner, now)).values(
            status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=case((reentry, Segment.attempts), else_=Segment.attempts + 1), worker_id=owner,
            started_at=func.coalesce(Segment.started_at, now)))
        if not updated:
            return None
        seg = session.get_one(Segment, (job_id, idx), populate_existing=True)
        voice = session.scalar(select(Job.voice).where(Job.id == job_id)) or ""
        return SegmentClaim(job_id, idx, seg.first_chunk, seg.end_chunk, seg.attempts, voice)


def pending_chunks(store: Store, seg: SegmentClaim) -> list[PendingChunk]:
    """The segment's chunks without audio, in order: where a resumed segment starts."""
    with store.read() as session:
        rows = session.execute(select(Chunk.idx, Chunk.text, Chunk.voice, Chunk.speed, Chunk.break_after).where(
            Chunk.job_id == seg.job_id, Chunk.idx >= seg.first_chunk, Chunk.idx < seg.end_chunk,
            Chunk.audio_path.is_(None)).order_by(Chunk.idx)).all()
    return [PendingChunk(idx, text, voice, speed, BreakKind(brk)) for idx, text, voice, speed, brk in rows]


def store_chunks(store: Store, seg: SegmentClaim, owner: str, lease_s: float,
                 rows: Sequence[dict[str, Any]]) -> tuple[bool, int, int]:
    """Record stored chunks' audio (`lease.store_chunks`' rows) under our segment lease, extending it and the
    job's lease, in one transaction. Returns (completed, chunks done, chunks total); completed is True when
    these chunks included the job's last missing ones: the caller assembles (only one worker can see that,
    as the job's counter is raised under its row lock).

    Raises:
        JobInterrupted: the job was cancelled or ended, or the segment is no longer ours; nothing recorded.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease_s)
    with store.session() as session:
        new = record_chunks(session, seg.job_id, rows, now)
        held = compare_and_set(session, update(Segment).where(
            Segment.job_id == seg.job_id, Segment.idx == seg.idx, Segment.status == JobStatus.RUNNING,
            Segment.lease_owner == owner).values(lease_expires_at=until))
        counts = session.execute(
            update(Job).where(Job.id == seg.job_id, Job.status.in_(ALIVE))
            .values(chunks_done=Job.chunks_done + new,
                    lease_expires_at=case((Job.status == JobStatus.RUNNING, until), else_=None))
            .returning(Job.chunks_done, Job.chunks_total)).first()
        if not held or counts is None:  # leaving the block with an exception rolls it all back
            raise JobInterrupted(f"job {seg.job_id} was cancelled, or its segment {seg.idx} was taken over")
    return new > 0 and counts[0] >= counts[1], counts[0], counts[1]


def still_held(store: Store, owner: str, held: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which (job id, segment idx) of `held` are still running under our lease with their job alive (one
    read; the others were cancelled or taken over)."""
    with store.read() as session:
        rows = session.execute(select(Segment.job_id, Segment.idx).join(Job, Job.id == Segment.job_id).where(
            Segment.job_id.in_({job_id for job_id, _ in held}), Segment.status == JobStatus.RUNNING,
            Segment.lease_owner == owner, Job.status.in_(ALIVE)))
        return {(job_id, idx) for job_id, idx in rows}


def finish_segment(store: Store, seg: SegmentClaim, owner: str) -> bool:
    """running -> succeeded for our segment (all its chunks stored)."""
    with store.session() as session:
        return compare_and_set(session, update(Segment).where(
            Segment.job_id == seg.job_id, Segment.idx == seg.idx, Segment.status == JobStatus.RUNNING,
            Segment.lease_owner == owner).values(status=JobStatus.SUCCEEDED, lease_owner=None, lease_expires_at=None,
                                                 finished_at=utcnow()))


def release_held(store: Store, owner: str) -> None:
    """Put back (queued, chunks kept) every segment `owner` holds, so another worker resumes it now."""
    with store.session() as session:
        session.execute(update(Segment).where(Segment.status == JobStatus.RUNNING, Segment.lease_owner == owner)
                        .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None))


def take_for_assembly(store: Store, job_id: str, owner: str, lease_s: float) -> Claim | None:
    """The job's lease, for the worker whose chunk completed it (only one can be: `save_chunk`), or for a
    claim that resumes a job whose assembler died. None: the job was cancelled or ended meanwhile."""
    now = utcnow()
    with store.session() as session:
        taken = compare_and_set(session, update(Job).where(
            Job.id == job_id, Job.status.in_(ALIVE), Job.chunks_done >= Job.chunks_total).values(
            status=JobStatus.RUNNING, lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
            worker_id=owner, started_at=func.coalesce(Job.started_at, now)))
        return claim_of(session.get_one(Job, job_id, populate_existing=True)) if taken else None


def fail_job(store: Store, job_id: str, error: str) -> bool:
    """A live job -> failed, whoever holds its lease (a segment that cannot be made fails its job)."""
    with store.session() as session:
        return compare_and_set(session, update(Job).where(Job.id == job_id, Job.status.in_(ALIVE)).values(
            status=JobStatus.FAILED, error=error[:4000], finished_at=utcnow(), lease_owner=None,
            lease_expires_at=None))


def help_wanted(store: Store, job_id: str) -> Republish | None:
    """A delivery of `job_id` at its own priority that asks an idle worker to lease one of its free
    segments; None when none is free."""
    now = utcnow()
    with store.read() as session:
        row = session.execute(select(Job.priority, Job.queue).where(Job.id == job_id, Job.status.in_(ALIVE))).first()
        free = session.scalar(select(func.count()).select_from(Segment).where(
            Segment.job_id == job_id, or_(Segment.status == JobStatus.QUEUED,
                                          and_(Segment.status == JobStatus.RUNNING, Segment.lease_expires_at < now))))
    return Republish(job_id, row[0], row[1]) if row is not None and free else None


def free_count(store: Store, job_id: str) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(Segment).where(
            Segment.job_id == job_id, Segment.status == JobStatus.QUEUED)) or 0


def measured_speeds(store: Store, voice: str) -> dict[tuple[str, str], float]:
    """Audio seconds made per second of synthesis, per (card, dtype), from finished jobs of `voice`."""
    with store.read() as session:
        rows = session.execute(select(JobMetrics.card, JobMetrics.dtype, func.sum(JobMetrics.audio_s),
                                      func.sum(JobMetrics.synth_s))
                               .where(JobMetrics.voice == voice).group_by(JobMetrics.card, JobMetrics.dtype)).all()
    return {(card, dtype): audio / synth for card, dtype, audio, synth in rows if audio and synth}
