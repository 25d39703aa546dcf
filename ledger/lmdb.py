"""LMDB persistence module for eventsourcing 9.5.6 (``PERSISTENCE_MODULE=ledger.lmdb``).

Settings, read through the application's `Environment` (``{APPNAME}_KEY`` then ``KEY``):

- ``LMDB_PATH`` (required): the environment directory, created with mode 0700 (files 0600);
- ``LMDB_MAP_SIZE``: initial map size in bytes (default 64 MiB);
- ``LMDB_MAX_MAP_SIZE``: the map doubles on demand up to this (default 1 TiB on 64-bit);
- ``LMDB_SYNC``: flush every commit (default true; false trades durability for speed).

Why LMDB fits an event log: it has one writer at a time, across processes. Allocating the
notification id as "last + 1" inside the write transaction therefore gives ids 1, 2, 3, …
with no gaps, and commit order equals id order (PostgreSQL needs a table lock for that).
Readers see committed snapshots only.

Layout, as named databases in one environment (keys compare as bytes):

- ``<events table>.log``: notification id (8 bytes, big-endian) -> event record;
- ``<events table>.idx``: sequence key (originator id, version) -> notification id;
- ``<events table>.seq``: sequence key -> event record (aggregate recorders, e.g. snapshots);
- ``<tracking table>``: application name -> the highest tracked notification id.

An environment may be opened only once per process, so every recorder on one path shares
one `LMDBDatastore` (see `LMDBDatastore.open`). Code beside the recorders (the Ledger facade,
stored views) writes its own tables in the same transactions through `LMDBDatastore.db`,
`write_retrying` and the ``*_txn`` methods.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import operator
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import count, islice
from typing import Any, ClassVar, Final, TypeVar, cast
from uuid import UUID

import lmdb
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    InternalError,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    ProgrammingError,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from ledger.lmdb_datastore import (
    DEFAULT_MAP_SIZE,
    DEFAULT_MAX_MAP_SIZE,
    LMDBDatastore,
    LMDBMapFullError,
    LMDBMapGrownError,
)

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_MAP_SIZE",
    "ChunkKeep",
    "LMDBAggregateRecorder",
    "LMDBApplicationRecorder",
    "LMDBDatastore",
    "LMDBFactory",
    "LMDBMapFullError",
    "LMDBMapGrownError",
    "LMDBProcessRecorder",
    "LMDBTrackingRecorder",
    "text_key",
]

T = TypeVar("T")

_MAX_TEXT_KEY: Final = 400  # LMDB keys are at most 511 bytes; longer texts are hashed
_BIAS: Final = 1 << 63  # signed versions sort correctly once biased to unsigned
_INT64: Final = struct.Struct(">q")
_ALL_ONES: Final = b"\xff" * 8
_RECORD: Final = struct.Struct(">BqII")  # id kind (1 = UUID), version, id length, topic length
ChunkKeep = Callable[[bytes, bytes], bool]
"""Whether a reader wants an event, told its subject and type (UTF-8) from the record's header
(`LMDBApplicationRecorder.iter_chunks_txn`)."""


# ---------------------------------------------------------------------------- encoding


def text_key(text: str, limit: int) -> bytes:
    """The one LMDB key scheme for a text (LMDB keys are at most 511 bytes): its UTF-8 bytes when
    they are at most `limit` long, else 0xff + their SHA-256 (0xff never occurs in UTF-8, so the
    two forms cannot collide). Raises `UnicodeEncodeError` for text that is not UTF-8."""
    raw = text.encode()
    return raw if len(raw) <= limit else b"\xff" + hashlib.sha256(raw).digest()


def _text_key(text: str) -> bytes:
    """A length-prefixed key for an id or a name: unique, never empty, at most 402 bytes."""
    try:
        raw = text_key(text, _MAX_TEXT_KEY)
    except (UnicodeEncodeError, AttributeError) as e:
        raise DataError(f"cannot encode {text!r} as a key: {e}") from e
    return len(raw).to_bytes(2, "big") + raw


def _version_key(version: int, *, clamp: bool = False) -> bytes:
    if clamp:
        version = max(-_BIAS, min(_BIAS - 1, version))
    try:
        return (version + _BIAS).to_bytes(8, "big")
    except (OverflowError, TypeError) as e:
        raise DataError(f"originator version {version!r} is not a 64-bit integer") from e


def _encode_event(event: StoredEvent) -> tuple[bytes, bytes]:
    """The (sequence key, record) of a stored event; the record keeps the id's type."""
    oid = event.originator_id
    text = str(oid) if isinstance(oid, UUID) else oid
    key = _text_key(text) + _version_key(event.originator_version)
    try:
        oid_bytes, topic = text.encode(), event.topic.encode()
        kind = int(isinstance(oid, UUID))
        head = _RECORD.pack(kind, event.originator_version, len(oid_bytes), len(topic))
        return key, b"".join((head, oid_bytes, topic, event.state))
    except (UnicodeEncodeError, AttributeError, TypeError, struct.error) as e:
        raise DataError(f"cannot store event {event!r}: {e}") from e


