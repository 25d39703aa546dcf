"""Detachment fold unit tests.

Covers SPEC §2.2 (attached by default; StorageFailed / LeaseExpired / Detach reasons; the
keep-alive streak and its policy threshold; a healthy signal ending the streak; re-detach keeping
``detached_at``; the recovery window on event time; resets of ``healthy_since``; ``stale``
signals; the four display strings), the SPEC §2.6 policy fields it reads
(``keepalive_failure_threshold``, ``recover_window_ms``), SPEC §3 verdicts (``applied`` /
``idempotent`` / ``stale``) and the SPEC §5 detachment ``status --json`` object.

The Rust seed 000 (cruster detachment) tests are here (the events carry ``at`` offsets where
the Rust sleeps): ``initially_not_detached`` -> `test_attached_by_default_view`;
``detach_sets_state`` -> `test_detach_detaches_with_manual`; ``double_detach_returns_false`` ->
`test_redetach_updates_reason_keeps_detached_at`; ``reattach_requires_recovery_window`` ->
`test_healthy_signal_before_window_elapsed_stays_detached`,
`test_healthy_signal_at_window_reattaches`, `test_recover_window_comes_from_policy`;
``unhealthy_signal_resets_recovery`` -> `test_unhealthy_signal_resets_healthy_since`;
``storage_error_reason_display``, ``keepalive_failure_reason_display`` ->
`test_reason_display_strings`, `test_keepalive_streak_at_threshold_detaches_with_count`.
"""

from __future__ import annotations

import pytest

from ledger.events import (
    Detach,
    Event,
    HealthObserved,
    KeepAliveFailed,
    LeaseExpired,
    StorageFailed,
)
from projections import detachment
from projections.base import DEFAULT_POLICY, Policy, Verdict
from projections.detachment import DetachmentReason, DetachmentState
from tests.eventgen import ts

APPLIED = Verdict("detachment", "applied")
IDEMPOTENT = Verdict("detachment", "idempotent")
MANUAL = DetachmentReason("manual")
LEASE = DetachmentReason("lease_expired")


def run(
    events: list[Event], policy: Policy = DEFAULT_POLICY, state: DetachmentState | None = None
) -> tuple[DetachmentState | None, list[Verdict]]:
    verdicts = []
    for event in events:
        state, verdict = detachment.fold(state, event, policy)
        verdicts.append(verdict)
    return state, verdicts


def storage(ms: int, message: str = "connection timeout") -> StorageFailed:
    return StorageFailed(subject="r1", at=ts(ms), message=message)


def lease(ms: int) -> LeaseExpired:
    return LeaseExpired(subject="r1", at=ts(ms))


def manual(ms: int, reason: str | None = None) -> Detach:
    return Detach(subject="r1", actor="ops", at=ts(ms), reason=reason)


def miss(ms: int) -> KeepAliveFailed:
    return KeepAliveFailed(subject="r1", at=ts(ms))


def health(ms: int, healthy: bool = True) -> HealthObserved:
    return HealthObserved(subject="r1", at=ts(ms), healthy=healthy)


def detached_at(ms: int, reason: DetachmentReason = MANUAL) -> DetachmentState:
    return DetachmentState(True, reason, ts(ms))


# ---------------------------------------------------------------- detaching reasons


def test_attached_by_default_view() -> None:
    assert detachment.view("r1", None, None) == {
        "detached": False,
        "reason": None,
        "detached_at": None,
        "healthy_since": None,
        "keepalive_failures": 0,
    }


def test_storage_failed_detaches_with_storage_error_and_message() -> None:
    state, verdicts = run([storage(10, "disk gone")])
    assert verdicts == [APPLIED]
    assert state == DetachmentState(True, DetachmentReason("storage_error", "disk gone"), ts(10))


def test_lease_expired_detaches_with_lease_expired() -> None:
    state, _ = run([lease(10)])
    assert state == DetachmentState(True, LEASE, ts(10))


