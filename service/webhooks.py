"""Webhooks: when a job with a callback URL ends, its URL gets a signed POST, retried with back-off.

The sender runs as a thread inside every `serve` process (no extra process to deploy); each delivery is
claimed in SQL with a compare-and-set under a short lease, so several `serve` processes never deliver the
same attempt twice, and a process that dies mid-delivery only delays it by the lease. It reads what
workers wrote and never runs on a worker's synthesis path. Every attempt is a row in `webhook_attempts`.

Signature: `X-Ttsfleet-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed by the secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, or_, select, update

from producer.jobs import job_views
from schemas.db import Store
from schemas.errors import first_line
from schemas.settings import ServiceSettings
from schemas.status import JobStatus, WebhookState
from schemas.tables import Job, ServiceJob, WebhookAttempt, utcnow

log = logging.getLogger("ttsfleet.webhooks")
BATCH = 20  # deliveries claimed per pass


def signature(secret: str, body: bytes) -> str:
    """The `X-Ttsfleet-Signature` header value for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def payload(store: Store, job_id: str) -> bytes:
    """The POSTed body: the event and the job as `status --json` shows it (audio as its URL, not a path)."""
    [view] = job_views(store, [job_id])
    job = view.model_dump(mode="json")
    job["audio_path"] = f"/v1/jobs/{job_id}/audio" if view.audio_path else None
    job["book_path"] = None
    return json.dumps({"event": "job.ended", "job": job}, separators=(",", ":")).encode("utf-8")


class WebhookSender:
    """Claims due deliveries, POSTs them, records each attempt; `run_once` is one pass, `start` a thread."""

    def __init__(self, settings: ServiceSettings, store: Store, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.store = store
        self.owner = f"serve-{uuid.uuid4().hex[:12]}"
        self._client = client or httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ttsfleet-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_s + 5)
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the sender must outlive a broken store or a bad row; logged, retried
                log.exception("webhook pass failed")
            self._stop.wait(self.settings.webhook_poll_s)

    def run_once(self, now: datetime | None = None) -> int:
        """Deliver what is due now; returns how many attempts were made."""
        made = 0
        for job_id in self._claim(now or utcnow()):
            self._deliver(job_id)
            made += 1
        return made

    def _claim(self, now: datetime) -> list[str]:
        free = or_(ServiceJob.webhook_claim_expires_at.is_(None), ServiceJob.webhook_claim_expires_at < now)
        due = and_(ServiceJob.webhook_state == WebhookState.WAITING, free,
                   or_(ServiceJob.webhook_next_at.is_(None), ServiceJob.webhook_next_at <= now))
        with self.store.read() as session:
            candidates = list(session.scalars(
                select(ServiceJob.job_id).join(Job, Job.id == ServiceJob.job_id)
                .where(due, Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]))
                .order_by(ServiceJob.webhook_next_at).limit(BATCH)))
        lease = timedelta(seconds=self.settings.webhook_timeout_s * 3)
        claimed = []
        for job_id in candidates:
            with self.store.session() as session:  # compare-and-set: only one sender wins each row
                won = session.execute(update(ServiceJob).where(ServiceJob.job_id == job_id, due).values(
                    webhook_claimed_by=self.owner, webhook_claim_expires_at=now + lease)
                ).rowcount  # type: ignore[attr-defined]
            if won == 1:
                claimed.append(job_id)
        return claimed

    def _post(self, url: str, body: bytes, job_id: str, attempt: int) -> tuple[int | None, str | None]:
        headers = {"Content-Type": "application/json", "User-Agent": "ttsfleet-webhooks",
                   "X-Ttsfleet-Event": "job.ended", "X-Ttsfleet-Delivery": f"{job_id}.{attempt}",
                   "X-Ttsfleet-Signature": signature(self.settings.webhook_secret or "", body)}
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as err:
            return None, f"{type(err).__name__}: {first_line(err)}"[:500]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    def _deliver(self, job_id: str) -> None:
        with self.store.read() as session:
            row = session.get(ServiceJob, job_id)
        if row is None or row.callback_url is None:
            return
        attempt = row.webhook_attempts + 1
        http_status, error = self._post(row.callback_url, payload(self.store, job_id), job_id, attempt)
        now = utcnow()
        if error is None:
            state, next_at = WebhookState.DELIVERED, None
        elif attempt >= self.settings.webhook_max_attempts:
            state, next_at = WebhookState.FAILED, None
        else:
            state = WebhookState.WAITING
            next_at = now + timedelta(seconds=self.settings.webhook_backoff_s * 2 ** (attempt - 1))
        with self.store.session() as session:
            session.add(WebhookAttempt(job_id=job_id, attempt=attempt, at=now, http_status=http_status,
                                       error=error, next_attempt_at=next_at))
            session.execute(update(ServiceJob).where(
                ServiceJob.job_id == job_id, ServiceJob.webhook_claimed_by == self.owner).values(
                webhook_state=state, webhook_attempts=attempt, webhook_next_at=next_at,
                webhook_claimed_by=None, webhook_claim_expires_at=None))
