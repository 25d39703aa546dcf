"""Lifecycle broadcasts projection (SPEC §2.5): one entry per broadcast id, outcomes per backend.

`IssueBroadcast` records the operation, the targets (in issue order) and ``ack_timeout_ms``
(default 5000, zero means 1). Dead targets are ``skipped_dead`` at once; each live target gets one
outcome: acked, timed out (with the broadcast's timeout) or failed (with the reason). A repeat of
the same outcome is ``idempotent``; a different later one is rejected ``late``; an outcome for a
backend that is not a live target, or for a broadcast never issued, is rejected
``unknown_target``. Issuing an existing id again: identical is ``idempotent``, different is
rejected ``duplicate``.

Where SPEC is silent:

- a backend listed twice in ``targets`` is one target: at its first position, with the liveness
  of its last listing (the seed's ``register_backend`` replaces in place);
- the state keeps targets as a tuple (issue order is part of the state, and of the digest) and
  outcomes as a map (arrival order is not: the digest sorts map keys); an outcome costs
  O(targets), fine for the fan-outs a broker makes;
- "identical" re-issue compares operation, targets (as above) and the clamped timeout, not ``at``
  or ``actor``;
- lists in the view follow the issue order of targets; ``sent_count`` = acks + timeouts +
  failures (the live targets that have an outcome, as in the seed); ``complete`` = no live target
  pending; ``all_live_backends_acked`` = complete with no timeouts and no failures (vacuously true
  for a broadcast without live targets); a broadcast never issued is neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ledger.events import (
    BroadcastAcked,
    BroadcastFailed,
    BroadcastTimedOut,
    Event,
    IssueBroadcast,
    Operation,
    Target,
)
from projections.base import Fold, Policy, Verdict, at_of, verdicts

__all__ = [
    "FOLDS",
    "HANDLES",
    "NAME",
    "STATE",
    "BackendOutcome",
    "BroadcastState",
    "fold",
    "pending",
    "view",
]

NAME: Final = "broadcasts"

OutcomeKind: TypeAlias = Literal["acked", "timed_out", "failed"]
FailureReason: TypeAlias = Literal["unsupported_operation", "rejected", "backend_error"]


class BackendOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """The one outcome of a live target: acked, timed_out, or failed with a reason."""

    kind: OutcomeKind
    reason: FailureReason | None = None


class BroadcastState(msgspec.Struct, frozen=True):
    """One issued broadcast: its targets (unique backends, in issue order) and outcomes so far."""

    operation: Operation
    targets: tuple[Target, ...]
    ack_timeout_ms: int
    issued_at: datetime
    outcomes: dict[str, BackendOutcome] = msgspec.field(default_factory=dict)


STATE: Final = BroadcastState

_APPLIED, _IDEMPOTENT = verdicts(NAME)
_ACKED: Final = BackendOutcome("acked")
_TIMED_OUT: Final = BackendOutcome("timed_out")

Result: TypeAlias = tuple[BroadcastState | None, Verdict]


def _unique(targets: list[Target]) -> tuple[Target, ...]:
    """One target per backend: first position, last liveness."""
    by_backend: dict[str, Target] = {}
    for target in targets:
        by_backend[target.backend] = target
    if len(by_backend) == len(targets):
        return tuple(targets)
    return tuple(by_backend.values())  # a re-assigned key keeps its first position


def _liveness(targets: tuple[Target, ...], backend: str) -> bool | None:
    """True for a live target, False for a dead one, None when not a target."""
    for target in targets:
        if target.backend == backend:
            return target.live
    return None


def _issue(state: BroadcastState | None, event: IssueBroadcast, policy: Policy) -> Result:
    targets = _unique(event.targets)
    timeout = max(1, event.ack_timeout_ms)
    if state is None:
        return BroadcastState(event.operation, targets, timeout, at_of(event)), _APPLIED
    if (
        state.operation == event.operation
        and state.ack_timeout_ms == timeout
        and state.targets == targets
    ):
        return state, _IDEMPOTENT
    detail = f"broadcast {event.subject} was already issued with other operation/targets/timeout"
    return state, Verdict(NAME, "rejected", "duplicate", detail)


def _describe(outcome: BackendOutcome) -> str:
    return outcome.kind if outcome.reason is None else f"{outcome.kind} ({outcome.reason})"


def _outcome(state: BroadcastState | None, backend: str, outcome: BackendOutcome) -> Result:
    if state is None:
        detail = "no such broadcast"
        return None, Verdict(NAME, "rejected", "unknown_target", detail)
    live = _liveness(state.targets, backend)
    if not live:
        why = "not a target" if live is None else "a dead target"
        return state, Verdict(NAME, "rejected", "unknown_target", f"{backend} is {why}")
    previous = state.outcomes.get(backend)
    if previous is None:
        outcomes = dict(state.outcomes)
        outcomes[backend] = outcome
        return msgspec.structs.replace(state, outcomes=outcomes), _APPLIED
    if previous == outcome:
        return state, _IDEMPOTENT
    detail = f"{backend} already {_describe(previous)}; got {_describe(outcome)}"
    return state, Verdict(NAME, "rejected", "late", detail)


def _acked(state: BroadcastState | None, event: BroadcastAcked, policy: Policy) -> Result:
    return _outcome(state, event.backend, _ACKED)


def _timed_out(state: BroadcastState | None, event: BroadcastTimedOut, policy: Policy) -> Result:
    return _outcome(state, event.backend, _TIMED_OUT)


def _failed(state: BroadcastState | None, event: BroadcastFailed, policy: Policy) -> Result:
    return _outcome(state, event.backend, BackendOutcome("failed", event.reason))


FOLDS: Final[dict[type[Event], Fold]] = {
    IssueBroadcast: _issue,
    BroadcastAcked: _acked,
    BroadcastTimedOut: _timed_out,
    BroadcastFailed: _failed,
}
"""The fold of each event type this projection handles (none of them reads the policy)."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)


