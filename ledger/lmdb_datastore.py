"""The LMDB environment shared by every recorder and table on one path, in one process.

LMDB may open an environment only once per process, so `LMDBDatastore.open` keeps a registry
with a reference count. Writers in this process are serialised by a lock (LMDB serialises
processes); a full map is grown by doubling while no transaction is open in this process; lmdb
errors are translated into eventsourcing's PEP 249 error tree (`translate`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, TypeVar

import lmdb
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_MAP_SIZE",
    "LMDBDatastore",
    "LMDBMapFullError",
    "LMDBMapGrownError",
    "translate",
]

T = TypeVar("T")

DEFAULT_MAP_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_MAP_SIZE: Final = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)
_PAGE: Final = 4096


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


def translate(error: lmdb.Error) -> PersistenceError:
    """The eventsourcing (PEP 249) error for an lmdb error; raise it ``from`` the original."""
    for lmdb_types, persistence_type in _ERRORS:
        if isinstance(error, lmdb_types):
            return persistence_type(f"LMDB: {error}")
    return DatabaseError(f"LMDB: {error}")


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
        readonly: bool = False,
    ) -> None:
        """Open the environment; use `open` instead, which shares it."""
        self.path = os.path.realpath(path)
        self.sync = sync
        self.readonly = readonly
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
            if readonly:  # an archive: read-only files or mount, no writer beside it (no lock)
                env = lmdb.open(
                    self.path, max_dbs=max_dbs, readonly=True, lock=False, create=False,
                )  # fmt: skip
            else:
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
        readonly: bool = False,
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
                    max_dbs=max_dbs, max_readers=max_readers, readonly=readonly,
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
            if handle is None and self.readonly:
                try:
                    handle = self.env.open_db(name, create=False, dupsort=dupsort)
                except lmdb.NotFoundError as e:
                    raise OperationalError(f"LMDB environment {self.path} has no table {name!r}"
                                           " and is read-only") from e  # fmt: skip
                self._dbs[(name, dupsort)] = handle
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
                    raise translate(e) from e
                raise
        raise OperationalError(f"LMDB map of {self.path} keeps being resized by other processes")

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction[bytes]]:
        """A read transaction: a consistent snapshot of committed data. Keep it short."""
        txn, ident = self._begin(write=False)
        try:
            yield txn
        except lmdb.Error as e:
            raise translate(e) from e
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
                raise translate(e) from e
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

    def reserve(self, nbytes: int) -> None:
        """Grow the map (doubling, up to its maximum) until `nbytes` more fit beyond the pages
        in use, so that a write transaction of about that size will not find it full (no
        transaction of this process may be open: the write lock keeps other threads' out)."""
        with self._write_lock, self._gate.exclusive(self.grow_timeout):
            env = self.env
            env.set_mapsize(0)  # adopt a bigger map another process set
            info = env.info()
            used = (info["last_pgno"] + 1) * env.stat()["psize"]
            size = target = info["map_size"]
            while target - used < nbytes and target < self.max_map_size:
                target = min(self.max_map_size, target * 2)
            if target > size:
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
