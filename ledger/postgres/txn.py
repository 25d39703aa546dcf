"""Inside one write transaction: `PostgresTxnOps`, the backend's `ledger.backend.TxnOps`.

The Merkle tree is maintained inside the appending transaction, not by a follower: the tree of
size n exists exactly when event n does, so any host can serve a checkpoint or a proof as soon
as an append is acknowledged, a crash never leaves events without leaves, and the cost (the
tiles it extends, rewritten: a few rows for a big batch, one or two for a single event) rides
on the same commit. A follower would need its own tracking, could lag, and verification would
race it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from psycopg.rows import tuple_row
from psycopg.sql import Composed

from ledger import merkle
from ledger.errors import StorageError
from ledger.postgres.packing import copy_binary, pack_event, pack_id, pack_tile
from ledger.postgres.schema import Cursor
from ledger.postgres.snapshot import TILE, node_of_tile

if TYPE_CHECKING:
    from ledger.postgres.backend import PostgresBackend

__all__ = ["PostgresTxnOps"]


class _Copier:
    """Runs the COPYs of one write transaction, in order, optionally in a worker thread.

    In the background the server ingests the events and ids while this thread hashes the
    Merkle leaves (the work is server-bound: the socket blocks while the server catches up).
    Every other statement on the connection must `drain` first; `close` always waits.

    `pipelined`: the transaction runs in pipeline mode (a small append: `PostgresBackend.write`),
    which has no COPY; the rows go as INSERTs of arrays instead, queued with every other write
    and sent with the COMMIT, in one round trip.
    """

    def __init__(self, curs: Cursor, *, background: bool, pipelined: bool = False) -> None:
        self._curs = curs
        self.pipelined = pipelined
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

    def __init__(
        self, backend: PostgresBackend, curs: Cursor, copier: _Copier, size: int, *, ask: bool
    ):
        """`ask`: the right edge's query is sent now and read by `take`, after whatever else
        the caller sends meanwhile (in pipeline mode, all of it in one round trip)."""
        self._backend, self._curs, self._copier = backend, curs, copier
        self._tiles: dict[tuple[int, int], bytearray] = {}
        self._stored: set[tuple[int, int]] = set()  # tiles that have a row already
        self._changed: set[tuple[int, int]] = set()
        self._asked: Cursor | None = None
        partial = [
            (level, (size >> level) // TILE)
            for level in range(size.bit_length())
            if (size >> level) % TILE
        ]
        if partial:
            levels, tiles = zip(*partial, strict=True)
            self._asked = curs.connection.cursor(row_factory=tuple_row).execute(
                backend.q["select_tiles"], (list(levels), list(tiles))
            )
        if not ask:
            self.take()

    def take(self) -> None:
        """Read the right edge asked for when this was made."""
        asked, self._asked = self._asked, None
        if asked is not None:
            for level, tile, data in asked.fetchall():
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
        if self._copier.pipelined:  # one upsert, queued (pipeline mode has no COPY)
            changed = sorted(self._changed)
            self._curs.execute(
                self._backend.q["upsert_tiles"],
                (
                    [level for level, _ in changed],
                    [tile for _, tile in changed],
                    [bytes(self._tiles[key]) for key in changed],
                ),
            )
            self._stored |= self._changed
            self._changed = set()
            return
        replaced = sorted(self._changed & self._stored)
        if replaced:
            self._copier.drain()
            levels, tiles = zip(*replaced, strict=True)
            self._curs.execute(self._backend.q["delete_tiles"], (list(levels), list(tiles)))
        rows = [
            pack_tile(level, tile, self._tiles[level, tile])
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

    def __init__(
        self,
        backend: PostgresBackend,
        curs: Cursor,
        size: int,
        *,
        background: bool = False,
        pipelined: bool = False,
    ):
        self.cursor: Cursor = curs
        self._backend = backend
        self._copier = _Copier(curs, background=background, pipelined=pipelined)
        self._size = size  # under the appenders' lock (`PostgresLedgerRecorder.lock`)
        self._known: dict[str, int | None] = {}
        self._versions: dict[str, int] = {}
        self._nodes = _TxnNodes(backend, curs, self._copier, self._size, ask=pipelined)
        self._last: list[tuple[int, bytes]] | None = None  # the log's last event, if asked for
        self._meta: dict[str, bytes | None] = {}
        self.appended = 0

    def ask(self, subjects: Sequence[str], meta: Sequence[str]) -> None:
        """Read everything an append reads before it writes at once: the tree's right edge,
        the log's last event (its time bounds the batch's), the settings `meta` and the last
        version of each of `subjects`. In pipeline mode the queries go out together and come
        back in one round trip (four, one after the other)."""
        conn, size = self.cursor.connection, self._size
        last = None
        if size:
            last = conn.cursor(row_factory=tuple_row, binary=True).execute(
                self._backend.q["select_stored"], (size, size)
            )
        settings = {
            key: conn.cursor(row_factory=tuple_row).execute(self._backend.q["get_meta"], (key,))
            for key in meta
        }
        wanted = [s for s in dict.fromkeys(subjects) if s not in self._versions]
        versions = None
        if wanted:
            versions = conn.cursor(row_factory=tuple_row).execute(
                *self._backend.any_text("select_versions", wanted)
            )
        self._nodes.take()
        if last is not None:
            self._last = [(int(p), bytes(data)) for p, data in last.fetchall()]
        for key, found in settings.items():
            row = found.fetchone()
            self._meta[key] = None if row is None else bytes(row[0])
        self._versions.update(dict.fromkeys(wanted, 0))
        if versions is not None:
            for subject, version in versions:
                self._versions[subject] = int(version)

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
        if self._copier.pipelined:
            positions = list(range(first, first + len(rows)))
            self.cursor.execute(
                self._backend.q["insert_events"],
                (
                    [row[0] for row in rows],
                    [version for _, version, _ in numbered],
                    [row[1] for row in rows],
                    [row[3] for row in rows],
                    positions,
                ),
            )
            self.cursor.execute(self._backend.q["insert_ids"], (ids, positions))
            self._size += len(rows)
            self.appended += len(rows)
            return positions
        in_key_order = sorted(range(len(ids)), key=ids.__getitem__)  # B-tree filled in order
        # Rows are packed as the COPY streams (in the worker, for big batches), so the server
        # starts ingesting at once rather than after the whole batch is packed.
        events = (pack_event(r[0], v, r[1], r[3], p) for p, v, r in numbered)
        id_rows = (pack_id(ids[k], first + k) for k in in_key_order)
        self._copier.copy(self._backend.recorder.copy_events_statement, events)
        self._copier.copy(self._backend.q["copy_ids"], id_rows)
        self._size += len(rows)
        self.appended += len(rows)
        return list(range(first, self._size + 1))

    def nodes(self) -> merkle.NodeStore:
        return self._nodes

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        last = self._last
        if last is not None and start == stop and [p for p, _ in last] == [start]:
            yield from last  # asked for up front (`ask`)
            return
        self._copier.drain()
        for page in self._backend.pages_txn(self.cursor, start, stop):
            for position, _subject, data in page:
                yield position, data

    def get_meta(self, key: str) -> bytes | None:
        if key in self._meta:  # asked for up front (`ask`); `put_meta` keeps it current
            return self._meta[key]
        self._copier.drain()
        row = self.cursor.execute(self._backend.q["get_meta"], (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        self._copier.drain()
        self.cursor.execute(self._backend.q["put_meta"], (key, value))
        self._meta[key] = value

    def flush(self) -> None:
        """Write the buffered Merkle rows and wait for every COPY (before commit)."""
        self._nodes.flush()
        self._copier.drain()

    def close(self) -> None:
        """Wait for any COPY still running (the transaction is ending, well or not)."""
        self._copier.close()
