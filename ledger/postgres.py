"""The shared backend: the log in one PostgreSQL schema, through eventsourcing's own module.

``PostgresBackend("postgresql://user:password@host:port/dbname?schema=NAME")``: ``schema`` is
adminchain's own parameter (default ``adminchain``, created on first use); the others (e.g.
``sslmode``, ``connect_timeout``) go to libpq. Events are stored by `PostgresLedgerRecorder`, a
subclass of eventsourcing's ``PostgresApplicationRecorder`` over a ``PostgresDatastore`` (text
originator ids, database functions off): position = notification id, one stream per subject
(version = the subject's own sequence), topic = event type, state = the stored bytes. In the
SAME transaction as the events: ``ids`` (id TEXT PRIMARY KEY -> position: the database itself
refuses a second row for an id; each append also looks its ids up first, in one query, to
report original positions), ``merkle_tiles`` (every complete subtree of the RFC 6962 tree, 32
node hashes of one level a row: see `TILE`), ``checkpoints`` and ``meta``. No ``subjects``
table: the recorder's primary key (originator_id, originator_version) is already that index,
and versions grow with positions, so `positions_of` is one range scan; a copy would double
every event's index work.

Gap-free positions. eventsourcing takes ``LOCK TABLE … IN EXCLUSIVE MODE`` before inserting, so
appenders on every host are serialised and commit in notification-id order; but it numbers rows
from a BIGSERIAL, and ``nextval`` is not transactional: an append that rolls back (a crash, a
lost connection, a unique violation) burns its numbers and leaves a gap. So positions are
allocated here, under the lock: ``MAX(notification_id) + 1, + 2, …`` written explicitly. A
rollback returns its positions with everything else; the lock, held until commit, keeps commit
order = position order. (The sequence stays, unused.)

The Merkle tree is maintained inside the appending transaction, not by a follower: the tree of
size n exists exactly when event n does, so any host can serve a checkpoint or a proof as soon
as an append is acknowledged, a crash never leaves events without leaves, and the cost (the
tiles it extends, rewritten: a few rows for a big batch, one or two for a single event) rides
on the same commit. A follower would need its own
tracking, could lag, and verification would race it.

Events, ids and nodes are written with binary COPY; reads page through the notification-id
index. Transient failures (serialisation, deadlock, lost connection) re-run the whole
transaction: every event has an id, so a retry after an ambiguous commit stores nothing twice.
`wait_beyond` wakes on the recorder's NOTIFY through a LISTEN connection, polling while it is down.
"""

from __future__ import annotations

import contextlib
import getpass
import random
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import DictRow, TupleRow, tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier
from psycopg.sql import Literal as SqlLiteral

from ledger import merkle
from ledger.backend import (
    Appended,
    AppendRequest,
    IndexCheck,
    apply_requests,
    stored_event,
)
from ledger.errors import BackendUnavailableError, LedgerNotFoundError, StorageError
from ledger.postgres_errors import (
    BUSY_WAIT,
    MAX_BACKOFF,
    Retry,
    first_line,
    kind,
)
from ledger.postgres_snapshot import (
    PAGE,
    TILE,
    PgReads,
    SnapshotNodes,
    index_check,
    leaves_of_tiles,
    node_of_tile,
    scan_ids,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "EVENTS_TABLE",
    "PAGE",
    "PgTarget",
    "PostgresBackend",
    "PostgresLedgerRecorder",
    "PostgresTxnOps",
    "copy_binary",
    "pack_event",
    "pack_int8_bytea",
    "parse_url",
]

T = TypeVar("T")
Cursor = psycopg.Cursor[TupleRow]

