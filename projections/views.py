"""Stored projections: per-subject states, per-position verdicts and one tracking position.

The views are kept current by `catch_up`, which folds the log from the tracking position on and
writes the changed states, the verdicts and the new tracking position in ONE transaction of the
backend (`ViewTxn`). That is what makes the views exactly-once and resumable: a crash either
commits the whole chunk with its tracking, or none of it, and the next catch-up starts again at
the tracking position. Backends provide `ViewTxn` (`projections.store_lmdb`, `.store_postgres`).

`strict_precondition` is the check a strict append runs under the ledger's write lock;
`dry_run_precondition` folds a batch the same way and reports, appending nothing (SPEC §5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from ledger.backend import Precondition, TxnOps
from ledger.codec import decode_record
from ledger.errors import LedgerError, StorageError, StrictRefusedError
from ledger.events import OPERATOR_EVENTS, Event
from projections.base import Verdict
from projections.state import Folder, decode_state, encode_state, touched

__all__ = [
    "CHUNK",
    "DryRunAbortError",
    "Folded",
    "StateCodec",
    "ViewReader",
    "ViewStore",
    "ViewTxn",
    "catch_up_txn",
    "codec",
    "dry_run_precondition",
    "fold_on_top",
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

    def verdicts_from(self, start: int) -> Iterator[tuple[int, bytes]]:
        """Every (position, encoded verdicts) recorded from `start` on, by position."""


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

    def flush(self) -> None:
        """Write whatever the transaction buffered (states, verdicts, tracking): `catch_up_txn`
        calls it last, inside the transaction, before the backend commits."""


class ViewStore(Protocol):
    """The stored views beside one backend's log, in its own storage (`projections.store_lmdb`,
    `projections.store_postgres`); `tests/contract.py` is what every view store must do."""

    def catch_up_chunk(self, limit: int) -> tuple[int, int]:
        """Fold up to `limit` events beyond the tracking position in ONE transaction of the
        backend (`catch_up_txn`); returns (tracking position, log size)."""

    def reader(self) -> Iterator[ViewTxn]:
        """A consistent read snapshot of the views (used as a generator-based context)."""

    def over(self, ops: TxnOps) -> ViewTxn:
        """The views as seen inside one of the ledger's write transactions (strict appends)."""

    def fold_in(self, ops: TxnOps, limit: int) -> tuple[int, int]:
        """Fold up to `limit` unfolded events into the views inside one of the ledger's write
        transactions (the server's appends: one commit for the events and their fold)."""

    def reset(self) -> None:
        """Drop every state, verdict and the tracking position (a rebuild follows)."""


_verdicts_decoder: Final = msgspec.msgpack.Decoder(list[Verdict])


class StateCodec:
    """How stored views encode states (`projections.state`'s codec) and verdict lists."""

    def encode(self, value: object) -> bytes:
        """Encode a state struct or a list of verdicts (both plain msgpack)."""
        return encode_state(value)

    def decode_state(self, projection: str, data: bytes) -> Any:
        """Decode one stored state of `projection` (`StorageError` if it is damaged)."""
        try:
            return decode_state(projection, data)
        except msgspec.DecodeError as e:
            raise StorageError(
                f"a stored {projection} state cannot be decoded ({e}): run `adminchain repair`"
            ) from e

    def decode_verdicts(self, data: bytes) -> list[Verdict]:
        """Decode the verdicts of one position (`StorageError` if they are damaged)."""
        try:
            return _verdicts_decoder.decode(data)
        except msgspec.DecodeError as e:
            raise StorageError(
                f"stored verdicts cannot be decoded ({e}): run `adminchain repair`"
            ) from e


codec: Final = StateCodec()


class _Overlay:
    """The stored states some events touch, loaded once into a `Folder` that folds them.

    Folding goes through `Folder.apply`, the same fold as replay; what changed is found by
    identity (a fold returns the very state object it got when nothing changed).
    """

    def __init__(self, reader: ViewReader) -> None:
        self.reader = reader
        self.loaded: dict[tuple[str, str], Any] = {}
        self.folder = Folder()

    def load(self, events: Iterable[Event]) -> None:
        """Load every stored state these events will read that is not loaded yet."""
        loaded, states, load = self.loaded, self.folder.states, self.reader.load
        kinds = {(type(e), e.subject): e for e in events}  # one event per (type, subject) will do
        for event in kinds.values():
            for key in touched(event):
                if key not in loaded:
                    raw = load(*key)
                    state = None if raw is None else codec.decode_state(key[0], raw)
                    loaded[key] = state
                    if state is not None:
                        states[key[0]][key[1]] = state

    def changed(self) -> Iterator[tuple[str, str, Any]]:
        """(projection, subject, new state or None) for each loaded state the folds changed."""
        states = self.folder.states
        for (projection, subject), before in self.loaded.items():
            after = states[projection].get(subject)
            if after is not before:
                yield projection, subject, after


def _decoded(stored: Iterable[tuple[int, bytes]]) -> list[tuple[int, Event]]:
    return [(position, decode_record(data).event) for position, data in stored]


