"""`synthesize_job`: claim a job, synthesize its missing chunks, assemble its file, finish it once.

A plain function, called by the Celery task and by the embedded `ttsfleet run`, tested without Celery.
Chunk audio is stored as each chunk finishes, so a crashed or redelivered job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.db import Store
from schemas.errors import JobInterrupted, PermanentError, RetryableError, SynthesisFailed, WorkerStopping
from schemas.scheduling import fleet_speed
from schemas.settings import WorkerSettings
from schemas.status import AudioFormat, Backend, DType, JobStatus
from worker import audio, lease, segments
from worker.events import JobFigures, JobOutcome, Listener, Listeners
from worker.reaper import Republish

if TYPE_CHECKING:
    from worker.engine import ChunkAudio, Engine, EngineRun

log = logging.getLogger("ttsfleet.job")
MAX_HELP = 64  # help deliveries one long job sends at most when it is cut into segments


@dataclass
class JobContext:
    """What a job needs from the process running it; built once per worker process."""

    store: Store
    settings: WorkerSettings
    worker_id: str
    engine_for: Callable[[str], Engine]
    listeners: Listener = field(default_factory=Listeners)
    should_stop: Callable[[], bool] = lambda: False  # asked at every chunk boundary (SIGTERM)
    # Sends a job id to the broker again: how a worker cutting a long job into segments calls for help.
    republish: Callable[[Republish], None] = lambda _job: None
    holding: Callable[[str | None], None] = lambda _job: None  # names the job whose lease the heartbeat renews


def synthesize_job(job_id: str, ctx: JobContext) -> JobOutcome:
    """Run `job_id` to a terminal state, or resume it.

    Raises:
        RetryableError: the store or disk failed transiently; the job was put back (queued).
        WorkerStopping: `ctx.should_stop()` said so at a chunk boundary; the job was put back (queued).
        DeviceLost: CUDA is unusable; the job was put back and this process must exit.
        Anything unexpected (or Ctrl-C) is re-raised after the job was put back, its stored chunks kept.
    """
    held = lease.claim(ctx.store, job_id, ctx.worker_id, ctx.settings.lease_s)
    if held is None:
        return help_with_segments(job_id, ctx)
    if held.attempt > ctx.settings.max_attempts:
        return _poison(ctx, held)
    try:
        outcome, figures = _run(held, ctx)
    except JobInterrupted as err:
        _discard_outputs(ctx, held)
        return JobOutcome(job_id, lease.job_status(ctx.store, job_id), str(err))
    except PermanentError as err:
        _record_quietly(ctx, held, err)
        lease.fail(ctx.store, job_id, ctx.worker_id, str(err))
        _discard_outputs(ctx, held)
        return _failed(ctx, JobOutcome(job_id, JobStatus.FAILED, str(err)))
    except BaseException as err:
        # Retryable, device lost, a bug, a full disk, Ctrl-C: never leave the job `running` under a lease
        # this process will keep renewing; put it back with its chunks and let the caller decide.
        if not isinstance(err, WorkerStopping):
            _record_quietly(ctx, held, err)
        _release_quietly(ctx, job_id)
        raise
    return _finished(ctx, held, outcome, figures)


def _finished(ctx: JobContext, held: lease.Claim, outcome: JobOutcome, figures: JobFigures | None) -> JobOutcome:
    if held.group_id is not None and outcome.status == JobStatus.SUCCEEDED:
        _maybe_build_book(ctx, held)
    if figures is not None:
        ctx.listeners.job_finished(outcome, figures)
    log.info("job %s: %s %s", held.job_id, outcome.status, outcome.detail)
    return outcome


def _run(held: lease.Claim, ctx: JobContext) -> tuple[JobOutcome, JobFigures | None]:
    engine = ctx.engine_for(held.voice)
    chunk_dir = _chunk_dir(ctx, held.job_id)
    pending = lease.pending_chunks(ctx.store, held.job_id)
    if pending and segments.ensure_segments(ctx.store, held.job_id, ctx.settings.segment_chars):
        return _run_segments(held, ctx, engine)
    total = held.chunks_total
    done = [total - len(pending)]
    seed = job_seed(held.job_id, held.options.get("seed"))
    dropped: set[str] = set()

    def save(chunk: ChunkAudio) -> None:
        # The attempt in the name: a former holder still running cannot overwrite what we recorded.
        path = chunk_dir / f"{chunk.idx:06d}-a{held.attempt}.wav"
        audio.write_chunk(path, chunk.samples, engine.sample_rate_hz)
        lease.save_chunk(ctx.store, held.job_id, ctx.worker_id, chunk.idx, ctx.settings.lease_s,
                         audio_path=str(path), samples=len(chunk.samples),
                         audio_s=len(chunk.samples) / engine.sample_rate_hz, synth_s=chunk.synth_s,
                         batch_size=chunk.batch_size, attempt=held.attempt, dtype=chunk.dtype,
                         fp32_redo=chunk.fp32_redo)
        dropped.update(chunk.dropped)
        done[0] += 1
        ctx.listeners.chunk_done(held.job_id, done[0], total)
        if ctx.should_stop():
            raise WorkerStopping(f"worker stopping: job {held.job_id} put back with {done[0]} of {total} chunks")

    from worker.engine import ChunkInput

    inputs = [ChunkInput(c.idx, c.text, chunk_seed(seed, c.idx)) for c in pending]
    try:
        run = engine.synthesize(inputs, on_chunk=save) if inputs else None
    finally:
        engine.cleanup()
    warnings = list(held.warnings)
    if dropped:
        warnings.append("characters the voice cannot speak were skipped: " + "".join(sorted(dropped)))
    return _finish(held, ctx, engine, run, warnings)


def _finish(held: lease.Claim, ctx: JobContext, engine: Engine, run: EngineRun | None,
            warnings: list[str]) -> tuple[JobOutcome, JobFigures]:
    chunks = lease.done_chunks(ctx.store, held.job_id)
    missing = [c.idx for c in chunks if c.audio_path is None]
    if missing:
        raise SynthesisFailed(f"chunks {missing[:5]} have no audio after synthesis")
    out_path = output_path(ctx.settings.output_dir.resolve(), held)
    # Assembled into this attempt's own folder; moved into place only by `finish` once it has won.
    # The worker in the name too: with segments, the worker completing the job and its lease holder (come
    # back on a redelivery) may both assemble the same attempt; only one wins `finish`, the other's
    # files must be its own to discard.
    owner = hashlib.sha256(ctx.worker_id.encode()).hexdigest()[:8]
    staged = _chunk_dir(ctx, held.job_id) / f"a{held.attempt}-{owner}" / out_path.name
    assembled = audio.assemble(
        [audio.AssemblyPiece(Path(str(c.audio_path)), c.text, c.break_after) for c in chunks],
        engine.sample_rate_hz, AudioFormat(held.format), staged, title=held.title,
        loudness_lufs=held.options.get("loudness_lufs"),
    )
    figures = JobFigures(
        card=engine.device.name, capability=engine.device.capability_str, backend=Backend(engine.device.backend),
        dtype=DType(engine.policy.dtype), chunks=len(chunks), audio_s=assembled.audio_s,
        synth_s=sum(c.synth_s or 0.0 for c in chunks), peak_mem_bytes=run.peak_mem_bytes if run else None,
        oom_retries=run.oom_retries if run else 0, fp32_fallbacks=sum(1 for c in chunks if c.fp32_redo),
        batches=run.batches if run else 0, runtime=engine.runtime,
    )
    if not lease.finish(ctx.store, held.job_id, ctx.worker_id, audio_path=str(out_path),
                        sample_rate_hz=assembled.sample_rate_hz, warnings=warnings, figures=figures,
                        publish=lambda: audio.publish(assembled, out_path)):
        audio.discard(assembled)  # only our own attempt's files: what the row points to is not ours
        raise JobInterrupted(f"job {held.job_id} is no longer held by this worker (cancelled or taken over)")
    shutil.rmtree(_chunk_dir(ctx, held.job_id), ignore_errors=True)
    return JobOutcome(held.job_id, JobStatus.SUCCEEDED, str(out_path)), figures


def _run_segments(held: lease.Claim, ctx: JobContext, engine: Engine) -> tuple[JobOutcome, JobFigures | None]:
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
    engine = ctx.engine_for(seg.voice)
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
        shutil.rmtree(_chunk_dir(ctx, seg.job_id), ignore_errors=True)
        return _failed(ctx, JobOutcome(seg.job_id, JobStatus.FAILED, str(err)))
    except BaseException:
        segments.release_held(ctx.store, ctx.worker_id)
        raise
    held = lease.claim_of_job(ctx.store, seg.job_id)
    return _finished(ctx, held, outcome, figures) if held is not None else outcome


def _speeds(ctx: JobContext) -> tuple[float | None, float | None]:
    """This card's measured speed for its default voice, and the fleet's typical one (None: unmeasured)."""
    measured = segments.measured_speeds(ctx.store, ctx.settings.voice)
    card = ctx.engine_for(ctx.settings.voice).device.name
    mine = [speed for (name, _dtype), speed in measured.items() if name == card]
    return (max(mine) if mine else None), fleet_speed(list(measured.values()))


def _run_segment(seg: segments.SegmentClaim, ctx: JobContext, engine: Engine) -> tuple[bool, EngineRun | None]:
    """Synthesize the segment's missing chunks under its lease; True when our chunk completed the job."""
    chunk_dir = _chunk_dir(ctx, seg.job_id)
    completed = [False]
    dropped: set[str] = set()
    seed = job_seed(seg.job_id, lease.job_options(ctx.store, seg.job_id).get("seed"))

    def save(chunk: ChunkAudio) -> None:
        # Segment and attempt in the name: a former holder still running cannot overwrite our file.
        path = chunk_dir / f"{chunk.idx:06d}-s{seg.idx}a{seg.attempt}.wav"
        audio.write_chunk(path, chunk.samples, engine.sample_rate_hz)
        last, done, total = segments.save_chunk(
            ctx.store, seg, ctx.worker_id, chunk.idx, ctx.settings.lease_s, audio_path=str(path),
            samples=len(chunk.samples), audio_s=len(chunk.samples) / engine.sample_rate_hz, synth_s=chunk.synth_s,
            batch_size=chunk.batch_size, attempt=seg.attempt, dtype=chunk.dtype, fp32_redo=chunk.fp32_redo)
        completed[0] |= last
        dropped.update(chunk.dropped)
        ctx.listeners.chunk_done(seg.job_id, done, total)
        if ctx.should_stop():
            raise WorkerStopping(f"worker stopping: segment {seg.idx} of job {seg.job_id} put back")

    from worker.engine import ChunkInput

    inputs = [ChunkInput(c.idx, c.text, chunk_seed(seed, c.idx)) for c in segments.pending_chunks(ctx.store, seg)]
    try:
        run = engine.synthesize(inputs, on_chunk=save) if inputs else None
    finally:
        engine.cleanup()
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
    return _finish(held, ctx, engine, run, list(held.warnings))


