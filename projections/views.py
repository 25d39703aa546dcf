"""Stored projections: per-subject states, per-position verdicts and one tracking position.

The views are kept current by `catch_up`, which folds the log from the tracking position on and
writes the changed states, the verdicts and the new tracking position in ONE transaction of the
backend (`ViewTxn`). That is what makes the views exactly-once and resumable: a crash either
commits the whole chunk with its tracking, or none of it, and the next catch-up starts again at
the tracking position. Backends provide `ViewTxn` (`projections.store_lmdb`, `.store_postgres`).

`strict_precondition` is the check a strict append runs under the ledger's write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

import msgspec

from ledger.backend import TxnOps
from ledger.codec import decode_record
from ledger.errors import StrictRefusedError
from ledger.events import OPERATOR_EVENTS, Event
from projections.base import Verdict
from projections.state import PROJECTIONS, Change, step

__all__ = [
    "CHUNK",
    "StateCodec",
    "ViewReader",
    "ViewTxn",
    "catch_up_txn",
    "codec",
    "strict_precondition",
]

CHUNK: Final = 20_000
"""Events folded per transaction while catching up: bounds memory and transaction size."""


class ViewReader(Protocol):
    """Read access to the stored views (a consistent snapshot)."""

    def tracking(self) -> int:
        """The last position folded into the views (0 if none)."""

    def load(self, projection: str, subject: str) -> bytes | None:
        """The stored state of one subject, encoded."""

    def scan(self, projection: str) -> Iterator[tuple[str, bytes]]:
        """Every (subject, encoded state) of one projection."""

    def verdicts(self, position: int) -> bytes | None:
        """The encoded verdicts recorded for one position."""


class ViewTxn(ViewReader, Protocol):
    """Write access to the stored views, in the same transaction as a read of the log."""

    def size(self) -> int:
        """The log's size as seen by this transaction."""

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """The log's stored events start..stop, as seen by this transaction."""

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        """Store (or with None, remove) one subject's state."""

    def put_verdicts(self, position: int, data: bytes) -> None:
        """Record the verdicts of one position."""

    def set_tracking(self, position: int) -> None:
        """Record the last folded position."""


class StateCodec:
    """msgpack for every projection's state struct and for verdict lists, built once."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
            module.NAME: msgspec.msgpack.Decoder(module.STATE) for module in PROJECTIONS
        }
        self._verdicts = msgspec.msgpack.Decoder(list[Verdict])

    def encode(self, value: object) -> bytes:
        """Encode a state struct or a list of verdicts."""
        return self._encoder.encode(value)

    def decode_state(self, projection: str, data: bytes) -> Any:
        """Decode one stored state of `projection`."""
        return self._decoders[projection].decode(data)

    def decode_verdicts(self, data: bytes) -> list[Verdict]:
        """Decode the verdicts of one position."""
        return self._verdicts.decode(data)


codec: Final = StateCodec()


class _Overlay:
    """States read from a view snapshot on first use, then kept and updated in memory."""

    def __init__(self, reader: ViewReader) -> None:
        self.reader = reader
        self.cache: dict[tuple[str, str], Any] = {}
        self.dirty: set[tuple[str, str]] = set()

    def get(self, projection: str, subject: str) -> Any | None:
        key = (projection, subject)
        try:
            return self.cache[key]
        except KeyError:
            raw = self.reader.load(projection, subject)
            state = None if raw is None else codec.decode_state(projection, raw)
            self.cache[key] = state
            return state

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            key = (change.projection, change.subject)
            if (
                self.cache.get(key) is not change.state
            ):  # `step` returns the same object if unchanged
                self.cache[key] = change.state
                self.dirty.add(key)

    def fold(
        self,
        stored: Iterator[tuple[int, bytes]],
        on_verdicts: Callable[[int, list[Verdict]], None] | None = None,
    ) -> int:
        last = 0
        for position, data in stored:
            changes = step(self.get, decode_record(data).event)
            self.apply(changes)
            if on_verdicts is not None:
                on_verdicts(position, [c.verdict for c in changes])
            last = position
        return last


def catch_up_txn(txn: ViewTxn, limit: int = CHUNK) -> tuple[int, int]:
    """Fold up to `limit` events after the tracking position into the views, inside `txn`.

    Returns (new tracking position, log size): the caller repeats while they differ.
    """
    start = txn.tracking() + 1
    size = txn.size()
    stop = min(size, start + limit - 1)
    if start > stop:
        return start - 1, size
    overlay = _Overlay(txn)
    last = overlay.fold(
        txn.read_stored(start, stop),
        lambda position, verdicts: txn.put_verdicts(position, codec.encode(verdicts)),
    )
    for projection, subject in overlay.dirty:
        state = overlay.cache[(projection, subject)]
        txn.save(projection, subject, None if state is None else codec.encode(state))
    txn.set_tracking(last)
    return last, size


def strict_precondition(
    views_over: Callable[[TxnOps], ViewReader],
) -> Callable[[TxnOps, Sequence[Event]], None]:
    """A precondition for `Ledger.append_batch`: refuse operator events the projections reject.

    Runs under the write lock: the current state is the stored views plus the events not yet
    folded into them, then each event of the batch in order (so a batch may build on itself).
    Events already in the log (a repeated `id`) are not checked: they will not be stored again.
    """

    def check(ops: TxnOps, events: Sequence[Event]) -> None:
        reader = views_over(ops)
        overlay = _Overlay(reader)
        overlay.fold(ops.read_stored(reader.tracking() + 1, ops.size()))
        for line, event in enumerate(events, start=1):
            if event.id is not None and ops.lookup_id(event.id) is not None:
                continue
            changes = step(overlay.get, event)
            if isinstance(event, OPERATOR_EVENTS):
                for change in changes:
                    verdict = change.verdict
                    if verdict.verdict == "rejected":
                        detail = f" ({verdict.detail})" if verdict.detail else ""
                        raise StrictRefusedError(
                            f"{type(event).__name__} {event.subject!r} would be rejected by "
                            f"{verdict.projection}: {verdict.reason}{detail}",
                            line=line,
                        )
            overlay.apply(changes)

    return check
