"""A book as `status BOOK_ID` and the HTTP API show it: its status and progress summed over its chapters,
its expected finish, the `.m4b` once it is ready, and each chapter as `status --json` shows a job.

The book's status follows its chapters: `running` while any runs (or some are done and others queued),
`queued` before any started, then `succeeded` when all did, `failed` when any failed, else `cancelled`.
Its ETA is that of its last unfinished chapter (producer/eta.py counts every job ahead of that one, the
book's earlier chapters included). The `.m4b` is ready when every chapter succeeded and each names the
same book file (a re-rendered chapter clears it until the book is built again).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from producer.books import BookNotFound, book_chapter_ids
from producer.eta import Throughput, job_eta
from producer.jobs import job_views
from schemas.db import Store
from schemas.job_options import JobOptions
from schemas.messages import JobView
from schemas.status import JobStatus
from schemas.tables import Book, Job

__all__ = ["BookView", "book_status", "book_view", "book_views_page"]

MAX_BOOKS_PAGE = 200


class BookView(BaseModel):
    """One book: metadata, progress over its chapters, ETA, the `.m4b` location when ready and its chapters
    (`chapter_numbers[i]` is `chapters[i]`'s number in the book's chapter list; 0: the opening line)."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    author: str | None = None
    language: str | None = None
    status: JobStatus
    chapters_done: int
    chapters_total: int
    chunks_done: int
    chunks_total: int
    audio_s: float
    eta_s: float | None = None
    created_at: str
    finished_at: str | None = None
    m4b_path: str | None = None
    has_cover: bool = False
    warnings: list[str] = Field(default_factory=list)
    options: dict[str, object] = Field(default_factory=dict)
    key_id: str | None = None
    chapters: list[JobView] = Field(default_factory=list)
    chapter_numbers: list[int] = Field(default_factory=list)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def book_status(statuses: Sequence[JobStatus]) -> JobStatus:
    """A book's status from its chapters' (see the module's docstring)."""
    if JobStatus.RUNNING in statuses:
        return JobStatus.RUNNING
    if JobStatus.QUEUED in statuses:
        return JobStatus.RUNNING if any(s.is_terminal for s in statuses) else JobStatus.QUEUED
    if all(s == JobStatus.SUCCEEDED for s in statuses):
        return JobStatus.SUCCEEDED
    return JobStatus.FAILED if JobStatus.FAILED in statuses else JobStatus.CANCELLED


def _m4b(chapters: Sequence[JobView]) -> str | None:
    paths = {c.book_path for c in chapters}
    ready = all(c.status == JobStatus.SUCCEEDED and c.audio_purged_at is None for c in chapters)
    return paths.pop() if ready and len(paths) == 1 and None not in paths else None


def book_view(store: Store, book_id: str, *, throughput: Throughput | None = None, with_eta: bool = True) -> BookView:
    """The book `book_id` with its chapters (and, `with_eta`, its expected finish).

    Raises:
        BookNotFound: no such book.
    """
    chapters = job_views(store, book_chapter_ids(store, book_id))
    with store.read() as session:
        row = session.get(Book, book_id)
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.group_id == book_id))}
    statuses = [c.status for c in chapters]
    status = book_status(statuses)
    first = jobs[chapters[0].id]
    eta_s: float | None = 0.0 if status.is_terminal else None
    if with_eta and not status.is_terminal:
        last = max((jobs[c.id] for c in chapters if not c.status.is_terminal), key=lambda j: (j.created_at, j.id))
        eta_s = job_eta(store, last.id, throughput).eta_s
    finished = [jobs[c.id].finished_at for c in chapters]
    return BookView(
        id=book_id, title=row.title if row else first.group_title or "book",
        author=row.author if row else JobOptions.from_stored(first.options).author,
        language=row.language if row else None, status=status,
        chapters_done=sum(1 for s in statuses if s == JobStatus.SUCCEEDED), chapters_total=len(chapters),
        chunks_done=sum(c.chunks_done for c in chapters), chunks_total=sum(c.chunks_total for c in chapters),
        audio_s=round(sum(c.audio_s or 0.0 for c in chapters), 3), eta_s=eta_s,
        created_at=_iso(row.created_at if row else first.created_at) or "",
        finished_at=_iso(max(f for f in finished if f is not None)) if status.is_terminal and any(finished) else None,
        m4b_path=_m4b(chapters), has_cover=bool(row.cover) if row else False,
        warnings=list(row.warnings or []) if row else [], options=dict(row.options or {}) if row else {},
        key_id=row.key_id if row else None, chapters=chapters,
        chapter_numbers=[JobOptions.from_stored(jobs[c.id].options).chapter or 0 for c in chapters])


def book_views_page(store: Store, key_id: str | None, *, limit: int, offset: int,
                    throughput: Throughput | None = None) -> tuple[list[BookView], int]:
    """A page of books newest first (`key_id` None: every book; else that key's) and how many there are.

    Raises:
        BookNotFound: never for a listed book (a book whose chapters are all gone is left out).
    """
    query = select(Book.id)
    counted = select(func.count()).select_from(Book)
    if key_id is not None:
        query, counted = query.where(Book.key_id == key_id), counted.where(Book.key_id == key_id)
    with store.read() as session:
        ids = list(session.scalars(query.order_by(Book.created_at.desc(), Book.id).limit(limit).offset(offset)))
        total = int(session.scalar(counted) or 0)
    views = []
    for book_id in ids:
        try:
            views.append(book_view(store, book_id, throughput=throughput))
        except BookNotFound:
            continue
    return views, total
