"""The FastAPI application: routers, one-line errors (never a path, secret or traceback), CORS, the dashboard."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.db import Store
from schemas.errors import InvalidInput, JobNotFound, RetryableError, TtsfleetError, UnknownVoice, first_line
from schemas.settings import ServiceSettings
from service import books_api, fleet_api, jobs_api, pronounce_api, speech
from service.accept import QuotaExceeded
from service.audio import AudioNotReady, AudioPurged
from service.context import Context
from service.limits import RequestLimits, Scope
from service.webhooks import WebhookSender

log = logging.getLogger("ttsfleet.service")
STATIC = Path(__file__).parent / "static"
UPLOAD_ROUTES = ("/v1/jobs", "/v1/books", "/v1/books/preview")


def _status_of(err: TtsfleetError) -> tuple[int, str]:
    """HTTP status and message of a ttsfleet error; messages that could name server paths are replaced."""
    if isinstance(err, QuotaExceeded):
        return 429, str(err)
    if isinstance(err, AudioNotReady):
        return 409, str(err)
    if isinstance(err, AudioPurged):
        return 410, first_line(err)
    if isinstance(err, JobNotFound):
        return 404, first_line(err)
    if isinstance(err, UnknownVoice):
        return 400, "unknown voice; GET /v1/voices lists the voices this server offers"
    if isinstance(err, InvalidInput):
        return 400, first_line(err)
    if isinstance(err, RetryableError):
        return 503, "the store or the broker is unavailable; try again shortly"
    return 500, "internal error"


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(TtsfleetError)
    async def ttsfleet_error(_request: Request, err: TtsfleetError) -> JSONResponse:
        status, message = _status_of(err)
        if status >= 500:
            log.warning("request failed: %s", first_line(err))
        return JSONResponse({"detail": message}, status_code=status,
                            headers={"Retry-After": "5"} if status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"invalid {where or 'request'}: {first.get('msg')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")  # the traceback goes to the log, never to the client
        return JSONResponse({"detail": "internal error"}, status_code=500)


def _body_limit(settings: ServiceSettings, scope: Scope) -> int:
    """Job and book submission take uploads (TTSFLEET_MAX_UPLOAD_BYTES); every other route JSON at most
    TTSFLEET_MAX_BODY_BYTES."""
    if scope.get("method") == "POST" and str(scope.get("path", "")).rstrip("/") in UPLOAD_ROUTES:
        return settings.max_upload_bytes
    return settings.max_body_bytes


def create_app(settings: ServiceSettings, store: Store, *, webhooks: bool = True) -> FastAPI:
    """The application for `settings`; `webhooks` starts the delivery thread with it."""
    ctx = Context.build(settings, store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sender = WebhookSender(settings, store) if webhooks else None
        if sender is not None:
            sender.start()
        try:
            yield
        finally:
            if sender is not None:
                sender.stop()
            ctx.publisher.close()

    app = FastAPI(title="ttsfleet", version="1", lifespan=lifespan,
                  description="Batch text-to-speech on a fleet of GPU and CPU workers. "
                              "Send API keys as `Authorization: Bearer KEY`.")
    app.state.ctx = ctx
    _handlers(app)
    for router in (jobs_api.router, books_api.router, speech.router, fleet_api.router, pronounce_api.router):
        app.include_router(router)
    if settings.cors_origin_list:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["*"],
                           allow_headers=["*"])
    # Outermost: the body's size and the client's time are limited before any route or key check runs.
    app.add_middleware(RequestLimits, limit_for=partial(_body_limit, settings),
                       client_timeout_s=settings.client_timeout_s)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
