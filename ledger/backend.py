"""What a storage backend must provide, and the append logic every backend shares.

A backend (LMDB, PostgreSQL) offers one primitive: run a function inside one durable, serialised
write transaction, with a small set of table operations (`TxnOps`). Everything that decides what
an append means — idempotency by `id`, gap-free positions, the Merkle leaves and frontier, strict
preconditions — is written once here, in `apply_requests`, so both backends behave the same.

Group commit: `GroupCommitter` lets concurrent appenders in one process share one transaction
and therefore one flush; each request stays atomic on its own (a refused request writes nothing,
the others still commit).
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol, cast

import msgspec

from ledger import merkle
from ledger.codec import decode_record, encode_record, leaf_hashes, recorded_at_of
from ledger.errors import LedgerError, StorageError
from ledger.events import Event

__all__ = [
    "TRUST_HISTORY_KEY",
    "AppendRequest",
    "Appended",
    "GroupCommitter",
    "Index",
    "IndexCheck",
    "LogBackend",
    "Precondition",
    "Stage",
    "StagedOps",
    "TxnOps",
    "apply_chunks",
    "apply_requests",
    "last_recorded_at",
    "positions_of_subjects",
    "start_source",
    "stored_event",
]

TRUST_HISTORY_KEY: Final = "trust_history"
"""The ledger setting holding the trust changes applied so far, derived from the log's `TrustKey`
and `RevokeKey` events in the transaction that appends them (`ledger.trust`). Every append
reads it: a backend that reads ahead asks for it with the rest (`ledger.postgres`)."""


@dataclass(frozen=True, slots=True)
class Appended:
    """The result of appending one event: its position, its id, and whether it was a repeat."""

    position: int
    id: str
    duplicate: bool


class TxnOps(Protocol):
    """Table operations inside one write transaction of a backend."""

    def own(self) -> TxnOps:
        """The backend's own operations on this transaction (`LMDBTxnOps`, `PostgresTxnOps`),
        with everything held back written first: what a view store of the same backend reads
        the views through, inside the append's transaction (strict appends)."""

    def size(self) -> int:
        """The number of events in the log as seen by this transaction."""

    def lookup_id(self, event_id: str) -> int | None:
        """The position of the event with this id, if stored."""

    def insert(self, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        """Store (subject, type, id, stored bytes) rows; returns positions size+1, size+2, …"""

    def nodes(self) -> merkle.NodeStore:
        """The Merkle node table, read and written within this transaction."""

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Stored bytes for positions start..stop (inclusive) within this transaction."""

    def get_meta(self, key: str) -> bytes | None:
        """A ledger-wide setting (see `LogBackend.get_meta`) as seen by this transaction."""

    def put_meta(self, key: str, value: bytes) -> None:
        """Set a ledger-wide setting within this transaction (derived records kept in step with
        the log, such as the trust record of `ledger.trust`)."""


class BulkChunk(Protocol):
    """One chunk of a big append, prepared (see `ledger.bulk.Chunk`)."""

    @property
    def rows(self) -> list[tuple[str, str, str, bytes]]:
        """(subject, type, id, stored bytes) of each event."""

    def minted_ids(self) -> frozenset[str]:
        """The ids the ledger made (fresh: not looked up)."""


Precondition = Callable[[TxnOps, Sequence[Event]], None]
"""Called under the write lock before a request's events are written; raises to refuse them."""


@dataclass(slots=True)
class AppendRequest:
    """One atomic batch waiting to be written, and, once written, its outcome."""

    events: Sequence[Event]
    recorded_at: datetime
    precondition: Precondition | None = None
    result: list[Appended] | None = None
    error: BaseException | None = None
    done: bool = False
    encoded: list[bytes] = field(default_factory=list)
    minted: frozenset[str] = frozenset()
    """Ids the ledger generated for this request: fresh UUIDs (`new_ids`), not looked up."""
    verbatim: bool = False
    """Store `encoded` as given (a copy of another log): `recorded_at` is not raised."""
    after: Callable[[TxnOps], None] | None = None
    """Runs inside the same transaction once every request's rows are written (each distinct
    hook once per transaction): derived data kept current in the append's own commit."""
    wake: threading.Lock = field(default_factory=threading.Lock)
    """What its appender sleeps on while another thread writes it (see `GroupCommitter`)."""
    source: Callable[[], Iterator[BulkChunk]] | None = None
    """A big append (`ledger.bulk`): its chunks, read anew each time the transaction runs. Such
    a request is written in a transaction of its own (`Ledger.append_bulk` does not go through
    the group commit), since a refusal aborts the whole transaction."""
    check_chunk: Callable[[TxnOps, BulkChunk], None] | None = None
    """`source`'s precondition: called under the write lock with each chunk before it is stored."""
    on_chunk: Callable[[BulkChunk | None, list[Appended]], None] | None = None
    """Told each stored chunk of `source` and its results (None first: the transaction starts)."""
    after_chunk: Callable[[TxnOps | None, list[Appended]], None] | None = None
    """Runs inside the transaction once each chunk of `source` is written, with its results
    (before `on_chunk`); told (None, []) first, each time the transaction (re)starts. Derived
    data kept current in the big append's own commit (the stored views: `Views.append_spooled`)."""

    spooled: int = 0
    """How many events `source` holds."""
    stageable: bool = False
    """Whether `source` may be committed in several transactions kept invisible until the last
    (a `Stage`; LMDB does so beyond `ledger.bulk.COMMIT` events). Not with a precondition that
    reads the stored views through the transaction (a strict append): it needs them current."""

    @property
    def rows(self) -> int:
        """How many events the request holds."""
        return len(self.events) if self.source is None else self.spooled

    def encode(self) -> None:
        """Encode outside the write lock: the lock is held only for the table work."""
        if not self.encoded:
            self.encoded = [encode_record(e, self.recorded_at) for e in self.events]


def apply_requests(ops: TxnOps, requests: Sequence[AppendRequest]) -> None:
    """Write each request inside the caller's transaction, in order.

    A request whose precondition raises a `LedgerError` gets that error and writes nothing; any
    other exception aborts the whole transaction (the caller retries or reports it to all). The
    rows of every request are stored together at the end (one insert, one tree update): see
    `_Pending` for how a precondition still sees the requests before its own.
    """
    pending = _Pending(ops)
    floor = last_recorded_at(ops)
    for request in requests:
        if request.source is not None:
            _apply_source(pending, request, floor)
            if floor is None or request.recorded_at > floor:
                floor = request.recorded_at
            continue
        request.encode()
        request.result, request.error = None, None
        if floor is not None and request.recorded_at < floor and not request.verbatim:
            # recorded_at never decreases along the log, whatever the appending host's clock
            # says: the later of its clock and the previous event's (so `--as-of TIME` is exact)
            request.recorded_at = floor
            request.encoded = [encode_record(e, floor) for e in request.events]
        if request.precondition is not None:
            try:
                request.precondition(pending, request.events)
            except LedgerError as e:
                request.error = e
                continue
        request.result = pending.add(request)
        if floor is None or request.recorded_at > floor:
            floor = request.recorded_at
    pending.flush()
    hooks = {id(r.after): r.after for r in requests if r.after is not None and r.result}
    for hook in hooks.values():
        hook(pending)


def positions_of_subjects(backend: LogBackend, wanted: Mapping[str, int]) -> dict[str, list[int]]:
    """`LogBackend.positions_of` for each subject of `wanted` (with its skip): in one query
    where the backend can (PostgreSQL: ``positions_of_subjects``), else one call a subject
    (an LMDB index range scan each, in process)."""
    many = getattr(backend, "positions_of_subjects", None)
    if many is not None:
        found: dict[str, list[int]] = many(wanted)
        return found
    return {subject: backend.positions_of(subject, skip) for subject, skip in wanted.items()}


def stored_event(position: int, stored: bytes) -> Event:
    """The event of stored bytes; corruption surfaces as a `StorageError` naming the position."""
    try:
        return decode_record(stored).event
    except msgspec.DecodeError as e:
        raise StorageError(f"position {position}: stored event cannot be decoded ({e})") from e


def last_recorded_at(ops: TxnOps) -> datetime | None:
    """The `recorded_at` of the log's last event, as this write transaction sees it."""
    size = ops.size()
    for _, stored in ops.read_stored(size, size) if size else ():
        try:
            return recorded_at_of(stored)
        except msgspec.DecodeError as e:
            raise StorageError(f"position {size}: stored event cannot be decoded ({e})") from e
    return None


def _apply_source(pending: _Pending, request: AppendRequest, floor: datetime | None) -> None:
    """Store a big append chunk by chunk in the caller's transaction (`ledger.bulk`).

    `check_chunk` gets each chunk before it is stored, and a refusal propagates: the chunks
    before are already in the transaction, so only aborting it keeps the append all or nothing.
    Like any request, its events are recorded no earlier than the log's last one (`floor`).
    """
    assert request.source is not None
    start_source(request)
    for chunk in request.source():
        store_chunk(pending, request, chunk, floor)


def start_source(request: AppendRequest) -> None:
    """A big append's write (re)starts: its hooks are told to forget what they kept."""
    request.result, request.error = [], None
    if request.after_chunk is not None:
        request.after_chunk(None, [])
    if request.on_chunk is not None:
        request.on_chunk(None, [])


def apply_chunks(
    ops: TxnOps, request: AppendRequest, chunks: Sequence[BulkChunk], floor: datetime | None
) -> None:
    """Store some chunks of a big append in one transaction of a staged write (see `Stage`;
    `ops` is a `StagedOps`), as `_apply_source` stores them all in one."""
    pending = _Pending(ops)
    for chunk in chunks:
        store_chunk(pending, request, chunk, floor)


def store_chunk(
    pending: _Pending, request: AppendRequest, chunk: BulkChunk, floor: datetime | None
) -> None:
    """Check and store one chunk of a big append in `pending`'s transaction, then run its hooks
    (`check_chunk` before, `after_chunk` and `on_chunk` after)."""
    if request.check_chunk is not None:
        request.check_chunk(pending, chunk)
    minted = chunk.minted_ids()
    rows = chunk.rows
    if floor is not None and request.recorded_at < floor:
        rows = [(s, t, i, encode_record(decode_record(b).event, floor)) for s, t, i, b in rows]
    if pending.can_prefetch:
        pending.prefetch_ids([row[2] for row in rows if row[2] not in minted])
    appended = pending.add_rows(rows, minted)
    pending.flush()
    if request.after_chunk is not None:
        request.after_chunk(pending, appended)
    if request.on_chunk is not None:
        request.on_chunk(chunk, appended)


@dataclass(slots=True)
class Stage:
    """What a big append committed in several transactions (staged, see
    `AppendRequest.stageable`) holds back until its last one, which makes it visible at once:
    the settings its chunks set (the trust record) and the derived data its hooks keep (the
    stored views' new states, in `slots`), each written by a finisher in that last transaction.
    Until then the stored settings and views stay as they were before the append, as readers
    must see them."""

    meta: dict[str, bytes] = field(default_factory=dict)
    """Settings set by the append, not yet written."""
    slots: dict[str, object] = field(default_factory=dict)
    """What a hook keeps across the append's transactions, by the hook's own name."""
    finishers: dict[str, Callable[[TxnOps], None]] = field(default_factory=dict)
    """Run in the last transaction (with the backend's operations), by a hook's name."""

    def finish(self, ops: TxnOps) -> None:
        """Write what was held back, inside the transaction that makes the append visible."""
        for finisher in self.finishers.values():
            finisher(ops)
        for key, value in self.meta.items():
            ops.put_meta(key, value)


class StagedOps:
    """A backend's `TxnOps` for one transaction of a staged big append: settings are read and
    set through its `Stage` (held back until the last transaction); all else goes to `ops`."""

    def __init__(self, ops: TxnOps, stage: Stage) -> None:
        self._ops = ops
        self.stage = stage

    def own(self) -> TxnOps:
        return self._ops.own()

    def size(self) -> int:
        return self._ops.size()

    def lookup_id(self, event_id: str) -> int | None:
        return self._ops.lookup_id(event_id)

    def insert(self, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        return self._ops.insert(rows)

    def nodes(self) -> merkle.NodeStore:
        return self._ops.nodes()

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._ops.read_stored(start, stop)

    def get_meta(self, key: str) -> bytes | None:
        held = self.stage.meta.get(key)
        return held if held is not None else self._ops.get_meta(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self.stage.meta[key] = value


class _Pending:
    """A `TxnOps` over the caller's, holding rows back until `flush` writes them all at once.

    Positions are known before the rows are written (the next ones after the transaction's
    size), so `size` and `lookup_id` answer for the pending rows too. Whatever reads the stored
    log or tree itself (`read_stored`, `nodes`, or `own`, the backend's operations, which a strict
    precondition folds the views through) first writes the pending rows, so it sees them.
    """

    def __init__(self, ops: TxnOps) -> None:
        self._ops = ops
        self.stage: Stage | None = getattr(ops, "stage", None)
        """The staged append this transaction is a part of (see `Stage`), if any."""
        self._size = ops.size()
        self._rows: list[tuple[str, str, str, bytes]] = []
        self._ids: dict[str, int] = {}
        self._meta: dict[str, bytes | None] = {}

    def own(self) -> TxnOps:
        self.flush()
        return self._ops.own()

    def size(self) -> int:
        return self._size + len(self._rows)

    def lookup_id(self, event_id: str) -> int | None:
        position = self._ids.get(event_id)
        return position if position is not None else self._ops.lookup_id(event_id)

    def insert(self, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        first = self.size() + 1
        self._rows.extend(rows)
        positions = list(range(first, first + len(rows)))
        self._ids.update(zip((row[2] for row in rows), positions, strict=True))
        return positions

    def nodes(self) -> merkle.NodeStore:
        self.flush()
        return self._ops.nodes()

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        self.flush()
        return self._ops.read_stored(start, stop)

    @property
    def can_prefetch(self) -> bool:
        """Whether the backend looks up many ids at once faster than one by one (PostgreSQL)."""
        return hasattr(self._ops, "prefetch_ids")

    def prefetch_ids(self, event_ids: Sequence[str]) -> None:
        """Look up many ids at once where the backend can (see `can_prefetch`)."""
        prefetch = getattr(self._ops, "prefetch_ids", None)
        if prefetch is not None and event_ids:
            prefetch(event_ids)

    def get_meta(self, key: str) -> bytes | None:
        # Read each setting once per transaction; `put_meta` keeps the copy current.
        if key not in self._meta:
            self._meta[key] = self._ops.get_meta(key)
        return self._meta[key]

    def put_meta(self, key: str, value: bytes) -> None:
        self._meta[key] = value
        self._ops.put_meta(key, value)

    def add(self, request: AppendRequest) -> list[Appended]:
        """Queue a request's new events (see `add_rows`)."""
        ids = cast("list[str]", [e.id for e in request.events])
        assert None not in ids, "the Ledger assigns ids before appending"
        rows = [
            (e.subject, type(e).__name__, i, stored)
            for e, i, stored in zip(request.events, ids, request.encoded, strict=True)
        ]
        return self.add_rows(rows, request.minted)

    def add_rows(
        self, rows: list[tuple[str, str, str, bytes]], minted: frozenset[str]
    ) -> list[Appended]:
        """Queue (subject, type, id, stored bytes) rows; a repeated id (stored, pending, or
        earlier in the same rows) reports its original position as a duplicate. Ids in
        `minted` were just made by the ledger: they are new without a look-up."""
        ids = [row[2] for row in rows]
        lookup = self.lookup_id
        if len(set(ids)) == len(ids) and all(i in minted or lookup(i) is None for i in ids):
            positions = self.insert(rows)
            return [Appended(p, i, duplicate=False) for p, i in zip(positions, ids, strict=True)]
        result: list[Appended] = []
        for row in rows:
            original = lookup(row[2])
            if original is not None:
                result.append(Appended(original, row[2], duplicate=True))
                continue
            (position,) = self.insert([row])
            result.append(Appended(position, row[2], duplicate=False))
        return result

    def flush(self) -> None:
        """Store the pending rows at their positions and add their Merkle leaves."""
        rows, self._rows, self._ids = self._rows, [], {}
        if not rows:
            return
        size = self._size
        positions = self._ops.insert(rows)
        if positions[0] != size + 1:
            raise LedgerError(f"positions must follow {size}, got {positions[0]}")
        self._size += len(rows)
        leaves = leaf_hashes(zip(positions, [row[3] for row in rows], strict=True))
        merkle.append_leaves(self._ops.nodes(), size, leaves)


@dataclass(frozen=True, slots=True)
class Index:
    """An index a backend keeps beside the log: the key it stores for an event, and a scan of
    its (key, position) entries, in lists of some thousands (the check hashes and sums each
    list in C). Derived from the log, so `IndexCheck` can check it."""

    name: str
    key: Callable[[Event], bytes]
    scan: Callable[[], Iterable[list[tuple[bytes, int]]]]
    unique: bool = False
    """One entry per key (the id index): an event whose key another holds is a repeat."""


_MODULUS: Final = 1 << 64
_position: Final = operator.itemgetter(1)
"""The position of an index entry (key, position)."""


class IndexCheck:
    """Checks a backend's indexes against the log, in one pass over the log and one scan each.

    `add` is called for every event of the log in order (verify does, as it decodes them); it
    sums a hash of each (key, position) the index must hold. `problem` scans each index and sums
    what it holds the same way: equal counts and sums mean the index is exactly what the log
    implies (a multiset hash, O(1) memory). When they differ, a second look names the entry.
    The hash is Python's own, keyed afresh in every process (SipHash): both sums are made here,
    and nobody outside can aim damage at a collision.
    """

    def __init__(self, indexes: Sequence[Index]) -> None:
        self._indexes = indexes
        self._keys = [index.key for index in indexes]
        self._sums = [0] * len(indexes)
        self._count = 0

    def add(self, position: int, event: Event) -> None:
        """Account for the event at `position` (every position, in order)."""
        self._count += 1
        sums = self._sums
        for i, key in enumerate(self._keys):
            sums[i] += hash((key(event), position))

    def add_run(self, first: int, events: Sequence[Event]) -> None:
        """`add` for the events at positions first, first + 1, … (one pass per index, the
        hashing and summing in C)."""
        self._count += len(events)
        positions = range(first, first + len(events))
        sums = self._sums
        for i, key in enumerate(self._keys):
            sums[i] += sum(map(hash, zip(map(key, events), positions, strict=True)))

    def problem(self, event_at: Callable[[int], Event]) -> str | None:
        """What is wrong with the first index that does not match the log (None: all match)."""
        size = self._count
        for index, expected in zip(self._indexes, self._sums, strict=True):
            count, total = 0, 0
            for chunk in index.scan():  # hashed and summed in C
                if not chunk:
                    continue
                count += len(chunk)
                total += sum(map(hash, chunk))
                if min(map(_position, chunk)) < 1 or max(map(_position, chunk)) > size:
                    position = next(p for _, p in chunk if not 1 <= p <= size)
                    return f"the {index.name} names position {position}, beyond the log ({size})"
            if count != size or total % _MODULUS != expected % _MODULUS:
                return self._locate(index, event_at, size)
        return None

    @staticmethod
    def _locate(index: Index, event_at: Callable[[int], Event], size: int) -> str:
        seen = bytearray(size + 1)
        holder: dict[bytes, int] = {}
        for key, position in itertools.chain.from_iterable(index.scan()):
            if seen[position]:
                return f"the {index.name} has two entries for position {position}"
            seen[position] = 1
            holder[key] = position
            if index.key(event_at(position)) != key:
                return f"the {index.name} entry for position {position} names another event"
        missing = seen.find(0, 1)
        if missing > 0:
            other = holder.get(index.key(event_at(missing))) if index.unique else None
            if other is not None:  # the key is there, for another position
                return (
                    f"the event at position {missing} repeats the key of position {other} in "
                    f"the {index.name} (stored twice)"
                )
            return f"the {index.name} has no entry for position {missing}"
        return f"the {index.name} does not match the log"  # pragma: no cover  (a hash collision)


class ReadOnlySnapshot:
    """What a backend's snapshot reader (`LogBackend.read_snapshot`) refuses: it only reads."""

    read_only = True

    def _refuse(self) -> StorageError:
        return StorageError("a snapshot of the ledger is read-only")

    def rebuild_indexes(self) -> int:
        raise self._refuse()

    def write(self, requests: Sequence[AppendRequest]) -> None:
        raise self._refuse()

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        raise self._refuse()

    def put_checkpoint(self, size: int, note: str) -> None:
        raise self._refuse()

    def close(self) -> None:
        """Nothing to release: the snapshot ends with its `read_snapshot` block."""


class LogBackend(Protocol):
    """A durable, totally ordered event log with a Merkle tree, as the `Ledger` facade uses it.

    Every failure reaches the caller as a `LedgerError` (a closed backend's included): storage
    errors are translated inside the backend. The contract every backend meets is
    `tests/contract.py`, run on each backend (docs/architecture.md, "The backend seam").
    """

    @property
    def kind(self) -> str:
        """The backend's name (``lmdb``, ``postgres``): how `projections.api` finds the stored
        views that live beside this log (`ledger` knows nothing of projections)."""

    url: str
    read_only: bool
    """Opened for reading only (an archived ledger): writes raise `StorageError`."""
    location: str
    """What `ledger.ledger.open_backend` needs to open this ledger again, from another process
    (a path, or the URL with its password: unlike `url`, not for messages)."""

    def write(self, requests: Sequence[AppendRequest]) -> None:
        """Run `apply_requests` for these requests in ONE durable transaction (retrying it whole
        on a transient storage condition). Raises on failure: then nothing was written."""

    def size(self) -> int:
        """The number of committed events."""

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Committed (position, stored bytes) from `start` to `stop` (inclusive) or the end."""

    def positions_of(self, subject: str, skip: int = 0) -> list[int]:
        """The positions of every event about `subject`, ascending, leaving out its first
        `skip` events (one index range scan either way: a reader that has seen a subject's
        first `skip` events asks only for the rest)."""

    def read_nodes(self) -> merkle.NodeStore:
        """Merkle nodes as committed (the tree of `size()` at the time of the call or later)."""

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Stored (position, leaf hash) pairs from `start` on, in order: what verify compares."""

    def index_check(self) -> IndexCheck:
        """A check of every index this backend keeps beside the log (see `IndexCheck`)."""

    def rebuild_indexes(self) -> int:
        """Rebuild every index from the log (and nothing else); returns the events indexed."""

    def read_snapshot(self) -> AbstractContextManager[LogBackend]:
        """This backend's reads pinned to one consistent snapshot of what is committed now
        (one read transaction), for as long as the block lasts; writes through it raise."""

    def get_meta(self, key: str) -> bytes | None:
        """A small ledger-wide setting (the origin, trusted operator keys), or None."""

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        """Store a ledger-wide setting durably (with `replace=False`, only if it is absent)."""

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every setting whose key starts with `prefix`, by key (e.g. the server's tokens)."""

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block until the log is longer than `position` or `timeout` seconds passed."""

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store a checkpoint note for a tree size (replacing an older note of the same size)."""

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored checkpoint note, by ascending size."""

    def close(self) -> None:
        """Release the backend's resources."""


class GroupCommitter:
    """Lets concurrent appenders in one process share a transaction, and so one flush.

    The first appender to arrive while nobody writes becomes the leader: it takes every queued
    request and writes them together; the others sleep until their request is done. Each
    request's outcome is its own (its result, or its error). When the leader is done, it wakes
    the appenders of its batch, and hands the lead to the first request queued meanwhile.

    Every waiting appender sleeps on a lock of its own (`AppendRequest.wake`), so that waking a
    batch of them is one release each, not a herd contending for one condition's lock.

    Appenders whose request was in the batch just committed are usually about to append again
    (threads appending one event at a time): a new leader waits up to `gather_window` for them
    to queue, so that they share its flush instead of forming the next one. A lone appender, or
    one arriving after a quiet moment, never waits.
    """

    gather_window: float = 0.0002
    """Seconds a leader may wait for the appenders of the batch just committed."""

    def __init__(self, write: Callable[[Sequence[AppendRequest]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[AppendRequest] = []
        self._queued_by: set[int] = set()
        self._leading = False
        self._gathering: threading.Lock | None = None  # released when the gather is complete
        self._last_by: set[int] = set()  # threads whose requests were in the last batch
        self._last_done = 0.0  # when the last batch was done (time.monotonic)

    def submit(self, request: AppendRequest) -> list[Appended]:
        """Queue `request`, wait until it is durable (or refused), and return its result."""
        request.encode()
        wake = request.wake
        wake.acquire()  # released by the leader: the request is done, or this thread leads
        with self._lock:
            self._queue.append(request)
            self._queued_by.add(threading.get_ident())
            gathering = self._gathering
            if gathering is not None and self._last_by <= self._queued_by:
                self._gathering = None
                gathering.release()
            lead = not self._leading
            self._leading = True
        if not lead:
            wake.acquire()
            if not request.done:  # handed the lead
                lead = True
        if lead:
            self._lead(request)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self, request: AppendRequest) -> None:
        """Write every queued request (`request`'s among them), wake their appenders, and hand
        the lead to the first request queued meanwhile, if any."""
        self._gather()
        with self._lock:
            batch, self._queue = self._queue, []
            batch_by, self._queued_by = self._queued_by, set()
        try:
            self._write_isolated(batch)
        finally:
            with self._lock:
                for r in batch:
                    r.done = True
                self._last_by = batch_by
                self._last_done = time.monotonic()
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for r in batch:
                if r is not request:
                    r.wake.release()
            if successor is not None:
                successor.wake.release()

    def _gather(self) -> None:
        """As the new leader: wait briefly for the last batch's appenders to queue."""
        with self._lock:
            start = time.monotonic()
            if start - self._last_done >= self.gather_window or self._last_by <= self._queued_by:
                return
            gate = self._gathering = threading.Lock()
            gate.acquire()
        gate.acquire(timeout=self.gather_window - (start - self._last_done))
        with self._lock:
            if self._gathering is gate:
                self._gathering = None

    def _write_isolated(self, batch: list[AppendRequest]) -> None:
        write_isolated(self._write, batch)


def write_isolated(
    write: Callable[[Sequence[AppendRequest]], None], batch: Sequence[AppendRequest]
) -> None:
    """Write the batch in one transaction; if that fails, each request alone, so that one
    request that cannot be written (too large for the map, say) fails only itself. Each
    request's outcome is left on it (`result` or `error`); nothing is raised."""
    try:
        write(batch)
    except BaseException as e:  # noqa: BLE001  handed to the requests' owners, who re-raise it
        if len(batch) > 1 and isinstance(e, Exception):
            for r in batch:
                write_isolated(write, [r])
            return
        for r in batch:
            if r.error is None:
                r.error = e
            r.result = None
