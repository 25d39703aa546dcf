"""The `Ledger` facade: open a log, append to it, read it, follow it, prove it.

    >>> from ledger import Ledger
    >>> from ledger.events import EnterMaintenance
    >>> with Ledger.open(tmp_path / "demo.lmdb") as log:                       # doctest: +SKIP
    ...     log.append(EnterMaintenance(subject="node-7", actor="alice"))
    Appended(position=1, id='…', duplicate=False)

Every acknowledged append is durable (flushed) before `append` returns. Appends are idempotent by
`id`: a repeat reports the original position with ``duplicate=True``. Events without an `id` get a
fresh UUID; events without `at` get the ledger's clock. The facade knows nothing of projections.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, cast

import msgspec

from ledger import bulk, merkle
from ledger.backend import (
    TRUST_HISTORY_KEY,
    Appended,
    AppendRequest,
    BulkChunk,
    GroupCommitter,
    LogBackend,
    Precondition,
    TxnOps,
    write_isolated,
)
from ledger.codec import decode_record, encode_record, validate
from ledger.defaults import DEFAULT_LEDGER
from ledger.errors import (
    InvalidEventError,
    NotFoundError,
    StorageError,
    StrictRefusedError,
    UsageError,
)
from ledger.events import Event

if TYPE_CHECKING:
    from ledger.signing import OperatorKey
    from ledger.trust import TrustSet

TRUST_KEY = "trusted_operator_keys"
"""The ledger setting where earlier versions kept the trust policy (`ledger.signing.TrustPolicy`);
moved into the log on first open (`ledger.trust.migrate_legacy_policy`)."""

__all__ = ["DEFAULT_LEDGER", "Entry", "Ledger", "open_backend"]

"""Where a ledger is when none is named (SPEC §5.2): the embedded LMDB ledger in this folder."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored event with its position, the ledger's clock at append, and its stored bytes."""

    position: int
    recorded_at: datetime
    event: Event
    stored: bytes


BIG_BATCH: Final = 1000
"""From this many events, `Ledger.append_batch` pauses Python's cyclic garbage collector while
it works. A big batch makes a few objects an event (the event, its record, its result) that
cannot form cycles, and the collector's passes over them cost about a fifth of the append;
they are collected as usual afterwards (reference counting frees them meanwhile)."""


@contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Disable the cyclic garbage collector for the block if `pause` (and it is enabled)."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _RandomPool:
    """Random bytes from `os.urandom`, taken a big block at a time: one system call for many
    ids (a server's event loop makes one id a request, and each `os.urandom` call gives up the
    interpreter lock and waits to get it back under load). Emptied in a forked child, so that
    two processes never hand out the same bytes."""

    BLOCK: Final = 64 * 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._block, self._at = b"", 0

    def take(self, count: int) -> bytes:
        """`count` fresh random bytes (never handed out before, in any process)."""
        if count > self.BLOCK // 4:
            return os.urandom(count)
        with self._lock:
            if self._at + count > len(self._block):
                self._block, self._at = os.urandom(self.BLOCK), 0
            taken = self._block[self._at : self._at + count]
            self._at += count
            return taken


_RANDOM: Final = _RandomPool()


def new_ids(count: int) -> list[str]:
    """`count` version 7 UUID strings (RFC 9562 §5.7: the Unix time in milliseconds, then 74
    random bits from `os.urandom`, through `_RandomPool`). Time-ordered: the ids one append
    makes sort next to each other, at the end of the id index, so a big append's commits write
    a few of its pages, not all of them (with version 4 each id lands on a random page: see
    `ledger.lmdb_backend`, "Staged appends")."""
    ms = f"{time.time_ns() // 1_000_000:012x}"
    stamp = f"{ms[:8]}-{ms[8:12]}-7"
    h = _RANDOM.take(10 * count).hex()
    v = _VARIANT
    return [
        f"{stamp}{h[o : o + 3]}-{v[h[o + 3]]}{h[o + 4 : o + 7]}-{h[o + 7 : o + 19]}"
        for o in range(0, 20 * count, 20)
    ]


