"""`/v1/books`: a book's chapters previewed from an upload, the book created (its chapter jobs queued), listed,
shown with per-chapter progress and ETA, cancelled, and its `.m4b` and cover served; `/v1/jobs/{id}/book`:
a chapter's book file.

Tenancy as for jobs: a key sees only the books it created (an admin key every book); another key's book
reads exactly as one that does not exist (`404 no such book`). Uploads take the upload limit
(TTSFLEET_MAX_UPLOAD_BYTES, service/app.py), counted as they stream (service/limits.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import select

from producer.book_options import BookOptions
from producer.book_read import read_epub_book, read_pdf_book
from producer.book_view import MAX_BOOKS_PAGE, BookView, book_view, book_views_page
from producer.books import BookNotFound, record_books
from producer.chapters import BookRead
from producer.eta import fleet_throughput
from producer.inputs import read_inputs
from producer.jobs import cancel_jobs
from producer.naming import safe_name
from schemas.errors import InvalidInput
from schemas.messages import JOB_ID_PATTERN
from schemas.status import AudioFormat, JobStatus
from schemas.storage import is_url
from schemas.tables import Book, Job
from service.accept import accept_jobs
from service.audio import AudioNotReady, fetched_copy
from service.book_models import BookDetail, BookList, BookPreview, BookSummary, ChapterDetail, PreviewChapter
from service.context import Context, api_key, context
from service.keys import Caller
from service.models import Problem
from service.views import owned, redacted

router = APIRouter(tags=["books"])
BOOK_SUFFIXES = (".epub", ".pdf")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem}
                                           for code in (400, 401, 404, 408, 409, 413, 422, 429, 503)}
M4B_TYPE = "audio/mp4"


def _upload_name(upload: UploadFile) -> str:
    if "\x00" in (upload.filename or ""):
        raise InvalidInput("the upload's file name contains a NUL byte")
    name = "".join(c if c.isprintable() else "?" for c in Path(upload.filename or "book.epub").name)
    suffix = Path(name).suffix.lower()
    if suffix not in BOOK_SUFFIXES:
        raise InvalidInput(f"{name}: unsupported book type {suffix or '(none)'}; use .epub or .pdf")
    return name


def _preview(name: str, data: bytes) -> BookPreview:
    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as tmp:
        path = Path(tmp) / f"book{suffix}"
        path.write_bytes(data)
        try:
            read = read_pdf_book(path, "en")[1] if suffix == ".pdf" else read_epub_book(path, BookOptions())[1]
        except InvalidInput as err:
            raise InvalidInput(str(err).replace(str(path), name).replace(tmp, "")) from err
    return BookPreview(title=read.title, author=read.author, language=read.language, has_cover=read.cover is not None,
                       chapters=[PreviewChapter(index=c.index, title=c.title, chars=c.chars, skipped=c.skipped)
                                 for c in read.chapters],
                       warnings=[w.replace(str(path), name) for w in read.warnings])


@router.post("/v1/books/preview", response_model=BookPreview, responses=ERRORS,
             summary="An EPUB or PDF's chapters (numbered as `chapters` takes them) and what would be skipped; "
                     "nothing stored or queued")
async def preview_book(file: Annotated[UploadFile, File(description=".epub or .pdf")],
                       _caller: Annotated[Caller, Depends(api_key)]) -> BookPreview:
    name = _upload_name(file)
    data = await file.read()
    return await run_in_threadpool(_preview, name, data)


def _create(ctx: Context, caller: Caller, name: str, data: bytes, voice: str | None, format: AudioFormat,
            chapters: str | None) -> str:
    """The upload read (chapters selected), its jobs accepted for `caller`, its book row; the book's id."""
    suffix = Path(name).suffix.lower()
    reads: list[BookRead] = []
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as tmp:
        path = Path(tmp) / f"book{suffix}"
        path.write_bytes(data)
        try:
            requests = read_inputs([str(path)], stdin=None, voice=voice, format=format,  # type: ignore[arg-type]
                                   priority=5, book=BookOptions(chapters=chapters), on_book=reads.append)
        except InvalidInput as err:
            raise InvalidInput(str(err).replace(str(path), name).replace(tmp, "")) from err
    requests = [r.model_copy(update={"source": name}) for r in requests]
    reads = [replace(r, source=name, warnings=tuple(w.replace(str(path), name) for w in r.warnings)) for r in reads]
    results = accept_jobs(ctx, caller, requests, idempotency_key=None, callback_url=None)
    options = {"voice": voice or ctx.settings.voice, "format": format.value, "chapters": chapters}
    book_of = record_books(ctx.store, reads, requests, results, options=options, key_id=caller.key_id or None)
    if not book_of:
        raise InvalidInput(f"{name}: no book was read from the upload")
    return next(iter(book_of.values()))


