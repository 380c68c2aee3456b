"""Request limits of the query service, as one ASGI middleware in front of every endpoint.

A hostile or careless client must not be able to take the server's memory, threads or time:

- **body size**: a request body over ``max_body`` bytes is refused with 413 (by its Content-Length before
  anything is read, or as soon as the streamed body passes the limit);
- **URL and header sizes**: a URL (path and query string) over ``max_url`` bytes gets 414, headers over
  ``max_headers`` bytes in all get 431 (uvicorn's own parser refuses anything over ``H11_MAX_EVENT`` with 400);
- **a bounded queue**: at most ``max_in_flight`` requests are handled at once (running queries plus those waiting
  for a query slot); one more gets 503 with ``Retry-After`` at once instead of a thread that waits for minutes.
  ``/health`` and the documentation pages are never queued or refused;
- **clients that went away**: once a request's body is read, the middleware listens for the client's disconnect
  and sets the request's cancel event (``request.state.cancel``, a ``threading.Event``); the query path interrupts
  the query on it (``Catalog.query(cancel=...)``), so an abandoned query stops instead of running to its time limit.

Every refusal is JSON ``{"error": "..."}`` like the service's other errors.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

H11_MAX_EVENT = 256 * 1024
"""uvicorn's h11 buffer for a request line and headers (bytes): past it uvicorn answers 400 itself, so it is set
above ``max_url`` + ``max_headers`` and the middleware answers 414/431 first."""

DEFAULT_MAX_QUEUED = 16
"""Requests that may wait for a query slot beyond those running (``negdb serve --max-queued``)."""

UNQUEUED = frozenset({"/health", "/", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
"""Paths answered whatever the load: cheap, and how a client or operator finds out the server is alive."""


@dataclass(frozen=True)
class Limits:
    """The request limits (see the module docstring); ``negdb serve`` options set them."""

    max_body: int = 1 << 20
    max_url: int = 32 * 1024
    max_headers: int = 64 * 1024
    max_in_flight: int = 32
    retry_after_s: int = 1


def cancel_of(request: Any) -> threading.Event | None:
    """The cancel event :class:`RequestLimits` gave ``request`` (a Starlette request), if any."""
    return request.scope.get("state", {}).get("cancel")


async def _reply(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware enforcing :class:`Limits` (``app.add_middleware(RequestLimits, limits=...)``)."""

    def __init__(self, app: ASGIApp, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.in_flight = 0
        self.refused = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits
        url = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string") or b"")
        if url > lim.max_url:
            await _reply(send, 414, f"the URL is {url:,} bytes, more than this server's {lim.max_url:,}: send long "
                                    "SQL or conditions as POST /sql with a JSON body")
            return
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
        if header_bytes > lim.max_headers:
            await _reply(send, 431, f"the request headers are {header_bytes:,} bytes, more than this server's "
                                    f"{lim.max_headers:,}")
            return
        length = next((v for k, v in scope.get("headers") or () if k.lower() == b"content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > lim.max_body:
            await _reply(send, 413, self._body_message(int(length)))
            return
        queued = scope.get("path") not in UNQUEUED
        if queued:
            with self._lock:
                if self.in_flight >= lim.max_in_flight:
                    self.refused += 1
                    full = True
                else:
                    self.in_flight += 1
                    full = False
            if full:
                await _reply(send, 503, f"the server is busy ({lim.max_in_flight} requests in progress): retry in "
                                        f"{lim.retry_after_s} s", [(b"retry-after", str(lim.retry_after_s).encode())])
                return
        cancel = threading.Event()
        scope.setdefault("state", {})["cancel"] = cancel
        try:
            await self._handle(scope, receive, send, cancel)
        finally:
            cancel.set()  # the request is over: nothing of it may keep running
            if queued:
                with self._lock:
                    self.in_flight -= 1

    def _body_message(self, size: int | None = None) -> str:
        said = f"{size:,} bytes, " if size is not None else ""
        return (f"the request body is {said}more than this server's limit of {self.limits.max_body:,} bytes: send "
                "a shorter statement")

    async def _handle(self, scope: Scope, receive: Receive, send: Send, cancel: threading.Event) -> None:
        """Run the app with a receive channel fed by one pump task, which reads the body (at most ``max_body``
        bytes: past it the pump answers 413 and the app's sends are dropped) and then waits for the client's
        disconnect, which sets ``cancel``. GET requests, whose body the app never reads, are watched too."""
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        state = {"started": False, "replied": False}

        async def pump() -> None:
            received = 0
            while True:
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.limits.max_body:
                        cancel.set()
                        if not state["started"]:
                            state["started"] = state["replied"] = True
                            await _reply(send, 413, self._body_message())
                        await inbox.put({"type": "http.disconnect"})
                        return
                elif message["type"] == "http.disconnect":
                    cancel.set()
                    await inbox.put(message)
                    return
                await inbox.put(message)

        async def app_receive() -> Message:
            return await inbox.get()

        async def app_send(message: Message) -> None:
            if state["replied"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        reader = asyncio.ensure_future(pump())
        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if not state["replied"]:
                raise
        finally:
            reader.cancel()
