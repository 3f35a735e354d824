"""Re-rendering a finished job under a new lexicon or a corrected text, redoing only what changed.

The job's chunks are cut again exactly as a new submission would cut them (`producer.submit.plan_speech`),
then aligned with the stored ones by content (difflib, so an edit in chunk 7 keeps chunks 1-6 and 8-20
even when it adds or removes chunks). Chunks whose spoken text is unchanged keep their stored audio;
the others are stored without audio. In one transaction, under a compare-and-set on the job's state,
the job goes back to `queued`; a worker then synthesizes only the chunks without audio (the same path
that resumes a crashed job) and assembles the file again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, insert, select, update

from producer.jobs import job_views
from producer.results import lease_is_free
from producer.ssml import is_ssml
from producer.submit import chunk_rows, job_key, plan_speech
from schemas.db import Store, compare_and_set
from schemas.errors import InvalidInput, JobNotFound
from schemas.job_options import JobOptions
from schemas.messages import JobRequest, JobView
from schemas.settings import ProducerSettings
from schemas.status import AudioFormat, JobStatus
from schemas.tables import Chunk, Job, JobMetrics, Segment, utcnow

# The stored audio of a chunk, carried over to its new row when its spoken text is unchanged.
_AUDIO_COLUMNS = ("audio_path", "audio_offset", "samples", "audio_s", "synth_s", "batch_size", "attempt", "dtype",
                  "fp32_redo", "done_at")
_RERENDERABLE = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Rerendered:
    """The job after the re-render was queued, how many chunks will be synthesized again, and whether it
    was queued at all (False: nothing the voice says changed; the job is left as it was)."""

    view: JobView
    chunks_redone: int
    queued: bool


def rerender(store: Store, job_id: str, settings: ProducerSettings, *, lexicon: Mapping[str, str] | None = None,
             text: str | None = None) -> Rerendered:
    """Put `job_id` back in the queue with `lexicon` (replacing the job's own; None: keep it) and/or `text`
    (None: keep it), keeping the audio of every chunk whose spoken text does not change.

    Raises:
        JobNotFound: no such job.
        InvalidInput: the job is queued or running, the new text has nothing to speak or is malformed
            SSML, the job changed state meanwhile, or an identical job already exists.
    """
    job = _load(store, job_id)
    if job.status not in _RERENDERABLE:
        raise InvalidInput(f"job {job_id} is {job.status.value}: only a finished, failed or cancelled job can be "
                           "re-rendered; wait for it (ttsfleet wait) or cancel it first")
    options = JobOptions.from_stored(job.options)
    own = dict(lexicon) if lexicon is not None else dict(options.lexicon)
    new_text = job.text if text is None else text
    where = job.source or job_id
    request = JobRequest(text=new_text, voice=job.voice, format=AudioFormat(job.format), lexicon=own or None,
                         speed=options.speed, loudness_lufs=options.loudness_lufs,
                         source=where, title=job.title, group_title=job.group_title, group_index=job.group_index)
    if len(new_text) > settings.max_text_chars:
        raise InvalidInput(f"{where}: text has {len(new_text):,} characters, above the limit of "
                           f"{settings.max_text_chars:,} (TTSFLEET_MAX_TEXT_CHARS)")
    old = _chunks(store, job_id)
    if any(c.voice is not None for c in old) and not is_ssml(job.text):  # SSML spans name theirs in the text
        raise InvalidInput(f"job {job_id} speaks with narrator and dialogue voices: rerender keeps one voice a job "
                           "today; submit the corrected text again with --voice narrator=...,dialogue=...")
    plan = plan_speech(new_text, job.voice, request.lexicon, request.speed, settings, where)
    # A failed or cancelled job's chunk audio was removed when it stopped, a purged one's by `gc`: only a
    # succeeded, unpurged job has any.
    has_audio = job.status == JobStatus.SUCCEEDED and job.audio_purged_at is None
    rows = _aligned(old if has_audio else [], chunk_rows(job_id, plan))
    redone = sum(1 for row in rows if row.get("audio_path") is None)
    unchanged = [(c.text, c.break_after, c.voice, c.speed) for c in old] == \
        [(r["text"], r["break_after"], r["voice"], r["speed"]) for r in rows]
    unchanged = unchanged and has_audio  # a purged job's audio is made again even for the same text
    planned = JobOptions.from_stored(plan.options)  # the lexicon and speed the text is now said with
    kept = replace(options, lexicon=planned.lexicon, speed=planned.speed)
    new_options = replace(kept, book_path=None, render=options.render + 1)
    shape = {"voice": job.voice, "format": job.format, **{k: v for k, v in new_options.stored().items()
                                                          if k in ("loudness_lufs", "speed", "lexicon", "tenant")}}
    values = {"text": new_text, "idempotency_key": job_key(request, shape), "warnings": list(plan.spoken.warnings),
              "chars": plan.spoken.chars}
    if unchanged:  # the audio stands: keep the new text and lexicon
        _record(store, job, values | {"options": kept.stored()})
        return Rerendered(job_views(store, [job_id])[0], 0, False)
    values |= {"options": new_options.stored(), "chunks_total": len(rows), "chunks_done": len(rows) - redone}
    _requeue(store, job, values, rows)
    return Rerendered(job_views(store, [job_id])[0], redone, True)


def _load(store: Store, job_id: str) -> Job:
    with store.read() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no such job: {job_id}")
        session.expunge(job)
        return job


def _chunks(store: Store, job_id: str) -> list[Chunk]:
    with store.read() as session:
        chunks = list(session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)))
        session.expunge_all()
        return chunks


def _aligned(old: list[Chunk], new: list[dict[str, object]]) -> list[dict[str, object]]:
    """`new` rows, each carrying the stored audio of an old chunk with the same spoken text, voice and speed
    (SSML spans), matched in order by difflib's longest common blocks (a changed, added or removed chunk
    shifts nothing else)."""
    matcher = difflib.SequenceMatcher(None, [(c.text, c.voice, c.speed) for c in old],
                                      [(r["text"], r["voice"], r["speed"]) for r in new], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            source = old[block.a + k]
            if source.audio_path is not None:
                new[block.b + k] |= {column: getattr(source, column) for column in _AUDIO_COLUMNS}
    return new


def _record(store: Store, job: Job, values: dict[str, object]) -> None:
    """Store a new text and lexicon that change nothing the voice says (compare-and-set on the state)."""
    with store.session() as session:
        _refuse_taken_key(session, job, values)
        session.execute(update(Job).where(Job.id == job.id, Job.status == job.status).values(**values))


def _refuse_taken_key(session: Any, job: Job, values: dict[str, object]) -> None:
    taken = session.scalar(select(Job.id).where(Job.idempotency_key == values["idempotency_key"], Job.id != job.id))
    if taken is not None:
        raise InvalidInput(f"job {taken} already has this text, voice and lexicon; use it instead")


def _requeue(store: Store, job: Job, values: dict[str, object], rows: list[dict[str, object]]) -> None:
    """One transaction: the job back to queued (compare-and-set on the state it was read in, purged or not,
    and on no `gc` holding it), its chunks replaced, its old metrics row removed (the new run writes the
    job's figures once more), its purge mark cleared (its audio is made again)."""
    now = utcnow()
    purged = (Job.audio_purged_at.is_(None) if job.audio_purged_at is None
              else Job.audio_purged_at == job.audio_purged_at)
    with store.session() as session:
        _refuse_taken_key(session, job, values)
        if not compare_and_set(session, update(Job).where(
                Job.id == job.id, Job.status == job.status, purged, lease_is_free(now)).values(
                status=JobStatus.QUEUED, attempts=0, error=None, finished_at=None, started_at=None,
                lease_owner=None, lease_expires_at=None, worker_id=None, audio_path=None, audio_s=None,
                audio_purged_at=None, created_at=now, published_at=now, **values)):
            raise InvalidInput(f"job {job.id} changed state while it was being re-rendered (or `gc` is deleting "
                               "its audio); try again")
        session.execute(delete(Chunk).where(Chunk.job_id == job.id))
        session.execute(insert(Chunk), rows)
        session.execute(delete(JobMetrics).where(JobMetrics.job_id == job.id))
        session.execute(delete(Segment).where(Segment.job_id == job.id))  # cut afresh when it is leased again
