"""The fleet over HTTP: stats (and the card-comparison chart), workers with their current job, voices,
throughput; liveness and readiness probes."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from producer.eta import fleet_throughput
from producer.stats import compute_stats, job_points, list_workers, parse_by, parse_time
from schemas.status import JobStatus
from schemas.tables import Job
from schemas.voices import list_voices, resolve_voice_name
from service.context import api_key, context
from service.jobs_api import ERRORS
from service.keys import Caller
from service.views import visible_jobs

router = APIRouter(tags=["fleet"])
ByQuery = Annotated[str, Query(max_length=64, description="comma-separated: card, dtype, model, voice, worker, day")]
SinceQuery = Annotated[str | None, Query(max_length=64, description="ISO time or an age: 24h, 7d")]


@router.get("/v1/stats", responses=ERRORS, summary="Throughput per card and dtype (as `stats --format json`)")
def stats(request: Request, _key: Annotated[Caller, Depends(api_key)], by: ByQuery = "card,dtype",
          since: SinceQuery = None) -> list[dict[str, Any]]:
    ctx = context(request)
    start = parse_time(since) if since else None
    return [row.as_dict() for row in compute_stats(ctx.store, parse_by(by), start)]


@router.get("/v1/stats/chart.png", response_class=Response, responses={200: {"content": {"image/png": {}}}, **ERRORS},
            summary="The card-comparison chart (as `stats --plot`)")
async def chart(request: Request, _key: Annotated[Caller, Depends(api_key)], by: ByQuery = "card,dtype",
                since: SinceQuery = None) -> Response:
    return Response(await run_in_threadpool(_chart_png, request, by, since), media_type="image/png")


def _chart_png(request: Request, by: str, since: str | None) -> bytes:
    from producer.plot import stats_figure

    ctx = context(request)
    keys = parse_by(by)
    start = parse_time(since) if since else None
    figure = stats_figure(compute_stats(ctx.store, keys, start), job_points(ctx.store, keys, start))
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80)
    return out.getvalue()


@router.get("/v1/throughput", summary="The fleet's measured speed, which ETAs are computed from")
def throughput(request: Request, _key: Annotated[Caller, Depends(api_key)]) -> dict[str, Any]:
    measured = fleet_throughput(context(request).store)
    return {"chars_per_s_per_worker": measured.chars_per_s_per_worker, "workers": measured.workers,
            "chars_per_s": measured.chars_per_s}


@router.get("/v1/workers", responses=ERRORS, summary="Registered workers (as `workers --json`) with their current job")
def workers(request: Request, caller: Annotated[Caller, Depends(api_key)]) -> list[dict[str, Any]]:
    ctx = context(request)
    views = list_workers(ctx.store)
    with ctx.store.read() as session:
        running = dict(session.execute(select(Job.lease_owner, Job.id).where(Job.status == JobStatus.RUNNING)).all())
    mine = visible_jobs(ctx, caller, list(running.values()))  # another tenant's job is not named
    return [{**v.as_dict(), "current_job": running.get(v.id) if running.get(v.id) in mine else None} for v in views]


@router.get("/v1/voices", summary="Voices jobs may name (as `voices --json`, plus `hf:` voices workers loaded)")
def voices(request: Request, _key: Annotated[Caller, Depends(api_key)]) -> list[dict[str, Any]]:
    listed = list_voices(include_hf_cache=False)
    on_workers = {w.voice for w in list_workers(context(request).store)
                  if w.state == "ready" and w.voice.startswith("hf:")} - {v.name for v in listed}
    listed += [replace(resolve_voice_name(name), available=True) for name in sorted(on_workers)]
    return [{"name": v.name, "kind": v.kind.value, "language": v.language, "sample_rate_hz": v.sample_rate_hz,
             "available": v.available} for v in listed]


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the store does not answer"}},
            summary="Readiness: the SQL store answers")
def readyz(request: Request) -> JSONResponse:
    try:
        with context(request).store.read() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any failure means not ready; the reason stays in the server's log
        return JSONResponse({"status": "unavailable", "detail": "the store does not answer"}, status_code=503)
    return JSONResponse({"status": "ready"})