DEFAULT_SCHEMA: Final = "adminchain"
EVENTS_TABLE: Final = "ledger_events"
FORMAT: Final = b"adminchain-postgres/2"
"""The schema's layout version (2: Merkle nodes in tiles of `TILE` hashes a row)."""
_CONNECT_TIMEOUT: Final = 5
_POLL: Final = 0.2
_BACKGROUND_ROWS: Final = 4096
_MISSING_DATABASE: Final = re.compile(r'database "[^"]*" does not exist')
_DDL: Final = (
    'CREATE TABLE IF NOT EXISTS {schema}.ids (id TEXT COLLATE "C" PRIMARY KEY,'
    " position BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.merkle_tiles (level SMALLINT NOT NULL,"
    " tile BIGINT NOT NULL, hashes BYTEA NOT NULL, PRIMARY KEY (level, tile))",
    "CREATE TABLE IF NOT EXISTS {schema}.checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    "INSERT INTO {schema}.meta VALUES ('format', %(format)s) ON CONFLICT DO NOTHING",
)
_STATEMENTS: Final = {
    "copy_ids": "COPY {schema}.ids (id, position) FROM STDIN (FORMAT BINARY)",
    "copy_tiles": "COPY {schema}.merkle_tiles (level, tile, hashes) FROM STDIN (FORMAT BINARY)",
    "select_tile": "SELECT hashes FROM {schema}.merkle_tiles WHERE level = %s AND tile = %s",
    "select_tiles": "SELECT level, tile, hashes FROM {schema}.merkle_tiles"
    " WHERE (level, tile) IN (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
    "delete_tiles": "DELETE FROM {schema}.merkle_tiles"
    " WHERE (level, tile) IN (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
    "select_page": "SELECT notification_id, originator_id, state FROM {schema}.{events}"
    " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id",
    "select_stored": "SELECT notification_id, state FROM {schema}.{events}"
    " WHERE notification_id BETWEEN %s AND %s ORDER BY notification_id",
    "select_span": "SELECT tile, hashes FROM {schema}.merkle_tiles"
    " WHERE level = %s AND tile BETWEEN %s AND %s ORDER BY tile",
    "select_leaves": "SELECT tile, hashes FROM {schema}.merkle_tiles"
    " WHERE level = 0 AND tile BETWEEN (%s - 1) / {tile} AND (%s - 1) / {tile} ORDER BY tile",
    "select_positions": "SELECT notification_id FROM {schema}.{events}"
    " WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version",
    "format": "SELECT value FROM {schema}.meta WHERE key = 'format'",
    "get_meta": "SELECT value FROM {schema}.meta WHERE key = %s",
    "meta_items": "SELECT key, value FROM {schema}.meta WHERE starts_with(key, %s) ORDER BY key",
    "put_meta": "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "add_meta": "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO NOTHING",
    "put_checkpoint": "INSERT INTO {schema}.checkpoints (size, note) VALUES (%s, %s)"
    " ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note",
    "checkpoints": "SELECT size, note FROM {schema}.checkpoints ORDER BY size",
    "scan_ids": "SELECT id, position FROM {schema}.ids",
    "truncate_ids": "TRUNCATE {schema}.ids",
}
_ANY_STATEMENTS: Final = {  # {values}: an array parameter, or a newline-joined text (any_text)
    "select_ids": "SELECT id, position FROM {schema}.ids WHERE id = ANY({values})",
    "select_versions": "SELECT originator_id, MAX(originator_version) FROM {schema}.{events}"
    " WHERE originator_id = ANY({values}) GROUP BY originator_id",
}


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
        names = ("host", "port", "user", "password", "dbname", "connect_timeout")
        return {name: getattr(self, name) for name in names} | self.options


