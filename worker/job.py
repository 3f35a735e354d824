"""`synthesize_job`: claim a job, synthesize its missing chunks, assemble its file, finish it once.

A plain function, called by the Celery task and by the embedded `ttsfleet run`, tested without Celery.
Chunk audio is stored as each chunk finishes, so a crashed or redelivered job resumes where it stopped.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.db import Store
from schemas.errors import JobInterrupted, PermanentError, RetryableError, SynthesisFailed, WorkerStopping
from schemas.settings import WorkerSettings
from schemas.status import AudioFormat, Backend, DType, JobStatus
from schemas.voices import voice_speaker
from worker import audio, lease, segments, together
from worker.events import JobFigures, JobOutcome, Listener, Listeners
from worker.outputs import JobFiles
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
    # Names the jobs run together with it (worker.together), whose leases the heartbeat renews too.
    holding_together: Callable[[list[str]], None] = lambda _jobs: None
    # Jobs this process ended as companions (worker.together): their own deliveries, which come later,
    # are acknowledged after one status read instead of a claim and a search for segments to help with.
    ended_together: set[str] = field(default_factory=set)


def synthesize_job(job_id: str, ctx: JobContext) -> JobOutcome:
    """Run `job_id` to a terminal state, or resume it.

    Raises:
        RetryableError: the store or disk failed transiently; the job was put back (queued).
        WorkerStopping: `ctx.should_stop()` said so at a chunk boundary; the job was put back (queued).
        DeviceLost: CUDA is unusable; the job was put back and this process must exit.
        Anything unexpected (or Ctrl-C) is re-raised after the job was put back, its stored chunks kept.
    """
    if job_id in ctx.ended_together:
        ctx.ended_together.discard(job_id)
        status = lease.job_status(ctx.store, job_id)
        if status is not None and status.is_terminal:  # not re-rendered since: nothing to do
            return JobOutcome(job_id, status, "ended already, run together with another job")
    held = lease.claim(ctx.store, job_id, ctx.worker_id, ctx.settings.lease_s)
    if held is None:
        from worker.segment_run import help_with_segments  # it builds on this module: imported late

        return help_with_segments(job_id, ctx)
    if held.attempt > ctx.settings.max_attempts:
        return _poison(ctx, held)
    try:
        outcome, figures = _run(held, ctx)
    except JobInterrupted as err:
        _discard_outputs(ctx, held)
        drop_strays(ctx, held)
        return JobOutcome(job_id, lease.job_status(ctx.store, job_id), str(err))
    except PermanentError as err:
        _record_quietly(ctx, held, err)
        lease.fail(ctx.store, job_id, ctx.worker_id, str(err))
        _discard_outputs(ctx, held)
        return failed(ctx, JobOutcome(job_id, JobStatus.FAILED, str(err)))
    except BaseException as err:
        # Retryable, device lost, a bug, a full disk, Ctrl-C: never leave the job `running` under a lease
        # this process will keep renewing; put it back with its chunks and let the caller decide.
        if not isinstance(err, WorkerStopping):
            _record_quietly(ctx, held, err)
        _release_quietly(ctx, job_id)
        raise
    return finished(ctx, held, outcome, figures)


def finished(ctx: JobContext, held: lease.Claim, outcome: JobOutcome, figures: JobFigures | None) -> JobOutcome:
    if held.group_id is not None and outcome.status == JobStatus.SUCCEEDED:
        _maybe_build_book(ctx, held)
    if figures is not None:
        ctx.listeners.job_finished(outcome, figures)
    log.info("job %s: %s %s", held.job_id, outcome.status, outcome.detail)
    return outcome


def _run(held: lease.Claim, ctx: JobContext) -> tuple[JobOutcome, JobFigures | None]:
    engine = ctx.engine_for(voice_speaker(held.voice)[0])
    files = JobFiles(ctx.settings.output_location, held.job_id)
    pending = lease.pending_chunks(ctx.store, held.job_id)
    if pending and segments.ensure_segments(ctx.store, held.job_id, ctx.settings.segment_chars):
        from worker.segment_run import run_segments  # it builds on this module: imported late

        return run_segments(held, ctx, engine)
    if together.companions_wanted(held, pending, ctx.settings.join_jobs):
        others = together.claim_companions(ctx, held, ctx.settings.join_jobs - 1)
        result = together.run_together(held, others, ctx, engine, pending) if others else None
        if result is not None:
            return result
        pending = lease.pending_chunks(ctx.store, held.job_id) if others else pending
    total = held.chunks_total
    done = [total - len(pending)]
    seed = job_seed(held.job_id, held.options.get("seed"))
    dropped: set[str] = set()

    def save(chunk: ChunkAudio) -> None:
        # The attempt in the name: a former holder still running cannot overwrite what we recorded.
        location = files.save_chunk(f"{chunk.idx:06d}-{attempt_tag(held)}.wav", chunk.samples,
                                    engine.sample_rate_hz)
        lease.save_chunk(ctx.store, held.job_id, ctx.worker_id, chunk.idx, ctx.settings.lease_s,
                         **chunk_columns(chunk, location, engine.sample_rate_hz, held.attempt))
        dropped.update(chunk.dropped)
        done[0] += 1
        ctx.listeners.chunk_done(held.job_id, done[0], total)
        if ctx.should_stop():
            raise WorkerStopping(f"worker stopping: job {held.job_id} put back with {done[0]} of {total} chunks")

    run = synthesize_chunks(held, ctx, engine, pending, seed, save)
    return finish_job(held, ctx, engine, run, warnings_with(held, dropped), files)


def chunk_columns(chunk: ChunkAudio, location: str, sample_rate_hz: int, attempt: int) -> dict[str, Any]:
    """The chunk row's audio columns for `chunk`, stored at `location` by attempt `attempt`."""
    return {"audio_path": location, "samples": len(chunk.samples), "audio_s": len(chunk.samples) / sample_rate_hz,
            "synth_s": chunk.synth_s, "batch_size": chunk.batch_size, "attempt": attempt, "dtype": chunk.dtype,
            "fp32_redo": chunk.fp32_redo}


