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

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol, cast

from ledger import merkle
from ledger.codec import encode_record
from ledger.errors import LedgerError
from ledger.events import Event

__all__ = [
    "AppendRequest",
    "Appended",
    "GroupCommitter",
    "LogBackend",
    "Precondition",
    "TxnOps",
    "apply_requests",
]


@dataclass(frozen=True, slots=True)
class Appended:
    """The result of appending one event: its position, its id, and whether it was a repeat."""

    position: int
    id: str
    duplicate: bool


class TxnOps(Protocol):
    """Table operations inside one write transaction of a backend."""

    raw: object
    """The backend's own transaction handle (an lmdb.Transaction, a psycopg cursor)."""

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
    """Ids the ledger generated for this request: fresh random UUIDs, not looked up."""

    def encode(self) -> None:
        """Encode outside the write lock: the lock is held only for the table work."""
        if not self.encoded:
            self.encoded = [encode_record(e, self.recorded_at) for e in self.events]


def apply_requests(ops: TxnOps, requests: Sequence[AppendRequest]) -> None:
    """Write each request inside the caller's transaction, in order.

    A request whose precondition raises a `LedgerError` gets that error and writes nothing; any
    other exception aborts the whole transaction (the caller retries or reports it to all).
    """
    for request in requests:
        request.encode()
        request.result, request.error = None, None
        if request.precondition is not None:
            try:
                request.precondition(ops, request.events)
            except LedgerError as e:
                request.error = e
                continue
        events, encoded = request.events, request.encoded
        ids = cast("list[str]", [e.id for e in events])
        assert None not in ids, "the Ledger assigns ids before appending"
        lookup, minted = ops.lookup_id, request.minted
        if len(set(ids)) == len(ids) and all(  # all new (ids the ledger just minted are)
            i in minted or lookup(i) is None for i in ids
        ):
            new_rows = [
                (e.subject, type(e).__name__, i, stored)
                for e, i, stored in zip(events, ids, encoded, strict=True)
            ]
            positions = _insert(ops, new_rows)
            request.result = [
                Appended(p, i, duplicate=False) for p, i in zip(positions, ids, strict=True)
            ]
            continue
        seen: dict[str, int] = {}
        rows: list[tuple[str, str, str, bytes]] = []
        slots: list[tuple[str, int | None]] = []
        for event, stored in zip(events, encoded, strict=True):
            event_id = event.id
            assert event_id is not None, "the Ledger assigns ids before appending"
            original = seen.get(event_id)
            if original is None:
                original = ops.lookup_id(event_id)
            if original is not None:
                slots.append((event_id, original))
                continue
            seen[event_id] = -1 - len(rows)  # resolved to a position below
            slots.append((event_id, None))
            rows.append((event.subject, type(event).__name__, event_id, stored))
        positions = _insert(ops, rows)
        result: list[Appended] = []
        fresh = iter(positions)
        for event_id, original in slots:
            if original is None:
                result.append(Appended(next(fresh), event_id, duplicate=False))
            elif original < 0:
                result.append(Appended(positions[-1 - original], event_id, duplicate=True))
            else:
                result.append(Appended(original, event_id, duplicate=True))
        request.result = result


def _insert(ops: TxnOps, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
    """Store new rows at the next positions and add their Merkle leaves; returns the positions."""
    if not rows:
        return []
    size = ops.size()
    positions = ops.insert(rows)
    if positions[0] != size + 1:
        raise LedgerError(f"positions must follow {size}, got {positions[0]}")
    sha256, prefix = hashlib.sha256, _LEAF_PREFIX  # leaf_hash(leaf_bytes(p, s)), inlined
    leaves = [
        sha256(prefix + p.to_bytes(8, "big") + row[3]).digest()
        for p, row in zip(positions, rows, strict=True)
    ]
    merkle.append_leaves(ops.nodes(), size, leaves)
    return positions


_LEAF_PREFIX: Final = b"\x00"


class LogBackend(Protocol):
    """A durable, totally ordered event log with a Merkle tree, as the `Ledger` facade uses it."""

    url: str

    def write(self, requests: Sequence[AppendRequest]) -> None:
        """Run `apply_requests` for these requests in ONE durable transaction (retrying it whole
        on a transient storage condition). Raises on failure: then nothing was written."""

    def size(self) -> int:
        """The number of committed events."""

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Committed (position, stored bytes) from `start` to `stop` (inclusive) or the end."""

    def positions_of(self, subject: str) -> list[int]:
        """The positions of every event about `subject`, ascending."""

    def read_nodes(self) -> merkle.NodeStore:
        """Merkle nodes as committed (the tree of `size()` at the time of the call or later)."""

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Stored (position, leaf hash) pairs from `start` on, in order: what verify compares."""

    def get_meta(self, key: str) -> bytes | None:
        """A small ledger-wide setting (the origin, trusted operator keys), or None."""

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        """Store a ledger-wide setting durably (with `replace=False`, only if it is absent)."""

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

    The first waiting appender becomes the leader, takes every queued request and writes them
    together; the others wait for their request to be marked done. Each request's outcome is
    its own (its result, or its error).

    Appenders whose request was in the batch just committed are usually about to append again
    (threads appending one event at a time): a new leader waits up to `gather_window` for them
    to queue, so that they share its flush instead of forming the next one. A lone appender, or
    one arriving after a quiet moment, never waits.
    """

    gather_window: float = 0.0002
    """Seconds a leader may wait for the appenders of the batch just committed."""

    def __init__(self, write: Callable[[Sequence[AppendRequest]], None]) -> None:
        self._write = write
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._arrived = threading.Condition(lock)  # the gathering leader waits on this
        self._queue: list[AppendRequest] = []
        self._queued_by: set[int] = set()
        self._leading = False
        self._gathering = False
        self._last_by: set[int] = set()  # threads whose requests were in the last batch
        self._last_done = 0.0  # when the last batch was done (time.monotonic)

    def submit(self, request: AppendRequest) -> list[Appended]:
        """Queue `request`, wait until it is durable (or refused), and return its result."""
        request.encode()
        me = threading.get_ident()
        with self._cond:
            self._queue.append(request)
            self._queued_by.add(me)
            if self._gathering:
                self._arrived.notify()
            while not request.done and self._leading:
                self._cond.wait()
            if not request.done:
                self._leading = True
                self._gather()
                batch, self._queue = self._queue, []
                batch_by, self._queued_by = self._queued_by, set()
        if not request.done:
            try:
                self._write_isolated(batch)
            finally:
                with self._cond:
                    for r in batch:
                        r.done = True
                    self._leading = False
                    self._last_by = batch_by
                    self._last_done = time.monotonic()
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _gather(self) -> None:
        """As the new leader (lock held): wait briefly for the last batch's appenders."""
        start = time.monotonic()
        if start - self._last_done >= self.gather_window:
            return
        missing = self._last_by - self._queued_by
        if not missing:
            return
        deadline = start + self.gather_window
        self._gathering = True
        try:
            while not missing <= self._queued_by:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrived.wait(remaining)
        finally:
            self._gathering = False

    def _write_isolated(self, batch: list[AppendRequest]) -> None:
        """Write the batch in one transaction; if that fails, each request alone, so that one
        request that cannot be written (too large for the map, say) fails only itself."""
        try:
            self._write(batch)
        except BaseException as e:  # noqa: BLE001  handed to its waiters, who re-raise it
            if len(batch) > 1 and isinstance(e, Exception):
                for r in batch:
                    self._write_isolated([r])
                return
            for r in batch:
                if r.error is None:
                    r.error = e
                r.result = None
