"""Structured access logs: one JSON line per request on stderr, never a token.

Each line names the method, the path (without its query string), the status, the duration and
the token's *name* (never the token or the Authorization header).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog", "log_event"]

_encode = msgspec.json.Encoder()


def log_event(**fields: Any) -> None:
    """Write one structured log line to stderr."""
    record = {"ts": datetime.now(UTC), **fields}
    sys.stderr.buffer.write(_encode.encode(record) + b"\n")
    sys.stderr.flush()


class AccessLog:
    """ASGI middleware writing one access log line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            principal = scope.get("adminchain.principal")
            client = scope.get("client")
            log_event(
                event="request",
                method=scope.get("method"),
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
                token=getattr(principal, "name", None),
                role=getattr(principal, "role", None),
                client=client[0] if client else None,
            )
