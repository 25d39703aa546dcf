"""Property tests over random operator and loop events, duplicated and reordered (hypothesis).

Covers SPEC §2 (folds are pure and deterministic: the same log always gives the same state, live
or replayed; replay at any position; policy honoured at its position; the folder's routing, which
calls each event type's fold directly and reads the policy only for the folds that say they need
it, equals the plain fold of every module with the full policy in force), SPEC §2.1 (every
maintenance state reached was reached by a valid arc), SPEC §2.2 (stale signals change nothing),
SPEC §2.3 (a refusal's ``retry_after_ms`` within ``[1, budget_window_ms]``, a retry's equal to
``retry_backoff_ms``), SPEC §2.5 (pending and outcomes partition the live targets), SPEC §3
(verdicts agree with state changes; re-applying is safe) and SPEC §4 (the projection digest:
canonical, equal for replay and live, fixed for no state).

The duplicate property, stated precisely: the ledger dedupes events by ``id``; the folds do not
need to be idempotent for counting events (`KeepAliveFailed`, `BackendCrashed`). What holds for
every event: re-applying, right away, an event whose verdicts had no ``applied`` changes nothing
and gives the same verdicts; and for every event type except those two, a second application in a
row is never ``applied`` and changes nothing.

Examples per test: ``ADMINCHAIN_HYPOTHESIS_EXAMPLES`` (default 100).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from ledger.codec import decode_line, encode_event_json
from ledger.events import (
    MAINTENANCE_STATES,
    BackendCrashed,
    BroadcastAcked,
    EnterMaintenance,
    Event,
    IssueBroadcast,
    KeepAliveFailed,
    Quiesce,
    ReleaseHandles,
    Target,
)
from projections import broadcasts, maintenance, policy
from projections.base import Verdict
from projections.broadcasts import BackendOutcome, BroadcastState
from projections.detachment import DetachmentReason, DetachmentState
from projections.maintenance import MaintenanceState
from projections.membership import MembershipDelta, MembershipState
from projections.policy import PolicySettings
from projections.recovery import Decision, RecoveryState
from projections.state import (
    BY_NAME,
    PROJECTIONS,
    Folder,
    decode_state,
    digest,
    encode_state,
    policy_for,
    touched,
)
from tests import eventgen as gen
from tests.eventgen import ts
from tests.test_fold_maintenance import SPEC_ARCS


class Change(NamedTuple):
    """One projection's result for one event, folded over only the states it reads."""

    projection: str
    subject: str
    state: Any | None
    verdict: Verdict


def step(get: Callable[[str, str], Any | None], event: Event) -> list[Change]:
    """Fold `event` over just the states `touched` names, read through `get`, as the stored
    views do (`projections.views`): the state after it (None: removed) and the verdict of each
    projection. Unchanged states come back as the very objects `get` returned."""
    folder = Folder()
    for projection, subject in touched(event):
        state = get(projection, subject)
        if state is not None:
            folder.states[projection][subject] = state
    return [
        Change(v.projection, event.subject, folder.get(v.projection, event.subject), v)
        for v in folder.apply(event)
    ]


