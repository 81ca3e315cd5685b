"""What keeps the HTTP API safe to expose: who is calling (API keys), how much they may send and ask at once,
and answers that stop the moment their client goes away.

- :func:`caller_of`: with API keys configured, every ``/v1`` request needs ``Authorization: Bearer KEY``; with
  none, only this machine's own clients are served (and ``serve-api`` refuses a network address).
- :class:`BodyLimit`: a request body over ``api.max_request_bytes`` gets 413 before it is read in full.
- :class:`Slots`: at most ``api.max_concurrent`` chat requests at once, ``api.max_concurrent_per_key`` of them
  for one key; one more gets 429 with Retry-After.
- :class:`EventPump`: a blocking answer stream run in its own thread for async code; stopping it (the client
  disconnected) stops the model at its next token and frees the request's slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.api_keys import ApiKeys

log = logging.getLogger(__name__)

LOCAL_OWNER = "api:local"  # who owns the API's conversations when no key is configured
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or 'localhost') is this machine's loopback interface only."""
    if not host:
        return False  # '' binds every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def addressed_here(host_header: str) -> bool:
    """Whether a request's Host header names this machine (localhost or a loopback address, any port). A web
    page can point its own domain at 127.0.0.1 (DNS rebinding) and reach a keyless local API from the
    browser; its requests still name that domain."""
    host = host_header.strip()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # 127.0.0.1:8000, localhost:8000
        host = host.split(":", 1)[0]
    return is_loopback(host.lower())


class ExposureRefused(RuntimeError):
    """``serve-api`` on a network address with no API key to protect it."""


def check_exposure(host: str, keys: ApiKeys) -> None:
    if not is_loopback(host) and not keys.any_active():
        raise ExposureRefused(
            f"refusing to serve the API on {host or 'every interface'} without authentication: create a key "
            "first with `chatbot api-keys create NAME` (clients send it as 'Authorization: Bearer KEY'), or "
            "serve on 127.0.0.1 behind a reverse proxy (docs/security.md)"
        )


def caller_of(keys: ApiKeys) -> Callable[[Request], Any]:
    """A FastAPI dependency giving the conversation owner of the request, or raising 401."""

    async def caller(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not keys.configured():
            proxied = any(h in request.headers for h in PROXY_HEADERS)
            client = request.client.host if request.client else None
            if is_loopback(client) and not proxied and addressed_here(request.headers.get("host", "")):
                return LOCAL_OWNER
            raise _unauthorized(
                "no API key is configured, so the API serves only this machine; the administrator can "
                "create one with `chatbot api-keys create NAME`"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("missing API key: send 'Authorization: Bearer KEY'")
        key = keys.check(token.strip())
        if key is None:
            raise _unauthorized("invalid or revoked API key")
        return f"api:{key.owner}"

    return caller


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, by its Content-Length when it has
    one, else as soon as the bytes received pass the limit (so a huge body is never held in memory)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await _send_json(send, 413, self._message())
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message())  # FastAPI re-raises it from body parsing
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request body over the limit of {self.limit} bytes (api.max_request_bytes)"


async def _send_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "request_too_large"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Slots:
    """At most ``n`` holders at once, and at most ``per_owner`` of them for one owner (an API key), so that one
    client cannot hold them all; :meth:`take` never waits (a full house is answered with 429)."""

    def __init__(self, n: int, per_owner: int | None = None) -> None:
        self.n, self.per_owner = n, min(per_owner or n, n)
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str = "") -> str | None:
        """Take a slot for ``owner``: None when taken, else why not."""
        with self._lock:
            if self._held.total() >= self.n:
                return f"too many requests at once (api.max_concurrent = {self.n}); retry later"
            if self._held[owner] >= self.per_owner:
                return (
                    f"this client already has {self._held[owner]} requests running or waiting "
                    f"(api.max_concurrent_per_key = {self.per_owner}); retry when one has ended"
                )
            self._held[owner] += 1
            return None

    def give_back(self, owner: str = "") -> None:
        with self._lock:
            self._held[owner] -= 1
            if self._held[owner] <= 0:
                del self._held[owner]


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class EventPump:
    """Iterates ``make(stop)`` (a blocking iterator of chat events) in its own thread and hands the events to
    async code. Setting :attr:`stop` ends the answer: the model stops at its next token (or as soon as it is
    free, when still waiting for it); the iterator is closed in the thread that iterated it, then ``done()``
    runs."""

    def __init__(self, make: Callable[[threading.Event], Iterator[Any]], done: Callable[[], None]) -> None:
        self.stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._done = done
        self._events = make(self.stop)
        threading.Thread(target=self._run, daemon=True, name="answer").start()

    def _run(self) -> None:
        try:
            for event in self._events:
                self._put(event)
                if self.stop.is_set():
                    break
        except BaseException as exc:  # handed to the reader, who turns it into an HTTP error
            self._put(_Failed(exc))
        finally:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
            self._put(_End())
            self._done()

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the server's loop is gone (shutting down): nobody reads
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next(self, timeout: float | None = None) -> Any:
        """The next event; None at the end; raises what the iterator raised, or TimeoutError."""
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if isinstance(item, _Failed):
            raise item.error
        return None if isinstance(item, _End) else item
