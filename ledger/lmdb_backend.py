"""The embedded backend: the log in one LMDB environment, through `ledger.lmdb`.

Events are stored by eventsourcing's application recorder of this project's LMDB persistence
module (position = notification id, one stream per subject, topic = event type, state = the
stored bytes). Beside the recorder's tables, in the SAME write transaction, this backend keeps:

- ``ledger.ids``: id (see `subject_key`) -> position, the idempotency index;
- ``ledger.merkle``: level (1 byte) + index (8 bytes) -> node hash, every complete subtree;
- ``ledger.checkpoints``: tree size -> checkpoint note.

A subject's positions (for `history`) and its next version come from the recorder's own
sequence index (``stored_events.idx``: subject + version -> position); an older ledger's
``ledger.subjects`` table, which duplicated it, is no longer written or read.

LMDB has one writer at a time across processes, so allocating positions inside the write
transaction gives gap-free positions in commit order. A commit is flushed before it returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import lmdb
from eventsourcing.persistence import PersistenceError

from ledger import merkle
from ledger.backend import AppendRequest, apply_requests
from ledger.errors import BackendUnavailableError, LedgerNotFoundError, StorageError
from ledger.lmdb import LMDBApplicationRecorder, LMDBDatastore

__all__ = ["LMDBBackend", "LMDBTxnOps", "subject_key"]

_IDS: Final = b"ledger.ids"
_MERKLE: Final = b"ledger.merkle"
_CHECKPOINTS: Final = b"ledger.checkpoints"
_META: Final = b"ledger.meta"
_SHORT_KEY: Final = 64
INITIAL_MAP: Final = 1 << 30
"""The initial LMDB map (address space, not disk: data.mdb grows as pages are used); it doubles
when full."""


def subject_key(text: str) -> bytes:
    """An LMDB key for a subject or id (LMDB keys are at most 511 bytes).

    Short texts are their own UTF-8 bytes; longer ones are 0xFF + their SHA-256 (0xFF never
    occurs in UTF-8, so the two forms cannot collide).
    """
    data = text.encode()
    return data if len(data) <= _SHORT_KEY else b"\xff" + hashlib.sha256(data).digest()


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

    def __init__(self, backend: LMDBBackend, txn: Any) -> None:
        self.raw = txn
        self._backend = backend
        self._versions: dict[str, int] = {}  # each subject's last version in this transaction

    def size(self) -> int:
        return self._backend.recorder.max_notification_id_txn(self.raw) or 0

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


class LMDBBackend:
    """The ledger in an LMDB environment directory (SPEC §6, embedded)."""

    def __init__(
        self, path: Path, *, sync: bool = True, create: bool = True, map_size: int = INITIAL_MAP
    ) -> None:
        data = path / "data.mdb"
        if not create and not data.exists():
            raise LedgerNotFoundError(f"no ledger at {path} (create one by appending to it)")
        if data.exists() and data.stat().st_size == 0:
            raise BackendUnavailableError(f"{data} is empty: not a ledger (truncated?)")
        self.url = self.location = str(path)
        try:
            self.datastore = LMDBDatastore.open(path, sync=sync, map_size=map_size)
        except (lmdb.Error, PersistenceError) as e:
            raise BackendUnavailableError(f"cannot open the ledger at {path}: {e}") from e
        self._check_not_truncated(data)
        self.recorder = LMDBApplicationRecorder(self.datastore)
        self.ids_db = self.datastore.db(_IDS)
        self.merkle_db = self.datastore.db(_MERKLE)
        self.checkpoints_db = self.datastore.db(_CHECKPOINTS)
        self.meta_db = self.datastore.db(_META)

    def _check_not_truncated(self, data: Path) -> None:
        """Refuse a data file shorter than the pages LMDB says it holds: reading past its end
        would kill the process with SIGBUS instead of raising."""
        env = self.datastore.env
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if data.exists() and data.stat().st_size < needed:
            self.datastore.close()
            raise BackendUnavailableError(
                f"{data} is truncated ({data.stat().st_size} bytes, LMDB needs {needed}): "
                "restore it from a backup or a copy"
            )

    def write(self, requests: Sequence[AppendRequest]) -> None:
        try:
            self.recorder.write_retrying(
                lambda txn: apply_requests(LMDBTxnOps(self, txn), requests)
            )
        except PersistenceError as e:
            raise StorageError(f"the ledger at {self.url} could not be written: {e}") from e

    def size(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read_stored(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        with self.recorder.read() as txn:
            last = stop if stop is not None else (self.recorder.max_notification_id_txn(txn) or 0)
            yield from self.recorder.iter_stored_txn(txn, start, last)

    def read_chunks(
        self, start: int, stop: int | None, size: int, keep: Callable[[bytes], bool] | None = None
    ) -> Iterator[list[tuple[int, bytes | None]]]:
        """`read_stored` in lists of up to `size`; with `keep`, None for the bytes of the events
        whose subject (UTF-8) it refuses (see `LMDBApplicationRecorder.iter_chunks_txn`)."""
        with self.recorder.read() as txn:
            last = stop if stop is not None else (self.recorder.max_notification_id_txn(txn) or 0)
            yield from self.recorder.iter_chunks_txn(txn, start, last, size, keep)

    def positions_of(self, subject: str) -> list[int]:
        with self.recorder.read() as txn:
            return self.recorder.notification_ids_txn(txn, subject)

    def read_nodes(self) -> merkle.NodeStore:
        return _SnapshotNodes(self)

    def read_leaves(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        with self.recorder.read() as txn:
            cursor = txn.cursor(db=self.merkle_db)
            if not cursor.set_range(_node_key(0, max(start, 1) - 1)):
                return
            for key, value in cursor:
                if key[0] != 0:
                    return
                position = int.from_bytes(key[1:], "big") + 1
                if stop is not None and position > stop:
                    return
                yield position, bytes(value)

    def get_meta(self, key: str) -> bytes | None:
        with self.recorder.read() as txn:
            value = txn.get(key.encode(), db=self.meta_db)
        return None if value is None else bytes(value)

    def put_meta(self, key: str, value: bytes, *, replace: bool = True) -> None:
        self.recorder.write_retrying(
            lambda txn: txn.put(key.encode(), value, db=self.meta_db, overwrite=replace)
        )

    def wait_beyond(self, position: int, timeout: float) -> bool:
        return self.recorder.wait_beyond(position, timeout)

    def put_checkpoint(self, size: int, note: str) -> None:
        def put(txn: Any) -> None:
            txn.put(size.to_bytes(8, "big"), note.encode(), db=self.checkpoints_db)

        self.recorder.write_retrying(put)

    def checkpoints(self) -> list[tuple[int, str]]:
        with self.recorder.read() as txn:
            return [
                (int.from_bytes(k, "big"), bytes(v).decode())
                for k, v in txn.cursor(db=self.checkpoints_db)
            ]

    def close(self) -> None:
        self.datastore.close()


class _SnapshotNodes:
    """Merkle nodes read outside a write: each lookup is its own short read transaction.

    Nodes never change once written, so mixing snapshots is safe for any size already committed.
    """

    def __init__(self, backend: LMDBBackend) -> None:
        self._backend = backend

    def get(self, level: int, index: int) -> bytes:
        with self._backend.recorder.read() as txn:
            value = txn.get(_node_key(level, index), db=self._backend.merkle_db)
        if value is None:
            raise KeyError((level, index))
        return bytes(value)

    def put(self, level: int, index: int, value: bytes) -> None:
        raise StorageError("Merkle nodes are written only by appends")