def _split(record: bytes) -> tuple[int, int, int, int]:
    """(id kind, version, offset of the topic, offset of the state) of a record."""
    kind, version, oid_len, topic_len = _RECORD.unpack_from(record)
    return kind, version, _RECORD.size + oid_len, _RECORD.size + oid_len + topic_len


def _decode_fields(record: bytes) -> tuple[UUID | str, int, str, bytes]:
    kind, version, topic_at, state_at = _split(record)
    text = record[_RECORD.size : topic_at].decode()
    topic = record[topic_at:state_at].decode()
    return (UUID(text) if kind else text), version, topic, record[state_at:]


def _decode_event(record: bytes) -> StoredEvent:
    oid, version, topic, state = _decode_fields(record)
    return StoredEvent(originator_id=oid, originator_version=version, topic=topic, state=state)


def _scan_sequence(
    cursor: lmdb.Cursor[bytes],
    prefix: bytes,
    gt: int | None,
    lte: int | None,
    *,
    desc: bool,
    limit: int | None,
) -> Iterator[bytes]:
    """Values of one sequence's keys (prefix + version) for versions in (gt, lte], in order."""
    if (limit is not None and limit <= 0) or (gt is not None and gt >= _BIAS - 1):
        return
    past: Callable[[int, int], bool]
    if desc:  # start on the last key <= upper, walk back while version > gt
        upper = prefix + (b"\xff" * 8 if lte is None else _version_key(lte, clamp=True))
        at_or_after = cursor.set_range(upper)
        found = (cursor.key() == upper or cursor.prev()) if at_or_after else cursor.last()
        step, bound, past = cursor.prev, gt, int.__le__
    else:  # start on the first key > gt, walk on while version <= lte
        first = prefix if gt is None else prefix + _version_key(gt + 1, clamp=True)
        found = cursor.set_range(first)
        step, bound, past = cursor.next, lte, int.__gt__
    count = 0
    while found:
        key = cursor.key()
        if not key.startswith(prefix):
            return
        if bound is not None and past(int.from_bytes(key[-8:], "big") - _BIAS, bound):
            return
        yield cursor.value()
        count += 1
        if count == limit:
            return
        found = step()


# ---------------------------------------------------------------------------- recorders


class LMDBRecorder(Recorder):
    """Base of the LMDB recorders: a datastore, named tables and transaction helpers.

    The helpers open the recorder's tables first, so they may be used without `create_table`.
    """

    def __init__(self, datastore: LMDBDatastore) -> None:
        self.datastore = datastore
        self._tables_open = False

    def table_names(self) -> list[bytes]:
        """The named databases this recorder uses (subclasses add theirs)."""
        return []

    def create_table(self) -> None:
        """Open, creating if missing, this recorder's named databases."""
        for name in self.table_names():
            self.datastore.db(name)
        self._tables_open = True

    def _ensure_tables(self) -> None:
        if not self._tables_open:
            self.create_table()

    def read(self) -> contextlib.AbstractContextManager[lmdb.Transaction[bytes]]:
        """A read transaction (see `LMDBDatastore.read`)."""
        self._ensure_tables()
        return self.datastore.read()

    def write(
        self, *, notify: bool = True
    ) -> contextlib.AbstractContextManager[lmdb.Transaction[bytes]]:
        """One write transaction (see `LMDBDatastore.write`)."""
        self._ensure_tables()
        return self.datastore.write(notify=notify)

    def write_retrying(
        self, fn: Callable[[lmdb.Transaction[bytes]], T], *, notify: bool = True
    ) -> T:
        """``fn(txn)`` in a write transaction, run again after a map growth (see datastore)."""
        self._ensure_tables()
        return self.datastore.write_retrying(fn, notify=notify)


