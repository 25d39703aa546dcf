"""Reading a PostgreSQL ledger through one snapshot (`PgReads`), and the Merkle tiles it reads.

`PostgresBackend.read_snapshot` gives a `PgReads`: every read of the log, the tree, the
settings and the id index on one cursor inside one REPEATABLE READ transaction, so an audit
compares one consistent state while others append.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg.rows import TupleRow, tuple_row
from psycopg.sql import Composed

from ledger import merkle
from ledger.backend import Index, IndexCheck, ReadOnlySnapshot
from ledger.errors import StorageError

if TYPE_CHECKING:
    from ledger.postgres.backend import PostgresBackend

__all__ = [
    "PAGE",
    "TILE",
    "PgReads",
    "SnapshotNodes",
    "index_check",
    "leaves_of_tiles",
    "node_of_tile",
    "scan_ids",
]

Cursor = psycopg.Cursor[TupleRow]
_scans = itertools.count()

TILE: Final = 32
"""Merkle nodes of one level per ``merkle_tiles`` row: ``hashes`` holds nodes (level,
tile * TILE), (level, tile * TILE + 1), … concatenated, 32 bytes each, the last row of a level
partly filled. One row per 32 nodes keeps a big append's tree to a few thousand rows, and a row
(1 kB) below the size PostgreSQL moves out of line."""
PAGE: Final = 10_000
"""Rows fetched per query when reading the log: bounds memory for logs of any length."""


def node_of_tile(data: bytes | bytearray | None, level: int, index: int) -> bytes:
    """Node (level, index) out of its tile's hashes; `KeyError` if the tile does not hold it."""
    offset, size = index % TILE, merkle.HASH_SIZE
    if data is None or len(data) < (offset + 1) * size:
        raise KeyError((level, index))
    return bytes(data[offset * size : (offset + 1) * size])


def leaves_of_tiles(
    rows: Iterable[tuple[Any, ...]], start: int, stop: int | None
) -> Iterator[tuple[int, bytes]]:
    """(position, leaf hash) from ``(tile, hashes)`` rows of level 0, ascending; a tile may come
    twice (it straddles two pages): its leaves are given once."""
    size, last = merkle.HASH_SIZE, start - 1
    for tile, data in rows:
        first = int(tile) * TILE + 1
        for offset in range(len(data) // size):
            position = first + offset
            if position > last and (stop is None or position <= stop):
                last = position
                yield position, bytes(data[offset * size : (offset + 1) * size])


def scan_ids(backend: PostgresBackend, curs: Cursor) -> Iterator[list[tuple[bytes, int]]]:
    """(id, position) of every row of the id index, streamed inside `curs`'s transaction, in
    lists of up to 10,000 (`Index.scan`)."""
    name = f"adminchain_ids_{next(_scans)}"
    with curs.connection.cursor(name, row_factory=tuple_row, binary=True) as server_side:
        server_side.execute(backend.q["scan_ids"])
        while rows := server_side.fetchmany(10_000):
            yield [(str(event_id).encode(), int(position)) for event_id, position in rows]


def index_check(scan: Callable[[], Iterable[list[tuple[bytes, int]]]]) -> IndexCheck:
    """The id index (the subject index is the events table's primary key, kept by PostgreSQL
    with the very rows it indexes: right by construction)."""
    return IndexCheck([Index("id index", lambda e: (e.id or "").encode(), scan, unique=True)])


class PgReads(ReadOnlySnapshot):
    """The reading half of `PostgresBackend`, on one cursor inside one repeatable-read
    transaction (see `PostgresBackend.read_snapshot`)."""

    kind: Final = "postgres"

    def __init__(self, backend: PostgresBackend, curs: Cursor) -> None:
        self._backend, self._curs = backend, curs
        self.url, self.location = backend.url, backend.location

    def size(self) -> int:
        return self._backend.recorder.last_position_txn(self._curs)

    def _pages(self, statement: Composed, start: int, stop: int | None) -> Iterator[Any]:
        last = self.size() if stop is None else stop
        for low in range(max(start, 1), last + 1, PAGE):
            yield from self._curs.execute(statement, (low, min(last, low + PAGE - 1))).fetchall()

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self._pages(self._backend.q["select_stored"], start, stop)

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        return leaves_of_tiles(self._pages(self._backend.q["select_leaves"], start, stop),
                                start, stop)  # fmt: skip

    def positions_of(self, subject: str, skip: int = 0) -> list[int]:
        rows = self._curs.execute(self._backend.q["select_positions"], (subject, skip))
        return [int(r[0]) for r in rows]

    def positions_of_subjects(self, wanted: Mapping[str, int]) -> dict[str, list[int]]:
        """`positions_of` for many subjects in one query."""
        from ledger.postgres.backend import positions_of_subjects  # noqa: PLC0415

        return positions_of_subjects(self._backend, self._curs, wanted)

    def read_nodes(self) -> merkle.NodeStore:
        return SnapshotNodes(self.read_node)

    def read_node(self, level: int, index: int) -> bytes:
        row = self._curs.execute(self._backend.q["select_tile"], (level, index // TILE)).fetchone()
        return node_of_tile(None if row is None else row[0], level, index)

    def get_meta(self, key: str) -> bytes | None:
        row = self._curs.execute(self._backend.q["get_meta"], (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        rows = self._curs.execute(self._backend.q["meta_items"], (prefix,)).fetchall()
        return [(str(key), bytes(value)) for key, value in rows]

    def checkpoints(self) -> list[tuple[int, str]]:
        rows = self._curs.execute(self._backend.q["checkpoints"]).fetchall()
        return [(int(size), bytes(note).decode() if isinstance(note, bytes | memoryview)
                 else str(note)) for size, note in rows]  # fmt: skip

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[PgReads]:
        yield self

    def index_check(self) -> IndexCheck:
        return index_check(lambda: scan_ids(self._backend, self._curs))

    def wait_beyond(self, position: int, timeout: float) -> bool:
        return self._backend.wait_beyond(position, timeout)


class SnapshotNodes:
    """Merkle nodes read outside a write, one short query each (nodes never change)."""

    def __init__(
        self,
        read_node: Callable[[int, int], bytes],
        read_span: Callable[[int, int, int], bytes] | None = None,
    ) -> None:
        self.get = read_node
        self.get_span = read_span
        """Several nodes of one level at once (`ledger.tiles`), where the reader has it."""

    def put(self, level: int, index: int, digest: bytes) -> None:
        raise StorageError("Merkle nodes are written only by appends")
