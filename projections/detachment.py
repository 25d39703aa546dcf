"""Detachment projection (SPEC §2.2): whether a runner is detached, why, and its way back.

A runner is attached by default (no entry). `StorageFailed`, `LeaseExpired` and `Detach` detach
it (reasons ``storage_error`` with the message, ``lease_expired``, ``manual``). `KeepAliveFailed`
counts a streak; at ``keepalive_failure_threshold`` consecutive failures the runner detaches with
reason ``keepalive_failure`` and the count. A healthy `HealthObserved` ends the streak.

Detaching a detached runner updates the reason and keeps ``detached_at``. While detached, the
first healthy signal starts the recovery window (``healthy_since = at``); a healthy signal at least
``recover_window_ms`` after ``healthy_since`` re-attaches (the entry goes: attached, no streak);
an unhealthy signal or a keep-alive failure resets ``healthy_since``. While detached, any event
whose ``at`` is before ``detached_at`` is rejected ``stale`` and changes nothing.

Verdict: ``applied`` when the state changes, ``idempotent`` when it does not.

Where SPEC is silent:

- every detaching event (not only health signals) also resets ``healthy_since``: a storage
  failure during the recovery window means the runner was not continuously healthy;
- detaching does not end the keep-alive streak (only a healthy signal does); a streak that reaches
  the threshold while already detached updates the reason to ``keepalive_failure`` with the count,
  and so does every further failure (the count grows);
- a `Detach` with a reason keeps it as ``message`` (display stays ``manual detachment``);
- an unhealthy `HealthObserved` while attached changes nothing (it does not count as a streak).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ledger.events import (
    Detach,
    Event,
    HealthObserved,
    KeepAliveFailed,
    LeaseExpired,
    StorageFailed,
)
from projections.base import ONE_MS, Fold, Policy, Verdict, at_of, rfc3339, verdicts

__all__ = [
    "FOLDS",
    "HANDLES",
    "NAME",
    "READS_POLICY",
    "STATE",
    "DetachmentReason",
    "DetachmentState",
    "display",
    "fold",
    "view",
]

NAME: Final = "detachment"

ReasonKind: TypeAlias = Literal["storage_error", "keepalive_failure", "lease_expired", "manual"]


class DetachmentReason(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a runner is detached: the kind, with the storage message or the failure count."""

    kind: ReasonKind
    message: str | None = None
    consecutive_failures: int | None = None


class DetachmentState(msgspec.Struct, frozen=True):
    """A runner that is detached or has a keep-alive failure streak (else: no entry)."""

    detached: bool = False
    reason: DetachmentReason | None = None
    detached_at: datetime | None = None
    healthy_since: datetime | None = None
    keepalive_failures: int = 0


STATE: Final = DetachmentState

_APPLIED, _IDEMPOTENT = verdicts(NAME)
_LEASE_EXPIRED: Final = DetachmentReason("lease_expired")
_MANUAL: Final = DetachmentReason("manual")

Result: TypeAlias = tuple[DetachmentState | None, Verdict]


def display(reason: DetachmentReason) -> str:
    """The reason as people read it (the seed's ``Display``)."""
    kind = reason.kind
    if kind == "storage_error":
        return f"storage error: {reason.message or ''}"
    if kind == "keepalive_failure":
        n = reason.consecutive_failures
        return f"keep-alive failure streak: {n} consecutive failures"
    if kind == "lease_expired":
        return "lease expired"
    return "manual detachment"


def _settle(old: DetachmentState | None, new: DetachmentState | None) -> Result:
    """`new` with ``applied``, or the unchanged `old` with ``idempotent``; attached, clean: None."""
    if new is not None and not new.detached and new.keepalive_failures == 0:
        new = None
    if new == old:
        return old, _IDEMPOTENT
    return new, _APPLIED


def _detach(
    state: DetachmentState | None, at: datetime, reason: DetachmentReason, failures: int
) -> Result:
    if state is None or not state.detached:
        return _settle(state, DetachmentState(True, reason, at, None, failures))
    return _settle(state, DetachmentState(True, reason, state.detached_at, None, failures))


def _is_stale(state: DetachmentState | None, at: datetime) -> bool:
    return (
        state is not None
        and state.detached
        and state.detached_at is not None
        and at < state.detached_at
    )


