"""Stored views beside a PostgreSQL ledger, in the ledger's own schema (SPEC §6, shared).

Tables: ``view_state`` (projection, subject -> state, PRIMARY KEY (projection, subject)) and
``view_tracking`` (one row: the last folded position); ``view_verdicts``, where older versions
kept each position's verdicts, is no longer written (see `projections.views`). A catch-up chunk
writes states and tracking in ONE transaction, so the views and their tracking always move
together: a crash (or an error) in the middle leaves nothing half-written, and the next
catch-up starts again at the committed tracking position.

Several hosts may catch up at once. Each chunk first takes the tracking row ``FOR UPDATE``: a
second catch-up waits there, then (READ COMMITTED re-reads the locked row) sees the first one's
new tracking position and folds only what follows it, so no event is ever folded twice.

Strict appends read the views through the ledger's write transaction (`over`), taking the
tracking row ``FOR SHARE``: no catch-up can commit between reading the tracking position and
reading the states, so the two are consistent. (Lock order is always events table, then
tracking row, then states, and catch-ups never wait for the events table lock: no deadlock.)

Catching up reads the log in pages and loads the states of each page's subjects in one query,
then writes the changed states in bulk (unnest) before committing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar

import psycopg
from psycopg.rows import tuple_row

from ledger.backend import TxnOps
from ledger.events import Event
from ledger.postgres import Cursor, PostgresBackend, PostgresTxnOps
from projections.base import Verdict
from projections.state import BY_NAME, SHARED_KEYS
from projections.views import Carry, ViewTxn, catch_up_txn

__all__ = ["PostgresViews"]

T = TypeVar("T")
_NAMES: Final = list(BY_NAME)
_SHARED_SUBJECTS: Final = sorted({subject for _, subject in SHARED_KEYS})
"""Loaded with every page: states any subject's fold may read (see `projections.state`)."""
_TRACKING_NAME: Final = "views"
_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {schema}.view_state (projection TEXT NOT NULL,"
    " subject TEXT NOT NULL, state BYTEA NOT NULL, PRIMARY KEY (projection, subject))",
    "CREATE TABLE IF NOT EXISTS {schema}.view_tracking (name TEXT PRIMARY KEY,"
    " position BIGINT NOT NULL)",
    "INSERT INTO {schema}.view_tracking VALUES ('views', 0) ON CONFLICT DO NOTHING",
)
_cursor_names = itertools.count()


def _tracking_of(found: Cursor) -> int:
    """The tracking position a ``select_tracking`` query found (0: no row yet)."""
    row = found.fetchone()
    return 0 if row is None else int(row[0])


