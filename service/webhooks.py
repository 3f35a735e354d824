"""Webhooks: when a job with a callback URL ends, its URL gets a signed POST, retried with back-off.

The sender runs inside every `serve` process (no extra process to deploy): a thread with its own asyncio
loop, delivering up to MAX_IN_FLIGHT webhooks at once, so one callback that never answers holds up none of
the others. Each delivery is claimed in SQL just before it is posted, by a compare-and-set under a lease
longer than the whole attempt (`webhook_timeout_s` bounds it end to end: the name's lookup, connecting,
sending, the answer's status), so several `serve` processes never deliver the same attempt twice, and a
process that dies mid-delivery only delays it by the lease. The callback's address is checked again at each
delivery and connected to as checked (service/callbacks.py); redirects are not followed. It reads what
workers wrote and never runs on a worker's synthesis path. Every attempt is a row in `webhook_attempts`;
an attempt that got no HTTP answer says only that, whatever the reason (refused, reset, timed out), so
attempt errors do not tell a closed port from a filtered one.

Signature: `X-Ttsfleet-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed by the secret>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import ColumnElement, and_, or_, select, update

from producer.jobs import job_views
from schemas.db import Store, compare_and_set
from schemas.settings import ServiceSettings
from schemas.status import JobStatus, WebhookState
from schemas.tables import Job, ServiceJob, WebhookAttempt, utcnow
from service.callbacks import CallbackRefused, Resolver, allowed_networks, checked_target, resolve
from service.views import visible_view

log = logging.getLogger("ttsfleet.webhooks")
MAX_IN_FLIGHT = 16  # deliveries one process makes at once
BATCH = 100  # due deliveries looked up per pass
NO_ANSWER = "no HTTP answer (connection failed or timed out)"
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def signature(secret: str, body: bytes) -> str:
    """The `X-Ttsfleet-Signature` header value for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def payload(store: Store, job_id: str) -> bytes | None:
    """The POSTed body: the event and the job as `status --json` shows it (audio as its URL, never a server
    path); None when the job is no longer ended (re-rendered or retried since)."""
    [view] = job_views(store, [job_id])
    if not view.status.is_terminal:
        return None
    job = visible_view(view).model_dump(mode="json")
    job["audio_path"] = f"/v1/jobs/{job_id}/audio" if view.audio_path and not view.audio_purged_at else None
    job["book_path"] = None
    return json.dumps({"event": "job.ended", "job": job}, separators=(",", ":")).encode("utf-8")


def _forget(under_way: dict[str, asyncio.Task[int]], job_id: str, _task: asyncio.Task[int]) -> None:
    under_way.pop(job_id, None)


@dataclass(frozen=True, slots=True)
class _Claim:
    job_id: str
    url: str
    attempt: int


