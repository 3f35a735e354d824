"""Jobs as the API shows them: `status --json`'s fields with URLs instead of server paths, the ETA and the
webhook's delivery attempts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from producer.eta import Throughput, fleet_throughput, job_eta
from producer.jobs import JobFilter, job_views
from schemas.messages import JobView
from schemas.tables import ServiceJob, WebhookAttempt
from service.context import Context
from service.models import JobDetail, WebhookAttemptView, WebhookView


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def _detail(view: JobView, ctx: Context, throughput: Throughput, with_eta: bool) -> JobDetail:
    done = view.audio_path is not None
    fields = view.model_dump()
    fields.update(audio_path=job_url(view.id) + "/audio" if done else None,
                  book_path=job_url(view.id) + "/book" if view.book_path else None)
    if with_eta:
        eta = job_eta(ctx.store, view.id, throughput)
        fields.update(eta_s=eta.eta_s, eta_at=_iso(eta.eta_at))
    if done:
        fields.update(audio_url=job_url(view.id) + "/audio", subtitles_url=job_url(view.id) + "/subtitles",
                      manifest_url=job_url(view.id) + "/manifest")
    return JobDetail(**fields)


def _webhook(ctx: Context, job_id: str) -> WebhookView | None:
    with ctx.store.read() as session:
        row = session.get(ServiceJob, job_id)
        if row is None or row.callback_url is None or row.webhook_state is None:
            return None
        attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.job_id == job_id)
                                   .order_by(WebhookAttempt.id)).all()
    return WebhookView(url=row.callback_url, state=row.webhook_state, attempts=[
        WebhookAttemptView(attempt=a.attempt, at=_iso(a.at) or "", http_status=a.http_status, error=a.error,
                           next_attempt_at=_iso(a.next_attempt_at)) for a in attempts])


def job_detail(ctx: Context, job_id: str) -> JobDetail:
    """One job with its ETA and webhook.

    Raises:
        JobNotFound: no such job.
    """
    [view] = job_views(ctx.store, [job_id])
    detail = _detail(view, ctx, fleet_throughput(ctx.store), with_eta=True)
    return detail.model_copy(update={"webhook": _webhook(ctx, job_id)})


def job_list(ctx: Context, where: JobFilter) -> list[JobDetail]:
    """A page of jobs, newest first; ETAs only for jobs not ended (one query each)."""
    views: Sequence[JobView] = job_views(ctx.store, where=where)
    throughput = fleet_throughput(ctx.store)
    return [_detail(v, ctx, throughput, with_eta=not v.status.is_terminal) for v in views]
