"""Finished audio seen from outside the workers: presigned URLs for job views, and the result TTL (`gc`).

`with_audio_urls` is what `status --json` and the HTTP service both call; `purge_expired` deletes the
audio (and side files, a book's `.m4b`, and the kept chunk audio) of jobs that ended more than `ttl_s` ago.
Each job is purged under a lease, in three steps: take it (a compare-and-set on the state `gc` read it in:
status, finish time, not purged, no lease held), delete its files, then mark it purged and give the lease
back. `rerender` and `retry` refuse a job whose lease is held, so the files deleted are always the ones the
job had when `gc` read it: a job re-rendered meanwhile finishes anew and no longer matches. When the store
fails mid-delete the job is given back unmarked and the pass stops, so the next pass deletes what is left
(marking first lost those files for good).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update

from schemas.db import Store, compare_and_set
from schemas.errors import RetryableError, first_line
from schemas.job_options import JobOptions
from schemas.messages import JobView
from schemas.settings import Settings
from schemas.status import JobStatus
from schemas.storage import OutputStore, open_output_store, result_files
from schemas.tables import Chunk, Job, utcnow

GC_BATCH = 500  # jobs purged per `gc` pass at most; run it again (a CronJob does) for more
PURGE_LEASE_S = 300  # how long `gc` holds a job while deleting its files (a dead `gc` delays it this long)
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Purged:
    """What one `gc` pass did: the jobs whose audio it deleted, how many files went, and why it stopped
    early (None: it did not)."""

    job_ids: list[str]
    files: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Expired:
    id: str
    status: JobStatus
    finished_at: datetime
    audio_path: str | None
    book_path: str | None


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
    (naive UTC) and mark them purged, at most GC_BATCH of them. A store failure stops the pass (`error`)."""
    cutoff = (now or utcnow()) - timedelta(seconds=ttl_s)
    owner = f"gc-{uuid.uuid4().hex[:12]}"
    purged: list[str] = []
    files = 0
    for job in _expired(store, cutoff):
        if not _take(store, job, owner):
            continue  # re-rendered, retried, or taken by another gc since it was read
        try:
            files += _delete_files(output, job)
        except (RetryableError, OSError) as err:
            _give_back(store, job.id, owner)
            return Purged(purged, files, f"{type(err).__name__}: {first_line(err)}")
        _mark_purged(store, job.id, owner)
        purged.append(job.id)
    return Purged(purged, files)


def _expired(store: Store, cutoff: datetime) -> list[_Expired]:
    with store.read() as session:
        jobs = session.scalars(select(Job).where(Job.status.in_(ENDED), Job.finished_at < cutoff,
                                                 Job.audio_purged_at.is_(None))
                               .order_by(Job.finished_at).limit(GC_BATCH)).all()
        return [_Expired(j.id, JobStatus(j.status), j.finished_at, j.audio_path,
                         JobOptions.from_stored(j.options).book_path) for j in jobs if j.finished_at is not None]


def _take(store: Store, job: _Expired, owner: str) -> bool:
    """Compare-and-set: the job is ours to purge if it is still as it was read and nobody holds it."""
    now = utcnow()
    with store.session() as session:
        return compare_and_set(session, update(Job).where(
            Job.id == job.id, Job.status == job.status, Job.finished_at == job.finished_at,
            Job.audio_purged_at.is_(None), lease_is_free(now)).values(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=PURGE_LEASE_S)))


def lease_is_free(now: datetime) -> ColumnElement[bool]:
    """No live lease on the job: `rerender` and `retry` leave a job alone while `gc` holds it."""
    return or_(Job.lease_owner.is_(None), Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


def _delete_files(output: OutputStore, job: _Expired) -> int:
    """Delete the job's result, side files, book and kept chunk audio; how many files existed."""
    found = 0
    for location in [*(result_files(job.audio_path) if job.audio_path else []), *filter(None, [job.book_path])]:
        found += output.exists(location)
        output.remove(location)  # removed whatever `exists` said: a missing file is no error
    output.remove(output.join(".chunks", job.id), recursive=True)
    return found


def _give_back(store: Store, job_id: str, owner: str) -> None:
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False))


def _mark_purged(store: Store, job_id: str, owner: str) -> None:
    """The job's files are gone: mark it, forget its chunks' audio (a later `rerender` redoes every chunk)
    and give the lease back, in one transaction."""
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                        .values(audio_purged_at=utcnow(), lease_owner=None, lease_expires_at=None)
                        .execution_options(synchronize_session=False))
        session.execute(update(Chunk).where(Chunk.job_id == job_id).values(audio_path=None))
