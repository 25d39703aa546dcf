"""Queries over the stored projections: status, history, read-your-writes, strict appends.

`Views(ledger)` opens the stored views of a ledger, whatever its backend. Queries catch the views
up first (folding whatever the log holds beyond the tracking position, in chunks, each chunk with
its tracking in one transaction), so a query always reflects every acknowledged append: that is
read-your-writes without a separate runner. `follow` keeps them current in a long-running process.

`status_document` builds the SPEC §5 ``status`` JSON from any source of states — the stored
views here, or a replayed `Folder` (as-of queries in `replay`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final, Protocol

from ledger.backend import Precondition
from ledger.errors import UsageError
from ledger.ledger import Entry, Ledger
from projections.base import Verdict
from projections.policy import ALL
from projections.state import PROJECTIONS
from projections.views import (
    CHUNK,
    Carry,
    ViewReader,
    ViewTxn,
    advance_txn,
    codec,
    strict_precondition,
    subject_verdicts,
)

__all__ = ["KINDS", "StateSource", "Views", "status_document"]

KINDS: Final[tuple[str, ...]] = (
    "maintenance",
    "detachment",
    "recovery",
    "membership",
    "broadcasts",
)
_MODULES: Final = {module.NAME: module for module in PROJECTIONS}


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
        module = _MODULES[name]
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


class _ReaderSource:
    def __init__(self, reader: ViewReader) -> None:
        self._reader = reader

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        for subject, data in self._reader.scan(projection):
            yield subject, codec.decode_state(projection, data)

    def state(self, projection: str, subject: str) -> Any | None:
        data = self._reader.load(projection, subject)
        return None if data is None else codec.decode_state(projection, data)


class _Store(Protocol):
    def catch_up_chunk(
        self,
        limit: int,
        progress: Callable[[int], None] | None = None,
        carry: Carry | None = None,
    ) -> tuple[int, int]: ...

    def reader(self) -> Iterator[ViewTxn]: ...

    def transact(self, fn: Callable[[ViewTxn], Any]) -> Any: ...

    def over(self, ops: Any) -> ViewTxn: ...

    def reset(self) -> None: ...


def open_store(ledger: Ledger) -> _Store:
    """The stored views that live beside this ledger's log."""
    from ledger.lmdb_backend import LMDBBackend  # noqa: PLC0415

    backend = ledger.backend
    if isinstance(backend, LMDBBackend):
        from projections.store_lmdb import LMDBViews  # noqa: PLC0415

        return LMDBViews(backend)
    from ledger.postgres import PostgresBackend  # noqa: PLC0415  optional: psycopg
    from projections.store_postgres import PostgresViews  # noqa: PLC0415

    assert isinstance(backend, PostgresBackend), f"no stored views for {type(backend).__name__}"
    return PostgresViews(backend)


class Views:
    """The stored projections of one ledger. `progress(done, total)`, if given, is told how
    every catch-up goes (also those a query makes by itself: the first one after a big append
    can take seconds)."""

    def __init__(
        self, ledger: Ledger, progress: Callable[[int, int], None] | None = None
    ) -> None:
        self.ledger = ledger
        self.store = open_store(ledger)
        self.progress = progress

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
        self, expected: int, position: int, changes: Iterable[tuple[str, str, Any]]
    ) -> bool:
        """Move the views from `expected` to `position` with states the caller folded itself
        (see `projections.views.advance_txn`); False if another catch-up moved them first."""
        result: bool = self.store.transact(
            lambda txn: advance_txn(txn, expected, position, changes)
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

    def wait_until(self, position: int, timeout: float = 5.0) -> None:
        """Read-your-writes: return once the views include `position` (catching up as needed)."""
        deadline = time.monotonic() + timeout
        while self.catch_up() < position:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the views did not reach position {position} in {timeout} s")
            self.ledger.wait_for(position, max(0.0, deadline - time.monotonic()))

    def follow(self, *, poll: float = 0.5, stop: Callable[[], bool] = lambda: False) -> None:
        """Keep the views current until `stop()` is true (a long-running projection runner)."""
        while not stop():
            tracking = self.catch_up()
            self.ledger.backend.wait_beyond(tracking, poll)

    @contextmanager
    def reader(self) -> Iterator[ViewTxn]:
        """A consistent snapshot of the stored views."""
        yield from self.store.reader()

    def status(
        self, kind: str | None = None, subject: str | None = None, now: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """The current ``status`` document (SPEC §5), after catching up."""
        self.catch_up()
        with self.reader() as reader:
            return status_document(_ReaderSource(reader), kind, subject, now)

    def state(self, projection: str, subject: str) -> Any | None:
        """One subject's current state struct (None: the default state)."""
        self.catch_up()
        with self.reader() as reader:
            return _ReaderSource(reader).state(projection, subject)

    def states(self) -> dict[str, dict[str, Any]]:
        """Every stored state, by projection and subject (for divergence checks)."""
        self.catch_up()
        return self.stored_states()[2]

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
        subject = self.ledger.get(position).event.subject
        entries = [e for e in self.ledger.history(subject) if e.position <= position]
        verdicts = self._verdicts_of(subject, entries)
        return [_verdict_json(v) for v in verdicts.get(position, [])]

    def _verdicts_of(self, subject: str, entries: list[Entry]) -> dict[int, list[Verdict]]:
        """The verdicts of `entries` (`subject`'s events, in order), recomputed."""
        if not entries:
            return {}
        last = entries[-1].position
        settings = [] if subject == ALL else self.ledger.history(ALL)
        merged = sorted(
            [(e.position, e.event) for e in entries]
            + [(e.position, e.event) for e in settings if e.position < last],
            key=lambda pair: pair[0],
        )
        return subject_verdicts(merged, subject)

    def strict(self) -> Precondition:
        """The precondition for a strict append (SPEC §1): see `strict_precondition`."""
        return strict_precondition(self.store.over)

    def rebuild(self) -> int:
        """Drop the stored views and fold the whole log again."""
        self.store.reset()
        return self.catch_up()
