"""The outermost ASGI layer: the Bearer-key check (health routes exempt), the body-size limit, and the request
metrics (count, latency, in flight), for every route alike."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from dlforge.serve.served import Served


class _TooLarge(Exception):
    pass


class Guard:
    """Outermost layer: Bearer-key check (health routes exempt), body-size limit, and the request metrics."""

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
            limit = int(s.settings.limits.max_body_mb * 1024 * 1024)
            if s.api_key and scope["path"] not in s.health_routes and not _authorized(headers, s.api_key):
                return await _reply(send_status, 401, "missing or wrong API key: send Authorization: Bearer <key>",
                                    [(b"www-authenticate", b"Bearer")])
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                return await _reply(send_status, 413, f"body: {int(length)} bytes is over the limit of {limit}")
            received = [0]

            async def limited_receive() -> dict:
                message = await receive()
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise _TooLarge
                return message

            try:
                await self.app(scope, limited_receive, send_status)
            except _TooLarge:
                await _reply(send_status, 413, f"body: over the limit of {limit} bytes")
        finally:
            m.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            m.requests.labels(template, scope["method"], str(status[0])).inc()
            m.latency.labels(template).observe(time.perf_counter() - started)


def _authorized(headers: dict[bytes, bytes], key: str) -> bool:
    given = headers.get(b"authorization", b"")
    scheme, _, token = given.partition(b" ")
    # compare_digest: the time taken does not tell how much of the key was right
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode())


async def _reply(send: Any, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
