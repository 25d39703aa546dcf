"""The baseline of `bench_server`: the same HTTP stack as `adminchain serve` (Litestar on
uvicorn with httptools and uvloop, one worker thread pool) in front of eventsourcing's own
PostgreSQL application, saving one event per request.

Run as ``python -m benchmarks.baseline_server PORT [WORKERS]`` with the eventsourcing PostgreSQL
settings in the environment (``POSTGRES_DBNAME``, ``POSTGRES_HOST``, ``POSTGRES_SCHEMA``, …).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import uvicorn
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from litestar import Litestar, Request, post


class Runner(Aggregate):
    """One aggregate per request: its creation event carries what the request said."""

    @event("Observed")
    def __init__(self, kind: str, subject: str) -> None:
        self.kind = kind
        self.subject = subject


class Loops(Application[Any]):
    """The application behind the baseline server."""


_decode = msgspec.json.Decoder(dict[str, Any])
_pool = ThreadPoolExecutor(max_workers=64)
_app: Loops | None = None


def _save(body: bytes) -> dict[str, Any]:
    assert _app is not None
    data = _decode.decode(body.strip())
    runner = Runner(str(data["type"]), str(data["subject"]))
    recordings = _app.save(runner)
    return {"results": [{"position": recordings[-1].notification.id, "id": str(runner.id)}]}


@post("/v1/events", status_code=200)
async def append(request: Request[Any, Any, Any]) -> dict[str, Any]:
    body = await request.body()
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = await loop.run_in_executor(_pool, _save, body)
    return result


def _startup() -> None:
    global _app  # noqa: PLW0603  one application per process, made at start
    _app = Loops()


def create() -> Litestar:
    """The baseline application (a factory: each uvicorn worker process makes its own)."""
    return Litestar([append], on_startup=[_startup])


def main() -> None:
    os.environ.setdefault("PERSISTENCE_MODULE", "eventsourcing.postgres")
    os.environ.setdefault("POSTGRES_POOL_SIZE", "20")
    os.environ.setdefault("POSTGRES_MAX_OVERFLOW", "20")
    uuid.uuid4()
    # make the tables here, once: workers creating them at the same time race in PostgreSQL's
    # catalogue (a duplicate pg_type row) and one of them fails to start
    Loops().close()
    uvicorn.run(
        "benchmarks.baseline_server:create",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=int(sys.argv[2]) if len(sys.argv) > 2 else 1,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
