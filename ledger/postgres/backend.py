"""`PostgresBackend`: the ledger in one PostgreSQL schema (see the package's docstring)."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier
from psycopg.sql import Literal as SqlLiteral

from ledger import merkle
from ledger.backend import (
    TRUST_HISTORY_KEY,
    Appended,
    AppendRequest,
    IndexCheck,
    apply_requests,
    stored_event,
)
from ledger.errors import BackendUnavailableError, LedgerNotFoundError, StorageError
from ledger.postgres.errors import BUSY_WAIT, MAX_BACKOFF, Retry, first_line, kind
from ledger.postgres.listener import POLL, Listener
from ledger.postgres.packing import copy_binary, pack_id
from ledger.postgres.recorder import PostgresLedgerRecorder
from ledger.postgres.schema import (
    ANY_STATEMENTS,
    DDL,
    EVENTS_TABLE,
    FORMAT,
    STATEMENTS,
    Cursor,
)
from ledger.postgres.snapshot import (
    PAGE,
    TILE,
    PgReads,
    SnapshotNodes,
    index_check,
    leaves_of_tiles,
    node_of_tile,
    scan_ids,
)
from ledger.postgres.target import parse_url
from ledger.postgres.txn import PostgresTxnOps

__all__ = ["PostgresBackend"]

T = TypeVar("T")

_BACKGROUND_ROWS: Final = 4096
_MISSING_DATABASE: Final = re.compile(r'database "[^"]*" does not exist')


class PostgresBackend:
    """The ledger in one PostgreSQL schema (SPEC §6, shared): see the module docstring."""

    kind: Final = "postgres"

    def __init__(
        self, url: str, *, create: bool = True, pool_size: int = 1, max_overflow: int = 7
    ) -> None:
        self.target = target = parse_url(url)
        self.url, self.schema, self.location = target.url, target.schema, url
        self.read_only = False
        self.q = {name: self.sql(template) for name, template in STATEMENTS.items()}
        array, joined = SQL("%s"), SQL("string_to_array(%s, E'\\n')")
        self._any = {
            name: (self.sql(template, values=array), self.sql(template, values=joined))
            for name, template in ANY_STATEMENTS.items()
        }
        try:
            conn = self._connect()
        except psycopg.Error as e:  # connect once, directly: an unreachable server fails fast
            if _MISSING_DATABASE.search(str(e)):
                raise LedgerNotFoundError(
                    f"no ledger at {target.url}: database {target.dbname!r} does not exist"
                    f" at {target.where}"
                ) from e
            raise BackendUnavailableError(
                f"cannot reach PostgreSQL at {target.where} (database {target.dbname!r}): "
                f"{first_line(e)}"
            ) from e
        if not create:  # SPEC §5: reading never creates
            try:
                missing = not self._exists(conn, "meta")
            except psycopg.Error as e:
                conn.close()
                raise self._error(e, "open the ledger") from e
            if missing:
                conn.close()
                raise LedgerNotFoundError(
                    f"no ledger at {target.url}: schema {target.schema!r} holds none"
                    " (create one by appending to it)"
                )
        try:
            self.datastore = PostgresDatastore(
                target.dbname, target.host, target.port, target.user, target.password,
                connect_timeout=float(target.connect_timeout), pool_size=pool_size,
                max_overflow=max_overflow, schema=target.schema, originator_id_type="text",
                enable_db_functions=False,
            )  # fmt: skip
            if target.options and isinstance(self.datastore.pool.kwargs, dict):
                self.datastore.pool.kwargs.update(target.options)
            self.recorder = PostgresLedgerRecorder(self.datastore)
            statements = [*self.recorder.sql_create_statements, *(self.sql(s) for s in DDL)]
            self.ensure_tables("meta", statements, conn)
            found = bytes(next(iter(conn.execute(self.q["format"])), (b"",))[0])
            self.datastore.register_type_adapters()
        except (psycopg.Error, PersistenceError) as e:
            raise self._error(e, "open the ledger") from e
        finally:
            conn.close()
        if found != FORMAT:
            raise StorageError(
                f"schema {self.schema!r} at {target.where} holds "
                f"{found.decode(errors='replace')}, not {FORMAT.decode()}"
            )
        self._listener = Listener(self)

    # ------------------------------------------------------------------ SQL and setup

    def _connect(self) -> psycopg.Connection[Any]:
        """A direct connection, waiting (with backoff) while the server has no slot free."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                return psycopg.connect(**self.target.connect_kwargs(), autocommit=True)
            except psycopg.Error as e:
                attempt += 1
                if kind(e) != "busy" or time.monotonic() - started >= BUSY_WAIT:
                    raise
                time.sleep(min(MAX_BACKOFF, 0.05 * 2**attempt) * (0.5 + random.random()))

    def busy(self) -> bool:
        """Whether the server is up but has no connection slot free (probed directly)."""
        try:
            psycopg.connect(**self.target.connect_kwargs(), autocommit=True).close()
        except psycopg.Error as e:
            return kind(e) == "busy"
        return True  # a slot is free now: the pool may get one too

    def sql(self, template: str, **fields: Composable) -> Composed:
        """`template` with ``{schema}`` and ``{events}`` filled in as quoted identifiers (and
        ``{tile}``, if used, as `TILE`)."""
        return SQL(template).format(
            schema=Identifier(self.schema),
            events=Identifier(EVENTS_TABLE),
            tile=SqlLiteral(TILE),
            **fields,
        )

    def any_text(self, name: str, values: list[str]) -> tuple[Composed, tuple[object]]:
        """Statement `name` (it compares with ``= ANY``) and its parameter for `values`.

        A big ``text[]`` parameter costs the server about 2 µs an element to receive; one
        newline-joined text split by ``string_to_array`` costs a tenth of that. Values that
        contain a newline (ids may) fall back to the array.
        """
        joined = "\n".join(values)
        if joined.count("\n") == len(values) - 1:
            return self._any[name][1], (joined,)
        return self._any[name][0], (values,)

    def _exists(self, conn: psycopg.Connection[Any], table: str) -> bool:
        """Whether this schema holds `table`."""
        exists = "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL"
        row = conn.cursor(row_factory=tuple_row).execute(exists, (self.schema, table)).fetchone()
        return row == (True,)

    def ensure_tables(
        self, marker: str, statements: Sequence[Composed], conn: psycopg.Connection[Any]
    ) -> None:
        """Run DDL (``%(format)s`` is the format marker) unless table `marker` exists.

        One transaction, serialised with other hosts by an advisory lock: ``CREATE … IF NOT
        EXISTS`` is not safe against a concurrent creator. ``CREATE TYPE`` has no IF NOT
        EXISTS: it is skipped when the type exists.
        """
        if self._exists(conn, marker):
            return
        curs = conn.cursor(row_factory=tuple_row)
        with conn.transaction():
            curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ac:{self.schema}",))
            curs.execute(self.sql("CREATE SCHEMA IF NOT EXISTS {schema}"))
            for statement in statements:
                text = statement.as_string(conn)
                if "CREATE TYPE" in text and curs.execute(
                    "SELECT to_regtype(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                    (self.schema, self.recorder.stored_event_type_name),
                ).fetchone() == (True,):
                    continue
                params = {"format": FORMAT} if "%(format)s" in text else None
                curs.execute(statement, params, prepare=False)

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit), its errors translated; getting one is retried as
        a read is (see `_Retry`)."""
        with self._opened(what, lambda conn, _: conn.execute("SELECT 1")) as conn:
            yield conn  # `SELECT 1`: a pooled connection the server dropped fails there

    @contextlib.contextmanager
    def _opened(
        self, what: str, start: Callable[[psycopg.Connection[Any], contextlib.ExitStack], object]
    ) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection once `start(conn, stack)` has run on it, the two retried
        together (a dropped connection fails at its first statement, and nothing was done
        yet); `start` may put what must end with the connection on `stack`. Errors after
        that are translated, not retried: the caller's work may have had effects."""
        retry = Retry(self, what)
        while True:
            stack = contextlib.ExitStack()
            try:
                conn = stack.enter_context(self.datastore.get_connection())
                start(conn, stack)
            except (psycopg.Error, PersistenceError) as e:
                with contextlib.suppress(psycopg.Error, PersistenceError):
                    stack.close()
                retry.after(e)
                continue
            break
        try:
            with stack:
                yield conn
        except (psycopg.Error, PersistenceError) as e:
            raise self._error(e, what) from e
        retry.done()

    def transaction(
        self, body: Callable[[Cursor], T], *, what: str = "write", pipelined: bool = False
    ) -> T:
        """Run `body` in one READ COMMITTED transaction, re-run whole on transient failures.

        `pipelined`: in psycopg's pipeline mode, where a statement whose result is not read
        costs no round trip of its own (BEGIN goes with the first query, the writes with the
        COMMIT); `body` must then use no COPY. psycopg and eventsourcing errors come out as
        `StorageError` (or `BackendUnavailableError` when the server cannot be reached) naming
        host:port.
        """
        retry = Retry(self, what)
        while True:
            try:
                with (
                    self.datastore.get_connection() as conn,
                    conn.pipeline() if pipelined else contextlib.nullcontext(),
                    conn.transaction(),
                ):
                    result = body(conn.cursor(row_factory=tuple_row))
            except (psycopg.Error, PersistenceError) as e:
                retry.after(e)
                continue
            retry.done()
            return result

    @contextlib.contextmanager
    def snapshot(self, *, what: str = "read") -> Iterator[Cursor]:
        """A REPEATABLE READ, READ ONLY transaction: one consistent view of every table.

        One round trip opens it: ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``, which
        also finds a pooled connection that the server dropped (retried as `connection` does;
        a status read was three round trips before its first query)."""
        with self._opened(what, _snapshot_begun) as conn:
            yield conn.cursor(row_factory=tuple_row)

    def read_once(self, body: Callable[[Cursor], T], what: str = "read") -> T:
        """A short autocommit read, retried on dropped connections (the pool replaces them)."""
        retry = Retry(self, what)
        while True:
            try:
                with self.datastore.get_connection() as conn:
                    result = body(conn.cursor(row_factory=tuple_row, binary=True))
            except (psycopg.Error, PersistenceError) as e:
                retry.after(e)
                continue
            retry.done()
            return result

    def ride_out(self, seconds: float, report: Callable[[str], None] | None = None) -> None:
        """For long-running processes (a stream appender, a follower, a server): ride out an
        outage of the server (a restart, a cut network, too many clients) of up to `seconds`,
        retrying with backoff and saying so through `report` (once a failure, then every few
        seconds, and once it is back)."""
        self.patience, self.report = seconds, report

    @property
    def where(self) -> str:
        """``host:port`` of the server, for messages."""
        return self.target.where

    patience: float = 0.0
    """Seconds of outage `transaction` and reads ride out (see `ride_out`); 0: give up after
    a few quick retries, as a one-shot command should."""
    report: Callable[[str], None] | None = None

    def _error(self, error: BaseException, what: str) -> StorageError:
        detail = first_line(error)
        where = f"PostgreSQL at {self.target.where} (schema {self.schema!r})"
        if kind(error) in {"unavailable", "gave up"}:
            return BackendUnavailableError(f"cannot {what}: {where} is unreachable: {detail}")
        return StorageError(f"cannot {what}: {where}: {detail}")

    # ------------------------------------------------------------------ LogBackend

    def write(self, requests: Sequence[AppendRequest]) -> None:
        """Append the requests in one transaction under the recorder's table lock."""
        # Ids the ledger minted are fresh UUIDs: only the others are looked up.
        event_ids = [
            e.id for r in requests for e in r.events if e.id is not None and e.id not in r.minted
        ]
        rows = sum(r.rows for r in requests)
        for request in requests:
            request.encode()
        # Big batches COPY in a worker thread. A precondition's queries are safe: whatever
        # gives it the connection or reads through it waits for the COPYs first.
        background = rows >= _BACKGROUND_ROWS
        # Small ones (the server's, a request or a few a transaction) run in pipeline mode:
        # under load each round trip waits for the server process to get a core, and the
        # appenders' lock is held throughout, so round trips are what every appender queues on.
        pipelined = not background
        # What the last attempt that reached COMMIT decided for each request. If the answer to
        # COMMIT is lost (the connection cut right after it), the retry finds out whether that
        # attempt committed (its new ids are stored at its positions) and, if so, answers as it
        # would have: its first-time events are not duplicates, its minted ids no conflict.
        decided: list[tuple[list[Appended] | None, BaseException | None]] | None = None

        def body(curs: Cursor) -> None:
            nonlocal decided
            size = self.recorder.lock(curs, pipelined=pipelined)
            ops = PostgresTxnOps(self, curs, size, background=background, pipelined=pipelined)
            try:
                if decided is not None and _committed(ops, decided):
                    for request, (result, error) in zip(requests, decided, strict=True):
                        request.result, request.error = result, error
                    return
                if pipelined:  # every read before the writes, in one round trip
                    ops.ask([e.subject for r in requests for e in r.events], (TRUST_HISTORY_KEY,))
                ops.prefetch_ids(event_ids)
                apply_requests(ops, requests)
                ops.flush()
            finally:
                ops.close()
            if ops.appended:
                self.recorder.notify(curs, ops.size())
            decided = [(r.result, r.error) for r in requests]  # COMMIT comes next

        self.transaction(body, what="append", pipelined=pipelined)

    def size(self) -> int:
        return self.read_once(self.recorder.last_position_txn, "read the log size")

    def pages_txn(
        self, curs: psycopg.Cursor[Any], start: int, stop: int
    ) -> Iterator[list[tuple[int, str, bytes]]]:
        """(position, subject, stored bytes) rows start..stop, a page per query, on `curs`'s
        connection (inside its transaction, if any)."""
        for low in range(max(start, 1), stop + 1, PAGE):
            page = curs.connection.cursor(row_factory=tuple_row, binary=True)
            yield page.execute(self.q["select_page"], (low, min(stop, low + PAGE - 1))).fetchall()

    def _paged(
        self, statement: Composed, start: int, stop: int | None, what: str
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of `statement` (positions between %s and %s) from `start` to `stop` or the end,
        a page per query; the next page is fetched in a thread while this one is consumed.

        No connection is held between pages, and at most two pages are in memory.
        """
        last = self.size() if stop is None else stop
        ranges = [(low, min(last, low + PAGE - 1)) for low in range(max(start, 1), last + 1, PAGE)]

        def page(bounds: tuple[int, int]) -> list[tuple[Any, ...]]:
            return self.read_once(lambda curs: curs.execute(statement, bounds).fetchall(), what)

        if len(ranges) <= 1:
            for bounds in ranges:
                yield from page(bounds)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="adminchain-read") as ahead:
            pending = ahead.submit(page, ranges[0])
            for bounds in ranges[1:]:
                rows = pending.result()
                pending = ahead.submit(page, bounds)
                yield from rows
            yield from pending.result()

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Committed (position, stored bytes), in pages of `PAGE` read ahead."""
        return self._paged(self.q["select_stored"], start, stop, "read the log")

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Stored leaf hashes (level 0 of the tree) by position, in pages read ahead."""
        rows = self._paged(self.q["select_leaves"], start, stop, "read the leaves")
        return leaves_of_tiles(rows, start, stop)

    def index_check(self) -> IndexCheck:
        def scan() -> Iterator[list[tuple[bytes, int]]]:
            with self.snapshot(what="read the id index") as curs:
                yield from scan_ids(self, curs)

        return index_check(scan)

    def rebuild_indexes(self) -> int:
        """Write the id index again from the log, under the appenders' lock. (The subject index
        is the events table's own primary key: PostgreSQL keeps it with the rows.)"""

        def body(curs: Cursor) -> int:
            size = self.recorder.lock(curs)
            curs.execute(self.q["truncate_ids"])
            rows = []
            for page in self.pages_txn(curs, 1, size):
                for position, _subject, stored in page:
                    event_id = stored_event(position, bytes(stored)).id or ""
                    rows.append((event_id, position))
            rows.sort()
            copy_binary(curs, self.q["copy_ids"], (pack_id(i, p) for i, p in rows))
            return len(rows)

        return self.transaction(body, what="rebuild the indexes")

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[PgReads]:
        """The committed log as of now, every read in ONE repeatable-read transaction: what an
        audit compares is one consistent state, whatever is appended meanwhile."""
        with self.snapshot(what="read the ledger") as curs:
            reads = PgReads(self, curs.connection.cursor(row_factory=tuple_row, binary=True))
            try:
                yield reads
            except (psycopg.Error, PersistenceError) as e:
                raise self._error(e, "read the ledger") from e

    def positions_of(self, subject: str, skip: int = 0) -> list[int]:
        def query(curs: Cursor) -> list[int]:
            rows = curs.execute(self.q["select_positions"], (subject, skip))
            return [int(r[0]) for r in rows]

        return self.read_once(query, "read a subject's history")

    def positions_of_subjects(self, wanted: Mapping[str, int]) -> dict[str, list[int]]:
        """`positions_of` for many subjects (each with its own skip) in one query."""
        return self.read_once(lambda curs: positions_of_subjects(self, curs, wanted),
                          "read the subjects' histories")  # fmt: skip

    def read_nodes(self) -> merkle.NodeStore:
        return SnapshotNodes(self.read_node, self.read_node_span)

    def read_node(self, level: int, index: int) -> bytes:
        """One committed Merkle node; `KeyError` if it is not stored."""
        statement, key = self.q["select_tile"], (level, index // TILE)
        row = self.read_once(lambda c: c.execute(statement, key).fetchone(), "read the Merkle tree")
        return node_of_tile(None if row is None else row[0], level, index)

    def read_node_span(self, level: int, start: int, count: int) -> bytes:
        """Committed nodes (level, start) .. (level, start + count - 1) concatenated, in one
        query (a tlog tile: `ledger.tiles`); `KeyError` naming the first one missing."""
        first, last = start // TILE, (start + count - 1) // TILE
        statement = self.q["select_span"]
        rows = self.read_once(
            lambda c: c.execute(statement, (level, first, last)).fetchall(), "read the Merkle tree"
        )
        data = bytearray()
        for number, (tile, hashes) in enumerate(rows, first):
            if tile != number:
                break
            data += hashes
        offset, size = (start - first * TILE) * merkle.HASH_SIZE, count * merkle.HASH_SIZE
        if len(data) < offset + size:
            raise KeyError((level, first * TILE + len(data) // merkle.HASH_SIZE))
        return bytes(data[offset : offset + size])

    def get_meta(self, key: str) -> bytes | None:
        statement = self.q["get_meta"]
        row = self.read_once(
            lambda curs: curs.execute(statement, (key,)).fetchone(), "read settings"
        )
        return None if row is None else bytes(row[0])

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        statement = self.q["meta_items"]
        rows = self.read_once(lambda c: c.execute(statement, (prefix,)).fetchall(), "read settings")
        return [(str(key), bytes(value)) for key, value in rows]

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        if key == "format":
            raise StorageError("the 'format' setting belongs to the backend")
        statement = self.q["put_meta" if replace else "add_meta"]
        self.transaction(lambda c: c.execute(statement, (key, value)), what="store a setting")

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block until the log is longer than `position`: woken by NOTIFY (whose payload says how
        long the log is, `Listener`), polling as a fallback."""
        deadline = time.monotonic() + timeout
        listener = self._listener
        listener.start()
        read = -1  # the generation at which this call last read the size
        while True:
            generation = listener.generation
            if listener.known > position:
                return True
            if not listener.alive or listener.blind > read:
                read = generation
                if self.size() > position:
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            listener.wait(generation, remaining if listener.alive else min(remaining, POLL))

    def put_checkpoint(self, size: int, note: str) -> None:
        statement = self.q["put_checkpoint"]
        self.transaction(lambda c: c.execute(statement, (size, note)), what="store a checkpoint")

    def checkpoints(self) -> list[tuple[int, str]]:
        statement = self.q["checkpoints"]
        rows = self.read_once(lambda curs: curs.execute(statement).fetchall(), "read checkpoints")
        return [(int(size), str(note)) for size, note in rows]

    def close(self) -> None:
        self._listener.stop()
        self.datastore.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"


def _snapshot_begun(conn: psycopg.Connection[Any], stack: contextlib.ExitStack) -> None:
    """BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY (one statement), ended with `stack`."""
    stack.callback(_plain_transactions, conn)  # runs before it goes back to the pool
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    stack.enter_context(conn.transaction())


def _plain_transactions(conn: psycopg.Connection[Any]) -> None:
    """Back to the server's default transactions (READ COMMITTED, read-write)."""
    with contextlib.suppress(psycopg.Error):
        conn.isolation_level, conn.read_only = None, None


def positions_of_subjects(
    backend: PostgresBackend, curs: Cursor, wanted: Mapping[str, int]
) -> dict[str, list[int]]:
    """Each subject's positions beyond its first `wanted[subject]` events, ascending (one
    query: `PostgresBackend.positions_of_subjects`, `PgReads.positions_of_subjects`)."""
    found: dict[str, list[int]] = {subject: [] for subject in wanted}
    if not wanted:
        return found
    rows = curs.execute(
        backend.q["select_positions_of_subjects"], (list(wanted), list(wanted.values()))
    )
    for subject, position in rows:
        found[str(subject)].append(int(position))
    return found


def _committed(
    ops: PostgresTxnOps, decided: list[tuple[list[Appended] | None, BaseException | None]]
) -> bool:
    """Whether an earlier attempt whose outcome was `decided` committed (under the lock, so the
    answer cannot change): its first new event is stored at the position it was given."""
    for result, _ in decided:
        for appended in result or ():
            if not appended.duplicate:
                return ops.lookup_id(appended.id) == appended.position
    return False  # it wrote nothing: running it again is the same
