"""Lifecycle broadcasts fold unit tests.

Covers SPEC §2.5 (operation kinds, targets in issue order, dead targets ``skipped_dead`` at once,
``ack_timeout_ms`` default 5000 and zero meaning 1, one outcome per live target: acked / timed
out with the timeout / failed with the reason, a repeat ``idempotent``, a different later one
``late``, an outcome for a non-live target or an unknown broadcast ``unknown_target``, a re-issue
``idempotent`` or ``duplicate``), SPEC §3 verdicts, and the SPEC §5 broadcasts ``status --json``
object (acks, timeouts, failures, skipped_dead, pending, sent_count, complete,
all_live_backends_acked).

Seed 002 (running-process broadcasts: no ``#[test]``, its doc comments) is here: a broadcast
skips dead targets and collects responses ->
`test_issue_records_operation_and_skips_dead_targets_at_once`,
`test_each_live_target_gets_one_outcome_in_issue_order` (``sent_count`` = acks + timeouts +
failures); default and zero ack timeouts, ``all_live_backends_acked`` -> the tests so named.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.events import (
    BroadcastAcked,
    BroadcastFailed,
    BroadcastTimedOut,
    Event,
    IssueBroadcast,
    Operation,
    Quiesce,
    ReleaseHandles,
    Target,
)
from projections import broadcasts
from projections.base import DEFAULT_POLICY, Verdict
from projections.broadcasts import BroadcastState
from tests.eventgen import ts

APPLIED = Verdict("broadcasts", "applied")
IDEMPOTENT = Verdict("broadcasts", "idempotent")
QUIESCE = Quiesce(reason="maintenance")


def issue(
    *targets: tuple[str, bool],
    operation: Operation = QUIESCE,
    ms: int = 0,
    **kw: Any,
) -> IssueBroadcast:
    return IssueBroadcast(
        subject="bc1",
        actor="ops",
        at=ts(ms),
        operation=operation,
        targets=[Target(backend=b, live=live) for b, live in targets],
        **kw,
    )


def acked(backend: str, ms: int = 10) -> BroadcastAcked:
    return BroadcastAcked(subject="bc1", at=ts(ms), backend=backend)


def timed_out(backend: str, ms: int = 10) -> BroadcastTimedOut:
    return BroadcastTimedOut(subject="bc1", at=ts(ms), backend=backend)


def failed(backend: str, reason: str = "rejected", ms: int = 10) -> BroadcastFailed:
    return BroadcastFailed(subject="bc1", at=ts(ms), backend=backend, reason=reason)  # type: ignore[arg-type]


def run(
    events: list[Event], state: BroadcastState | None = None
) -> tuple[BroadcastState | None, list[Verdict]]:
    verdicts = []
    for event in events:
        state, verdict = broadcasts.fold(state, event, DEFAULT_POLICY)
        verdicts.append(verdict)
    return state, verdicts


def view_of(events: list[Event]) -> dict[str, Any]:
    state, _ = run(events)
    return broadcasts.view("bc1", state, None)


THREE = (("a", True), ("dead", False), ("b", True))


# ---------------------------------------------------------------- issuing


def test_issue_records_operation_and_skips_dead_targets_at_once() -> None:
    out = view_of([issue(*THREE)])
    assert out == {
        "operation": {"kind": "quiesce", "reason": "maintenance"},
        "acks": [],
        "timeouts": [],
        "failures": [],
        "skipped_dead": ["dead"],
        "pending": ["a", "b"],
        "sent_count": 0,
        "complete": False,
        "all_live_backends_acked": False,
    }


def test_release_handles_operation_view() -> None:
    out = view_of([issue(("a", True), operation=ReleaseHandles(path_prefix="/data"))])
    assert out["operation"] == {"kind": "release_handles", "path_prefix": "/data"}


def test_ack_timeout_defaults_to_5000() -> None:
    state, _ = run([issue(("a", True)), timed_out("a")])
    assert state is not None
    assert state.ack_timeout_ms == 5000
    assert broadcasts.view("bc1", state, None)["timeouts"] == [{"backend": "a", "timeout_ms": 5000}]


def test_zero_ack_timeout_means_one_ms() -> None:
    out = view_of([issue(("a", True), ack_timeout_ms=0), timed_out("a")])
    assert out["timeouts"] == [{"backend": "a", "timeout_ms": 1}]


def test_target_listed_twice_keeps_first_position_last_liveness() -> None:
    out = view_of([issue(("a", True), ("b", True), ("a", False))])
    assert out["skipped_dead"] == ["a"]
    assert out["pending"] == ["b"]
    out = view_of([issue(("a", False), ("b", True), ("a", True))])
    assert out["pending"] == ["a", "b"]


# ---------------------------------------------------------------- outcomes


def test_each_live_target_gets_one_outcome_in_issue_order() -> None:
    out = view_of(
        [
            issue(("c", True), *THREE, ("d", True)),
            failed("d", "backend_error"),
            acked("b"),
            timed_out("a"),
            acked("c"),
        ]
    )
    assert out["acks"] == ["c", "b"]
    assert out["timeouts"] == [{"backend": "a", "timeout_ms": 5000}]
    assert out["failures"] == [{"backend": "d", "reason": "backend_error"}]
    assert out["pending"] == []
    assert out["sent_count"] == 4
    assert out["complete"] is True
    assert out["all_live_backends_acked"] is False


def test_first_outcome_is_applied() -> None:
    _, verdicts = run([issue(*THREE), acked("a"), timed_out("b")])
    assert verdicts == [APPLIED, APPLIED, APPLIED]


@pytest.mark.parametrize("outcome", [acked, timed_out, lambda b: failed(b, "rejected")])
def test_repeat_of_same_outcome_is_idempotent(outcome: Any) -> None:
    state, _ = run([issue(*THREE), outcome("a")])
    again, verdicts = run([outcome("a")], state)
    assert verdicts == [IDEMPOTENT]
    assert again is state


@pytest.mark.parametrize(
    ("first", "second", "detail"),
    [
        (acked, timed_out, "a already acked; got timed_out"),
        (timed_out, acked, "a already timed_out; got acked"),
        (acked, failed, "a already acked; got failed (rejected)"),
        (
            lambda b: failed(b, "backend_error"),
            lambda b: failed(b, "rejected"),
            "a already failed (backend_error); got failed (rejected)",
        ),
    ],
)
def test_different_later_outcome_is_rejected_late(first: Any, second: Any, detail: str) -> None:
    state, _ = run([issue(*THREE), first("a")])
    again, verdicts = run([second("a")], state)
    assert verdicts == [Verdict("broadcasts", "rejected", "late", detail)]
    assert again is state


def test_outcome_for_dead_target_is_unknown_target() -> None:
    state, _ = run([issue(*THREE)])
    again, verdicts = run([acked("dead")], state)
    assert verdicts == [
        Verdict("broadcasts", "rejected", "unknown_target", "dead is a dead target")
    ]
    assert again is state


def test_outcome_for_backend_not_targeted_is_unknown_target() -> None:
    state, _ = run([issue(*THREE)])
    again, verdicts = run([failed("zzz")], state)
    assert verdicts[0].reason == "unknown_target"
    assert again is state


def test_outcome_for_broadcast_never_issued_is_unknown_target() -> None:
    state, verdicts = run([acked("a")])
    assert state is None
    assert verdicts[0].verdict == "rejected"
    assert verdicts[0].reason == "unknown_target"


# ---------------------------------------------------------------- re-issue


def test_identical_reissue_is_idempotent() -> None:
    state, _ = run([issue(*THREE), acked("a")])
    again, verdicts = run([issue(*THREE, ms=99)], state)
    assert verdicts == [IDEMPOTENT]
    assert again is state


def test_reissue_with_zero_timeout_equals_one_ms() -> None:
    _, verdicts = run([issue(("a", True), ack_timeout_ms=0), issue(("a", True), ack_timeout_ms=1)])
    assert verdicts[-1] == IDEMPOTENT


@pytest.mark.parametrize(
    "other",
    [
        issue(("a", True), ("b", True)),
        issue(("b", True), ("dead", False), ("a", True)),
        issue(*THREE, operation=Quiesce(reason="idle_timeout")),
        issue(*THREE, ack_timeout_ms=10),
    ],
    ids=["targets", "order", "operation", "timeout"],
)
def test_different_reissue_is_rejected_duplicate(other: IssueBroadcast) -> None:
    state, _ = run([issue(*THREE)])
    again, verdicts = run([other], state)
    assert verdicts[0].verdict == "rejected"
    assert verdicts[0].reason == "duplicate"
    assert again is state


# ---------------------------------------------------------------- view flags


def test_all_acked_is_complete_and_all_live_backends_acked() -> None:
    out = view_of([issue(*THREE), acked("a"), acked("b")])
    assert out["acks"] == ["a", "b"]
    assert out["sent_count"] == 2
    assert out["complete"] is True
    assert out["all_live_backends_acked"] is True


def test_pending_target_means_not_complete_and_not_all_acked() -> None:
    out = view_of([issue(*THREE), acked("a")])
    assert out["pending"] == ["b"]
    assert out["complete"] is False
    assert out["all_live_backends_acked"] is False


def test_timeout_means_not_all_live_backends_acked() -> None:
    out = view_of([issue(*THREE), acked("a"), timed_out("b")])
    assert out["complete"] is True
    assert out["all_live_backends_acked"] is False


def test_only_dead_targets_is_complete_and_vacuously_all_acked() -> None:
    out = view_of([issue(("x", False))])
    assert out["skipped_dead"] == ["x"]
    assert out["sent_count"] == 0
    assert out["complete"] is True
    assert out["all_live_backends_acked"] is True


def test_view_of_never_issued_broadcast() -> None:
    out = broadcasts.view("bc1", None, None)
    assert out["operation"] is None
    assert out["complete"] is False
    assert out["all_live_backends_acked"] is False