def parse_url(url: str) -> PgTarget:
    """Parse a ``postgresql://`` URL (see the module docstring for the ``schema`` parameter)."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = options.pop("schema", DEFAULT_SCHEMA).strip() or DEFAULT_SCHEMA
    try:
        if parts.scheme not in {"postgresql", "postgres"}:
            raise ValueError("not a postgresql:// URL")  # noqa: TRY301  one message for all
        if len(schema.encode()) > PostgresLedgerRecorder.MAX_IDENTIFIER_LEN:
            raise ValueError(f"schema name {schema!r} is longer than 63 bytes")  # noqa: TRY301
        timeout = max(1, int(options.pop("connect_timeout", str(_CONNECT_TIMEOUT))))
        port = parts.port or 5432
    except ValueError as e:
        raise BackendUnavailableError(f"bad PostgreSQL URL {url!r}: {e}") from e
    user = unquote(parts.username) if parts.username else getpass.getuser()
    password, dbname = unquote(parts.password or ""), unquote(parts.path.lstrip("/")) or user
    host = parts.hostname or "localhost"
    return PgTarget(host, port, user, password, dbname, schema, timeout, options)


# ----------------------------------------------------------------------------- binary COPY

_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_TRAILER: Final = b"\xff\xff"
_BLOCK: Final = 8192
_TEXT_HEAD: Final = struct.Struct(">hi")  # field count, length of the first (text) field
_INT8_TEXT: Final = struct.Struct(">iqi")  # an int8 field, then the length of a text field
_LENGTH: Final = struct.Struct(">i")
_INT8: Final = struct.Struct(">iq")
_TILE_HEAD: Final = struct.Struct(">hihiqi")  # (level int2, tile int8, hashes bytea) header
_INT8_HEAD: Final = struct.Struct(">hiqi")  # field count, an int8 field, next field's length


def copy_binary(curs: psycopg.Cursor[Any], statement: Composed, rows: Iterable[bytes]) -> None:
    """COPY rows already packed in PostgreSQL's binary tuple format (see the ``pack_*``).

    Packing with `struct` costs about a third of psycopg's per-value ``write_row`` dumpers,
    which would dominate a 100k-event append.
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
    head, middle = _TEXT_HEAD.pack(5, len(o)), _INT8_TEXT.pack(8, version, len(t))
    return b"".join((head, o, middle, t, _LENGTH.pack(len(state)), state, _INT8.pack(8, position)))


def pack_int8_bytea(value: int, data: bytes) -> bytes:
    """(int8, bytea)."""
    return _INT8_HEAD.pack(2, 8, value, len(data)) + data


def _pack_id(text: str, position: int) -> bytes:
    raw = text.encode()
    return _TEXT_HEAD.pack(2, len(raw)) + raw + _INT8.pack(8, position)