def test_detach_detaches_with_manual() -> None:
    state, _ = run([manual(10)])
    assert state == DetachmentState(True, MANUAL, ts(10))


def test_detach_keeps_operator_text_as_message_display_unchanged() -> None:
    state, _ = run([manual(10, "rebalancing")])
    assert state is not None
    assert state.reason == DetachmentReason("manual", "rebalancing")
    view = detachment.view("r1", state, None)
    assert view["reason"] == {
        "kind": "manual",
        "message": "rebalancing",
        "display": "manual detachment",
    }


# ---------------------------------------------------------------- display strings


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (
            DetachmentReason("storage_error", "connection timeout"),
            "storage error: connection timeout",
        ),
        (
            DetachmentReason("keepalive_failure", consecutive_failures=5),
            "keep-alive failure streak: 5 consecutive failures",
        ),
        (LEASE, "lease expired"),
        (MANUAL, "manual detachment"),
    ],
)
def test_reason_display_strings(reason: DetachmentReason, text: str) -> None:
    assert detachment.display(reason) == text


# ---------------------------------------------------------------- keep-alive streak


def test_keepalive_streak_below_threshold_counts_without_detaching() -> None:
    state, verdicts = run([miss(1), miss(2)])
    assert verdicts == [APPLIED, APPLIED]
    assert state == DetachmentState(keepalive_failures=2)


def test_keepalive_streak_at_threshold_detaches_with_count() -> None:
    state, _ = run([miss(1), miss(2), miss(3)])
    reason = DetachmentReason("keepalive_failure", consecutive_failures=3)
    assert state == DetachmentState(True, reason, ts(3), None, 3)
    assert detachment.view("r1", state, None)["reason"] == {
        "kind": "keepalive_failure",
        "consecutive_failures": 3,
        "display": "keep-alive failure streak: 3 consecutive failures",
    }


def test_keepalive_threshold_comes_from_policy() -> None:
    state, _ = run([miss(1)], Policy(keepalive_failure_threshold=1))
    assert state is not None
    assert state.detached
    state, _ = run([miss(1), miss(2), miss(3)], Policy(keepalive_failure_threshold=4))
    assert state is not None
    assert not state.detached


def test_keepalive_failures_past_threshold_update_count_keep_detached_at() -> None:
    state, _ = run([miss(1), miss(2), miss(3), miss(4)])
    assert state is not None
    assert state.reason == DetachmentReason("keepalive_failure", consecutive_failures=4)
    assert state.detached_at == ts(3)


def test_healthy_signal_ends_streak_while_attached() -> None:
    state, verdicts = run([miss(1), miss(2), health(3)])
    assert state is None
    assert verdicts[-1] == APPLIED
    state, _ = run([miss(4), miss(5)], state=state)
    assert state == DetachmentState(keepalive_failures=2)


def test_healthy_signal_while_attached_without_streak_is_idempotent() -> None:
    assert run([health(1)]) == (None, [IDEMPOTENT])


def test_unhealthy_signal_while_attached_changes_nothing() -> None:
    state, verdicts = run([miss(1), health(2, healthy=False)])
    assert state == DetachmentState(keepalive_failures=1)
    assert verdicts[-1] == IDEMPOTENT


def test_streak_reaching_threshold_while_detached_updates_reason() -> None:
    state, _ = run([lease(0), miss(1), miss(2), miss(3)])
    assert state is not None
    assert state.reason == DetachmentReason("keepalive_failure", consecutive_failures=3)
    assert state.detached_at == ts(0)


# ---------------------------------------------------------------- re-detach


def test_redetach_updates_reason_keeps_detached_at() -> None:
    state, verdicts = run([manual(10), lease(20)])
    assert verdicts == [APPLIED, APPLIED]
    assert state == DetachmentState(True, LEASE, ts(10))


