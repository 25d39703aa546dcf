"""The HTTP/JSON API of one ledger (SPEC-server §7): routes, roles, problems, limits.

`create_app(config)` builds the Litestar application; `adminchain.server.run` serves it with
uvicorn. The server opens the ledger once, keeps its projections current in the process (a
`Hub` follows the log), and answers an append only once the events are durable AND folded, so
its own `status` and `history` already show them. Blocking ledger work runs in worker threads;
concurrent appends meet in the ledger's group commit and share one durable flush.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import msgspec
from litestar import HttpMethod, Litestar, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import Parameter
from litestar.response import ServerSentEvent, Stream
from litestar.response.sse import ServerSentEventMessage
from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from adminchain.server.appender import Appender
from adminchain.server.hub import Hub, Recent
from adminchain.server.metrics import Metrics
from adminchain.server.problems import ProblemError, exception_handlers, from_ledger_error
from adminchain.server.siblings import Siblings
from adminchain.server.tokens import TokenBook, TokenRecord, may
from ledger.backend import Appended
from ledger.codec import decode_line, event_to_builtins
from ledger.errors import InvalidEventError, LedgerError, UsageError
from ledger.events import OPERATOR_EVENTS, Event, event_types
from ledger.ledger import Entry, Ledger
from ledger.notes import Signer
from projections.api import KINDS, Outcome, Views, _verdict_json, status_document
from projections.base import Verdict

__all__ = ["AppendResponse", "ServerConfig", "create_app"]

log = logging.getLogger("adminchain.server")

MIB: Final = 1024 * 1024
JSONL_TYPES: Final = frozenset(
    {"application/jsonl", "application/x-ndjson", "application/json-lines"}
)
MAX_WAIT_MS: Final = 30_000
SUBSCRIBE_CHUNK: Final = 256
SUBSCRIBE_INLINE: Final = 64
"""A live subscription's next entries, when the hub's `Tail` does not hold them all, are read
on the event loop (LMDB) when there are at most this many; else in a worker thread."""
LOG_CHUNK: Final = 2048
PARSE_INLINE: Final = 64 * 1024
"""Bodies smaller than this are decoded on the event loop (cheaper than a thread switch)."""
WORKERS: Final = 64
"""Threads for blocking ledger work: concurrent appends among them share one commit."""
GC_THRESHOLDS: Final = (50_000, 10, 10)
"""The cyclic collector's thresholds while serving (Python's are 700, 10, 10). A request makes
short-lived objects by the hundred (a batch of 10k events: by the ten thousand) that reference
counting frees; with the default the collector passes over them every 700 allocations, a
quarter of a big append's time. Cycles are still collected, 70 times less often."""
PRINCIPAL: Final = "adminchain.principal"
"""The ASGI scope key holding the authenticated token's record (for guards and access logs)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What `adminchain serve` was asked for."""

    ledger: str
    max_body: int = 16 * MIB
    max_events: int = 100_000
    request_timeout: float = 30.0
    max_subscriptions: int = 1024
    heartbeat: float = 15.0
    public_audit: bool = False
    checkpoint_key: str | None = None
    extra_routes: Sequence[Any] = field(default_factory=tuple)
    background: Sequence[Callable[[Server], Callable[[], None]]] = field(default_factory=tuple)
    """Started with the open `Server` once it is ready; each returns its stop function."""
    workers: int = 1
    """Server processes over this ledger on this host (`serve --workers`)."""
    worker: int = 0
    """This process's index among them (worker 0 runs the `background` jobs)."""
    siblings: Siblings | None = None
    """The bells between the workers (`serve --workers` over LMDB): rung after each commit,
    heard by the others' event loops, so their subscribers see every append at once."""


class AppendResult(msgspec.Struct, omit_defaults=True):
    """Where one input event is in the log, and what the projections made of it."""

    position: int | None
    """None only in a dry run, for an event that would be new."""
    id: str | None
    duplicate: bool
    verdicts: list[Verdict]
    states: dict[str, dict[str, Any]] | None = None
    """With ``states=true`` (and in a dry run): the subject's state after the event in each
    projection that judged it (``status`` objects)."""


