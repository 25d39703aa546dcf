"""What every projection shares: the verdict a fold gives, the effective policy, time helpers.

A fold is ``fold(state, event, policy) -> (state, verdict)`` (SPEC §2, §3). It is pure: time comes
from the event's ``at`` (never the clock), tuning from the `Policy` passed in. Each projection
module holds one `Fold` per event type it handles (its ``FOLDS``), so that the folder calls the
right one directly. `Verdict` is what the audit keeps for every folded event; the common ones are
built once per projection with `verdicts` so that the hot path allocates nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import msgspec

from ledger.events import Event

__all__ = [
    "DEFAULT_POLICY",
    "ONE_MS",
    "Fold",
    "Outcome",
    "Policy",
    "Verdict",
    "Verdicts",
    "at_of",
    "elapsed_ms",
    "rfc3339",
    "verdicts",
]

Outcome: TypeAlias = Literal["applied", "idempotent", "rejected"]


class Verdict(msgspec.Struct, frozen=True, omit_defaults=True, cache_hash=True):
    """What one projection decided about one event (SPEC §3). Rejections are kept, not raised."""

    projection: str
    verdict: Outcome
    reason: str | None = None
    detail: str | None = None


class Policy(msgspec.Struct, frozen=True):
    """The effective tuning for one subject (SPEC §2.6); zero durations are already clamped to 1."""

    recover_window_ms: int = 500
    keepalive_failure_threshold: int = 3
    retry_backoff_ms: int = 250
    budget_window_ms: int = 60000


DEFAULT_POLICY: Final = Policy()

Fold: TypeAlias = Callable[[Any, Any, Policy], tuple[Any, Verdict]]
"""One projection's fold for one event type: ``(state or None, event, policy) -> (state, verdict)``.
It returns the very `state` object it got when nothing changes (stored views skip the write)."""

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""The time folds use for an event without ``at``. The ledger stamps ``at`` at append (SPEC §1),
so stored events always have one; this only keeps the folds total and deterministic."""

ONE_MS: Final = timedelta(milliseconds=1)


class Verdicts(NamedTuple):
    """The two verdicts without reason of one projection, built once and shared."""

    applied: Verdict
    idempotent: Verdict


def verdicts(projection: str) -> Verdicts:
    """`applied` and `idempotent` verdicts for `projection` (frozen, so safe to share)."""
    return Verdicts(Verdict(projection, "applied"), Verdict(projection, "idempotent"))


def at_of(event: Event) -> datetime:
    """The event's ``at``, or `EPOCH` when it has none (see `EPOCH`)."""
    at = event.at
    return EPOCH if at is None else at


def elapsed_ms(start: datetime, end: datetime) -> int:
    """Whole milliseconds from `start` to `end`, floored; zero when `end` is before `start`.

    Floored, so that ``elapsed_ms(a, b) >= n`` exactly when ``b - a`` is at least ``n`` ms.
    """
    if end <= start:
        return 0
    return (end - start) // ONE_MS


def rfc3339(value: datetime | None) -> str | None:
    """An RFC 3339 UTC string (``2024-01-01T00:00:00.005000Z``), as msgspec writes JSON times."""
    if value is None:
        return None
    text: Any = msgspec.to_builtins(value.astimezone(UTC))
    return str(text)