def _stale(state: DetachmentState | None, at: datetime) -> Result:
    assert state is not None
    assert state.detached_at is not None
    detail = f"at {rfc3339(at)} is before detached_at {rfc3339(state.detached_at)}"
    return state, Verdict(NAME, "rejected", "stale", detail)


def _streak(state: DetachmentState | None) -> int:
    return 0 if state is None else state.keepalive_failures


def _storage_failed(state: DetachmentState | None, event: StorageFailed, policy: Policy) -> Result:
    at = at_of(event)
    if _is_stale(state, at):
        return _stale(state, at)
    reason = DetachmentReason("storage_error", message=event.message)
    return _detach(state, at, reason, _streak(state))


def _lease_expired(state: DetachmentState | None, event: LeaseExpired, policy: Policy) -> Result:
    at = at_of(event)
    if _is_stale(state, at):
        return _stale(state, at)
    return _detach(state, at, _LEASE_EXPIRED, _streak(state))


def _manual(state: DetachmentState | None, event: Detach, policy: Policy) -> Result:
    at = at_of(event)
    if _is_stale(state, at):
        return _stale(state, at)
    reason = _MANUAL if event.reason is None else DetachmentReason("manual", message=event.reason)
    return _detach(state, at, reason, _streak(state))


def _keepalive_failed(
    state: DetachmentState | None, event: KeepAliveFailed, policy: Policy
) -> Result:
    at = at_of(event)
    if _is_stale(state, at):
        return _stale(state, at)
    failures = _streak(state) + 1
    if failures >= policy.keepalive_failure_threshold:
        reason = DetachmentReason("keepalive_failure", consecutive_failures=failures)
        return _detach(state, at, reason, failures)
    if state is None:
        return DetachmentState(keepalive_failures=failures), _APPLIED
    return _settle(
        state, msgspec.structs.replace(state, healthy_since=None, keepalive_failures=failures)
    )


def _health(state: DetachmentState | None, event: HealthObserved, policy: Policy) -> Result:
    if state is None:
        return None, _IDEMPOTENT
    at = at_of(event)
    if _is_stale(state, at):
        return _stale(state, at)
    if not state.detached:
        if event.healthy:
            return None, _APPLIED
        return state, _IDEMPOTENT
    if not event.healthy:
        return _settle(state, msgspec.structs.replace(state, healthy_since=None))
    since = state.healthy_since
    if since is None:
        return _settle(
            state, msgspec.structs.replace(state, healthy_since=at, keepalive_failures=0)
        )
    if at - since >= max(1, policy.recover_window_ms) * ONE_MS:
        return None, _APPLIED
    return _settle(state, msgspec.structs.replace(state, keepalive_failures=0))


FOLDS: Final[dict[type[Event], Fold]] = {
    StorageFailed: _storage_failed,
    LeaseExpired: _lease_expired,
    Detach: _manual,
    KeepAliveFailed: _keepalive_failed,
    HealthObserved: _health,
}
"""The fold of each event type this projection handles."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)
READS_POLICY: Final[frozenset[type[Event]]] = frozenset({KeepAliveFailed, HealthObserved})
"""The event types whose fold reads the policy (the others are handed the default)."""


def fold(state: DetachmentState | None, event: Event, policy: Policy) -> Result:
    """Fold one event into a runner's state, with the runner's effective `policy`."""
    return FOLDS[type(event)](state, event, policy)


def _reason_view(reason: DetachmentReason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    out: dict[str, Any] = {"kind": reason.kind}
    if reason.message is not None:
        out["message"] = reason.message
    if reason.consecutive_failures is not None:
        out["consecutive_failures"] = reason.consecutive_failures
    out["display"] = display(reason)
    return out


def view(subject: str, state: DetachmentState | None, now: datetime | None) -> dict[str, Any]:
    """The SPEC §5 ``status --json`` object for one runner."""
    if state is None:
        state = DetachmentState()
    return {
        "detached": state.detached,
        "reason": _reason_view(state.reason),
        "detached_at": rfc3339(state.detached_at),
        "healthy_since": rfc3339(state.healthy_since),
        "keepalive_failures": state.keepalive_failures,
    }
