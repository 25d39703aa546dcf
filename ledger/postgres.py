"""The shared backend: the log in one PostgreSQL schema, through eventsourcing's own module.

``PostgresBackend(url)`` opens ``postgresql://user:password@host:port/dbname?schema=NAME`` (the
``schema`` query parameter is adminchain's own; without it the schema is ``adminchain``; other
query parameters such as ``sslmode`` or ``connect_timeout`` go to libpq). The schema is created
on first use. Events are stored by `PostgresLedgerRecorder`, a subclass of eventsourcing's
``PostgresApplicationRecorder`` over a ``PostgresDatastore`` (text originator ids, database
functions off): position = notification id, one stream per subject (originator id = subject,
version = the subject's own sequence), topic = event type, state = the stored bytes.

Beside the recorder's table, in the SAME transaction as the events:

- ``ids`` (id TEXT PRIMARY KEY -> position): idempotency. `write` looks every id of the batch up
  in one query under the lock (to report the original position); the primary key enforces it in
  the database as well, whatever the client does.
- ``merkle_nodes`` (level, idx) -> hash: every complete subtree of the RFC 6962 tree.
- ``checkpoints`` (size -> note) and ``meta`` (key -> value: the schema's format marker).

There is no separate ``subjects`` table: the recorder's primary key (originator_id,
originator_version) already is a (subject, per-subject sequence) index, and versions grow with
positions, so `positions_of` is one index range scan; a second index would only double the
write cost of every event.

Gap-free positions. eventsourcing takes ``LOCK TABLE … IN EXCLUSIVE MODE`` before inserting, so
appenders on every host are serialised and commit in notification-id order; but it lets a
BIGSERIAL sequence number the rows, and ``nextval`` is not transactional: an append that rolls
back (a crash, a lost connection, a refused batch, a unique violation) burns its numbers and
leaves a gap. So positions are allocated here instead, under the lock: ``MAX(notification_id) +
1, + 2, …`` (one index lookup), written explicitly into the column. A rollback then returns its
positions with everything else, and commit order = position order still holds, because the lock
is kept until commit. The sequence is left in place (unused).

The Merkle tree is maintained inside the appending transaction rather than by a follower: the
tree of size n then exists exactly when event n does, so a checkpoint or a proof can be served
by any host the moment an append is acknowledged, a crash can never leave events without their
leaves, and the cost (about two small rows per event plus O(log n) reads) rides on the same
commit. A follower would need its own tracking, could lag, and would make "verify" race it.

Speed: events, ids and nodes are written with binary ``COPY`` (100k-event batches are normal);
reads page through the notification-id index in binary. Transient failures (serialisation,
deadlock, lost connection) re-run the whole transaction: every event carries an id, so a retry
after an ambiguous commit cannot store anything twice. `wait_beyond` wakes on the recorder's
``NOTIFY`` through a ``LISTEN`` connection, and polls when that connection is down.
"""

from __future__ import annotations

import contextlib
import getpass
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg
import psycopg.errors
import psycopg_pool
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import DictRow, TupleRow, tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier

from ledger import merkle
from ledger.backend import AppendRequest, apply_requests
from ledger.errors import BackendUnavailableError, StorageError

__all__ = [
    "DEFAULT_SCHEMA",
    "EVENTS_TABLE",
    "PgTarget",
    "PostgresBackend",
    "PostgresLedgerRecorder",
    "PostgresTxnOps",
    "copy_binary",
    "parse_url",
]

T = TypeVar("T")
Cursor = psycopg.Cursor[TupleRow]

DEFAULT_SCHEMA: Final = "adminchain"
EVENTS_TABLE: Final = "ledger_events"
FORMAT: Final = b"adminchain-postgres/1"
PAGE: Final = 10_000
"""Rows fetched per query when reading the log: bounds memory for logs of any length."""

_CONNECT_TIMEOUT: Final = 5
_ATTEMPTS: Final = 8
_POLL: Final = 0.2
_BACKGROUND_ROWS: Final = 4096
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01", "55P03", "23505"})
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})


