"""The finish path of a unit of work: each ready job's file assembled, then all of them finished in one
transaction (a compare-and-set per job), published only where it won, and told to the listeners.

Also how a job ends otherwise: failed for good (`fail_job`), or no longer ours (`settle_lost`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas.errors import JobInterrupted, PermanentError, RetryableError, SynthesisFailed
from schemas.status import AudioFormat, Backend, DType, JobStatus
from worker import audio, books, lease, segments
from worker.context import JobContext
from worker.events import JobFigures, JobOutcome
from worker.model import peak_bytes
from worker.naming import attempt_tag, output_key, owner_tag, tags
from worker.synthesis import Engine, policy_quality
from worker.unit import Member

log = logging.getLogger("ttsfleet.job")


@dataclass(frozen=True, slots=True)
class _Staged:
    member: Member
    finished: lease.Finished
    assembled: audio.AssembledAudio
    kept: set[str]  # the stored chunk files its rows point to (kept for `rerender`)


def finish_members(ctx: JobContext, engine: Engine, members: list[Member]) -> list[JobOutcome]:
    """Finish the ready `members`: segments first end their lease (the one whose chunks completed its job
    takes the job's lease to assemble it), then every job's file is staged and all are finished at once.

    Raises RetryableError or OSError (store or disk down) with nothing recorded: the caller puts the members
    back; every staged file is removed first.
    """
    outcomes: list[JobOutcome] = []
    jobs: list[Member] = []
    for member in members:
        outcome = _end_segment(ctx, member) if member.segment is not None else None
        if outcome is not None:
            outcomes.append(outcome)
        else:
            jobs.append(member)
    peak = peak_bytes(engine.device.torch_device)
    results = _stage_all(ctx, engine, jobs, peak)
    staged = [done for done in results if isinstance(done, _Staged)]
    try:
        error = next((done for done in results if isinstance(done, BaseException)
                      and not isinstance(done, PermanentError)), None)
        if error is not None:
            raise error
        outcomes += [fail_job(ctx, member, done) for member, done in zip(jobs, results, strict=True)
                     if isinstance(done, PermanentError)]
        won = set(lease.finish_jobs(ctx.store, ctx.worker_id, [s.finished for s in staged],
                                    lambda ids: _publish(staged, set(ids))))
    except BaseException:
        for item in staged:
            item.member.files.discard(item.assembled)
        raise
    return outcomes + [_settle_finished(ctx, item, item.member.job_id in won) for item in staged]


def _stage_all(ctx: JobContext, engine: Engine, jobs: list[Member], peak: int | None) -> list[_Staged | BaseException]:
    """Each job's staged result, or the error that stopped it (handed back: the caller decides, and a
    permanent error fails only its own job).

    One after another, on purpose: staging a notice is ~0.5 ms of numpy and small file writes, and a pool
    of four threads measured 1.1-1.5x slower on 16 notices at a time (GIL hand-offs: ~50,000 context
    switches and twice the kernel time per 2,000 notices; docs/benchmarks.md)."""
    staged: list[_Staged | BaseException] = []
    for member in jobs:
        try:
            staged.append(_stage(ctx, engine, member, peak))
        except Exception as err:
            staged.append(err)
    return staged


def _end_segment(ctx: JobContext, member: Member) -> JobOutcome | None:
    """A segment whose chunks are all stored: its lease ends; None when its chunks completed the job and
    `member` now holds the job's lease, to be assembled."""
    seg = member.segment
    assert seg is not None
    segments.finish_segment(ctx.store, seg, ctx.worker_id)
    ctx.held.drop_segment(seg.job_id, seg.idx)
    if not member.completed:
        member.ended = True
        return JobOutcome(seg.job_id, JobStatus.RUNNING, f"segment {seg.idx} done")
    held = segments.take_for_assembly(ctx.store, seg.job_id, ctx.worker_id, ctx.settings.lease_s)
    if held is None:
        member.ended = True
        return JobOutcome(seg.job_id, lease.job_status(ctx.store, seg.job_id),
                          f"job {seg.job_id} was cancelled or ended before its assembly")
    ctx.held.hold([seg.job_id])
    member.held, member.segment, member.pending = held, None, []
    return None


