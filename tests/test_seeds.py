"""The five Rust seeds' tests, translated to event sequences through our folds.

Every ``#[test]`` of the seeds is here under its Rust name (``test_seed_<projection>_<name>``):
seed 000 (cruster detachment, 7 tests) -> SPEC §2.2; seed 001 (net-mesh maintenance, 4 tests)
-> SPEC §2.1; seed 003 (liminal-server membership, 3 tests) -> SPEC §2.4. Where a seed sleeps on
the wall clock, the events carry ``at`` offsets instead; a Rust ``bool`` "did this call
transition" becomes the verdict or an unchanged ``detached_at``.

Seeds 002 (running-process broadcasts) and 004 (running-process recovery) ship no ``#[test]``;
their documented behaviour (doc comments and method bodies) is translated instead, named
``test_seed_<projection>_doc_<what>`` -> SPEC §2.5 and §2.3.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ledger.events import (
    BackendCrashed,
    BackendRecovered,
    BroadcastAcked,
    BroadcastFailed,
    BroadcastTimedOut,
    Detach,
    EnterMaintenance,
    Event,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    LeaseExpired,
    MaintenanceObserved,
    MembershipObserved,
    Quiesce,
    ReleaseHandles,
    StorageFailed,
    Target,
)
from projections import broadcasts, detachment, maintenance, membership, recovery
from projections.base import DEFAULT_POLICY, Policy, Verdict
from projections.detachment import DetachmentReason, DetachmentState
from projections.maintenance import MaintenanceState
from projections.recovery import Decision
from tests.eventgen import ts

# ====================================================================== seed 000: detachment


def _detach_run(
    events: list[Event], window_ms: int, state: DetachmentState | None = None
) -> tuple[DetachmentState | None, list[Verdict]]:
    policy = Policy(recover_window_ms=window_ms)
    verdicts = []
    for event in events:
        state, verdict = detachment.fold(state, event, policy)
        verdicts.append(verdict)
    return state, verdicts


def _healthy(ms: int, healthy: bool = True) -> HealthObserved:
    return HealthObserved(subject="runner", at=ts(ms), healthy=healthy)


def _manual(ms: int) -> Detach:
    return Detach(subject="runner", actor="ops", at=ts(ms))


def _is_detached(state: DetachmentState | None) -> bool:
    return detachment.view("runner", state, None)["detached"] is True


def test_seed_detachment_initially_not_detached() -> None:
    view = detachment.view("runner", None, None)
    assert view["detached"] is False
    assert view["reason"] is None
    assert view["detached_at"] is None  # detached_duration() is None


def test_seed_detachment_detach_sets_state() -> None:
    state, verdicts = _detach_run([_manual(0)], 100)
    assert verdicts == [Verdict("detachment", "applied")]  # transitioned
    assert _is_detached(state)
    assert state is not None
    assert state.reason == DetachmentReason("manual")
    assert state.detached_at == ts(0)  # detached_duration() is Some


def test_seed_detachment_double_detach_returns_false() -> None:
    state, _ = _detach_run([_manual(0)], 100)
    assert state is not None
    first_detached_at = state.detached_at
    state, _ = _detach_run([LeaseExpired(subject="runner", at=ts(5))], 100, state)
    assert state is not None
    assert state.detached_at == first_detached_at  # no new transition
    assert state.reason == DetachmentReason("lease_expired")  # reason updated


def test_seed_detachment_reattach_requires_recovery_window() -> None:
    state, _ = _detach_run([_manual(0)], 50)
    state, _ = _detach_run([_healthy(1)], 50, state)  # first healthy signal starts the window
    assert _is_detached(state)
    state, _ = _detach_run([_healthy(2)], 50, state)  # too soon
    assert _is_detached(state)
    state, verdicts = _detach_run([_healthy(1 + 60)], 50, state)  # "sleep 60 ms"
    assert verdicts == [Verdict("detachment", "applied")]
    assert not _is_detached(state)


def test_seed_detachment_unhealthy_signal_resets_recovery() -> None:
    state, _ = _detach_run([_manual(0), _healthy(1)], 100)  # start recovery
    state, _ = _detach_run([_healthy(2, healthy=False)], 100, state)  # reset
    state, _ = _detach_run([_healthy(2 + 50)], 100, state)  # "sleep 50 ms"
    assert _is_detached(state)


def test_seed_detachment_storage_error_reason_display() -> None:
    reason = DetachmentReason("storage_error", message="connection timeout")
    assert detachment.display(reason) == "storage error: connection timeout"
    state, _ = _detach_run(
        [StorageFailed(subject="runner", at=ts(0), message="connection timeout")], 100
    )
    view = detachment.view("runner", state, None)
    assert view["reason"]["display"] == "storage error: connection timeout"


def test_seed_detachment_keepalive_failure_reason_display() -> None:
    reason = DetachmentReason("keepalive_failure", consecutive_failures=5)
    assert detachment.display(reason) == "keep-alive failure streak: 5 consecutive failures"
    state = None
    policy = Policy(keepalive_failure_threshold=5)
    for ms in range(5):
        state, _ = detachment.fold(state, KeepAliveFailed(subject="runner", at=ts(ms)), policy)
    view = detachment.view("runner", state, None)
    assert view["reason"]["display"] == "keep-alive failure streak: 5 consecutive failures"


# ====================================================================== seed 001: maintenance


def _observe(state: MaintenanceState | None, name: str) -> tuple[MaintenanceState | None, Verdict]:
    reason = "deadline" if name == "DrainFailed" else None
    event = MaintenanceObserved(subject="node", at=ts(10), state=name, reason=reason)  # type: ignore[arg-type]
    return maintenance.fold(state, event, DEFAULT_POLICY)


def _at(name: str) -> MaintenanceState | None:
    if name == "Active":
        return None
    reason = "deadline" if name == "DrainFailed" else None
    return MaintenanceState(name, ts(0), reason=reason)  # type: ignore[arg-type]


def _accepts(current: str, proposed: str) -> bool:
    """The seed's ``is_valid_successor``, checked both as the helper and through the fold."""
    by_helper = maintenance.is_valid_successor(current, proposed)
    _, verdict = _observe(_at(current), proposed)
    assert by_helper is (verdict.verdict != "rejected")
    return by_helper


