"""Stored projections: per-subject states and one tracking position.

The views are kept current by `catch_up`, which folds the log from the tracking position on and
writes the changed states and the new tracking position in ONE transaction of the backend
(`ViewTxn`). That is what makes the views exactly-once and resumable: a crash either
commits the whole chunk with its tracking, or none of it, and the next catch-up starts again at
the tracking position. Backends provide `ViewTxn` (`projections.store_lmdb`, `.store_postgres`).

Verdicts are not stored per position: a fold reads only its own subject's states and the
policy settings (SPEC §2.6), so `subject_verdicts` recomputes any subject's verdicts from its own
events and the settings for every subject (``*``) when `history` asks. A catch-up therefore
writes only the states that changed, once per chunk.

`strict_precondition` is the check a strict append runs under the ledger's write lock;
`dry_run_precondition` folds a batch the same way and reports, appending nothing (SPEC §5).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from ledger.backend import Precondition, TxnOps
from ledger.codec import decode_chunk, decode_record, record_decoder
from ledger.errors import LedgerError, StorageError, StrictRefusedError
from ledger.events import OPERATOR_EVENTS, Event
from projections import policy
from projections.base import Verdict
from projections.state import PROJECTIONS, Folder, decode_state, encode_state, touched

__all__ = [
    "CHUNK",
    "Carry",
    "DryRunAbortError",
    "StagedViews",
    "ViewReader",
    "ViewStore",
    "ViewTxn",
    "advance_txn",
    "catch_up_txn",
    "codec",
    "dry_run_precondition",
    "fold_part",
    "strict_precondition",
    "subject_verdicts",
]

CHUNK: Final = 100_000
"""Events folded per transaction while catching up: bounds the time the write lock is held
(memory is bounded by the subjects: events are read, decoded and folded in small batches)."""

_BATCH: Final = 128
"""Events read, decoded and folded together (as replay does: see `replay.rebuild`)."""

_PART_BATCH: Final = 1024
"""Records `fold_part` reads together: a part keeps only some of them (a few percent faster
than `_BATCH`; memory stays small)."""


class ViewReader(Protocol):
    """Read access to the stored views (a consistent snapshot)."""

    def tracking(self) -> int:
        """The last position folded into the views (0 if none)."""

    def load(self, projection: str, subject: str) -> bytes | None:
        """The stored state of one subject, encoded."""

    def scan(self, projection: str) -> Iterator[tuple[str, bytes]]:
        """Every (subject, encoded state) of one projection."""


class ViewTxn(ViewReader, Protocol):
    """Write access to the stored views, in the same transaction as a read of the log."""

    def size(self) -> int:
        """The log's size as seen by this transaction."""

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """The log's stored events start..stop, as seen by this transaction."""

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        """Store (or with None, remove) one subject's state."""

    def set_tracking(self, position: int) -> None:
        """Record the last folded position."""

    def flush(self) -> None:
        """Write whatever the transaction buffered (states, tracking): `catch_up_txn` calls it
        last, inside the transaction, before the backend commits (`ViewStore.transact` too)."""


class ViewStore(Protocol):
    """The stored views beside one backend's log, in its own storage (`projections.store_lmdb`,
    `projections.store_postgres`); `tests/contract.py` is what every view store must do."""

    def catch_up_chunk(
        self,
        limit: int,
        progress: Callable[[int], None] | None = None,
        carry: Carry | None = None,
        verdicts: dict[int, list[Verdict]] | None = None,
    ) -> tuple[int, int]:
        """Fold up to `limit` events beyond the tracking position in ONE transaction of the
        backend (`catch_up_txn`, with `progress`, `carry` and `verdicts`); returns (tracking
        position, log size)."""

    def transact(self, fn: Callable[[ViewTxn], Any]) -> Any:
        """`fn` over the views in one write transaction of the backend (`advance_txn`), then
        `ViewTxn.flush`."""

    def reader(self) -> Iterator[ViewTxn]:
        """A consistent read snapshot of the views (used as a generator-based context)."""

    def positions(self) -> tuple[int, int]:
        """(tracking position, log size) as one consistent read, the cheapest the backend
        has (a follower asks after every commit it hears of)."""

    def over(self, ops: TxnOps) -> ViewTxn:
        """The views as seen inside one of the ledger's write transactions (strict appends)."""

    def fold_in(
        self,
        ops: TxnOps,
        limit: int,
        verdicts: dict[int, list[Verdict]] | None = None,
        carry: Carry | None = None,
        given: Sequence[tuple[int, Event]] = (),
    ) -> tuple[int, int]:
        """Fold up to `limit` unfolded events into the views inside one of the ledger's write
        transactions (the server's appends, a big append's chunks: one commit for the events and
        their fold); with `verdicts`, each folded position's verdicts are put there, with
        `carry`, the states of the previous call in the same transaction are taken up, with
        `given`, events already decoded are folded without being read back (see
        `catch_up_txn`)."""

    def reset(self) -> None:
        """Drop every state and the tracking position (a rebuild follows)."""


