"""Structured access logs (one JSON line per request on stderr, never a token) and the HTTP
request metrics, from one middleware.

Each line names the method, the path (without its query string), the status, the duration and
the token's *name* (never the token or the Authorization header). The metrics count requests by
route (the path template, so subjects do not explode the label set), method and status.

The lines of the requests answered in one turn of the event loop are written together, at the
end of that turn (`_Lines`): one write for many requests. Each write lets the other threads take
the interpreter lock, and under load the event loop then waits for it again (tens of
microseconds a time, the cost of a whole cheap request).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adminchain.server.metrics import Metrics

__all__ = ["AccessLog", "log_event"]

_encode = msgspec.json.Encoder()


def log_event(**fields: Any) -> None:
    """Write one structured log line to stderr."""
    record = {"ts": datetime.now(UTC), **fields}
    sys.stderr.buffer.write(_encode.encode(record) + b"\n")
    sys.stderr.flush()


class _Lines:
    """Access log lines waiting for the end of the event loop's turn."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []

    def add(self, record: dict[str, Any]) -> None:
        if not self.pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: written at once
                self.pending.append(_encode.encode(record) + b"\n")
                self.flush()
                return
        self.pending.append(_encode.encode(record) + b"\n")

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        if lines:
            sys.stderr.buffer.write(b"".join(lines))
            sys.stderr.flush()


class AccessLog:
    """ASGI middleware writing one access log line per HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, worker: int | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.worker = {} if worker is None else {"worker": worker}
        self.lines = _Lines()

    @classmethod
    def factory(cls, metrics: Metrics, worker: int | None = None) -> Callable[[ASGIApp], AccessLog]:
        """The middleware factory Litestar takes, bound to `metrics` (and, with several worker
        processes, to this one's index, which each line then names)."""
        return lambda app: cls(app, metrics, worker)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]  # lifespan too
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            principal = scope.get("adminchain.principal")
            client = scope.get("client")
            route = scope.get("path_template") or "unmatched"
            self.metrics.count(
                self.metrics.http_requests, route, str(scope.get("method", "")), str(status)
            )
            self.lines.add(
                {
                    "ts": datetime.now(UTC),
                    "event": "request",
                    "method": scope.get("method"),
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "token": getattr(principal, "name", None),
                    "role": getattr(principal, "role", None),
                    "client": client[0] if client else None,
                    **self.worker,
                }
            )
