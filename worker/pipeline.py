"""`run_unit`: the one function that runs a unit of work — one job, a group of short jobs, or a segment of
a long job — through the engine, the save path (`worker.chunk_sink`) and the finish path (`worker.results`).

What goes wrong is settled per job: a chunk no voice can say fails only its own job (a group that hits
one puts its companions back and runs its own jobs alone); a stop, a crash or a store outage puts every
job not finished back (queued, stored chunks kept) before the error propagates, each with its error
recorded, and companions (whose messages were consumed already) are sent again.
"""

from __future__ import annotations

import logging

from schemas.errors import PermanentError, RetryableError, SynthesisFailed, WorkerStopping
from schemas.voices import voice_speaker
from worker import lease, reaper, results, segments
from worker.chunk_sink import ChunkSink, UnitLost
from worker.context import JobContext
from worker.events import JobOutcome
from worker.naming import chunk_seed, job_seed
from worker.synthesis import ChunkInput, Engine
from worker.unit import Member, Unit

log = logging.getLogger("ttsfleet.job")
RESEND_PRIORITY = 9  # a companion put back is sent again at top priority: it was next in line


def run_unit(unit: Unit, ctx: JobContext) -> list[JobOutcome]:
    """Run `unit` to the end of each of its jobs (or segment); returns their outcomes, which went to the
    listeners too.

    Raises:
        WorkerStopping: `ctx.should_stop()` said so at a chunk boundary; what was ready was finished, the
            rest put back (queued) with its stored chunks.
        RetryableError, DeviceLost, or anything unexpected: the jobs not finished were put back first.
    """
    if not unit.members:
        return []
    engine = ctx.engine_for(voice_speaker(unit.members[0].held.voice)[0])
    outcomes: list[JobOutcome] = []
    sink = ChunkSink(unit, ctx, engine.sample_rate_hz,
                     lambda ready: outcomes.extend(results.finish_members(ctx, engine, ready)))
    _hold(ctx, unit)
    try:
        _synthesize(unit, ctx, engine, sink)
        sink.flush()
        outcomes += _settle(unit, ctx)
    except UnitLost:  # every job of the unit was cancelled or taken over mid-call
        sink.flush()
        outcomes += _settle(unit, ctx)
    except PermanentError as err:
        outcomes += _after_failure(unit, ctx, err)
    except WorkerStopping:
        _stop(unit, ctx, sink)
        raise
    except BaseException as err:
        put_back(unit.live(), ctx, err)
        raise
    finally:
        _drop(ctx, unit)
    return outcomes


def _hold(ctx: JobContext, unit: Unit) -> None:
    ctx.held.hold(m.job_id for m in unit.members if m.segment is None)
    for m in unit.members:
        if m.segment is not None:
            ctx.held.hold_segment(m.segment.job_id, m.segment.idx)


def _drop(ctx: JobContext, unit: Unit) -> None:
    """Leases of the unit are no longer renewed: its jobs ended or were put back (a segment's job lease,
    held by its leader, is not the unit's to drop)."""
    ctx.held.drop(m.job_id for m in unit.members if m.segment is None)
    for m in unit.members:
        if m.segment is not None:
            ctx.held.drop_segment(m.segment.job_id, m.segment.idx)


def _synthesize(unit: Unit, ctx: JobContext, engine: Engine, sink: ChunkSink) -> None:
    """One engine call per voice (a dialogue or SSML voice span says its chunks in its own voice), each
    chunk at its own speed factor times its job's, each speaker in its own batches.

    Raises:
        PermanentError: a chunk's voice has another sample rate than the job's, or no such speaker.
    """
    calls: dict[str, tuple[list[ChunkInput], dict[int, tuple[Member, int]]]] = {}
    alone = len(unit.members) == 1  # inputs keep their chunk's index; in a group they are numbered
    for member in unit.live():
        seed = job_seed(member.job_id, member.held.options.seed)
        speed = member.held.options.speed_factor
        for chunk in member.pending:
            voice = chunk.voice or member.held.voice
            inputs, owners = calls.setdefault(voice, ([], {}))
            key = chunk.idx if alone else len(inputs)
            inputs.append(ChunkInput(key, chunk.text, chunk_seed(seed, chunk.idx), speed=chunk.speed_with(speed),
                                     speaker_id=voice_speaker(voice)[1]))
            owners[key] = (member, chunk.idx)
    for voice, (inputs, owners) in calls.items():
        name, speaker = voice_speaker(voice)
        voice_engine = ctx.engine_for(name)
        if speaker is not None and speaker >= voice_engine.num_speakers:
            raise PermanentError(f"voice {name} has {voice_engine.num_speakers} speaker(s): no speaker {speaker}")
        if voice_engine.sample_rate_hz != engine.sample_rate_hz:
            raise PermanentError(f"voice {name} speaks at {voice_engine.sample_rate_hz} Hz, the job's voice at "
                                 f"{engine.sample_rate_hz} Hz: a job's voices must share one sample rate")
        try:
            voice_engine.synthesize(inputs, on_chunk=sink.on_chunk(owners))
        finally:
            voice_engine.cleanup()