def _stage(ctx: JobContext, engine: Engine, member: Member, peak: int | None) -> _Staged:
    """Assemble the member's file in this process's staging folder, with what it cost.

    Raises:
        PermanentError: a chunk has no audio, or a stored chunk's sample rate is not the voice's.
    """
    held, files = member.held, member.files
    location = files.store.join(output_key(held))
    pieces, synth_s, redone, kept = _pieces(ctx, member)
    staged = files.staged(f"{attempt_tag(held)}-{owner_tag(ctx.worker_id)}", location)
    assembled = audio.assemble(pieces, engine.sample_rate_hz, AudioFormat(held.format), staged, title=held.title,
                               loudness_lufs=held.options.loudness_lufs, job_id=held.job_id, tags=tags(held),
                               name=location.rsplit("/", 1)[-1])
    device = engine.device
    figures = JobFigures(card=device.name, capability=device.capability_str, backend=Backend(device.backend),
                         dtype=DType(engine.policy.dtype), chunks=held.chunks_total, audio_s=assembled.audio_s,
                         synth_s=synth_s, peak_mem_bytes=peak if member.done else None, oom_retries=0,
                         fp32_fallbacks=redone, batches=member.figures_batches, runtime=engine.runtime,
                         **policy_quality(engine.policy, engine.fidelity))
    warnings = list(held.warnings)
    if member.dropped:
        warnings.append("characters the voice cannot speak were skipped: " + "".join(sorted(member.dropped))
                        + " (to have a word with them said, add a lexicon line spelling it as the voice can: "
                        "WORD<TAB>how it is said, or [[ phonemes ]])")
    made = tuple({"idx": idx, "samples": len(c.samples), "audio_s": len(c.samples) / engine.sample_rate_hz,
                  "synth_s": c.synth_s, "batch_size": c.batch_size, "attempt": held.attempt, "dtype": str(c.dtype),
                  "fp32_redo": c.fp32_redo} for idx, c in member.made.items()) if not member.durable else ()
    return _Staged(member, lease.Finished(held.job_id, location, assembled.sample_rate_hz, warnings, figures, made),
                   assembled, kept)


def _pieces(ctx: JobContext, member: Member) -> tuple[list[audio.AssemblyPiece], float, int, set[str]]:
    """The job's chunks in order (made ones from memory, stored ones read back), the synthesis seconds and
    fp32 redos of all of them, and the names of the stored files they come from. A fresh short job reads
    nothing from SQL: every chunk is in memory, with its text and break."""
    held = member.held
    if len(member.pending) == held.chunks_total and member.made and not member.durable:
        made = [member.made[c.idx] for c in member.pending]
        return ([audio.AssemblyPiece(m.samples, c.text, c.break_after, c.written)
                 for c, m in zip(member.pending, made, strict=True)],
                sum(m.synth_s for m in made), sum(1 for m in made if m.fp32_redo), set())
    pieces: list[audio.AssemblyPiece] = []
    missing: list[int] = []
    kept: set[str] = set()
    synth_s, redone = 0.0, 0
    for row in lease.done_chunks(ctx.store, held.job_id):
        chunk = member.made.get(row.idx)
        if chunk is not None:
            pieces.append(audio.AssemblyPiece(chunk.samples, row.text, row.break_after, row.written))
            synth_s, redone = synth_s + chunk.synth_s, redone + chunk.fp32_redo
        elif row.audio_path is not None:
            pieces.append(audio.AssemblyPiece(member.files.stored(row.audio_path, row.audio_offset,
                                                                  row.samples if row.audio_offset is not None
                                                                  else None), row.text, row.break_after,
                                              row.written))
            synth_s, redone = synth_s + (row.synth_s or 0.0), redone + bool(row.fp32_redo)
            kept.add(row.audio_path.rsplit("/", 1)[-1])
        else:
            missing.append(row.idx)
    if missing:
        raise SynthesisFailed(f"chunks {missing[:5]} have no audio after synthesis")
    return pieces, synth_s, redone, kept