def test_redetach_same_reason_is_idempotent() -> None:
    state, verdicts = run([manual(10), manual(20)])
    assert verdicts == [APPLIED, IDEMPOTENT]
    assert state == DetachmentState(True, MANUAL, ts(10))


def test_redetach_resets_healthy_since() -> None:
    state, _ = run([manual(10), health(20), storage(30)])
    assert state is not None
    assert state.healthy_since is None


# ---------------------------------------------------------------- recovery window


def test_first_healthy_signal_starts_recovery_window() -> None:
    state, verdicts = run([manual(10), health(20)])
    assert verdicts[-1] == APPLIED
    assert state == DetachmentState(True, MANUAL, ts(10), ts(20))


def test_healthy_signal_before_window_elapsed_stays_detached() -> None:
    state, verdicts = run([manual(0), health(100), health(599)])
    assert verdicts[-1] == IDEMPOTENT
    assert state is not None
    assert state.detached
    assert state.healthy_since == ts(100)


def test_healthy_signal_at_window_reattaches() -> None:
    state, verdicts = run([manual(0), health(100), health(600)])
    assert verdicts[-1] == APPLIED
    assert state is None


def test_recover_window_comes_from_policy() -> None:
    policy = Policy(recover_window_ms=50)
    state, _ = run([manual(0), health(100), health(149)], policy)
    assert state is not None
    state, _ = run([health(150)], policy, state)
    assert state is None


def test_reattach_clears_reason_and_streak() -> None:
    state, _ = run([miss(1), miss(2), miss(3), health(4), health(504)])
    assert state is None
    assert detachment.view("r1", state, None)["reason"] is None


def test_unhealthy_signal_resets_healthy_since() -> None:
    state, verdicts = run([manual(0), health(100), health(200, healthy=False)])
    assert verdicts[-1] == APPLIED
    assert state is not None
    assert state.healthy_since is None
    state, _ = run([health(700)], state=state)
    assert state is not None
    assert state.healthy_since == ts(700)


def test_keepalive_failure_resets_healthy_since() -> None:
    state, _ = run([manual(0), health(100), miss(200)])
    assert state is not None
    assert state.healthy_since is None
    assert state.keepalive_failures == 1


def test_unhealthy_signal_without_window_is_idempotent() -> None:
    state, verdicts = run([manual(0), health(5, healthy=False)])
    assert verdicts[-1] == IDEMPOTENT
    assert state == DetachmentState(True, MANUAL, ts(0))


# ---------------------------------------------------------------- stale


@pytest.mark.parametrize(
    "event",
    [storage(5), lease(5), manual(5), miss(5), health(5), health(5, healthy=False)],
    ids=lambda e: type(e).__name__ + ("" if not isinstance(e, HealthObserved) else str(e.healthy)),
)
def test_signal_before_detached_at_is_stale_and_changes_nothing(event: Event) -> None:
    before = detached_at(10)
    after, verdict = detachment.fold(before, event, DEFAULT_POLICY)
    assert after is before
    assert verdict.verdict == "rejected"
    assert verdict.reason == "stale"
    assert verdict.detail is not None
    assert "2024-01-01T00:00:00.010000Z" in verdict.detail


def test_signal_at_detached_at_is_not_stale() -> None:
    _, verdict = detachment.fold(detached_at(10), health(10), DEFAULT_POLICY)
    assert verdict == APPLIED


# ---------------------------------------------------------------- view and storage


def test_view_keys_and_times() -> None:
    state = DetachmentState(True, DetachmentReason("storage_error", "x"), ts(1), ts(2), 1)
    out = detachment.view("r1", state, None)
    assert out == {
        "detached": True,
        "reason": {"kind": "storage_error", "message": "x", "display": "storage error: x"},
        "detached_at": "2024-01-01T00:00:00.001000Z",
        "healthy_since": "2024-01-01T00:00:00.002000Z",
        "keepalive_failures": 1,
    }