class WebhookSender:
    """Claims due deliveries, POSTs them, records each attempt; `run_once` is one pass, `start` a thread."""

    def __init__(self, settings: ServiceSettings, store: Store, *, transport: httpx.AsyncBaseTransport | None = None,
                 resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.store = store
        self.owner = f"serve-{uuid.uuid4().hex[:12]}"
        self._transport = transport
        self._resolver = resolver
        self._allowed = allowed_networks(settings.callback_allow_networks)
        # Longer than one attempt end to end (its POST is cut at webhook_timeout_s), so it never lapses mid-attempt.
        self._lease = timedelta(seconds=settings.webhook_timeout_s * 2 + 10)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), name="ttsfleet-webhooks",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_s + 5)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, follow_redirects=False, trust_env=False,
                                 timeout=self.settings.webhook_timeout_s)

    async def _loop(self) -> None:
        """Every poll, start the due deliveries not already under way here, without waiting for them."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        under_way: dict[str, asyncio.Task[int]] = {}
        async with self._client() as client:
            while not self._stop.is_set():
                try:
                    for job_id in await asyncio.to_thread(self._due, utcnow()):
                        if job_id not in under_way and len(under_way) < MAX_IN_FLIGHT * 2:
                            task = asyncio.create_task(self._attempt(client, slots, job_id))
                            under_way[job_id] = task
                            task.add_done_callback(partial(_forget, under_way, job_id))
                except Exception:  # the sender must outlive a broken store or a bad row; logged, retried
                    log.exception("webhook pass failed")
                await asyncio.sleep(self.settings.webhook_poll_s)
            if under_way:
                await asyncio.wait(list(under_way.values()), timeout=self.settings.webhook_timeout_s + 2)

    async def run_once(self, now: datetime | None = None) -> int:
        """Deliver everything due at `now` (default: now), waiting for each; returns the attempts made."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        async with self._client() as client:
            due = await asyncio.to_thread(self._due, now or utcnow())
            made = await asyncio.gather(*(self._attempt(client, slots, job_id, now) for job_id in due))
        return sum(made)

    def _due_clause(self, now: datetime) -> ColumnElement[bool]:
        free = or_(ServiceJob.webhook_claim_expires_at.is_(None), ServiceJob.webhook_claim_expires_at < now)
        return and_(ServiceJob.webhook_state == WebhookState.WAITING, free,
                    or_(ServiceJob.webhook_next_at.is_(None), ServiceJob.webhook_next_at <= now))

    def _due(self, now: datetime) -> list[str]:
        with self.store.read() as session:
            return list(session.scalars(
                select(ServiceJob.job_id).join(Job, Job.id == ServiceJob.job_id)
                .where(self._due_clause(now), Job.status.in_(ENDED))
                .order_by(ServiceJob.webhook_next_at).limit(BATCH)))

    def _claim(self, job_id: str, now: datetime) -> _Claim | None:
        """Compare-and-set: this sender takes the delivery if it is still due and nobody holds it."""
        with self.store.session() as session:
            if not compare_and_set(session, update(ServiceJob).where(
                    ServiceJob.job_id == job_id, self._due_clause(now)).values(
                    webhook_claimed_by=self.owner, webhook_claim_expires_at=now + self._lease)):
                return None
            row = session.execute(select(ServiceJob.callback_url, ServiceJob.webhook_attempts)
                                  .where(ServiceJob.job_id == job_id)).one()
        return _Claim(job_id, str(row.callback_url), int(row.webhook_attempts) + 1) if row.callback_url else None

    async def _attempt(self, client: httpx.AsyncClient, slots: asyncio.Semaphore, job_id: str,
                       now: datetime | None = None) -> int:
        """Claim, post and record one delivery; 1 when an attempt was made."""
        async with slots:
            claim = await asyncio.to_thread(self._claim, job_id, now or utcnow())
            if claim is None:
                return 0
            body = await asyncio.to_thread(payload, self.store, job_id)
            if body is None:
                await asyncio.to_thread(self._release, claim)
                return 0
            http_status, error, final = await self._post(client, claim, body)
            await asyncio.to_thread(self._record, claim, http_status, error, final)
            return 1

    async def _post(self, client: httpx.AsyncClient, claim: _Claim, body: bytes) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error, whether the error is final) of one POST, all within webhook_timeout_s."""
        headers = {"Content-Type": "application/json", "User-Agent": "ttsfleet-webhooks",
                   "X-Ttsfleet-Event": "job.ended", "X-Ttsfleet-Delivery": f"{claim.job_id}.{claim.attempt}",
                   "X-Ttsfleet-Signature": signature(self.settings.webhook_secret or "", body)}
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                target = await checked_target(claim.url, self._allowed, self._resolver)
                extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
                async with client.stream("POST", target.url, content=body, extensions=extensions,
                                         headers=headers | {"Host": target.host_header}) as response:
                    status = response.status_code  # the answer's body is never read
        except CallbackRefused as err:
            return None, f"refused: {err}", True
        except (httpx.HTTPError, OSError, TimeoutError):
            return None, NO_ANSWER, False
        return status, None if 200 <= status < 300 else f"HTTP {status}", False

    def _record(self, claim: _Claim, http_status: int | None, error: str | None, final: bool) -> None:
        now = utcnow()
        if error is None:
            state, next_at = WebhookState.DELIVERED, None
        elif final or claim.attempt >= self.settings.webhook_max_attempts:
            state, next_at = WebhookState.FAILED, None
        else:
            state = WebhookState.WAITING
            next_at = now + timedelta(seconds=self.settings.webhook_backoff_s * 2 ** (claim.attempt - 1))
        with self.store.session() as session:
            session.add(WebhookAttempt(job_id=claim.job_id, attempt=claim.attempt, at=now, http_status=http_status,
                                       error=error, next_attempt_at=next_at))
            session.execute(update(ServiceJob).where(  # not if the key registered another callback meanwhile
                ServiceJob.job_id == claim.job_id, ServiceJob.webhook_claimed_by == self.owner,
                ServiceJob.callback_url == claim.url).values(
                webhook_state=state, webhook_attempts=claim.attempt, webhook_next_at=next_at,
                webhook_claimed_by=None, webhook_claim_expires_at=None))

    def _release(self, claim: _Claim) -> None:
        with self.store.session() as session:
            session.execute(update(ServiceJob).where(ServiceJob.job_id == claim.job_id,
                                                     ServiceJob.webhook_claimed_by == self.owner)
                            .values(webhook_claimed_by=None, webhook_claim_expires_at=None))
