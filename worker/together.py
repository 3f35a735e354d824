"""Short jobs run together: a worker that claims a short job also claims other queued short jobs of the
same voice and synthesizes all their chunks in one engine call.

A one-sentence notice gives the engine one chunk: a CPU worker's lanes (worker.onnx_runner) and a GPU's
batches would run it nearly empty, one notice after another. Taking the next few queued notices with it
fills them. Every companion is claimed by the same compare-and-set as any job (so no two workers hold
one), its lease is renewed by the heartbeat, and each job is still finished, failed or put back on its
own: a cancelled companion stops being saved, a companion that cannot be assembled fails alone. Their
broker messages, delivered later, find the job taken or finished and are acknowledged as any duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, select

from schemas.db import Store
from schemas.errors import JobInterrupted, PermanentError, RetryableError, WorkerStopping
from schemas.status import JobStatus, WorkerState
from schemas.tables import Chunk, Job, Worker, utcnow
from schemas.voices import voice_speaker
from worker import lease, reaper
from worker.events import JobFigures, JobOutcome
from worker.outputs import JobFiles

if TYPE_CHECKING:
    from worker.engine import ChunkAudio, ChunkInput, Engine, EngineRun
    from worker.job import JobContext

log = logging.getLogger("ttsfleet.together")

SHORT_JOB_CHUNKS = 4  # a job of at most this many chunks may run together with others
MAX_CANDIDATES = 512  # queued jobs read to find companions and this worker's share of them
MAX_REMEMBERED = 4096  # companions ended here whose deliveries are still to come (see _remember)
RESEND_PRIORITY = 9  # a companion put back is sent again at top priority: it was next in line


@dataclass
class _Member:
    """One job of the group: its claim, files, pending chunks and whether it is still ours."""

    held: lease.Claim
    files: JobFiles
    pending: list[lease.PendingChunk]
    done: int = 0
    lost: str | None = None  # why it is no longer ours (cancelled, taken over)
    dropped: set[str] = field(default_factory=set)
    ended: bool = False  # finished (or given up) here already
    # The first job's result or error when it was finished during the group's engine call.
    result: tuple[JobOutcome, JobFigures] | None = None
    error: Exception | None = None


def companions_wanted(held: lease.Claim, pending: Sequence[lease.PendingChunk], join_jobs: int) -> bool:
    """Whether `held` may take companions: joining is on, it is short, and every chunk is in its own voice
    (a job with a dialogue voice runs alone)."""
    return (join_jobs > 1 and held.group_id is None and 0 < len(pending) <= held.chunks_total <= SHORT_JOB_CHUNKS
            and all(c.voice is None for c in pending))


def claim_companions(ctx: JobContext, held: lease.Claim, limit: int) -> list[lease.Claim]:
    """Claim up to `limit` queued short jobs of `held`'s voice from this worker's queues, in the order the
    broker would deliver them (priority, then age), and no more than this worker's share of those waiting
    (divided among the live workers of its queues): a small batch of notices still spreads over the fleet.
    A job another worker claims first is skipped."""
    workers = live_workers(ctx.store, ctx.settings.queue_names, ctx.settings.heartbeat_s)
    roles = exists().where(and_(Chunk.job_id == Job.id, Chunk.voice.is_not(None)))
    query = (select(Job.id).where(Job.status == JobStatus.QUEUED, Job.voice == held.voice, Job.id != held.job_id,
                                  Job.group_id.is_(None), Job.chunks_total.between(1, SHORT_JOB_CHUNKS),
                                  Job.queue.in_(ctx.settings.queue_names), ~roles)
             .order_by(Job.priority.desc(), Job.created_at).limit(min(limit * workers, MAX_CANDIDATES)))
    with ctx.store.read() as session:
        candidates = list(session.scalars(query))
    limit = min(limit, -(-len(candidates) // workers))  # this worker's share, rounded up
    # One transaction for the lot (a job another worker took meanwhile is simply not among them).
    claimed = lease.claim_queued(ctx.store, candidates[:limit], ctx.worker_id, ctx.settings.lease_s)
    for other in claimed:
        if other.attempt > ctx.settings.max_attempts:  # a poison job is not ours to run in company
            lease.release(ctx.store, other.job_id, ctx.worker_id)
    return [other for other in claimed if other.attempt <= ctx.settings.max_attempts]


def live_workers(store: Store, queues: Sequence[str], heartbeat_s: float) -> int:
    """Workers ready to take work from any of `queues` (heartbeat within three periods); at least 1, this
    worker (an embedded `ttsfleet run` is not registered)."""
    since = utcnow() - timedelta(seconds=3 * heartbeat_s)
    with store.read() as session:
        rows = session.scalars(select(Worker.queues).where(Worker.state == WorkerState.READY,
                                                           Worker.heartbeat_at >= since))
        wanted = set(queues)
        return max(1, sum(1 for names in rows if wanted & {q.strip() for q in names.split(",")}))


def run_together(held: lease.Claim, others: list[lease.Claim], ctx: JobContext, engine: Engine,
                 pending: list[lease.PendingChunk]) -> tuple[JobOutcome, JobFigures | None] | None:
    """Synthesize `held` and `others` in one engine call, finishing each job as soon as its chunks are
    stored (during the call). Returns `held`'s outcome and figures; the companions' outcomes go to the
    listeners. When the group's synthesis fails for good (a chunk that cannot be said, whoever's it is),
    the companions not finished are put back and sent again, and None is returned unless `held` had
    finished: it is then to run alone, its stored chunks kept, so no job fails for another's chunk.

    Raises as `worker.job.synthesize_job` does for `held` (which the caller puts back); the companions
    are put back and sent again before anything propagates.
    """
    members = [_Member(held, JobFiles(ctx.settings.output_location, held.job_id), pending)]
    pending_of = lease.pending_chunks_of(ctx.store, [o.job_id for o in others])
    members += [_Member(o, JobFiles(ctx.settings.output_location, o.job_id), pending_of[o.job_id]) for o in others]
    ctx.holding_together([o.job_id for o in others])
    try:
        inputs, owners = _inputs(members)
        run = _synthesize(ctx, engine, members, inputs, owners)
    except PermanentError as err:
        log.warning("job %s and %d others run together: %s; each runs alone now", held.job_id, len(others), err)
        _put_back(ctx, [m.held for m in members[1:] if not m.ended])
        ctx.holding_together([])
        return members[0].result
    except BaseException:
        _put_back(ctx, [m.held for m in members[1:] if not m.ended])
        ctx.holding_together([])
        raise
    try:
        for member in members[1:]:
            if not member.ended:
                _finish(ctx, engine, member, run)
    except BaseException:  # a bug or Ctrl-C: the companions not finished yet go back, none left held
        _put_back(ctx, [m.held for m in members[1:] if not m.ended])
        raise
    finally:
        ctx.holding_together([])
    log.info("job %s ran with %d others", held.job_id, len(others))
    first = members[0]
    if first.lost is not None:
        raise JobInterrupted(first.lost)
    if first.error is not None:
        raise first.error
    if first.result is not None:
        return first.result
    from worker.job import finish_job, warnings_with

    return finish_job(held, ctx, engine, run, warnings_with(held, first.dropped), first.files)


def _inputs(members: list[_Member]) -> tuple[list[ChunkInput], list[tuple[_Member, int]]]:
    """Every pending chunk as one engine input (numbered across the group) and who owns each."""
    from worker.engine import ChunkInput
    from worker.job import chunk_seed, job_seed

    inputs: list[ChunkInput] = []
    owners: list[tuple[_Member, int]] = []
    for member in members:
        seed = job_seed(member.held.job_id, member.held.options.get("seed"))
        speed = float(member.held.options.get("speed") or 1.0)
        speaker = voice_speaker(member.held.voice)[1]
        for chunk in member.pending:
            inputs.append(ChunkInput(len(inputs), chunk.text, chunk_seed(seed, chunk.idx),
                                     speed=chunk.speed_with(speed), speaker_id=speaker))
            owners.append((member, chunk.idx))
    return inputs, owners


def _synthesize(ctx: JobContext, engine: Engine, members: list[_Member], inputs: list[ChunkInput],
                owners: list[tuple[_Member, int]]) -> EngineRun:
    from worker.job import attempt_tag, chunk_columns

    def save(chunk: ChunkAudio) -> None:
        member, idx = owners[chunk.idx]
        if member.lost is None:
            held = member.held
            location = member.files.save_chunk(f"{idx:06d}-{attempt_tag(held)}.wav", chunk.samples,
                                               engine.sample_rate_hz)
            try:
                lease.save_chunk(ctx.store, held.job_id, ctx.worker_id, idx, ctx.settings.lease_s,
                                 **chunk_columns(chunk, location, engine.sample_rate_hz, held.attempt))
            except JobInterrupted as err:  # cancelled or taken over: the others go on
                member.lost = str(err)
            else:
                member.dropped.update(chunk.dropped)
                member.done += 1
                ctx.listeners.chunk_done(held.job_id, held.chunks_total - len(member.pending) + member.done,
                                         held.chunks_total)
        if member.done == len(member.pending) and not member.ended:
            # A job whose chunks are all stored is finished now, while the lanes run on with the others.
            if member is members[0]:
                _finish_first(ctx, engine, member)
            else:
                _finish(ctx, engine, member, _so_far(engine, member))
        if ctx.should_stop():
            raise WorkerStopping(f"worker stopping: job {members[0].held.job_id} and {len(members) - 1} "
                                 "jobs run with it put back")

    try:
        return engine.synthesize(inputs, on_chunk=save)
    finally:
        engine.cleanup()


def _remember(ctx: JobContext, job_id: str) -> None:
    """Note a companion ended here, so its own delivery is acknowledged cheaply (`synthesize_job`).
    Bounded: past MAX_REMEMBERED the notes are dropped (a later delivery then takes the usual path)."""
    if len(ctx.ended_together) >= MAX_REMEMBERED:
        ctx.ended_together.clear()
    ctx.ended_together.add(job_id)


def _so_far(engine: Engine, member: _Member) -> EngineRun:
    """A job's share of the group's engine call while it runs: its chunks, the peak memory so far."""
    from worker.engine import EngineRun
    from worker.model import peak_bytes

    return EngineRun(synth_s=0.0, peak_mem_bytes=peak_bytes(engine.device.torch_device), oom_retries=0,
                     fp32_fallbacks=0, batches=member.done, max_batch_size=0)


def _finish_first(ctx: JobContext, engine: Engine, member: _Member) -> None:
    """Finish the claimed job during the group's call; its result or error is kept for `run_together` to
    return or raise once the call is over, so the companions' synthesis goes on whatever happens to it."""
    from worker.job import finish_job, warnings_with

    member.ended = True
    try:
        member.result = finish_job(member.held, ctx, engine, _so_far(engine, member),
                                   warnings_with(member.held, member.dropped), member.files)
    except Exception as err:  # raised by run_together after the call, as if finished there
        member.error = err


