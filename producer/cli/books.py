"""Books on the command line: `--list-chapters`, the book id `submit` and `run` announce, `status BOOK_ID`'s
book line, and book ids expanded to their chapters where `wait`, `cancel`, `retry` and `rerender` take jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import typer
from rich.console import Console, RenderableType
from rich.table import Table

from producer.book_options import BookOptions
from producer.chapters import BookRead
from schemas.errors import InvalidInput
from schemas.status import AudioFormat

if TYPE_CHECKING:
    from producer.book_view import BookView
    from producer.submit import Submitted
    from schemas.db import Store
    from schemas.messages import JobRequest, JobView


def list_chapters(inputs: list[str], voice: str | None, book: BookOptions, as_json: bool) -> None:
    """Print what each book among `inputs` holds: every chapter with its number, title and characters, and
    whether it would be spoken (`--chapters` applied) or why it is skipped. Synthesizes and stores nothing.

    Raises:
        InvalidInput: no EPUB or PDF among the inputs, or as `read_inputs`.
    """
    from producer.inputs import read_inputs

    reads: list[BookRead] = []
    read_inputs(inputs, sys.stdin, voice=voice, format=AudioFormat.WAV, priority=5, book=book, on_book=reads.append)
    if not reads:
        raise InvalidInput("--list-chapters reads books: give .epub or .pdf files")
    if as_json:
        from producer.cli.common import print_json

        print_json([{"source": r.source, "title": r.title, "author": r.author, "language": r.language,
                     "has_cover": r.cover is not None, "warnings": list(r.warnings),
                     "chapters": [{"index": c.index, "title": c.title, "chars": c.chars, "skipped": c.skipped,
                                   "selected": c.index in r.selected} for c in r.chapters]} for r in reads])
        return
    console = Console()
    for read in reads:
        console.print(_chapter_table(read))
        for warning in read.warnings:
            typer.echo(f"warning: {warning}", err=True)


def _chapter_table(read: BookRead) -> Table:
    by = f" by {read.author}" if read.author else ""
    table = Table(title=f"{read.title}{by} ({read.source}; cover: {'yes' if read.cover else 'none'})",
                  title_justify="left")
    for column, justify in (("#", "right"), ("chapter", "left"), ("chars", "right"), ("spoken", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for chapter in read.chapters:
        spoken = (f"skipped: {chapter.skipped}" if chapter.skipped is not None
                  else "yes" if chapter.index in read.selected else "not selected")
        table.add_row(str(chapter.index), chapter.title, f"{chapter.chars:,}", spoken)
    return table


def record(store: Store, reads: Sequence[BookRead], requests: Sequence[JobRequest], results: Sequence[Submitted],
           *, voice: str | None, fmt: AudioFormat, book: BookOptions) -> dict[str, str]:
    """The books rows of what was submitted (producer/books.py); job id -> book id. Each book is announced
    on stderr (stdout keeps the job ids scripts read)."""
    from producer.books import record_books

    options = {"voice": voice, "format": fmt.value, "chapters": book.chapters, "matter": book.matter.value,
               "notes": book.notes.value, "captions": book.captions}
    book_of = record_books(store, reads, requests, results, options=options)
    titles = {r.id: q.group_title for r, q in zip(results, requests, strict=True)}
    for book_id in dict.fromkeys(book_of.values()):
        chapters = [job for job, owner in book_of.items() if owner == book_id]
        title = titles.get(chapters[0]) or "book"
        typer.echo(f"book {book_id}: {title} ({len(chapters)} job(s)); follow it with `ttsfleet status {book_id}`",
                   err=True)
    return book_of


def book_line(view: BookView) -> str:
    """The book's one line: status, chapters, chunks, audio, ETA and the .m4b once ready."""
    by = f" by {view.author}" if view.author else ""
    eta = "" if view.eta_s in (None, 0.0) else f", about {_duration(view.eta_s or 0.0)} to go"
    m4b = f", m4b: {view.m4b_path}" if view.m4b_path else ""
    return (f"book {view.id}: {view.title}{by}: {view.status.value}, chapters {view.chapters_done}/"
            f"{view.chapters_total}, chunks {view.chunks_done}/{view.chunks_total}, audio {view.audio_s:.1f} s"
            f"{eta}{m4b}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def book_ids(store: Store, ids: Sequence[str]) -> set[str]:
    """Those of `ids` that name a book (and no job)."""
    from sqlalchemy import select

    from schemas.tables import Job

    with store.read() as session:
        books = set(session.scalars(select(Job.group_id).where(Job.group_id.in_(list(ids)))))
        jobs = set(session.scalars(select(Job.id).where(Job.id.in_(list(ids)))))
    return {b for b in books if b is not None} - jobs


def print_status(store: Store, ids: Sequence[str], render: Callable[[list[JobView]], RenderableType]) -> None:
    """`status ID...` on a terminal: each book as its line and its chapters' table (`render`: the jobs
    table of producer/cli/jobs.py, which imports this module), the jobs in one table."""
    from producer.book_view import book_view
    from producer.jobs import job_views

    books = book_ids(store, ids)
    console = Console()
    jobs = [i for i in ids if i not in books]
    for book_id in (i for i in ids if i in books):
        view = book_view(store, book_id)
        console.print(book_line(view))
        console.print(render(view.chapters))
    if jobs:
        console.print(render(job_views(store, jobs)))


def failed_chapters(store: Store, ids: Sequence[str]) -> list[str]:
    """`ids` for `retry`: a book id becomes its failed chapters (a book with none is refused)."""
    from producer.book_view import book_view
    from schemas.status import JobStatus

    books = book_ids(store, ids)
    out: list[str] = []
    for given in ids:
        if given not in books:
            out.append(given)
            continue
        failed = [c.id for c in book_view(store, given, with_eta=False).chapters if c.status == JobStatus.FAILED]
        if not failed:
            raise InvalidInput(f"book {given} has no failed chapter to retry")
        out += failed
    return out
