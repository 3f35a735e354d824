"""OpenAI-compatible speech: `POST /v1/audio/speech` and `GET /v1/models`.

Short input becomes a job at top priority and the request waits for it, answering with the audio bytes
as OpenAI does; long input (or a job not done within TTSFLEET_SPEECH_TIMEOUT_S) is answered 202 with the
job's URL. OpenAI's voice names (alloy, nova, ...) mean the server's default voice; any voice of
GET /v1/voices may be named too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select

from schemas.errors import InvalidInput, JobNotFound
from schemas.messages import JobRequest
from schemas.status import AudioFormat, JobStatus
from schemas.tables import Job
from service.accept import accept_jobs
from service.audio import MEDIA_TYPES, convert, job_audio_path
from service.context import Context, api_key, context
from service.jobs_api import ERRORS
from service.keys import Caller
from service.models import ModelCard, ModelList, SpeechQueued, SpeechRequest
from service.views import job_url

router = APIRouter(tags=["openai"])
MODELS = ("ttsfleet", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                           "shimmer", "verse", "marin", "cedar"})
TOP_PRIORITY = 9
POLL_S = 0.1


def _job_request(body: SpeechRequest) -> JobRequest:
    if body.model not in MODELS:
        raise InvalidInput(f"unknown model {body.model[:64]!r}; GET /v1/models lists {', '.join(MODELS)}")
    voice = None if body.voice.lower() in OPENAI_VOICES else body.voice
    try:  # stored losslessly; the response format is made from the stored file
        return JobRequest(text=body.input, voice=voice, format=AudioFormat.WAV, priority=TOP_PRIORITY,
                          speed=None if body.speed == 1.0 else body.speed)
    except ValidationError as err:  # a NUL or a lone surrogate in the input or the voice
        raise InvalidInput(f"invalid speech request: {err.errors()[0]['msg']}") from err


def _status(ctx: Context, job_id: str) -> JobStatus:
    with ctx.store.read() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status is None:
        raise JobNotFound(f"no such job: {job_id}")
    return JobStatus(status)


async def wait_for_job(ctx: Context, job_id: str) -> JobStatus:
    """The job's status once it has ended, or after TTSFLEET_SPEECH_TIMEOUT_S."""
    deadline = time.monotonic() + ctx.settings.speech_timeout_s
    while True:
        status = await run_in_threadpool(_status, ctx, job_id)
        if status.is_terminal or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(POLL_S)


def _queued(job_id: str, status: JobStatus) -> JSONResponse:
    body = SpeechQueued(id=job_id, status=status, url=job_url(job_id), audio_url=job_url(job_id) + "/audio")
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"Location": job_url(job_id)})


@router.post("/v1/audio/speech", response_class=Response, responses={
    200: {"content": {m: {} for m in sorted(set(MEDIA_TYPES.values()))}, "description": "the audio"},
    202: {"model": SpeechQueued, "description": "long input: queued; fetch audio_url when done"}, **ERRORS},
    summary="OpenAI-compatible text to speech")
async def speech(request: Request, body: SpeechRequest, caller: Annotated[Caller, Depends(api_key)]) -> Response:
    ctx = context(request)
    if body.response_format == "aac":
        raise InvalidInput("response_format aac is not supported; use wav, flac, mp3, opus or pcm")
    job = _job_request(body)
    [accepted] = await run_in_threadpool(accept_jobs, ctx, caller, [job], idempotency_key=None, callback_url=None)
    if len(body.input) > ctx.settings.speech_sync_max_chars:
        return _queued(accepted.id, accepted.status)
    status = await wait_for_job(ctx, accepted.id)
    if status != JobStatus.SUCCEEDED:
        if status.is_terminal:
            raise InvalidInput(f"job {accepted.id} {status.value}; see {job_url(accepted.id)}")
        return _queued(accepted.id, status)
    path = await run_in_threadpool(job_audio_path, ctx.store, accepted.id, ctx.settings.audio_cache_s)
    audio = await run_in_threadpool(convert, path, body.response_format)
    return Response(audio, media_type=MEDIA_TYPES[body.response_format], headers={"X-Ttsfleet-Job": accepted.id})


@router.get("/v1/models", response_model=ModelList, summary="OpenAI-compatible model list")
def models(_caller: Annotated[Caller, Depends(api_key)]) -> ModelList:
    return ModelList(data=[ModelCard(id=m) for m in MODELS])