def decode_entry(position: int, stored: bytes) -> Entry:
    """Decode one stored event; corruption surfaces as a `StorageError` naming the position."""
    try:
        record = decode_record(stored)
    except msgspec.DecodeError as e:
        raise StorageError(f"position {position}: stored event cannot be decoded ({e})") from e
    return Entry(position, record.recorded_at, record.event, stored)


def open_backend(target: str | Path, *, sync: bool = True, create: bool = True) -> LogBackend:
    """A backend for `target`: a ``postgresql://`` URL, an ``http(s)://`` server (SPEC-server
    §7.3, token from ``ADMINCHAIN_TOKEN``), or a directory for the embedded LMDB log."""
    text = str(target)
    if not text.strip():
        raise UsageError(
            "the ledger location is empty: give --ledger PATH or URL (or ADMINCHAIN_LEDGER)"
        )
    if text.startswith(("http://", "https://")):
        from ledger.remote import RemoteBackend  # noqa: PLC0415  loads httpx only if used

        return RemoteBackend(text)
    if text.startswith(("postgresql://", "postgres://")):
        from ledger.postgres import PostgresBackend  # noqa: PLC0415  optional dependency

        return PostgresBackend(text, create=create)
    from ledger.lmdb_backend import LMDBBackend  # noqa: PLC0415  keeps `import ledger` light

    return LMDBBackend(Path(text), sync=sync, create=create)


def _chunked(
    records: Iterator[tuple[int, bytes]], size: int
) -> Iterator[list[tuple[int, bytes | None]]]:
    while chunk := list(itertools.islice(records, size)):
        yield cast("list[tuple[int, bytes | None]]", chunk)


def _at_input_line(chunk: bulk.Chunk, check: Callable[..., None], *args: object) -> None:
    """Run a check over a chunk's events; an error naming an event of the chunk (its place,
    1-based) is raised again naming that event's input line."""
    try:
        check(*args)
    except (InvalidEventError, StrictRefusedError) as e:
        if e.line is None or not 1 <= e.line <= len(chunk.lines):
            raise
        raise e.at_line(chunk.lines[e.line - 1]) from e