def warnings_with(held: lease.Claim, dropped: set[str]) -> list[str]:
    """The job's warnings, plus one naming the characters its voice could not speak (if any)."""
    warnings = list(held.warnings)
    if dropped:
        warnings.append("characters the voice cannot speak were skipped: " + "".join(sorted(dropped)))
    return warnings


def synthesize_chunks(held: lease.Claim, ctx: JobContext, engine: Engine, pending: list[lease.PendingChunk], seed: int,
                save: Callable[[ChunkAudio], None]) -> EngineRun | None:
    """Synthesize `pending` chunks, each voice's (narrator, dialogue) through its own engine and each
    speaker in its own batches, each chunk at its own speed factor times the job's (the engine batches one
    speed at a time); returns the runs' figures combined (None when nothing was pending).

    Raises:
        PermanentError: a chunk's voice has another sample rate than the job's, or no such speaker.
    """
    from worker.engine import ChunkInput, EngineRun

    speed = float(held.options.get("speed") or 1.0)
    by_voice: dict[str, list[lease.PendingChunk]] = {}
    for chunk in pending:
        by_voice.setdefault(chunk.voice or held.voice, []).append(chunk)
    runs: list[EngineRun] = []
    for voice, chunks in by_voice.items():
        name, speaker = voice_speaker(voice)
        voice_engine = ctx.engine_for(name)
        count = getattr(getattr(getattr(voice_engine, "voice", None), "model", None), "config", None)
        count = getattr(count, "num_speakers", None)
        if speaker is not None and isinstance(count, int) and speaker >= count:
            raise PermanentError(f"voice {name} has {count} speaker(s): no speaker {speaker}")
        if voice_engine.sample_rate_hz != engine.sample_rate_hz:
            raise PermanentError(f"voice {name} speaks at {voice_engine.sample_rate_hz} Hz, the job's voice at "
                                 f"{engine.sample_rate_hz} Hz: a job's voices must share one sample rate")
        try:
            inputs = [ChunkInput(c.idx, c.text, chunk_seed(seed, c.idx), speed=c.speed_with(speed),
                                 speaker_id=speaker) for c in chunks]
            runs.append(voice_engine.synthesize(inputs, on_chunk=save))
        finally:
            voice_engine.cleanup()
    if not runs:
        engine.cleanup()
        return None
    peaks = [r.peak_mem_bytes for r in runs if r.peak_mem_bytes is not None]
    return EngineRun(synth_s=sum(r.synth_s for r in runs), peak_mem_bytes=max(peaks) if peaks else None,
                     oom_retries=sum(r.oom_retries for r in runs), fp32_fallbacks=sum(r.fp32_fallbacks for r in runs),
                     batches=sum(r.batches for r in runs), max_batch_size=max(r.max_batch_size for r in runs))


