"""Stored views in the ledger's own LMDB environment (SPEC §6, embedded).

Tables, beside the log's: ``views.state`` (projection, sha256(subject) -> [subject, state]) and
``views.meta`` (the tracking position). A catch-up chunk writes both in one LMDB write
transaction, so the views and their tracking always move together. (``views.verdicts``, where
older versions kept each position's verdicts, is no longer written: see `projections.views`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar, cast

import msgspec

from ledger.backend import TxnOps
from ledger.events import Event
from ledger.lmdb import ChunkKeep
from ledger.lmdb_backend import LMDBBackend, LMDBTxnOps, subject_key
from projections.base import Verdict
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

    def __init__(self, views: LMDBViews, txn: Any, log: LMDBTxnOps | None = None) -> None:
        self._views = views
        self._txn = txn
        self._log = LMDBTxnOps(views.backend, txn) if log is None else log
        self._tracking: int | None = None  # written by `flush`

    def tracking(self) -> int:
        if self._tracking is not None:
            return self._tracking
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
        return self._log.size()

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._log.read_stored(start, stop)

    def read_batches(self, start: int, stop: int, size: int) -> Iterator[list[tuple[int, bytes]]]:
        """`read_stored` in lists of up to `size`, from one loop (catch-up's read path)."""
        stop = min(stop, self.size())
        chunks = self._views.backend.recorder.iter_chunks_txn(self._txn, start, stop, size)
        return cast("Iterator[list[tuple[int, bytes]]]", chunks)  # no `keep`: no None

    def read_kept(
        self, start: int, stop: int, size: int, keep: ChunkKeep
    ) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
        """The stored events start..stop that `keep` takes by subject and type, from their
        records' headers (`projections.views.fold_part`'s read path)."""
        stop = min(stop, self.size())
        return self._views.backend.recorder.iter_kept_txn(self._txn, start, stop, size, keep)

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        key = _key(projection, subject)
        if data is None:
            self._txn.delete(key, db=self._views.state_db)
        else:
            self._txn.put(key, _encoder.encode((subject, data)), db=self._views.state_db)

    def set_tracking(self, position: int) -> None:
        self._tracking = position

    def flush(self) -> None:
        """Write the tracking position."""
        if self._tracking is not None:
            self._txn.put(_TRACKING, self._tracking.to_bytes(8, "big"), db=self._views.meta_db)
            self._tracking = None


def _key(projection: str, subject: str) -> bytes:
    return projection.encode() + b"\x00" + subject_key(subject)


class LMDBViews:
    """The stored views of one LMDB ledger."""

    def __init__(self, backend: LMDBBackend) -> None:
        self.backend = backend
        self.state_db = backend.table(_STATE)
        self.verdicts_db = backend.table(_VERDICTS)
        self.meta_db = backend.table(_META)

    def catch_up_chunk(
        self,
        limit: int,
        progress: Callable[[int], None] | None = None,
        carry: Carry | None = None,
        verdicts: dict[int, list[Verdict]] | None = None,
    ) -> tuple[int, int]:
        """Fold one chunk in one write transaction; returns (tracking, size)."""
        return self.backend.transaction(
            lambda txn: catch_up_txn(_LMDBViewTxn(self, txn), limit, progress, carry, verdicts),
            what="catch up the views",
        )

    def transact(self, fn: Callable[[ViewTxn], T]) -> T:
        """`fn` over the views in one write transaction (run again if the map had to grow)."""

        def body(txn: Any) -> T:
            view = _LMDBViewTxn(self, txn)
            result = fn(view)
            view.flush()
            return result

        return self.backend.transaction(body, what="update the views")

    def reader(self) -> Iterator[ViewTxn]:
        """A consistent read snapshot of the views (a generator-based context)."""
        with self.backend.snapshot(what="read the views") as txn:
            yield _LMDBViewTxn(self, txn)

    def positions(self) -> tuple[int, int]:
        with self.backend.snapshot(what="read the views") as txn:
            view = _LMDBViewTxn(self, txn)
            return view.tracking(), view.size()

    def fold_in(
        self,
        ops: TxnOps,
        limit: int,
        verdicts: dict[int, list[Verdict]] | None = None,
        carry: Carry | None = None,
        given: Sequence[tuple[int, Event]] = (),
    ) -> tuple[int, int]:
        """Fold up to `limit` unfolded events inside a ledger write transaction."""
        view = self.over(ops)
        assert isinstance(view, _LMDBViewTxn)
        return catch_up_txn(view, limit, verdicts=verdicts, carry=carry, given=given)

    def over(self, ops: TxnOps) -> ViewTxn:
        """The views as seen inside a ledger write transaction (for strict appends)."""
        own = ops.own()
        if not isinstance(own, LMDBTxnOps):
            raise TypeError(f"LMDB views cannot be read through {type(own).__name__}")
        return _LMDBViewTxn(self, own.raw, own)  # its size: a staged append sees its own

    def reset(self) -> None:
        """Drop every stored state and the tracking position (and the verdicts older versions
        kept); a rebuild follows."""

        def drop(txn: Any) -> None:
            for db in (self.state_db, self.verdicts_db, self.meta_db):
                txn.drop(db, delete=False)

        self.backend.transaction(drop, what="reset the views")
