"""A unit of work: the jobs (or the one segment of a long job) a worker runs through one engine call.

Built by one claim step (`claim_unit`: the jobs a message carries, plus companions, queued short jobs of
the same voice taken along to fill the card's batches or the CPU's lanes), filtered as jobs end, run by
`worker.pipeline.run_unit`. A `Member` is one job of the unit with what this attempt made of it; a short
job's chunk audio stays in memory until its file is made (it is simply redone after a crash), a long
job's (and a segment's) is stored per engine batch, so a crash resumes at the first missing chunk.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, select

from schemas.backlog import live_workers
from schemas.scheduling import SHORT_JOB_CHUNKS
from schemas.status import JobStatus
from schemas.tables import Chunk, Job
from worker import lease
from worker.context import JobContext
from worker.outputs import JobFiles
from worker.segments import SegmentClaim

if TYPE_CHECKING:
    from worker.synthesis import ChunkAudio

log = logging.getLogger("ttsfleet.unit")

MAX_CANDIDATES = 512  # queued jobs read to find companions and this worker's share of them


@dataclass
class Member:
    """One job of a unit: its claim, its chunks still to make, and what this attempt made of them."""

    held: lease.Claim
    pending: list[lease.PendingChunk]
    files: JobFiles
    segment: SegmentClaim | None = None  # a long job's segment, leased on its own
    companion: bool = False  # claimed from SQL besides the message's own jobs: sent again when put back
    made: dict[int, ChunkAudio] = field(default_factory=dict)  # made and not stored (memory: until finish)
    done: int = 0  # chunks of `pending` made (durable: stored) this attempt
    batches: float = 0.0  # engine batches its chunks were in (a shared batch counts in part)
    dropped: set[str] = field(default_factory=set)  # characters the voice could not say
    lost: str | None = None  # why it is no longer ours (cancelled, taken over)
    ended: bool = False  # finished, failed or given up here already
    completed: bool = False  # a segment whose stored chunks completed its job: its worker assembles

    @property
    def job_id(self) -> str:
        return self.held.job_id

    @property
    def durable(self) -> bool:
        """True when chunk audio is stored as it is made: a long job, or a segment of one."""
        return self.segment is not None or self.held.chunks_total > SHORT_JOB_CHUNKS

    @property
    def ready(self) -> bool:
        """Every pending chunk made (and, when durable, stored): the job can be finished."""
        return (not self.ended and self.lost is None and self.done == len(self.pending)
                and not (self.durable and self.made))

    def take(self, chunk: ChunkAudio) -> None:
        """Keep a chunk this attempt made (stored later if durable)."""
        self.made[chunk.idx] = chunk
        self.dropped.update(chunk.dropped)
        self.batches += 1.0 / max(chunk.batch_size, 1)
        if not self.durable:
            self.done += 1

    def stored(self, count: int) -> None:
        """`count` chunks of `made` were stored (they leave memory)."""
        self.done += count
        self.made.clear()

    @property
    def figures_batches(self) -> int:
        return math.ceil(self.batches - 1e-9) if self.batches else 0


@dataclass
class Unit:
    """The members run through one engine call per voice (TGI's `Batch`: built, filtered, concatenated)."""

    members: list[Member]

    @property
    def ids(self) -> list[str]:
        return [m.job_id for m in self.members]

    def filter(self, keep: Callable[[Member], bool]) -> Unit:
        return Unit([m for m in self.members if keep(m)])

    def concatenate(self, other: Unit) -> Unit:
        return Unit(self.members + other.members)

    def live(self) -> list[Member]:
        """Members not ended and still ours."""
        return [m for m in self.members if not m.ended and m.lost is None]


def members_of(ctx: JobContext, claims: Sequence[lease.Claim], pending: dict[str, list[lease.PendingChunk]],
               *, companion: bool = False) -> list[Member]:
    return [Member(c, pending.get(c.job_id, []), ctx.outputs.job(c.job_id), companion=companion) for c in claims]


def joinable(member: Member) -> bool:
    """A short job whose chunks are all in its own voice (a job with a dialogue voice runs alone)."""
    return (member.held.group_id is None and 0 < len(member.pending) <= member.held.chunks_total <= SHORT_JOB_CHUNKS
            and all(c.voice is None for c in member.pending))


def with_companions(ctx: JobContext, unit: Unit) -> Unit:
    """`unit` (short jobs of one voice) with queued short jobs of that voice taken along, up to
    `join_jobs` members, in the order the broker would deliver them (priority, then age), and no more than
    this worker's share of those waiting (divided among the live workers of its queues): a small batch of
    notices still spreads over the fleet. A job another worker claims first is skipped."""
    want = ctx.settings.join_jobs - len(unit.members)
    voices = {m.held.voice for m in unit.members}
    if want <= 0 or len(voices) != 1 or not all(joinable(m) for m in unit.members):
        return unit
    workers = live_workers(ctx.store, ctx.settings.queue_names, 3 * ctx.settings.heartbeat_s)
    roles = exists().where(and_(Chunk.job_id == Job.id, Chunk.voice.is_not(None)))
    query = (select(Job.id).where(Job.status == JobStatus.QUEUED, Job.voice == voices.pop(), Job.id.not_in(unit.ids),
                                  Job.group_id.is_(None), Job.chunks_total.between(1, SHORT_JOB_CHUNKS),
                                  Job.queue.in_(ctx.settings.queue_names), ~roles)
             .order_by(Job.priority.desc(), Job.created_at).limit(min(want * workers, MAX_CANDIDATES)))
    with ctx.store.read() as session:
        candidates = list(session.scalars(query))
    want = min(want, -(-len(candidates) // workers))  # this worker's share, rounded up
    claimed = lease.claim_jobs(ctx.store, candidates[:want], ctx.worker_id, ctx.settings.lease_s, queued_only=True)
    over = [c for c in claimed.claims if c.attempt > ctx.settings.max_attempts]
    lease.release(ctx.store, [c.job_id for c in over], ctx.worker_id, counted=False)  # not ours to run in company
    fresh = [c for c in claimed.claims if c.attempt <= ctx.settings.max_attempts]
    return unit.concatenate(Unit(members_of(ctx, fresh, claimed.pending, companion=True)))