def finish_job(held: lease.Claim, ctx: JobContext, engine: Engine, run: EngineRun | None,
            warnings: list[str], files: JobFiles) -> tuple[JobOutcome, JobFigures]:
    chunks = lease.done_chunks(ctx.store, held.job_id)
    missing = [c.idx for c in chunks if c.audio_path is None]
    if missing:
        raise SynthesisFailed(f"chunks {missing[:5]} have no audio after synthesis")
    out_location = files.store.join(output_key(held))
    # Assembled into this attempt's own folder; moved into place only by `finish` once it has won.
    # The worker in the name too: with segments, the worker completing the job and its lease holder (come
    # back on a redelivery) may both assemble the same attempt; only one wins `finish`, the other's
    # files must be its own to discard.
    owner = hashlib.sha256(ctx.worker_id.encode()).hexdigest()[:8]
    staged = files.staged(f"{attempt_tag(held)}-{owner}", out_location.rsplit("/", 1)[-1])
    assembled = audio.assemble(
        [audio.AssemblyPiece(files.local_copy(str(c.audio_path)), c.text, c.break_after) for c in chunks],
        engine.sample_rate_hz, AudioFormat(held.format), staged, title=held.title,
        loudness_lufs=held.options.get("loudness_lufs"), job_id=held.job_id, tags=_tags(held),
    )
    figures = JobFigures(
        card=engine.device.name, capability=engine.device.capability_str, backend=Backend(engine.device.backend),
        dtype=DType(engine.policy.dtype), chunks=len(chunks), audio_s=assembled.audio_s,
        synth_s=sum(c.synth_s or 0.0 for c in chunks), peak_mem_bytes=run.peak_mem_bytes if run else None,
        oom_retries=run.oom_retries if run else 0, fp32_fallbacks=sum(1 for c in chunks if c.fp32_redo),
        batches=run.batches if run else 0, runtime=engine.runtime,
    )
    if not lease.finish(ctx.store, held.job_id, ctx.worker_id, audio_path=out_location,
                        sample_rate_hz=assembled.sample_rate_hz, warnings=warnings, figures=figures,
                        publish=lambda: files.publish(assembled, out_location)):
        files.discard(assembled)  # only our own attempt's files: what the row points to is not ours
        raise JobInterrupted(f"job {held.job_id} is no longer held by this worker (cancelled or taken over)")
    files.keep_only({str(c.audio_path).rsplit("/", 1)[-1] for c in chunks})  # `rerender` reuses them
    return JobOutcome(held.job_id, JobStatus.SUCCEEDED, out_location), figures


def attempt_tag(held: lease.Claim) -> str:
    """`a<attempt>`, after a re-render `r<render>-a<attempt>`: attempts count afresh after a re-render, and
    its kept chunks' files must never be overwritten by a new attempt's."""
    render = int(held.options.get("render") or 0)
    return f"r{render}-a{held.attempt}" if render else f"a{held.attempt}"


def drop_strays(ctx: JobContext, held: lease.Claim) -> None:
    """A worker that lost its job removes the chunk files of its attempt that no chunk row points to (those
    it wrote after losing the lease); the rows' files, the successor's included, stay."""
    try:
        referenced = {str(c.audio_path).rsplit("/", 1)[-1] for c in lease.done_chunks(ctx.store, held.job_id)
                      if c.audio_path is not None}
        JobFiles(ctx.settings.output_location, held.job_id).remove_unreferenced(attempt_tag(held), referenced)
    except (OSError, RetryableError) as err:
        log.warning("job %s: could not remove this attempt's stray chunk files: %s", held.job_id, err)


