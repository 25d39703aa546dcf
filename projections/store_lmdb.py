"""Stored views in the ledger's own LMDB environment (SPEC §6, embedded).

Tables, beside the log's: ``views.state`` (projection, sha256(subject) -> [subject, state]) and
``views.meta`` (the tracking position). A catch-up chunk writes both in one LMDB write
transaction, so the views and their tracking always move together. (``views.verdicts``, where
older versions kept each position's verdicts, is no longer written: see `projections.views`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import msgspec

from ledger.backend import TxnOps
from ledger.lmdb_backend import LMDBBackend, subject_key
from projections.views import Carry, ViewTxn, catch_up_txn

__all__ = ["LMDBViews"]

_STATE: Final = b"views.state"
_VERDICTS: Final = b"views.verdicts"
_META: Final = b"views.meta"
_TRACKING: Final = b"tracking"
T = TypeVar("T")
_pair = msgspec.msgpack.Decoder(tuple[str, bytes])
_encoder = msgspec.msgpack.Encoder()


class _LMDBViewTxn:
    """`ViewTxn` over one LMDB transaction (read-only use is fine with a read transaction)."""

    def __init__(self, views: LMDBViews, txn: Any) -> None:
        self._views = views
        self._txn = txn

    def tracking(self) -> int:
        value = self._txn.get(_TRACKING, db=self._views.meta_db)
        return 0 if value is None else int.from_bytes(value, "big")

    def load(self, projection: str, subject: str) -> bytes | None:
        value = self._txn.get(_key(projection, subject), db=self._views.state_db)
        return None if value is None else _pair.decode(value)[1]

    def scan(self, projection: str) -> Iterator[tuple[str, bytes]]:
        prefix = projection.encode() + b"\x00"
        cursor = self._txn.cursor(db=self._views.state_db)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            yield _pair.decode(value)

    def size(self) -> int:
        return self._views.backend.recorder.max_notification_id_txn(self._txn) or 0

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._views.backend.recorder.iter_stored_txn(self._txn, start, stop)

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        key = _key(projection, subject)
        if data is None:
            self._txn.delete(key, db=self._views.state_db)
        else:
            self._txn.put(key, _encoder.encode((subject, data)), db=self._views.state_db)

    def set_tracking(self, position: int) -> None:
        self._txn.put(_TRACKING, position.to_bytes(8, "big"), db=self._views.meta_db)


def _key(projection: str, subject: str) -> bytes:
    return projection.encode() + b"\x00" + subject_key(subject)


class LMDBViews:
    """The stored views of one LMDB ledger."""

    def __init__(self, backend: LMDBBackend) -> None:
        self.backend = backend
        self.state_db = backend.datastore.db(_STATE)
        self.verdicts_db = backend.datastore.db(_VERDICTS)
        self.meta_db = backend.datastore.db(_META)

    def catch_up_chunk(
        self,
        limit: int,
        progress: Callable[[int], None] | None = None,
        carry: Carry | None = None,
    ) -> tuple[int, int]:
        """Fold one chunk in one write transaction; returns (tracking, size)."""
        result: tuple[int, int] = self.backend.recorder.write_retrying(
            lambda txn: catch_up_txn(_LMDBViewTxn(self, txn), limit, progress, carry)
        )
        return result

    def transact(self, fn: Callable[[ViewTxn], T]) -> T:
        """`fn` over the views in one write transaction (run again if the map had to grow)."""
        return self.backend.recorder.write_retrying(lambda txn: fn(_LMDBViewTxn(self, txn)))

    def reader(self) -> Iterator[ViewTxn]:
        """A consistent read snapshot of the views (a generator-based context)."""
        with self.backend.recorder.read() as txn:
            yield _LMDBViewTxn(self, txn)

    def over(self, ops: TxnOps) -> ViewTxn:
        """The views as seen inside a ledger write transaction (for strict appends)."""
        return _LMDBViewTxn(self, ops.raw)

    def reset(self) -> None:
        """Drop every stored state and the tracking position (and the verdicts older versions
        kept); a rebuild follows."""

        def drop(txn: Any) -> None:
            for db in (self.state_db, self.verdicts_db, self.meta_db):
                txn.drop(db, delete=False)

        self.backend.recorder.write_retrying(drop)