def _settle(unit: Unit, ctx: JobContext) -> list[JobOutcome]:
    """After the call: members no longer ours are settled; one with a chunk never made is an error."""
    outcomes = [results.settle_lost(ctx, m) for m in unit.members if m.lost is not None and not m.ended]
    unmade = [m for m in unit.live() if not m.ready]
    if unmade:
        missing = [c.idx for c in unmade[0].pending if c.idx not in unmade[0].made][:5]
        raise SynthesisFailed(f"job {unmade[0].job_id}: chunks {missing} have no audio after synthesis")
    return outcomes


def _after_failure(unit: Unit, ctx: JobContext, err: PermanentError) -> list[JobOutcome]:
    """A chunk that cannot be said (whoever's it is): a job alone fails; a group puts its companions back
    (sent again) and runs each of its own jobs alone, its stored chunks kept, so no job fails for
    another's chunk."""
    live = unit.live()
    if len(live) == 1 and len(unit.members) == 1:
        return [results.fail_job(ctx, live[0], err)]
    log.warning("jobs %s run together: %s; each runs alone now", ", ".join(unit.ids[:3]), err)
    put_back([m for m in live if m.companion], ctx, None)
    outcomes: list[JobOutcome] = []
    for member in (m for m in live if not m.companion):
        pending = (segments.pending_chunks(ctx.store, member.segment) if member.segment is not None
                   else lease.pending_chunks(ctx.store, member.job_id) if member.durable else member.pending)
        alone = Member(member.held, pending, member.files, segment=member.segment)
        outcomes += run_unit(Unit([alone]), ctx)
        member.ended = True
    return outcomes


def _stop(unit: Unit, ctx: JobContext, sink: ChunkSink) -> None:
    """At a stop: store what was made and finish what is ready, then put the rest back (no error)."""
    try:
        sink.flush()
    except Exception as err:  # a store outage at the wrong moment: everything not finished goes back
        log.warning("stopping: could not store or finish what was made: %s", err)
    put_back(unit.live(), ctx, None)


def put_back(members: list[Member], ctx: JobContext, err: BaseException | None) -> None:
    """Release `members` (queued again, their stored chunks kept), each with `err` recorded (None: a stop
    or a group's failure, no error of theirs), and send the companions again: their own messages may
    already have been taken and dropped. An attempt ended by a transient error does not count towards
    poison; a crash does."""
    members = [m for m in members if not m.ended]
    if not members:
        return
    counted = err is not None and not isinstance(err, RetryableError | WorkerStopping)
    try:
        if err is not None and not isinstance(err, WorkerStopping | KeyboardInterrupt):
            lease.record_errors(ctx.store, [(m.job_id, m.held.attempt) for m in members if m.segment is None],
                                ctx.worker_id, err)
        back = set(lease.release(ctx.store, [m.job_id for m in members if m.segment is None], ctx.worker_id,
                                 counted=counted))
        if any(m.segment is not None for m in members):
            segments.release_held(ctx.store, ctx.worker_id)
        for member in members:
            member.ended = True
            route = reaper.route(ctx.store, member.job_id, RESEND_PRIORITY) if member.job_id in back else None
            if member.companion and route is not None:
                ctx.republish(route)
    except RetryableError as store_down:
        log.warning("could not put jobs %s back (%s); their leases will expire", ", ".join(m.job_id for m in members),
                    store_down)
