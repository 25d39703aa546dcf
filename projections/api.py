"""Queries over the stored projections: status, history, read-your-writes, strict appends.

`Views(ledger)` opens the stored views of a ledger, whatever its backend. Queries catch the views
up first (folding whatever the log holds beyond the tracking position, in chunks, each chunk with
its tracking in one transaction), so a query always reflects every acknowledged append: that is
read-your-writes without a separate runner. `follow` keeps them current in a long-running process.

`status_document` builds the SPEC §5 ``status`` JSON from any source of states — the stored
views here, or a replayed `Folder` (as-of queries in `replay`).
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

from ledger.backend import (
    Appended,
    AppendRequest,
    LogBackend,
    Precondition,
    Stage,
    TxnOps,
    positions_of_subjects,
)
from ledger.errors import BackendUnavailableError, UsageError
from ledger.events import Event
from ledger.ledger import Entry, Ledger
from projections.base import Verdict
from projections.policy import ALL
from projections.state import BY_NAME, KINDS, PROJECTIONS, Folder
from projections.views import (
    CHUNK,
    Carry,
    DryRunAbortError,
    StagedViews,
    ViewReader,
    ViewStore,
    ViewTxn,
    advance_txn,
    catch_up_txn,
    codec,
    dry_run_precondition,
    strict_precondition,
    subject_verdicts,
)

if TYPE_CHECKING:
    from ledger.bulk import BulkResult, Spool
    from ledger.lmdb_backend import LMDBBackend
    from ledger.postgres import PostgresBackend

__all__ = ["KINDS", "InlineFold", "Outcome", "StateSource", "Views", "status_document"]

T = TypeVar("T")

_OUTCOMES: Final = 20_000
"""Appended events whose verdicts `Views.outcomes` gathers at a time (bounds its memory)."""


class StateSource(Protocol):
    """Anything that can list and look up projection states."""

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        """Every (subject, state) of one projection."""

    def state(self, projection: str, subject: str) -> Any | None:
        """One subject's state, or None for the default."""


