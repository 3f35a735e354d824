"""Long jobs leased in segments (docs/fleet.md): the claimer of a long job leads it (calls idle workers
for help, then leases its free segments one after another); a helper leases one free segment of a live
job. Each segment runs as a unit of work (`worker.pipeline.run_unit`); whoever stores the job's last
chunk assembles it, once.
"""

from __future__ import annotations

from schemas.errors import JobInterrupted
from schemas.scheduling import fleet_speed
from schemas.status import JobStatus
from schemas.voices import voice_speaker
from worker import lease, segments
from worker.context import JobContext
from worker.events import JobOutcome
from worker.pipeline import run_unit
from worker.results import fail_job
from worker.unit import Member, Unit

MAX_HELP = 64  # help deliveries one long job sends at most when it is cut into segments


def lead_segments(held: lease.Claim, ctx: JobContext) -> JobOutcome:
    """The claimer of a long job: call idle workers for help (one delivery per free segment but ours),
    then lease the job's free segments one after another. Whoever stores the last chunk assembles; the
    job's outcome is ours when that was us."""
    wanted = segments.help_wanted(ctx.store, held.job_id)
    if wanted is not None:
        for _ in range(min(segments.free_count(ctx.store, held.job_id) - 1, MAX_HELP)):
            ctx.republish(wanted)
    ctx.held.hold([held.job_id])
    try:
        while (seg := segments.lease_segment(ctx.store, ctx.worker_id, ctx.settings.lease_s,
                                             job_id=held.job_id)) is not None:
            outcome = _run_segment(seg, ctx)
            if outcome.status != JobStatus.RUNNING or outcome.job_id != held.job_id:
                return outcome
    finally:
        ctx.held.drop([held.job_id])
    return JobOutcome(held.job_id, JobStatus.RUNNING, "no segment left to take; the worker that stores the "
                      "last chunk assembles")


def help_with_segments(job_id: str, ctx: JobContext) -> JobOutcome:
    """A delivery whose job this worker cannot claim (held by another worker): lease one free segment of a
    live job instead, the one `schemas.scheduling.choose` gives this card, and ask for more help while
    segments stay free. Raises as `run_unit` does."""
    refused = JobOutcome(job_id, None, "not claimable: finished, cancelled or held by another worker")
    mine, typical = _speeds(ctx)
    seg = segments.lease_segment(ctx.store, ctx.worker_id, ctx.settings.lease_s, my_speed=mine,
                                 typical_speed=typical)
    if seg is None:
        return refused
    outcome = _run_segment(seg, ctx)
    wanted = segments.help_wanted(ctx.store, seg.job_id)
    if wanted is not None:
        ctx.republish(wanted)
    return outcome


def _run_segment(seg: segments.SegmentClaim, ctx: JobContext) -> JobOutcome:
    """One segment as a unit of work; a segment taken too often fails its job as poison."""
    job = lease.claim_of_job(ctx.store, seg.job_id)
    if job is None:
        raise JobInterrupted(f"job {seg.job_id} is gone")
    member = Member(job, segments.pending_chunks(ctx.store, seg), ctx.outputs.job(seg.job_id), segment=seg)
    if seg.attempt > ctx.settings.max_attempts:
        return fail_job(ctx, member, f"gave up: segment {seg.idx} was taken {seg.attempt - 1} times without "
                        "finishing", "poison segment")
    outcomes = run_unit(Unit([member]), ctx)
    return outcomes[0] if outcomes else JobOutcome(seg.job_id, lease.job_status(ctx.store, seg.job_id),
                                                   f"segment {seg.idx}: nothing done")


def _speeds(ctx: JobContext) -> tuple[float | None, float | None]:
    """This card's measured speed for its default voice, and the fleet's typical one (None: unmeasured)."""
    measured = segments.measured_speeds(ctx.store, ctx.settings.voice)
    card = ctx.engine_for(voice_speaker(ctx.settings.voice)[0]).device.name
    mine = [speed for (name, _dtype), speed in measured.items() if name == card]
    return (max(mine) if mine else None), fleet_speed(list(measured.values()))
