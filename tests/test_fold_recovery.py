"""Recovery fold unit tests.

Covers SPEC §2.3 (budget window on event time; first crash in a window retries with
``retry_backoff_ms`` and attempt 1; later crashes refuse ``backend_unavailable`` with the rest of
the window; a new window once ``budget_window_ms`` has elapsed; a crash before the window start
counts as elapsed zero; BackendRecovered clears, idempotent when absent), the SPEC §2.6 fields
it reads with zero durations clamped to 1 ms, SPEC §3 verdicts, and the SPEC §5 recovery
``status --json`` object.

Seed 004 (running-process recovery: its doc comments) is here, every case, with
`test_fold_policy.py`'s `test_defaults_without_settings`.
"""

from __future__ import annotations

from datetime import timedelta

from ledger.events import BackendCrashed, BackendRecovered, Event
from projections import recovery
from projections.base import DEFAULT_POLICY, Policy, Verdict
from projections.recovery import Decision, RecoveryState
from tests.eventgen import ts

APPLIED = Verdict("recovery", "applied")
IDEMPOTENT = Verdict("recovery", "idempotent")
RETRY = Decision("retry", 250, attempt=1)


def crash(ms: int) -> BackendCrashed:
    return BackendCrashed(subject="svc@1", at=ts(ms))


def recovered(ms: int = 0) -> BackendRecovered:
    return BackendRecovered(subject="svc@1", at=ts(ms))


def run(
    events: list[Event], policy: Policy = DEFAULT_POLICY, state: RecoveryState | None = None
) -> tuple[RecoveryState | None, list[Verdict]]:
    verdicts = []
    for event in events:
        state, verdict = recovery.fold(state, event, policy)
        verdicts.append(verdict)
    return state, verdicts


def refuse(ms: int) -> Decision:
    return Decision("refuse", ms, reason="backend_unavailable")


def test_first_crash_in_window_retries_with_backoff_attempt_one() -> None:
    state, verdicts = run([crash(1000)])
    assert verdicts == [APPLIED]
    assert state == RecoveryState(ts(1000), 1, RETRY)


def test_second_crash_in_window_refuses_with_rest_of_window() -> None:
    state, verdicts = run([crash(0), crash(10_000)])
    assert verdicts == [APPLIED, APPLIED]
    assert state == RecoveryState(ts(0), 2, refuse(50_000))


def test_later_crashes_in_window_keep_refusing_with_shrinking_retry_after() -> None:
    state, _ = run([crash(0), crash(10_000), crash(59_000)])
    assert state == RecoveryState(ts(0), 3, refuse(1000))


def test_crash_when_window_elapsed_starts_new_window_and_retries() -> None:
    state, _ = run([crash(0), crash(1), crash(60_000)])
    assert state == RecoveryState(ts(60_000), 1, RETRY)


def test_crash_one_ms_before_window_end_refuses_one_ms() -> None:
    state, _ = run([crash(0), crash(59_999)])
    assert state is not None
    assert state.decision == refuse(1)


def test_sub_millisecond_elapsed_is_floored_retry_after_at_least_one() -> None:
    late = BackendCrashed(subject="svc@1", at=ts(59_999) + timedelta(microseconds=500))
    state, _ = run([crash(0), late])
    assert state is not None
    assert state.decision == refuse(1)


def test_crash_before_window_start_counts_as_elapsed_zero() -> None:
    state, _ = run([crash(10_000), crash(5_000)])
    assert state == RecoveryState(ts(10_000), 2, refuse(60_000))


def test_backend_recovered_clears_entry() -> None:
    state, verdicts = run([crash(0), crash(1), recovered(2)])
    assert state is None
    assert verdicts[-1] == APPLIED


def test_backend_recovered_absent_entry_is_idempotent() -> None:
    assert run([recovered()]) == (None, [IDEMPOTENT])


def test_crash_after_recovered_retries_again() -> None:
    state, _ = run([crash(0), crash(1), recovered(2), crash(3)])
    assert state == RecoveryState(ts(3), 1, RETRY)


def test_policy_backoff_and_window_are_used() -> None:
    policy = Policy(retry_backoff_ms=40, budget_window_ms=1000)
    state, _ = run([crash(0)], policy)
    assert state is not None
    assert state.decision == Decision("retry", 40, attempt=1)
    state, _ = run([crash(300)], policy, state)
    assert state is not None
    assert state.decision == refuse(700)
    state, _ = run([crash(1000)], policy, state)
    assert state == RecoveryState(ts(1000), 1, Decision("retry", 40, attempt=1))


def test_zero_durations_are_clamped_to_one_ms() -> None:
    policy = Policy(retry_backoff_ms=0, budget_window_ms=0)
    state, _ = run([crash(0)], policy)
    assert state is not None
    assert state.decision == Decision("retry", 1, attempt=1)
    state, _ = run([crash(0)], policy, state)
    assert state == RecoveryState(ts(0), 2, refuse(1))
    state, _ = run([crash(1)], policy, state)
    assert state == RecoveryState(ts(1), 1, Decision("retry", 1, attempt=1))


def test_view_absent_entry() -> None:
    assert recovery.view("svc@1", None, None) == {
        "crashes_in_window": 0,
        "window_started_at": None,
        "decision": None,
    }


def test_view_retry_decision() -> None:
    assert recovery.view("svc@1", RecoveryState(ts(0), 1, RETRY), None) == {
        "crashes_in_window": 1,
        "window_started_at": "2024-01-01T00:00:00Z",
        "decision": {"kind": "retry", "retry_after_ms": 250, "attempt": 1},
    }


def test_view_refuse_decision() -> None:
    out = recovery.view("svc@1", RecoveryState(ts(0), 2, refuse(5)), None)
    assert out["decision"] == {
        "kind": "refuse",
        "reason": "backend_unavailable",
        "retry_after_ms": 5,
    }
