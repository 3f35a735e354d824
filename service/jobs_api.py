"""`/v1/jobs`: submit (JSON or an uploaded file), list, show, cancel, and the job's audio and side files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from producer.inputs import read_inputs
from producer.jobs import MAX_PAGE, JobFilter, cancel_jobs
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.status import AudioFormat, JobStatus
from service.accept import accept_jobs
from service.audio import MEDIA_TYPES, job_audio_path, side_file
from service.context import api_key, context
from service.keys import Caller
from service.models import Accepted, JobCreate, JobDetail, Problem
from service.views import job_detail, job_list, job_url, owned

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
UPLOAD_SUFFIXES = (".txt", ".md", ".epub", ".jsonl")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem}
                                           for code in (400, 401, 404, 408, 409, 410, 413, 422, 429, 503)}
_UPLOAD_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": ".txt, .md, .epub or .jsonl"},
        "voice": {"type": "string"}, "format": {"type": "string", "enum": [f.value for f in AudioFormat]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 9},
        "loudness_lufs": {"type": "number", "minimum": -70, "maximum": -5},
        "callback_url": {"type": "string"}}}}}, "required": True}}


def _request_from_json(body: JobCreate) -> JobRequest:
    # No `source`: the job's file is then named after its id, unique, rather than every API job being
    # `request (N)` (concurrent submissions fought over the next N, and each read every such name).
    try:
        return JobRequest(text=body.text, id=body.id, title=body.title, voice=body.voice, format=body.format,
                          priority=body.priority, loudness_lufs=body.loudness_lufs, speed=body.speed,
                          lexicon=body.lexicon)
    except ValidationError as err:
        raise InvalidInput(f"invalid job: {err.errors()[0]['msg']}") from err


def _read_upload(upload: UploadFile, data: bytes, fields: JobCreate) -> list[JobRequest]:
    """The uploaded file through the CLI's readers; messages name the upload, never the temporary path."""
    if "\x00" in (upload.filename or ""):
        raise InvalidInput("the upload's file name contains a NUL byte")
    name = "".join(c if c.isprintable() else "?" for c in Path(upload.filename or "upload.txt").name)
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InvalidInput(f"{name}: unsupported upload type {suffix or '(none)'}; use {', '.join(UPLOAD_SUFFIXES)}")
    with tempfile.TemporaryDirectory(prefix="ttsfleet-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            requests = read_inputs([str(path)], stdin=None, voice=fields.voice,  # type: ignore[arg-type]
                                   format=fields.format, priority=fields.priority)
        except InvalidInput as err:
            raise InvalidInput(str(err).replace(str(path), name).replace(tmp, "")) from err
    update: dict[str, Any] = {"source": name}
    if fields.loudness_lufs is not None:
        update["loudness_lufs"] = fields.loudness_lufs
    return [JobRequest.model_validate(r.model_dump() | update) for r in requests]  # validated, not copied


async def _parse(request: Request) -> tuple[list[JobRequest], str | None]:
    """(job requests, callback URL) from a JSON body or a multipart upload (its size is limited before
    this runs: service.limits)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:  # closes the spooled upload
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("multipart upload needs a 'file' field")
            data = await upload.read()
            fields = _validated({k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
                                | {"text": "-"})
            return await run_in_threadpool(_read_upload, upload, data, fields), fields.callback_url
    fields = _validated_json(await request.body())
    return [_request_from_json(fields)], fields.callback_url


def _validated(values: dict[str, Any]) -> JobCreate:
    try:
        return JobCreate.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidInput(f"invalid {'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from err


def _validated_json(body: bytes) -> JobCreate:
    try:
        return JobCreate.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidInput(f"invalid {'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from err


@router.post("", status_code=202, response_model=list[Accepted], responses=ERRORS, openapi_extra=_UPLOAD_BODY,
             summary="Submit text (JSON) or a .txt/.md/.epub/.jsonl upload (multipart); one job per text")
async def submit_jobs(request: Request, caller: Annotated[Caller, Depends(api_key)],
                      idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> list[Accepted]:
    requests, callback_url = await _parse(request)
    results = await run_in_threadpool(accept_jobs, context(request), caller, requests,
                                      idempotency_key=idempotency_key, callback_url=callback_url)
    return [Accepted(id=r.id, status=r.status, created=r.created, chunks_total=r.chunks_total, url=job_url(r.id))
            for r in results]


@router.get("", response_model=list[JobDetail], responses=ERRORS,
            summary="Your jobs (an admin key's: every job), newest first, filtered and paged")
def list_jobs(request: Request, caller: Annotated[Caller, Depends(api_key)], status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
              offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[JobDetail]:
    return job_list(context(request), caller, JobFilter(status=status, limit=limit, offset=offset))


@router.get("/{job_id}", response_model=JobDetail, responses=ERRORS,
            summary="One job: status, chunks done/total, ETA, URLs, webhook attempts")
def get_job(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> JobDetail:
    return job_detail(context(request), caller, job_id)


@router.delete("/{job_id}", response_model=JobDetail, responses=ERRORS,
               summary="Cancel a queued or running job (a running job stops at its next chunk)")
def cancel_job(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> JobDetail:
    ctx = context(request)
    cancel_jobs(ctx.store, [owned(ctx, caller, job_id)])
    return job_detail(ctx, caller, job_id)


def _audio(request: Request, caller: Caller, job_id: str) -> Path:
    ctx = context(request)
    return job_audio_path(ctx.store, owned(ctx, caller, job_id), ctx.settings.audio_cache_s)


@router.get("/{job_id}/audio", response_class=FileResponse, responses=ERRORS,
            summary="The job's audio (HTTP range requests supported)")
def get_audio(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> FileResponse:
    path = _audio(request, caller, job_id)
    suffix = path.suffix.lstrip(".")
    return FileResponse(path, media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
                        filename=f"{job_id}.{suffix}")


@router.get("/{job_id}/subtitles", response_class=FileResponse, responses=ERRORS,
            summary="The job's subtitles: SubRip (srt, default) or WebVTT (vtt)")
def get_subtitles(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)],
                  format: Annotated[str, Query(pattern="^(srt|vtt)$")] = "srt") -> FileResponse:
    path = side_file(_audio(request, caller, job_id), format)
    media = "text/vtt" if format == "vtt" else "application/x-subrip"
    return FileResponse(path, media_type=media, filename=f"{job_id}.{format}")


@router.get("/{job_id}/manifest", responses=ERRORS, summary="The job's manifest: every chunk's start and end")
def get_manifest(request: Request, job_id: str, caller: Annotated[Caller, Depends(api_key)]) -> JSONResponse:
    import json

    path = side_file(_audio(request, caller, job_id), "manifest")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.pop("audio_path", None)
    manifest.pop("path", None)
    return JSONResponse(manifest)
