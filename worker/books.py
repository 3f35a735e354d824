"""A book's `.m4b`, off the worker's critical path: each chapter is encoded to AAC as soon as it succeeds,
and the encoded chapters are joined into the `.m4b` without encoding again once every chapter has one
(`worker.book_audio`). The chapters have succeeded whatever happens here: a failure becomes a warning on them.

The encode runs in a `BookEncoder`, one thread per worker process beside synthesis, not on the job's own
thread: ffmpeg does the work in a subprocess, so the thread only waits on it (no GIL held) and the next job's
synthesis starts at once instead of after the encode. Not a Celery task: a worker's solo pool would run it
in place of synthesis, behind the same prefetch, and it would need a message type of its own; not a
process of its own: the thread shares the worker's store and output store as they are. A worker that stops
(SIGTERM, the end of `run`) drains the queue first; one that is killed between a chapter's success and its
encode leaves that chapter unencoded: every worker's reaper looks for such books (`unjoined_chapters`: all
chapters succeeded UNJOINED_AFTER_S ago, no `.m4b` since) and hands their unencoded chapters to its encoder.

Whoever records the last missing encode of a book joins it; two chapters finishing at once may both join
(the same file, put atomically), never neither: each records its encode before it looks.
"""

from __future__ import annotations

import base64
import logging
import queue
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import exists, func, or_, select, update

from schemas.db import Store
from schemas.errors import PermanentError, RetryableError
from schemas.job_options import JobOptions
from schemas.status import JobStatus
from schemas.tables import Book, Job, utcnow
from worker import book_audio, lease
from worker.context import JobContext
from worker.naming import output_key, slug

log = logging.getLogger("ttsfleet.worker.books")
NO_FFMPEG = "ffmpeg is not installed: no .m4b was made; the chapter files are complete"
UNJOINED_AFTER_S = 600.0  # a book finished this long ago without its .m4b lost an encode (its worker was killed)


def chapter_finished(ctx: JobContext, job_id: str) -> None:
    """A book chapter succeeded: encode it (and join its book when it is the last) in the process's
    `BookEncoder`, or here and now when there is none."""
    if ctx.book_queue is not None:
        ctx.book_queue(job_id)
    else:
        encode_and_join(ctx, job_id)


def encode_and_join(ctx: JobContext, job_id: str) -> None:
    """Encode chapter `job_id` for its book, then join the book if every chapter is encoded (needs ffmpeg)."""
    group: str | None = None
    try:
        group = _encode(ctx, job_id)
        if group is not None:
            _join(ctx, group)
    except (PermanentError, RetryableError, OSError) as err:
        for job in lease.group_jobs(ctx.store, group) if group is not None else []:
            lease.add_warning(ctx.store, job.id, f"the book's .m4b could not be made: {err}")
        log.warning("job %s: the book's .m4b could not be made: %s", job_id, err)


def _encode(ctx: JobContext, job_id: str) -> str | None:
    """Encode the chapter unless its current render already is; its book's id (None: not a finished chapter,
    or no ffmpeg)."""
    with ctx.store.read() as session:
        job = session.get(Job, job_id)
        if job is None or job.group_id is None or job.status != JobStatus.SUCCEEDED or job.audio_path is None:
            return None
        group, audio_path, options = job.group_id, job.audio_path, JobOptions.from_stored(job.options)
    if options.aac_path is not None and options.aac_render == options.render:
        return group
    store = ctx.outputs.store
    location = store.join(".chunks", job_id, f"book-r{options.render}.m4a")  # gc deletes it with the job
    with tempfile.TemporaryDirectory(prefix="ttsfleet-chapter-") as scratch:
        local = store.fetch(audio_path, Path(scratch) / "in")
        encoded = book_audio.encode_chapter(local, Path(scratch) / "chapter.m4a")
        if encoded is None:
            for chapter in lease.group_jobs(ctx.store, group):
                lease.add_warning(ctx.store, chapter.id, NO_FFMPEG)
            return None
        seconds = book_audio.encoded_duration_s(encoded)
        store.put_file(encoded, location)
    with ctx.store.session() as session:  # only onto the render it was made from
        row = session.get(Job, job_id, with_for_update=True)
        if row is None or JobOptions.from_stored(row.options).render != options.render:
            return None
        row.options = {**(row.options or {}), "aac_path": location, "aac_render": options.render, "aac_s": seconds}
    return group