def _chunk_dir(ctx: JobContext, job_id: str) -> Path:
    return ctx.settings.output_dir.resolve() / ".chunks" / job_id


def _discard_outputs(ctx: JobContext, held: lease.Claim) -> None:
    """A job that ended without a result keeps no chunk audio (its rows stay for inspection)."""
    if lease.job_status(ctx.store, held.job_id) in (JobStatus.FAILED, JobStatus.CANCELLED):
        shutil.rmtree(_chunk_dir(ctx, held.job_id), ignore_errors=True)


def _maybe_build_book(ctx: JobContext, held: lease.Claim) -> None:
    """When the last chapter of a book finishes, join the chapter files into one .m4b (needs ffmpeg).
    The chapters have succeeded whatever happens here: a failure becomes a warning on them."""
    try:
        _build_book(ctx, held)
    except (PermanentError, OSError) as err:
        assert held.group_id is not None
        for job in lease.group_jobs(ctx.store, held.group_id):
            lease.add_warning(ctx.store, job.id, f"the book's .m4b could not be made: {err}")


def _build_book(ctx: JobContext, held: lease.Claim) -> None:
    assert held.group_id is not None
    chapters = lease.group_jobs(ctx.store, held.group_id)
    if not all(j.status == JobStatus.SUCCEEDED for j in chapters):
        return
    ids = [j.id for j in chapters]
    book_title = held.group_title or "book"
    book_path = output_path(ctx.settings.output_dir.resolve(), held).parent / f"{slug(book_title)}.m4b"
    built = audio.build_book([(j.title or f"Chapter {i + 1}", Path(str(j.audio_path))) for i, j in enumerate(chapters)],
                             book_title, book_path)
    if built is None:
        message = "ffmpeg is not installed: no .m4b was made; the chapter files are complete"
        for job_id in ids:
            lease.add_warning(ctx.store, job_id, message)
        return
    lease.set_options(ctx.store, ids, book_path=str(built))