def test_seed_maintenance_default_is_active() -> None:
    view = maintenance.view("node", None, None)
    assert view["state"] == "Active"
    assert view["non_active"] is False
    assert view["steady_maintenance"] is False
    assert view["since"] is None


def test_seed_maintenance_predicates_reflect_state_shape() -> None:
    base = ts(0)
    enter = EnterMaintenance(
        subject="node", actor="ops", at=base, deadline=base + timedelta(seconds=60)
    )
    entering, _ = maintenance.fold(None, enter, DEFAULT_POLICY)
    assert maintenance.non_active(entering)
    assert not maintenance.steady_maintenance(entering)
    assert entering is not None
    assert entering.since == base

    steady, _ = _observe(entering, "Maintenance")
    assert maintenance.non_active(steady)
    assert maintenance.steady_maintenance(steady)

    recovery_state = MaintenanceState("Recovery", base)
    assert maintenance.non_active(recovery_state)
    assert not maintenance.steady_maintenance(recovery_state)


def test_seed_maintenance_is_valid_successor_accepts_forward_arcs_only() -> None:
    # Forward arcs (allowed).
    assert _accepts("Active", "EnteringMaintenance")
    assert _accepts("EnteringMaintenance", "Maintenance")
    assert _accepts("EnteringMaintenance", "DrainFailed")
    assert _accepts("Maintenance", "ExitingMaintenance")
    assert _accepts("DrainFailed", "ExitingMaintenance")
    assert _accepts("ExitingMaintenance", "Recovery")
    assert _accepts("Recovery", "Active")
    # Same-state (idempotent): allowed.
    assert _accepts("EnteringMaintenance", "EnteringMaintenance")
    assert _accepts("Recovery", "Recovery")
    # Backward arcs (rejected).
    assert not _accepts("EnteringMaintenance", "Active")
    assert not _accepts("Maintenance", "EnteringMaintenance")
    assert not _accepts("Recovery", "Maintenance")
    assert not _accepts("ExitingMaintenance", "EnteringMaintenance")
    assert not _accepts("DrainFailed", "EnteringMaintenance")
    # Active is only reachable from Recovery (or Active).
    assert not _accepts("Maintenance", "Active")
    assert not _accepts("EnteringMaintenance", "Active")


def test_seed_maintenance_is_valid_successor_rejects_exiting_to_drain_failed() -> None:
    assert not _accepts("ExitingMaintenance", "DrainFailed")
    state, verdict = _observe(_at("ExitingMaintenance"), "DrainFailed")
    assert verdict.reason == "invalid_successor"
    assert maintenance.state_name(state) == "ExitingMaintenance"


# ====================================================================== seed 003: membership


def test_seed_membership_delta_is_empty_by_default() -> None:
    view = membership.view("cluster", None, None)
    assert view["joined"] == []
    assert view["left"] == []


def test_seed_membership_first_poll_of_empty_table_yields_no_peers() -> None:
    event = MembershipObserved(subject="cluster", at=ts(0), peers=[])
    state, verdict = membership.fold(None, event, DEFAULT_POLICY)
    assert verdict == Verdict("membership", "idempotent")  # the delta is empty
    view = membership.view("cluster", state, None)
    assert view == {"peers": [], "joined": [], "left": []}


def test_seed_membership_peer_names_resolve_through_the_atom_table() -> None:
    # No connections, so no names, and asking must not fail.
    assert membership.view("cluster", None, None)["peers"] == []


# ====================================================================== seed 002: broadcasts (doc)


