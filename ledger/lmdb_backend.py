"""The embedded backend: the log in one LMDB environment, through `ledger.lmdb`.

Events are stored by eventsourcing's application recorder of this project's LMDB persistence
module (position = notification id, one stream per subject, topic = event type, state = the
stored bytes). Beside the recorder's tables, in the SAME write transaction, this backend keeps:

- ``ledger.ids``: id (see `subject_key`) -> position, the idempotency index;
- ``ledger.merkle``: level (1 byte) + index (8 bytes) -> node hash, every complete subtree;
- ``ledger.checkpoints``: tree size -> checkpoint note;
- ``ledger.meta``: ledger-wide settings, and the storage layout version (`FORMAT`).

A subject's positions (for `history`) and its next version come from the recorder's own
sequence index (``stored_events.idx``: subject + version -> position); an older ledger's
``ledger.subjects`` table, which duplicated it, is no longer written or read.

LMDB has one writer at a time across processes, so allocating positions inside the write
transaction gives gap-free positions in commit order. A commit is flushed before it returns.

Staged appends. A write transaction keeps every page it dirties in memory until it commits
(about 570 bytes an event with the indexes and the tree), so a big append (`ledger.bulk`) of
more than `bulk.COMMIT` events is committed that many at a time instead, all or nothing still:

- it holds ``append.lock`` (beside ``data.mdb``) exclusively with ``flock`` from start to end;
- its first commit sets the marker ``pending-append`` in ``ledger.meta`` (the log's size before
  it; the layout becomes `FORMAT_STAGED`, so an older adminchain refuses the files rather than
  read the hidden events); every reader's size is the smaller of the log's last position and
  the marker (`_visible`), so the positions beyond, their index entries and tree nodes are
  never seen (a tree of a size up to the marker reads no node of theirs);
- the settings its chunks set and the views' new states wait in memory (`ledger.backend.Stage`,
  a state per subject, not per event) for its last commit, which writes them and removes the
  marker: the whole append appears at once;
- another writer that meets the marker waits for the lock (shared), and then, if the marker is
  still there, its writer died: it removes the hidden events (`_sweep`) before writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import lmdb
from eventsourcing.persistence import PersistenceError

from ledger import bulk, lmdb_files, merkle
from ledger.backend import (
    AppendRequest,
    BulkChunk,
    Index,
    IndexCheck,
    ReadOnlySnapshot,
    Stage,
    StagedOps,
    apply_chunks,
    apply_requests,
    last_recorded_at,
    start_source,
    stored_event,
)
from ledger.errors import (
    BackendUnavailableError,
    LedgerError,
    LedgerNotFoundError,
    StorageError,
)
from ledger.lmdb import ChunkKeep, LMDBApplicationRecorder, LMDBDatastore, text_key
from ledger.lmdb_datastore import LMDBMapGrownError

__all__ = ["FORMAT", "FORMAT_KEY", "LMDBBackend", "LMDBTxnOps", "subject_key"]

T = TypeVar("T")

_IDS: Final = b"ledger.ids"
_MERKLE: Final = b"ledger.merkle"
_CHECKPOINTS: Final = b"ledger.checkpoints"
_META: Final = b"ledger.meta"
_SHORT_KEY: Final = 64
FORMAT: Final = b"adminchain-lmdb/1"
"""The storage layout version, in ``ledger.meta`` under `FORMAT_KEY` (as PostgreSQL's schema
format): 1 is the layout this module writes. A ledger written before the marker existed is
layout 1; it gets the marker on its first open for writing."""
FORMAT_KEY: Final = "format"
FORMAT_STAGED: Final = b"adminchain-lmdb/1+staged"
"""The layout while a staged append is under way or was cut short: layout 1 with a
``pending-append`` marker that hides the log's end (an older adminchain refuses it)."""
PENDING_KEY: Final = b"pending-append"
"""In ``ledger.meta`` while a staged append is under way: the log's visible size (8 bytes,
big-endian), then who writes it (for messages)."""
LOCK_FILE: Final = "append.lock"
_SWEEP: Final = 20_000
"""Hidden events removed per transaction after a staged append was cut short."""
INITIAL_MAP: Final = 1 << 30
"""The initial LMDB map (address space, not disk: data.mdb grows as pages are used); it doubles
when full."""


