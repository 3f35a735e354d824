"""Pronunciation fixed once per book over HTTP: a chapter's text to choose a word from, a preview of one
sentence said with the new entry, and the entry applied to every chapter that says it (only changed chunks redone).

A book is the set of jobs sharing its `group_id`, so these routes need nothing but the jobs table. The
preview is synthesized by the fleet as `/v1/audio/speech` is: a one-sentence job at top priority that the
request waits for (the service holds no model). It is an ordinary job of the caller's, titled after the
word, so a repeated preview of the same sentence and entry is answered from the finished job at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from producer.books import book_chapter_ids
from producer.pronounce import (
    MAX_SAY_CHARS,
    MAX_WORD_CHARS,
    checked_entry,
    job_text,
    preview_sentence,
    pronounce,
    with_entries,
)
from producer.submit import publish_stored
from schemas.errors import InvalidInput, JobNotFound
from schemas.job_options import JobOptions
from schemas.messages import JOB_ID_PATTERN, JobRequest
from schemas.status import AudioFormat, JobStatus
from schemas.tables import Job
from service.accept import accept_jobs
from service.audio import AudioNotReady, job_audio_path
from service.context import Context, api_key, context
from service.jobs_api import ERRORS
from service.keys import Caller
from service.speech import TOP_PRIORITY, wait_for_job
from service.views import job_url, owned, visible_jobs

router = APIRouter(tags=["books"])


class JobText(BaseModel):
    """A job's stored input text, as it was submitted (a book chapter's text as read from the book)."""

    id: str
    title: str | None
    text: str


class PronunciationCreate(BaseModel):
    """A lexicon entry: `word` (lower case matches any case; a capital, exactly that spelling) is said as
    `say` (text, or Piper phonemes in `[[ ]]`)."""

    word: str = Field(min_length=1, max_length=MAX_WORD_CHARS)
    say: str = Field(min_length=1, max_length=MAX_SAY_CHARS)


class PronunciationPreview(PronunciationCreate):
    job_id: str = Field(pattern=JOB_ID_PATTERN.pattern, description="the chapter whose sentence is said")


class PronunciationQueued(BaseModel):
    jobs: int = Field(description="chapters put back in the queue")
    chunks: int = Field(description="chunks that will be synthesized again, over all those chapters")


def _book_jobs(ctx: Context, caller: Caller, book_id: str) -> list[str]:
    """The caller's chapters of `book_id`, in reading order; another tenant's book reads as no book."""
    if not JOB_ID_PATTERN.fullmatch(book_id):
        raise JobNotFound("no such book")
    ids = book_chapter_ids(ctx.store, book_id)
    visible = visible_jobs(ctx, caller, ids)
    if not visible:
        raise JobNotFound(f"no such book: {book_id}")
    return [j for j in ids if j in visible]


@router.get("/v1/jobs/{job_id}/text", response_model=JobText, responses=ERRORS,
            summary="The job's input text as submitted (to choose a word whose pronunciation to fix)")
def get_text(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> JobText:
    ctx = context(request)
    title, text = job_text(ctx.store, owned(ctx, caller, job_id))
    return JobText(id=job_id, title=title, text=text)


def _apply(ctx: Context, caller: Caller, book_id: str, body: PronunciationCreate) -> PronunciationQueued:
    entry = checked_entry(body.word, body.say)
    done = pronounce(ctx.store, _book_jobs(ctx, caller, book_id), [entry], ctx.settings,
                     publish=lambda ids: publish_stored(ids, ctx.store, ctx.publisher))
    return PronunciationQueued(jobs=done.jobs, chunks=done.chunks)


@router.post("/v1/books/{book_id}/pronunciations", status_code=202, response_model=PronunciationQueued,
             responses=ERRORS, summary="Say a word another way across the whole book: every finished chapter "
                                       "that says it gets the lexicon entry and re-renders only the chunks that "
                                       "change; the .m4b is rebuilt when they finish")
def add_pronunciation(request: Request, book_id: str, body: PronunciationCreate,
                      caller: Annotated[Caller, Depends(api_key)]) -> PronunciationQueued:
    return _apply(context(request), caller, book_id, body)


def _preview_request(ctx: Context, caller: Caller, book_id: str, body: PronunciationPreview) -> JobRequest:
    """A one-sentence job: the chapter's first sentence with the word, in the chapter's voice, speed and
    lexicon plus the entry."""
    entry = checked_entry(body.word, body.say)
    if body.job_id not in _book_jobs(ctx, caller, book_id):
        raise JobNotFound(f"no such chapter in book {book_id}: {body.job_id}")
    _title, text = job_text(ctx.store, body.job_id)
    with ctx.store.read() as session:
        voice, options = session.execute(select(Job.voice, Job.options).where(Job.id == body.job_id)).one()
    return JobRequest(text=preview_sentence(text, entry), voice=voice, format=AudioFormat.WAV,
                      priority=TOP_PRIORITY, lexicon=with_entries(options, [entry]),
                      speed=JobOptions.from_stored(options).speed, title=f"pronunciation: {entry.word}")


@router.post("/v1/books/{book_id}/pronunciations/preview", response_class=FileResponse,
             responses={200: {"content": {"audio/wav": {}}, "description": "the sentence, said with the entry"},
                        **ERRORS},
             summary="Hear the entry before applying it: the chapter's first sentence with the word, as WAV")
async def preview_pronunciation(request: Request, book_id: str, body: PronunciationPreview,
                                caller: Annotated[Caller, Depends(api_key)]) -> FileResponse:
    ctx = context(request)
    job = await run_in_threadpool(_preview_request, ctx, caller, book_id, body)
    [accepted] = await run_in_threadpool(accept_jobs, ctx, caller, [job], idempotency_key=None, callback_url=None)
    status = await wait_for_job(ctx, accepted.id)
    if status != JobStatus.SUCCEEDED:
        if status.is_terminal:
            raise InvalidInput(f"the preview job {accepted.id} {status.value}; see {job_url(accepted.id)}")
        raise AudioNotReady(f"the preview is still being made (job {accepted.id}); try again in a moment")
    path = await run_in_threadpool(job_audio_path, ctx.store, accepted.id, ctx.settings.audio_cache_s)
    return FileResponse(path, media_type="audio/wav", headers={"X-Ttsfleet-Job": accepted.id})
