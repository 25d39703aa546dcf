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

Big appends write events, ids and nodes with binary COPY. Small ones (the server's: a request
or a few a transaction) run in psycopg's pipeline mode, where a statement whose result is not
read costs no round trip: the lock and the size go out with BEGIN, everything the append reads
before writing is asked for at once, and the writes (INSERTs of arrays; pipeline mode has no
COPY) go out with COMMIT, four round trips in all. Under load every round trip waits for the
server's process to get a core, with the appenders' lock held. Reads page through the
notification-id index. Transient failures (serialisation, deadlock, lost connection) re-run the
whole transaction: every event has an id, so a retry after an ambiguous commit stores nothing
twice. `wait_beyond` wakes on the recorder's NOTIFY through a LISTEN connection (the payload is
the log's new size, so waiters need not ask), polling while it is down.

The package, by concern: `target` (the URL), `schema` (tables, layout version, statements),
`packing` (binary COPY rows), `recorder` (the events table), `txn` (inside a write: ids, events,
Merkle tiles), `backend` (`PostgresBackend`: connections, retries, reads, writes), `snapshot`
(reads through one snapshot, the tiles), `listener` (NOTIFY), `errors` (what a failure means).
"""

from __future__ import annotations

from ledger.postgres.backend import PostgresBackend
from ledger.postgres.schema import EVENTS_TABLE, Cursor
from ledger.postgres.snapshot import PAGE
from ledger.postgres.target import DEFAULT_SCHEMA, PgTarget, parse_url
from ledger.postgres.txn import PostgresTxnOps

__all__ = [
    "DEFAULT_SCHEMA",
    "EVENTS_TABLE",
    "PAGE",
    "Cursor",
    "PgTarget",
    "PostgresBackend",
    "PostgresTxnOps",
    "parse_url",
]