def catch_up_txn(txn: ViewTxn, limit: int = CHUNK) -> tuple[int, int]:
    """Fold up to `limit` events after the tracking position into the views, inside `txn`.

    Returns (new tracking position, log size): the caller repeats while they differ.
    """
    start = txn.tracking() + 1
    size = txn.size()
    stop = min(size, start + limit - 1)
    if start > stop:
        return start - 1, size
    events = _decoded(txn.read_stored(start, stop))
    overlay = _Overlay(txn)
    overlay.load(event for _, event in events)
    apply, encode, put_verdicts = overlay.folder.apply, codec.encode, txn.put_verdicts
    for position, event in events:
        put_verdicts(position, encode(apply(event)))
    for projection, subject, state in overlay.changed():
        txn.save(projection, subject, None if state is None else encode(state))
    last = events[-1][0] if events else start - 1
    txn.set_tracking(last)
    txn.flush()
    return last, size


class DryRunAbortError(LedgerError):
    """Raised by a dry-run precondition to abort its append, carrying what the events would get."""

    def __init__(self, folded: list[Folded]) -> None:
        super().__init__("dry run: nothing appended")
        self.folded = folded


class Folded(NamedTuple):
    """One event of a batch folded on top of the current state (see `fold_on_top`)."""

    event: Event
    duplicate: bool
    """Its `id` is already in the log, or earlier in the batch: it would not be stored again."""
    original: int | None
    """The position of the event with the same `id` already in the log, else None."""
    verdicts: list[Verdict]
    """The verdicts it gets (for a duplicate: those its original got, if known)."""
    states: dict[tuple[str, str], Any]
    """(projection, subject) -> state right after it, for the states it touched."""


def fold_on_top(
    ops: TxnOps, views_over: Callable[[TxnOps], ViewReader], events: Sequence[Event]
) -> list[Folded]:
    """Fold a batch, in order, on top of the current state, inside a ledger write transaction.

    The current state is the stored views plus the events not yet folded into them; each event
    of the batch then folds on the state the ones before it left (so a batch may build on
    itself). An event whose `id` is already in the log (or earlier in the batch) is a duplicate:
    it will not be stored again, so it is not folded. Nothing is written.
    """
    reader = views_over(ops)
    unfolded = _decoded(ops.read_stored(reader.tracking() + 1, ops.size()))
    overlay = _Overlay(reader)
    overlay.load(event for _, event in unfolded)
    overlay.load(events)
    apply, states = overlay.folder.apply, overlay.folder.states
    recent: dict[int, list[Verdict]] = {}
    for position, event in unfolded:
        recent[position] = apply(event)
    seen: dict[str, Folded] = {}
    folded: list[Folded] = []
    for event in events:
        if event.id is not None and event.id in seen:
            earlier = seen[event.id]
            folded.append(Folded(event, True, earlier.original, earlier.verdicts, earlier.states))
            continue
        original = None if event.id is None else ops.lookup_id(event.id)
        if original is not None:
            raw = reader.verdicts(original)
            verdicts = codec.decode_verdicts(raw) if raw is not None else recent.get(original, [])
            result = Folded(event, True, original, verdicts, {})
        else:
            verdicts = apply(event)
            after = {key: states[key[0]].get(key[1]) for key in touched(event)}
            result = Folded(event, False, None, verdicts, after)
        folded.append(result)
        if event.id is not None:
            seen[event.id] = result
    return folded


def strict_precondition(
    views_over: Callable[[TxnOps], ViewReader],
) -> Callable[[TxnOps, Sequence[Event]], None]:
    """A precondition for `Ledger.append_batch`: refuse operator events the projections reject.

    Runs under the write lock, on the state `fold_on_top` builds: the stored views plus the
    events not yet folded into them, then each event of the batch in order. Events already in
    the log (a repeated `id`) are not checked: they will not be stored again.
    """

    def check(ops: TxnOps, events: Sequence[Event]) -> None:
        for line, result in enumerate(fold_on_top(ops, views_over, events), start=1):
            if result.duplicate or not isinstance(result.event, OPERATOR_EVENTS):
                continue
            for verdict in result.verdicts:
                if verdict.verdict == "rejected":
                    detail = f" ({verdict.detail})" if verdict.detail else ""
                    raise StrictRefusedError(
                        f"{type(result.event).__name__} {result.event.subject!r} would be "
                        f"rejected by {verdict.projection}: {verdict.reason}{detail}",
                        line=line,
                    )

    return check


def dry_run_precondition(
    views_over: Callable[[TxnOps], ViewReader], strict: Precondition | None = None
) -> Callable[[TxnOps, Sequence[Event]], None]:
    """A precondition that folds the batch (`fold_on_top`), after `strict`'s check if given,
    and always refuses it, raising `DryRunAbortError` with the result: nothing is ever appended."""

    def check(ops: TxnOps, events: Sequence[Event]) -> None:
        if strict is not None:
            strict(ops, events)
        raise DryRunAbortError(fold_on_top(ops, views_over, events))

    return check