def status_document(
    source: StateSource,
    kind: str | None = None,
    subject: str | None = None,
    now: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``status --json`` object (SPEC §5): a key per projection, subject -> state object.

    With `kind`, only that projection; with `subject`, only that subject (with both, the subject
    is shown even in its default state).
    """
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    document: dict[str, dict[str, Any]] = {}
    for name in (kind,) if kind else KINDS:
        module = BY_NAME[name]
        if subject is None:
            rows = sorted(source.subjects(name), key=lambda row: row[0])
            document[name] = {s: module.view(s, state, now) for s, state in rows}
            continue
        state = source.state(name, subject)
        if state is not None or kind is not None:
            document[name] = {subject: module.view(subject, state, now)}
        else:
            document[name] = {}
    return document


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    """One verdict as the ``history`` JSON shows it (reason and detail only when present)."""
    data: dict[str, Any] = {"projection": verdict.projection, "verdict": verdict.verdict}
    if verdict.reason:
        data["reason"] = verdict.reason
    if verdict.detail:
        data["detail"] = verdict.detail
    return data


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one appended (or, in a dry run, would-be appended) event got: the ``append`` JSON
    object plus its `verdicts` as in ``history`` (SPEC §5)."""

    position: int | None
    """Its position; None in a dry run for an event that would be new."""
    id: str | None
    duplicate: bool
    verdicts: list[dict[str, Any]]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Projection -> the subject's state (``status`` JSON) after it, when asked for."""

    def to_json(self) -> dict[str, Any]:
        """``{"position", "id", "duplicate", "verdicts"}``."""
        return {
            "position": self.position,
            "id": self.id,
            "duplicate": self.duplicate,
            "verdicts": self.verdicts,
        }

    @property
    def rejected(self) -> list[dict[str, Any]]:
        """The verdicts that refused it."""
        return [v for v in self.verdicts if v["verdict"] == "rejected"]


class _ReaderSource:
    def __init__(self, reader: ViewReader) -> None:
        self._reader = reader

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        for subject, data in self._reader.scan(projection):
            yield subject, codec.decode_state(projection, data)

    def state(self, projection: str, subject: str) -> Any | None:
        data = self._reader.load(projection, subject)
        return None if data is None else codec.decode_state(projection, data)


def _lmdb_views(backend: LogBackend) -> ViewStore:
    from projections.store_lmdb import LMDBViews  # noqa: PLC0415

    return LMDBViews(cast("LMDBBackend", backend))


def _postgres_views(backend: LogBackend) -> ViewStore:
    from projections.store_postgres import PostgresViews  # noqa: PLC0415  optional: psycopg

    return PostgresViews(cast("PostgresBackend", backend))


_VIEW_STORES: Final[dict[str, Callable[[LogBackend], ViewStore]]] = {
    "lmdb": _lmdb_views,
    "postgres": _postgres_views,
}
"""The view store of each backend, by `LogBackend.kind` (imported only when used)."""


def open_store(ledger: Ledger) -> ViewStore:
    """The stored views that live beside this ledger's log (SPEC §6)."""
    backend = ledger.backend
    make = _VIEW_STORES.get(backend.kind)
    if make is None:
        raise UsageError(f"no stored views for a {backend.kind!r} ledger")
    return make(backend)


class InlineFold:
    """`Views.inline`: an `after` hook that folds an append's events into the views inside the
    append's own transaction, keeping the verdicts that fold gave each position (the server's
    appender answers with them: verdicts are not stored, see `projections.views`)."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._verdicts: dict[int, list[Verdict]] = {}
        self._requests: Sequence[AppendRequest] = ()
        self.tracking = 0
        """The views' tracking position the last transaction's fold left (0: none ran): once
        that transaction committed, the stored views hold it, and nothing need be read to
        learn it (the server's hub takes it from here)."""

    def expect(self, requests: Sequence[AppendRequest]) -> None:
        """The requests of the next transaction: their new events are folded as given, not
        read back from the log (when they are exactly the next ones after the views)."""
        self._requests = requests
        self.tracking = 0

    def __call__(self, ops: TxnOps) -> None:
        self._verdicts = {}  # a transaction run again starts afresh
        given = sorted(
            (appended.position, event)
            for request in self._requests
            for appended, event in zip(request.result or (), request.events, strict=False)
            if not appended.duplicate
        )
        self.tracking = self._store.fold_in(ops, CHUNK, self._verdicts, given=given)[0]

    def take(self) -> dict[int, list[Verdict]]:
        """The verdicts of the positions the last transaction folded (then forgotten)."""
        verdicts, self._verdicts = self._verdicts, {}
        self._requests = ()
        return verdicts


_VIEWS_SLOT: Final = "views"
"""Where a staged append's `ledger.backend.Stage` keeps the views' held-back states."""


class _BulkFold:
    """`Views.append_spooled`'s `after_chunk` hook: folds each stored chunk of a big append into
    the views inside the append's own transaction (one commit; the log is read once more, from
    the transaction's pages, not from a later one), keeping what each event got compactly: a
    code per appended event (in input order) into a table of the distinct verdict lists, which
    are few (-1: not kept, e.g. a duplicate: `Views.outcomes` recomputes those)."""

    _LIMIT: Final = 1 << 16
    """Distinct verdict lists kept at most (beyond: recomputed later, memory stays bounded)."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._carry = Carry()
        self.codes = array("i")
        self.complete = True
        """Whether every new event has its code (else `Views.refused` recomputes)."""
        self.table: list[tuple[Verdict, ...]] = []
        self._index: dict[tuple[Verdict, ...], int] = {}

    def __call__(self, ops: TxnOps | None, appended: list[Appended], events: list[Event]) -> None:
        if ops is None:  # the transaction (re)starts
            self._carry, self.codes, self.complete = Carry(), array("i"), True
            return
        found: dict[int, list[Verdict]] = {}
        carry = self._carry
        given = [(a.position, e) for a, e in zip(appended, events, strict=True) if not a.duplicate]
        stage = getattr(ops, "stage", None)
        fold: Callable[[], tuple[int, int]]
        if stage is None:  # one transaction: fold into the stored views in it
            fold = partial(self._store.fold_in, ops, CHUNK, found, carry, given=given)
        else:  # a staged append: the new states wait for its last transaction
            view = self._staged(stage).over(self._store.over(ops))
            fold = partial(catch_up_txn, view, CHUNK, verdicts=found, carry=carry, given=given)
        while True:
            tracking, size = fold()
            if tracking >= size:
                break
        index, table, codes = self._index, self.table, self.codes
        for result in appended:
            got = None if result.duplicate else found.get(result.position)
            if got is None:
                codes.append(-1)
                self.complete = self.complete and result.duplicate
                continue
            key = tuple(got)
            code = index.get(key)
            if code is None:
                if len(table) >= self._LIMIT:
                    codes.append(-1)
                    self.complete = False
                    continue
                code = index[key] = len(table)
                table.append(key)
            codes.append(code)

    def _staged(self, stage: Stage) -> StagedViews:
        """The views' states this staged append holds back (made, and their writing in its
        last transaction registered, on its first chunk)."""
        staged = stage.slots.get(_VIEWS_SLOT)
        if not isinstance(staged, StagedViews):
            staged = stage.slots[_VIEWS_SLOT] = StagedViews()
            store, held = self._store, staged
            stage.finishers[_VIEWS_SLOT] = lambda ops: held.write(store.over(ops))
        return staged


def verdicts_json(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """Verdicts as the ``history`` JSON shows them."""
    return [_verdict_json(v) for v in verdicts]


CURSORS: Final = 4096
"""How many subjects `SubjectCursors` remembers (the least recently used go first)."""


@dataclass(slots=True)
class SubjectCursor:
    """Where a recomputation of one subject's verdicts ended: how many of the subject index's
    positions it folded, the last of them, and the fold (that subject's states and the policy)
    after it."""

    seen: int = 0
    last: int = 0
    folder: Folder = field(default_factory=Folder)


class SubjectCursors:
    """The most recently used `SubjectCursor`s, shared by a `Views`' threads: a cursor is taken
    out while one thread folds on with it (another thread asking about the same subject
    meanwhile starts from the beginning), then given back."""

    def __init__(self, size: int = CURSORS) -> None:
        self._size = size
        self._cursors: OrderedDict[str, SubjectCursor] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, subject: str) -> SubjectCursor | None:
        with self._lock:
            return self._cursors.pop(subject, None)

    def give(self, subject: str, cursor: SubjectCursor) -> None:
        with self._lock:
            other = self._cursors.get(subject)
            if other is None or other.last < cursor.last:
                self._cursors[subject] = cursor
            self._cursors.move_to_end(subject)
            while len(self._cursors) > self._size:
                self._cursors.popitem(last=False)


class Views:
    """The stored projections of one ledger. `progress(done, total)`, if given, is told how
    every catch-up goes (also those a query makes by itself: the first one after a big append
    can take seconds)."""

    def __init__(self, ledger: Ledger, progress: Callable[[int, int], None] | None = None) -> None:
        self.ledger = ledger
        self.store = open_store(ledger)
        self.progress = progress
        self._cursors = SubjectCursors()
        self._captured: tuple[Any, _BulkFold] | None = None

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Fold every event beyond the tracking position; returns the new tracking position.

        Caught-up views are seen in a read snapshot: queries take no write lock then.
        """
        progress = progress if progress is not None else self.progress
        with self.reader() as reader:
            tracking, size = reader.tracking(), reader.size()
        if tracking >= size:
            if progress is not None:
                progress(tracking, size)
            return tracking
        total = size
        within = None if progress is None else (lambda position: progress(position, total))
        carry = Carry()
        while True:
            tracking, size = self.store.catch_up_chunk(CHUNK, within, carry)
            total = size
            if progress is not None:
                progress(tracking, size)
            if tracking >= size:
                return tracking

    def advance(
        self,
        expected: int,
        position: int,
        changes: Iterable[tuple[str, str, Any]],
        encoded: Iterable[tuple[str, str, bytes | None]] = (),
    ) -> bool:
        """Move the views from `expected` to `position` with states the caller folded itself
        (see `projections.views.advance_txn`, also for `encoded`); False if another catch-up
        moved them first."""
        result: bool = self.store.transact(
            lambda txn: advance_txn(txn, expected, position, changes, encoded)
        )
        return result

    def stored_states(self) -> tuple[int, int, dict[str, dict[str, Any]]]:
        """(tracking position, log size, every stored state) from one snapshot, as they are:
        without catching up first."""
        with self.reader() as reader:
            source = _ReaderSource(reader)
            states = {m.NAME: dict(source.subjects(m.NAME)) for m in PROJECTIONS}
            return reader.tracking(), reader.size(), states

    def tracking(self) -> int:
        """The last position folded into the stored views."""
        with self.reader() as reader:
            return reader.tracking()

    def positions(self) -> tuple[int, int]:
        """(the last position folded into the stored views, the log's size), in one read."""
        return self.store.positions()

    def wait_until(self, position: int, timeout: float = 5.0) -> None:
        """Read-your-writes: return once the views include `position` (catching up as needed)."""
        deadline = time.monotonic() + timeout
        while self.catch_up() < position:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the views did not reach position {position} in {timeout} s")
            self.ledger.wait_for(position, max(0.0, deadline - time.monotonic()))

    def follow(self, *, poll: float = 0.5, stop: Callable[[], bool] = lambda: False) -> None:
        """Keep the views current until `stop()` is true (a long-running projection runner).

        An outage of the backend is ridden out for as long as the backend's ``patience`` (see
        `ledger.postgres.PostgresBackend.ride_out`): a chunk cut off midway is folded again
        (its tracking moves with it, so nothing is folded twice)."""
        down_since: float | None = None
        while not stop():
            try:
                tracking = self.catch_up()
                self.ledger.wait_for(tracking + 1, poll)
                down_since = None
            except BackendUnavailableError:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since >= getattr(self.ledger.backend, "patience", 0):
                    raise
                time.sleep(poll)

    @contextmanager
    def reader(self) -> Iterator[ViewTxn]:
        """A consistent snapshot of the stored views."""
        yield from self.store.reader()

    @contextmanager
    def current(self) -> Iterator[ViewTxn]:
        """A snapshot of the views caught up with the log: the first snapshot itself when they
        are (a query then opens one read transaction, not two), else one after `catch_up`."""
        with self.reader() as reader:
            tracking, size = reader.tracking(), reader.size()
            if tracking >= size:
                if self.progress is not None:
                    self.progress(tracking, size)
                yield reader
                return
        self.catch_up()
        with self.reader() as reader:
            yield reader

    def status(
        self, kind: str | None = None, subject: str | None = None, now: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """The current ``status`` document (SPEC §5), after catching up. A SUBJECT alone with
        history but back in its default state shows that state where its events were folded."""
        with self.current() as reader:
            document = status_document(_ReaderSource(reader), kind, subject, now)
        if subject is not None and kind is None and not any(document.values()):
            from projections.query import with_known_defaults  # noqa: PLC0415

            document = with_known_defaults(document, subject, self.folded_by(subject), now)
        return document

    def policy(self, subject: str | None = None) -> dict[str, Any]:
        """``status policy``: the effective policy per subject and for ``*``
        (`projections.query.policy_document`), after catching up."""
        from projections.query import policy_document  # noqa: PLC0415

        with self.current() as reader:
            return policy_document(_ReaderSource(reader), subject)

    def state(self, projection: str, subject: str) -> Any | None:
        """One subject's current state struct (None: the default state)."""
        with self.current() as reader:
            return _ReaderSource(reader).state(projection, subject)

    def states(self) -> dict[str, dict[str, Any]]:
        """Every stored state, by projection and subject (for divergence checks)."""
        self.catch_up()
        return self.stored_states()[2]

    def tracked_states(
        self, *, with_states: bool = True
    ) -> tuple[int, dict[str, dict[str, Any]] | None]:
        """The tracking position and (`with_states`) every stored state, read in ONE snapshot,
        without catching up: the states are exactly the fold of the log up to that position."""
        if not with_states:
            with self.reader() as reader:
                return reader.tracking(), None
        tracking, _, states = self.stored_states()
        return tracking, states

    def history(self, subject: str) -> list[dict[str, Any]]:
        """Each event about `subject` with its verdicts (the ``history`` JSON of SPEC §5).

        The verdicts are recomputed from the subject's own events and the settings for every
        subject (`projections.views.subject_verdicts`): no catch-up is needed.
        """
        entries = self.ledger.history(subject)
        verdicts = self._verdicts_of(subject, entries)
        return [
            {
                "position": entry.position,
                "type": type(entry.event).__name__,
                "at": entry.event.at,
                "actor": entry.event.actor,
                "verdicts": [_verdict_json(v) for v in verdicts.get(entry.position, [])],
            }
            for entry in entries
        ]

    def verdicts(self, position: int) -> list[dict[str, Any]]:
        """The verdicts of the event at one position, as in ``history``."""
        return self.verdicts_at([position])[0]

    def verdicts_at(self, positions: Iterable[int]) -> list[list[dict[str, Any]]]:
        """The verdicts of several positions, as in ``history``, recomputed (no catch-up)."""
        return self.entry_verdicts([self.ledger.get(position) for position in positions])

    def entry_verdicts(self, entries: Sequence[Entry]) -> list[list[dict[str, Any]]]:
        """The verdicts of the events of `entries`, as in ``history`` (`verdicts_of`)."""
        return [[_verdict_json(v) for v in found] for found in self.verdicts_of(entries)]

    def verdicts_of(self, entries: Sequence[Entry]) -> list[list[Verdict]]:
        """The verdicts of the events of `entries`: recomputed once per subject from its own
        events and the settings for every subject up to its last one.

        Readers that go forward (a subscription, a follower) ask about each subject again and
        again: where the last recomputation of a subject ended is remembered (`SubjectCursors`),
        so the next one folds only that subject's newer events, not its whole history again."""
        lowest: dict[str, int] = {}
        last: dict[str, int] = {}
        for entry in entries:
            subject, position = entry.event.subject, entry.position
            last[subject] = max(last.get(subject, 0), position)
            lowest[subject] = min(lowest.get(subject, position), position)
        settings = self.ledger.history(ALL) if last else []
        known = {e.position: e for e in entries}
        cursors: dict[str, SubjectCursor] = {}
        for subject in last:
            cursor = self._cursors.take(subject)
            cursors[subject] = (
                cursor if cursor is not None and cursor.last < lowest[subject] else SubjectCursor()
            )
        # every subject's newer positions at once (one query on PostgreSQL)
        newer = positions_of_subjects(
            self.ledger.backend, {subject: cursor.seen for subject, cursor in cursors.items()}
        )
        found: dict[int, list[Verdict]] = {}
        for subject, upto in last.items():
            found.update(
                self._resumed(
                    subject, cursors[subject], newer[subject], upto, settings, known=known
                )
            )
        return [found.get(e.position, []) for e in entries]

    def _resumed(
        self,
        subject: str,
        cursor: SubjectCursor,
        positions: list[int],
        upto: int,
        settings: list[Entry],
        *,
        known: dict[int, Entry],
    ) -> dict[int, list[Verdict]]:
        """The verdicts of `subject`'s events up to `upto` from where `cursor` left off (taken
        out of the cursors; a fresh one: from its first event), given the subject's
        `positions` beyond it (`known`: entries the caller read already, not read again)."""
        positions = positions[: bisect.bisect_right(positions, upto)]
        unknown = self.ledger.indexed(subject, [p for p in positions if p not in known])
        own = sorted(
            [*unknown, *(known[p] for p in positions if p in known)], key=lambda e: e.position
        )
        own = [e for e in own if e.event.subject == subject]
        if not own:
            self._cursors.give(subject, cursor)
            return {}
        end = own[-1].position
        merged = sorted(
            [(e.position, e.event) for e in own]
            + (
                []
                if subject == ALL
                else [(e.position, e.event) for e in settings if cursor.last < e.position < end]
            ),
            key=lambda pair: pair[0],
        )
        verdicts = subject_verdicts(merged, subject, cursor.folder)
        cursor.seen += len(positions)
        cursor.last = end
        self._cursors.give(subject, cursor)
        return verdicts

    def _verdicts_of(
        self, subject: str, entries: list[Entry], settings: list[Entry] | None = None
    ) -> dict[int, list[Verdict]]:
        """The verdicts of `entries` (`subject`'s events, in order), recomputed (`settings`:
        the events about ``*``, read here when not given)."""
        if not entries:
            return {}
        last = entries[-1].position
        if subject == ALL:
            settings = []
        elif settings is None:
            settings = self.ledger.history(ALL)
        merged = sorted(
            [(e.position, e.event) for e in entries]
            + [(e.position, e.event) for e in settings if e.position < last],
            key=lambda pair: pair[0],
        )
        return subject_verdicts(merged, subject)

    def append_with_verdicts(
        self,
        events: Sequence[Event],
        *,
        strict: bool = False,
        validated: bool = False,
        states: bool = False,
    ) -> list[Outcome]:
        """Append `events` as one atomic batch (strictly: `strict`) and report each one's
        verdicts (SPEC §5: the shortcuts and ``append --json``); with `states`, also the
        subject's state after it in each projection that judged it."""
        precondition = self.strict() if strict else None
        results = self.ledger.append_batch(events, precondition=precondition, validated=validated)
        return list(self.outcomes(results, events if states else None))

    def append_spooled(
        self,
        spool: Spool,
        *,
        strict: bool = False,
        precondition: Precondition | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> BulkResult:
        """`Ledger.append_spooled` (a big append, all or nothing) with the stored views folded
        in the same transaction, chunk by chunk: the views never lag it, and `outcomes` of the
        result answers from the verdicts that fold gave, without another pass over the log.
        `strict`: refused operator events refuse the append (SPEC §1), checked on the views as
        this fold leaves them (so a staged append's are seen: it may still be staged, unlike
        one with another `precondition`)."""
        fold = _BulkFold(self.store)
        if strict:
            if precondition is not None:
                raise ValueError("strict checks are a precondition of their own: give one")
            precondition = strict_precondition(self._over_staged)
        result = self.ledger.append_spooled(
            spool,
            precondition=precondition,
            progress=progress,
            after_chunk=fold,
            stageable=precondition is None or strict,
        )
        self._captured = (result, fold)
        return result

    def outcomes(
        self,
        results: Iterable[Appended],
        events: Sequence[Event] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[Outcome]:
        """The verdicts of appended events (in the order an append gives them), a chunk at a
        time in bounded memory: the views are caught up to each chunk's last new position (with
        `progress`), keeping the verdicts that fold gives the chunk's positions (verdicts are
        not stored); those the views held already (a duplicate's original, or events another
        process folded first) are recomputed (`entry_verdicts`). With `events` (the appended
        events, in order), the subject's state then in each projection that judged it."""
        progress = progress if progress is not None else self.progress
        captured = self._captured
        fold = captured[1] if captured is not None and captured[0] is results else None
        shared = [] if fold is None else [verdicts_json(v) for v in fold.table]
        source = iter(results)
        carry = Carry()
        index = 0
        while chunk := list(islice(source, _OUTCOMES)):
            found: dict[int, list[Verdict]] = {}
            known: dict[int, list[dict[str, Any]]] = {}
            if fold is not None:  # folded in the append's transaction: verdicts kept there
                codes = fold.codes
                for offset, result in enumerate(chunk, index):
                    code = codes[offset]
                    if code >= 0:
                        known[result.position] = shared[code]
            else:
                new = [r.position for r in chunk if not r.duplicate]
                if new:
                    self._fold_to(min(new), max(new), found, carry, progress)
            missing = [
                r.position for r in chunk if r.position not in found and r.position not in known
            ]
            recomputed = dict(zip(missing, self.verdicts_at(missing), strict=True))
            recomputed.update(known)
            with self.reader() as reader:
                states = _ReaderSource(reader)
                done = []
                for result in chunk:
                    given = found.get(result.position)
                    verdicts = (
                        verdicts_json(given) if given is not None else recomputed[result.position]
                    )
                    now_states: dict[str, dict[str, Any]] = {}
                    if events is not None:
                        subject = events[index].subject
                        for v in verdicts:
                            name = v["projection"]
                            state = states.state(name, subject)
                            now_states[name] = BY_NAME[name].view(subject, state, None)
                    index += 1
                    done.append(
                        Outcome(result.position, result.id, result.duplicate, verdicts, now_states)
                    )
            yield from done

    def refused(
        self, results: Iterable[Appended], inputs: Iterable[T]
    ) -> Iterator[tuple[T, Outcome]]:
        """(input, outcome) of each new event a projection rejected, `inputs` being anything
        given per event in the same order (for ``append``'s human output). After
        `append_spooled`, answered from the verdicts kept by its fold: only the refused events
        get an `Outcome`; otherwise from `outcomes`."""
        captured = self._captured
        if captured is None or captured[0] is not results or not captured[1].complete:
            for given, outcome in zip(inputs, self.outcomes(results), strict=True):
                if not outcome.duplicate and outcome.rejected:
                    yield given, outcome
            return
        fold = captured[1]
        table = fold.table
        bad = {c for c, vs in enumerate(table) if any(v.verdict == "rejected" for v in vs)}
        codes = fold.codes
        last = max((i for i, code in enumerate(codes) if code in bad), default=-1)
        # the inputs and results are read (from the spool) only as far as the last refusal
        for index, (given, result) in enumerate(zip(inputs, results, strict=False)):
            if index > last:
                return
            if codes[index] in bad and not result.duplicate:
                verdicts = verdicts_json(table[codes[index]])
                yield given, Outcome(result.position, result.id, False, verdicts)

    def _fold_to(
        self,
        first: int,
        last: int,
        found: dict[int, list[Verdict]],
        carry: Carry,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """Catch the views up to `last`, putting the verdicts of `first`..`last` into `found`
        as they are folded (positions the views already hold are left out)."""
        tracking = self.tracking()
        while tracking < last:
            keep = tracking + 1 >= first
            stop = last if keep else first - 1
            tracking, size = self.store.catch_up_chunk(
                min(CHUNK, stop - tracking), None, carry, found if keep else None
            )
            if progress is not None:
                progress(tracking, size)
            if tracking >= size:
                break

    def dry_run(
        self, events: Sequence[Event], *, strict: bool = False, validated: bool = False
    ) -> list[Outcome]:
        """The verdicts `events` would get if appended now as one batch — folded in order on
        top of the current state, under the write lock, exactly as a real append — appending
        nothing (SPEC §5 ``--dry-run``). With `strict`, a refusal raises `StrictRefusedError`
        as a strict append would. Validation, signatures and trust are checked as for real."""
        self.catch_up()
        check = dry_run_precondition(self.store.over, self.strict() if strict else None)
        try:
            self.ledger.append_batch(events, precondition=check, validated=validated)
        except DryRunAbortError as done:
            folded = done.folded
        else:  # pragma: no cover  the precondition always raises
            raise AssertionError("a dry run appended")
        outcomes = []
        for given, result in zip(events, folded, strict=True):
            judged = {v.projection for v in result.verdicts}
            states = {
                projection: BY_NAME[projection].view(subject, state, None)
                for (projection, subject), state in result.states.items()
                if subject == given.subject and projection in judged
            }
            verdicts = (
                self.verdicts(result.original)
                if result.original is not None
                else [_verdict_json(v) for v in result.verdicts]
            )
            outcomes.append(Outcome(result.original, given.id, result.duplicate, verdicts, states))
        return outcomes

    def subjects(self) -> list[str]:
        """Every subject the stored views hold a state for (for shell completion: no catch-up,
        so it answers at once even right after a big append)."""
        names: set[str] = set()
        with self.reader() as reader:
            for module in PROJECTIONS:
                names.update(subject for subject, _ in reader.scan(module.NAME))
        return sorted(names)

    def folded_by(self, subject: str, up_to: int | None = None) -> set[str]:
        """The projections that folded an event about `subject` (up to a position)."""
        from projections.query import projections_of  # noqa: PLC0415

        entries = self.ledger.history(subject)
        return projections_of(e.event for e in entries if up_to is None or e.position <= up_to)

    def changes(
        self, after: int, *, poll: float = 1.0, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[int]:
        """The log's size each time it grows beyond `after` (blocks in between, checking `stop`
        at least every `poll` seconds): what a live view (``status --watch``,
        ``history --follow``) waits on."""
        size = after
        while not stop():
            self.ledger.backend.wait_beyond(size, poll)
            now = self.ledger.size()
            if now > size:
                size = now
                yield size

    def history_after(self, subject: str, after: int) -> list[dict[str, Any]]:
        """The ``history`` rows of `subject` beyond position `after`."""
        return [row for row in self.history(subject) if row["position"] > after]

    def inline(self) -> InlineFold:
        """An `after` hook for `Ledger.append_batch` that folds the appended events into the
        views inside the append's own transaction: one commit, and the views never lag it. It
        keeps the verdicts the fold gave (`InlineFold.take`)."""
        return InlineFold(self.store)

    def strict(self) -> Precondition:
        """The precondition for a strict append (SPEC §1): see `strict_precondition`."""
        return strict_precondition(self.store.over)

    def _over_staged(self, ops: TxnOps) -> ViewReader:
        """The views inside an append's transaction, with the states a staged append holds
        back over them (see `_BulkFold._staged`)."""
        view = self.store.over(ops)
        stage = getattr(ops, "stage", None)
        staged = None if stage is None else stage.slots.get(_VIEWS_SLOT)
        return staged.over(view) if isinstance(staged, StagedViews) else view

    def rebuild(self) -> int:
        """Drop the stored views and fold the whole log again."""
        self.store.reset()
        return self.catch_up()
