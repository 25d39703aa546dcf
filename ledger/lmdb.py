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
import hashlib
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, cast
from uuid import UUID

import lmdb
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    InterfaceError,
    InternalError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_MAP_SIZE",
    "LMDBAggregateRecorder",
    "LMDBApplicationRecorder",
    "LMDBDatastore",
    "LMDBFactory",
    "LMDBMapFullError",
    "LMDBMapGrownError",
    "LMDBProcessRecorder",
    "LMDBRecorder",
    "LMDBSubscription",
    "LMDBTrackingRecorder",
]

T = TypeVar("T")

DEFAULT_MAP_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_MAP_SIZE: Final = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)
_PAGE: Final = 4096
_MAX_TEXT_KEY: Final = 400  # LMDB keys are at most 511 bytes; longer texts are hashed
_BIAS: Final = 1 << 63  # signed versions sort correctly once biased to unsigned
_INT64: Final = struct.Struct(">q")
_RECORD: Final = struct.Struct(">BqII")  # id kind (1 = UUID), version, id length, topic length


class LMDBMapFullError(OperationalError):
    """The map is at its maximum size (``LMDB_MAX_MAP_SIZE``) or could not be resized; the
    transaction was aborted and nothing was written."""


class LMDBMapGrownError(OperationalError):
    """Retryable: the map was full, so the transaction was aborted and the map grown.

    Run the whole transaction again; `write_retrying` does so for you.
    """


_ERRORS: Final[tuple[tuple[tuple[type[lmdb.Error], ...], type[PersistenceError]], ...]] = (
    ((lmdb.KeyExistsError,), IntegrityError),
    ((lmdb.BadValsizeError,), DataError),
    ((lmdb.MapFullError,), LMDBMapFullError),
    ((lmdb.MapResizedError, lmdb.ReadersFullError, lmdb.TxnFullError, lmdb.CursorFullError,
      lmdb.PageFullError, lmdb.DbsFullError, lmdb.LockError, lmdb.DiskError, lmdb.MemoryError,
      lmdb.ReadonlyError, lmdb.TlsFullError), OperationalError),
    ((lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError, lmdb.VersionMismatchError,
      lmdb.InvalidError, lmdb.IncompatibleError), InternalError),
    ((lmdb.BadTxnError, lmdb.BadDbiError, lmdb.BadRslotError, lmdb.InvalidParameterError,
      lmdb.NotFoundError), ProgrammingError),
)  # fmt: skip


def _translate(error: lmdb.Error) -> PersistenceError:
    """The eventsourcing (PEP 249) error for an lmdb error; raise it ``from`` the original."""
    for lmdb_types, persistence_type in _ERRORS:
        if isinstance(error, lmdb_types):
            return persistence_type(f"LMDB: {error}")
    return DatabaseError(f"LMDB: {error}")


# ---------------------------------------------------------------------------- encoding


def _text_key(text: str) -> bytes:
    """A length-prefixed key for an id or a name: unique, never empty, at most 402 bytes.

    Texts longer than 400 bytes are replaced by 0xff + SHA-256 (0xff never occurs in UTF-8).
    """
    try:
        raw = text.encode()
    except (UnicodeEncodeError, AttributeError) as e:
        raise DataError(f"cannot encode {text!r} as a key: {e}") from e
    if len(raw) > _MAX_TEXT_KEY:
        raw = b"\xff" + hashlib.sha256(raw).digest()
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


# ---------------------------------------------------------------------------- datastore


class _Gate:
    """Shared holds for transactions, an exclusive hold for remapping.

    LMDB's `set_mapsize` is safe only while this process has no transaction open, so every
    transaction holds the gate shared and resizing the map takes it exclusively. Holds are
    counted per thread so that a thread never waits for itself.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holds: dict[int, int] = {}
        self._exclusive = False

    def acquire_shared(self) -> int:
        ident = threading.get_ident()
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._holds[ident] = self._holds.get(ident, 0) + 1
        return ident

    def release_shared(self, ident: int) -> None:
        with self._cond:
            left = self._holds.pop(ident) - 1
            if left:
                self._holds[ident] = left
            self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout: float, *, drain: bool = True) -> Iterator[None]:
        """Hold new transactions back; with `drain`, also wait until none is open."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if drain and self._holds.get(threading.get_ident()):
                raise LMDBMapFullError(
                    "cannot resize the LMDB map while this thread holds a read transaction"
                    " (finish reading before writing)"
                )
            self._wait(lambda: not self._exclusive, deadline)
            self._exclusive = True
            try:
                self._wait(lambda: not (drain and self._holds), deadline)
            except BaseException:
                self._exclusive = False
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> None:
        if not self._cond.wait_for(predicate, max(0.0, deadline - time.monotonic())):
            raise LMDBMapFullError(
                "cannot resize the LMDB map: read transactions stayed open in this process"
            )


