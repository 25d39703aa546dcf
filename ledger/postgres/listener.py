"""`wait_beyond`'s wake-ups: the recorder's NOTIFY through a LISTEN connection, polled while it is
down."""

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

    Waiters read `generation`, check the log, then `wait` for it to change. While the
    connection is down (`alive` false) waiters poll instead, and the thread reconnects.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self._kwargs = backend.target.connect_kwargs()
        self._listen = SQL("LISTEN {0}").format(Identifier(backend.recorder.channel_name))
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.alive = False

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="ac-listen", daemon=True)
                self._thread.start()

    def wait(self, generation: int, timeout: float) -> None:
        with self._cond:
            if self.generation == generation:
                self._cond.wait(timeout)

    def _bump(self, *, alive: bool) -> None:
        with self._cond:
            self.alive = alive
            self.generation += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(**self._kwargs, autocommit=True) as conn:
                    conn.execute(self._listen)
                    self._bump(alive=True)  # waiters re-check: a NOTIFY may predate the LISTEN
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=POLL, stop_after=1):
                            self._bump(alive=True)
            except psycopg.Error:
                self._bump(alive=False)
                self._stopped.wait(1.0)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL)
