"""Recovery projection (SPEC §2.3): one retry per budget window for a crashed backend, then refuse.

`BackendCrashed` at ``at``: when ``at - window_started_at >= budget_window_ms`` a new window starts
at ``at``. The first crash in a window decides ``retry`` (``retry_after_ms = retry_backoff_ms``,
``attempt = 1``); every later crash in it decides ``refuse`` (reason ``backend_unavailable``,
``retry_after_ms`` = the rest of the window, so always within ``[1, budget_window_ms]``). A crash
whose ``at`` is before the window start counts as elapsed zero. `BackendRecovered` clears the
entry (clearing an absent entry is ``idempotent``). Zero durations count as 1 ms.

Every crash is ``applied`` (it always changes the count). ``attempt`` is always 1: a window
allows one retry, as in the seed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ledger.events import BackendCrashed, BackendRecovered, Event
from projections.base import Fold, Policy, Verdict, at_of, elapsed_ms, rfc3339, verdicts

__all__ = [
    "FOLDS",
    "HANDLES",
    "NAME",
    "READS_POLICY",
    "STATE",
    "Decision",
    "RecoveryState",
    "fold",
    "view",
]

NAME: Final = "recovery"

DecisionKind: TypeAlias = Literal["retry", "refuse"]


class Decision(msgspec.Struct, frozen=True, omit_defaults=True):
    """``retry`` (with ``attempt``) or ``refuse`` (with ``reason``), and the retry-after hint."""

    kind: DecisionKind
    retry_after_ms: int
    attempt: int | None = None
    reason: Literal["backend_unavailable"] | None = None


class RecoveryState(msgspec.Struct, frozen=True):
    """A backend's current budget window and the decision for its latest crash."""

    window_started_at: datetime
    crashes_in_window: int
    decision: Decision


STATE: Final = RecoveryState

_APPLIED, _IDEMPOTENT = verdicts(NAME)

Result: TypeAlias = tuple[RecoveryState | None, Verdict]


def _crashed(state: RecoveryState | None, event: BackendCrashed, policy: Policy) -> Result:
    at = at_of(event)
    window = max(1, policy.budget_window_ms)
    if state is None:
        started, crashes, elapsed = at, 1, 0
    else:
        elapsed = elapsed_ms(state.window_started_at, at)
        if elapsed >= window:
            started, crashes, elapsed = at, 1, 0
        else:
            started, crashes = state.window_started_at, state.crashes_in_window + 1
    if crashes == 1:
        decision = Decision("retry", max(1, policy.retry_backoff_ms), attempt=1)
    else:
        decision = Decision("refuse", window - elapsed, reason="backend_unavailable")
    return RecoveryState(started, crashes, decision), _APPLIED


def _recovered(state: RecoveryState | None, event: BackendRecovered, policy: Policy) -> Result:
    if state is None:
        return None, _IDEMPOTENT
    return None, _APPLIED


FOLDS: Final[dict[type[Event], Fold]] = {
    BackendCrashed: _crashed,
    BackendRecovered: _recovered,
}
"""The fold of each event type this projection handles."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)
READS_POLICY: Final[frozenset[type[Event]]] = frozenset({BackendCrashed})
"""The event types whose fold reads the policy (the others are handed the default)."""


def fold(state: RecoveryState | None, event: Event, policy: Policy) -> Result:
    """Fold one event into a backend's entry, with the backend's effective `policy`."""
    return FOLDS[type(event)](state, event, policy)


def _decision_view(decision: Decision) -> dict[str, Any]:
    if decision.kind == "retry":
        return {
            "kind": "retry",
            "retry_after_ms": decision.retry_after_ms,
            "attempt": decision.attempt,
        }
    return {"kind": "refuse", "reason": decision.reason, "retry_after_ms": decision.retry_after_ms}


def view(subject: str, state: RecoveryState | None, now: datetime | None) -> dict[str, Any]:
    """The SPEC §5 ``status --json`` object for one backend key (no entry: no crash, decision)."""
    if state is None:
        return {"crashes_in_window": 0, "window_started_at": None, "decision": None}
    return {
        "crashes_in_window": state.crashes_in_window,
        "window_started_at": rfc3339(state.window_started_at),
        "decision": _decision_view(state.decision),
    }
