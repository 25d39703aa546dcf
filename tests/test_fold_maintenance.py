"""Maintenance fold unit tests.

Covers SPEC §2.1 (states, the whole successor table as a 6x6 matrix, the ExitingMaintenance ->
DrainFailed rejection, same-state replay tolerance and field replacement, EnterMaintenance /
ExitMaintenance / MaintenanceObserved proposals, ``needs_force``, ``non_active``,
``steady_maintenance``, ``deadline_overdue``), SPEC §3 (verdicts ``applied`` / ``idempotent`` /
``rejected`` with ``invalid_successor`` from and to, ``needs_force``) and the SPEC §5 maintenance
``status --json`` object.

The Rust seed 001 (net-mesh maintenance) tests are here: ``is_valid_successor_*`` ->
`test_is_valid_successor_matches_spec_table`, `test_successor_table_observed_transition`,
`test_exiting_to_drain_failed_rejected_invalid_successor`; ``default_is_active`` and
``predicates_reflect_state_shape`` -> `test_view_active_default`,
`test_non_active_and_steady_maintenance`.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import msgspec
import pytest

from ledger.events import (
    MAINTENANCE_STATES,
    EnterMaintenance,
    ExitMaintenance,
    MaintenanceObserved,
)
from projections import maintenance
from projections.base import DEFAULT_POLICY, Verdict
from projections.maintenance import MaintenanceState
from tests.eventgen import ts

# The SPEC §2.1 table, written out independently of the implementation's SUCCESSORS.
SPEC_ARCS = {
    ("Active", "EnteringMaintenance"),
    ("EnteringMaintenance", "Maintenance"),
    ("EnteringMaintenance", "DrainFailed"),
    ("Maintenance", "ExitingMaintenance"),
    ("Maintenance", "DrainFailed"),
    ("ExitingMaintenance", "Recovery"),
    ("DrainFailed", "ExitingMaintenance"),
    ("Recovery", "Active"),
}
PAIRS = list(itertools.product(MAINTENANCE_STATES, repeat=2))


def state_of(name: str, since: datetime | None = None) -> MaintenanceState | None:
    """A node in state `name` since `since` (None for Active)."""
    if name == "Active":
        return None
    reason = "drain timed out" if name == "DrainFailed" else None
    return MaintenanceState(name, ts(0) if since is None else since, reason=reason)  # type: ignore[arg-type]


def observed(name: str, at_ms: int = 1000, **kw: object) -> MaintenanceObserved:
    reason = kw.pop("reason", "drain timed out" if name == "DrainFailed" else None)
    return MaintenanceObserved(subject="n1", at=ts(at_ms), state=name, reason=reason, **kw)  # type: ignore[arg-type]


def fold(state: MaintenanceState | None, event: object) -> tuple[MaintenanceState | None, Verdict]:
    return maintenance.fold(state, event, DEFAULT_POLICY)  # type: ignore[arg-type]


def enter(at_ms: int = 1000, **kw: object) -> EnterMaintenance:
    return EnterMaintenance(subject="n1", actor="ops", at=ts(at_ms), **kw)  # type: ignore[arg-type]


def leave(at_ms: int = 1000, *, force: bool = False) -> ExitMaintenance:
    return ExitMaintenance(subject="n1", actor="ops", at=ts(at_ms), force=force)


# ---------------------------------------------------------------- the successor table


def test_the_successor_table_covers_every_state() -> None:
    assert set(maintenance.SUCCESSORS) == set(MAINTENANCE_STATES)


@pytest.mark.parametrize(("current", "proposed"), PAIRS)
def test_is_valid_successor_matches_spec_table(current: str, proposed: str) -> None:
    expected = current == proposed or (current, proposed) in SPEC_ARCS
    assert maintenance.is_valid_successor(current, proposed) is expected


@pytest.mark.parametrize(("current", "proposed"), PAIRS)
def test_successor_table_observed_transition(current: str, proposed: str) -> None:
    """MaintenanceObserved proposes its state; the verdict follows the table for all 36 pairs."""
    before = state_of(current)
    after, verdict = fold(before, observed(proposed))
    assert verdict.projection == "maintenance"
    if current == proposed:
        assert verdict == Verdict("maintenance", "idempotent")
        assert maintenance.state_name(after) == current
    elif (current, proposed) in SPEC_ARCS:
        assert verdict == Verdict("maintenance", "applied")
        assert maintenance.state_name(after) == proposed
        if proposed != "Active":
            assert after is not None
            assert after.since == ts(1000)
    else:
        assert verdict.verdict == "rejected"
        assert verdict.reason == "invalid_successor"
        assert verdict.detail == f"{current} -> {proposed}"
        assert after is before


def test_exiting_to_drain_failed_rejected_invalid_successor() -> None:
    after, verdict = fold(state_of("ExitingMaintenance"), observed("DrainFailed"))
    assert verdict.reason == "invalid_successor"
    assert verdict.detail == "ExitingMaintenance -> DrainFailed"
    assert maintenance.state_name(after) == "ExitingMaintenance"


def test_late_drain_failed_never_undoes_forced_exit() -> None:
    state, _ = fold(None, enter(0))
    state, _ = fold(state, observed("DrainFailed", 100))
    state, verdict = fold(state, leave(200, force=True))
    assert verdict.verdict == "applied"
    state, verdict = fold(state, observed("DrainFailed", 150))
    assert verdict.reason == "invalid_successor"
    assert maintenance.state_name(state) == "ExitingMaintenance"


def test_full_cycle_back_to_active_removes_entry() -> None:
    state, _ = fold(None, enter(0))
    for name, at in (("Maintenance", 1), ("ExitingMaintenance", 2), ("Recovery", 3)):
        state, verdict = fold(state, observed(name, at))
        assert verdict.verdict == "applied"
    state, verdict = fold(state, observed("Active", 4))
    assert verdict.verdict == "applied"
    assert state is None


# ---------------------------------------------------------------- operator proposals


@pytest.mark.parametrize("current", MAINTENANCE_STATES)
def test_enter_maintenance_proposes_entering_maintenance(current: str) -> None:
    before = state_of(current)
    after, verdict = fold(before, enter())
    if current == "Active":
        assert verdict.verdict == "applied"
    elif current == "EnteringMaintenance":
        assert verdict.verdict == "idempotent"
    else:
        assert verdict.reason == "invalid_successor"
        assert verdict.detail == f"{current} -> EnteringMaintenance"
        assert after is before


def test_enter_maintenance_sets_since_at_and_deadline() -> None:
    after, _ = fold(None, enter(500, deadline=ts(60_000), reason="kernel upgrade"))
    assert after == MaintenanceState("EnteringMaintenance", ts(500), ts(60_000), "kernel upgrade")


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("current", MAINTENANCE_STATES)
def test_exit_maintenance_proposes_exiting_maintenance(current: str, force: bool) -> None:
    before = state_of(current)
    after, verdict = fold(before, leave(force=force))
    if current == "Maintenance" or (current == "DrainFailed" and force):
        assert verdict.verdict == "applied"
        assert after == MaintenanceState("ExitingMaintenance", ts(1000))
    elif current == "DrainFailed":
        assert verdict.reason == "needs_force"
        assert after is before
    elif current == "ExitingMaintenance":
        assert verdict.verdict == "idempotent"
    else:
        assert verdict.reason == "invalid_successor"
        assert verdict.detail == f"{current} -> ExitingMaintenance"
        assert after is before


def test_exit_from_drain_failed_without_force_rejected_needs_force() -> None:
    before = state_of("DrainFailed")
    after, verdict = fold(before, leave())
    assert verdict == Verdict(
        "maintenance",
        "rejected",
        "needs_force",
        "DrainFailed -> ExitingMaintenance needs force: true",
    )
    assert after is before


# ---------------------------------------------------------------- same-state replay tolerance


def test_same_state_is_idempotent_and_newer_fields_replace() -> None:
    before = MaintenanceState("EnteringMaintenance", ts(100), ts(9000))
    after, verdict = fold(before, enter(200, deadline=ts(20_000)))
    assert verdict.verdict == "idempotent"
    assert after == MaintenanceState("EnteringMaintenance", ts(200), ts(20_000))


def test_same_state_at_equal_to_since_replaces_fields() -> None:
    before = MaintenanceState("DrainFailed", ts(100), reason="old")
    after, verdict = fold(before, observed("DrainFailed", 100, reason="new"))
    assert verdict.verdict == "idempotent"
    assert after == MaintenanceState("DrainFailed", ts(100), reason="new")


def test_same_state_older_at_keeps_current_fields() -> None:
    before = MaintenanceState("EnteringMaintenance", ts(100), ts(9000))
    after, verdict = fold(before, enter(50, deadline=ts(1)))
    assert verdict.verdict == "idempotent"
    assert after is before


def test_same_state_identical_event_returns_same_object() -> None:
    state, _ = fold(None, enter(100))
    again, verdict = fold(state, enter(100))
    assert verdict.verdict == "idempotent"
    assert again is state


def test_active_observed_while_active_is_idempotent_no_entry() -> None:
    assert fold(None, observed("Active")) == (None, Verdict("maintenance", "idempotent"))


# ---------------------------------------------------------------- fields carried by proposals


def test_observed_drain_failed_carries_reason() -> None:
    after, _ = fold(state_of("Maintenance"), observed("DrainFailed", reason="pods stuck"))
    assert after == MaintenanceState("DrainFailed", ts(1000), reason="pods stuck")


def test_observed_entering_carries_deadline() -> None:
    after, _ = fold(None, observed("EnteringMaintenance", deadline=ts(5000)))
    assert after is not None
    assert after.deadline == ts(5000)


def test_deadline_kept_only_on_entering_maintenance() -> None:
    after, _ = fold(state_of("EnteringMaintenance"), observed("Maintenance", deadline=ts(5000)))
    assert after == MaintenanceState("Maintenance", ts(1000))


def test_exit_maintenance_carries_no_reason() -> None:
    after, _ = fold(state_of("DrainFailed"), leave(force=True))
    assert after is not None
    assert after.reason is None


def test_missing_at_uses_epoch_deterministically() -> None:
    after, _ = fold(None, EnterMaintenance(subject="n1", actor="ops"))
    assert after is not None
    assert after.since == datetime.fromisoformat("1970-01-01T00:00:00+00:00")


# ---------------------------------------------------------------- queries


@pytest.mark.parametrize("name", MAINTENANCE_STATES)
def test_non_active_and_steady_maintenance(name: str) -> None:
    state = state_of(name)
    assert maintenance.non_active(state) is (name != "Active")
    assert maintenance.steady_maintenance(state) is (name == "Maintenance")


def test_deadline_overdue_uses_now() -> None:
    state = MaintenanceState("EnteringMaintenance", ts(0), ts(1000))
    assert maintenance.deadline_overdue(state, None) is False
    assert maintenance.deadline_overdue(state, ts(999)) is False
    assert maintenance.deadline_overdue(state, ts(1000)) is False
    assert maintenance.deadline_overdue(state, ts(1001)) is True


def test_deadline_overdue_false_without_deadline_or_state() -> None:
    assert (
        maintenance.deadline_overdue(MaintenanceState("EnteringMaintenance", ts(0)), ts(9)) is False
    )
    assert maintenance.deadline_overdue(None, ts(9)) is False


# ---------------------------------------------------------------- view and storage


VIEW_KEYS = {
    "state",
    "since",
    "deadline",
    "reason",
    "non_active",
    "steady_maintenance",
    "deadline_overdue",
}


def test_view_active_default() -> None:
    assert maintenance.view("n1", None, ts(0)) == {
        "state": "Active",
        "since": None,
        "deadline": None,
        "reason": None,
        "non_active": False,
        "steady_maintenance": False,
        "deadline_overdue": False,
    }


def test_view_keys_and_rfc3339_times() -> None:
    state = MaintenanceState("EnteringMaintenance", ts(5), ts(60_000), "upgrade")
    out = maintenance.view("n1", state, ts(61_000))
    assert set(out) == VIEW_KEYS
    assert out["since"] == "2024-01-01T00:00:00.005000Z"
    assert out["deadline"] == "2024-01-01T00:01:00Z"
    assert out["deadline_overdue"] is True
    assert out["non_active"] is True
    assert out["steady_maintenance"] is False
    assert out["reason"] == "upgrade"
    assert msgspec.json.decode(msgspec.json.encode(out)) == out
