"""Accepting jobs over HTTP: the callback URL and voices checked, then the client's `Idempotency-Key`, the
key's quota, `producer.submit` and the key's rows.

The store holds the idempotency keys, so a retry reaching another `serve` process behind the load balancer
gets the same jobs. A job's text already makes it idempotent (producer.submit), within the key's own jobs
(`tenant`): another key's identical text is another job, so it reveals nothing. The header also covers a
client that retries with a changed body.

Both checks hold under concurrent requests (service/locks.py): the quota is taken by a reservation in one
short step under the key's quota lock (count active jobs and reservations, add one), so the submissions
themselves run in parallel and the reservation is swapped for the jobs' rows in one transaction; a request
with an `Idempotency-Key` holds that key's idempotency lock from its lookup to its last row, so a retry
waits for the first call and then gets its jobs. Without them, 30 requests of one key racing past a quota
of 5 stored up to 30 jobs, and 10 retries with one `Idempotency-Key` stored 10 jobs for one answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from producer.dialogue import parse_voice_roles
from producer.ssml import is_ssml, parse_ssml
from producer.stats import list_workers
from producer.submit import Submitted, submit
from schemas.errors import InvalidInput, RetryableError
from schemas.messages import JobRequest
from schemas.status import JobStatus, WebhookState
from schemas.tables import Job, QuotaReservation, ServiceJob, utcnow
from schemas.voices import VoiceKind, resolve_voice_name, split_speaker
from service.callbacks import allowed_networks, check_callback_url
from service.context import Context
from service.keys import Caller
from service.locks import key_lock

RESERVATION_S = 600  # a submission's hold on its key's quota, should its process die before it is done


class QuotaExceeded(InvalidInput):
    """Raised when a key already has as many queued and running jobs as it may (HTTP 429)."""


class HubVoiceRefused(InvalidInput):
    """Raised when a job names an `hf:` voice that only the model hub has, and downloads are not allowed."""


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


def _reserve(ctx: Context, key_id: str, adding: int) -> str:
    """Take `adding` jobs of the key's quota (its queued and running jobs plus the reservations of its
    submissions in flight), in one short step under the key's quota lock; returns the reservation's id.

    Raises:
        QuotaExceeded: that would pass the key's quota.
    """
    now = utcnow()
    limit = ctx.settings.max_queued_per_key
    with key_lock(ctx.store, f"quota:{key_id}"), ctx.store.session() as session:
        session.execute(delete(QuotaReservation).where(QuotaReservation.expires_at < now))
        # One statement, so one snapshot: a submission registering between two reads (its jobs' rows in,
        # its reservation out, in one transaction outside the lock) would be counted by neither.
        active_q = (select(func.count()).select_from(ServiceJob).join(Job, Job.id == ServiceJob.job_id)
                    .where(ServiceJob.key_id == key_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])))
        held_q = select(func.coalesce(func.sum(QuotaReservation.jobs), 0)).where(QuotaReservation.key_id == key_id)
        active, held = session.execute(select(active_q.scalar_subquery(), held_q.scalar_subquery())).one()
        if active + held + adding > limit:
            raise QuotaExceeded(f"quota exceeded: this key has {active + held} queued or running jobs and may "
                                f"have {limit}; wait for some to finish")
        token = uuid.uuid4().hex
        session.add(QuotaReservation(id=token, key_id=key_id, jobs=adding,
                                     expires_at=now + timedelta(seconds=RESERVATION_S)))
    return token


def _release(ctx: Context, token: str) -> None:
    with ctx.store.session() as session:
        session.execute(delete(QuotaReservation).where(QuotaReservation.id == token))


def accept_jobs(ctx: Context, caller: Caller, requests: Sequence[JobRequest], *, idempotency_key: str | None,
                callback_url: str | None) -> list[Submitted]:
    """Submit `requests` for `caller`; a repeated `idempotency_key` returns the first call's jobs. A
    `callback_url` is registered on every job returned, new or not (the latest one given wins).

    Raises:
        InvalidInput: bad input, a callback without a configured webhook secret or to a refused address
            (service/callbacks.py), or an `hf:` voice no worker has while hub downloads are not allowed.
        QuotaExceeded: the key's queued and running jobs would pass its quota.
        BrokerUnavailable, StoreUnavailable, UnknownVoice: as producer.submit.submit.
        RetryableError: the key's lock was not had in time.
    """
    if callback_url is not None:
        if not ctx.settings.webhook_secret:
            raise InvalidInput("callback_url needs a webhook secret on the server (TTSFLEET_WEBHOOK_SECRET)")
        check_callback_url(callback_url, allowed_networks(ctx.settings.callback_allow_networks))
    check_hub_voices(ctx, requests)
    if idempotency_key is None:
        return _accept(ctx, caller, requests, None, callback_url)
    with key_lock(ctx.store, f"idempotency:{caller.key_id}"):  # a retry waits for the first call to finish
        earlier = _replay(ctx, caller.key_id, idempotency_key)
        if earlier:
            _register(ctx, caller.key_id, earlier, None, callback_url)
            return earlier
        return _accept(ctx, caller, requests, idempotency_key, callback_url)


def _accept(ctx: Context, caller: Caller, requests: Sequence[JobRequest], idempotency_key: str | None,
            callback_url: str | None) -> list[Submitted]:
    """Reserve the quota, submit (no lock held: a key's submissions run in parallel), then the key's rows
    in place of the reservation."""
    token = _reserve(ctx, caller.key_id, len(requests))
    try:
        results = submit(requests, ctx.settings, ctx.store, publisher=ctx.publisher, tenant=caller.tenant)
        _register(ctx, caller.key_id, results, idempotency_key, callback_url, release=token)
    except BaseException:
        _release(ctx, token)
        raise
    return results


def _register(ctx: Context, key_id: str, results: Sequence[Submitted], idempotency_key: str | None,
              callback_url: str | None, *, release: str | None = None) -> None:
    """The key's row for each new job (and its quota reservation `release` dropped, in the same
    transaction); for a job it already had, the callback given now (if any)."""
    for _ in range(2):  # the same text submitted twice at once: the second finds the first's row on a retry
        try:
            return _register_once(ctx, key_id, results, idempotency_key, callback_url, release)
        except IntegrityError:
            continue
    raise RetryableError("could not register the jobs: conflicting concurrent submissions; try again")


def _register_once(ctx: Context, key_id: str, results: Sequence[Submitted], idempotency_key: str | None,
                   callback_url: str | None, release: str | None) -> None:
    ids = [r.id for r in results]
    with ctx.store.session() as session:
        known = set(session.scalars(select(ServiceJob.job_id).where(ServiceJob.job_id.in_(ids))))
        fresh = [{"job_id": r.id, "key_id": key_id, "created_at": utcnow(), "webhook_attempts": 0,
                  "idempotency_key": _idem(idempotency_key, i) if idempotency_key is not None else None,
                  "callback_url": callback_url,
                  "webhook_state": WebhookState.WAITING if callback_url is not None else None}
                 for i, r in enumerate(results) if r.id not in known]
        if fresh:
            session.execute(insert(ServiceJob), fresh)
        if release is not None:
            session.execute(delete(QuotaReservation).where(QuotaReservation.id == release))
        if callback_url is not None and known:
            # A new callback (or a first one) on a job the key already had: delivered when the job ends, at
            # once if it has ended. The same URL again changes nothing (no second delivery).
            session.execute(
                update(ServiceJob).where(ServiceJob.job_id.in_(list(known)), ServiceJob.key_id == key_id,
                                         ServiceJob.callback_url.is_distinct_from(callback_url))
                .values(callback_url=callback_url, webhook_state=WebhookState.WAITING, webhook_attempts=0,
                        webhook_next_at=None, webhook_claimed_by=None, webhook_claim_expires_at=None)
                .execution_options(synchronize_session=False))


def _voice_names(request: JobRequest, default_voice: str) -> list[str]:
    """Every voice a request names: its own (or both of `narrator=A,dialogue=B`), and its SSML's."""
    given = request.voice
    roles = parse_voice_roles(given)
    names = [roles.narrator, roles.dialogue] if roles else [given] if given else []
    if "hf:" in request.text and is_ssml(request.text):
        document = parse_ssml(request.text, request.source or "input")
        names += [v for v in (document.voice, *(s.voice for s in document.spans)) if v is not None]
    return [n for n in names if split_speaker(n.strip())[0].startswith("hf:") and n.strip() != default_voice]


def check_hub_voices(ctx: Context, requests: Sequence[JobRequest]) -> None:
    """Refuse `hf:` voices that a worker would have to download from the model hub, unless the operator
    allows it (TTSFLEET_ALLOW_HUB_VOICES): one already in this host's Hugging Face cache, or the voice a
    ready worker loaded, is fine; the server's own default voice always is.

    Raises:
        HubVoiceRefused: such a voice (named in the message, with what to do).
        UnknownVoice: a malformed `hf:` name.
    """
    if ctx.settings.allow_hub_voices:
        return
    names = {n for r in requests for n in _voice_names(r, ctx.settings.voice)}
    if not names:
        return
    loaded = {w.voice for w in list_workers(ctx.store) if w.state == "ready"}
    for name in sorted(names):
        info = resolve_voice_name(name)
        if not info.available and info.name not in loaded and info.kind == VoiceKind.HF:
            raise HubVoiceRefused(f"voice {info.name[:120]} is not on any worker and this server does not download "
                               "voices from the model hub (TTSFLEET_ALLOW_HUB_VOICES); GET /v1/voices lists "
                               "those it has")