def _publish(staged: list[_Staged], won: set[str]) -> None:
    for item in staged:
        if item.member.job_id in won:
            item.member.files.publish(item.assembled, item.finished.audio_path)


def _settle_finished(ctx: JobContext, item: _Staged, won: bool) -> JobOutcome:
    member, held = item.member, item.member.held
    member.ended = True
    ctx.held.drop([held.job_id])
    if not won:
        member.files.discard(item.assembled)  # only our own staged files: what the row points to is not ours
        drop_strays(ctx, member)
        discard_outputs(ctx, member)
        return JobOutcome(held.job_id, lease.job_status(ctx.store, held.job_id),
                          f"job {held.job_id} is no longer held by this worker (cancelled or taken over)")
    if item.kept or member.durable:
        member.files.keep_only(item.kept)
    outcome = JobOutcome(held.job_id, JobStatus.SUCCEEDED, item.finished.audio_path)
    if held.group_id is not None:
        books.chapter_finished(ctx, held.job_id)  # encoded beside synthesis; the .m4b joined after the last
    ctx.listeners.job_finished(outcome, item.finished.figures)
    log.info("job %s: %s %s", outcome.job_id, outcome.status, outcome.detail)
    return outcome


def fail_job(ctx: JobContext, member: Member, error: BaseException | str, detail: str | None = None, *,
             record: bool = True) -> JobOutcome:
    """Fail the member's job for good (its error kept with the attempt unless `record` is False: a poison
    job's error names the errors already kept), remove its chunk audio, tell the listeners. A segment's
    failure fails its job, whoever holds the job's lease."""
    held = member.held
    member.ended = True
    try:
        if record:
            lease.record_error(ctx.store, held.job_id, held.attempt, ctx.worker_id, error)
    except RetryableError as err:
        log.warning("job %s: could not record its error (store down): %s", held.job_id, err)
    if member.segment is not None:
        segments.fail_job(ctx.store, held.job_id, str(error))
    else:
        lease.fail(ctx.store, held.job_id, ctx.worker_id, str(error))
    ctx.held.drop([held.job_id])
    discard_outputs(ctx, member)
    outcome = JobOutcome(held.job_id, JobStatus.FAILED, detail or str(error))
    ctx.listeners.job_failed(outcome)
    log.info("job %s: %s %s", outcome.job_id, outcome.status, outcome.detail)
    return outcome


def settle_lost(ctx: JobContext, member: Member) -> JobOutcome:
    """A member that is no longer ours: its attempt's stray chunk files go, and all of its chunk audio
    when the job ended without a result (cancelled, failed)."""
    member.ended = True
    ctx.held.drop([member.job_id])
    drop_strays(ctx, member)
    discard_outputs(ctx, member)
    return JobOutcome(member.job_id, lease.job_status(ctx.store, member.job_id),
                      member.lost or str(JobInterrupted(f"job {member.job_id} is no longer ours")))


def discard_outputs(ctx: JobContext, member: Member) -> None:
    """A job that ended without a result keeps no chunk audio (its rows stay for inspection, pointing at
    nothing: `ttsfleet retry` redoes them)."""
    if lease.job_status(ctx.store, member.job_id) in (JobStatus.FAILED, JobStatus.CANCELLED):
        member.files.cleanup()


def drop_strays(ctx: JobContext, member: Member) -> None:
    """A worker that lost a job removes the chunk files of its attempt that no chunk row points to (those
    it wrote after losing the lease); the rows' files, the successor's included, stay."""
    if not member.durable:
        return
    seg = member.segment
    tag = attempt_tag(member.held, (seg.idx, seg.attempt) if seg is not None else None)
    try:
        referenced = {str(c.audio_path).rsplit("/", 1)[-1] for c in lease.done_chunks(ctx.store, member.job_id)
                      if c.audio_path is not None}
        member.files.remove_unreferenced(tag, referenced)
    except (OSError, RetryableError) as err:
        log.warning("job %s: could not remove this attempt's stray chunk files: %s", member.job_id, err)
