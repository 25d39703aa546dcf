"""The five Rust seeds' tests, translated to event sequences through our folds.

Seed 000 (cruster detachment, SPEC §2.2): every ``#[test]`` is here under its Rust name
(``test_seed_detachment_<name>``); where it sleeps on the wall clock, the events carry ``at``
offsets instead, and a Rust ``bool`` "did this call transition" becomes the verdict or an
unchanged ``detached_at``. Seed 003 (liminal-server membership, SPEC §2.4) and seed 002
(running-process broadcasts, no ``#[test]``: its doc comments, SPEC §2.5) keep the cases no rule
file has.

The seed cases a rule file already proves were folded into it (issue 11), so that each rule is
tested in one place:

- seed 001 (net-mesh maintenance): ``is_valid_successor_*`` -> `test_fold_maintenance.py`
  (`test_is_valid_successor_matches_spec_table`, `test_successor_table_observed_transition`,
  `test_exiting_to_drain_failed_rejected_invalid_successor`); ``default_is_active`` and
  ``predicates_reflect_state_shape`` -> `test_view_active_default`,
  `test_non_active_and_steady_maintenance`;
- seed 003: ``first_poll_of_empty_table_yields_no_peers`` -> `test_fold_membership.py`
  `test_empty_first_observation_is_idempotent_no_entry`;
- seed 002: default and zero ack timeouts, ``all_live_backends_acked`` ->
  `test_fold_broadcasts.py` (`test_ack_timeout_defaults_to_5000`,
  `test_zero_ack_timeout_means_one_ms`, `test_all_acked_is_complete_and_all_live_backends_acked`,
  `test_timeout_means_not_all_live_backends_acked`);
- seed 004 (running-process recovery, doc comments): every case -> `test_fold_recovery.py`
  (first crash retries, later crashes refuse for the rest of the window, a new window after the
  budget, elapsed saturating at zero, zero durations clamped, recovery clearing the entry) and
  `test_fold_policy.py` `test_defaults_without_settings`.
"""

from __future__ import annotations

from typing import Any

from ledger.events import (
    BroadcastAcked,
    BroadcastFailed,
    BroadcastTimedOut,
    Detach,
    Event,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    LeaseExpired,
    Quiesce,
    StorageFailed,
    Target,
)
from projections import broadcasts, detachment, membership
from projections.base import DEFAULT_POLICY, Policy, Verdict
from projections.detachment import DetachmentReason, DetachmentState
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


# ====================================================================== seed 003: membership


def test_seed_membership_delta_is_empty_by_default() -> None:
    view = membership.view("cluster", None, None)
    assert view["joined"] == []
    assert view["left"] == []


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
