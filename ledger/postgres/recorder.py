"""The events table: eventsourcing's PostgreSQL application recorder, with gap-free positions.

eventsourcing takes ``LOCK TABLE … IN EXCLUSIVE MODE`` before inserting, so appenders on every
host are serialised and commit in notification-id order; but it numbers rows from a BIGSERIAL,
and ``nextval`` is not transactional: an append that rolls back (a crash, a lost connection, a
unique violation) burns its numbers and leaves a gap. So positions are allocated here, under the
lock: ``MAX(notification_id) + 1, + 2, …`` written explicitly. A rollback returns its positions
with everything else; the lock, held until commit, keeps commit order = position order. (The
sequence stays, unused.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.postgres.schema import EVENTS_TABLE

__all__ = ["PostgresLedgerRecorder"]


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
        self.notify_statement = SQL("SELECT pg_notify(%s, %s)")
        self.lock_and_size_statement = SQL("; ").join(
            [*self.lock_table_statements, self.last_position_statement]
        )
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

    def lock(self, curs: psycopg.Cursor[Any], *, pipelined: bool = False) -> int:
        """Take the table lock that serialises appenders (held until the transaction ends);
        the log's size under it. One round trip: the lock statements and the size's query go
        as one simple query, or in pipeline mode one after the other unanswered (three round
        trips as separate statements, each a wait under the lock that every appender queues
        behind)."""
        if pipelined:  # pipeline mode takes one statement a query
            for statement in self.lock_table_statements:
                curs.execute(statement, prepare=True)
            return self.last_position_txn(curs)
        curs.execute(self.lock_and_size_statement, prepare=False)
        while curs.nextset():
            continue
        return _position(curs.fetchone())

    def notify(self, curs: psycopg.Cursor[Any], size: int) -> None:
        """Queue a NOTIFY on the recorder's channel announcing the log's new `size` (delivered
        when the transaction commits; `ledger.postgres.listener`)."""
        curs.execute(self.notify_statement, (self.channel_name, str(size)))

    def last_position_txn(self, curs: psycopg.Cursor[Any]) -> int:
        """The highest notification id visible to this transaction (0 when empty)."""
        return _position(curs.execute(self.last_position_statement).fetchone())

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


def _position(row: Any) -> int:
    """The position a ``COALESCE(MAX(notification_id), 0)`` row holds (a tuple or a dict row)."""
    assert row is not None
    return int(row[0] if isinstance(row, tuple) else row["coalesce"])