@router.post("/v1/books", status_code=202, response_model=BookDetail, responses=ERRORS,
             summary="Create a book from an EPUB or PDF upload: its (selected) chapters queued as jobs")
async def create_book(request: Request, file: Annotated[UploadFile, File(description=".epub or .pdf")],
                      caller: Annotated[Caller, Depends(api_key)],
                      voice: Annotated[str | None, Form(max_length=512)] = None,
                      format: Annotated[AudioFormat, Form()] = AudioFormat.WAV,
                      chapters: Annotated[str | None, Form(max_length=1000, description="`1-3,7` or a title "
                                                                                        "to match")] = None) -> Any:
    ctx = context(request)
    name = _upload_name(file)
    data = await file.read()
    book_id = await run_in_threadpool(_create, ctx, caller, name, data, voice or None, format, chapters or None)
    detail = await run_in_threadpool(_detail, ctx, caller, book_id)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202)


def _visible(ctx: Context, caller: Caller, book_id: str, with_eta: bool = True) -> BookView:
    """The book if the caller may see it.

    Raises:
        BookNotFound: not a book id, no such book, or another tenant's (the same answer for all three).
    """
    if not JOB_ID_PATTERN.fullmatch(book_id):
        raise BookNotFound("no such book")
    view = book_view(ctx.store, book_id, with_eta=with_eta)
    if not caller.admin and view.key_id != caller.key_id:
        raise BookNotFound(f"no such book: {book_id}")
    return view


def _summary(view: BookView) -> dict[str, Any]:
    url = f"/v1/books/{view.id}"
    return {**view.model_dump(include=set(BookSummary.model_fields) & set(BookView.model_fields)),
            "warnings": [redacted(w) or "" for w in view.warnings],
            "m4b_url": f"{url}/m4b" if view.m4b_path else None, "cover_url": f"{url}/cover" if view.has_cover else None}


def _as_detail(view: BookView) -> BookDetail:
    chapters = [ChapterDetail(index=number, title=c.title, job_id=c.id, status=c.status, chunks_done=c.chunks_done,
                              chunks_total=c.chunks_total, audio_s=c.audio_s,
                              audio_url=f"/v1/jobs/{c.id}/audio" if c.status == JobStatus.SUCCEEDED
                              and c.audio_purged_at is None else None,
                              warnings=[redacted(w) or "" for w in c.warnings])
                for c, number in zip(view.chapters, view.chapter_numbers, strict=True)]
    return BookDetail(**_summary(view), chapters=chapters)


def _detail(ctx: Context, caller: Caller, book_id: str) -> BookDetail:
    return _as_detail(_visible(ctx, caller, book_id))


@router.get("/v1/books", response_model=BookList, responses=ERRORS,
            summary="Your books (an admin key's: every book), newest first, paged")
