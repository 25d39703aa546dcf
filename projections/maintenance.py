"""Maintenance projection (SPEC §2.1): a state machine per node, moved by operator and loop events.

States: Active (the default, stored as no entry), EnteringMaintenance{since, deadline},
Maintenance{since}, ExitingMaintenance{since}, DrainFailed{since, reason}, Recovery{since}.
`SUCCESSORS` is the whole table of valid arcs; a proposal outside it is rejected
``invalid_successor`` (detail ``"<from> -> <to>"``). ExitingMaintenance -> DrainFailed is left out
on purpose: a late DrainFailed observation must never undo an operator's forced exit.

A proposal of the current state is ``idempotent`` (replay tolerance); its fields replace the
current ones when its ``at`` is not older than ``since``.

Where SPEC is silent:

- ``deadline`` is kept only on EnteringMaintenance (the only state it means anything for);
- ``reason`` is the proposing event's reason when it has one (the operator's reason for
  EnterMaintenance, the observed reason for MaintenanceObserved; required for DrainFailed);
  ExitMaintenance carries none;
- `deadline_overdue` is true strictly after the deadline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypeAlias

import msgspec

from ledger.events import (
    MAINTENANCE_STATES,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    MaintenanceObserved,
    MaintenanceStateName,
)
from projections.base import Fold, Policy, Verdict, at_of, rfc3339, verdicts

__all__ = [
    "FOLDS",
    "HANDLES",
    "NAME",
    "STATE",
    "SUCCESSORS",
    "MaintenanceState",
    "deadline_overdue",
    "fold",
    "is_valid_successor",
    "non_active",
    "state_name",
    "steady_maintenance",
    "view",
]

NAME: Final = "maintenance"


class MaintenanceState(msgspec.Struct, frozen=True):
    """A node's maintenance state other than Active (Active is the absent entry, ``None``)."""

    state: MaintenanceStateName
    since: datetime
    deadline: datetime | None = None
    reason: str | None = None


STATE: Final = MaintenanceState

SUCCESSORS: Final[dict[str, frozenset[str]]] = {
    "Active": frozenset({"EnteringMaintenance"}),
    "EnteringMaintenance": frozenset({"Maintenance", "DrainFailed"}),
    "Maintenance": frozenset({"ExitingMaintenance", "DrainFailed"}),
    "ExitingMaintenance": frozenset({"Recovery"}),
    "DrainFailed": frozenset({"ExitingMaintenance"}),
    "Recovery": frozenset({"Active"}),
}
"""Valid arcs to a *different* state; the same state is always valid (idempotent)."""

assert set(SUCCESSORS) == set(MAINTENANCE_STATES)

_APPLIED, _IDEMPOTENT = verdicts(NAME)

Result: TypeAlias = tuple[MaintenanceState | None, Verdict]


def is_valid_successor(from_name: str, to_name: str) -> bool:
    """True when `to_name` may follow `from_name`: the same state, or an arc of `SUCCESSORS`."""
    return from_name == to_name or to_name in SUCCESSORS.get(from_name, ())


def state_name(state: MaintenanceState | None) -> str:
    """The SPEC name of the state (``Active`` for no entry)."""
    return "Active" if state is None else state.state


def non_active(state: MaintenanceState | None) -> bool:
    """True in any state other than Active."""
    return state is not None and state.state != "Active"


def steady_maintenance(state: MaintenanceState | None) -> bool:
    """True only in steady-state Maintenance (fully isolated)."""
    return state is not None and state.state == "Maintenance"


def deadline_overdue(state: MaintenanceState | None, now: datetime | None) -> bool:
    """True when the state has a deadline and `now` is past it; False without `now`."""
    if now is None or state is None or state.deadline is None:
        return False
    return now > state.deadline


def _propose(state: MaintenanceState | None, proposed: MaintenanceState) -> Result:
    current = "Active" if state is None else state.state
    target = proposed.state
    if current == target:
        if state is None or proposed.since < state.since or proposed == state:
            return state, _IDEMPOTENT
        return proposed, _IDEMPOTENT
    if target not in SUCCESSORS[current]:
        detail = f"{current} -> {target}"
        return state, Verdict(NAME, "rejected", "invalid_successor", detail)
    return (None if target == "Active" else proposed), _APPLIED


def _enter(state: MaintenanceState | None, event: EnterMaintenance, policy: Policy) -> Result:
    proposed = MaintenanceState("EnteringMaintenance", at_of(event), event.deadline, event.reason)
    return _propose(state, proposed)


def _exit(state: MaintenanceState | None, event: ExitMaintenance, policy: Policy) -> Result:
    if state is not None and state.state == "DrainFailed" and not event.force:
        detail = "DrainFailed -> ExitingMaintenance needs force: true"
        return state, Verdict(NAME, "rejected", "needs_force", detail)
    return _propose(state, MaintenanceState("ExitingMaintenance", at_of(event)))


def _observed(state: MaintenanceState | None, event: MaintenanceObserved, policy: Policy) -> Result:
    name = event.state
    deadline = event.deadline if name == "EnteringMaintenance" else None
    return _propose(state, MaintenanceState(name, at_of(event), deadline, event.reason))


FOLDS: Final[dict[type[Event], Fold]] = {
    EnterMaintenance: _enter,
    ExitMaintenance: _exit,
    MaintenanceObserved: _observed,
}
"""The fold of each event type this projection handles (none of them reads the policy)."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)


def fold(state: MaintenanceState | None, event: Event, policy: Policy) -> Result:
    """Fold one event into a node's state. `policy` is unused (part of the common signature)."""
    return FOLDS[type(event)](state, event, policy)


def view(subject: str, state: MaintenanceState | None, now: datetime | None) -> dict[str, Any]:
    """The SPEC §5 ``status --json`` object for one node."""
    if state is None:
        return {
            "state": "Active",
            "since": None,
            "deadline": None,
            "reason": None,
            "non_active": False,
            "steady_maintenance": False,
            "deadline_overdue": False,
        }
    return {
        "state": state.state,
        "since": rfc3339(state.since),
        "deadline": rfc3339(state.deadline),
        "reason": state.reason,
        "non_active": non_active(state),
        "steady_maintenance": steady_maintenance(state),
        "deadline_overdue": deadline_overdue(state, now),
    }