def subject_key(text: str) -> bytes:
    """An LMDB key for a subject or id: `ledger.lmdb.text_key` with texts up to 64 bytes kept."""
    return text_key(text, _SHORT_KEY)


def _node_key(level: int, index: int) -> bytes:
    return level.to_bytes(1, "big") + index.to_bytes(8, "big")


class _Nodes:
    """Merkle nodes in the ``ledger.merkle`` table, through one transaction."""

    def __init__(self, txn: Any, db: Any) -> None:
        self._txn = txn
        self._db = db

    def get(self, level: int, index: int) -> bytes:
        value = self._txn.get(_node_key(level, index), db=self._db)
        if value is None:
            raise KeyError((level, index))
        return bytes(value)

    def put(self, level: int, index: int, value: bytes) -> None:
        self._txn.put(_node_key(level, index), value, db=self._db)

    def put_run(self, level: int, start: int, values: Sequence[bytes]) -> None:
        """Store nodes (level, start), (level, start + 1), … with one `putmulti`."""
        prefix = level.to_bytes(1, "big")
        items = [(prefix + i.to_bytes(8, "big"), v) for i, v in enumerate(values, start)]
        consumed, added = self._txn.cursor(db=self._db).putmulti(items)
        if added != consumed:
            raise StorageError(f"Merkle nodes at level {level} from {start} were not all stored")