def _join(ctx: JobContext, group: str) -> None:
    """Join the book's encoded chapters into its `.m4b` if every chapter succeeded and is encoded."""
    chapters = lease.group_jobs(ctx.store, group)
    encodes = [JobOptions.from_stored(j.options) for j in chapters]
    if not all(j.status == JobStatus.SUCCEEDED for j in chapters) or any(
            o.aac_path is None or o.aac_render != o.render or o.aac_s is None for o in encodes):
        return  # a chapter still to finish or be encoded: it joins the book then
    held = lease.claim_of_job(ctx.store, chapters[0].id)
    if held is None:
        return
    title = held.group_title or "book"
    store = ctx.outputs.store
    book_location = store.join(_book_key(held, title))
    cover = next((base64.b64decode(o.cover_b64) for o in encodes if o.cover_b64), None)
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as scratch:
        parts = [(j.title or f"Chapter {i + 1}", store.fetch(str(o.aac_path), Path(scratch) / str(i)),
                  float(o.aac_s or 0.0)) for i, (j, o) in enumerate(zip(chapters, encodes, strict=True))]
        built = book_audio.join_book(parts, title, Path(scratch) / "book.m4b", author=held.options.author,
                                     cover=_book_cover(ctx, group) or cover)
        if built is None:
            return
        store.put_file(built, book_location)
    _record_book(ctx, group, [j.id for j in chapters], book_location)


def _book_key(held: lease.Claim, title: str) -> str:
    """A named book's .m4b sits beside its chapters' folder (`Book.m4b`); older books' inside it."""
    key = output_key(held)
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    return f"{folder}.m4b" if held.output_name else f"{folder}/{slug(title)}.m4b".lstrip("/")


def _book_cover(ctx: JobContext, group: str) -> bytes | None:
    with ctx.store.read() as session:
        return session.scalar(select(Book.cover).where(Book.id == group))


def _record_book(ctx: JobContext, group: str, job_ids: list[str], location: str) -> None:
    """The .m4b on each chapter (`book_path`) and on the book's row, in one transaction."""
    with ctx.store.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids)).with_for_update()):
            job.options = {**(job.options or {}), "book_path": location}
        session.execute(update(Book).where(Book.id == group).values(m4b_path=location, m4b_built_at=utcnow()))


def unjoined_chapters(store: Store, *, older_than_s: float = UNJOINED_AFTER_S, limit: int = 20) -> list[str]:
    """Chapters to hand to an encoder for books (with a `books` row: submitted by the CLI or the API) whose
    chapters all succeeded, the last over `older_than_s` ago, with no `.m4b` joined since: each chapter
    whose current render has no encode, or (every chapter encoded, the join lost) the first chapter, whose
    encode is then skipped and the book joined. At most `limit` books a call; encode and join are
    idempotent, so a duplicate costs time, never a wrong file."""
    last_s = select(func.max(Job.finished_at)).where(Job.group_id == Book.id).scalar_subquery()
    unfinished = exists().where(Job.group_id == Book.id, Job.status != JobStatus.SUCCEEDED)
    with store.read() as session:  # per book, two lookups on the chapters' group_id index
        books = list(session.scalars(select(Book.id).where(
            ~unfinished, last_s < utcnow() - timedelta(seconds=older_than_s),
            or_(Book.m4b_built_at.is_(None), Book.m4b_built_at < last_s)).limit(limit)))
    found: list[str] = []
    for book_id in books:
        jobs = lease.group_jobs(store, book_id)
        unencoded = [j.id for j in jobs if (o := JobOptions.from_stored(j.options)).aac_path is None
                     or o.aac_render != o.render]
        found += unencoded or [jobs[0].id]
    return found


class BookEncoder:
    """The thread that encodes finished chapters and joins their books, one at a time, in the order they
    finished (see the module's docstring for why a thread)."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ttsfleet-book-encoder", daemon=True)
        self._thread.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def stop(self, timeout_s: float = 900.0) -> None:
        """Encode what is queued, then end the thread (waiting at most `timeout_s`)."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("book encoder: still busy after %.0f s; its queue is left unfinished", timeout_s)

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                encode_and_join(self._ctx, job_id)
            except Exception:  # never let one chapter end the thread: the next book still gets made
                log.exception("book encoder: job %s", job_id)