def list_books(request: Request, caller: Annotated[Caller, Depends(api_key)],
               limit: Annotated[int, Query(ge=1, le=MAX_BOOKS_PAGE)] = 50,
               offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> BookList:
    ctx = context(request)
    views, total = book_views_page(ctx.store, None if caller.admin else caller.key_id, limit=limit, offset=offset,
                                   throughput=fleet_throughput(ctx.store))
    return BookList(books=[BookSummary(**_summary(v)) for v in views], total=total)


@router.get("/v1/books/{book_id}", response_model=BookDetail, responses=ERRORS,
            summary="One book: status, chapters done/total, chunks, ETA, .m4b and cover URLs, each chapter's progress")
def get_book(request: Request, book_id: str, caller: Annotated[Caller, Depends(api_key)]) -> BookDetail:
    return _detail(context(request), caller, book_id)


@router.delete("/v1/books/{book_id}", response_model=BookDetail, responses=ERRORS,
               summary="Cancel every unfinished chapter of a book (a running one stops at its next chunk)")
def cancel_book(request: Request, book_id: str, caller: Annotated[Caller, Depends(api_key)]) -> BookDetail:
    ctx = context(request)
    view = _visible(ctx, caller, book_id, with_eta=False)
    cancel_jobs(ctx.store, [c.id for c in view.chapters])
    return _detail(ctx, caller, book_id)


def _m4b_response(view: BookView, cache_s: float) -> FileResponse:
    if view.m4b_path is None:
        raise AudioNotReady(f"book {view.id} is {view.status.value}; its .m4b exists once every chapter "
                            "succeeded and the book was built")
    if is_url(view.m4b_path):
        built = datetime.fromisoformat(view.finished_at) if view.finished_at else None
        path = fetched_copy(view.m4b_path, f"book-{view.id}", built, cache_s)
    else:
        path = Path(view.m4b_path)
        if not path.is_file():
            raise BookNotFound(f"the .m4b of book {view.id} is no longer in the output folder")
    return FileResponse(path, media_type=M4B_TYPE, filename=f"{safe_name(view.title, 'book')}.m4b")


_M4B = {200: {"content": {M4B_TYPE: {}}}, **ERRORS}


@router.get("/v1/books/{book_id}/m4b", response_class=FileResponse, responses=_M4B,
            summary="The book's .m4b (chapters, title, author, cover), named after its title; range requests")
def get_m4b(request: Request, book_id: str, caller: Annotated[Caller, Depends(api_key)]) -> FileResponse:
    ctx = context(request)
    return _m4b_response(_visible(ctx, caller, book_id, with_eta=False), ctx.settings.audio_cache_s)


@router.get("/v1/books/{book_id}/audio", response_class=FileResponse, responses=_M4B,
            summary="The book's .m4b (the same as /m4b)")
def get_book_audio(request: Request, book_id: str, caller: Annotated[Caller, Depends(api_key)]) -> FileResponse:
    return get_m4b(request, book_id, caller)


@router.get("/v1/books/{book_id}/cover", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **ERRORS},
            summary="The book's cover image (JPEG or PNG; an SVG cover drawn as PNG)")
def get_cover(request: Request, book_id: str, caller: Annotated[Caller, Depends(api_key)]) -> Response:
    ctx = context(request)
    _visible(ctx, caller, book_id, with_eta=False)
    with ctx.store.read() as session:
        row = session.get(Book, book_id)
    if row is None or not row.cover:
        raise BookNotFound(f"book {book_id} has no cover")
    return Response(row.cover, media_type=row.cover_type or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/jobs/{job_id}/book", response_class=FileResponse, responses=_M4B,
            summary="The .m4b of the book this chapter job belongs to (as /v1/books/{id}/m4b)")
def get_job_book(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> FileResponse:
    ctx = context(request)
    with ctx.store.read() as session:
        group = session.scalar(select(Job.group_id).where(Job.id == owned(ctx, caller, job_id)))
    if group is None:
        raise BookNotFound(f"job {job_id} is not a chapter of a book")
    return _m4b_response(book_view(ctx.store, group, with_eta=False), ctx.settings.audio_cache_s)
