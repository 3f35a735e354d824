"""Limits every request meets before any route, key check or body parser runs: the body's size, counted as
it streams, and the time the client may take to send it.

A pure ASGI middleware (written here because Starlette and uvicorn have neither limit): a declared
`Content-Length` above the limit is answered `413` at once; a chunked or lying body is counted as it arrives
and refused at the first byte past the limit, so no route ever holds more than the limit in memory. The
body must arrive within `client_timeout_s` of the request's head (`408` otherwise); once it is complete,
`receive` is passed through untouched (a download listening for the client's disconnect is not timed).
The request head has its own deadline in `service.server` (uvicorn's protocol).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body is above the limit of {limit:,} bytes for this route",
                         headers={"Connection": "close"})


def too_slow(timeout_s: float) -> HTTPException:
    return HTTPException(408, f"the request body did not arrive within {timeout_s:g} s",
                         headers={"Connection": "close"})


class RequestLimits:
    """`limit_for(scope)`: the body limit in bytes of the route `scope` asks for."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[Scope], int], client_timeout_s: float) -> None:
        self.app = app
        self.limit_for = limit_for
        self.client_timeout_s = client_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, too_large(limit))
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._limited(receive, limit), tracked_send)
        except HTTPException as err:  # raised by the limited receive outside a route's handlers
            if err.status_code not in (408, 413) or started:
                raise
            await _answer(send, err)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.client_timeout_s
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError as err:
                raise too_slow(self.client_timeout_s) from err
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise too_large(limit)
            else:
                complete = True
            return message

        return limited_receive


async def _answer(send: Send, err: HTTPException) -> None:
    body = json.dumps({"detail": err.detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items())]
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
