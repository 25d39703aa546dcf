"""Keeps the server's projections current and wakes whoever waits for a position.

One thread follows the log (`Views.catch_up`, then `wait_beyond`): appends made through this
server, through another server over the same PostgreSQL ledger, or by the CLI beside an LMDB
ledger all get folded. Appends made here also advance the hub directly (`advanced`), so a
subscriber sees them without waiting for the follower's next turn; so do the appends of this
server's sibling workers (`serve --workers`), which ring a bell (`adminchain.server.siblings`)
that the event loop hears (`heard`). Async waiters (subscriptions, `min_position` reads) sleep
on an asyncio event swapped at every advance: no thread per waiter.

The hub also keeps the newest entries appended here with their verdicts (`Tail`): a live
subscription reads them from memory, on the event loop, rather than reading the log and
recomputing verdicts in a worker thread (two thread switches, each a wait for the GIL when the
process is busy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ledger.ledger import Entry
from projections.api import Views
from projections.base import Verdict

__all__ = ["Hub", "Recent", "Tail"]

log = logging.getLogger("adminchain.server")

_POLL = 0.5
_BACKOFF_MAX = 10.0
TAIL: Final = 4096
"""Recent entries the hub keeps for live subscriptions (`Tail`)."""


@dataclass(frozen=True, slots=True)
class Recent:
    """An entry appended lately, and its verdicts (None: not known here, to be recomputed)."""

    entry: Entry
    verdicts: Sequence[Verdict] | None


class Tail:
    """The newest entries appended in this process, with their verdicts, by position.

    Written by the appender thread right after its commit, read on the event loop; at most
    `size` of them are kept (the oldest go first). Kept only while somebody subscribes."""

    def __init__(self, size: int = TAIL) -> None:
        self.size = size
        self.wanted = 0
        """Open subscriptions: the appender keeps entries only while this is above 0."""
        self._recent: dict[int, Recent] = {}

    def put(self, recent: Sequence[Recent]) -> None:
        """Keep `recent` (at most the last `size`), forgetting the oldest beyond `size`."""
        table = self._recent
        for item in recent[-self.size :]:
            table[item.entry.position] = item
        while len(table) > self.size:
            del table[next(iter(table))]

    def get(self, first: int, last: int) -> list[Recent] | None:
        """The entries from `first` to `last`, or None unless every one of them is kept."""
        table = self._recent
        found = []
        for position in range(first, last + 1):
            item = table.get(position)
            if item is None:
                return None
            found.append(item)
        return found

    def kept(self, first: int, last: int) -> dict[int, Recent]:
        """Those of the entries from `first` to `last` that are kept, by position (with
        `--workers`, the siblings' appends are not: those are read from the log)."""
        table = self._recent
        return {p: item for p in range(first, last + 1) if (item := table.get(p)) is not None}

    def clear(self) -> None:
        """Forget every entry (nobody subscribes any more)."""
        self._recent = {}


class Hub:
    """The folded position of the server's views, and the waiting on it."""

    def __init__(self, views: Views) -> None:
        self.views = views
        self.tracking = 0
        self.size = 0
        self.behind_since: float | None = None
        self.healthy = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._stop = threading.Event()
        self._draining = False
        self._fold_lock = threading.Lock()
        self._advance_lock = threading.Lock()
        self.tail = Tail()
        self._thread = threading.Thread(target=self._follow, name="adminchain-hub", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fold what the log holds, then follow it from a thread of its own."""
        self._loop = loop
        self.fold()
        self._thread.start()

    def stop(self) -> None:
        """End the follower (it notices within `_POLL` seconds) and wake every waiter."""
        self._stop.set()
        self._thread.join(timeout=_POLL * 4)
        self._wake_soon()

    def draining(self) -> None:
        """A shutdown began: end the subscriptions (the follower keeps folding meanwhile)."""
        self._draining = True
        self._wake_soon()

    @property
    def stopping(self) -> bool:
        """True once the server is shutting down."""
        return self._draining or self._stop.is_set()

    def _follow(self) -> None:
        backoff = 0.5
        fold, tracking = True, 0
        while not self._stop.is_set():
            try:
                if fold:
                    tracking = self.fold()
                    self.healthy = True
                    backoff = 0.5
                # Beyond what the hub knows, not only what this thread folded: the appender's
                # own folds and the siblings' (`heard`) need no turn here. And only if the
                # hub has not moved meanwhile: a sibling's commit wakes this thread (NOTIFY)
                # as its bell wakes the event loop, and the bell has said it all; if the log
                # grew beyond that too, the next wait returns at once.
                waited = max(tracking, self.tracking)
                grew = self.views.ledger.backend.wait_beyond(waited, _POLL)
                fold = grew and self.tracking <= waited
            except Exception as e:  # noqa: BLE001  the follower must outlive a storage outage
                fold = True
                self.healthy = False
                log.warning("projection follower: %s; retrying in %.1f s", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def fold(self) -> int:
        """Catch the views up with the log (one folder at a time in this process)."""
        with self._fold_lock:
            tracking, size = self.views.positions()  # mostly all it takes: writers fold inline
            if tracking < size:
                tracking = self.views.catch_up()
            self.advanced(tracking, max(size, tracking))
            return tracking

    def ensure(self, position: int) -> None:
        """Return once the views hold `position` (folding it here if nobody has yet)."""
        if self.tracking >= position:
            return
        with self._fold_lock:
            if self.tracking >= position:
                return
            tracking = self.views.catch_up()
            self.advanced(tracking, tracking)

    def heard(self, tracking: int, size: int) -> None:
        """On the event loop: a sibling worker rang that the views hold `tracking` of a log of
        `size` (`adminchain.server.siblings`); wake the waiters at once if that is news."""
        if self.advanced(tracking, size, wake=False):
            self._wake()

    def advanced(self, tracking: int, size: int, *, wake: bool = True) -> bool:
        """Record that the views hold `tracking` (of a log of `size`); wake waiters if it moved
        (soon, on the event loop; with `wake` False the caller, on the loop, wakes them).
        Whether it moved."""
        with self._advance_lock:  # appender, follower and event loop: the figures only grow
            self.size = max(self.size, size)
            moved = tracking > self.tracking
            if moved:
                self.tracking = tracking
            if self.tracking >= self.size:
                self.behind_since = None
            elif self.behind_since is None:
                self.behind_since = time.monotonic()
        if moved and wake:
            self._wake_soon()
        return moved

    def lag(self) -> int:
        """Events in the log not yet folded (as last seen)."""
        return max(0, self.size - self.tracking)

    def ready(self) -> bool:
        """The views are at most 1 s behind the log, and the follower is healthy."""
        behind = self.behind_since
        return self.healthy and (behind is None or time.monotonic() - behind <= 1.0)

    def _wake_soon(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop closed meanwhile
            return

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the views have folded beyond `position`; False on timeout or shutdown."""
        deadline = time.monotonic() + timeout
        while self.tracking <= position and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._event
            try:
                async with asyncio.timeout(remaining):  # no task of its own, as wait_for makes
                    await event.wait()
            except TimeoutError:
                return self.tracking > position
        return self.tracking > position