class AppendResponse(msgspec.Struct):
    """The answer to ``POST /v1/events``: one result per input event, in order."""

    results: list[AppendResult]


class HistoryRow(msgspec.Struct):
    """One event about a subject, with its verdicts (SPEC §5 ``history``)."""

    position: int
    type: str
    at: datetime | None
    actor: str | None
    verdicts: list[Verdict]


class Health(msgspec.Struct):
    """Liveness and readiness."""

    status: str
    size: int
    tracking: int


# ---------------------------------------------------------------- the server's state


class Server:
    """Everything the handlers share: the ledger, its views, the hub, tokens and metrics."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.ledger = Ledger.open(config.ledger, create=True)
        self.views = Views(self.ledger)
        self.hub = Hub(self.views)
        self.fold = self.views.inline()
        """Appends fold into the views in their own transaction (`Views.inline`)."""
        self.inline_reads = self.ledger.backend.kind == "lmdb"
        self.siblings = config.siblings
        """The sibling workers' bells (`serve --workers`); other servers' appends over one
        PostgreSQL ledger, and the CLI's, reach the follower instead (NOTIFY, polling)."""
        self.appender = Appender(self.ledger, self.views, self.hub, self.fold, self.siblings)
        self.tokens = TokenBook(self.ledger)
        self.signer = None if config.checkpoint_key is None else _load_signer(config.checkpoint_key)
        self.subscriptions = 0
        self.last_checkpoint: float | None = None
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="adminchain")

    def close(self) -> None:
        self.appender.stop()
        self.hub.stop()
        self.pool.shutdown(wait=True)
        self.ledger.close()

    async def read(self, func: Callable[[], Any]) -> Any:
        """A small read (one subject's status, the log's size): inline on LMDB, whose reads are
        memory-mapped lookups that never wait on a lock or the network (cheaper than a thread
        switch), in a worker thread on other backends."""
        if self.inline_reads:
            return func()
        return await self.run(func)

    async def run(self, func: Callable[[], Any]) -> Any:
        """Run blocking ledger work in a worker thread (bounded by `request_timeout`).

        A request that times out gets 504; work already handed to the ledger (an append) still
        completes or fails whole, as every append does."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.request_timeout):
                return await loop.run_in_executor(self.pool, func)
        except TimeoutError:
            raise TimeoutError(
                f"the request took more than {self.config.request_timeout:g} s"
            ) from None


def _load_signer(path: str) -> Signer:
    from pathlib import Path  # noqa: PLC0415

    try:
        return Signer.parse(Path(path).read_text(encoding="utf-8").strip())
    except OSError as e:
        raise UsageError(f"cannot read the checkpoint key {path}: {e.strerror}") from e


def server_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Server:
    """The `Server` behind a request."""
    server: Server = connection.app.state.server
    return server


# ---------------------------------------------------------------- route handlers


class Route(HTTPRouteHandler):
    """Litestar's HTTP route handler, without a copy of itself per guard call.

    Litestar's `authorize_connection` passes each guard `copy(self)` (about a tenth of a cheap
    request's time); our guards never touch the handler, so they get the handler itself.
    """

    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]


def get(path: str | Sequence[str], **kwargs: Any) -> Route:
    """``@get(...)``, as Litestar's, with `Route`."""
    return Route(path, http_method=HttpMethod.GET, **kwargs)


def post(path: str | Sequence[str], **kwargs: Any) -> Route:
    """``@post(...)``, as Litestar's, with `Route`."""
    return Route(path, http_method=HttpMethod.POST, **kwargs)


# ---------------------------------------------------------------- authentication and roles

_CHALLENGE: Final = 'Bearer realm="adminchain"'