EXAMPLES = int(os.environ.get("ADMINCHAIN_HYPOTHESIS_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTING = (KeepAliveFailed, BackendCrashed)

broadcast_events = st.one_of(
    gen.issue_broadcast(),
    gen.broadcast_acked(),
    gen.broadcast_timed_out(),
    gen.broadcast_failed(),
)
recovery_events = st.one_of(gen.backend_crashed(), gen.backend_recovered(), gen.set_policy())
detachment_events = st.one_of(
    gen.storage_failed(),
    gen.lease_expired(),
    gen.detach(),
    gen.keepalive_failed(),
    gen.health_observed(),
    gen.set_policy(),
)


# ---------------------------------------------------------------- checks shared by tests


def check_maintenance_arc(before: Any, after: Any, verdicts: list[Verdict]) -> None:
    """A maintenance state change is an arc of the SPEC table, and `applied` exactly then."""
    old, new = maintenance.state_name(before), maintenance.state_name(after)
    if old != new:
        assert (old, new) in SPEC_ARCS, f"{old} -> {new}"
        assert [v.verdict for v in verdicts if v.projection == "maintenance"] == ["applied"]


def check_broadcast_partition(state: BroadcastState) -> None:
    """Pending and the backends with an outcome partition the live targets; dead never answer."""
    live = {t.backend for t in state.targets if t.live}
    pending = set(broadcasts.pending(state))
    answered = set(state.outcomes)
    assert pending | answered == live
    assert not pending & answered
    view = broadcasts.view("x", state, None)
    assert view["sent_count"] == len(answered)
    assert view["complete"] is (not pending)
    assert set(view["skipped_dead"]) == {t.backend for t in state.targets} - live


def check_recovery_decision(
    state: RecoveryState | None, budget_window_ms: int, backoff_ms: int
) -> None:
    """A refusal's retry_after_ms is the rest of the window: within [1, budget_window_ms]. A retry's
    is retry_backoff_ms as SPEC §2.3 says (>= 1; it may exceed a smaller window)."""
    assert state is not None
    decision = state.decision
    assert decision.retry_after_ms >= 1
    if decision.kind == "retry":
        assert state.crashes_in_window == 1
        assert decision.retry_after_ms == backoff_ms
        assert decision.attempt == 1
    else:
        assert state.crashes_in_window >= 2
        assert decision.retry_after_ms <= budget_window_ms
        assert decision.reason == "backend_unavailable"


def gen_enter(subject: str) -> EnterMaintenance:
    return EnterMaintenance(subject=subject, actor="ops", at=gen.ts(0))


def snapshot(folder: Folder) -> dict[str, dict[str, Any]]:
    return {name: dict(table) for name, table in folder.states.items()}


def reference_apply(states: dict[str, dict[str, Any]], event: Event) -> list[Verdict]:
    """The fold without the folder's routing: each projection, in order, whose ``HANDLES`` has the
    event's type folds it through its module-level ``fold``, always with the policy in force."""
    subject = event.subject
    verdicts: list[Verdict] = []
    for projection in PROJECTIONS:
        if type(event) not in projection.HANDLES:
            continue
        in_force = policy.effective(states[policy.NAME], subject)
        table = states[projection.NAME]
        state, verdict = projection.fold(table.get(subject), event, in_force)
        if state is None:
            table.pop(subject, None)
        else:
            table[subject] = state
        verdicts.append(verdict)
    return verdicts


# ---------------------------------------------------------------- the generator itself


@SETTINGS
@given(gen.with_ids(gen.events()))
def test_eventgen_generates_valid_wire_events_with_at(event: Event) -> None:
    assert decode_line(encode_event_json(event)) == event
    assert event.at is not None
    assert event.at.tzinfo is UTC
    assert event.at.microsecond % 1000 == 0


# ---------------------------------------------------------------- stateful: live, stored, replay


class FoldMachine(RuleBasedStateMachine):
    """Random events, redeliveries and repeats through a `Folder`, checked against a simulated
    stored view (every state through msgpack at every step, via `step`) and a full replay."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Folder()
        self.reference: dict[str, dict[str, Any]] = {p.NAME: {} for p in PROJECTIONS}
        self.log: list[Event] = []
        self.verdicts: list[list[Verdict]] = []
        self.stored: dict[tuple[str, str], bytes] = {}

    def stored_get(self, projection: str, subject: str) -> Any | None:
        data = self.stored.get((projection, subject))
        return None if data is None else decode_state(projection, data)

    def apply(self, event: Event) -> list[Verdict]:
        subject = event.subject
        before = self.folder.get("maintenance", subject)
        in_force = policy_for(self.folder.get, subject)
        verdicts = self.folder.apply(event)
        stored_verdicts = []
        for change in step(self.stored_get, event):
            key = (change.projection, change.subject)
            if change.state is None:
                self.stored.pop(key, None)
            else:
                self.stored[key] = encode_state(change.state)
            stored_verdicts.append(change.verdict)
        assert stored_verdicts == verdicts
        assert reference_apply(self.reference, event) == verdicts
        assert self.reference == self.folder.states
        check_maintenance_arc(before, self.folder.get("maintenance", subject), verdicts)
        if isinstance(event, BackendCrashed):
            state = self.folder.get("recovery", subject)
            check_recovery_decision(state, in_force.budget_window_ms, in_force.retry_backoff_ms)
        self.log.append(event)
        self.verdicts.append(verdicts)
        return verdicts

    @rule(event=gen.events())
    def new_event(self, event: Event) -> None:
        self.apply(event)

    @rule(event=st.one_of(gen.maintenance_events(), broadcast_events))
    def operator_and_observed(self, event: Event) -> None:
        self.apply(event)

    @precondition(lambda self: bool(self.log))
    @rule(data=st.data())
    def redeliver_earlier_event(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.log) - 1))
        self.apply(self.log[index])

    @precondition(lambda self: bool(self.log))
    @rule()
    def repeat_last_event(self) -> None:
        event, first = self.log[-1], self.verdicts[-1]
        before = snapshot(self.folder)
        again = self.apply(event)
        if all(v.verdict != "applied" for v in first):
            assert again == first
            assert snapshot(self.folder) == before
        if not isinstance(event, COUNTING):
            assert all(v.verdict != "applied" for v in again)
            assert snapshot(self.folder) == before

    @invariant()
    def stored_view_equals_memory(self) -> None:
        stored: dict[str, dict[str, Any]] = {p.NAME: {} for p in PROJECTIONS}
        for (name, subject), data in self.stored.items():
            stored[name][subject] = decode_state(name, data)
        assert stored == self.folder.states
        assert digest(stored) == self.folder.digest()

    @invariant()
    def replay_equals_live(self) -> None:
        replay = Folder()
        verdicts = [replay.apply(event) for event in self.log]
        assert verdicts == self.verdicts
        assert replay.states == self.folder.states
        assert replay.digest() == self.folder.digest()

    @invariant()
    def broadcasts_partition_live_targets(self) -> None:
        for state in self.folder.states["broadcasts"].values():
            check_broadcast_partition(state)


TestFoldMachine = FoldMachine.TestCase
TestFoldMachine.settings = settings(
    SETTINGS, max_examples=max(1, EXAMPLES // 2), stateful_step_count=30
)


# ---------------------------------------------------------------- replay, positions, digest


@SETTINGS
@given(gen.event_logs())
def test_applying_full_log_twice_from_scratch_gives_identical_digest(log: list[Event]) -> None:
    first, second = Folder().apply_all(log), Folder().apply_all(log)
    assert first.states == second.states
    assert first.digest() == second.digest()


@SETTINGS
@given(gen.event_logs(max_size=30))
def test_state_as_of_position_equals_replay_of_prefix(log: list[Event]) -> None:
    live = Folder()
    as_of = [live.copy()]
    for event in log:
        live.apply(event)
        as_of.append(live.copy())
    for position, expected in enumerate(as_of):
        replayed = Folder().apply_all(log[:position])
        assert replayed == expected
        assert replayed.digest() == expected.digest()


@SETTINGS
@given(gen.event_logs(min_size=1))
def test_copy_is_independent_of_later_events(log: list[Event]) -> None:
    folder = Folder().apply_all(log[:-1])
    frozen, before = folder.copy(), folder.digest()
    folder.apply(log[-1])
    folder.apply(log[0])
    assert frozen.digest() == before


def test_digest_of_empty_folder_is_fixed() -> None:
    assert Folder().digest() == hashlib.sha256(b"").digest()
    assert digest({}) == Folder().digest()


def test_digest_distinguishes_projection_and_subject() -> None:
    state = Folder().apply_all([gen_enter("n1")]).states["maintenance"]["n1"]
    base = digest({"maintenance": {"n1": state}})
    assert digest({"maintenance2": {"n1": state}}) != base
    assert digest({"maintenance": {"n2": state}}) != base


def test_digest_ignores_order_broadcast_outcomes_arrived_in() -> None:
    issue = IssueBroadcast(
        subject="b",
        actor="ops",
        at=gen.ts(0),
        operation=Quiesce(reason="maintenance"),
        targets=[Target(backend=f"be{i}") for i in range(5)],
    )
    acks = [BroadcastAcked(subject="b", at=gen.ts(1), backend=f"be{i}") for i in range(5)]
    one = Folder().apply_all([issue, *acks])
    other = Folder().apply_all([issue, *reversed(acks)])
    assert one == other
    assert one.digest() == other.digest()


def test_digest_keeps_broadcast_target_order() -> None:
    def issued(*backends: str) -> Folder:
        return Folder().apply_all(
            [
                IssueBroadcast(
                    subject="b",
                    actor="ops",
                    at=gen.ts(0),
                    operation=Quiesce(reason="maintenance"),
                    targets=[Target(backend=b) for b in backends],
                )
            ]
        )

    assert issued("x", "y").digest() != issued("y", "x").digest()


@SETTINGS
@given(gen.event_logs())
def test_digest_is_canonical_whatever_the_insertion_order(log: list[Event]) -> None:
    folder = Folder().apply_all(log)
    reversed_states = {
        name: dict(reversed(list(folder.states[name].items()))) for name in reversed(BY_NAME)
    }
    assert digest(reversed_states) == folder.digest()


# ---------------------------------------------------------------- the stored codec

ROUND_TRIP: list[tuple[str, Any]] = [
    *(
        ("maintenance", MaintenanceState(name, ts(7), ts(9), "r"))  # type: ignore[arg-type]
        for name in MAINTENANCE_STATES[1:]
    ),
    ("detachment", DetachmentState(True, DetachmentReason("storage_error", "x"), ts(1), ts(2), 1)),
    (
        "detachment",
        DetachmentState(True, DetachmentReason("keepalive_failure", consecutive_failures=3), ts(1)),
    ),
    ("detachment", DetachmentState(keepalive_failures=2)),
    ("recovery", RecoveryState(ts(0), 1, Decision("retry", 250, attempt=1))),
    ("recovery", RecoveryState(ts(1), 3, Decision("refuse", 9, reason="backend_unavailable"))),
    (
        "membership",
        MembershipState(
            ("a", "b", "c"),
            ("c",),
            (),
            (MembershipDelta(ts(1), ("a", "b"), ()), MembershipDelta(ts(2), ("c",), ())),
        ),
    ),
    ("policy", PolicySettings(0, 2, None, 70)),
    *(
        (
            "broadcasts",
            BroadcastState(
                operation,
                (Target("a"), Target("b"), Target("c", live=False)),
                5000,
                ts(0),
                {
                    "a": BackendOutcome("failed", "unsupported_operation"),
                    "b": BackendOutcome("acked"),
                },
            ),
        )
        for operation in (Quiesce("maintenance"), ReleaseHandles(path_prefix="/p"))
    ),
]


@pytest.mark.parametrize(("projection", "state"), ROUND_TRIP)
def test_every_kind_of_state_round_trips_through_the_stored_codec(
    projection: str, state: Any
) -> None:
    """What the stored views keep (`encode_state`) decodes to the very same state."""
    assert decode_state(projection, encode_state(state)) == state
    assert {name for name, _ in ROUND_TRIP} == set(BY_NAME)


# ---------------------------------------------------------------- verdicts and state changes


@SETTINGS
@given(gen.event_logs(), gen.events())
def test_verdict_agrees_with_state_change(log: list[Event], event: Event) -> None:
    """rejected: nothing changes (same object); applied: the state changes; unchanged state is
    handed back as the very object read. Idempotent changes nothing, except the SPEC §2.1
    same-state refresh of maintenance fields."""
    folder = Folder().apply_all(log)
    for change in step(folder.get, event):
        old = folder.get(change.projection, change.subject)
        if change.verdict.verdict == "rejected":
            assert change.state is old
        elif change.verdict.verdict == "applied":
            assert change.state != old
        elif change.projection != "maintenance":
            assert change.state == old
        if change.state == old:
            assert change.state is old


@SETTINGS
@given(gen.event_logs(gen.maintenance_events(), max_size=60))
def test_every_maintenance_state_reached_by_valid_arc(log: list[Event]) -> None:
    folder = Folder()
    for event in log:
        before = folder.get("maintenance", event.subject)
        verdicts = folder.apply(event)
        check_maintenance_arc(before, folder.get("maintenance", event.subject), verdicts)


@SETTINGS
@given(gen.event_logs(broadcast_events, max_size=60))
def test_broadcast_pending_and_outcomes_partition_live_targets(log: list[Event]) -> None:
    folder = Folder()
    for event in log:
        folder.apply(event)
        for state in folder.states["broadcasts"].values():
            check_broadcast_partition(state)


@SETTINGS
@given(gen.event_logs(recovery_events, max_size=60))
def test_recovery_refuse_retry_after_ms_within_one_and_budget_window(log: list[Event]) -> None:
    folder = Folder()
    for event in log:
        in_force = policy_for(folder.get, event.subject)
        folder.apply(event)
        if isinstance(event, BackendCrashed):
            state = folder.get("recovery", event.subject)
            check_recovery_decision(state, in_force.budget_window_ms, in_force.retry_backoff_ms)


@SETTINGS
@given(gen.event_logs(detachment_events, max_size=60))
def test_detachment_stale_rejections_change_nothing(log: list[Event]) -> None:
    folder = Folder()
    for event in log:
        before = folder.get("detachment", event.subject)
        verdicts = folder.apply(event)
        stale = [v for v in verdicts if v.reason == "stale"]
        if stale:
            assert folder.get("detachment", event.subject) is before
            assert before is not None
            assert before.detached_at is not None
            assert event.at is not None
            assert event.at < before.detached_at
