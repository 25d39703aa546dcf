"""One writer thread for the server's appends (group commit without a thread per request).

HTTP requests are parsed and validated on the event loop and queued here as prepared requests.
The writer takes everything queued while its last transaction committed, writes it in ONE
durable transaction (each request still all-or-nothing, with its own outcome), takes every
appended position's verdicts from the fold that ran inside that transaction
(`projections.api.InlineFold`: verdicts are not stored), and wakes the event loop once for the whole
batch. Many concurrent clients cost few flushes and few thread switches.

Right after the commit it rings the sibling workers' bell (`adminchain.server.siblings`) and,
while somebody subscribes, hands the new entries with their verdicts to the hub's `Tail`, before
the hub wakes the subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from adminchain.server.hub import Hub, Recent
from adminchain.server.siblings import Siblings
from ledger.backend import Appended, AppendRequest
from ledger.ledger import Entry, Ledger
from projections.api import InlineFold, Views
from projections.base import Verdict

__all__ = ["Appender", "Outcome"]

log = logging.getLogger("adminchain.server")

Outcome = tuple[list[Appended], list[list[Verdict]]]
"""Each event's place in the log, and its verdicts."""

_Item = tuple[AppendRequest, "asyncio.Future[Outcome]"]


class Appender:
    """The server's single appending thread."""

    def __init__(
        self,
        ledger: Ledger,
        views: Views,
        hub: Hub,
        fold: InlineFold,
        siblings: Siblings | None = None,
    ) -> None:
        self._ledger = ledger
        self._siblings = siblings
        self._views = views
        self._fold = fold
        self._hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="adminchain-appender", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start writing; results are delivered on `loop`."""
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    async def append(self, request: AppendRequest) -> Outcome:
        """Queue a prepared request; returns once it is durable and folded (or raises its
        error, e.g. a strict refusal or a storage failure: then nothing of it is stored)."""
        assert self._loop is not None, "the appender was not started"
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._queue.put((request, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        requests = [request for request, _ in batch]
        outcomes: list[Outcome | BaseException] = []
        try:
            self._fold.take()
            self._fold.expect(requests)
            self._ledger.write(requests)
            folded = self._fold.take()
            written = [r.result for r in requests if r.result]
            positions = [a.position for r in requests for a in (r.result or ())]
            verdicts = iter(self._verdicts(positions, folded))
            for request in requests:
                if request.error is not None or request.result is None:
                    outcomes.append(request.error or RuntimeError("the append was not written"))
                else:
                    outcomes.append((request.result, [next(verdicts) for _ in request.result]))
            if written:
                if self._hub.tail.wanted:
                    self._hub.tail.put(_recent(requests, outcomes))
                last = max(a.position for result in written for a in result)
                if self._fold.tracking:  # what the committed fold left: no read to learn it
                    size = max(last, self._fold.tracking)
                    if self._siblings is not None:
                        self._siblings.ring(self._fold.tracking, size)
                    self._hub.advanced(self._fold.tracking, size)
                self._hub.ensure(last)
        except Exception as e:
            log.exception("append batch failed")
            outcomes = [e] * len(batch)
        assert self._loop is not None
        futures = [future for _, future in batch]
        try:
            self._loop.call_soon_threadsafe(_resolve, futures, outcomes)
        except RuntimeError:  # the loop closed (shutdown): nobody waits any more
            return

    def _verdicts(
        self, positions: list[int], folded: dict[int, list[Verdict]]
    ) -> list[list[Verdict]]:
        """Each position's verdicts: from the transaction's own fold, else (a duplicate's
        original, folded before) recomputed."""
        missing = [p for p in positions if p not in folded]
        if missing:
            entries = [self._ledger.get(p) for p in missing]
            folded = {**folded, **dict(zip(missing, self._views.verdicts_of(entries), strict=True))}
        return [folded[p] for p in positions]


def _recent(requests: list[AppendRequest], outcomes: list[Outcome | BaseException]) -> list[Recent]:
    """The entries a transaction appended (duplicates are not new), with their verdicts."""
    recent = []
    for request, outcome in zip(requests, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            continue
        results, verdicts = outcome
        for appended, event, stored, found in zip(
            results, request.events, request.encoded, verdicts, strict=True
        ):
            if not appended.duplicate:
                entry = Entry(appended.position, request.recorded_at, event, stored)
                recent.append(Recent(entry, found))
    return recent


def _resolve(
    futures: list[asyncio.Future[Outcome]], outcomes: list[Outcome | BaseException]
) -> None:
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():  # the client went away (a timeout or a closed connection)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
