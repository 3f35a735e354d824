"""Finished audio seen from outside the workers: presigned URLs for job views, and the result TTL (`gc`).

`with_audio_urls` is what `status --json` and the HTTP service both call; `purge_expired` deletes the
audio (and side files, and a book's `.m4b`) of jobs that ended more than `ttl_s` ago and marks each
job with `audio_purged_at` by a compare-and-set, so two `gc` runs never double-count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from schemas.db import Store
from schemas.messages import JobView
from schemas.settings import Settings
from schemas.status import JobStatus
from schemas.storage import OutputStore, open_output_store, result_files
from schemas.tables import Chunk, Job, utcnow

GC_BATCH = 500  # jobs purged per `gc` pass at most; run it again (a CronJob does) for more


@dataclass(frozen=True, slots=True)
class Purged:
    """What one `gc` pass did: the jobs whose audio it deleted and how many files went."""

    job_ids: list[str]
    files: int


def with_audio_urls(views: Sequence[JobView], settings: Settings,
                    store: OutputStore | None = None) -> list[JobView]:
    """`views` with `audio_url`/`book_url` set to presigned URLs (valid `settings.audio_url_expires_s`)
    where the output store has them; unchanged for a local folder. Purged audio gets no URL."""
    if settings.output_url is None:
        return list(views)
    output = store or open_output_store(settings.output_location)
    expires_s = settings.audio_url_expires_s
    return [v.model_copy(update={
        "audio_url": None if v.audio_purged_at else output.signed_url(v.audio_path, expires_s),
        "book_url": None if v.audio_purged_at else output.signed_url(v.book_path, expires_s),
    }) for v in views]


def purge_expired(store: Store, output: OutputStore, ttl_s: float, *, now: datetime | None = None) -> Purged:
    """Delete the audio of jobs that ended (any terminal status) more than `ttl_s` seconds before `now`
    (naive UTC) and mark them purged. A book's `.m4b` goes with its chapters, and the kept chunk audio."""
    cutoff = (now or utcnow()) - timedelta(seconds=ttl_s)
    ended = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    with store.read() as session:
        jobs = session.scalars(select(Job).where(Job.status.in_(ended), Job.finished_at < cutoff,
                                                 Job.audio_purged_at.is_(None))
                               .order_by(Job.finished_at).limit(GC_BATCH)).all()
        todo = [(j.id, j.audio_path, (j.options or {}).get("book_path")) for j in jobs]
    purged: list[str] = []
    files = 0
    for job_id, audio_path, book_path in todo:
        with store.session() as session:
            won = session.execute(update(Job).where(Job.id == job_id, Job.audio_purged_at.is_(None))
                                  .values(audio_purged_at=utcnow())
                                  .execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
            if won:  # the kept chunk audio goes too: a later `rerender` then redoes every chunk
                session.execute(update(Chunk).where(Chunk.job_id == job_id).values(audio_path=None))
        if not won:
            continue  # another gc got there first
        locations = [*(result_files(audio_path) if audio_path else []), *([book_path] if book_path else [])]
        for location in locations:
            if output.exists(location):
                output.remove(location)
                files += 1
        output.remove(output.join(".chunks", job_id), recursive=True)
        purged.append(job_id)
    return Purged(purged, files)
