"""Long jobs leased in segments (docs/fleet.md): the lease holder cuts the job and calls idle workers for
help; a helper leases one free segment; whoever stores the job's last chunk assembles it, once.

Built on `worker.job` (its synthesis, assembly and outcome helpers), which imports this module late.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.errors import JobInterrupted, PermanentError, WorkerStopping
from schemas.scheduling import fleet_speed
from schemas.status import JobStatus
from schemas.voices import voice_speaker
from worker import lease, segments
from worker.events import JobFigures, JobOutcome
from worker.job import (
    MAX_HELP,
    JobContext,
    chunk_columns,
    failed,
    finish_job,
    finished,
    job_seed,
    synthesize_chunks,
)
from worker.outputs import JobFiles

if TYPE_CHECKING:
    from worker.engine import ChunkAudio, Engine, EngineRun


def run_segments(held: lease.Claim, ctx: JobContext, engine: Engine) -> tuple[JobOutcome, JobFigures | None]:
    """The lease holder of a long job: call idle workers for help (one delivery per free segment but
    ours), then lease the job's free segments one after another. Whoever stores the last chunk assembles."""
    wanted = segments.help_wanted(ctx.store, held.job_id)
    for _ in range(min(segments.free_count(ctx.store, held.job_id) - 1, MAX_HELP)) if wanted else ():
        ctx.republish(wanted)  # type: ignore[arg-type]
    run: EngineRun | None = None
    while (seg := segments.lease_segment(ctx.store, ctx.worker_id, ctx.settings.lease_s,
                                         job_id=held.job_id)) is not None:
        if seg.attempt > ctx.settings.max_attempts:
            raise PermanentError(f"gave up: segment {seg.idx} was taken {seg.attempt - 1} times without finishing")
        completed, run = _run_segment(seg, ctx, engine)
        if completed:
            return _assemble(ctx, held.job_id, engine, run)
    return JobOutcome(held.job_id, JobStatus.RUNNING, "no segment left to take; the worker that stores the "
                      "last chunk assembles"), None


def help_with_segments(job_id: str, ctx: JobContext) -> JobOutcome:
    """A delivery whose job this worker cannot claim (held by another worker, or ended): lease one free
    segment of a live job instead, the one `schemas.scheduling.choose` gives this card, and ask for more
    help while segments stay free. Raises as `synthesize_job` does."""
    refused = JobOutcome(job_id, None, "not claimable: finished, cancelled or held by another worker")
    if ctx.settings.segment_chars <= 0:
        return refused
    mine, typical = _speeds(ctx)
    seg = segments.lease_segment(ctx.store, ctx.worker_id, ctx.settings.lease_s, my_speed=mine,
                                 typical_speed=typical)
    if seg is None:
        return refused
    ctx.holding(seg.job_id)
    if seg.attempt > ctx.settings.max_attempts:
        segments.fail_job(ctx.store, seg.job_id, f"gave up: segment {seg.idx} was taken {seg.attempt - 1} times "
                          "without finishing")
        return JobOutcome(seg.job_id, JobStatus.FAILED, "poison segment")
    engine = ctx.engine_for(voice_speaker(seg.voice)[0])
    try:
        completed, run = _run_segment(seg, ctx, engine)
        wanted = segments.help_wanted(ctx.store, seg.job_id)
        if wanted is not None:
            ctx.republish(wanted)
        if not completed:
            return JobOutcome(seg.job_id, JobStatus.RUNNING, f"segment {seg.idx} done")
        outcome, figures = _assemble(ctx, seg.job_id, engine, run)
    except JobInterrupted as err:
        return JobOutcome(seg.job_id, lease.job_status(ctx.store, seg.job_id), str(err))
    except PermanentError as err:
        segments.fail_job(ctx.store, seg.job_id, str(err))
        JobFiles(ctx.settings.output_location, seg.job_id).cleanup()
        return failed(ctx, JobOutcome(seg.job_id, JobStatus.FAILED, str(err)))
    except BaseException:
        segments.release_held(ctx.store, ctx.worker_id)
        raise
    held = lease.claim_of_job(ctx.store, seg.job_id)
    return finished(ctx, held, outcome, figures) if held is not None else outcome


def _speeds(ctx: JobContext) -> tuple[float | None, float | None]:
    """This card's measured speed for its default voice, and the fleet's typical one (None: unmeasured)."""
    measured = segments.measured_speeds(ctx.store, ctx.settings.voice)
    card = ctx.engine_for(ctx.settings.voice).device.name
    mine = [speed for (name, _dtype), speed in measured.items() if name == card]
    return (max(mine) if mine else None), fleet_speed(list(measured.values()))


def _run_segment(seg: segments.SegmentClaim, ctx: JobContext, engine: Engine) -> tuple[bool, EngineRun | None]:
    """Synthesize the segment's missing chunks under its lease; True when our chunk completed the job."""
    job = lease.claim_of_job(ctx.store, seg.job_id)
    if job is None:
        raise JobInterrupted(f"job {seg.job_id} is gone")
    files = JobFiles(ctx.settings.output_location, seg.job_id)
    completed = [False]
    dropped: set[str] = set()
    render = int(job.options.get("render") or 0)
    tag = f"r{render}-s{seg.idx}a{seg.attempt}" if render else f"s{seg.idx}a{seg.attempt}"

    def save(chunk: ChunkAudio) -> None:
        # Segment and attempt in the name: a former holder still running cannot overwrite our file.
        location = files.save_chunk(f"{chunk.idx:06d}-{tag}.wav", chunk.samples, engine.sample_rate_hz)
        last, done, total = segments.save_chunk(ctx.store, seg, ctx.worker_id, chunk.idx, ctx.settings.lease_s,
                                                **chunk_columns(chunk, location, engine.sample_rate_hz, seg.attempt))
        completed[0] |= last
        dropped.update(chunk.dropped)
        ctx.listeners.chunk_done(seg.job_id, done, total)
        if ctx.should_stop():
            raise WorkerStopping(f"worker stopping: segment {seg.idx} of job {seg.job_id} put back")

    seed = job_seed(seg.job_id, job.options.get("seed"))
    run = synthesize_chunks(job, ctx, engine, segments.pending_chunks(ctx.store, seg), seed, save)
    if dropped:
        lease.add_warning(ctx.store, seg.job_id,
                          "characters the voice cannot speak were skipped: " + "".join(sorted(dropped)))
    segments.finish_segment(ctx.store, seg, ctx.worker_id)
    return completed[0], run


def _assemble(ctx: JobContext, job_id: str, engine: Engine, run: EngineRun | None) -> tuple[JobOutcome, JobFigures]:
    """Take the job's lease (ours alone: our chunk completed it) and assemble and finish it once."""
    held = segments.take_for_assembly(ctx.store, job_id, ctx.worker_id, ctx.settings.lease_s)
    if held is None:
        raise JobInterrupted(f"job {job_id} was cancelled or ended before its assembly")
    ctx.holding(job_id)
    return finish_job(held, ctx, engine, run, list(held.warnings),
                      JobFiles(ctx.settings.output_location, job_id))
