"""`run_delivery`: what a worker does with one broker message — claim its jobs, build the unit of work, run
it — and `synthesize_job`, the same for one job id. Plain functions, called by the Celery task and by the
embedded `ttsfleet run`, tested without Celery.

A message whose jobs all ended or are held elsewhere costs one indexed read (a duplicate, or the later
delivery of a job run in company). A long job that is cut into segments is led by its claimer
(`worker.segment_run`); a delivery of a long job held by another worker is a call for help with its
segments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from schemas.scheduling import SHORT_JOB_CHUNKS
from worker import lease, segments
from worker.context import JobContext
from worker.events import JobOutcome
from worker.pipeline import run_unit
from worker.results import fail_job
from worker.segment_run import help_with_segments, lead_segments
from worker.unit import Member, Unit, joinable, members_of, with_companions

log = logging.getLogger("ttsfleet.job")


def run_delivery(job_ids: Sequence[str], ctx: JobContext) -> list[JobOutcome]:
    """Run the jobs of one message (at most `join_jobs` in one unit), or resume them; their outcomes and
    those of the companions taken along.

    Raises as `worker.pipeline.run_unit` does (the jobs not finished were put back first).
    """
    outcomes: list[JobOutcome] = []
    size = max(ctx.settings.join_jobs, 1)
    for start in range(0, len(job_ids), size):
        outcomes += _run_slice(list(job_ids[start:start + size]), ctx)
    return outcomes


def synthesize_job(job_id: str, ctx: JobContext) -> JobOutcome:
    """`run_delivery` of one job id: that job's outcome (a help delivery: the helped job's)."""
    outcomes = run_delivery([job_id], ctx)
    return next((o for o in outcomes if o.job_id == job_id), outcomes[0] if outcomes else JobOutcome(
        job_id, None, "not claimable: finished, cancelled or held by another worker"))


def _run_slice(job_ids: list[str], ctx: JobContext) -> list[JobOutcome]:
    claimed = lease.claim_jobs(ctx.store, job_ids, ctx.worker_id, ctx.settings.lease_s)
    if not claimed.claims:
        wants_help = any(r.held_elsewhere and r.segmented for r in claimed.refused.values())
        if wants_help and ctx.settings.segment_chars > 0:
            return [help_with_segments(job_ids[0], ctx)]
        return [JobOutcome(j, None, _why_not(claimed.refused.get(j))) for j in job_ids]
    claims, outcomes = _without_poison(ctx, claimed.claims)
    members = members_of(ctx, claims, claimed.pending)
    leaders = [m for m in members if _segmented(ctx, m)]
    unit = Unit([m for m in members if m not in leaders])
    if unit.members and all(joinable(m) for m in unit.members):
        unit = with_companions(ctx, unit)
    outcomes += run_unit(unit, ctx)
    for member in leaders:
        outcomes.append(lead_segments(member.held, ctx))
    return outcomes


def _why_not(refused: lease.Refused | None) -> str:
    if refused is None:
        return "no such job"
    if refused.status.is_terminal:
        return f"ended already ({refused.status})"
    return "held by another worker" if refused.held_elsewhere else f"not claimable ({refused.status})"


def _segmented(ctx: JobContext, member: Member) -> bool:
    """A long job with chunks left that is (now) cut into segments: its claimer leads them."""
    return (member.held.chunks_total > SHORT_JOB_CHUNKS and bool(member.pending)
            and segments.ensure_segments(ctx.store, member.job_id, ctx.settings.segment_chars) > 0)


def _without_poison(ctx: JobContext, claims: list[lease.Claim]) -> tuple[list[lease.Claim], list[JobOutcome]]:
    """`claims` less those claimed more than `max_attempts` times, which are failed as poison, naming the
    last error an attempt recorded."""
    keep, outcomes = [], []
    for held in claims:
        if held.attempt <= ctx.settings.max_attempts:
            keep.append(held)
            continue
        last = lease.last_error(ctx.store, held.job_id)
        cause = f"last error: {last}" if last else "no error was recorded: the worker process died each time"
        error = f"gave up after {held.attempt - 1} attempts that did not finish; {cause}"
        member = Member(held, [], ctx.outputs.job(held.job_id))
        outcomes.append(fail_job(ctx, member, error, f"poison: {error}", record=False))
    return keep, outcomes
