"""`ttsfleet serve`: the application under uvicorn, with a deadline on each request's head."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from schemas.db import open_store
from schemas.errors import InvalidInput
from schemas.settings import ServiceSettings
from service.context import is_loopback


class HeadTimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head (request line and headers) has not
    all arrived `head_timeout_s` after its first byte (or after the connection opened): uvicorn has no such
    deadline, so a client sending its headers a byte at a time would hold a connection for ever. Written
    here because no option of uvicorn does it; the body's deadline is service.limits'."""

    head_timeout_s = 60.0
    _head_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_head_timer()  # a whole head arrived: the request is the application's now
        elif self._head_timer is None and not self.transport.is_closing():
            self._arm_head_timer()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, settings: ServiceSettings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app` under `settings` (what `serve` runs; tests run it in a thread)."""
    protocol = type("HeadTimedH11", (HeadTimedH11Protocol,), {"head_timeout_s": settings.client_timeout_s})
    options: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": "info",
                               "proxy_headers": False, "server_header": False, "http": protocol}
    return uvicorn.Config(app, **(options | overrides))


def serve(settings: ServiceSettings) -> None:
    """Run until interrupted.

    Raises:
        InvalidInput: a non-loopback address with no API key anywhere (nobody could use it).
    """
    from service.app import create_app
    from service.keys import list_keys

    store = open_store(settings.database_url)
    if not is_loopback(settings.host) and not settings.api_keys_file \
            and not any(k.revoked_at is None for k in list_keys(store)):
        raise InvalidInput(f"serving on {settings.host} requires API keys: create one with `ttsfleet keys create "
                           "NAME` or set TTSFLEET_API_KEYS_FILE")
    uvicorn.Server(uvicorn_config(create_app(settings, store), settings)).run()
