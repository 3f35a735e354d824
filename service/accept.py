"""Accepting jobs over HTTP: per-key quota, the client's `Idempotency-Key`, webhooks; then producer.submit.

The store holds the idempotency keys, so a retry reaching another `serve` process behind the load balancer
gets the same jobs. A job's text already makes it idempotent (producer.submit); the header also covers a
client that retries with a changed body.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from producer.submit import Submitted, submit
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.status import JobStatus, WebhookState
from schemas.tables import Job, ServiceJob, utcnow
from service.context import Context


class QuotaExceeded(InvalidInput):
    """Raised when a key already has as many queued and running jobs as it may (HTTP 429)."""


def _idem(key: str, index: int) -> str:
    return f"{key}#{index}"


def _replay(ctx: Context, key_id: str, idempotency_key: str) -> list[Submitted]:
    """The jobs an earlier request with this key id and `Idempotency-Key` made, in their order."""
    prefix = idempotency_key + "#"
    with ctx.store.read() as session:
        rows = session.execute(
            select(ServiceJob.idempotency_key, Job.id, Job.status, Job.chunks_total)
            .join(Job, Job.id == ServiceJob.job_id)
            .where(ServiceJob.key_id == key_id, ServiceJob.idempotency_key.startswith(prefix, autoescape=True))
        ).all()
    ordered = sorted(rows, key=lambda r: int(str(r[0]).rsplit("#", 1)[1]))
    return [Submitted(r.id, JobStatus(r.status), False, r.chunks_total) for r in ordered]


def _check_quota(ctx: Context, key_id: str, adding: int) -> None:
    with ctx.store.read() as session:
        active = session.scalar(
            select(func.count()).select_from(ServiceJob).join(Job, Job.id == ServiceJob.job_id)
            .where(ServiceJob.key_id == key_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))) or 0
    limit = ctx.settings.max_queued_per_key
    if active + adding > limit:
        raise QuotaExceeded(f"quota exceeded: this key has {active} queued or running jobs and may have "
                            f"{limit}; wait for some to finish")


def accept_jobs(ctx: Context, key_id: str, requests: Sequence[JobRequest], *, idempotency_key: str | None,
                callback_url: str | None) -> list[Submitted]:
    """Submit `requests` for the key `key_id`; a repeated `idempotency_key` returns the first call's jobs.

    Raises:
        InvalidInput: bad input, or a callback without a configured webhook secret.
        QuotaExceeded: the key's queued and running jobs would pass its quota.
        BrokerUnavailable, StoreUnavailable, UnknownVoice: as producer.submit.submit.
    """
    if idempotency_key is not None:
        earlier = _replay(ctx, key_id, idempotency_key)
        if earlier:
            return earlier
    if callback_url is not None and not ctx.settings.webhook_secret:
        raise InvalidInput("callback_url needs a webhook secret on the server (TTSFLEET_WEBHOOK_SECRET)")
    _check_quota(ctx, key_id, len(requests))
    results = submit(requests, ctx.settings, ctx.store, publisher=ctx.publisher)
    rows = [{"job_id": r.id, "key_id": key_id, "created_at": utcnow(), "webhook_attempts": 0,
             "idempotency_key": _idem(idempotency_key, i) if idempotency_key is not None else None,
             "callback_url": callback_url,
             "webhook_state": WebhookState.WAITING if callback_url is not None else None}
            for i, r in enumerate(results)]
    with ctx.store.read() as session:
        known = set(session.scalars(select(ServiceJob.job_id).where(ServiceJob.job_id.in_([r.id for r in results]))))
    fresh = [row for row in rows if row["job_id"] not in known]
    if fresh:
        try:
            with ctx.store.session() as session:
                session.execute(insert(ServiceJob), fresh)
        except IntegrityError:
            # A concurrent retry with the same Idempotency-Key (or the same text) registered first.
            if idempotency_key is not None and (earlier := _replay(ctx, key_id, idempotency_key)):
                return earlier
    return results
