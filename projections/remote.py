"""The projections of a remote ledger (SPEC-server §7.3): `Views`' queries over a server.

`RemoteViews(RemoteLedger)` answers `status`, `history` and `verdicts` from the server's own
stored projections (``/v1/status``, ``/v1/history``), `changes` for the live views (``status
--watch``, ``history --follow``) from ``/v1/subscribe``, read-your-writes with `wait_until`
(``min_position`` and ``wait``), and `strict()` makes the next append a ``?strict=true`` one.
The server folds as it appends, so `catch_up` has nothing to do and returns how far it is.
An auditor does not take these answers on trust: `replay.audit.run_audit` folds the log itself
and compares its result with `status` (a server that lies is named as diverged).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ledger.backend import Appended, Precondition
from ledger.errors import NotFoundError
from ledger.events import Event
from ledger.ledger import Ledger
from ledger.remote import STRICT, RemoteLedger, direct_access_error, quote
from projections.api import KINDS, Outcome, Views

if TYPE_CHECKING:
    pass

__all__ = ["RemoteViews", "views_of"]

_ANY_SUBJECT: Final = "-"
"""A subject name used only to wait for the views (its document is one small object)."""


def _rfc3339(moment: datetime) -> str:
    return msgspec.json.encode(moment).decode().strip('"')


class RemoteViews:
    """The stored projections of the ledger behind a server, with `Views`' method names."""

    def __init__(self, ledger: RemoteLedger) -> None:
        self.ledger = ledger
        self._client = ledger.remote.client

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """The server keeps its views current: returns the position they have folded."""
        info = self.ledger.remote.info()
        tracking, size = int(info["tracking"]), int(info["size"])
        if progress is not None:
            progress(tracking, size)
        return tracking

    def tracking(self) -> int:
        """The last position the server's projections have folded."""
        return int(self.ledger.remote.info()["tracking"])

    def wait_until(self, position: int, timeout: float = 5.0) -> None:
        """Read-your-writes: return once the server's views include `position`."""
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0, min(30_000, math.ceil((deadline - time.monotonic()) * 1000)))
            try:
                self._client.json(
                    f"/v1/status/maintenance/{_ANY_SUBJECT}",
                    {"min_position": max(position, 1), "wait": wait},
                )
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"the views did not reach position {position} in {timeout} s"
                    ) from None
            else:
                return

    def status(
        self, kind: str | None = None, subject: str | None = None, now: datetime | None = None
    ) -> dict[str, dict[str, Any]]:
        """The ``status`` document (SPEC §5) of the server's views."""
        params = {"now": _rfc3339(now)} if now is not None else None
        if kind is not None:
            path = f"/v1/status/{quote(kind)}"
            if subject is not None:
                path += f"/{quote(subject)}"
            document: dict[str, dict[str, Any]] = self._client.json(path, params)
            return document
        document = self._client.json("/v1/status", params)
        if subject is None:
            return document
        # a subject in every kind: shown where it has a state, as `status_document` does
        return {
            name: ({subject: document[name][subject]} if subject in document.get(name, {}) else {})
            for name in KINDS
        }

    def policy(self, subject: str | None = None) -> dict[str, Any]:
        """``status policy`` (`projections.query.policy_document`), as the server folds it."""
        path = "/v1/policy" if subject is None else f"/v1/policy/{quote(subject)}"
        document: dict[str, Any] = self._client.json(path)
        return document

    def history(self, subject: str) -> list[dict[str, Any]]:
        """Each event about `subject` with its verdicts (the ``history`` JSON of SPEC §5)."""
        rows: list[dict[str, Any]] = self._client.json(f"/v1/history/{quote(subject)}")
        return rows

    def history_after(self, subject: str, after: int) -> list[dict[str, Any]]:
        """The ``history`` rows of `subject` beyond position `after`."""
        return [row for row in self.history(subject) if row["position"] > after]

    def changes(
        self, after: int, *, poll: float = 1.0, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[int]:
        """As `Views.changes`: the position the server's views have folded, each time it goes
        beyond `after` (blocks in between on one ``/v1/subscribe`` stream, resumed across
        server restarts, checking `stop` at least every `poll` seconds). Events appended in a
        burst are shown once, at the newest position seen."""
        remote = self.ledger.remote
        size = after
        while not stop():
            if not remote.wait_beyond(size, poll):
                continue
            now = remote.newest_seen()
            if now <= size:  # woken by the log's size (before the stream's start)
                now = self.ledger.size()
            if now > size:
                size = now
                yield size

    def verdicts(self, position: int) -> list[dict[str, Any]]:
        """The verdicts the server's projections gave the event at `position`."""
        seen = self.ledger.verdicts_seen.get(position)
        if seen is not None:
            return seen
        for entry in self.ledger.follow(position - 1, stop=5.0):
            if entry.position == position:
                return self.ledger.verdicts_seen.get(position, [])
        raise NotFoundError(f"no event at position {position}")

    def verdicts_at(self, positions: Iterable[int]) -> list[list[dict[str, Any]]]:
        """The verdicts of several positions, as in ``history``."""
        return [self.verdicts(position) for position in positions]

    def strict(self) -> Precondition:
        """Make an append strict: the server refuses (409, exit 3) what its views reject."""
        return STRICT

    def outcomes(
        self,
        results: Sequence[Appended],
        events: Sequence[Event] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[Outcome]:
        """As `Views.outcomes`: each result's verdicts (the server sent them with the append)
        and, with `events`, the subject's state in each projection that judged it."""
        if progress is not None and results:
            progress(results[-1].position, results[-1].position)
        for result in results:
            verdicts = getattr(result, "verdicts", None)
            if verdicts is None:
                verdicts = self.verdicts(result.position)
            states = getattr(result, "states", None) if events is not None else None
            yield Outcome(
                result.position, result.id, result.duplicate, list(verdicts), dict(states or {})
            )

    def append_with_verdicts(
        self,
        events: Sequence[Event],
        *,
        strict: bool = False,
        validated: bool = False,
        states: bool = False,
    ) -> list[Outcome]:
        """As `Views.append_with_verdicts`, through the server (``states=true`` asks it for the
        subjects' states after the events)."""
        precondition = STRICT if strict else None
        results = self.ledger.append_batch(
            events, precondition=precondition, validated=validated, states=states
        )
        return list(self.outcomes(results, events if states else None))

    def dry_run(
        self, events: Sequence[Event], *, strict: bool = False, validated: bool = False
    ) -> list[Outcome]:
        """As `Views.dry_run`: the server folds them on top of its views, appending nothing."""
        rows = self.ledger.dry_run(events, strict=strict, validated=validated)
        return [
            Outcome(
                row.get("position"),
                row.get("id"),
                bool(row["duplicate"]),
                list(row.get("verdicts", [])),
                dict(row.get("states") or {}),
            )
            for row in rows
        ]

    def rebuild(self) -> int:
        """The server's views are rebuilt only with direct access to its ledger."""
        raise direct_access_error(self.ledger.url, "rebuilding the stored views")


def views_of(ledger: Ledger) -> Views | RemoteViews:
    """The stored projections of `ledger`: its own, or its server's for a remote ledger."""
    if isinstance(ledger, RemoteLedger):
        return RemoteViews(ledger)
    return Views(ledger)