def _broadcast(events: list[Event]) -> dict[str, Any]:
    state = None
    for event in events:
        state, _ = broadcasts.fold(state, event, DEFAULT_POLICY)
    return broadcasts.view("bcast", state, None)


def _issue(*targets: tuple[str, bool], **kw: Any) -> IssueBroadcast:
    return IssueBroadcast(
        subject="bcast",
        actor="broker",
        at=ts(0),
        operation=kw.pop("operation", Quiesce(reason="broker_shutdown")),
        targets=[Target(backend=b, live=live) for b, live in targets],
        **kw,
    )


def test_seed_broadcasts_doc_default_ack_timeout_is_five_seconds() -> None:
    view = _broadcast([_issue(("b1", True)), BroadcastTimedOut(subject="bcast", backend="b1")])
    assert view["timeouts"] == [{"backend": "b1", "timeout_ms": 5000}]


def test_seed_broadcasts_doc_policy_new_clamps_zero_timeout() -> None:
    view = _broadcast(
        [_issue(("b1", True), ack_timeout_ms=0), BroadcastTimedOut(subject="bcast", backend="b1")]
    )
    assert view["timeouts"] == [{"backend": "b1", "timeout_ms": 1}]


def test_seed_broadcasts_doc_broadcast_skips_dead_and_collects_responses() -> None:
    view = _broadcast(
        [
            _issue(("ack", True), ("dead", False), ("slow", True), ("bad", True)),
            BroadcastAcked(subject="bcast", backend="ack"),
            BroadcastTimedOut(subject="bcast", backend="slow"),
            BroadcastFailed(subject="bcast", backend="bad", reason="unsupported_operation"),
        ]
    )
    assert view["skipped_dead"] == ["dead"]
    assert view["acks"] == ["ack"]
    assert view["timeouts"] == [{"backend": "slow", "timeout_ms": 5000}]
    assert view["failures"] == [{"backend": "bad", "reason": "unsupported_operation"}]


def test_seed_broadcasts_doc_sent_count_is_acks_timeouts_failures() -> None:
    view = _broadcast(
        [
            _issue(("a", True), ("b", True), ("c", True), ("d", False)),
            BroadcastAcked(subject="bcast", backend="a"),
            BroadcastTimedOut(subject="bcast", backend="b"),
            BroadcastFailed(subject="bcast", backend="c", reason="rejected"),
        ]
    )
    assert view["sent_count"] == 3


def test_seed_broadcasts_doc_all_live_backends_acked() -> None:
    acked_all = _broadcast(
        [
            _issue(("a", True), ("d", False), operation=ReleaseHandles(path_prefix="/tmp/x")),
            BroadcastAcked(subject="bcast", backend="a"),
        ]
    )
    assert acked_all["all_live_backends_acked"] is True
    one_failed = _broadcast(
        [
            _issue(("a", True), ("b", True)),
            BroadcastAcked(subject="bcast", backend="a"),
            BroadcastFailed(subject="bcast", backend="b", reason="backend_error"),
        ]
    )
    assert one_failed["all_live_backends_acked"] is False


# ====================================================================== seed 004: recovery (doc)


def _crashes(*ms: int, policy: Policy = DEFAULT_POLICY) -> Any:
    state = None
    for at in ms:
        state, _ = recovery.fold(state, BackendCrashed(subject="svc", at=ts(at)), policy)
    return state


def test_seed_recovery_doc_default_policy() -> None:
    assert DEFAULT_POLICY.retry_backoff_ms == 250
    assert DEFAULT_POLICY.budget_window_ms == 60_000


def test_seed_recovery_doc_record_crash_first_crash_retries_once() -> None:
    assert _crashes(0).decision == Decision("retry", 250, attempt=1)


def test_seed_recovery_doc_record_crash_second_crash_refuses_for_rest_of_window() -> None:
    assert _crashes(0, 15_000).decision == Decision("refuse", 45_000, reason="backend_unavailable")


def test_seed_recovery_doc_refresh_starts_new_window_after_budget() -> None:
    state = _crashes(0, 1, 60_000)
    assert state.window_started_at == ts(60_000)
    assert state.crashes_in_window == 1
    assert state.decision == Decision("retry", 250, attempt=1)


def test_seed_recovery_doc_elapsed_since_saturates_at_zero() -> None:
    assert _crashes(10_000, 0).decision.retry_after_ms == 60_000


def test_seed_recovery_doc_policy_new_clamps_zero_durations() -> None:
    state = _crashes(0, 0, policy=Policy(retry_backoff_ms=0, budget_window_ms=0))
    assert state.decision == Decision("refuse", 1, reason="backend_unavailable")
    assert _crashes(0, policy=Policy(retry_backoff_ms=0)).decision.retry_after_ms == 1


def test_seed_recovery_doc_record_success_removes_entry() -> None:
    event = BackendRecovered(subject="svc", at=ts(5))
    assert recovery.fold(_crashes(0, 1), event, DEFAULT_POLICY) == (
        None,
        Verdict("recovery", "applied"),
    )