def _discard_outputs(ctx: JobContext, held: lease.Claim) -> None:
    """A job that ended without a result keeps no chunk audio (its rows stay for inspection)."""
    if lease.job_status(ctx.store, held.job_id) in (JobStatus.FAILED, JobStatus.CANCELLED):
        JobFiles(ctx.settings.output_location, held.job_id).cleanup()


def _maybe_build_book(ctx: JobContext, held: lease.Claim) -> None:
    """When the last chapter of a book finishes, join the chapter files into one .m4b (needs ffmpeg).
    The chapters have succeeded whatever happens here: a failure becomes a warning on them."""
    try:
        _build_book(ctx, held)
    except (PermanentError, RetryableError, OSError) as err:
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
    files = JobFiles(ctx.settings.output_location, held.job_id)
    folder = output_key(held).rsplit("/", 1)[0] if "/" in output_key(held) else ""
    # A named book's .m4b sits beside its chapters' folder (`Book.m4b`); older books' inside it.
    book_key = f"{folder}.m4b" if held.output_name else f"{folder}/{slug(book_title)}.m4b".lstrip("/")
    book_location = files.store.join(book_key)
    cover_b64 = next((j.options.get("cover_b64") for j in chapters if (j.options or {}).get("cover_b64")), None)
    # ffmpeg needs local files: chapters fetched (when remote) and the book built in a scratch folder.
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as scratch:
        local = [(j.title or f"Chapter {i + 1}", files.store.fetch(str(j.audio_path), Path(scratch) / str(i)))
                 for i, j in enumerate(chapters)]
        built = audio.build_book(local, book_title, Path(scratch) / "book.m4b", author=held.options.get("author"),
                                 cover=base64.b64decode(cover_b64) if cover_b64 else None)
        if built is None:
            message = "ffmpeg is not installed: no .m4b was made; the chapter files are complete"
            for job_id in ids:
                lease.add_warning(ctx.store, job_id, message)
            return
        files.store.put_file(built, book_location)
    lease.set_options(ctx.store, ids, book_path=book_location)


def output_key(held: lease.Claim) -> str:
    """The job's audio under the output store: its output name (chosen at submit after its input:
    `story.wav`, `Book/01 - Title.wav`); jobs stored before names existed: `<job id>.<fmt>`, a book's
    chapters `<book>-<id>/<NN>-<chapter>.<fmt>`."""
    if held.output_name:
        return held.output_name
    if held.group_id is None:
        return f"{held.job_id}.{held.format}"
    folder = f"{slug(held.group_title or 'book')}-{held.group_id[:8]}"
    number = (held.group_index or 0) + 1
    return f"{folder}/{number:02d}-{slug(held.title or f'chapter {number}')}.{held.format}"


def _tags(held: lease.Claim) -> audio.Tags:
    """A book chapter is tagged with its book, author and track number; any job with its title."""
    if held.group_id is None:
        return audio.Tags(title=held.title)
    return audio.Tags(title=held.title, album=held.group_title, artist=held.options.get("author"),
                      track=(held.group_index or 0) + 1)


def output_path(output_dir: Path, held: lease.Claim) -> Path:
    """The job's audio file under a local `output_dir` (see `output_key`)."""
    return output_dir / output_key(held)


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
    return failed(ctx, JobOutcome(held.job_id, JobStatus.FAILED, f"poison: {error}"))


def _record_quietly(ctx: JobContext, held: lease.Claim, err: BaseException) -> None:
    try:
        lease.record_error(ctx.store, held.job_id, held.attempt, ctx.worker_id, err)
    except RetryableError:
        log.warning("job %s: could not record its error (store down): %s", held.job_id, err)


def failed(ctx: JobContext, outcome: JobOutcome) -> JobOutcome:
    ctx.listeners.job_failed(outcome)
    log.info("job %s: %s %s", outcome.job_id, outcome.status, outcome.detail)
    return outcome


def _release_quietly(ctx: JobContext, job_id: str) -> None:
    try:
        lease.release(ctx.store, job_id, ctx.worker_id)
        segments.release_held(ctx.store, ctx.worker_id)
    except RetryableError:
        log.warning("job %s: could not put it back (store down); its lease will expire", job_id)
