"""What stands between a connection and the routes, for every route alike:

- `HeaderDeadline`, uvicorn's HTTP protocol with a deadline on a request's headers (uvicorn has none: headers sent a
  line a second hold a connection forever);
- `Guard`, the outermost ASGI layer: the Bearer-key check (health routes exempt), the request metrics (count,
  latency, in flight), and the body: read whole before any route sees it, within the size limit (413) and the
  read deadline (408), counted as it streams in, so that a chunked body without a Content-Length gets the same
  answer on every route. A client that leaves mid-upload is one info line, and status 499 in the metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dlforge.serve.served import Served

log = logging.getLogger("dlforge")

READ_TIMEOUT_STATE = "dlforge.read_timeout_s"  # the lifespan state key the protocol reads its deadline from
CLIENT_LEFT = 499  # the status the metrics count a request under when its client left before sending it all
_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol, but a connection whose request headers are not all in within the read deadline
    (from the connection's opening, or from the first byte of a request) gets 408 and is closed. Between requests
    uvicorn's keep-alive timeout applies, as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline_s: float = self.app_state.get(READ_TIMEOUT_STATE, 30.0)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.timer is None:  # a deadline once set is never pushed back
            self.timer = self.loop.call_later(self.deadline_s, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no response of an earlier request under way
            self.transport.write(_TIMEOUT_RESPONSE)
        log.info("closed a connection from %s: request headers not received within %g s (serve.limits.read_timeout_s)",
                 _peer(self.client), self.deadline_s)
        self.transport.close()


class _Refused(Exception):
    """The body cannot be had: `status` and `error` say why (None: the client left)."""

    def __init__(self, status: int, error: str | None) -> None:
        self.status, self.error = status, error


class Guard:
    """Outermost ASGI layer: Bearer-key check (health routes exempt), the body read within its limits, and the
    request metrics."""

    def __init__(self, app: Any, served: Served) -> None:
        self.app, self.s = app, served

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s, m = self.s, self.s.metrics
        status, started = [500], time.perf_counter()

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            headers = dict(scope["headers"])
            if s.api_key and scope["path"] not in s.health_routes and not _authorized(headers, s.api_key):
                return await _reply(send_status, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                                    [(b"www-authenticate", b"Bearer")])
            try:
                body = await self._read_body(headers, receive)
            except _Refused as e:
                if e.error is None:
                    status[0] = CLIENT_LEFT
                    log.info("%s %s: the client left before sending the whole body", scope["method"], scope["path"])
                    return None
                # the rest of the body is not read: the connection cannot carry another request
                return await _reply(send_status, e.status, e.error, [(b"connection", b"close")])
            await self.app(scope, _replay(body, receive), send_status)
        finally:
            m.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            m.requests.labels(template, scope["method"], str(status[0])).inc()
            m.latency.labels(template).observe(time.perf_counter() - started)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Any) -> bytes:
        """The whole body, counted as it arrives; `_Refused` over the size limit, past the read deadline, or when
        the client leaves."""
        limits = self.s.settings.limits
        limit = int(limits.max_body_mb * 1024 * 1024)
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            raise _Refused(413, f"body: {int(length)} bytes is over the limit of {limit}")
        chunks, size = [], 0
        deadline = time.monotonic() + limits.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                raise _Refused(408, f"body: not received within {limits.read_timeout_s:g} s "
                                    "(serve.limits.read_timeout_s)") from None
            if message["type"] == "http.disconnect":
                raise _Refused(CLIENT_LEFT, None)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, f"body: over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that gives the body already read, then passes on to the connection's (for a disconnect)."""
    sent = [False]

    async def replay() -> dict:
        if sent[0]:
            return await receive()
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _authorized(headers: dict[bytes, bytes], key: str) -> bool:
    given = headers.get(b"authorization", b"")
    scheme, _, token = given.partition(b" ")
    # compare_digest: the time taken does not tell how much of the key was right
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode())


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


async def _reply(send: Any, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