def fold(state: BroadcastState | None, event: Event, policy: Policy) -> Result:
    """Fold one event into a broadcast's entry. `policy` is unused."""
    return FOLDS[type(event)](state, event, policy)


def pending(state: BroadcastState) -> list[str]:
    """Live targets without an outcome yet, in issue order."""
    outcomes = state.outcomes
    return [t.backend for t in state.targets if t.live and t.backend not in outcomes]


def view(subject: str, state: BroadcastState | None, now: datetime | None) -> dict[str, Any]:
    """The SPEC §5 ``status --json`` object for one broadcast id."""
    if state is None:
        return {
            "operation": None,
            "acks": [],
            "timeouts": [],
            "failures": [],
            "skipped_dead": [],
            "pending": [],
            "sent_count": 0,
            "complete": False,
            "all_live_backends_acked": False,
        }
    acks: list[str] = []
    timeouts: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    skipped: list[str] = []
    waiting: list[str] = []
    outcomes = state.outcomes
    for target in state.targets:
        backend = target.backend
        if not target.live:
            skipped.append(backend)
            continue
        outcome = outcomes.get(backend)
        if outcome is None:
            waiting.append(backend)
        elif outcome.kind == "acked":
            acks.append(backend)
        elif outcome.kind == "timed_out":
            timeouts.append({"backend": backend, "timeout_ms": state.ack_timeout_ms})
        else:
            failures.append({"backend": backend, "reason": outcome.reason})
    complete = not waiting
    return {
        "operation": msgspec.to_builtins(state.operation),
        "acks": acks,
        "timeouts": timeouts,
        "failures": failures,
        "skipped_dead": skipped,
        "pending": waiting,
        "sent_count": len(acks) + len(timeouts) + len(failures),
        "complete": complete,
        "all_live_backends_acked": complete and not timeouts and not failures,
    }