class _PgViewTxn:
    """`ViewTxn` over one PostgreSQL transaction.

    Reads go to the database (states of a page's subjects are loaded together); writes are
    buffered and written by `flush`, which `catch_up_txn` calls last, before the commit.
    """

    def __init__(
        self, views: PostgresViews, curs: Cursor, *, lock: str = "", log: TxnOps | None = None
    ) -> None:
        self._views = views
        self._curs = curs
        self._lock = lock
        self._log = log  # inside a ledger write: its operations know the log's size
        self._tracking: int | None = None
        self._size: int | None = None  # a snapshot's, read once (it cannot change)
        self._states: dict[tuple[str, str], bytes] = {}
        self._loaded: set[str] = set()
        self._saves: dict[tuple[str, str], bytes | None] = {}
        self._new_tracking: int | None = None

    def tracking(self) -> int:
        if self._new_tracking is not None:
            return self._new_tracking
        if self._tracking is None:
            if not self._lock and self._log is None:  # a snapshot: its size comes along
                self._tracking, self._size = self._views.tracking_and_size(self._curs)
            else:
                self._tracking = _tracking_of(self._ask_tracking(self._curs))
        return self._tracking

    def load(self, projection: str, subject: str) -> bytes | None:
        key = (projection, subject)
        if key in self._saves:
            return self._saves[key]
        if key in self._states:
            return self._states[key]
        if subject not in self._loaded:
            self.prefetch([subject])
        return self._states.get(key)

    def prefetch(self, subjects: list[str]) -> None:
        """Load the stored states of `subjects` (those not loaded yet) with one query."""
        self._take_states(self._ask_states(self._curs, subjects))

    def ask(self, subjects: list[str]) -> None:
        """The tracking position and the stored states of `subjects`, asked together: in
        pipeline mode (a small append's transaction) one round trip, not two."""
        conn = self._curs.connection
        tracking = self._ask_tracking(conn.cursor(row_factory=tuple_row))
        states = self._ask_states(conn.cursor(row_factory=tuple_row), subjects)
        self._tracking = _tracking_of(tracking)
        self._take_states(states)

    def _ask_tracking(self, curs: Cursor) -> Cursor:
        statement = self._views.select_tracking
        if self._lock:
            statement += self._views.backend.sql(f" FOR {self._lock}")
        return curs.execute(statement, (_TRACKING_NAME,))


    def _ask_states(self, curs: Cursor, subjects: list[str]) -> Cursor | None:
        wanted = [s for s in dict.fromkeys(subjects) if s not in self._loaded]
        if not wanted:
            return None
        self._loaded.update(wanted)
        joined = "\n".join(wanted)  # one text split by the server: see PostgresBackend.any_text
        if joined.count("\n") == len(wanted) - 1:
            return curs.execute(self._views.select_states_joined, (_NAMES, joined))
        return curs.execute(self._views.select_states, (_NAMES, wanted))

    def _take_states(self, rows: Cursor | None) -> None:
        for projection, subject, state in rows or ():
            self._states[projection, subject] = bytes(state)

    def scan(self, projection: str) -> Iterator[tuple[str, bytes]]:
        conn = self._curs.connection
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            rows = self._curs.execute(self._views.scan_states, (projection,)).fetchall()
            yield from ((str(s), bytes(d)) for s, d in rows)
            return
        name = f"adminchain_scan_{next(_cursor_names)}"
        with conn.cursor(name, row_factory=tuple_row, binary=True) as server_side:
            server_side.itersize = 2000
            server_side.execute(self._views.scan_states, (projection,))
            for row in server_side:
                yield str(row[0]), bytes(row[1])

    def size(self) -> int:
        if self._log is not None:
            return self._log.size()
        if self._size is None:
            self._size = self._views.backend.recorder.last_position_txn(self._curs)
        return self._size

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        for page in self._views.backend.pages_txn(self._curs, start, stop):
            self.prefetch([*_SHARED_SUBJECTS, *(subject for _, subject, _ in page)])
            for position, _subject, data in page:
                yield position, data

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        self._saves[projection, subject] = data

    def set_tracking(self, position: int) -> None:
        self._new_tracking = position

    def flush(self) -> None:
        """Write the buffered states and tracking position (inside the transaction)."""
        views, curs = self._views, self._curs
        upserts = [(p, s, d) for (p, s), d in self._saves.items() if d is not None]
        deletes = [(p, s) for (p, s), d in self._saves.items() if d is None]
        if upserts:
            curs.execute(views.upsert_states, _columns(upserts, 3))
        if deletes:
            curs.execute(views.delete_states, _columns(deletes, 2))
        if self._new_tracking is not None:
            curs.execute(views.update_tracking, (self._new_tracking, _TRACKING_NAME))
        self._saves.clear()


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as `width` column arrays, for ``unnest``."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