class Ledger:
    """A durable, totally ordered, tamper-evident event log (SPEC §1, §4)."""

    def __init__(self, backend: LogBackend) -> None:
        self.backend = backend
        self._committer = GroupCommitter(backend.write)
        self.notices: list[str] = []
        """What opening did that the user should hear about (the trust migration)."""
        if backend.get_meta(TRUST_KEY):  # a policy of an earlier version: into the log, once
            from ledger.trust import migrate_legacy_policy  # noqa: PLC0415

            if (notice := migrate_legacy_policy(self)) is not None:
                self.notices.append(notice)

    @classmethod
    def open(
        cls, target: str | Path = DEFAULT_LEDGER, *, sync: bool = True, create: bool = True
    ) -> Self:
        """Open (or create) the ledger at a directory path or a ``postgresql://`` URL; an
        ``http(s)://`` URL opens the `ledger.remote.RemoteLedger` a server serves."""
        backend = open_backend(target, sync=sync, create=create)
        if cls is Ledger and str(target).startswith(("http://", "https://")):
            from ledger.remote import RemoteLedger  # noqa: PLC0415

            return cast(Self, RemoteLedger(backend))
        return cls(backend)

    @property
    def url(self) -> str:
        """Where this ledger lives (a path or a URL), for messages and checkpoints."""
        return self.backend.url

    @property
    def location(self) -> str:
        """What `Ledger.open` needs to open this ledger again in another process (a path, or
        the URL with its password: unlike `url`, not for messages)."""
        return self.backend.location

    # ------------------------------------------------------------------ writing

    def append(
        self, event: Event, *, precondition: Precondition | None = None, validated: bool = False
    ) -> Appended:
        """Append one event durably; returns its position (or its original one if a repeat)."""
        return self.append_batch([event], precondition=precondition, validated=validated)[0]

    def append_batch(
        self,
        events: Iterable[Event],
        *,
        precondition: Precondition | None = None,
        validated: bool = False,
        after: Callable[[TxnOps], None] | None = None,
    ) -> list[Appended]:
        """Append events as one atomic batch: all are durable when this returns, or none is.

        Events built in Python are validated against the catalogue first (msgspec checks
        constraints only when decoding); `validated=True` skips that for events that came through
        `ledger.codec.decode_line`. `precondition` runs under the write lock with the batch's
        events (as stored: ids and times filled in) and may raise a `LedgerError` to refuse it.
        `after` runs in the same transaction once the rows are written (see `AppendRequest`).
        """
        events = events if isinstance(events, Sequence) else list(events)
        with _collector_paused(len(events) >= BIG_BATCH):
            return self._append_batch(events, precondition, validated=validated, after=after)

    def _append_batch(
        self,
        events: Sequence[Event],
        precondition: Precondition | None,
        *,
        validated: bool,
        after: Callable[[TxnOps], None] | None = None,
    ) -> list[Appended]:
        request = self.prepare(events, precondition, validated=validated, after=after)
        if not request.events:
            return []
        return self._committer.submit(request)

    def prepare(
        self,
        events: Sequence[Event],
        precondition: Precondition | None = None,
        *,
        validated: bool = False,
        after: Callable[[TxnOps], None] | None = None,
    ) -> AppendRequest:
        """Validate `events` and fill in their ids and times: the request `append_batch`
        submits, for a caller that gathers requests and writes them itself (`write`)."""
        now = datetime.now(UTC)  # recorded_at: raised to the previous event's if this is earlier
        checked = [
            event if validated else validate(event, line)
            for line, event in enumerate(events, start=1)
        ]
        minted = new_ids(sum(1 for e in checked if getattr(e, "id", 0) is None))
        fresh = iter(minted)
        prepared = [
            self._prepare(event, now, line, fresh) for line, event in enumerate(checked, start=1)
        ]

        def guarded(ops: TxnOps, events: Sequence[Event]) -> None:
            # The trust set as of this very transaction: no trust change committed by any
            # process before this append can be missed, at the cost of one get.
            from ledger.trust import check_append  # noqa: PLC0415

            record = check_append(ops, checked, events)
            if precondition is not None:
                precondition(ops, events)
            if record is not None:  # last: a refused batch changes no trust
                record()

        return AppendRequest(prepared, now, guarded, minted=frozenset(minted), after=after)

    def write(self, requests: Sequence[AppendRequest]) -> None:
        """Write prepared requests durably in one transaction; each request's outcome (its
        `result` or its `error`) is left on it. For one thread that gathers the requests of
        many callers itself (the server); `append_batch` does this through the group commit."""
        for request in requests:
            request.encode()
        write_isolated(self.backend.write, requests)

    def append_bulk(
        self,
        numbered: Iterable[tuple[int, Event]],
        *,
        precondition: Precondition | None = None,
        validated: bool = False,
        progress: Callable[[int, int], None] | None = None,
        chunk: int = bulk.CHUNK,
    ) -> bulk.BulkResult:
        """Append a big input as ONE atomic batch, in memory bounded by `chunk` events.

        `numbered` gives (input line, event) pairs and is read lazily, once: every event is
        validated and prepared (see `ledger.bulk`) before the one write transaction stores them
        chunk by chunk, so a bad line anywhere stores nothing, and so does a refusal (errors
        name the input line). `progress(stored, total)` is told after each stored chunk.
        `precondition` is called with each chunk's events in turn, in the same transaction.
        The two passes are `spool` and `append_spooled`.
        """
        spooled = self.spool(numbered, validated=validated, chunk=chunk)
        return self.append_spooled(spooled, precondition=precondition, progress=progress)

    def spool(
        self,
        numbered: Iterable[tuple[int, Event]],
        *,
        validated: bool = False,
        chunk: int = bulk.CHUNK,
    ) -> bulk.Spool:
        """The first pass of `append_bulk`: read, validate and prepare the input a chunk at a
        time into a spool; nothing is stored (a bad line raises, naming it)."""
        spool = bulk.Spool()
        with _collector_paused(True):
            source = iter(numbered)
            while part := list(itertools.islice(source, chunk)):
                spool.add(self._prepare_chunk(part, spool.recorded_at, validated=validated))
        return spool

    def append_spooled(
        self,
        spool: bulk.Spool,
        *,
        precondition: Precondition | None = None,
        progress: Callable[[int, int], None] | None = None,
        after_chunk: Callable[[TxnOps | None, list[Appended], list[Event]], None] | None = None,
        stageable: bool | None = None,
    ) -> bulk.BulkResult:
        """The second pass of `append_bulk`: store a spool in ONE write transaction (on LMDB,
        beyond `bulk.COMMIT` events and without a `precondition`, in several that stay hidden
        until the last: `AppendRequest.stageable`). `after_chunk(ops, results, events)` runs in
        that transaction after each chunk is written, with the chunk's events as stored (see
        `AppendRequest.after_chunk`: how the stored views are folded in the same commit; a
        staged append's `ops` carry its `ledger.backend.Stage`, where they keep the views' new
        states until the last transaction). `stageable` (default: without a `precondition`):
        whether the append may be staged, i.e. whether `precondition` reads the stored views,
        if at all, through the `Stage` (`Views.append_spooled` with ``strict``)."""
        result = bulk.BulkResult(spool)
        if not spool.count:
            return result
        decoded: list[list[Event]] = [[]]  # the events of the chunk being stored

        def after(ops: TxnOps | None, appended: list[Appended]) -> None:
            assert after_chunk is not None
            after_chunk(ops, appended, decoded[0] if ops is not None else [])

        with _collector_paused(True):

            def check(ops: TxnOps, prepared: BulkChunk) -> None:
                # The trust set as of this very transaction and chunk (`append_batch`'s rule).
                from ledger.trust import check_append  # noqa: PLC0415

                assert isinstance(prepared, bulk.Chunk)
                events = decoded[0] = prepared.events()
                record: list[Callable[[], None] | None] = []
                _at_input_line(
                    prepared,
                    lambda: record.append(
                        check_append(ops, lambda: prepared.originals(events), events)
                    ),
                )
                if precondition is not None:
                    _at_input_line(prepared, precondition, ops, events)
                if record and record[0] is not None:  # last: a refused chunk changes no trust
                    record[0]()

            def stored(prepared: BulkChunk | None, appended: list[Appended]) -> None:
                if prepared is None:  # the transaction (re)starts
                    result.clear()
                    return
                result.extend(appended)
                if progress is not None:
                    progress(len(result), spool.count)

            request = AppendRequest(
                [], spool.recorded_at, source=spool.read, check_chunk=check, on_chunk=stored,
                spooled=spool.count, after_chunk=None if after_chunk is None else after,
                stageable=precondition is None if stageable is None else stageable,
            )  # fmt: skip
            self.backend.write([request])
        return result

    def _prepare_chunk(
        self, part: Sequence[tuple[int, Event]], now: datetime, *, validated: bool
    ) -> bulk.Chunk:
        """Validate one chunk of a big append, fill in ids and times, and encode it."""
        lines = [line for line, _ in part]
        checked = [event if validated else validate(event, line) for line, event in part]
        minted = new_ids(sum(1 for e in checked if getattr(e, "id", 0) is None))
        fresh = iter(minted)
        prepared = [
            self._prepare(event, now, line, fresh)
            for line, event in zip(lines, checked, strict=True)
        ]
        rows = [
            (e.subject, type(e).__name__, cast(str, e.id), encode_record(e, now)) for e in prepared
        ]
        return bulk.Chunk(
            lines, rows, [e.id is None for e in checked], [e.at is None for e in checked]
        )

    @staticmethod
    def _prepare(event: Event, now: datetime, line: int, fresh: Iterator[str]) -> Event:
        """Fill in `id` (from `fresh`) and `at`; the event is already validated and normalised."""
        if not isinstance(event, msgspec.Struct):
            raise InvalidEventError(f"not an event: {type(event).__name__}", line=line)
        if event.id is None:
            if event.at is None:
                return msgspec.structs.replace(event, id=next(fresh), at=now)
            return msgspec.structs.replace(event, id=next(fresh))
        if event.at is None:
            return msgspec.structs.replace(event, at=now)
        return event

    # ------------------------------------------------------------------ reading

    @contextmanager
    def snapshot(self) -> Iterator[Ledger]:
        """This ledger as committed now, read through one snapshot (one LMDB read transaction,
        one PostgreSQL repeatable-read transaction) until the block ends: audits compare like
        with like while others append. Appending to it raises `StorageError`."""
        with self.backend.read_snapshot() as frozen:
            yield Ledger(frozen)

    def size(self) -> int:
        """The number of events in the log (the position of the last one)."""
        return self.backend.size()

    def read(self, start: int = 1, stop: int | None = None) -> Iterator[Entry]:
        """Entries from `start` to `stop` (inclusive) or the end, in order."""
        if start < 1:
            raise UsageError(f"positions start at 1, not {start}")
        for position, stored in self.backend.read_stored(start, stop):
            yield decode_entry(position, stored)

    def read_stored(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, stored bytes) pairs, undecoded: what replay and verification hash and fold."""
        return self.backend.read_stored(max(start, 1), stop)

    def read_chunks(
        self,
        start: int,
        stop: int | None,
        size: int,
        keep: Callable[[bytes, bytes], bool] | None = None,
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        """`read_stored` in lists of up to `size`, through one snapshot. With `keep`, None in
        place of the stored bytes of each event whose subject and type (UTF-8) `keep` refuses,
        where the backend can tell without decoding (LMDB); elsewhere every event's bytes."""
        chunked = getattr(self.backend, "read_chunks", None)
        if chunked is not None:
            chunks: Iterator[list[tuple[int, bytes | None]]] = chunked(
                max(start, 1), stop, size, keep
            )
            return chunks
        return _chunked(self.backend.read_stored(max(start, 1), stop), size)

    def get(self, position: int) -> Entry:
        """The entry at `position`; raises `NotFoundError` beyond the end."""
        for entry in self.read(position, position):
            return entry
        raise NotFoundError(f"no event at position {position} (the log has {self.size()})")

    def history(self, subject: str) -> list[Entry]:
        """Every event about `subject`, in log order (`StorageError` if the subject index names
        a position the log does not hold: damage)."""
        return self.indexed(subject, self.backend.positions_of(subject))

    def indexed(self, subject: str, positions: Iterable[int]) -> list[Entry]:
        """The events at `positions`, which the subject index gave for `subject`: those about
        it (`StorageError` if one of them is not in the log: damage)."""
        entries = []
        for position in positions:
            try:
                entries.append(self.get(position))
            except NotFoundError as e:
                raise StorageError(
                    f"the subject index names position {position} for {subject!r}, which the log "
                    "does not hold: the ledger is damaged (see `adminchain verify`)"
                ) from e
        return [e for e in entries if e.event.subject == subject]

    def follow(
        self, after: int = 0, *, poll: float = 1.0, stop: float | None = None
    ) -> Iterator[Entry]:
        """Entries after position `after`, then new ones as they are appended (by any process).

        Blocks while caught up; ends when `stop` seconds pass without a new event (forever if None).
        """
        position = after
        idle_since = time.monotonic()
        while True:
            advanced = False
            for entry in self.read(position + 1):
                position = entry.position
                advanced = True
                yield entry
            if advanced:
                idle_since = time.monotonic()
            elif stop is not None and time.monotonic() - idle_since >= stop:
                return
            self.backend.wait_beyond(position, poll if stop is None else min(poll, stop))

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until the log holds `position`; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.size() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.backend.wait_beyond(self.size(), remaining)
        return True

    # ------------------------------------------------------------------ integrity

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first `size` events (default: all)."""
        size = self._size_arg(size)
        return merkle.root(self.backend.read_nodes(), size)

    def read_leaves(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """The stored (position, leaf hash) pairs from `start` on, in order: what `verify`
        compares with the leaves it recomputes from the stored events."""
        return self.backend.read_leaves(start, stop)

    def leaf_hash(self, position: int) -> bytes:
        """The stored leaf hash at `position`."""
        self._size_arg(position)
        return self.backend.read_nodes().get(0, position - 1)

    def inclusion_proof(self, position: int, size: int | None = None) -> list[bytes]:
        """Audit path of the event at `position` in the tree of `size` events (RFC 6962)."""
        size = self._size_arg(size)
        if not 1 <= position <= size:
            raise UsageError(f"position {position} is not in a tree of size {size}")
        return merkle.inclusion_proof(self.backend.read_nodes(), position - 1, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Proof that the tree of `size1` events is a prefix of the tree of `size2` events."""
        size2 = self._size_arg(size2)
        if not 0 <= size1 <= size2:
            raise UsageError(f"cannot prove size {size1} against size {size2}")
        return merkle.consistency_proof(self.backend.read_nodes(), size1, size2)

    def _size_arg(self, size: int | None) -> int:
        current = self.size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise UsageError(f"size {size} is beyond the log (it has {current} events)")
        return size

    def trusted_keys(self, at_position: int | None = None) -> TrustSet:
        """The operator keys trusted at `at_position` (default: now), from the log's trust
        events (SPEC-server §8; `ledger.trust`)."""
        from ledger.trust import trusted_keys  # noqa: PLC0415  cryptography loads only if used

        return trusted_keys(self, at_position)

    def trust(
        self, verifier_key: str, *, signer: OperatorKey | None = None, actor: str | None = None
    ) -> TrustSet:
        """Append a `TrustKey` for an operator public key, signed by `signer` (a key trusted
        now; only the ledger's first `TrustKey` may be unsigned). Returns the trust set after."""
        from ledger.trust import trust_key  # noqa: PLC0415

        return trust_key(self, verifier_key, signer=signer, actor=actor)

    def untrust(
        self,
        name: str,
        *,
        signer: OperatorKey | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> TrustSet:
        """Append a `RevokeKey` for the key called `name`, signed by `signer` (a key trusted
        now): it signs nothing from here on; what it signed before stays valid."""
        from ledger.trust import revoke_key  # noqa: PLC0415

        return revoke_key(self, name, signer=signer, actor=actor, reason=reason)

    def origin(self) -> str:
        """The checkpoint origin of this log: unique per ledger, made on first use and kept."""
        value = self.backend.get_meta("origin")
        if value is None:  # first use: the first writer wins, every process reads that one
            origin = f"adminchain.local/{uuid.uuid4()}".encode()
            self.backend.put_meta("origin", origin, replace=False)
            value = self.backend.get_meta("origin")
            assert value is not None
        return value.decode()

    def put_checkpoint(self, size: int, note: str) -> None:
        """Keep a checkpoint note (see `replay.integrity`) in the ledger."""
        self.backend.put_checkpoint(size, note)

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored checkpoint note, by ascending tree size."""
        return self.backend.checkpoints()

    # ------------------------------------------------------------------ moving

    def copy_from(
        self,
        source: Ledger,
        *,
        chunk: int = 10_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy `source`'s log into this one byte for byte: same positions, same root.

        This ledger must be empty or hold a prefix of `source` (then the copy resumes). The
        origin, the trust record and the checkpoints come along, so old checkpoints and proofs
        stay valid against the copy. Returns the new size.
        """
        size, total = self.size(), source.size()
        if size > total or (size and self.root(size) != source.root(size)):
            raise UsageError(f"{self.url} is not a prefix of {source.url}: cannot copy into it")
        for key in ("origin", TRUST_KEY, TRUST_HISTORY_KEY):
            value = source.backend.get_meta(key)
            if value is not None and self.backend.get_meta(key) != value:
                self.backend.put_meta(key, value)
        batch: list[Entry] = []
        for position, stored in source.read_stored(size + 1, total):
            batch.append(decode_entry(position, stored))
            if len(batch) >= chunk:
                size = self._copy_batch(batch)
                batch = []
                if progress is not None:
                    progress(size, total)
        if batch:
            size = self._copy_batch(batch)
        if self.root(size) != source.root(size):
            raise StorageError(f"the copy's root differs from the source's at size {size}")
        for checkpoint_size, note in source.checkpoints():
            if checkpoint_size <= size:
                self.put_checkpoint(checkpoint_size, note)
        if progress is not None:
            progress(size, total)
        return size

    def _copy_batch(self, entries: list[Entry]) -> int:
        request = AppendRequest(
            [e.event for e in entries],
            entries[0].recorded_at,
            encoded=[e.stored for e in entries],
            verbatim=True,
        )
        results = self._committer.submit(request)
        if [r.position for r in results] != [e.position for e in entries]:
            raise StorageError("the copy did not keep the source's positions (a repeated id?)")
        return entries[-1].position

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"
