"""`wait_beyond`'s wake-ups: the recorder's NOTIFY through a LISTEN connection, polled while it is
down.

The ledger's appends NOTIFY with the log's new size as the payload (`PostgresRecorder.notify`), so
a waiter learns how far the log is without a query of its own: with several servers or workers
over one ledger, every commit wakes every waiter, and a query per wake-up per waiter would cost
more round trips than the appends themselves. A NOTIFY without a payload (eventsourcing's own
insert path) or a new connection (NOTIFYs may have been missed) makes the waiters read the size.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

import psycopg
from psycopg.sql import SQL, Identifier

if TYPE_CHECKING:
    from ledger.postgres.backend import PostgresBackend

__all__ = ["POLL", "Listener"]

POLL: Final = 0.2


class Listener:
    """A daemon thread LISTENing on the recorder's channel; bumps `generation` on each NOTIFY.

    Waiters read `generation`, check the log, then `wait` for it to change. `known` is the
    largest size a NOTIFY announced; `blind` the last generation after which the log may have
    grown unannounced (a connection made, a NOTIFY without a size): a waiter that last read the
    size before it reads it again. While the connection is down (`alive` false) waiters poll
    instead, and the thread reconnects.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self._kwargs = backend.target.connect_kwargs()
        self._listen = SQL("LISTEN {0}").format(Identifier(backend.recorder.channel_name))
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.alive = False
        self.known = 0
        self.blind = 0

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="ac-listen", daemon=True)
                self._thread.start()

    def wait(self, generation: int, timeout: float) -> None:
        with self._cond:
            if self.generation == generation:
                self._cond.wait(timeout)

    def _bump(self, *, alive: bool, size: int | None = None) -> None:
        with self._cond:
            self.alive = alive
            self.generation += 1
            if size is None:
                self.blind = self.generation
            else:
                self.known = max(self.known, size)
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(**self._kwargs, autocommit=True) as conn:
                    conn.execute(self._listen)
                    self._bump(alive=True)  # waiters re-check: a NOTIFY may predate the LISTEN
                    while not self._stopped.is_set():
                        for notify in conn.notifies(timeout=POLL, stop_after=1):
                            self._bump(alive=True, size=_size(notify.payload))
            except psycopg.Error:
                self._bump(alive=False)
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL)


def _size(payload: str) -> int | None:
    """The size a NOTIFY announced, or None (no payload, or not one of ours)."""
    return int(payload) if payload.isdigit() else None