class LMDBAggregateRecorder(LMDBRecorder, AggregateRecorder):
    """Stored events by (originator id, version), e.g. snapshots; no notification ids."""

    def __init__(self, datastore: LMDBDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore)
        self.events_table_name = events_table_name
        self._seq_name = f"{events_table_name}.seq".encode()

    def table_names(self) -> list[bytes]:
        return [*super().table_names(), *self._event_tables()]

    def _event_tables(self) -> list[bytes]:
        return [self._seq_name]  # the last one is keyed by sequence

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            self.write_retrying(lambda txn: self.insert_events_txn(txn, stored_events))
        return None

    def insert_events_txn(
        self, txn: lmdb.Transaction[bytes], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Insert inside the caller's write transaction; IntegrityError on a repeated
        (originator id, version), after which the transaction must be aborted."""
        db = self.datastore.db(self._seq_name)
        for event in stored_events:
            key, record = _encode_event(event)
            if not txn.put(key, record, overwrite=False, db=db):
                raise IntegrityError(f"stored event already recorded: {event!r}")
        return []

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        with self.read() as txn:
            return self.select_events_txn(
                txn, originator_id, gt=gt, lte=lte, desc=desc, limit=limit
            )

    def select_events_txn(
        self,
        txn: lmdb.Transaction[bytes],
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """`select_events` inside the caller's transaction."""
        cursor = txn.cursor(db=self.datastore.db(self._event_tables()[-1]))
        prefix = _text_key(str(originator_id))
        values = _scan_sequence(cursor, prefix, gt, lte, desc=desc, limit=limit)
        return [_decode_event(record) for record in self._records(txn, values)]

    def _records(self, txn: lmdb.Transaction[bytes], values: Iterator[bytes]) -> Iterator[bytes]:
        """The event records for values of the sequence table (here: the records)."""
        return values


class LMDBApplicationRecorder(LMDBAggregateRecorder, ApplicationRecorder):
    """Stored events with gap-free notification ids. Subscribers wake at once on commits in
    this process, and on other processes' commits within `subscription_poll_interval`."""

    subscription_poll_interval: float = 0.05
    """Seconds between checks for events appended by other processes."""

    def __init__(self, datastore: LMDBDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self._log_name = f"{events_table_name}.log".encode()
        self._idx_name = f"{events_table_name}.idx".encode()

    def _event_tables(self) -> list[bytes]:
        return [self._log_name, self._idx_name]  # the last one is keyed by sequence

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        return self.write_retrying(lambda txn: self.insert_events_txn(txn, stored_events))

    def insert_events_txn(
        self, txn: lmdb.Transaction[bytes], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Insert inside the caller's write transaction and return the notification ids
        (last + 1, …). IntegrityError on a repeated (originator id, version), even within
        the batch; the transaction must then be aborted (`write` does so)."""
        log = self.datastore.db(self._log_name)
        idx = self.datastore.db(self._idx_name)
        last = self.max_notification_id_txn(txn) or 0
        ids: list[int] = []
        for event in stored_events:
            key, record = _encode_event(event)
            last += 1
            nid = last.to_bytes(8, "big")
            if not txn.put(key, nid, overwrite=False, db=idx):
                raise IntegrityError(f"stored event already recorded: {event!r}")
            txn.put(nid, record, append=True, db=log)
            ids.append(last)
        return ids

    def insert_rows_txn(
        self, txn: lmdb.Transaction[bytes], rows: Sequence[tuple[str, int, str, bytes]]
    ) -> range:
        """`insert_events_txn` for (originator id, version, topic, state) rows whose ids are
        texts (not UUIDs), without building a `StoredEvent` per row: the records are the same
        bytes, written with one `putmulti` per table. Returns the notification ids (last + 1,
        …). IntegrityError on a repeated (originator id, version), even within the rows; the
        transaction must then be aborted (`write` does so)."""
        log = self.datastore.db(self._log_name)
        idx = self.datastore.db(self._idx_name)
        last = self.max_notification_id_txn(txn) or 0
        pack = _RECORD.pack
        oids: dict[str, tuple[bytes, bytes]] = {}
        topics: dict[str, bytes] = {}
        index: list[tuple[bytes, bytes]] = []
        records: list[tuple[bytes, bytes]] = []
        nid = last
        try:
            for oid, version, topic, state in rows:
                nid += 1
                known = oids.get(oid)
                if known is None:
                    known = oids[oid] = (_text_key(oid), oid.encode())
                topic_bytes = topics.get(topic)
                if topic_bytes is None:
                    topic_bytes = topics[topic] = topic.encode()
                key = nid.to_bytes(8, "big")
                index.append((known[0] + (version + _BIAS).to_bytes(8, "big"), key))
                head = pack(0, version, len(known[1]), len(topic_bytes))
                records.append((key, b"".join((head, known[1], topic_bytes, state))))
        except (UnicodeEncodeError, AttributeError, TypeError, OverflowError, struct.error) as e:
            raise DataError(f"cannot store event {rows[nid - last - 1]!r}: {e}") from e
        consumed, added = txn.cursor(db=idx).putmulti(index, overwrite=False)
        if added != consumed:
            raise IntegrityError(f"stored event already recorded: {self._repeated(rows)!r}")
        consumed, added = txn.cursor(db=log).putmulti(records, append=True)
        if added != consumed:
            raise InternalError(f"{self.events_table_name}: notification ids out of order")
        return range(last + 1, nid + 1)

    def _repeated(self, rows: Sequence[tuple[str, int, str, bytes]]) -> tuple[str, int]:
        """The first (originator id, version) of `rows` repeated within them (or stored)."""
        seen: set[tuple[str, int]] = set()
        for oid, version, _topic, _state in rows:
            if (oid, version) in seen:
                return oid, version
            seen.add((oid, version))
        return rows[0][0], rows[0][1]  # stored before: putmulti does not say which

    @staticmethod
    def sequence_prefix(originator_id: str) -> bytes:
        """The key prefix of `originator_id`'s entries in the sequence index."""
        return _text_key(originator_id)

    def index_entries_txn(
        self, txn: lmdb.Transaction[bytes]
    ) -> Iterator[list[tuple[bytes, int]]]:
        """(sequence prefix, notification id) of every sequence index entry, in key order, in
        lists of up to 4096."""
        cursor = txn.cursor(db=self.datastore.db(self._idx_name)).iternext()
        while chunk := list(itertools.islice(cursor, 1 << 12)):
            yield [(key[:-8], int.from_bytes(nid, "big")) for key, nid in chunk]

    def rebuild_index_txn(self, txn: lmdb.Transaction[bytes]) -> int:
        """Write the sequence index again from the log's records (in the caller's write
        transaction); returns the number of entries."""
        idx = self.datastore.db(self._idx_name)
        txn.drop(idx, delete=False)
        entries = []
        for nid, record in self._log_items(txn, 1, None):
            _, version, topic_at, _ = _split(record)
            oid = record[_RECORD.size : topic_at].decode()
            entries.append((_text_key(oid) + _version_key(version), nid.to_bytes(8, "big")))
        entries.sort()
        txn.cursor(db=idx).putmulti(entries, append=True)
        return len(entries)

    def last_version_txn(self, txn: lmdb.Transaction[bytes], originator_id: str) -> int | None:
        """The highest version stored for `originator_id` as seen by `txn`, or None."""
        prefix = _text_key(originator_id)
        cursor = txn.cursor(db=self.datastore.db(self._idx_name))
        # The last key <= prefix + 0xff…: this sequence's last version, if the key has the prefix.
        upper = prefix + _ALL_ONES
        at_or_after = cursor.set_range(upper)
        found = (cursor.key() == upper or cursor.prev()) if at_or_after else cursor.last()
        key = cursor.key()
        if not found or len(key) != len(prefix) + 8 or not key.startswith(prefix):
            return None
        return int.from_bytes(key[-8:], "big") - _BIAS

    def notification_ids_txn(
        self, txn: lmdb.Transaction[bytes], originator_id: str, after_version: int = 0
    ) -> list[int]:
        """The notification ids of `originator_id`'s events, by ascending version (only those
        whose version is above `after_version`)."""
        prefix = _text_key(originator_id)
        cursor = txn.cursor(db=self.datastore.db(self._idx_name))
        gt = after_version or None
        values = _scan_sequence(cursor, prefix, gt, None, desc=False, limit=None)
        return [int.from_bytes(nid, "big") for nid in values]

    def _records(self, txn: lmdb.Transaction[bytes], values: Iterator[bytes]) -> Iterator[bytes]:
        log = self.datastore.db(self._log_name)
        for nid in values:
            record = txn.get(nid, db=log)
            if record is None:
                raise InternalError(f"index of {self.events_table_name} names a missing event")
            yield record

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        with self.read() as txn:
            return self.select_notifications_txn(
                txn, start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )

    def select_notifications_txn(
        self,
        txn: lmdb.Transaction[bytes],
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        """`select_notifications` inside the caller's transaction (topics filter before limit)."""
        first = max(1, 1 if start is None else start + (not inclusive_of_start))
        wanted = {t.encode() for t in topics}
        results: list[Notification] = []
        for nid, record in self._log_items(txn, first, stop if limit > 0 else 0):
            if wanted and record[slice(*_split(record)[2:])] not in wanted:
                continue
            oid, version, topic, state = _decode_fields(record)
            results.append(
                Notification(
                    id=nid, originator_id=oid, originator_version=version, topic=topic, state=state
                )
            )
            if len(results) >= limit:
                break
        return results

    def iter_stored_txn(
        self, txn: lmdb.Transaction[bytes], start: int, stop: int
    ) -> Iterator[tuple[int, bytes]]:
        """(notification id, state bytes) for ids start..stop inclusive, inside `txn`.

        One flat loop (replay's read path): the record header is unpacked inline.
        """
        first = max(start, 1)
        if first >= 1 << 64 or stop < first:
            return
        cursor = txn.cursor(db=self.datastore.db(self._log_name))
        if not cursor.set_range(first.to_bytes(8, "big")):
            return
        unpack, head, from_bytes = _RECORD.unpack_from, _RECORD.size, int.from_bytes
        for key, record in cursor.iternext():
            nid = from_bytes(key, "big")
            if nid > stop:
                return
            _, _, oid_len, topic_len = unpack(record)
            yield nid, record[head + oid_len + topic_len :]

    def iter_chunks_txn(
        self,
        txn: lmdb.Transaction[bytes],
        start: int,
        stop: int,
        size: int,
        keep: ChunkKeep | None = None,
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        """`iter_stored_txn` in lists of up to `size` (no generator step per record: the read
        path of replay and catch-up). With `keep`, the state of each record whose originator id
        and topic (UTF-8 bytes, read from the record's header) `keep` refuses is None: it is
        never copied out or decoded (a process folding a part of the subjects).

        Positions are counted, not decoded from each key (`_counted_chunks`); a chunk with a key
        that is not its counted position (a gap in the log, or a damaged key) is read again key
        by key from its start, so a missing position is seen as missing."""
        first = max(start, 1)
        if first >= 1 << 64 or stop < first:
            return
        cursor = txn.cursor(db=self.datastore.db(self._log_name))
        if not cursor.set_range(first.to_bytes(8, "big")):
            return
        if int.from_bytes(cursor.key(), "big") == first:
            first = yield from _counted_chunks(cursor, first, stop, size, keep)
            if first > stop or not cursor.set_range(first.to_bytes(8, "big")):
                return
        unpack, head, from_bytes = _RECORD.unpack_from, _RECORD.size, int.from_bytes
        # a record's lengths, originator id and topic, in one slice: the key of `keep`'s answer
        named_from = _RECORD.size - 8
        decided: dict[bytes, bool] = {}
        chunk: list[tuple[int, bytes | None]] = []
        append = chunk.append
        for key, record in cursor.iternext():
            nid = from_bytes(key, "big")
            if nid > stop:
                break
            _, _, oid_len, topic_len = unpack(record)
            if keep is not None:
                named = record[named_from : head + oid_len + topic_len]
                kept = decided.get(named)
                if kept is None:
                    at = head + oid_len
                    kept = decided[named] = keep(record[head:at], record[at : at + topic_len])
                if not kept:
                    append((nid, None))
                    if len(chunk) >= size:
                        yield chunk
                        chunk = []
                        append = chunk.append
                    continue
            append((nid, record[head + oid_len + topic_len :]))
            if len(chunk) >= size:
                yield chunk
                chunk = []
                append = chunk.append
        if chunk:
            yield chunk

    def iter_kept_txn(
        self, txn: lmdb.Transaction[bytes], start: int, stop: int, size: int, keep: ChunkKeep
    ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
        """(position, state) of the records start..stop that `keep` takes (told each one's
        originator id and topic, as by `iter_chunks_txn`), in lists from chunks of `size`
        records, each with its chunk's last position: all that a process folding its part of
        the subjects needs, so that the others' records cost it only their header. Positions
        are counted (`_counted_chunks`); at a missing one it stops, the last position given
        before it (the caller names it: damage)."""
        first = max(start, 1)
        if first >= 1 << 64 or stop < first:
            return
        db = self.datastore.db(self._log_name)
        cursor = txn.cursor(db=db)
        if not cursor.set_range(first.to_bytes(8, "big")):
            return
        items = cursor.iternext()
        decided: dict[bytes, bool] = {}
        position = first
        if int.from_bytes(cursor.key(), "big") != position:
            return
        while position <= stop:
            wanted = min(size, stop - position + 1)
            records = _values_if_counted(list(islice(items, wanted)), position)
            last = position + len(records) - 1  # short: the log ends, or a position is missing
            kept = cast("list[tuple[int, bytes]]", _decided(records, position, keep, decided, True))
            if records:
                yield last, kept
            if len(records) < wanted:
                return
            position = last + 1

    def _log_items(
        self, txn: lmdb.Transaction[bytes], first: int, stop: int | None
    ) -> Iterator[tuple[int, bytes]]:
        """(notification id, record) for ids first..stop (inclusive; None: the end)."""
        if first >= 1 << 64 or (stop is not None and stop < first):
            return
        cursor = txn.cursor(db=self.datastore.db(self._log_name))
        if not cursor.set_range(first.to_bytes(8, "big")):
            return
        for key, record in cursor.iternext():
            nid = int.from_bytes(key, "big")
            if stop is not None and nid > stop:
                return
            yield nid, record

    def max_notification_id(self) -> int | None:
        with self.read() as txn:
            return self.max_notification_id_txn(txn)

    def max_notification_id_txn(self, txn: lmdb.Transaction[bytes]) -> int | None:
        """The highest notification id visible to `txn`, or None for an empty log."""
        cursor = txn.cursor(db=self.datastore.db(self._log_name))
        return int.from_bytes(cursor.key(), "big") if cursor.last() else None

    def delete_tail_txn(self, txn: lmdb.Transaction[bytes], first: int) -> list[bytes]:
        """Delete the events from notification id `first` to the end, with their sequence index
        entries (in the caller's write transaction); returns their states, in id order (what
        else indexes them is the caller's to remove)."""
        log = self.datastore.db(self._log_name)
        idx = self.datastore.db(self._idx_name)
        states: list[bytes] = []
        for nid, record in list(self._log_items(txn, first, None)):
            _, version, topic_at, state_at = _split(record)
            oid = record[_RECORD.size : topic_at].decode()
            txn.delete(_text_key(oid) + _version_key(version), db=idx)
            txn.delete(nid.to_bytes(8, "big"), db=log)
            states.append(record[state_at:])
        return states

    def wait_beyond(
        self, position: int, timeout: float, size: Callable[[], int] | None = None
    ) -> bool:
        """Block until the log holds a notification id above `position` (appended by any
        process) or `timeout` seconds pass; True if it does. `size`: how the log's size is read
        (default: its highest notification id)."""
        deadline = time.monotonic() + timeout
        event = threading.Event()
        size = size or (lambda: self.max_notification_id() or 0)
        self.datastore.listen(event)
        try:
            while True:
                event.clear()
                if size() > position:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                event.wait(min(remaining, self.subscription_poll_interval))
        finally:
            self.datastore.unlisten(event)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        self._ensure_tables()
        return LMDBSubscription(self, gt=gt, topics=topics)


class LMDBSubscription(ListenNotifySubscription[LMDBApplicationRecorder]):
    """Notifications after `gt`; blocks when caught up, ends on `stop()`.

    Woken at once by commits in this process; other processes' commits are picked up by
    polling every ``recorder.subscription_poll_interval`` seconds (one short read each).
    """

    def __init__(
        self, recorder: LMDBApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        self._poll_interval = recorder.subscription_poll_interval  # read by the pull thread
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        recorder.datastore.listen(self._has_been_notified)

    def stop(self) -> None:
        super().stop()
        self._recorder.datastore.unlisten(self._has_been_notified)

    def _loop_on_pull(self) -> None:
        # As the base class does, but the wait times out so other processes' appends are seen.
        try:
            self._pull()
            while not self._has_been_stopped:
                self._has_been_notified.wait(timeout=self._poll_interval)
                self._pull()
        except BaseException as e:  # noqa: BLE001  handed to the iterating thread, as the base does
            if self._thread_error is None:
                self._thread_error = e
            self.stop()


class LMDBTrackingRecorder(LMDBRecorder, TrackingRecorder):
    """The highest processed notification id per upstream application name."""

    def __init__(
        self,
        datastore: LMDBDatastore,
        *,
        tracking_table_name: str = "notification_tracking",
        **kwargs: Any,
    ) -> None:
        super().__init__(datastore, **kwargs)
        self.tracking_table_name = tracking_table_name
        self._tracking_name = tracking_table_name.encode()

    def table_names(self) -> list[bytes]:
        return [*super().table_names(), self._tracking_name]

    def insert_tracking(self, tracking: Tracking) -> None:
        self.write_retrying(lambda txn: self.insert_tracking_txn(txn, tracking), notify=False)

    def insert_tracking_txn(self, txn: lmdb.Transaction[bytes], tracking: Tracking) -> None:
        """Record `tracking` inside the caller's write transaction (where a view writes its
        state too); IntegrityError unless its id is above the current maximum."""
        key = _text_key(tracking.application_name)
        db = self.datastore.db(self._tracking_name)
        current = self.max_tracking_id_txn(txn, tracking.application_name)
        if current is not None and current >= tracking.notification_id:
            raise IntegrityError(
                f"tracking notification ID {tracking.notification_id} not greater than"
                f" current max tracking ID {current}"
            )
        try:
            txn.put(key, _INT64.pack(tracking.notification_id), db=db)
        except struct.error as e:
            raise DataError(f"tracking notification ID out of range: {tracking!r}") from e

    def max_tracking_id(self, application_name: str) -> int | None:
        with self.read() as txn:
            return self.max_tracking_id_txn(txn, application_name)

    def max_tracking_id_txn(
        self, txn: lmdb.Transaction[bytes], application_name: str
    ) -> int | None:
        """`max_tracking_id` inside the caller's transaction."""
        value = txn.get(_text_key(application_name), db=self.datastore.db(self._tracking_name))
        return None if value is None else cast(int, _INT64.unpack(value)[0])


class LMDBProcessRecorder(LMDBTrackingRecorder, LMDBApplicationRecorder, ProcessRecorder):
    """An application recorder whose ``insert_events(..., tracking=t)`` records the
    tracking in the same transaction as the events."""

    def __init__(
        self,
        datastore: LMDBDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore, events_table_name=events_table_name, tracking_table_name=tracking_table_name
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return super().insert_events(stored_events)

        def insert(txn: lmdb.Transaction[bytes]) -> list[int]:
            ids = self.insert_events_txn(txn, stored_events)
            self.insert_tracking_txn(txn, tracking)
            return ids

        return self.write_retrying(insert, notify=bool(stored_events))


# ---------------------------------------------------------------------------- factory


class LMDBFactory(InfrastructureFactory[LMDBTrackingRecorder]):
    """Builds LMDB recorders from the environment (see the module docstring for settings).

    Tables are named after the application as eventsourcing's PostgreSQL module does
    (``<name>_events``, ``<name>_snapshots``, ``<name>_tracking``), so applications and
    projections can share one environment directory.
    """

    LMDB_PATH: ClassVar[str] = "LMDB_PATH"
    LMDB_MAP_SIZE: ClassVar[str] = "LMDB_MAP_SIZE"
    LMDB_MAX_MAP_SIZE: ClassVar[str] = "LMDB_MAX_MAP_SIZE"
    LMDB_SYNC: ClassVar[str] = "LMDB_SYNC"
    CREATE_TABLE: ClassVar[str] = "CREATE_TABLE"

    aggregate_recorder_class: ClassVar[type[LMDBAggregateRecorder]] = LMDBAggregateRecorder
    application_recorder_class: ClassVar[type[LMDBApplicationRecorder]] = LMDBApplicationRecorder
    tracking_recorder_class: ClassVar[type[LMDBTrackingRecorder]] = LMDBTrackingRecorder
    process_recorder_class: ClassVar[type[LMDBProcessRecorder]] = LMDBProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        path = self.env.get(self.LMDB_PATH)
        if not path:
            keys = ", ".join(self.env.create_keys(self.LMDB_PATH))
            raise OSError(f"LMDB environment path not found in environment with keys: {keys}")
        sync_text = self.env.get(self.LMDB_SYNC, "yes")
        try:
            sync = strtobool(sync_text.strip() or "yes")
        except ValueError:
            raise OSError(f"invalid {self.LMDB_SYNC} value {sync_text!r}") from None
        self.datastore = LMDBDatastore.open(
            path,
            map_size=self._size_setting(self.LMDB_MAP_SIZE, DEFAULT_MAP_SIZE),
            max_map_size=self._size_setting(self.LMDB_MAX_MAP_SIZE, DEFAULT_MAX_MAP_SIZE),
            sync=sync,
        )
        self._closed = False

    def _size_setting(self, key: str, default: int) -> int:
        text = (self.env.get(key) or "").strip()
        if not text:
            return default
        if not text.isdigit() or int(text) <= 0:
            raise OSError(f"invalid {key} value {text!r}: expected a positive number of bytes")
        return int(text)

    def _name(self, default: str, suffix: str) -> str:
        return f"{self.env.name.lower() or default}_{suffix}"

    def _resolve(self, setting: str, default: type[T]) -> type[T]:
        topic = self.env.get(setting)
        cls: type[T] = resolve_topic(topic) if topic else default
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise ProgrammingError(f"{setting}={topic!r} is not a {default.__name__}")
        return cls

    def _made(self, recorder: LMDBRecorder) -> None:
        if strtobool(self.env.get(self.CREATE_TABLE, "yes") or "yes"):
            recorder.create_table()

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        cls = self.aggregate_recorder_class
        recorder = cls(self.datastore, events_table_name=self._name("stored", purpose))
        self._made(recorder)
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._resolve(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        recorder = cls(self.datastore, events_table_name=self._name("stored", "events"))
        self._made(recorder)
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[LMDBTrackingRecorder] | None = None
    ) -> LMDBTrackingRecorder:
        cls = tracking_recorder_class or self._resolve(
            self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class
        )
        if not issubclass(cls, LMDBTrackingRecorder):
            raise ProgrammingError(f"{cls!r} is not an LMDBTrackingRecorder")
        recorder = cls(self.datastore, tracking_table_name=self._name("notification", "tracking"))
        self._made(recorder)
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        cls = self._resolve(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        recorder = cls(
            self.datastore,
            events_table_name=self._name("stored", "events"),
            tracking_table_name=self._name("notification", "tracking"),
        )
        self._made(recorder)
        return recorder

    def close(self) -> None:
        """Release this factory's reference to the shared datastore (once)."""
        if not self._closed:
            self._closed = True
            self.datastore.close()


def _decided(
    records: list[bytes], position: int, keep: ChunkKeep, decided: dict[bytes, bool], drop: bool
) -> list[tuple[int, bytes | None]]:
    """(position, state) of `records` (at `position` on) that `keep` takes, told each one's
    originator id and topic from its header; the others dropped, or with `drop` False given as
    (position, None). `decided` keeps `keep`'s answers by header (ids and topics repeat)."""
    unpack, head = _RECORD.unpack_from, _RECORD.size
    named_from = head - 8  # a record's lengths, originator id and topic: the key of an answer
    chunk: list[tuple[int, bytes | None]] = []
    append = chunk.append
    for p, record in enumerate(records, position):
        _, _, oid_len, topic_len = unpack(record)
        end = head + oid_len + topic_len
        named = record[named_from:end]
        take = decided.get(named)
        if take is None:
            at = head + oid_len
            take = decided[named] = keep(record[head:at], record[at:end])
        if take:
            append((p, record[end:]))
        elif not drop:
            append((p, None))
    return chunk


def _counted_chunks(
    cursor: lmdb.Cursor[bytes], first: int, stop: int, size: int, keep: ChunkKeep | None
) -> Generator[list[tuple[int, bytes | None]], None, int]:
    """`LMDBApplicationRecorder.iter_chunks_txn`'s chunks from the cursor's record (at position
    `first`) on, positions counted: every key of a chunk is compared with its count at once
    (`_values_if_counted`) before the chunk is given. Returns the position to read on from by key
    (`stop` + 1 once done; a chunk's first position where its keys do not count up, or the
    log ends before `stop`)."""
    items = cursor.iternext()
    unpack, head = _RECORD.unpack_from, _RECORD.size
    decided: dict[bytes, bool] = {}
    position = first
    while position <= stop:
        wanted = min(size, stop - position + 1)
        records = _values_if_counted(list(islice(items, wanted)), position)
        last = position + len(records) - 1
        if len(records) < wanted:
            return position
        chunk: list[tuple[int, bytes | None]]
        if keep is None:
            chunk = [
                (p, r[head + a + b :])
                for p, r, (_, _, a, b) in zip(count(position), records, map(unpack, records))
            ]
        else:
            chunk = _decided(records, position, keep, decided, False)
        yield chunk
        position = last + 1
    return position


def _values_if_counted(items: list[tuple[bytes, bytes]], first: int) -> list[bytes]:
    """The values of (key, value) `items` read in order from position `first` on, if every key
    is its counted position (compared as one string, in C); else the values of the items
    before the first key that is not (a missing position, or a damaged key: its value may be
    right, but the log cannot be read by position there)."""
    keys = b"".join(map(_KEY_OF, items))
    expected = _positions(len(items)).pack(*range(first, first + len(items)))
    if keys != expected:
        good = 0
        for key, _ in items:
            if key != expected[good * 8 : good * 8 + 8]:
                break
            good += 1
        items = items[:good]
    return list(map(_VALUE_OF, items))


_KEY_OF: Final = operator.itemgetter(0)
_VALUE_OF: Final = operator.itemgetter(1)


@functools.lru_cache(maxsize=8)
def _positions(count: int) -> struct.Struct:
    """`count` positions as the log's keys (8 bytes, big-endian), packed end to end."""
    return struct.Struct(f">{count}Q")