_REGISTRY: weakref.WeakValueDictionary[tuple[int, str], LMDBDatastore] = (
    weakref.WeakValueDictionary()
)
_REGISTRY_LOCK = threading.Lock()


class LMDBDatastore:
    """One open LMDB environment, shared by everything that uses the same path in a process.

    Get instances from `open` (LMDB forbids opening an environment twice in one process);
    `close` releases one reference and closes the environment with the last one. Writers in
    this process are serialised by a lock (LMDB serialises processes); a full map is grown
    by doubling while no transaction is open in this process.
    """

    grow_timeout: float = 30.0
    """Seconds a writer waits for other threads' read transactions before resizing the map."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        sync: bool = True,
        max_dbs: int = 64,
        max_readers: int = 126,
    ) -> None:
        """Open the environment; use `open` instead, which shares it."""
        self.path = os.path.realpath(path)
        self.sync = sync
        self.max_map_size = max(max_map_size, map_size)
        self._refs = 0
        self._write_lock = threading.Lock()
        self._writer: int | None = None
        self._gate = _Gate()
        self._dbs: dict[tuple[bytes, bool], lmdb._Database] = {}
        self._dbs_lock = threading.Lock()
        self._listeners: set[threading.Event] = set()
        self._listeners_lock = threading.Lock()
        files = [os.path.join(self.path, f) for f in ("data.mdb", "lock.mdb")]
        try:
            if not os.path.isdir(self.path):
                os.makedirs(self.path, mode=0o700, exist_ok=True)
                os.chmod(self.path, 0o700)
            fresh = [f for f in files if not os.path.exists(f)]
            env = lmdb.open(
                self.path, map_size=-(-map_size // _PAGE) * _PAGE, max_dbs=max_dbs,
                max_readers=max_readers, sync=sync, mode=0o600,
            )  # fmt: skip
            for f in fresh:
                os.chmod(f, 0o600)
            env.reader_check()  # free reader slots left by crashed processes
        except (lmdb.Error, OSError) as e:
            raise OperationalError(f"cannot open LMDB environment {self.path}: {e}") from e
        self._env: lmdb.Environment | None = env
        self._finalizer = weakref.finalize(self, env.close)

    @classmethod
    def open(
        cls,
        path: str | PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        sync: bool = True,
        max_dbs: int = 64,
        max_readers: int = 126,
    ) -> LMDBDatastore:
        """The process's datastore for `path`, opened on first use; counts a reference.

        Options apply when the environment is first opened, except that asking for another
        `sync` than the open one's is refused (ProgrammingError). Raises OperationalError
        when the environment cannot be opened.
        """
        key = (os.getpid(), os.path.realpath(path))
        with _REGISTRY_LOCK:
            datastore = _REGISTRY.get(key)
            if datastore is None:
                datastore = cls(
                    path, map_size=map_size, max_map_size=max_map_size, sync=sync,
                    max_dbs=max_dbs, max_readers=max_readers,
                )  # fmt: skip
                _REGISTRY[key] = datastore
            elif datastore.sync != sync:
                raise ProgrammingError(f"LMDB environment {key[1]} is open with sync={not sync}")
            datastore._refs += 1
            return datastore

    def close(self) -> None:
        """Release one reference; the last one closes the environment."""
        with _REGISTRY_LOCK:
            self._refs -= 1
            if self._refs > 0 or self._env is None:
                return
            self._env = None
            if _REGISTRY.get((os.getpid(), self.path)) is self:
                del _REGISTRY[(os.getpid(), self.path)]
        with self._write_lock:
            self._finalizer()

    @property
    def env(self) -> lmdb.Environment:
        """The open `lmdb.Environment`; raises InterfaceError once closed."""
        if self._env is None:
            raise InterfaceError(f"LMDB environment {self.path} is closed")
        return self._env

    @property
    def map_size(self) -> int:
        """The current size of this process's map, in bytes."""
        return self.env.info()["map_size"]

    def db(self, name: bytes, dupsort: bool = False) -> lmdb._Database:
        """The named database `name`, created if missing; handles are cached.

        Open every table before starting the transactions that use it: opening a new one
        inside a write transaction of the same thread raises ProgrammingError.
        """
        handle = self._dbs.get((name, dupsort))
        if handle is not None:
            return handle
        if self._writer == threading.get_ident():
            raise ProgrammingError(f"open table {name!r} before starting a write transaction")
        with self._dbs_lock:
            handle = self._dbs.get((name, dupsort))
            if handle is None:
                env = self.env
                handle = self.write_retrying(
                    lambda txn: env.open_db(name, txn=txn, dupsort=dupsort), notify=False
                )
                if handle.flags()["dupsort"] != dupsort:
                    raise ProgrammingError(f"table {name!r} exists with dupsort={not dupsort}")
                self._dbs[(name, dupsort)] = handle
        return handle

    def _begin(self, *, write: bool) -> tuple[lmdb.Transaction[bytes], int]:
        """Begin a transaction holding the gate shared; adopt a map grown by another process."""
        for _ in range(100):
            ident = self._gate.acquire_shared()
            try:
                return self.env.begin(write=write), ident
            except lmdb.MapResizedError:
                self._gate.release_shared(ident)
                with self._gate.exclusive(self.grow_timeout):
                    self.env.set_mapsize(0)
            except BaseException as e:
                self._gate.release_shared(ident)
                if isinstance(e, lmdb.Error):
                    raise _translate(e) from e
                raise
        raise OperationalError(f"LMDB map of {self.path} keeps being resized by other processes")

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction[bytes]]:
        """A read transaction: a consistent snapshot of committed data. Keep it short."""
        txn, ident = self._begin(write=False)
        try:
            yield txn
        except lmdb.Error as e:
            raise _translate(e) from e
        finally:
            with contextlib.suppress(lmdb.Error):
                txn.abort()
            self._gate.release_shared(ident)

    @contextlib.contextmanager
    def write(self, *, notify: bool = True) -> Iterator[lmdb.Transaction[bytes]]:
        """ONE write transaction: committed on normal exit (flushed when ``sync``), then
        subscribers are woken; aborted on an exception, which propagates (lmdb errors as
        eventsourcing errors). On a full map it aborts, grows the map and raises
        `LMDBMapGrownError` (retryable), or `LMDBMapFullError` at the maximum size.
        """
        if self._writer == threading.get_ident():
            raise ProgrammingError("a write transaction is already open in this thread")
        with self._write_lock:
            txn, ident = self._begin(write=True)
            self._writer = ident
            try:
                try:
                    yield txn
                    txn.commit()
                except BaseException:
                    self._gate.release_shared(ident)
                    self._abort_write(txn)
                    raise
                else:
                    self._gate.release_shared(ident)
                finally:
                    self._writer = None
            except lmdb.MapFullError as e:
                self._grow(e)
                raise LMDBMapGrownError(f"LMDB map of {self.path} grown; retry") from e
            except lmdb.Error as e:
                raise _translate(e) from e
        if notify:
            self.notify_listeners()

    def _abort_write(self, txn: lmdb.Transaction[bytes]) -> None:
        """Abort a write transaction while new read transactions are held back.

        py-lmdb 3.0's abort of a write transaction waits until no other thread is inside
        an lmdb call, without fairness: under a steady stream of short reads it may never
        return. Open but idle read transactions do not delay it, so none is waited for.
        """
        with self._gate.exclusive(self.grow_timeout, drain=False), contextlib.suppress(lmdb.Error):
            txn.abort()

    def write_retrying(
        self, fn: Callable[[lmdb.Transaction[bytes]], T], *, notify: bool = True
    ) -> T:
        """Run ``fn(txn)`` in a write transaction and commit; after a map growth, run it again.

        `fn` must have no effects outside the transaction: it may run more than once.
        """
        while True:
            try:
                with self.write(notify=notify) as txn:
                    return fn(txn)
            except LMDBMapGrownError:
                continue

    def _grow(self, cause: lmdb.MapFullError) -> None:
        """Double the map, or adopt a bigger one set by another process (no txn is open)."""
        with self._gate.exclusive(self.grow_timeout):
            env = self.env
            before = env.info()["map_size"]
            env.set_mapsize(0)  # the size recorded by the last commit, maybe bigger than ours
            if env.info()["map_size"] > before:
                return
            target = min(self.max_map_size, before * 2)
            if target <= before:
                env.set_mapsize(before)
                raise LMDBMapFullError(
                    f"LMDB map of {self.path} is full at its maximum size of {before} bytes"
                    " (raise LMDB_MAX_MAP_SIZE)"
                ) from cause
            env.set_mapsize(target)

    def listen(self, event: threading.Event) -> None:
        """Set `event` after each commit in this process (other processes: poll)."""
        with self._listeners_lock:
            self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        with self._listeners_lock:
            self._listeners.discard(event)

    def notify_listeners(self) -> None:
        with self._listeners_lock:
            for event in self._listeners:
                event.set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} sync={self.sync}>"


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
        """(notification id, state bytes) for ids start..stop inclusive, inside `txn`."""
        for nid, record in self._log_items(txn, max(start, 1), stop):
            yield nid, record[_split(record)[3] :]

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

    def wait_beyond(self, position: int, timeout: float) -> bool:
        """Block until the log holds a notification id above `position` (appended by any
        process) or `timeout` seconds pass; True if it does."""
        deadline = time.monotonic() + timeout
        event = threading.Event()
        self.datastore.listen(event)
        try:
            while True:
                event.clear()
                if (self.max_notification_id() or 0) > position:
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