# ----------------------------------------------------------------------------- the recorder


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder with gap-free notification ids (see the module).

    Both insert paths allocate ``MAX(notification_id) + 1, …`` under the table lock: the
    recorder's own `insert_events` (an INSERT … SELECT with RETURNING, pipeline-friendly), and
    the ledger's writes, which COPY rows packed by `pack_event` (``copy_events_statement``).
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
            " WITH ORDINALITY AS u(o, v, t, s, n) RETURNING notification_id"
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

    def _insert_stored_events(
        self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        columns = [
            [str(e.originator_id) for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        ]
        curs.execute(self.insert_allocating_statement, columns)


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
    """Merkle nodes inside one write transaction, in tiles (see `TILE`): the tiles an append
    extends are changed in memory, then written at the end (the old rows of partly filled
    tiles deleted, every changed tile COPY'd).

    The last tile of each level as it was (every node an append may read is in one) is loaded
    up front, so appending needs no query while COPYs are running.
    """

    def __init__(self, backend: PostgresBackend, curs: Cursor, copier: _Copier, size: int):
        self._backend, self._curs, self._copier = backend, curs, copier
        self._tiles: dict[tuple[int, int], bytearray] = {}
        self._stored: set[tuple[int, int]] = set()  # tiles that have a row already
        self._changed: set[tuple[int, int]] = set()
        partial = [
            (level, (size >> level) // TILE)
            for level in range(size.bit_length())
            if (size >> level) % TILE
        ]
        if partial:
            levels, tiles = zip(*partial, strict=True)
            for level, tile, data in curs.execute(
                backend.q["select_tiles"], (list(levels), list(tiles))
            ).fetchall():
                key = (int(level), int(tile))
                self._tiles[key] = bytearray(data)
                self._stored.add(key)

    def get(self, level: int, index: int) -> bytes:
        tile = index // TILE
        data = self._tiles.get((level, tile))
        if data is None:
            self._copier.drain()
            row = self._curs.execute(self._backend.q["select_tile"], (level, tile)).fetchone()
            data = None if row is None else row[0]
        return node_of_tile(data, level, index)

    def put(self, level: int, index: int, digest: bytes) -> None:
        self.put_run(level, index, [digest])

    def put_run(self, level: int, start: int, values: Sequence[bytes]) -> None:
        """Store nodes (level, start), (level, start + 1), …: they extend the level's tiles."""
        at, index = 0, start
        while at < len(values):  # the rest of one tile a step
            tile, offset = divmod(index, TILE)
            take = min(len(values) - at, TILE - offset)
            key = (level, tile)
            data = self._tiles.get(key)
            if data is None:
                data = self._tiles[key] = bytearray()
            if len(data) != offset * merkle.HASH_SIZE:
                raise StorageError(f"Merkle node ({level}, {index}) does not extend its level")
            data += b"".join(values[at : at + take])
            self._changed.add(key)
            at, index = at + take, index + take

    def flush(self) -> None:
        if not self._changed:
            return
        replaced = sorted(self._changed & self._stored)
        if replaced:
            self._copier.drain()
            levels, tiles = zip(*replaced, strict=True)
            self._curs.execute(self._backend.q["delete_tiles"], (list(levels), list(tiles)))
        rows = [
            _TILE_HEAD.pack(3, 2, level, 8, tile, len(self._tiles[level, tile]))
            + self._tiles[level, tile]
            for level, tile in sorted(self._changed)
        ]
        self._copier.copy(self._backend.q["copy_tiles"], rows)
        self._stored |= self._changed
        self._changed = set()


class PostgresTxnOps:
    """`ledger.backend.TxnOps` over one PostgreSQL write transaction holding the table lock.

    Everything the transaction reads twice is cached (the size, the ids of the batch, subject
    versions, the tree's right edge); rows are written with binary COPY, for big batches in a
    worker thread (`_Copier`), so a 100k-event batch costs a handful of round trips.
    """

    def __init__(self, backend: PostgresBackend, curs: Cursor, *, background: bool = False):
        self.cursor: Cursor = curs
        self._backend = backend
        self._copier = _Copier(curs, background=background)
        self._size = backend.recorder.last_position_txn(curs)
        self._known: dict[str, int | None] = {}
        self._versions: dict[str, int] = {}
        self._nodes = _TxnNodes(backend, curs, self._copier, self._size)
        self.appended = 0

    def own(self) -> PostgresTxnOps:
        """These operations, once the COPYs running in the background are done (`cursor` is
        then safe to use)."""
        self._copier.drain()
        return self

    def prefetch_ids(self, event_ids: Sequence[str]) -> None:
        """Look up every id of a batch at once (under the lock, the answer cannot change)."""
        wanted = [i for i in dict.fromkeys(event_ids) if i not in self._known]
        if not wanted:
            return
        self._known.update(dict.fromkeys(wanted))
        self._copier.drain()
        found = self.cursor.execute(*self._backend.any_text("select_ids", wanted))
        for event_id, position in found:
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
            versions.update(dict.fromkeys(missing, 0))
            self._copier.drain()
            for subject, version in self.cursor.execute(
                *self._backend.any_text("select_versions", missing)
            ):
                versions[subject] = int(version)
        first = self._size + 1
        numbered: list[tuple[int, int, tuple[str, str, str, bytes]]] = []
        for position, row in enumerate(rows, start=first):
            version = versions[row[0]] = versions[row[0]] + 1
            numbered.append((position, version, row))
        ids = [row[2] for row in rows]
        self._known.update(zip(ids, range(first, first + len(rows)), strict=True))
        in_key_order = sorted(range(len(ids)), key=ids.__getitem__)  # B-tree filled in order
        # Rows are packed as the COPY streams (in the worker, for big batches), so the server
        # starts ingesting at once rather than after the whole batch is packed.
        events = (pack_event(r[0], v, r[1], r[3], p) for p, v, r in numbered)
        id_rows = (_pack_id(ids[k], first + k) for k in in_key_order)
        self._copier.copy(self._backend.recorder.copy_events_statement, events)
        self._copier.copy(self._backend.q["copy_ids"], id_rows)
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

    def get_meta(self, key: str) -> bytes | None:
        self._copier.drain()
        row = self.cursor.execute(self._backend.q["get_meta"], (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        self._copier.drain()
        self.cursor.execute(self._backend.q["put_meta"], (key, value))

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

    kind: Final = "postgres"

    def __init__(
        self, url: str, *, create: bool = True, pool_size: int = 1, max_overflow: int = 7
    ) -> None:
        self.target = target = parse_url(url)
        self.url, self.schema, self.location = target.url, target.schema, url
        self.read_only = False
        self.q = {name: self.sql(template) for name, template in _STATEMENTS.items()}
        array, joined = SQL("%s"), SQL("string_to_array(%s, E'\\n')")
        self._any = {
            name: (self.sql(template, values=array), self.sql(template, values=joined))
            for name, template in _ANY_STATEMENTS.items()
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
            statements = [*self.recorder.sql_create_statements, *(self.sql(s) for s in _DDL)]
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
        self._listener = _Listener(self)

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
        retry = Retry(self, what)
        while True:
            stack = contextlib.ExitStack()
            try:
                conn = stack.enter_context(self.datastore.get_connection())
                conn.execute("SELECT 1")  # a pooled connection the server dropped fails here
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

    def transaction(self, body: Callable[[Cursor], T], *, what: str = "write") -> T:
        """Run `body` in one READ COMMITTED transaction, re-run whole on transient failures.

        psycopg and eventsourcing errors come out as `StorageError` (or
        `BackendUnavailableError` when the server cannot be reached) naming host:port.
        """
        retry = Retry(self, what)
        while True:
            try:
                with self.datastore.get_connection() as conn, conn.transaction():
                    result = body(conn.cursor(row_factory=tuple_row))
            except (psycopg.Error, PersistenceError) as e:
                retry.after(e)
                continue
            retry.done()
            return result

    @contextlib.contextmanager
    def snapshot(self, *, what: str = "read") -> Iterator[Cursor]:
        """A REPEATABLE READ, READ ONLY transaction: one consistent view of every table."""
        with self.connection(what) as conn, conn.transaction():
            curs = conn.cursor(row_factory=tuple_row)
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield curs

    def _read(self, body: Callable[[Cursor], T], what: str = "read") -> T:
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
        # Ids the ledger minted are fresh random UUIDs: only the others are looked up.
        event_ids = [
            e.id for r in requests for e in r.events if e.id is not None and e.id not in r.minted
        ]
        rows = sum(r.rows for r in requests)
        for request in requests:
            request.encode()
        # Big batches COPY in a worker thread. A precondition's queries are safe: whatever
        # gives it the connection or reads through it waits for the COPYs first.
        background = rows >= _BACKGROUND_ROWS
        # What the last attempt that reached COMMIT decided for each request. If the answer to
        # COMMIT is lost (the connection cut right after it), the retry finds out whether that
        # attempt committed (its new ids are stored at its positions) and, if so, answers as it
        # would have: its first-time events are not duplicates, its minted ids no conflict.
        decided: list[tuple[list[Appended] | None, BaseException | None]] | None = None

        def body(curs: Cursor) -> None:
            nonlocal decided
            self.recorder.lock(curs)
            ops = PostgresTxnOps(self, curs, background=background)
            try:
                if decided is not None and _committed(ops, decided):
                    for request, (result, error) in zip(requests, decided, strict=True):
                        request.result, request.error = result, error
                    return
                ops.prefetch_ids(event_ids)
                apply_requests(ops, requests)
                ops.flush()
            finally:
                ops.close()
            if ops.appended:
                self.recorder.notify(curs)
            decided = [(r.result, r.error) for r in requests]  # COMMIT comes next

        self.transaction(body, what="append")

    def size(self) -> int:
        return self._read(self.recorder.last_position_txn, "read the log size")

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
        return self._paged(self.q["select_stored"], start, stop, "read the log")

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Stored leaf hashes (level 0 of the tree) by position, in pages read ahead."""
        rows = self._paged(self.q["select_leaves"], start, stop, "read the leaves")
        return leaves_of_tiles(rows, start, stop)

    def index_check(self) -> IndexCheck:
        def scan() -> Iterator[tuple[bytes, int]]:
            with self.snapshot(what="read the id index") as curs:
                yield from scan_ids(self, curs)

        return index_check(scan)

    def rebuild_indexes(self) -> int:
        """Write the id index again from the log, under the appenders' lock. (The subject index
        is the events table's own primary key: PostgreSQL keeps it with the rows.)"""

        def body(curs: Cursor) -> int:
            self.recorder.lock(curs)
            curs.execute(self.q["truncate_ids"])
            rows = []
            for page in self.pages_txn(curs, 1, self.recorder.last_position_txn(curs)):
                for position, _subject, stored in page:
                    event_id = stored_event(position, bytes(stored)).id or ""
                    rows.append((event_id, position))
            rows.sort()
            copy_binary(curs, self.q["copy_ids"], (_pack_id(i, p) for i, p in rows))
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

        return self._read(query, "read a subject's history")

    def read_nodes(self) -> merkle.NodeStore:
        return SnapshotNodes(self.read_node, self.read_node_span)

    def read_node(self, level: int, index: int) -> bytes:
        """One committed Merkle node; `KeyError` if it is not stored."""
        statement, key = self.q["select_tile"], (level, index // TILE)
        row = self._read(lambda c: c.execute(statement, key).fetchone(), "read the Merkle tree")
        return node_of_tile(None if row is None else row[0], level, index)

    def read_node_span(self, level: int, start: int, count: int) -> bytes:
        """Committed nodes (level, start) .. (level, start + count - 1) concatenated, in one
        query (a tlog tile: `ledger.tiles`); `KeyError` naming the first one missing."""
        first, last = start // TILE, (start + count - 1) // TILE
        statement = self.q["select_span"]
        rows = self._read(
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
        row = self._read(lambda curs: curs.execute(statement, (key,)).fetchone(), "read settings")
        return None if row is None else bytes(row[0])

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        statement = self.q["meta_items"]
        rows = self._read(lambda c: c.execute(statement, (prefix,)).fetchall(), "read settings")
        return [(str(key), bytes(value)) for key, value in rows]

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        if key == "format":
            raise StorageError("the 'format' setting belongs to the backend")
        statement = self.q["put_meta" if replace else "add_meta"]
        self.transaction(lambda c: c.execute(statement, (key, value)), what="store a setting")

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
        statement = self.q["put_checkpoint"]
        self.transaction(lambda c: c.execute(statement, (size, note)), what="store a checkpoint")

    def checkpoints(self) -> list[tuple[int, str]]:
        statement = self.q["checkpoints"]
        rows = self._read(lambda curs: curs.execute(statement).fetchall(), "read checkpoints")
        return [(int(size), str(note)) for size, note in rows]

    def close(self) -> None:
        self._listener.stop()
        self.datastore.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"


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
                self._thread = threading.Thread(target=self._run, name="ac-listen", daemon=True)
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
                self._bump(alive=False)
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _POLL)