def raw_header(scope: Any, name: bytes) -> str | None:
    """The first `name` header (lower case) of a request, straight from the ASGI scope (the
    hot routes need one or two headers; Litestar's `headers` parses them all)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> TokenRecord:
    """The token's record, or a 401 problem."""
    header = raw_header(connection.scope, b"authorization")
    if header is None:
        raise ProblemError(
            401,
            "no token: send `Authorization: Bearer <token>` (`adminchain token create`)",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, token = header.partition(" ")
    record = None
    if scheme.lower() == "bearer" and token.strip():
        record = server_of(connection).tokens.authenticate(token.strip())
    if record is None:
        raise ProblemError(
            401,
            "the token is unknown, revoked or expired",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    connection.scope[PRINCIPAL] = record  # type: ignore[typeddict-unknown-key]
    return record


def requires(*roles: str, audit: bool = False) -> Callable[..., Awaitable[None]]:
    """A guard: a token whose role is one of `roles` (or admin). With `audit`, the route is
    public when the server runs with ``--public-audit``."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if audit and server_of(connection).config.public_audit:
            return
        record = authenticate(connection)
        if not may(record.role, roles):
            raise ProblemError(
                403,
                f"a {record.role} token may not use {connection.scope['path']} "
                f"(it needs one of: {', '.join((*roles, 'admin'))})",
            )

    return guard


READER: Final = requires("reader", "loop", "operator", "auditor")
APPENDER: Final = requires("loop", "operator")
AUDITOR: Final = requires("auditor")
AUDIT_PUBLIC: Final = requires("auditor", audit=True)
METRICS: Final = requires("metrics")


def principal_of(request: Request[Any, Any, Any]) -> TokenRecord:
    """The token that authenticated `request` (set by the guard)."""
    record: TokenRecord = request.scope[PRINCIPAL]  # type: ignore[typeddict-item]
    return record


# ---------------------------------------------------------------- appending

_raw_array = msgspec.json.Decoder(list[msgspec.Raw])
_raw_object = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder()


def _lines(body: bytes, content_type: str) -> list[tuple[int, bytes]]:
    """(line number, raw event) pairs of a body: JSON Lines, or a JSON array (1-based items)."""
    if content_type == "application/json":
        try:
            items = _raw_array.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ProblemError(400, f"the body is not a JSON array of events: {e}") from e
        return [(number, bytes(raw)) for number, raw in enumerate(items, start=1)]
    if content_type not in JSONL_TYPES and content_type not in ("", "text/plain"):
        raise ProblemError(
            415,
            f"unsupported content type {content_type!r}: send application/jsonl "
            "(one event per line) or application/json (an array)",
        )
    return [
        (number, line.rstrip(b"\r"))
        for number, line in enumerate(body.split(b"\n"), start=1)
        if line.strip()
    ]


def _decode(raw: bytes, line: int, principal: TokenRecord) -> Event:
    """One wire event; an operator's operator event gets the token's name as its default actor."""
    try:
        return decode_line(raw, line)
    except InvalidEventError as e:
        if e.field != "actor" or "missing" not in e.detail:
            raise
        if principal.role == "loop":
            raise ProblemError(
                403, f"line {line}: a loop token may not append operator events", line=line
            ) from e
        try:
            data = _raw_object.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise e from None
        if "actor" in data:
            raise
        data["actor"] = principal.name
        return decode_line(_encode.encode(data), line)


_OPERATOR_TYPES: Final = frozenset(OPERATOR_EVENTS)


def _check_role(event: Event, line: int, principal: TokenRecord) -> None:
    """SPEC-server §7.2: who may append which event, under which actor."""
    if type(event) not in _OPERATOR_TYPES:  # decoded by `decode_line`: the catalogue's own types
        return
    name = type(event).__name__
    if principal.role == "loop":
        raise ProblemError(
            403, f"line {line}: a loop token may not append {name} (an operator event)"
        )
    if event.actor != principal.name:
        raise ProblemError(
            403,
            f"line {line}, field `actor`: {event.actor!r} is not this token's name "
            f"({principal.name!r}); an operator token appends only as itself",
            line=line,
            field="actor",
        )
    if event.signature is not None and event.signature.key != principal.name:
        raise ProblemError(
            403,
            f"line {line}, field `signature`: signed by key {event.signature.key!r}, but the "
            f"token is {principal.name!r}",
            line=line,
            field="signature",
        )


def parse_events(
    body: bytes, content_type: str, principal: TokenRecord, max_events: int
) -> list[Event]:
    """The events of one append request, validated and allowed for `principal`."""
    lines = _lines(body, content_type)
    if not lines:
        raise ProblemError(400, "the body holds no events")
    if len(lines) > max_events:
        raise ProblemError(
            413, f"{len(lines)} events in one request; this server takes at most {max_events}"
        )
    events = []
    for line, raw in lines:
        event = _decode(raw, line, principal)
        _check_role(event, line, principal)
        events.append(event)
    return events


async def _append(server: Server, events: list[Event], strict: bool) -> AppendResponse:
    """Append durably, folded, with each event's verdicts (through the server's appender)."""
    request = server.ledger.prepare(
        events, server.views.strict() if strict else None, validated=True, after=server.fold
    )
    results, verdicts = await server.appender.append(request)
    metrics = server.metrics
    new = [
        (event, found)
        for event, result, found in zip(request.events, results, verdicts, strict=True)
        if not result.duplicate
    ]
    fresh = len(new)
    # counted in C (`Counter` over one iterable), not an update a event: a 10k batch's metrics
    types = collections.Counter(type(event).__name__ for event, _ in new)
    judged = collections.Counter(
        (v.projection, v.verdict, v.reason or "") for _, found in new for v in found
    )
    for name, count in types.items():
        metrics.count(metrics.events_by_type, name, amount=count)
    for labels, count in judged.items():
        metrics.count(metrics.verdicts, *labels, amount=count)
    if fresh:
        metrics.count(metrics.appended_events, "stored", amount=fresh)
    if len(results) > fresh:
        metrics.count(metrics.appended_events, "duplicate", amount=len(results) - fresh)
    return AppendResponse(
        [
            AppendResult(r.position, r.id, r.duplicate, found)
            for r, found in zip(results, verdicts, strict=True)
        ]
    )


def _results(outcomes: Iterable[Outcome]) -> AppendResponse:
    return AppendResponse(
        [
            AppendResult(
                o.position,
                o.id,
                o.duplicate,
                msgspec.convert(o.verdicts, list[Verdict]),
                o.states,
            )
            for o in outcomes
        ]
    )


def _dry_run(server: Server, events: list[Event], strict: bool) -> AppendResponse:
    """The verdicts `events` would get (`Views.dry_run`): nothing is appended."""
    return _results(server.views.dry_run(events, strict=strict, validated=True))


def _with_states(server: Server, events: list[Event], done: AppendResponse) -> AppendResponse:
    """`done` with each subject's states after its event (`Views.outcomes`)."""
    appended = [Appended(r.position or 0, r.id or "", r.duplicate) for r in done.results]
    return _results(server.views.outcomes(appended, events))


_OUTCOMES: Final = {
    400: "invalid",
    403: "forbidden",
    409: "refused",
    413: "invalid",
    503: "unavailable",
}


@post(
    "/v1/events",
    guards=[APPENDER],
    status_code=200,
    summary="Append one atomic batch of events",
    description=(
        "Body: JSON Lines (application/jsonl, application/x-ndjson) or a JSON array "
        "(application/json). All events are stored or none; the answer comes once they are "
        "durable and folded, with each event's verdicts. `strict=true` refuses (409) operator "
        "events the projections would reject. `dry_run=true` answers the verdicts the events "
        "would get, appending nothing (SPEC §5 `--dry-run`)."
    ),
    responses={},
)
async def append_events(
    request: Request[Any, Any, Any],
    strict: bool = False,
    dry_run: bool = False,
    states: bool = False,
) -> AppendResponse:
    server = server_of(request)
    started = time.perf_counter()
    outcome = "error"
    try:
        body = await request.body()
        content_type = (
            (raw_header(request.scope, b"content-type") or "").split(";")[0].strip().lower()
        )
        principal = principal_of(request)
        max_events = server.config.max_events
        if len(body) < PARSE_INLINE:
            events = parse_events(body, content_type, principal, max_events)
        else:  # a big batch: decoded beside the event loop, which keeps serving meanwhile
            events = await server.run(
                functools.partial(parse_events, body, content_type, principal, max_events)
            )
        if dry_run:
            response: AppendResponse = await server.run(
                functools.partial(_dry_run, server, events, strict)
            )
        else:
            async with asyncio.timeout(server.config.request_timeout):
                response = await _append(server, events, strict)
            if states:
                response = await server.run(
                    functools.partial(_with_states, server, events, response)
                )
    except ProblemError as e:
        outcome = _OUTCOMES.get(e.status, "error")
        raise
    except LedgerError as e:
        problem = from_ledger_error(e)
        outcome = _OUTCOMES.get(problem.status, "error")
        raise problem from e
    else:
        outcome = "ok"
        return response
    finally:
        server.metrics.count(server.metrics.append_requests, outcome)
        if outcome == "ok":
            server.metrics.append_seconds.observe(time.perf_counter() - started)


# ---------------------------------------------------------------- reading


def _parse_time(text: str, name: str) -> datetime:
    try:
        value = msgspec.json.decode(_encode.encode(text), type=datetime)
    except msgspec.ValidationError:
        raise UsageError(
            f"{name}: {text!r} is not an RFC 3339 time (e.g. 2026-11-25T14:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise UsageError(f"{name}: {text!r} needs a time zone (add Z for UTC)")
    return value.astimezone(UTC)


async def _read_your_writes(server: Server, min_position: int | None, wait: int) -> None:
    if wait < 0 or wait > MAX_WAIT_MS:
        raise ProblemError(400, f"wait: {wait} ms is not between 0 and {MAX_WAIT_MS}")
    if min_position is None or server.hub.tracking >= min_position:
        return
    if not await server.hub.wait_beyond(min_position - 1, wait / 1000):
        raise ProblemError(
            504,
            f"the projections did not reach position {min_position} within {wait} ms "
            f"(they hold {server.hub.tracking})",
        )


def _status(
    server: Server,
    kind: str | None,
    subject: str | None,
    as_of: str | None,
    now: datetime,
) -> dict[str, dict[str, Any]]:
    if as_of is None:
        return server.views.status(kind, subject, now)
    from replay.rebuild import FolderSource  # noqa: PLC0415
    from replay.rebuild import as_of as replay_as_of  # noqa: PLC0415

    position, when = (int(as_of), None) if as_of.isdigit() else (None, _parse_time(as_of, "as_of"))
    folder, _ = replay_as_of(server.ledger, position, when)
    return status_document(FolderSource(folder), kind, subject, now)


@get(
    ["/v1/status", "/v1/status/{kind:str}", "/v1/status/{kind:str}/{subject:path}"],
    guards=[READER],
    summary="Projection state (SPEC §5 status document)",
)
async def status(
    request: Request[Any, Any, Any],
    kind: str | None = None,
    subject: str | None = None,
    as_of: str | None = None,
    now: str | None = None,
    min_position: int | None = Parameter(default=None, ge=1),
    wait: int = 0,
) -> dict[str, dict[str, Any]]:
    server = server_of(request)
    if kind is not None and kind not in KINDS:
        raise ProblemError(404, f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    subject = subject.lstrip("/") if subject else None
    moment = _parse_time(now, "now") if now else datetime.now(UTC)
    await _read_your_writes(server, min_position, wait)
    small = subject and kind and as_of is None
    document: dict[str, dict[str, Any]] = await (server.read if small else server.run)(
        lambda: _status(server, kind, subject or None, as_of, moment)
    )
    return document


@get(
    ["/v1/policy", "/v1/policy/{subject:path}"],
    guards=[READER],
    summary="The effective policy per subject and for `*` (SPEC §5 `status policy`)",
)
async def policy(request: Request[Any, Any, Any], subject: str | None = None) -> dict[str, Any]:
    server = server_of(request)
    document: dict[str, Any] = await server.run(
        lambda: server.views.policy(subject.lstrip("/") if subject else None)
    )
    return document


@get("/v1/history/{subject:path}", guards=[READER], summary="Each event about a subject")
async def history(
    request: Request[Any, Any, Any],
    subject: str,
    min_position: int | None = Parameter(default=None, ge=1),
    wait: int = 0,
) -> list[HistoryRow]:
    server = server_of(request)
    await _read_your_writes(server, min_position, wait)
    rows = await server.run(lambda: server.views.history(subject.lstrip("/")))
    return msgspec.convert(rows, list[HistoryRow], from_attributes=True)


def _log_chunk(ledger: Ledger, first: int, last: int, stored: bool) -> bytes:
    if not stored:
        return b"".join(_encode.encode(log_object(e)) + b"\n" for e in ledger.read(first, last))
    return b"".join(
        _encode.encode({**log_object(e), "stored": base64.b64encode(e.stored).decode()}) + b"\n"
        for e in ledger.read(first, last)
    )


def log_object(entry: Entry) -> dict[str, Any]:
    """One entry as SPEC §5 ``log`` shows it."""
    return {
        "position": entry.position,
        "recorded_at": entry.recorded_at,
        "event": event_to_builtins(entry.event),
    }


@get(
    "/v1/log",
    guards=[AUDITOR],
    summary="The log itself, as JSON Lines (streamed)",
    media_type="application/jsonl",
)
async def log_lines(
    request: Request[Any, Any, Any],
    start: int = Parameter(query="from", default=1, ge=1),
    stop: int | None = Parameter(query="to", default=None, ge=1),
    stored: bool = Parameter(
        default=False,
        description="Add each event's stored bytes (base64): what its Merkle leaf hashes.",
    ),
) -> Stream:
    server = server_of(request)
    end: int = await server.run(server.ledger.size)
    if stop is not None:
        end = min(end, stop)

    async def chunks() -> AsyncIterator[bytes]:
        position = start
        while position <= end:
            upto = min(end, position + LOG_CHUNK - 1)
            first = position
            data: bytes = await server.run(
                functools.partial(_log_chunk, server.ledger, first, upto, stored)
            )
            yield data
            position = upto + 1

    return Stream(chunks(), media_type="application/jsonl")


_TYPES: Final = frozenset(event_types())


def _subscription_entries(
    server: Server,
    first: int,
    last: int,
    types: frozenset[str] | None,
    subject: str | None,
    *,
    kept_only: bool = False,
) -> list[tuple[int, bytes]] | None:
    """The SSE data of the entries from `first` to `last` that pass the filters, with their
    verdicts: from the hub's `Tail` when it holds them, else read from the log (verdicts
    recomputed only for the entries that pass and that the tail does not hold). With
    `kept_only`, None instead of reading or recomputing anything (what the event loop may do
    without waiting)."""
    recent = server.hub.tail.get(first, last)
    if recent is None:
        if kept_only:
            return None
        kept = server.hub.tail.kept(first, last)
        recent = [kept.get(e.position) or Recent(e, None) for e in server.ledger.read(first, last)]
    passed = [
        r
        for r in recent
        if (types is None or type(r.entry.event).__name__ in types)
        and (subject is None or r.entry.event.subject == subject)
    ]
    unknown = [r.entry for r in passed if r.verdicts is None]
    if unknown and kept_only:
        return None
    computed = iter(server.views.entry_verdicts(unknown) if unknown else ())
    return [
        (
            r.entry.position,
            _encode.encode(
                {
                    **log_object(r.entry),
                    "verdicts": (
                        next(computed)
                        if r.verdicts is None
                        else [_verdict_json(v) for v in r.verdicts]
                    ),
                }
            ),
        )
        for r in passed
    ]


@get(
    "/v1/subscribe",
    guards=[READER],
    summary="Server-Sent Events: every entry from a position on, then live",
    description=(
        "Each message's `id` is the entry's position; reconnect with `Last-Event-ID` to resume "
        "after it. `type` (comma-separated) and `subject` filter. A comment heartbeat comes at "
        "least every 15 s."
    ),
)
async def subscribe(
    request: Request[Any, Any, Any],
    start: int = Parameter(query="from", default=1, ge=1),
    type_filter: str | None = Parameter(query="type", default=None),
    subject: str | None = None,
    last_event_id: str | None = Parameter(header="Last-Event-ID", default=None),
) -> ServerSentEvent:
    server = server_of(request)
    types = None
    if type_filter:
        types = frozenset(t.strip() for t in type_filter.split(",") if t.strip())
        unknown = sorted(types - _TYPES)
        if unknown:
            raise ProblemError(400, f"type: unknown event type(s) {', '.join(unknown)}")
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ProblemError(400, f"Last-Event-ID: {last_event_id!r} is not a position")
        start = int(last_event_id) + 1
    if server.subscriptions >= server.config.max_subscriptions:
        raise ProblemError(
            503,
            f"this server already serves {server.subscriptions} subscriptions (the limit)",
            headers={"Retry-After": "5"},
        )
    hub, heartbeat = server.hub, server.config.heartbeat

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        # counted once the stream runs: a client gone before it starts never reaches `finally`
        server.subscriptions += 1
        server.hub.tail.wanted = server.subscriptions
        server.metrics.subscriptions.inc()
        position = start - 1
        try:
            yield ServerSentEventMessage(comment="subscribed", data=None)
            while not hub.stopping:
                if hub.tracking > position:
                    first, last = position + 1, min(hub.tracking, position + SUBSCRIBE_CHUNK)
                    entries = functools.partial(
                        _subscription_entries, server, first, last, types, subject
                    )
                    rows = entries(kept_only=True)
                    if rows is None:
                        if server.inline_reads and last - first < SUBSCRIBE_INLINE:
                            rows = entries()
                        else:
                            rows = await server.run(entries)
                    assert rows is not None
                    for pos, data in rows:
                        yield ServerSentEventMessage(data=data.decode(), id=pos, event="entry")
                    position = last
                    continue
                if not await hub.wait_beyond(position, heartbeat) and not hub.stopping:
                    yield ServerSentEventMessage(comment="heartbeat", data=None)
        finally:
            server.subscriptions -= 1
            server.hub.tail.wanted = server.subscriptions
            if not server.subscriptions:
                server.hub.tail.clear()
            server.metrics.subscriptions.dec()

    return ServerSentEvent(messages())


# ---------------------------------------------------------------- checkpoints and proofs


def _checkpoint_note(server: Server) -> str:
    """The newest checkpoint: signed anew when the server has a key and the log has grown."""
    notes = server.ledger.checkpoints()
    if server.signer is not None and (not notes or notes[-1][0] < server.hub.tracking):
        from replay.integrity import make_checkpoint  # noqa: PLC0415

        _, note = make_checkpoint(server.views, server.signer)
        server.last_checkpoint = time.monotonic()
        return note
    if not notes:
        raise ProblemError(
            404,
            "this ledger has no checkpoint yet (run `adminchain checkpoint --key …`, or start the "
            "server with --checkpoint-key)",
        )
    return notes[-1][1]


@get(
    "/v1/checkpoint",
    guards=[AUDIT_PUBLIC],
    summary="The latest checkpoint note (C2SP tlog-checkpoint)",
    media_type="text/plain",
)
async def checkpoint(request: Request[Any, Any, Any]) -> str:
    server = server_of(request)
    note: str = await server.run(lambda: _checkpoint_note(server))
    return note


@get(
    "/v1/proofs/inclusion/{position:int}",
    guards=[AUDITOR],
    summary="An inclusion proof file (C2SP tlog-proof), as `adminchain prove` writes",
    media_type="text/plain",
)
async def inclusion_proof(
    request: Request[Any, Any, Any], position: int, size: int | None = Parameter(default=None, ge=1)
) -> str:
    from replay.prove import prove_inclusion  # noqa: PLC0415

    server = server_of(request)
    if position < 1:
        raise ProblemError(404, f"no event at position {position}")
    proof: str = await server.run(
        lambda: prove_inclusion(server.ledger, position, server.signer, size=size)
    )
    return proof


@get(
    "/v1/proofs/consistency",
    guards=[AUDITOR],
    summary="A consistency proof file between two stored checkpoints",
    media_type="text/plain",
)
async def consistency_proof(
    request: Request[Any, Any, Any],
    old: int = Parameter(ge=0),
    new: int | None = Parameter(default=None, ge=0),
) -> str:
    from replay.prove import prove_consistency  # noqa: PLC0415

    server = server_of(request)
    proof: str = await server.run(lambda: prove_consistency(server.ledger, old, new))
    return proof


class Info(msgspec.Struct):
    """What a client needs to know of the ledger behind a server."""

    origin: str
    size: int
    tracking: int


@get("/v1/info", guards=[READER], summary="The ledger's origin, size and folded position")
async def info(request: Request[Any, Any, Any]) -> Info:
    server = server_of(request)
    origin, size = await server.read(lambda: (server.ledger.origin(), server.ledger.size()))
    return Info(origin, size, server.hub.tracking)


class StoredCheckpoint(msgspec.Struct):
    """One checkpoint note the ledger stores."""

    size: int
    note: str


@get("/v1/checkpoints", guards=[AUDIT_PUBLIC], summary="Every stored checkpoint note, by size")
async def checkpoints(request: Request[Any, Any, Any]) -> list[StoredCheckpoint]:
    server = server_of(request)
    notes = await server.run(server.ledger.checkpoints)
    return [StoredCheckpoint(size, note) for size, note in notes]


# ---------------------------------------------------------------- operations


@get("/healthz", summary="Liveness")
async def healthz(request: Request[Any, Any, Any]) -> Health:
    hub = server_of(request).hub
    return Health("ok", hub.size, hub.tracking)


@get("/readyz", summary="Readiness: ledger open, projections within 1 s of the log")
async def readyz(request: Request[Any, Any, Any]) -> Response[Health]:
    hub = server_of(request).hub
    ready = hub.ready() and not hub.stopping
    return Response(
        Health("ready" if ready else "not ready", hub.size, hub.tracking),
        status_code=200 if ready else 503,
    )


@get("/metrics", guards=[METRICS], summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    server = server_of(request)
    server.metrics.log_size.set(server.hub.size)
    return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@get("/openapi.json", summary="This API's OpenAPI 3.1 document", include_in_schema=False)
async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
    from adminchain.server.openapi import document  # noqa: PLC0415

    return document(request.app)


# ---------------------------------------------------------------- the application


def _bell(server: Server, loop: asyncio.AbstractEventLoop) -> None:
    """A sibling worker appended (`adminchain.server.siblings`): it rang how far the views are."""
    assert server.siblings is not None
    listening, tracking, size = server.siblings.drain()
    if not listening:
        loop.remove_reader(server.siblings.listen)
    server.hub.heard(tracking, size)


def create_app(config: ServerConfig) -> Litestar:
    """The Litestar application serving `config.ledger`."""
    gauges = Metrics(REGISTRY)
    state = State({"server": None})

    async def startup(app: Litestar) -> None:
        server = await anyio.to_thread.run_sync(lambda: Server(config, gauges))
        app.state.server = server
        gauges.bind(
            size=lambda: server.hub.size,
            lag=server.hub.lag,
            checkpoint_age=(
                (
                    lambda: (
                        -1.0
                        if server.last_checkpoint is None
                        else time.monotonic() - server.last_checkpoint
                    )
                )
                if config.worker == 0
                else None
            ),
        )
        loop = asyncio.get_running_loop()
        await anyio.to_thread.run_sync(lambda: server.hub.start(loop))
        server.appender.start(loop)
        if server.siblings is not None:
            loop.add_reader(server.siblings.listen, _bell, server, loop)
        app.state.stoppers = [start(server) for start in config.background]
        # what start-up made lives as long as the server: out of the collector's way, so its
        # full collections (pauses that every in-flight request waits out) stay short
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def shutdown(app: Litestar) -> None:
        for stop in app.state.get("stoppers", ()):
            await anyio.to_thread.run_sync(stop)
        gauges.close()
        server: Server | None = app.state.server
        if server is not None:
            if server.siblings is not None:
                asyncio.get_running_loop().remove_reader(server.siblings.listen)
            await anyio.to_thread.run_sync(server.close)

    from adminchain.server.access import AccessLog  # noqa: PLC0415

    return Litestar(
        route_handlers=[
            append_events,
            status,
            policy,
            history,
            log_lines,
            subscribe,
            checkpoint,
            checkpoints,
            info,
            inclusion_proof,
            consistency_proof,
            healthz,
            readyz,
            metrics_route,
            openapi,
            *config.extra_routes,
        ],
        state=state,
        on_startup=[startup],
        on_shutdown=[shutdown],
        exception_handlers=exception_handlers,
        request_max_body_size=config.max_body,
        middleware=[AccessLog.factory(gauges, config.worker if config.workers > 1 else None)],
        openapi_config=OpenAPIConfig(
            title="adminchain",
            version="1",
            description="The HTTP/JSON API of an adminchain ledger (docs/server.md).",
            path="/schema",
            render_plugins=[],
        ),
        logging_config=None,
        debug=False,
    )
