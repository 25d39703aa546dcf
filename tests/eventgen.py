"""Hypothesis strategies for adminchain events (SPEC §1), shared by fold and ledger property tests.

Every strategy generates only VALID events (they pass `ledger.codec.decode_line` after
`encode_event_json`), with ``at`` set, times in UTC at millisecond precision within a few minutes of
`BASE_TIME` (so budget and recovery windows both elapse and do not), and subjects, backends and
peers drawn from small pools so that events collide on the same subject.

Public: one strategy per event type (`enter_maintenance`, ..., `broadcast_failed`, also in
`BY_TYPE`), the families `operator_events`, `loop_events`, `maintenance_events`, `events`, the
log strategy `event_logs` (with redelivered duplicates), `with_ids` and the helpers `ts`/`times`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar, get_args

import msgspec
from hypothesis import strategies as st

from ledger.events import (
    MAINTENANCE_STATES,
    BackendCrashed,
    BackendRecovered,
    BroadcastAcked,
    BroadcastFailed,
    BroadcastTimedOut,
    Detach,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    LeaseExpired,
    MaintenanceObserved,
    MaintenanceStateName,
    MembershipObserved,
    Quiesce,
    ReleaseHandles,
    SetPolicy,
    StorageFailed,
    Target,
)

__all__ = [
    "ACTORS",
    "BACKENDS",
    "BASE_TIME",
    "BY_TYPE",
    "PEERS",
    "SPAN_MS",
    "SUBJECTS",
    "backend_crashed",
    "backend_recovered",
    "broadcast_acked",
    "broadcast_failed",
    "broadcast_timed_out",
    "detach",
    "enter_maintenance",
    "event_ids",
    "event_logs",
    "events",
    "exit_maintenance",
    "health_observed",
    "issue_broadcast",
    "keepalive_failed",
    "lease_expired",
    "loop_events",
    "maintenance_events",
    "maintenance_observed",
    "membership_observed",
    "operator_events",
    "set_policy",
    "storage_failed",
    "times",
    "ts",
    "with_ids",
]

E = TypeVar("E", bound=Event)

BASE_TIME: Final = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_MS: Final = 180_000
SUBJECTS: Final = ("alpha", "beta", "gamma")
BACKENDS: Final = ("be-1", "be-2", "be-3", "be-4")
PEERS: Final = ("p1", "p2", "p3", "p4", "p5")
ACTORS: Final = ("alice", "bob")
_TEXTS: Final = ("disk full", "timeout", "", "node drained badly", "ünïcode ✓")


def ts(ms: int) -> datetime:
    """`BASE_TIME` plus `ms` milliseconds (UTC)."""
    return BASE_TIME + timedelta(milliseconds=ms)


def times(span_ms: int = SPAN_MS) -> st.SearchStrategy[datetime]:
    """Times within `span_ms` of `BASE_TIME`, millisecond precision, UTC."""
    return st.integers(0, span_ms).map(ts)


def event_ids() -> st.SearchStrategy[str]:
    """Idempotency keys: UUIDs as strings."""
    return st.uuids().map(str)


_subjects = st.sampled_from(SUBJECTS)
_actors = st.sampled_from(ACTORS)
_texts = st.sampled_from(_TEXTS)
_STATE_NAMES: Final[tuple[MaintenanceStateName, ...]] = get_args(MaintenanceStateName)
assert set(_STATE_NAMES) == set(MAINTENANCE_STATES)
_millis = st.one_of(st.just(0), st.integers(1, 2_000), st.integers(1, 120_000))


def enter_maintenance() -> st.SearchStrategy[EnterMaintenance]:
    return st.builds(
        EnterMaintenance,
        subject=_subjects,
        actor=_actors,
        at=times(),
        reason=st.none() | _texts,
        deadline=st.none() | times(SPAN_MS * 2),
    )


def exit_maintenance() -> st.SearchStrategy[ExitMaintenance]:
    return st.builds(
        ExitMaintenance, subject=_subjects, actor=_actors, at=times(), force=st.booleans()
    )


def detach() -> st.SearchStrategy[Detach]:
    return st.builds(
        Detach, subject=_subjects, actor=_actors, at=times(), reason=st.none() | _texts
    )


def set_policy() -> st.SearchStrategy[SetPolicy]:
    """Policy for ``*`` or one subject; durations include 0 (means 1 ms)."""
    return st.builds(
        SetPolicy,
        subject=st.sampled_from(("*", *SUBJECTS)),
        actor=_actors,
        at=times(),
        recover_window_ms=st.none() | _millis,
        keepalive_failure_threshold=st.none() | st.integers(1, 5),
        retry_backoff_ms=st.none() | _millis,
        budget_window_ms=st.none() | _millis,
    )


_operations = st.one_of(
    st.builds(Quiesce, reason=st.sampled_from(("idle_timeout", "broker_shutdown", "maintenance"))),
    st.builds(ReleaseHandles, path_prefix=st.sampled_from(("/var/run", "/tmp/x"))),
)
_targets = st.lists(
    st.builds(Target, backend=st.sampled_from(BACKENDS), live=st.booleans()), max_size=5
)


def issue_broadcast() -> st.SearchStrategy[IssueBroadcast]:
    return st.builds(
        IssueBroadcast,
        subject=_subjects,
        actor=_actors,
        at=times(),
        operation=_operations,
        targets=_targets,
        ack_timeout_ms=st.sampled_from((0, 1, 5000, 250)),
    )


@st.composite
def maintenance_observed(draw: st.DrawFn) -> MaintenanceObserved:
    """Any state; DrainFailed always carries a reason (the catalogue requires one)."""
    state = draw(st.sampled_from(_STATE_NAMES))
    reason = draw(st.sampled_from(_TEXTS[:2])) if state == "DrainFailed" else draw(st.none())
    return MaintenanceObserved(
        subject=draw(_subjects),
        at=draw(times()),
        state=state,
        reason=reason,
        deadline=draw(st.none() | times(SPAN_MS * 2)),
    )


def storage_failed() -> st.SearchStrategy[StorageFailed]:
    return st.builds(StorageFailed, subject=_subjects, at=times(), message=_texts)


def lease_expired() -> st.SearchStrategy[LeaseExpired]:
    return st.builds(LeaseExpired, subject=_subjects, at=times())


def keepalive_failed() -> st.SearchStrategy[KeepAliveFailed]:
    return st.builds(KeepAliveFailed, subject=_subjects, at=times())


def health_observed() -> st.SearchStrategy[HealthObserved]:
    return st.builds(HealthObserved, subject=_subjects, at=times(), healthy=st.booleans())


def backend_crashed() -> st.SearchStrategy[BackendCrashed]:
    return st.builds(BackendCrashed, subject=_subjects, at=times())


def backend_recovered() -> st.SearchStrategy[BackendRecovered]:
    return st.builds(BackendRecovered, subject=_subjects, at=times())


def membership_observed() -> st.SearchStrategy[MembershipObserved]:
    return st.builds(
        MembershipObserved,
        subject=_subjects,
        at=times(),
        peers=st.lists(st.sampled_from(PEERS), max_size=6),
    )


def broadcast_acked() -> st.SearchStrategy[BroadcastAcked]:
    return st.builds(
        BroadcastAcked, subject=_subjects, at=times(), backend=st.sampled_from(BACKENDS)
    )


def broadcast_timed_out() -> st.SearchStrategy[BroadcastTimedOut]:
    return st.builds(
        BroadcastTimedOut, subject=_subjects, at=times(), backend=st.sampled_from(BACKENDS)
    )


def broadcast_failed() -> st.SearchStrategy[BroadcastFailed]:
    return st.builds(
        BroadcastFailed,
        subject=_subjects,
        at=times(),
        backend=st.sampled_from(BACKENDS),
        reason=st.sampled_from(("unsupported_operation", "rejected", "backend_error")),
    )


BY_TYPE: Final[dict[type[Event], Callable[[], st.SearchStrategy[Event]]]] = {
    EnterMaintenance: enter_maintenance,
    ExitMaintenance: exit_maintenance,
    Detach: detach,
    SetPolicy: set_policy,
    IssueBroadcast: issue_broadcast,
    MaintenanceObserved: maintenance_observed,
    StorageFailed: storage_failed,
    LeaseExpired: lease_expired,
    KeepAliveFailed: keepalive_failed,
    HealthObserved: health_observed,
    BackendCrashed: backend_crashed,
    BackendRecovered: backend_recovered,
    MembershipObserved: membership_observed,
    BroadcastAcked: broadcast_acked,
    BroadcastTimedOut: broadcast_timed_out,
    BroadcastFailed: broadcast_failed,
}
"""Every event type of the catalogue and its strategy."""


def operator_events() -> st.SearchStrategy[Event]:
    """Any operator event (SPEC §1)."""
    return st.one_of(
        enter_maintenance(), exit_maintenance(), detach(), set_policy(), issue_broadcast()
    )


def loop_events() -> st.SearchStrategy[Event]:
    """Any loop event (SPEC §1)."""
    return st.one_of(
        maintenance_observed(),
        storage_failed(),
        lease_expired(),
        keepalive_failed(),
        health_observed(),
        backend_crashed(),
        backend_recovered(),
        membership_observed(),
        broadcast_acked(),
        broadcast_timed_out(),
        broadcast_failed(),
    )


def maintenance_events() -> st.SearchStrategy[Event]:
    """The events the maintenance projection folds."""
    return st.one_of(enter_maintenance(), exit_maintenance(), maintenance_observed())


def events() -> st.SearchStrategy[Event]:
    """Any valid event of the catalogue."""
    return st.one_of(operator_events(), loop_events())


def with_ids(strategy: st.SearchStrategy[E]) -> st.SearchStrategy[E]:
    """`strategy` with an optional idempotency key (``id``) on each event."""
    return st.tuples(strategy, st.none() | event_ids()).map(
        lambda pair: pair[0] if pair[1] is None else msgspec.structs.replace(pair[0], id=pair[1])
    )


@st.composite
def event_logs(
    draw: st.DrawFn,
    elements: st.SearchStrategy[Event] | None = None,
    min_size: int = 0,
    max_size: int = 40,
) -> list[Event]:
    """A log: events in arbitrary ``at`` order, some redelivered later (exact duplicates)."""
    log = draw(
        st.lists(events() if elements is None else elements, min_size=min_size, max_size=max_size)
    )
    if log:
        for _ in range(draw(st.integers(0, len(log) // 3))):
            i = draw(st.integers(0, len(log) - 1))
            j = draw(st.integers(i + 1, len(log)))
            log.insert(j, log[i])
    return log