def _finish(ctx: JobContext, engine: Engine, member: _Member, run: EngineRun) -> JobOutcome | None:
    """Finish one companion on its own; None when it is no longer ours (nothing to report here)."""
    from worker.job import drop_strays, failed, finish_job, finished, warnings_with

    held = member.held
    member.ended = True
    _remember(ctx, held.job_id)
    if member.lost is not None:
        drop_strays(ctx, held)
        return None
    try:
        outcome, figures = finish_job(held, ctx, engine, run, warnings_with(held, member.dropped), member.files)
    except JobInterrupted:
        drop_strays(ctx, held)
        return None
    except PermanentError as err:
        lease.fail(ctx.store, held.job_id, ctx.worker_id, str(err))
        member.files.cleanup()
        return failed(ctx, JobOutcome(held.job_id, JobStatus.FAILED, str(err)))
    except (RetryableError, OSError) as err:
        log.warning("job %s (run with others) put back: %s", held.job_id, err)
        _put_back(ctx, [held])
        return None
    return finished(ctx, held, outcome, figures)


def _put_back(ctx: JobContext, claims: Sequence[lease.Claim]) -> None:
    """Release `claims` (queued again, their stored chunks kept) and send each again: their own messages
    may already have been taken and dropped by a worker that found them held."""
    for held in claims:
        try:
            if lease.release(ctx.store, held.job_id, ctx.worker_id):
                route = reaper.route(ctx.store, held.job_id, RESEND_PRIORITY)
                if route is not None:
                    ctx.republish(route)
        except RetryableError as err:
            log.warning("job %s: could not put it back (%s); its lease will expire", held.job_id, err)