class StateCodec:
    """How stored views encode states (`projections.state`'s codec)."""

    def encode(self, value: object) -> bytes:
        """Encode a state struct (plain msgpack)."""
        return encode_state(value)

    def decode_state(self, projection: str, data: bytes) -> Any:
        """Decode one stored state of `projection` (`StorageError` if it is damaged)."""
        try:
            return decode_state(projection, data)
        except msgspec.DecodeError as e:
            raise StorageError(
                f"a stored {projection} state cannot be decoded ({e}): run `adminchain repair`"
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


class StagedViews:
    """The views' new states of a staged big append (`ledger.backend.Stage`): held here, one
    per (projection, subject) changed, so bounded by subjects, not events, until the append's
    last transaction writes them (`write`); until then the stored views stay as they were,
    as readers must see them."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], bytes | None] = {}
        self.tracking: int | None = None

    def over(self, base: ViewTxn) -> ViewTxn:
        """The views as the append's next fold sees them: these states over `base`'s (the
        stored views in one of the append's transactions)."""
        return _StagedViewTxn(self, base)

    def write(self, txn: ViewTxn) -> None:
        """Store the held states and tracking position through `txn` (the last transaction)."""
        for (projection, subject), data in self.states.items():
            txn.save(projection, subject, data)
        if self.tracking is not None:
            txn.set_tracking(self.tracking)
        txn.flush()


class _StagedViewTxn:
    """`ViewTxn` of `StagedViews.over`: reads the held states first, writes only to them."""

    def __init__(self, staged: StagedViews, base: ViewTxn) -> None:
        self._staged, self._base = staged, base

    def tracking(self) -> int:
        held = self._staged.tracking
        return self._base.tracking() if held is None else held

    def load(self, projection: str, subject: str) -> bytes | None:
        states = self._staged.states
        key = (projection, subject)
        return states[key] if key in states else self._base.load(projection, subject)

    def scan(self, projection: str) -> Iterator[tuple[str, bytes]]:
        held = {s: d for (p, s), d in self._staged.states.items() if p == projection}
        for subject, data in self._base.scan(projection):
            if subject not in held:
                yield subject, data
        for subject, state in held.items():
            if state is not None:
                yield subject, state

    def size(self) -> int:
        return self._base.size()

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._base.read_stored(start, stop)

    def read_batches(self, start: int, stop: int, size: int) -> Iterator[list[tuple[int, bytes]]]:
        return _batches(self._base, start, stop, size)

    def save(self, projection: str, subject: str, data: bytes | None) -> None:
        self._staged.states[projection, subject] = data

    def set_tracking(self, position: int) -> None:
        self._staged.tracking = position

    def flush(self) -> None:
        """Nothing to write: the states wait for `StagedViews.write`."""


class Carry:
    """What one catch-up chunk hands the next in the same process: its `Folder` and the stored
    states it loaded, valid while the tracking position is still where that chunk left it."""

    def __init__(self) -> None:
        self.tracking = -1
        self.folder = Folder()
        self.loaded: dict[tuple[str, str], Any] = {}
        """The state stored (as written by the chunk) for each (projection, subject) met."""
        self.met: set[str] = set()


def _batches(
    txn: ViewTxn, start: int, stop: int, size: int = 0
) -> Iterator[list[tuple[int, bytes]]]:
    """The log's stored events start..stop in lists of `size` (default `_BATCH`): the store's
    own chunked read where it has one (`read_batches`: one loop, no generator step per event),
    else `read_stored` cut up."""
    size = size or _BATCH
    read_batches = getattr(txn, "read_batches", None)
    if read_batches is not None:
        batches: Iterator[list[tuple[int, bytes]]] = read_batches(start, stop, size)
        yield from batches
        return
    records = txn.read_stored(start, stop)
    while batch := list(islice(records, size)):
        yield batch


def _kept(
    txn: ViewTxn, start: int, stop: int, keep: Callable[[bytes, bytes], bool]
) -> Iterator[tuple[int, list[Event]]]:
    """(last position, events `keep` takes by subject and type) of the log's events start..stop
    in chunks: from the store's own read where it has one (`read_kept`: the others are never
    decoded), else every event decoded, then chosen. `StorageError` names a missing position
    or one that cannot be decoded."""
    read_kept = getattr(txn, "read_kept", None)
    if read_kept is None:
        for batch in _batches(txn, start, stop):
            events = decode_chunk(batch)
            chosen = [e for e in events if keep(e.subject.encode(), type(e).__name__.encode())]
            yield batch[-1][0], chosen
        return
    decode = record_decoder.decode
    last = start - 1
    chunks: Iterator[tuple[int, list[tuple[int, bytes]]]] = read_kept(
        start, stop, _PART_BATCH, keep
    )
    for last, kept in chunks:
        try:
            yield last, [decode(data).event for _, data in kept]
        except msgspec.DecodeError as e:
            raise StorageError(f"an event from {start} to {last} cannot be decoded ({e})") from e
        start = last + 1
    if last < stop:
        raise StorageError(f"position {last + 1} is missing from the log")


def catch_up_txn(
    txn: ViewTxn,
    limit: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    carry: Carry | None = None,
    verdicts: dict[int, list[Verdict]] | None = None,
    *,
    given: Sequence[tuple[int, Event]] = (),
) -> tuple[int, int]:
    """Fold up to `limit` events after the tracking position into the views, inside `txn`.

    Events are read, decoded and folded in small batches into a `Folder` holding only the
    stored states of the subjects met so far (every projection's, loaded when a subject is
    first met; the settings for every subject up front); at the end, the states that changed
    are written once, with the new tracking position. `progress(position)` is told as it goes.
    With `carry` from the previous chunk (the tracking position unchanged since), its states
    are taken up instead of being loaded again. With `verdicts`, each folded position's
    verdicts are put there (the fold gives them anyway: the server's appends answer with them).
    `given`: (position, event) of events the caller has decoded already (a big append's chunk,
    just written in this transaction); when they are exactly the next ones, they are folded
    instead of being read back. Returns (new tracking position, log size): the caller repeats
    while they differ.
    """
    start = txn.tracking() + 1
    size = txn.size()
    stop = min(size, start + limit - 1)
    if start > stop:
        return start - 1, size
    batches: Iterable[tuple[Sequence[tuple[int, object]], list[Event]]]
    if given and given[0][0] == start and given[-1][0] == start + len(given) - 1 <= stop:
        batches, stop = [(given, [event for _, event in given])], given[-1][0]
    else:
        batches = ((batch, decode_chunk(batch)) for batch in _batches(txn, start, stop))
    if carry is None or carry.tracking != start - 1:
        carry = carry or Carry()
        carry.folder, carry.loaded, carry.met = Folder(), {}, set()
    carry.tracking = -1  # invalid until this chunk is folded (a failure may leave it half-way)
    folder, loaded, met = carry.folder, carry.loaded, carry.met
    states, appliers = folder.states, folder.appliers

    def meet(subjects: Iterable[str]) -> None:
        _meet(txn, subjects, states, loaded, met)

    last = start - 1
    for batch, events in batches:
        new = {e.subject for e in events} - met
        if policy.ALL not in met:  # the settings for every subject, before any event folds
            new.add(policy.ALL)
        if new:
            meet(new)
        if verdicts is None:
            for event in events:
                appliers[type(event)](event)
        else:
            for (position, _), event in zip(batch, events, strict=True):
                verdicts[position] = appliers[type(event)](event)
        last = batch[-1][0]
        if progress is not None and last // 10_000 != (last - len(batch)) // 10_000:
            progress(last)
    encode, save = codec.encode, txn.save
    for key, before in loaded.items():
        after = states[key[0]].get(key[1])
        if after is not before:
            save(key[0], key[1], None if after is None else encode(after))
            loaded[key] = after
    txn.set_tracking(last)
    txn.flush()
    carry.tracking = last
    return last, size


def _meet(
    source: ViewTxn,
    subjects: Iterable[str],
    states: dict[str, dict[str, Any]],
    loaded: dict[tuple[str, str], Any],
    met: set[str],
) -> None:
    """Load every projection's stored state of `subjects` (met for the first time) into a
    folder's `states`, noting each in `loaded` (None: none stored) and the subjects in `met`. A
    store that loads many subjects at once (`prefetch`: PostgreSQL) is asked for all first."""
    prefetch = getattr(source, "prefetch", None)
    if prefetch is not None:
        subjects = list(subjects)
        prefetch(subjects)
    for subject in subjects:
        met.add(subject)
        for name in _NAMES:
            raw = source.load(name, subject)
            state = None if raw is None else codec.decode_state(name, raw)
            loaded[name, subject] = state
            if state is not None:
                states[name][subject] = state


_NAMES: Final = tuple(p.NAME for p in PROJECTIONS)


def fold_part(
    reader: ViewTxn,
    stop: int,
    keep: Callable[[bytes, bytes], bool],
    progress: Callable[[int], None] | None = None,
) -> tuple[int, list[tuple[str, str, Any]]]:
    """Fold one part of the subjects' events from the views' tracking position to `stop` on top
    of the stored views `reader` shows (a read snapshot), in memory; nothing is written.

    The same fold as `catch_up_txn` (a subject's stored states are loaded when it is first met,
    the settings for every subject up front), over the events `keep` takes, told each one's
    subject and type (UTF-8): the store leaves the others undecoded where it can tell from a
    record's header (LMDB: `read_kept`), and they are dropped here otherwise. Several processes
    each fold their part of one snapshot this way, then one write transaction stores what they
    changed with the new tracking position (`advance_txn`; `replay.catchup`). Returns (the last
    position folded, (projection, subject, new state or None) of each loaded state that
    changed): the caller keeps those of its own subjects.
    """
    start = reader.tracking() + 1
    stop = min(stop, reader.size())
    folder = Folder()
    states, appliers = folder.states, folder.appliers
    loaded: dict[tuple[str, str], Any] = {}
    met: set[str] = set()

    def meet(subjects: Iterable[str]) -> None:
        _meet(reader, subjects, states, loaded, met)

    meet([policy.ALL])  # the settings for every subject, before any event folds
    last = start - 1
    for position, events in _kept(reader, start, stop, keep):
        new = {event.subject for event in events} - met
        if new:
            meet(new)
        for event in events:
            appliers[type(event)](event)
        done, last = last, position
        if progress is not None and last // 10_000 != done // 10_000:
            progress(last)
    changes = []
    for (name, subject), before in loaded.items():
        after = states[name].get(subject)
        if after is not before:
            changes.append((name, subject, after))
    return last, changes


def advance_txn(
    txn: ViewTxn,
    expected: int,
    position: int,
    changes: Iterable[tuple[str, str, Any]],
    encoded: Iterable[tuple[str, str, bytes | None]] = (),
) -> bool:
    """Move the views from `expected` to `position` with the states a caller folded itself
    (replay folds the whole log anyway: see `replay.audit`): (projection, subject, state or
    None) for each state that changed; `encoded`, more of them already encoded (`codec`: as
    another process sends them, `replay.catchup`). Does nothing and returns False unless the
    tracking position is still `expected` (another catch-up moved it meanwhile)."""
    if txn.tracking() != expected:
        return False
    encode, save = codec.encode, txn.save
    for projection, subject, state in changes:
        save(projection, subject, None if state is None else encode(state))
    for projection, subject, data in encoded:
        save(projection, subject, data)
    txn.set_tracking(position)
    return True


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
    """The verdicts it gets (for a duplicate of an event in the log: none here, see `original`;
    for a repeat within the batch: those of its first occurrence)."""
    states: dict[tuple[str, str], Any]
    """(projection, subject) -> state right after it, for the states it touched."""


def fold_on_top(
    ops: TxnOps, views_over: Callable[[TxnOps], ViewReader], events: Sequence[Event]
) -> list[Folded]:
    """Fold a batch, in order, on top of the current state, inside a ledger write transaction.

    The current state is the stored views plus the events not yet folded into them; each event
    of the batch then folds on the state the ones before it left (so a batch may build on
    itself). An event whose `id` is already in the log (or earlier in the batch) is a duplicate:
    it will not be stored again, so it is not folded. Nothing is written. (Verdicts are not
    stored: the verdicts of a duplicate's original are recomputed by the caller,
    `projections.api.Views.verdicts`.)
    """
    reader = views_over(ops)
    unfolded = [e for _, e in _decoded(ops.read_stored(reader.tracking() + 1, ops.size()))]
    overlay = _Overlay(reader)
    overlay.load(unfolded)
    overlay.load(events)
    overlay.folder.apply_all(unfolded)
    apply, states = overlay.folder.apply, overlay.folder.states
    seen: dict[str, Folded] = {}
    folded: list[Folded] = []
    for event in events:
        if event.id is not None and event.id in seen:
            earlier = seen[event.id]
            folded.append(Folded(event, True, earlier.original, earlier.verdicts, earlier.states))
            continue
        original = None if event.id is None else ops.lookup_id(event.id)
        if original is not None:
            result = Folded(event, True, original, [], {})
        else:
            verdicts = apply(event)
            after = {key: states[key[0]].get(key[1]) for key in touched(event)}
            result = Folded(event, False, None, verdicts, after)
        folded.append(result)
        if event.id is not None:
            seen[event.id] = result
    return folded


def subject_verdicts(
    entries: Iterable[tuple[int, Event]], subject: str, folder: Folder | None = None
) -> dict[int, list[Verdict]]:
    """The verdicts of `subject`'s events, recomputed: `entries` are (position, event) of every
    event about `subject` and every event about ``*`` (the settings for all subjects), in
    position order. A fold reads only its subject's states and the policy in force, so these
    are the verdicts the whole log's fold gave (SPEC §3). `folder` goes on from an earlier
    call's fold of the same subject (the events before `entries`); it is folded on in place."""
    folder = Folder() if folder is None else folder
    apply = folder.apply
    verdicts: dict[int, list[Verdict]] = {}
    for position, event in entries:
        result = apply(event)
        if event.subject == subject:
            verdicts[position] = result
    return verdicts


def strict_precondition(
    views_over: Callable[[TxnOps], ViewReader],
) -> Callable[[TxnOps, Sequence[Event]], None]:
    """A precondition for `Ledger.append_batch`: refuse operator events the projections reject.

    Runs under the write lock: the current state is the stored views plus the events not yet
    folded into them, then each event of the batch in order (so a batch may build on itself).
    Events already in the log or earlier in the batch (a repeated `id`) are not checked: they
    will not be stored again. (`fold_on_top` folds a batch the same way for a dry run.)

    A big append (`ledger.bulk`) calls it once per chunk in one transaction: when the log has
    grown by exactly the events it folded last time, in the same transaction, it goes on from
    the states it has instead of folding every event since the tracking position again.
    """
    last: list[tuple[weakref.ref[TxnOps], _Overlay, int]] = []

    def check(ops: TxnOps, events: Sequence[Event]) -> None:
        reader = views_over(ops)
        if last and last[0][0]() is ops and last[0][2] == ops.size():
            overlay = last[0][1]  # the same transaction's next chunk
        else:
            unfolded = [
                event for _, event in _decoded(ops.read_stored(reader.tracking() + 1, ops.size()))
            ]
            overlay = _Overlay(reader)
            overlay.load(unfolded)
            overlay.folder.apply_all(unfolded)
        last.clear()
        overlay.load(events)
        apply = overlay.folder.apply
        folded = 0
        seen: set[str] = set()
        for line, event in enumerate(events, start=1):
            if event.id is not None:
                if event.id in seen or ops.lookup_id(event.id) is not None:
                    continue
                seen.add(event.id)
            folded += 1
            verdicts = apply(event)
            if isinstance(event, OPERATOR_EVENTS):
                for verdict in verdicts:
                    if verdict.verdict == "rejected":
                        detail = f" ({verdict.detail})" if verdict.detail else ""
                        raise StrictRefusedError(
                            f"{type(event).__name__} {event.subject!r} would be rejected by "
                            f"{verdict.projection}: {verdict.reason}{detail}",
                            line=line,
                        )
        last.append((weakref.ref(ops), overlay, ops.size() + folded))

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