# ----------------------------------------------------------------------------- the target


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A parsed ``postgresql://`` URL: where the ledger lives and how to connect."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    schema: str
    connect_timeout: int = _CONNECT_TIMEOUT
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL without its password (safe for messages and checkpoints)."""
        user = quote(self.user, safe="")
        return f"postgresql://{user}@{self.where}/{self.dbname}?schema={quote(self.schema)}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect`."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "connect_timeout": self.connect_timeout,
            **self.options,
        }


def parse_url(url: str) -> PgTarget:
    """Parse a ``postgresql://`` URL (see the module docstring for the ``schema`` parameter)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres"}:
        raise BackendUnavailableError(f"not a postgresql:// URL: {url!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = options.pop("schema", DEFAULT_SCHEMA).strip() or DEFAULT_SCHEMA
    if len(schema.encode()) > PostgresLedgerRecorder.MAX_IDENTIFIER_LEN:
        raise BackendUnavailableError(f"schema name {schema!r} is longer than 63 bytes")
    try:
        timeout = int(options.pop("connect_timeout", str(_CONNECT_TIMEOUT)))
        port = parts.port or 5432
    except ValueError as e:
        raise BackendUnavailableError(f"bad PostgreSQL URL {url!r}: {e}") from e
    user = unquote(parts.username) if parts.username else getpass.getuser()
    return PgTarget(
        host=parts.hostname or "localhost",
        port=port,
        user=user,
        password=unquote(parts.password or ""),
        dbname=unquote(parts.path.lstrip("/")) or user,
        schema=schema,
        connect_timeout=max(1, timeout),
        options=options,
    )


# ----------------------------------------------------------------------------- errors


def _psycopg_error(error: BaseException) -> BaseException:
    """The psycopg error behind an eventsourcing `PersistenceError` (or the error itself)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, psycopg.Error):
        seen = seen.__cause__
    return error if seen is None else seen


def _kind(error: BaseException) -> Literal["transient", "unavailable", "fatal"]:
    """How to treat a failure: retry the transaction, report the server down, or give up."""
    root = _psycopg_error(error)
    if isinstance(root, psycopg_pool.PoolTimeout):
        return "unavailable"
    sqlstate = getattr(root, "sqlstate", None)
    if sqlstate in _TRANSIENT_STATES:
        return "transient"
    if sqlstate in _UNAVAILABLE_STATES or isinstance(root, psycopg.InterfaceError):
        return "unavailable"
    if isinstance(root, psycopg.OperationalError) and (sqlstate is None or sqlstate[:2] == "08"):
        return "unavailable"
    return "fatal"


def _first_line(error: BaseException) -> str:
    text = str(_psycopg_error(error)).strip() or type(error).__name__
    return text.splitlines()[0]


# ----------------------------------------------------------------------------- binary COPY

_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_TRAILER: Final = b"\xff\xff"
_BLOCK: Final = 8192
_TEXT_HEAD: Final = struct.Struct(">hi")  # field count, length of the first (text) field
_INT8_TEXT: Final = struct.Struct(">iqi")  # an int8 field, then the length of a text field
_LENGTH: Final = struct.Struct(">i")
_INT8: Final = struct.Struct(">iq")
_NODE: Final = struct.Struct(">hihiqi32s")  # (level int2, idx int8, hash bytea[32])
_INT8_HEAD: Final = struct.Struct(">hiqi")  # field count, an int8 field, next field's length


def copy_binary(curs: psycopg.Cursor[Any], statement: Composed, rows: Iterable[bytes]) -> None:
    """COPY rows already packed in PostgreSQL's binary tuple format (see the ``pack_*``).

    Packing with `struct` costs about a third of psycopg's per-value ``write_row`` dumpers,
    which dominate a 100k-event append otherwise.
    """
    with curs.copy(statement) as copy:
        copy.write(_SIGNATURE)
        block: list[bytes] = []
        for row in rows:
            block.append(row)
            if len(block) >= _BLOCK:
                copy.write(b"".join(block))
                block.clear()
        block.append(_TRAILER)
        copy.write(b"".join(block))


def pack_event(subject: str, version: int, topic: str, state: bytes, position: int) -> bytes:
    """(originator_id text, originator_version int8, topic text, state bytea, id int8)."""
    o, t = subject.encode(), topic.encode()
    return b"".join(
        (
            _TEXT_HEAD.pack(5, len(o)),
            o,
            _INT8_TEXT.pack(8, version, len(t)),
            t,
            _LENGTH.pack(len(state)),
            state,
            _INT8.pack(8, position),
        )
    )


def pack_text_int8(text: str, value: int) -> bytes:
    """(text, int8)."""
    raw = text.encode()
    return _TEXT_HEAD.pack(2, len(raw)) + raw + _INT8.pack(8, value)


def pack_int8_bytea(value: int, data: bytes) -> bytes:
    """(int8, bytea)."""
    return _INT8_HEAD.pack(2, 8, value, len(data)) + data


def pack_node(level: int, index: int, digest: bytes) -> bytes:
    """(level int2, idx int8, hash bytea) of one Merkle node."""
    return _NODE.pack(3, 2, level, 8, index, 32, digest)


# ----------------------------------------------------------------------------- the recorder


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder with gap-free notification ids (see the module).

    Both insert paths allocate ``MAX(notification_id) + 1, …`` under the table lock: the
    recorder's own `insert_events` (an INSERT … SELECT with RETURNING, pipeline-friendly) and
    `insert_events_txn`, a binary COPY into a transaction that holds the lock (the ledger's
    writes COPY the same rows, packed by `pack_event`, through `copy_events_statement`).
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = EVENTS_TABLE):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = Identifier(datastore.schema), Identifier(events_table_name)
        # LISTEN/NOTIFY channels are per database, not per schema: name the schema too.
        self.channel_name = f"{events_table_name}@{datastore.schema}"[: self.MAX_IDENTIFIER_LEN]
        self.last_position_statement = SQL(
            "SELECT COALESCE(MAX(notification_id), 0) FROM {0}.{1}"
        ).format(schema, table)
        self.copy_events_statement = SQL(
            "COPY {0}.{1} (originator_id, originator_version, topic, state, notification_id)"
            " FROM STDIN (FORMAT BINARY)"
        ).format(schema, table)
        self.insert_allocating_statement = SQL(
            "INSERT INTO {0}.{1} (originator_id, originator_version, topic, state,"
            " notification_id)"
            " SELECT o, v, t, s, (SELECT COALESCE(MAX(notification_id), 0) FROM {0}.{1}) + n"
            " FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bytea[])"
            " WITH ORDINALITY AS u(o, v, t, s, n)"
            " RETURNING notification_id"
        ).format(schema, table)

    def lock(self, curs: psycopg.Cursor[Any]) -> None:
        """Take the table lock that serialises appenders (held until the transaction ends)."""
        self._lock_table(curs)

    def notify(self, curs: psycopg.Cursor[Any]) -> None:
        """Queue a NOTIFY on the recorder's channel (delivered when the transaction commits)."""
        self._notify_channel(curs)

    def last_position_txn(self, curs: psycopg.Cursor[Any]) -> int:
        """The highest notification id visible to this transaction (0 when empty)."""
        row = curs.execute(self.last_position_statement).fetchone()
        assert row is not None
        return int(row[0] if isinstance(row, tuple) else row["coalesce"])

    def insert_events_txn(
        self, curs: psycopg.Cursor[Any], stored_events: Sequence[StoredEvent], first: int
    ) -> list[int]:
        """COPY events with notification ids first, first+1, …; the caller holds the lock."""
        copy_binary(
            curs,
            self.copy_events_statement,
            (
                pack_event(str(e.originator_id), e.originator_version, e.topic, e.state, position)
                for position, e in enumerate(stored_events, start=first)
            ),
        )
        return list(range(first, first + len(stored_events)))

    def _insert_stored_events(
        self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_allocating_statement,
            (
                [str(e.originator_id) for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )


# ----------------------------------------------------------------------------- in a write


class _Copier:
    """Runs the COPYs of one write transaction, in order, optionally in a worker thread.

    In the background the server ingests the events and ids while this thread hashes the
    Merkle leaves (the work is server-bound: the socket blocks while the server catches up).
    Every other statement on the connection must `drain` first; `close` always waits.
    """

    def __init__(self, curs: Cursor, *, background: bool) -> None:
        self._curs = curs
        self._pool = ThreadPoolExecutor(1, "adminchain-copy") if background else None
        self._pending: list[Future[None]] = []

    def copy(self, statement: Composed, rows: Iterable[bytes]) -> None:
        if self._pool is None:
            copy_binary(self._curs, statement, rows)
        else:
            self._pending.append(self._pool.submit(copy_binary, self._curs, statement, rows))

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            wait(self._pending)
            self._pool.shutdown()


class _TxnNodes:
    """Merkle nodes inside one write transaction: new nodes buffered, then COPY'd at the end.

    The right edge of the tree as it was (every node an append may read) is loaded up front,
    so appending needs no query while COPYs are running.
    """

    def __init__(self, backend: PostgresBackend, curs: Cursor, copier: _Copier, size: int):
        self._backend = backend
        self._curs = curs
        self._copier = copier
        self.pending: dict[tuple[int, int], bytes] = {}
        self._edge: dict[tuple[int, int], bytes] = {}
        levels = [level for level in range(size.bit_length()) if size >> level & 1]
        if levels:
            indexes = [(size >> level) - 1 for level in levels]
            for level, index, digest in curs.execute(backend.select_nodes, (levels, indexes)):
                self._edge[int(level), int(index)] = bytes(digest)

    def get(self, level: int, index: int) -> bytes:
        key = (level, index)
        found = self.pending.get(key) or self._edge.get(key)
        if found is not None:
            return found
        self._copier.drain()
        row = self._curs.execute(self._backend.select_node, key).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def put(self, level: int, index: int, digest: bytes) -> None:
        self.pending[level, index] = digest

    def flush(self) -> None:
        if self.pending:
            rows = [pack_node(level, index, h) for (level, index), h in self.pending.items()]
            self._copier.copy(self._backend.copy_nodes, rows)
            self.pending = {}


class PostgresTxnOps:
    """`ledger.backend.TxnOps` over one PostgreSQL write transaction holding the table lock.

    Everything the transaction reads twice is cached (the size, the ids of the batch, subject
    versions, the tree's right edge); rows are written with binary COPY, for big batches in a
    worker thread (`_Copier`), so a 100k-event batch costs a handful of round trips.
    """

    def __init__(self, backend: PostgresBackend, curs: Cursor, *, background: bool = False):
        self.raw: object = curs
        self.cursor: Cursor = curs
        self._backend = backend
        self._copier = _Copier(curs, background=background)
        self._size = backend.recorder.last_position_txn(curs)
        self._known: dict[str, int | None] = {}
        self._versions: dict[str, int] = {}
        self._nodes = _TxnNodes(backend, curs, self._copier, self._size)
        self.appended = 0

    def prefetch_ids(self, event_ids: Sequence[str]) -> None:
        """Look up every id of a batch at once (under the lock, the answer cannot change)."""
        wanted = [i for i in dict.fromkeys(event_ids) if i not in self._known]
        if not wanted:
            return
        for event_id in wanted:
            self._known[event_id] = None
        self._copier.drain()
        rows = self.cursor.execute(*self._backend.any_text("select_ids", wanted)).fetchall()
        for event_id, position in rows:
            self._known[event_id] = int(position)

    def size(self) -> int:
        return self._size

    def lookup_id(self, event_id: str) -> int | None:
        if event_id not in self._known:
            self.prefetch_ids([event_id])
        return self._known[event_id]

    def insert(self, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        versions = self._versions
        missing = list({subject for subject, _, _, _ in rows if subject not in versions})
        if missing:
            for subject in missing:
                versions[subject] = 0
            self._copier.drain()
            found = self.cursor.execute(*self._backend.any_text("select_versions", missing))
            for subject, version in found:
                versions[subject] = int(version)
        first = self._size + 1
        events: list[bytes] = []
        new_ids: list[tuple[str, int]] = []
        for position, (subject, topic, event_id, data) in enumerate(rows, start=first):
            version = versions[subject] + 1
            versions[subject] = version
            events.append(pack_event(subject, version, topic, data, position))
            new_ids.append((event_id, position))
            self._known[event_id] = position
        new_ids.sort()  # key order: the primary key's B-tree is filled page by page
        self._copier.copy(self._backend.recorder.copy_events_statement, events)
        self._copier.copy(self._backend.copy_ids, [pack_text_int8(*row) for row in new_ids])
        self._size += len(rows)
        self.appended += len(rows)
        return list(range(first, self._size + 1))

    def nodes(self) -> merkle.NodeStore:
        return self._nodes

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        self._copier.drain()
        for page in self._backend.pages_txn(self.cursor, start, stop):
            for position, _subject, data in page:
                yield position, data

    def flush(self) -> None:
        """Write the buffered Merkle rows and wait for every COPY (before commit)."""
        self._nodes.flush()
        self._copier.drain()

    def close(self) -> None:
        """Wait for any COPY still running (the transaction is ending, well or not)."""
        self._copier.close()


# ----------------------------------------------------------------------------- the backend


class PostgresBackend:
    """The ledger in one PostgreSQL schema (SPEC §6, shared): see the module docstring."""

    def __init__(self, url: str, *, pool_size: int = 2, max_overflow: int = 6) -> None:
        self.target = parse_url(url)
        self.url = self.target.url
        self.schema = self.target.schema
        conn = self._probe()
        try:
            target = self.target
            self.datastore = PostgresDatastore(
                dbname=target.dbname,
                host=target.host,
                port=target.port,
                user=target.user,
                password=target.password,
                connect_timeout=float(target.connect_timeout),
                pool_size=pool_size,
                max_overflow=max_overflow,
                schema=target.schema,
                originator_id_type="text",
                enable_db_functions=False,
            )
            if target.options and isinstance(self.datastore.pool.kwargs, dict):
                self.datastore.pool.kwargs.update(target.options)
            self._prepare_statements()
            self.recorder = PostgresLedgerRecorder(self.datastore)
            if not self._is_set_up(conn):
                self._set_up(conn)
            self.datastore.register_type_adapters()
        except (psycopg.Error, PersistenceError) as e:
            raise self._error(e, "open the ledger") from e
        finally:
            conn.close()
        self._listener = _Listener(self)
        self._node_cache: dict[tuple[int, int], bytes] = {}

    # ------------------------------------------------------------------ setup

    def sql(self, template: str, **fields: Composable) -> Composed:
        """`template` with ``{schema}`` and ``{events}`` filled in as quoted identifiers."""
        return SQL(template).format(
            schema=Identifier(self.schema), events=Identifier(EVENTS_TABLE), **fields
        )

    def _prepare_statements(self) -> None:
        sql = self.sql
        ids = "SELECT id, position FROM {schema}.ids WHERE id = ANY({values})"
        versions = (
            "SELECT originator_id, MAX(originator_version) FROM {schema}.{events}"
            " WHERE originator_id = ANY({values}) GROUP BY originator_id"
        )
        array, joined = SQL("%s"), SQL("string_to_array(%s, E'\\n')")
        self._statements = {
            name: (
                sql(template, values=array),
                sql(template, values=joined),
            )
            for name, template in (("select_ids", ids), ("select_versions", versions))
        }
        self.copy_ids = sql("COPY {schema}.ids (id, position) FROM STDIN (FORMAT BINARY)")
        self.select_nodes = sql(
            "SELECT level, idx, hash FROM {schema}.merkle_nodes"
            " WHERE (level, idx) IN (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))"
        )
        self.select_node = sql(
            "SELECT hash FROM {schema}.merkle_nodes WHERE level = %s AND idx = %s"
        )
        self.copy_nodes = sql(
            "COPY {schema}.merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
        )
        self.select_page = sql(
            "SELECT notification_id, originator_id, state FROM {schema}.{events}"
            " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id"
        )
        self.select_stored = sql(
            "SELECT notification_id, state FROM {schema}.{events}"
            " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id"
        )
        self.select_leaves = sql(
            "SELECT idx + 1, hash FROM {schema}.merkle_nodes"
            " WHERE level = 0 AND idx BETWEEN %s - 1 AND %s - 1 ORDER BY idx"
        )
        self.select_positions = sql(
            "SELECT notification_id FROM {schema}.{events}"
            " WHERE originator_id = %s ORDER BY originator_version"
        )

    def any_text(self, name: str, values: list[str]) -> tuple[Composed, tuple[object]]:
        """Statement `name` (its ``%s`` compared with ``= ANY``) and its parameter for `values`.

        A big ``text[]`` parameter costs the server about 2 µs an element to receive; one
        newline-joined text split by ``string_to_array`` costs a tenth of that. Values that
        contain a newline (ids may) fall back to the array.
        """
        joined = "\n".join(values)
        if joined.count("\n") == len(values) - 1:
            return self._statements[name][1], (joined,)
        return self._statements[name][0], (values,)

    def _probe(self) -> psycopg.Connection[TupleRow]:
        """Connect once, directly: an unreachable server fails fast with a clear message."""
        try:
            return psycopg.connect(**self.target.connect_kwargs(), autocommit=True)
        except psycopg.Error as e:
            raise BackendUnavailableError(
                f"cannot reach PostgreSQL at {self.target.where} "
                f"(database {self.target.dbname!r}): {_first_line(e)}"
            ) from e

    def _is_set_up(self, conn: psycopg.Connection[TupleRow]) -> bool:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.meta', %s::text))", (self.schema,)
        ).fetchone()
        if row is None or row[0] is None:
            return False
        found = conn.execute(self.sql("SELECT value FROM {schema}.meta WHERE key = 'format'"))
        value = found.fetchone()
        if value is None:
            return False
        if bytes(value[0]) != FORMAT:
            raise StorageError(
                f"schema {self.schema!r} at {self.target.where} holds "
                f"{bytes(value[0]).decode(errors='replace')}, not {FORMAT.decode()}"
            )
        return True

    def _set_up(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Create the schema, the recorder's objects and ours, once, in one transaction."""
        ours = [
            'CREATE TABLE IF NOT EXISTS {schema}.ids (id TEXT COLLATE "C" PRIMARY KEY,'
            " position BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {schema}.merkle_nodes (level SMALLINT NOT NULL,"
            " idx BIGINT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY (level, idx))",
            "CREATE TABLE IF NOT EXISTS {schema}.checkpoints (size BIGINT PRIMARY KEY,"
            " note TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        ]
        statements: list[Composed] = [*self.recorder.sql_create_statements]
        statements += [self.sql(s) for s in ours]
        self.run_ddl(conn, statements)
        conn.execute(
            self.sql("INSERT INTO {schema}.meta VALUES ('format', %s) ON CONFLICT DO NOTHING"),
            (FORMAT,),
        )

    def run_ddl(self, conn: psycopg.Connection[Any], statements: Sequence[Composed]) -> None:
        """Run DDL in one transaction, serialised with other hosts by an advisory lock.

        ``CREATE … IF NOT EXISTS`` is not safe against a concurrent creator (both may pass the
        check), hence the lock; ``CREATE TYPE`` has no IF NOT EXISTS, hence the lookup.
        """
        with conn.transaction():
            key = f"adminchain:{self.schema}"
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            conn.execute(self.sql("CREATE SCHEMA IF NOT EXISTS {schema}"))
            for statement in statements:
                text = statement.as_string(conn)
                if "CREATE TYPE" in text:
                    name = self.recorder.stored_event_type_name
                    exists = conn.execute(
                        "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                        " WHERE n.nspname = %s AND t.typname = %s",
                        (self.schema, name),
                    ).fetchone()
                    if exists:
                        continue
                conn.execute(statement, prepare=False)

    def ensure_tables(self, marker: str, statements: Sequence[str]) -> None:
        """Create tables beside the log (e.g. the stored views) unless `marker` exists.

        `statements` are templates for `sql`; they run through `run_ddl`.
        """

        def exists(curs: Cursor) -> bool:
            row = curs.execute(
                "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (self.schema, marker)
            ).fetchone()
            return row is not None and row[0] is not None

        if self._read(exists, "inspect the schema"):
            return
        try:
            with self.datastore.get_connection() as conn:
                self.run_ddl(conn, [self.sql(s) for s in statements])
        except (psycopg.Error, PersistenceError) as e:
            raise self._error(e, "create tables") from e

    # ------------------------------------------------------------------ transactions

    def transaction(self, body: Callable[[Cursor], T], *, what: str = "write") -> T:
        """Run `body` in one READ COMMITTED transaction, re-run whole on transient failures.

        psycopg and eventsourcing errors come out as `StorageError` (or
        `BackendUnavailableError` when the server cannot be reached) naming host:port.
        """
        attempt = 0
        while True:
            try:
                with self.datastore.get_connection() as conn, conn.transaction():
                    return body(conn.cursor(row_factory=tuple_row))
            except (psycopg.Error, PersistenceError) as e:
                kind = _kind(e)
                attempt += 1
                if kind == "fatal" or attempt >= _ATTEMPTS or _is_pool_timeout(e):
                    raise self._error(e, what) from e
                time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))

    @contextlib.contextmanager
    def snapshot(self, *, what: str = "read") -> Iterator[Cursor]:
        """A REPEATABLE READ, READ ONLY transaction: one consistent view of every table."""
        try:
            with self.datastore.get_connection() as conn, conn.transaction():
                curs = conn.cursor(row_factory=tuple_row)
                curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield curs
        except (psycopg.Error, PersistenceError) as e:
            raise self._error(e, what) from e

    def _read(self, body: Callable[[Cursor], T], what: str = "read") -> T:
        """A short autocommit read, retried on dropped connections (the pool replaces them)."""
        attempt = 0
        while True:
            try:
                with self.datastore.get_connection() as conn:
                    return body(conn.cursor(row_factory=tuple_row, binary=True))
            except (psycopg.Error, PersistenceError) as e:
                attempt += 1
                if attempt >= _ATTEMPTS or _kind(e) == "fatal" or _is_pool_timeout(e):
                    raise self._error(e, what) from e
                time.sleep(0.01 * attempt)

    def _error(self, error: BaseException, what: str) -> StorageError:
        detail = _first_line(error)
        where = f"PostgreSQL at {self.target.where} (schema {self.schema!r})"
        if _kind(error) == "unavailable":
            return BackendUnavailableError(f"cannot {what}: {where} is unreachable: {detail}")
        return StorageError(f"cannot {what}: {where}: {detail}")

    # ------------------------------------------------------------------ LogBackend

    def write(self, requests: Sequence[AppendRequest]) -> None:
        """Append the requests in one transaction under the recorder's table lock."""
        event_ids = [e.id for r in requests for e in r.events if e.id is not None]
        for request in requests:
            request.encode()

        # Big batches COPY in a worker thread; not with preconditions, which query the views
        # through the same connection at any moment.
        background = len(event_ids) >= _BACKGROUND_ROWS and not any(
            r.precondition for r in requests
        )

        def body(curs: Cursor) -> None:
            self.recorder.lock(curs)
            ops = PostgresTxnOps(self, curs, background=background)
            try:
                ops.prefetch_ids(event_ids)
                apply_requests(ops, requests)
                ops.flush()
            finally:
                ops.close()
            if ops.appended:
                self.recorder.notify(curs)

        self.transaction(body, what="append")

    def size(self) -> int:
        return self._read(self.recorder.last_position_txn, "read the log size")

    def pages_txn(
        self, curs: psycopg.Cursor[Any], start: int, stop: int
    ) -> Iterator[list[tuple[int, str, bytes]]]:
        """(position, subject, stored bytes) rows start..stop, a page per query, on `curs`'s
        connection (inside its transaction, if any)."""
        conn = curs.connection
        low = max(start, 1)
        while low <= stop:
            high = min(stop, low + PAGE - 1)
            page_curs = conn.cursor(row_factory=tuple_row, binary=True)
            rows = page_curs.execute(self.select_page, (low, high)).fetchall()
            yield rows
            low = high + 1

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
            return self._read(lambda curs: curs.execute(statement, bounds).fetchall(), what)

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
        return self._paged(self.select_stored, start, stop, "read the log")

    def positions_of(self, subject: str) -> list[int]:
        def query(curs: Cursor) -> list[int]:
            return [int(r[0]) for r in curs.execute(self.select_positions, (subject,))]

        return self._read(query, "read a subject's history")

    def read_nodes(self) -> merkle.NodeStore:
        return _SnapshotNodes(self)

    def read_node(self, level: int, index: int) -> bytes | None:
        """One committed Merkle node (cached: committed nodes never change)."""
        key = (level, index)
        cached = self._node_cache.get(key)
        if cached is not None:
            return cached
        row = self._read(
            lambda curs: curs.execute(self.select_node, key).fetchone(), "read the Merkle tree"
        )
        if row is None:
            return None
        if len(self._node_cache) >= 1 << 16:
            self._node_cache.clear()
        value = self._node_cache[key] = bytes(row[0])
        return value

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Stored leaf hashes (level 0 of the tree) by position, in pages read ahead."""
        return self._paged(self.select_leaves, start, stop, "read the Merkle leaves")

    def get_meta(self, key: str) -> bytes | None:
        statement = self.sql("SELECT value FROM {schema}.meta WHERE key = %s")
        row = self._read(lambda curs: curs.execute(statement, (key,)).fetchone(), "read settings")
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        if key == "format":
            raise StorageError("the 'format' setting belongs to the backend")
        statement = self.sql(
            "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )

        def body(curs: Cursor) -> None:
            curs.execute(statement, (key, value))

        self.transaction(body, what="store a setting")

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block until the log is longer than `position`: woken by NOTIFY, polling as a fallback."""
        deadline = time.monotonic() + timeout
        listener = self._listener
        listener.start()
        while True:
            generation = listener.generation
            if self.size() > position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            listener.wait(generation, remaining if listener.alive else min(remaining, _POLL))

    def put_checkpoint(self, size: int, note: str) -> None:
        statement = self.sql(
            "INSERT INTO {schema}.checkpoints (size, note) VALUES (%s, %s)"
            " ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note"
        )

        def body(curs: Cursor) -> None:
            curs.execute(statement, (size, note))

        self.transaction(body, what="store a checkpoint")

    def checkpoints(self) -> list[tuple[int, str]]:
        statement = self.sql("SELECT size, note FROM {schema}.checkpoints ORDER BY size")
        rows = self._read(lambda curs: curs.execute(statement).fetchall(), "read checkpoints")
        return [(int(size), str(note)) for size, note in rows]

    def close(self) -> None:
        self._listener.stop()
        self.datastore.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"


def _is_pool_timeout(error: BaseException) -> bool:
    """The pool already waited its whole connect timeout: retrying would only wait again."""
    return isinstance(_psycopg_error(error), psycopg_pool.PoolTimeout)


class _SnapshotNodes:
    """Merkle nodes read outside a write, one short query each (nodes never change)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend

    def get(self, level: int, index: int) -> bytes:
        value = self._backend.read_node(level, index)
        if value is None:
            raise KeyError((level, index))
        return value

    def put(self, level: int, index: int, digest: bytes) -> None:
        raise StorageError("Merkle nodes are written only by appends")


class _Listener:
    """A daemon thread LISTENing on the recorder's channel; bumps `generation` on each NOTIFY.

    Waiters read `generation`, check the log, then `wait` for it to change. While the
    connection is down (`alive` false) waiters poll instead, and the thread reconnects.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self._kwargs = backend.target.connect_kwargs()
        self._listen = SQL("LISTEN {0}").format(Identifier(backend.recorder.channel_name))
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.alive = False

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="adminchain-pg-listen", daemon=True
                )
                self._thread.start()

    def wait(self, generation: int, timeout: float) -> None:
        with self._cond:
            if self.generation == generation:
                self._cond.wait(timeout)

    def _bump(self, *, alive: bool) -> None:
        with self._cond:
            self.alive = alive
            self.generation += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(**self._kwargs, autocommit=True) as conn:
                    conn.execute(self._listen)
                    self._bump(alive=True)  # waiters re-check: a NOTIFY may predate the LISTEN
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=_POLL, stop_after=1):
                            self._bump(alive=True)
            except psycopg.Error:
                with self._cond:
                    self.alive = False
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=2 * _POLL)
