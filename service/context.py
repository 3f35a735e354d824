"""What every request handler shares: settings, the store, the publisher and the caller (its API key)."""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from schemas.broker import Publisher
from schemas.db import Store
from schemas.settings import ServiceSettings
from service.keys import Caller, check_key, read_keys_file

ANONYMOUS = Caller("", admin=True)  # every request when keys are not required: one user, who sees everything


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LockedPublisher(Publisher):
    """One Celery producer shared by the request threads; a kombu connection is not thread-safe."""

    def __init__(self, broker_url: str, queue: str) -> None:
        super().__init__(broker_url, queue)
        self._lock = threading.Lock()

    def publish(self, job_id: str, priority: int, queue: str | None = None) -> None:
        with self._lock:
            super().publish(job_id, priority, queue)


@dataclass
class Context:
    settings: ServiceSettings
    store: Store
    publisher: LockedPublisher
    keys_required: bool
    file_keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: ServiceSettings, store: Store) -> Context:
        """Keys are required on a non-loopback address whatever the settings say."""
        required = settings.require_api_keys or not is_loopback(settings.host)
        file_keys = read_keys_file(settings.api_keys_file) if settings.api_keys_file else {}
        return cls(settings, store, LockedPublisher(settings.broker_url, settings.queue), required, file_keys)


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def api_key(request: Request) -> Caller:
    """Who is calling (ANONYMOUS when keys are not required); 401 without a valid `Bearer` key."""
    ctx = context(request)
    if not ctx.keys_required:
        return ANONYMOUS
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    caller = check_key(ctx.store, key.strip(), ctx.file_keys) if scheme.lower() == "bearer" and key else None
    if caller is None:
        raise HTTPException(401, "a valid API key is required: Authorization: Bearer KEY (ttsfleet keys create)",
                            headers={"WWW-Authenticate": "Bearer"})
    return caller