def output_path(output_dir: Path, held: lease.Claim) -> Path:
    """`OUT/<job id>.<fmt>`; a book's chapters go to `OUT/<book>-<id>/<NN>-<chapter>.<fmt>`."""
    if held.group_id is None:
        return output_dir / f"{held.job_id}.{held.format}"
    folder = output_dir / f"{slug(held.group_title or 'book')}-{held.group_id[:8]}"
    number = (held.group_index or 0) + 1
    return folder / f"{number:02d}-{slug(held.title or f'chapter {number}')}.{held.format}"


def slug(text: str, max_len: int = 60) -> str:
    cleaned = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-")
    return cleaned[:max_len].rstrip("-") or "untitled"


def job_seed(job_id: str, job_option: Any) -> int:
    """The job's base seed: its own option, else derived from the id (stable across redeliveries)."""
    if job_option is not None:
        return int(job_option)
    return int(hashlib.sha256(job_id.encode()).hexdigest()[:8], 16)


def chunk_seed(seed: int, idx: int) -> int:
    return (seed * 1_000_003 + idx) % (2**31 - 1)


def _poison(ctx: JobContext, held: lease.Claim) -> JobOutcome:
    """Fail a job claimed more than `max_attempts` times, naming the last error an attempt recorded."""
    last = lease.last_error(ctx.store, held.job_id)
    cause = f"last error: {last}" if last else "no error was recorded: the worker process died each time"
    error = f"gave up after {held.attempt - 1} attempts that did not finish; {cause}"
    lease.fail(ctx.store, held.job_id, ctx.worker_id, error)
    _discard_outputs(ctx, held)
    return _failed(ctx, JobOutcome(held.job_id, JobStatus.FAILED, f"poison: {error}"))


def _record_quietly(ctx: JobContext, held: lease.Claim, err: BaseException) -> None:
    try:
        lease.record_error(ctx.store, held.job_id, held.attempt, ctx.worker_id, err)
    except RetryableError:
        log.warning("job %s: could not record its error (store down): %s", held.job_id, err)


def _failed(ctx: JobContext, outcome: JobOutcome) -> JobOutcome:
    ctx.listeners.job_failed(outcome)
    log.info("job %s: %s %s", outcome.job_id, outcome.status, outcome.detail)
    return outcome


def _release_quietly(ctx: JobContext, job_id: str) -> None:
    try:
        lease.release(ctx.store, job_id, ctx.worker_id)
        segments.release_held(ctx.store, ctx.worker_id)
    except RetryableError:
        log.warning("job %s: could not put it back (store down); its lease will expire", job_id)
