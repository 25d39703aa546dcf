"""Membership fold unit tests.

Covers SPEC §2.4 (diff of each full peer set against the previous one: ``joined``, ``left``,
sorted ``peers``, the history of deltas, bounded at 100; an identical set is ``idempotent``),
SPEC §3 verdicts, and the SPEC §5 membership ``status --json`` object.

The Rust seed 003 (liminal-server membership) tests are here: ``delta_is_empty_by_default`` ->
`test_view_keys_and_last_delta`; ``first_poll_of_empty_table_yields_no_peers`` ->
`test_empty_first_observation_is_idempotent_no_entry`.
"""

from __future__ import annotations

from ledger.events import MembershipObserved
from projections import membership
from projections.base import DEFAULT_POLICY, Verdict
from projections.membership import MembershipDelta, MembershipState
from tests.eventgen import ts

APPLIED = Verdict("membership", "applied")
IDEMPOTENT = Verdict("membership", "idempotent")


def seen(ms: int, *peers: str) -> MembershipObserved:
    return MembershipObserved(subject="c1", at=ts(ms), peers=list(peers))


def fold(
    state: MembershipState | None, event: MembershipObserved
) -> tuple[MembershipState | None, Verdict]:
    return membership.fold(state, event, DEFAULT_POLICY)


def test_first_observation_all_peers_joined_sorted() -> None:
    state, verdict = fold(None, seen(1, "n3", "n1", "n2"))
    assert verdict == APPLIED
    assert state == MembershipState(
        ("n1", "n2", "n3"),
        ("n1", "n2", "n3"),
        (),
        (MembershipDelta(ts(1), ("n1", "n2", "n3"), ()),),
    )


def test_diff_gives_joined_and_left_sorted() -> None:
    state, _ = fold(None, seen(1, "a", "b", "c"))
    state, verdict = fold(state, seen(2, "e", "c", "d", "a"))
    assert verdict == APPLIED
    assert state is not None
    assert state.peers == ("a", "c", "d", "e")
    assert state.joined == ("d", "e")
    assert state.left == ("b",)


def test_joined_left_and_peers_sorted_with_many_names() -> None:
    names = [f"node-{i:02d}" for i in range(30)]
    state, _ = fold(None, seen(1, *reversed(names[:20])))
    state, _ = fold(state, seen(2, *reversed(names[10:])))
    assert state is not None
    assert state.peers == tuple(names[10:])
    assert state.joined == tuple(names[20:])
    assert state.left == tuple(names[:10])


def test_identical_set_is_idempotent_and_keeps_last_delta() -> None:
    state, _ = fold(None, seen(1, "a", "b"))
    state, _ = fold(state, seen(2, "b"))
    again, verdict = fold(state, seen(3, "b"))
    assert verdict == IDEMPOTENT
    assert again is state
    assert again is not None
    assert again.left == ("a",)


def test_identical_set_in_other_order_or_with_repeats_is_idempotent() -> None:
    state, _ = fold(None, seen(1, "a", "b"))
    again, verdict = fold(state, seen(2, "b", "a", "b"))
    assert verdict == IDEMPOTENT
    assert again is state


def test_repeated_peers_collapse() -> None:
    state, _ = fold(None, seen(1, "a", "a"))
    assert state is not None
    assert state.peers == ("a",)


def test_empty_first_observation_is_idempotent_no_entry() -> None:
    assert fold(None, seen(1)) == (None, IDEMPOTENT)


def test_everyone_leaving_keeps_entry_with_empty_peers() -> None:
    state, _ = fold(None, seen(1, "a"))
    state, verdict = fold(state, seen(2))
    assert verdict == APPLIED
    assert state is not None
    assert state.peers == ()
    assert state.left == ("a",)


def test_history_records_each_delta_with_at() -> None:
    state, _ = fold(None, seen(1, "a"))
    state, _ = fold(state, seen(2, "a"))
    state, _ = fold(state, seen(3, "b"))
    assert state is not None
    assert state.history == (
        MembershipDelta(ts(1), ("a",), ()),
        MembershipDelta(ts(3), ("b",), ("a",)),
    )


def test_history_is_bounded_to_last_100_deltas() -> None:
    state: MembershipState | None = None
    for i in range(150):
        state, _ = fold(state, seen(i, f"n{i}"))
    assert state is not None
    assert len(state.history) == membership.HISTORY_LIMIT == 100
    assert state.history[0].at == ts(50)
    assert state.history[-1].at == ts(149)


def test_view_keys_and_last_delta() -> None:
    assert membership.view("c1", None, None) == {"peers": [], "joined": [], "left": []}
    state, _ = fold(None, seen(1, "b", "a"))
    state, _ = fold(state, seen(2, "c", "a"))
    assert membership.view("c1", state, None) == {
        "peers": ["a", "c"],
        "joined": ["c"],
        "left": ["b"],
    }
