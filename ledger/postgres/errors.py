"""PostgreSQL failures: what each one means, and when to try again (`Retry`).

A failure is transient (a serialisation failure or deadlock: run the transaction again), busy
(no connection slot free: wait for one), unavailable (the server cannot be reached), or fatal.
`Retry` decides for the backend's transactions and reads, with backoff, and for long-running
processes rides out an outage of the backend's `patience` seconds, saying so.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, Literal, Protocol

import psycopg
import psycopg_pool

from ledger.errors import StorageError

__all__ = ["BUSY_WAIT", "MAX_BACKOFF", "Retry", "first_line", "kind"]

MAX_BACKOFF: Final = 5.0
BUSY_WAIT: Final = 300.0
"""Seconds any command waits for a connection slot of a server that has none free (too many
clients): they free up as other commands finish."""
ATTEMPTS: Final = 8
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01", "55P03", "23505"})
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})


class Patient(Protocol):
    """What `Retry` needs of a backend."""

    patience: float
    report: Callable[[str], None] | None

    @property
    def where(self) -> str: ...

    def busy(self) -> bool: ...

    def _error(self, error: BaseException, what: str) -> StorageError: ...


def psycopg_error(error: BaseException) -> BaseException:
    """The psycopg error behind an eventsourcing `PersistenceError` (or the error itself)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, psycopg.Error):
        seen = seen.__cause__
    return error if seen is None else seen


def kind(
    error: BaseException,
) -> Literal["transient", "busy", "unavailable", "fatal", "gave up"]:
    """How to treat a failure: retry the transaction, wait for a connection slot, report the
    server down, or give up.

    "gave up": the pool already waited its whole connect timeout; retrying would wait again.
    "busy": the server has no connection slot free ("too many clients"): wait for one.
    """
    root = psycopg_error(error)
    sqlstate = getattr(root, "sqlstate", None)
    if sqlstate == "53300" or "too many clients" in str(root):
        return "busy"
    if isinstance(root, psycopg_pool.PoolTimeout):
        return "gave up"
    if sqlstate in _TRANSIENT_STATES:
        return "transient"
    if sqlstate in _UNAVAILABLE_STATES or isinstance(root, psycopg.InterfaceError):
        return "unavailable"
    if isinstance(root, psycopg.OperationalError) and (sqlstate is None or sqlstate[:2] == "08"):
        return "unavailable"
    return "fatal"


def first_line(error: BaseException) -> str:
    text = str(psycopg_error(error)).strip() or type(error).__name__
    return text.splitlines()[0]


class Retry:
    """When to run a failed transaction or read again, and how long to wait first.

    Transient conflicts (serialisation, deadlock) are retried a few times, quickly. An
    unreachable server is retried a few times too, or, with the backend's `patience`, for that
    many seconds with backoff up to `MAX_BACKOFF`, reported as it goes. Anything else fails
    at once. Gives up by raising the translated error."""

    def __init__(self, backend: Patient, what: str) -> None:
        self._backend, self._what = backend, what
        self._attempt = 0
        self._started = time.monotonic()
        self._reported = 0.0

    def after(self, error: BaseException) -> None:
        backend, self._attempt = self._backend, self._attempt + 1
        failure = kind(error)
        if failure == "gave up" and backend.busy():  # the pool timed out waiting for a slot
            failure = "busy"
        waited = time.monotonic() - self._started
        patient = (failure in {"unavailable", "gave up"} and waited < backend.patience) or (
            failure == "busy" and waited < max(backend.patience, BUSY_WAIT)
        )
        if failure == "fatal" or (
            not patient and (self._attempt >= ATTEMPTS or failure == "gave up")
        ):
            raise backend._error(error, self._what) from error
        delay = min(MAX_BACKOFF if patient else 1.0, 0.02 * 2**self._attempt)
        if patient and backend.report is not None and time.monotonic() - self._reported >= 5:
            self._reported = time.monotonic()
            backend.report(
                f"PostgreSQL at {backend.where} is unreachable ({first_line(error)}); "
                f"retrying for up to {backend.patience - waited:.0f} s more"
            )
        time.sleep(delay * (0.5 + random.random()))

    def done(self) -> None:
        if self._reported and self._backend.report is not None:
            self._backend.report(f"PostgreSQL at {self._backend.where} is back")
