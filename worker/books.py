"""A book's `.m4b`: when the last chapter of a book finishes, its chapter files are joined into one book
with chapter marks, cover and author (`worker.book_audio`, ffmpeg). The chapters have succeeded whatever
happens here: a failure becomes a warning on them.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from schemas.errors import PermanentError, RetryableError
from schemas.job_options import JobOptions
from schemas.status import JobStatus
from worker import book_audio, lease
from worker.context import JobContext
from worker.naming import output_key, slug


def maybe_build_book(ctx: JobContext, held: lease.Claim) -> None:
    """Build the book of chapter `held` if every chapter has succeeded (needs ffmpeg)."""
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
    store = ctx.outputs.store
    key = output_key(held)
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    # A named book's .m4b sits beside its chapters' folder (`Book.m4b`); older books' inside it.
    book_key = f"{folder}.m4b" if held.output_name else f"{folder}/{slug(book_title)}.m4b".lstrip("/")
    book_location = store.join(book_key)
    covers = (JobOptions.from_stored(j.options).cover_b64 for j in chapters)
    cover_b64 = next((c for c in covers if c), None)
    # ffmpeg needs local files: chapters fetched (when remote) and the book built in a scratch folder.
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as scratch:
        local = [(j.title or f"Chapter {i + 1}", store.fetch(str(j.audio_path), Path(scratch) / str(i)))
                 for i, j in enumerate(chapters)]
        built = book_audio.build_book(local, book_title, Path(scratch) / "book.m4b", author=held.options.author,
                                      cover=base64.b64decode(cover_b64) if cover_b64 else None)
        if built is None:
            message = "ffmpeg is not installed: no .m4b was made; the chapter files are complete"
            for job_id in ids:
                lease.add_warning(ctx.store, job_id, message)
            return
        store.put_file(built, book_location)
    lease.set_book_path(ctx.store, ids, book_location)