class LMDBTxnOps:
    """`ledger.backend.TxnOps` over one LMDB write transaction."""

    def __init__(self, backend: LMDBBackend, txn: Any, *, staging: bool = False) -> None:
        self.raw = txn
        self._backend = backend
        self._staging = staging
        self._versions: dict[str, int] = {}  # each subject's last version in this transaction

    def own(self) -> LMDBTxnOps:
        return self

    def size(self) -> int:
        """The log's size: its visible size (see "Staged appends"), or, in a transaction of
        the staged append itself, its last position."""
        if self._staging:
            return self._backend.recorder.max_notification_id_txn(self.raw) or 0
        return self._backend.visible(self.raw)

    def lookup_id(self, event_id: str) -> int | None:
        value = self.raw.get(subject_key(event_id), db=self._backend.ids_db)
        return None if value is None else int.from_bytes(value, "big")

    def insert(self, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        backend = self._backend
        txn = self.raw
        recorder = backend.recorder
        versions = self._versions
        numbered: list[tuple[str, int, str, bytes]] = []
        for subject, topic, _event_id, data in rows:
            version = versions.get(subject)
            if version is None:
                version = recorder.last_version_txn(txn, subject) or 0
            versions[subject] = version = version + 1
            numbered.append((subject, version, topic, data))
        positions = recorder.insert_rows_txn(txn, numbered)
        ids = [
            (subject_key(row[2]), position.to_bytes(8, "big"))
            for row, position in zip(rows, positions, strict=True)
        ]
        consumed, added = txn.cursor(db=backend.ids_db).putmulti(ids)
        if added != consumed:
            raise StorageError("event ids were not all stored")
        return list(positions)

    def nodes(self) -> merkle.NodeStore:
        return _Nodes(self.raw, self._backend.merkle_db)

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._backend.recorder.iter_stored_txn(self.raw, start, stop)

    def get_meta(self, key: str) -> bytes | None:
        value = self.raw.get(key.encode(), db=self._backend.meta_db)
        return None if value is None else bytes(value)

    def put_meta(self, key: str, value: bytes) -> None:
        self.raw.put(key.encode(), value, db=self._backend.meta_db)


class LMDBBackend:
    """The ledger in an LMDB environment directory (SPEC §6, embedded).

    Every storage error, a closed environment's included, reaches callers as a `StorageError`.
    """

    kind: Final = "lmdb"

    def __init__(
        self, path: Path, *, sync: bool = True, create: bool = True, map_size: int = INITIAL_MAP
    ) -> None:
        data = path / "data.mdb"
        lmdb_files.check_directory(path, create=create)
        if not create and not data.exists():
            raise LedgerNotFoundError(f"no ledger at {path} (create one by appending to it)")
        if data.exists() and data.stat().st_size == 0:
            raise BackendUnavailableError(f"{data} is empty: not a ledger (truncated?)")
        fresh = not data.exists()
        if fresh:
            lmdb_files.check_space(path)
        made = [p for p in (path, *path.parents) if not p.exists()]
        self.url = self.location = str(path)
        self._pages_checked = False
        self.read_only = not create and not _writable(path)
        try:
            self.datastore = LMDBDatastore.open(
                path, sync=sync, map_size=map_size, readonly=self.read_only
            )
        except (lmdb.Error, PersistenceError) as e:
            if fresh:
                _remove_made(path, made)
            raise BackendUnavailableError(
                f"cannot open the ledger at {path}: {e}{lmdb_files.disk_note(path)}"
            ) from e
        try:
            self._check_not_truncated(data)
            self.recorder = LMDBApplicationRecorder(self.datastore)
            self.ids_db = self.datastore.db(_IDS)
            self.merkle_db = self.datastore.db(_MERKLE)
            self.checkpoints_db = self.datastore.db(_CHECKPOINTS)
            self.meta_db = self.datastore.db(_META)
        except (lmdb.Error, PersistenceError) as e:
            failure = self._failure(e, "be opened")
            self.datastore.close()
            if fresh:
                _remove_made(path, made)
            raise failure from e
        except BaseException:
            self.datastore.close()
            raise
        self._check_format(path, write=create)

    def _failure(self, error: BaseException, what: str) -> StorageError:
        """A storage error of this ledger, said plainly: a full disk named as one, a damaged
        file with the zeroed page if there is one."""
        if _damaged(error):
            zeroed = self._zeroed_page()
            return StorageError(
                f"the ledger at {self.url} is damaged ({error})"
                + (f"; {zeroed}" if zeroed else "")
                + ": restore it from a backup or a copy"
            )
        note = lmdb_files.disk_note(Path(self.url))
        if "Input/output error" in str(error) and note:
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return StorageError(f"the ledger at {self.url} could not {what}: {error}{note}")

    def _zeroed_page(self) -> str | None:
        """Which page of data.mdb is all zeros, said as a sentence (None: none is)."""
        try:
            env = self.datastore.env
            page_size, pages = env.stat()["psize"], env.info()["last_pgno"] + 1
            data = Path(self.url) / "data.mdb"
            page = lmdb_files.zeroed_page(data, pages, page_size)
        except (lmdb.Error, PersistenceError, OSError, ValueError):
            return None
        if page is None:
            return None
        return f"page {page} of {data} (bytes {page * page_size}…) is all zeros"

    def check_pages(self) -> None:
        """Refuse a data file with a zeroed page (LMDB would abort on reaching it); once."""
        if self._pages_checked:
            return
        zeroed = self._zeroed_page()
        if zeroed is not None:
            raise StorageError(
                f"the ledger at {self.url} is damaged: {zeroed}: restore it from a backup or a copy"
            )
        self._pages_checked = True

    def _check_not_truncated(self, data: Path) -> None:
        """Refuse a data file shorter than the pages LMDB says it holds: reading past its end
        would kill the process with SIGBUS instead of raising."""
        env = self.datastore.env
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if data.exists() and data.stat().st_size < needed:
            raise BackendUnavailableError(
                f"{data} is truncated ({data.stat().st_size} bytes, LMDB needs {needed}): "
                "restore it from a backup or a copy"
            )

    def _check_format(self, path: Path, *, write: bool) -> None:
        """Refuse a layout this version does not know; mark an unmarked ledger (layout 1) when
        opened for writing (a reader leaves the files as they are)."""
        key = FORMAT_KEY.encode()
        try:
            with self.recorder.read() as txn:
                found = txn.get(key, db=self.meta_db)
            if found is None and write and not self.read_only:
                self.recorder.write_retrying(
                    lambda txn: txn.put(key, FORMAT, db=self.meta_db, overwrite=False)
                )
                return
        except (lmdb.Error, PersistenceError) as e:
            failure: LedgerError = (
                self._failure(e, "be opened")  # a damaged file: named, with its zeroed page
                if _damaged(e)
                else BackendUnavailableError(f"cannot open the ledger at {path}: {e}")
            )
            self.datastore.close()
            raise failure from e
        if found is not None and bytes(found) not in (FORMAT, FORMAT_STAGED):
            self.datastore.close()
            raise StorageError(
                f"the ledger at {path} has storage layout {bytes(found).decode(errors='replace')}, "
                f"not {FORMAT.decode()}: it was written by another version of adminchain"
            )

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """eventsourcing's and LMDB's errors (a closed environment, a damaged or full file)
        as `StorageError` (see `_failure`)."""
        try:
            yield
        except (lmdb.Error, PersistenceError) as e:
            raise self._failure(e, what) from e

    def transaction(self, body: Callable[[Any], T], *, what: str = "be written") -> T:
        """`body(txn)` in one durable write transaction (run again whole if the map grows), for
        tables beside the log's (the stored views): `LMDBTxnOps(self, txn)` reads the log."""
        if self.read_only:
            raise self._read_only()
        with self._translated(what):
            result: T = self.recorder.write_retrying(body)
        return result

    @contextlib.contextmanager
    def snapshot(self, *, what: str = "be read") -> Iterator[Any]:
        """One read transaction: a consistent snapshot of every table."""
        with self._reads(what) as reads:
            yield reads.txn

    def write(self, requests: Sequence[AppendRequest]) -> None:
        (request, *more) = requests
        if not more and request.stageable and request.spooled > bulk.COMMIT:
            self._write_staged(request)
            return
        self._log_write(lambda txn: apply_requests(LMDBTxnOps(self, txn), requests))

    # ------------------------------------------------------------ staged appends

    def visible(self, txn: Any) -> int:
        """The log's size as readers see it in `txn`: its last position, or the marker of a
        staged append under way (or cut short) when there is one."""
        last: int = self.recorder.max_notification_id_txn(txn) or 0
        marker = txn.get(PENDING_KEY, db=self.meta_db)
        return last if marker is None else min(last, int.from_bytes(marker[:8], "big"))

    def _log_write(self, body: Callable[[Any], T]) -> T:
        """`body(txn)` in one write transaction that writes the log: never beside a staged
        append (waits for it to end; removes what one that died left)."""

        def guarded(txn: Any) -> T:
            if txn.get(PENDING_KEY, db=self.meta_db) is not None:
                raise _StagedAppendPendingError
            return body(txn)

        while True:
            try:
                return self.transaction(guarded)
            except _StagedAppendPendingError:
                with self._append_lock(exclusive=False):
                    if self._marked():
                        self._sweep()  # the marker is still there: its writer is gone

    @contextlib.contextmanager
    def _append_lock(self, *, exclusive: bool) -> Iterator[None]:
        """``append.lock`` held (exclusive: by a staged append; shared: by a writer waiting for
        one to end), released on exit; blocks until it is free."""
        if self.read_only:
            raise self._read_only()
        path = Path(self.url) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"the ledger at {self.url} could not be locked: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _marked(self) -> bool:
        """Whether the marker of a staged append is there (see "Staged appends")."""
        with self.recorder.read() as txn:
            return txn.get(PENDING_KEY, db=self.meta_db) is not None

    def _sweep(self) -> None:
        """Remove the hidden events of a staged append whose writer died, from the end, a
        transaction at a time, then the marker (the caller holds ``append.lock``)."""
        while not self.recorder.write_retrying(self._sweep_step):
            pass

    def _sweep_step(self, txn: Any) -> bool:
        marker = txn.get(PENDING_KEY, db=self.meta_db)
        if marker is None:
            return True
        visible = int.from_bytes(marker[:8], "big")
        last = self.recorder.max_notification_id_txn(txn) or 0
        first = max(visible + 1, last - _SWEEP + 1)
        if last > visible:
            states = self.recorder.delete_tail_txn(txn, first)
            for position, state in enumerate(states, first):
                key = subject_key(stored_event(position, state).id or "")
                found = txn.get(key, db=self.ids_db)
                if found is not None and int.from_bytes(found, "big") == position:
                    txn.delete(key, db=self.ids_db)
            _drop_nodes_beyond(txn, self.merkle_db, first - 1)
        if first - 1 > visible:
            return False
        txn.delete(PENDING_KEY, db=self.meta_db)
        txn.put(FORMAT_KEY.encode(), FORMAT, db=self.meta_db)
        return True

    def _write_staged(self, request: AppendRequest) -> None:
        """A big append in commits of `bulk.COMMIT` events kept hidden by the marker until the
        last (see "Staged appends"); all or nothing: a failure removes what was committed."""
        if self.read_only:
            raise self._read_only()
        with self._append_lock(exclusive=True), self._translated("be written"):
            if self._marked():
                self._sweep()  # a marker now is one a writer that died left
            while True:
                try:
                    self._stage(request)
                except LMDBMapGrownError:  # the map grew mid-way: start again, from nothing
                    self._sweep()
                except BaseException:
                    with contextlib.suppress(Exception):
                        if self._marked():
                            self._sweep()
                    raise
                else:
                    return

    def _stage(self, request: AppendRequest) -> None:
        assert request.source is not None
        stage = Stage()
        start_source(request)
        marker = b""
        floor = None
        for group in _commits(request.source()):
            data = sum(len(row[3]) for chunk in group for row in chunk.rows)
            self.datastore.reserve(16 * data + (64 << 20))
            with self.datastore.write(notify=False) as txn:  # a map growth raises: see caller
                ops = LMDBTxnOps(self, txn, staging=True)
                if not marker:
                    size = ops.size()
                    floor = last_recorded_at(ops)
                    owner = f" {os.getpid()}@{socket.gethostname()}".encode()
                    marker = size.to_bytes(8, "big") + owner
                    txn.put(PENDING_KEY, marker, db=self.meta_db)
                    txn.put(FORMAT_KEY.encode(), FORMAT_STAGED, db=self.meta_db)
                apply_chunks(StagedOps(ops, stage), request, group, floor)

        def finish(txn: Any) -> None:
            stage.finish(LMDBTxnOps(self, txn, staging=True))
            txn.delete(PENDING_KEY, db=self.meta_db)
            txn.put(FORMAT_KEY.encode(), FORMAT, db=self.meta_db)

        self.recorder.write_retrying(finish)

    @contextlib.contextmanager
    def _reads(self, what: str = "be read") -> Iterator[_Reads]:
        """One read transaction; damage LMDB reports (MDB_CORRUPTED, MDB_PAGE_NOTFOUND) comes
        out as a `StorageError`."""
        try:
            with self.recorder.read() as txn:
                yield _Reads(self, txn)
        except (lmdb.Error, PersistenceError) as e:
            raise self._failure(e, what) from e

    def size(self) -> int:
        with self._reads() as reads:
            return reads.size()

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        if start <= 1 and (stop is None or stop > 1):
            self.check_pages()  # reading the log from its start: LMDB must not abort on the way
        with self._reads() as reads:
            yield from reads.read_stored(start, stop)

    def read_chunks(
        self, start: int, stop: int | None, size: int, keep: ChunkKeep | None = None
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        """`read_stored` in lists of up to `size`; with `keep`, None for the bytes of the events
        it refuses by subject and type (see `LMDBApplicationRecorder.iter_chunks_txn`)."""
        if start <= 1:  # reading the whole log: make sure LMDB will not abort on the way
            self.check_pages()
        with self._reads() as reads:
            yield from reads.read_chunks(start, stop, size, keep)

    def read_kept(
        self, start: int, stop: int | None, size: int, keep: ChunkKeep
    ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
        """The events `keep` takes by subject and type, (position, stored bytes), in lists from
        chunks of `size` positions, each with its last position, through one snapshot (see
        `LMDBApplicationRecorder.iter_kept_txn`: it stops before a missing position)."""
        if start <= 1:  # reading the whole log: make sure LMDB will not abort on the way
            self.check_pages()
        with self._reads() as reads:
            yield from reads.read_kept(start, stop, size, keep)

    def positions_of(self, subject: str, skip: int = 0) -> list[int]:
        with self._reads() as reads:
            return reads.positions_of(subject, skip)

    def read_nodes(self) -> merkle.NodeStore:
        return _SnapshotNodes(self)

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        with self._reads() as reads:
            yield from reads.read_leaves(start, stop)

    def get_meta(self, key: str) -> bytes | None:
        with self._reads() as reads:
            return reads.get_meta(key)

    def table(self, name: bytes) -> Any:
        """A named table of this ledger's environment (for the stored views beside the log)."""
        try:
            return self.datastore.db(name)
        except (lmdb.Error, PersistenceError) as e:
            raise self._failure(e, "be opened") from e

    def _read_only(self) -> StorageError:
        return StorageError(
            f"the ledger at {self.url} is read-only (its files or file system): it can be "
            "verified, read and replayed, not written"
        )

    def index_check(self) -> IndexCheck:
        return _index_check(self, self._scan_in_read)

    def _scan_in_read(self, scan: Callable[[Any], Iterator[T]]) -> Iterator[T]:
        with self._reads() as reads:
            yield from scan(reads.txn)

    def rebuild_indexes(self) -> int:
        """Write the id index and the subject (sequence) index again from the log, in one write
        transaction: nothing else changes."""

        def rebuild(txn: Any) -> int:
            count = self.recorder.rebuild_index_txn(txn)
            txn.drop(self.ids_db, delete=False)
            ids = []
            for position, stored in self.recorder.iter_stored_txn(txn, 1, 1 << 63):
                event_id = stored_event(position, stored).id or ""
                ids.append((subject_key(event_id), position.to_bytes(8, "big")))
            ids.sort()
            txn.cursor(db=self.ids_db).putmulti(ids, overwrite=False)
            return count

        return self._log_write(rebuild)

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[_Reads]:
        """The committed log as of now, every read through ONE read transaction: what an audit
        compares is one consistent state, whatever is appended meanwhile."""
        self.check_pages()
        with self._reads() as reads:
            yield reads

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        if key == FORMAT_KEY:
            raise StorageError("the 'format' setting belongs to the backend")
        self.transaction(
            lambda txn: txn.put(key.encode(), value, db=self.meta_db, overwrite=replace)
        )

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        start = prefix.encode()
        with self.recorder.read() as txn:
            cursor = txn.cursor(db=self.meta_db)
            if not cursor.set_range(start):
                return []
            items = []
            for key, value in cursor:
                if not bytes(key).startswith(start):
                    break
                items.append((bytes(key).decode(), bytes(value)))
            return items

    def wait_beyond(self, position: int, timeout: float) -> bool:
        with self._translated("be read"):
            return self.recorder.wait_beyond(position, timeout, self.size)

    def put_checkpoint(self, size: int, note: str) -> None:
        def put(txn: Any) -> None:
            txn.put(size.to_bytes(8, "big"), note.encode(), db=self.checkpoints_db)

        self.transaction(put)

    def checkpoints(self) -> list[tuple[int, str]]:
        with self._reads() as reads:
            return reads.checkpoints()

    def close(self) -> None:
        self.datastore.close()


def _commits(chunks: Iterator[BulkChunk]) -> Iterator[list[BulkChunk]]:
    """A staged append's chunks, in groups of at least `bulk.COMMIT` events (one commit each;
    the last may hold fewer)."""
    group: list[BulkChunk] = []
    count = 0
    for chunk in chunks:
        group.append(chunk)
        count += len(chunk.rows)
        if count >= bulk.COMMIT:
            yield group
            group, count = [], 0
    if group:
        yield group


class _StagedAppendPendingError(Exception):
    """A write met the marker of a staged append (see "Staged appends")."""


def _drop_nodes_beyond(txn: Any, db: Any, size: int) -> None:
    """Delete every Merkle node that is not a complete subtree of the first `size` leaves: at
    each level, those from index ``size >> level`` on (what a cut-short staged append left)."""
    cursor = txn.cursor(db=db)
    for level in range(64):
        if not cursor.set_range(_node_key(level, size >> level)):
            return
        while cursor.key()[:1] == level.to_bytes(1, "big"):
            if not cursor.delete():
                break


def _writable(path: Path) -> bool:
    """Whether this process may write the ledger's directory and files (else it is opened
    read-only: an archive, a read-only mount)."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return False
    files = [path / "data.mdb", path / "lock.mdb"]
    return os.access(path, os.W_OK) and all(os.access(f, os.W_OK) for f in files if f.exists())


def _remove_made(path: Path, made: list[Path]) -> None:
    """Remove a ledger directory this process just made (and the parents it made)."""
    for name in ("data.mdb", "lock.mdb"):
        with contextlib.suppress(OSError):
            (path / name).unlink()
    for directory in made:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _index_check(
    backend: LMDBBackend,
    run: Callable[[Callable[[Any], Iterator[list[tuple[bytes, int]]]]], Any],
) -> IndexCheck:
    """The id index and the subject (sequence) index of `backend`, each scanned by ``run(scan)``
    (inside a transaction `run` provides)."""
    recorder, ids_db = backend.recorder, backend.ids_db
    prefixes: dict[str, bytes] = {}  # subjects repeat: each one's prefix is made once

    def prefix(subject: str) -> bytes:
        found = prefixes.get(subject)
        if found is None:
            found = prefixes[subject] = recorder.sequence_prefix(subject)
            if len(prefixes) > 1 << 16:
                prefixes.clear()
        return found

    def ids(txn: Any) -> Iterator[list[tuple[bytes, int]]]:
        cursor = txn.cursor(db=ids_db).iternext()
        while chunk := list(itertools.islice(cursor, 1 << 12)):
            yield [(key, int.from_bytes(value, "big")) for key, value in chunk]

    def visible(scan: Callable[[Any], Iterator[list[tuple[bytes, int]]]]) -> Any:
        """`scan` without the entries of a staged append's hidden positions."""

        def scan_visible(txn: Any) -> Iterator[list[tuple[bytes, int]]]:
            size = backend.visible(txn)
            if size == (recorder.max_notification_id_txn(txn) or 0):  # nothing hidden
                return scan(txn)
            return ([entry for entry in chunk if entry[1] <= size] for chunk in scan(txn))

        return lambda: run(scan_visible)

    return IndexCheck(
        [
            Index("id index", lambda e: subject_key(e.id or ""), visible(ids), unique=True),
            Index(
                "subject index", lambda e: prefix(e.subject), visible(recorder.index_entries_txn)
            ),
        ]
    )


def _damaged(error: BaseException) -> bool:
    """Whether LMDB found the data file damaged (MDB_CORRUPTED, MDB_PAGE_NOTFOUND)."""
    return isinstance(error, lmdb.CorruptedError | lmdb.PageNotFoundError) or any(
        code in str(error) for code in ("MDB_CORRUPTED", "MDB_PAGE_NOTFOUND")
    )


class _Reads(ReadOnlySnapshot):
    """The reading half of `LMDBBackend`, through one read transaction (see `read_snapshot`)."""

    kind: Final = "lmdb"

    def __init__(self, backend: LMDBBackend, txn: Any) -> None:
        self._backend, self._txn = backend, txn
        self.url, self.location = backend.url, backend.location

    @property
    def txn(self) -> Any:
        """The read transaction."""
        return self._txn

    def size(self) -> int:
        return self._backend.visible(self._txn)

    def hidden(self) -> tuple[int, int] | None:
        """The first and last positions a staged append hides from this snapshot (under way, or
        cut short: the next writer removes them), else None."""
        last = self._backend.recorder.max_notification_id_txn(self._txn) or 0
        visible = self.size()
        return (visible + 1, last) if last > visible else None

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        last = self.size() if stop is None else min(stop, self.size())
        return self._backend.recorder.iter_stored_txn(self._txn, start, last)

    def read_chunks(
        self, start: int, stop: int | None, size: int, keep: ChunkKeep | None = None
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        last = self.size() if stop is None else min(stop, self.size())
        return self._backend.recorder.iter_chunks_txn(self._txn, start, last, size, keep)

    def read_kept(
        self, start: int, stop: int | None, size: int, keep: ChunkKeep
    ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
        last = self.size() if stop is None else min(stop, self.size())
        return self._backend.recorder.iter_kept_txn(self._txn, start, last, size, keep)

    def positions_of(self, subject: str, skip: int = 0) -> list[int]:
        positions = self._backend.recorder.notification_ids_txn(self._txn, subject, skip)
        if positions and positions[-1] > (size := self.size()):  # a staged append's, hidden
            return [p for p in positions if p <= size]
        return positions

    def read_nodes(self) -> merkle.NodeStore:
        return _Nodes(self._txn, self._backend.merkle_db)

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        last = self.size() if stop is None else min(stop, self.size())
        cursor = self._txn.cursor(db=self._backend.merkle_db)
        if not cursor.set_range(_node_key(0, max(start, 1) - 1)):
            return
        for key, value in cursor:
            if key[0] != 0:
                return
            position = int.from_bytes(key[1:], "big") + 1
            if position > last:
                return
            yield position, bytes(value)

    def get_meta(self, key: str) -> bytes | None:
        value = self._txn.get(key.encode(), db=self._backend.meta_db)
        return None if value is None else bytes(value)

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        return self._backend.meta_items(prefix)

    def checkpoints(self) -> list[tuple[int, str]]:
        return [
            (int.from_bytes(k, "big"), bytes(v).decode())
            for k, v in self._txn.cursor(db=self._backend.checkpoints_db)
        ]

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[_Reads]:
        yield self

    def index_check(self) -> IndexCheck:
        return _index_check(self._backend, lambda scan: scan(self._txn))

    def wait_beyond(self, position: int, timeout: float) -> bool:
        return self._backend.wait_beyond(position, timeout)


class _SnapshotNodes:
    """Merkle nodes read outside a write: each lookup is its own short read transaction.

    Nodes never change once written, so mixing snapshots is safe for any size already committed.
    """

    def __init__(self, backend: LMDBBackend) -> None:
        self._backend = backend

    def get(self, level: int, index: int) -> bytes:
        with self._backend.snapshot() as txn:
            value = txn.get(_node_key(level, index), db=self._backend.merkle_db)
        if value is None:
            raise KeyError((level, index))
        return bytes(value)

    def get_span(self, level: int, start: int, count: int) -> bytes:
        """Nodes (level, start) .. (level, start + count - 1) concatenated, from one read
        transaction (a tlog tile: `ledger.tiles`); `KeyError` naming the first one missing."""
        backend = self._backend
        out = bytearray()
        with backend.recorder.read() as txn:
            cursor = txn.cursor(db=backend.merkle_db)
            expected = start
            if cursor.set_key(_node_key(level, start)):
                for key, value in cursor:
                    if expected == start + count or key != _node_key(level, expected):
                        break
                    out += value
                    expected += 1
        if expected != start + count:
            raise KeyError((level, expected))
        return bytes(out)

    def put(self, level: int, index: int, value: bytes) -> None:
        raise StorageError("Merkle nodes are written only by appends")