class PostgresViews:
    """The stored views of one PostgreSQL ledger (same schema, same database)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        with backend.connection("create the views' tables") as conn:
            backend.ensure_tables("view_tracking", [backend.sql(s) for s in _DDL], conn)
        sql = backend.sql
        self.select_tracking = sql("SELECT position FROM {schema}.view_tracking WHERE name = %s")
        self.select_tracking_and_size = sql(
            "SELECT (SELECT position FROM {schema}.view_tracking WHERE name = %s),"
            " (SELECT COALESCE(MAX(notification_id), 0) FROM {schema}.{events})"
        )
        self.update_tracking = sql(
            "UPDATE {schema}.view_tracking SET position = %s WHERE name = %s"
        )
        self.select_states = sql(
            "SELECT projection, subject, state FROM {schema}.view_state"
            " WHERE projection = ANY(%s) AND subject = ANY(%s)"
        )
        self.select_states_joined = sql(
            "SELECT projection, subject, state FROM {schema}.view_state"
            " WHERE projection = ANY(%s) AND subject = ANY(string_to_array(%s, E'\\n'))"
        )
        self.scan_states = sql(
            "SELECT subject, state FROM {schema}.view_state WHERE projection = %s ORDER BY subject"
        )
        self.upsert_states = sql(
            "INSERT INTO {schema}.view_state (projection, subject, state)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[])"
            " ON CONFLICT (projection, subject) DO UPDATE SET state = EXCLUDED.state"
        )
        self.delete_states = sql(
            "DELETE FROM {schema}.view_state v USING unnest(%s::text[], %s::text[]) AS d(p, s)"
            " WHERE v.projection = d.p AND v.subject = d.s"
        )

    def catch_up_chunk(
        self,
        limit: int,
        progress: Callable[[int], None] | None = None,
        carry: Carry | None = None,
        verdicts: dict[int, list[Verdict]] | None = None,
    ) -> tuple[int, int]:
        """Fold one chunk in one transaction, holding the tracking row; returns (tracking, size)."""

        def body(curs: Cursor) -> tuple[int, int]:
            txn = _PgViewTxn(self, curs, lock="UPDATE")
            return catch_up_txn(txn, limit, progress, carry, verdicts)

        return self.backend.transaction(body, what="catch up the views")

    def transact(self, fn: Callable[[ViewTxn], T]) -> T:
        """`fn` over the views in one transaction, holding the tracking row."""

        def body(curs: Cursor) -> T:
            txn = _PgViewTxn(self, curs, lock="UPDATE")
            result = fn(txn)
            txn.flush()
            return result

        return self.backend.transaction(body, what="update the views")

    def reader(self) -> Iterator[ViewTxn]:
        """A consistent read snapshot of the views (a generator-based context)."""
        with self.backend.snapshot(what="read the views") as curs:
            yield _PgViewTxn(self, curs)

    def positions(self) -> tuple[int, int]:
        """One statement, outside any transaction: one round trip (a snapshot is three)."""
        return self.backend.read_once(self.tracking_and_size, "read the views' position")

    def tracking_and_size(self, curs: Cursor) -> tuple[int, int]:
        """The tracking position and the log's size, read together on `curs`."""
        row = curs.execute(self.select_tracking_and_size, (_TRACKING_NAME,)).fetchone()
        tracking, size = row or (None, 0)
        return int(tracking or 0), int(size)

    def fold_in(
        self,
        ops: TxnOps,
        limit: int,
        verdicts: dict[int, list[Verdict]] | None = None,
        carry: Carry | None = None,
        given: Sequence[tuple[int, Event]] = (),
    ) -> tuple[int, int]:
        """Fold up to `limit` unfolded events inside a ledger write transaction."""
        own = ops.own()
        if not isinstance(own, PostgresTxnOps):
            raise TypeError(f"PostgreSQL views cannot be written through {type(own).__name__}")
        txn = _PgViewTxn(self, own.cursor, lock="UPDATE", log=own)
        if given:  # what the fold reads first, asked together
            txn.ask([*_SHARED_SUBJECTS, *(event.subject for _, event in given)])
        return catch_up_txn(txn, limit, verdicts=verdicts, carry=carry, given=given)

    def over(self, ops: TxnOps) -> ViewTxn:
        """The views as seen inside a ledger write transaction (for strict appends)."""
        own = ops.own()
        if not isinstance(own, PostgresTxnOps):
            raise TypeError(f"PostgreSQL views cannot be read through {type(own).__name__}")
        return _PgViewTxn(self, own.cursor, lock="SHARE", log=own)

    def reset(self) -> None:
        """Drop every stored state and the tracking position (and the verdicts table of older
        versions); a rebuild follows."""
        truncate = self.backend.sql("TRUNCATE {schema}.view_state")
        drop_old = self.backend.sql("DROP TABLE IF EXISTS {schema}.view_verdicts")

        def body(curs: Cursor) -> None:
            _PgViewTxn(self, curs, lock="UPDATE").tracking()
            curs.execute(truncate)
            curs.execute(drop_old)
            curs.execute(self.update_tracking, (0, _TRACKING_NAME))

        self.backend.transaction(body, what="reset the views")
