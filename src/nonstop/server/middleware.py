"""The ASGI layer around every request: NUL and size limits, latency metrics, access log.

A NUL character in the path or query is refused at once (400): neither
database can store it in text. The size limit counts the bytes actually
received (a client may send no Content-Length, or a false one), and answers
413 before the handler sees more than the limit. Bundle uploads have their
own, larger limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nonstop.server.logs import logger
from nonstop.server.metrics import LATENCY, RESPONSES

_log = logger("access")


class RequestGuard:
    """The outermost ASGI layer of the app (see the module docstring); ``limit_for(method,
    path)`` gives a request's body limit in bytes.
    """

    def __init__(
        self, app: ASGIApp, limit_for: Callable[[str, str], int], access_log: bool
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.limit_for(scope["method"], scope["path"])
        status = 500
        response_started = False

        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # No database stores NUL in text; refuse it here, whatever the endpoint.
            await _reject(send, 400, "request path or query contains a NUL character")
            self._finish(scope, 400, started)
            return

        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reject(send, 413, f"request body larger than {limit} bytes")
            self._finish(scope, 413, started)
            return
        # With a Content-Length the HTTP parser delivers exactly that many bytes: counting
        # them again is needed only for a body without one (chunked).
        counted = declared is None

        received = 0
        rejected = False

        async def counting_receive() -> Message:
            nonlocal received, rejected, status
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not response_started:
                    # Answer now; the handler sees a disconnect and whatever it sends is dropped.
                    rejected, status = True, 413
                    await _reject(send, 413, f"request body larger than {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal status, response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive if counted else receive, tracking_send)
        except Exception:
            if not rejected:
                raise
        finally:
            self._finish(scope, status, started)

    def _finish(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", "unmatched")
        LATENCY.labels(route).observe(elapsed)
        RESPONSES.labels(route, str(status)).inc()
        if self.access_log:
            client = scope.get("client")
            _log.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    }
                },
            )


async def _reject(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
