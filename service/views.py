"""Jobs as the API shows them: `status --json`'s fields with URLs instead of server paths, the ETA and the
webhook's delivery attempts; only the caller's own jobs (an admin key: every job).

A key sees the jobs it submitted and no other: another tenant's job reads exactly as a job that does not
exist (`404 no such job`), in lists, details, files, cancel and the workers' current jobs. Errors and
warnings are shown without server locations: paths, object-store keys and endpoint URLs become
`<path>`/`<url>` (a worker's error names the file it could not write, or the S3 endpoint it could not reach).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from producer.eta import Throughput, fleet_throughput, job_eta
from producer.jobs import MAX_PAGE, JobFilter, job_views
from schemas.errors import InvalidInput, JobNotFound
from schemas.messages import JOB_ID_PATTERN, JobView
from schemas.tables import Job, ServiceJob, WebhookAttempt
from service.context import Context
from service.keys import Caller
from service.models import JobDetail, WebhookAttemptView, WebhookView

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)\]]+")
_PATH = re.compile(r"(?<![\w.:/~-])(?:~|\.{1,2})?/(?:[^\s/'\":]+/)+[^\s'\":,;)\]]*")


def redacted(text: str | None) -> str | None:
    """`text` with every URL and absolute or relative path (two parts or more) replaced."""
    if text is None:
        return None
    return _PATH.sub("<path>", _URL.sub("<url>", text))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def job_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def owned(ctx: Context, caller: Caller, job_id: str) -> str:
    """`job_id` if the caller may see it.

    Raises:
        JobNotFound: not a job id, no such job, or another tenant's (the same answer for all three).
    """
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise JobNotFound("no such job")
    if caller.admin:
        return job_id
    with ctx.store.read() as session:
        key_id = session.scalar(select(ServiceJob.key_id).where(ServiceJob.job_id == job_id))
    if key_id != caller.key_id:
        raise JobNotFound(f"no such job: {job_id}")
    return job_id


def visible_view(view: JobView) -> JobView:
    """`view` without server locations in its error, attempt errors and warnings."""
    return view.model_copy(update={
        "error": redacted(view.error), "warnings": [redacted(w) or "" for w in view.warnings],
        "attempt_errors": [e.model_copy(update={"error": redacted(e.error) or ""}) for e in view.attempt_errors]})


def _detail(view: JobView, ctx: Context, throughput: Throughput, with_eta: bool) -> JobDetail:
    done = view.audio_path is not None and view.audio_purged_at is None
    fields = visible_view(view).model_dump()
    book_ready = bool(view.book_path and view.book_id and done)
    fields.update(audio_path=job_url(view.id) + "/audio" if done else None,
                  book_path=job_url(view.id) + "/book" if book_ready else None,
                  book_url=f"/v1/books/{view.book_id}/audio" if book_ready else None)
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
        WebhookAttemptView(attempt=a.attempt, at=_iso(a.at) or "", http_status=a.http_status,
                           error=redacted(a.error), next_attempt_at=_iso(a.next_attempt_at)) for a in attempts])


def job_detail(ctx: Context, caller: Caller, job_id: str) -> JobDetail:
    """One job of the caller's with its ETA and webhook.

    Raises:
        JobNotFound: no such job, or another tenant's.
    """
    [view] = job_views(ctx.store, [owned(ctx, caller, job_id)])
    detail = _detail(view, ctx, fleet_throughput(ctx.store), with_eta=True)
    return detail.model_copy(update={"webhook": _webhook(ctx, job_id)})


def _own_ids(ctx: Context, caller: Caller, where: JobFilter) -> list[str]:
    """A page of the caller's job ids, newest first (the order `job_views` lists every job in)."""
    if not 1 <= where.limit <= MAX_PAGE or where.offset < 0:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE} and offset 0 or more")
    query = (select(Job.id).join(ServiceJob, ServiceJob.job_id == Job.id).where(ServiceJob.key_id == caller.key_id)
             .order_by(Job.created_at.desc(), Job.id).limit(where.limit).offset(where.offset))
    if where.status is not None:
        query = query.where(Job.status == where.status)
    with ctx.store.read() as session:
        return list(session.scalars(query))


def job_list(ctx: Context, caller: Caller, where: JobFilter) -> list[JobDetail]:
    """A page of the caller's jobs (an admin's: every job), newest first; ETAs only for jobs not ended."""
    views: Sequence[JobView]
    if caller.admin:
        views = job_views(ctx.store, where=where)
    else:
        ids = _own_ids(ctx, caller, where)
        views = job_views(ctx.store, ids) if ids else []
    throughput = fleet_throughput(ctx.store)
    return [_detail(v, ctx, throughput, with_eta=not v.status.is_terminal) for v in views]


def visible_jobs(ctx: Context, caller: Caller, job_ids: Sequence[str]) -> set[str]:
    """Those of `job_ids` the caller may see."""
    if caller.admin:
        return set(job_ids)
    with ctx.store.read() as session:
        return set(session.scalars(select(ServiceJob.job_id).where(ServiceJob.job_id.in_(list(job_ids)),
                                                                  ServiceJob.key_id == caller.key_id)))
