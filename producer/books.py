"""Books in the store: the `books` row each submitted EPUB or PDF gets, and book ids where job ids are taken.

A book's id is the `group_id` its chapter jobs share (chosen at submit from the file, the book's title and
the jobs' shape), so the same book submitted again with the same voice and format is the same book, and a
second selection of its chapters adds to it. The row is written after the jobs (their `group_id` is only
known then); a book whose row is missing (submitted before books existed) is still found by its chapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from producer.chapters import BookRead
from producer.naming import IN_LIST_MAX
from producer.submit import Submitted
from schemas.db import Store
from schemas.errors import JobNotFound
from schemas.messages import JobRequest
from schemas.tables import Book, Job, utcnow

__all__ = ["BookNotFound", "book_chapter_ids", "expand_ids", "record_books"]


class BookNotFound(JobNotFound):
    """Raised for a book id that names no book (or another tenant's: the same answer)."""


def record_books(store: Store, reads: Sequence[BookRead], requests: Sequence[JobRequest],
                 results: Sequence[Submitted], *, options: Mapping[str, object],
                 key_id: str | None = None) -> dict[str, str]:
    """The `books` row of every book among `requests` (whose jobs `results` are, in the same order), unless
    it exists; returns job id -> book id for the chapter jobs. `options`: what the book was submitted with
    (voice, format, chapters, ...); `key_id`: the API key whose book it is (None: the command line's)."""
    by_source = {read.source: read for read in reads}
    jobs = [r.id for r, q in zip(results, requests, strict=True) if q.source in by_source]
    groups = _group_ids(store, jobs)
    book_of: dict[str, str] = {}
    rows: dict[str, dict[str, object]] = {}
    for result, request in zip(results, requests, strict=True):
        group = groups.get(result.id)
        if group is None or request.source not in by_source:
            continue
        book_of[result.id] = group
        if group not in rows:
            rows[group] = _row(group, by_source[request.source], options, key_id)
    _insert_new(store, rows)
    return book_of


def _group_ids(store: Store, job_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    with store.read() as session:
        for start in range(0, len(job_ids), IN_LIST_MAX):
            part = job_ids[start:start + IN_LIST_MAX]
            found |= {row.id: row.group_id for row in session.execute(
                select(Job.id, Job.group_id).where(Job.id.in_(part), Job.group_id.is_not(None)))}
    return found


def _row(book_id: str, read: BookRead, options: Mapping[str, object], key_id: str | None) -> dict[str, object]:
    # within the columns' widths, as PostgreSQL requires (a book's metadata can be anything)
    return {"id": book_id, "title": read.title[:512], "author": read.author[:512] if read.author else None,
            "language": read.language[:32] if read.language else None,
            "source": read.source[:1024], "source_sha256": read.sha256,
            "cover": read.cover, "cover_type": read.cover_type, "key_id": key_id or None,
            "options": {**options, "selected": list(read.selected)}, "warnings": list(read.warnings),
            "created_at": utcnow()}


def _insert_new(store: Store, rows: dict[str, dict[str, object]]) -> None:
    if not rows:
        return
    for _ in range(2):  # the same book submitted twice at once: the second finds the first's row
        with store.read() as session:
            known = set(session.scalars(select(Book.id).where(Book.id.in_(list(rows)))))
        fresh = [row for book_id, row in rows.items() if book_id not in known]
        if not fresh:
            return
        try:
            with store.session() as session:
                session.execute(insert(Book), fresh)
            return
        except IntegrityError:
            continue


def book_chapter_ids(store: Store, book_id: str) -> list[str]:
    """The chapter job ids of `book_id`, in reading order.

    Raises:
        BookNotFound: no job belongs to such a book.
    """
    with store.read() as session:
        ids = list(session.scalars(select(Job.id).where(Job.group_id == book_id)
                                   .order_by(Job.group_index, Job.created_at, Job.id)))
    if not ids:
        raise BookNotFound(f"no such book: {book_id}")
    return ids


def expand_ids(store: Store, ids: Sequence[str]) -> list[str]:
    """`ids` with every book id replaced by its chapters' job ids (in reading order); job ids kept as they
    are (an unknown id is left for the caller's own check to refuse), no id twice."""
    if not ids:
        return []
    with store.read() as session:
        books = set(session.scalars(select(Job.group_id).where(Job.group_id.in_(list(ids)))))
        jobs = set(session.scalars(select(Job.id).where(Job.id.in_(list(ids)))))
    out: dict[str, None] = {}  # ordered, each id once
    for given in ids:
        chosen = book_chapter_ids(store, given) if given in books and given not in jobs else [given]
        out |= dict.fromkeys(chosen)
    return list(out)
