"""One place per rule (issue 11): the rules written once are the ones the rest of the code uses.

Each test pins a rule to its single source and checks that what was derived from it still says
what the contract says (docs/spec.md).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.codec import leaf_bytes, leaf_hashes
from ledger.events import (
    MAINTENANCE_STATES,
    BackendCrashed,
    EnterMaintenance,
    HealthObserved,
    KeepAliveFailed,
    SetPolicy,
)
from ledger.lmdb import text_key
from ledger.lmdb_backend import subject_key
from projections import policy
from projections.api import KINDS as API_KINDS
from projections.state import BY_NAME, KINDS, SHARED_KEYS, shared, touched
from replay.parts import Part


@given(st.lists(st.tuples(st.integers(1, 2**63), st.binary(max_size=64)), max_size=8))
def test_leaf_hashes_is_the_rfc6962_hash_of_the_leaf(entries: list[tuple[int, bytes]]) -> None:
    """SPEC §4.2: the leaf is position (8 bytes) || stored bytes, hashed with the 0x00 prefix."""
    expected = [merkle.leaf_hash(leaf_bytes(p, s)) for p, s in entries]
    assert leaf_hashes(entries) == expected
    assert all(
        h == hashlib.sha256(b"\x00" + p.to_bytes(8, "big") + s).digest()
        for h, (p, s) in zip(expected, entries, strict=True)
    )


def test_maintenance_states_are_the_documented_names_in_order() -> None:
    """SPEC §2.1's state list (docs/spec.md) is what `MaintenanceStateName` declares."""
    spec = (Path(__file__).parents[1] / "docs" / "spec.md").read_text(encoding="utf-8")
    listed = spec[spec.index("### 2.1") :].split("States:", 1)[1].split(".\n", 1)[0]
    assert tuple(re.findall(r"`(\w+)", listed)) == MAINTENANCE_STATES
    assert len(MAINTENANCE_STATES) == len(set(MAINTENANCE_STATES)) > 1


def test_status_kinds_are_every_projection_but_policy_in_spec_order() -> None:
    assert KINDS == ("maintenance", "detachment", "recovery", "membership", "broadcasts")
    assert API_KINDS is KINDS
    assert set(BY_NAME) == {*KINDS, policy.NAME}


def test_the_states_every_subject_reads_are_the_policy_for_all() -> None:
    assert frozenset({(policy.NAME, policy.ALL)}) == SHARED_KEYS
    for subject in ("node-7", policy.ALL):
        for event in (
            KeepAliveFailed(subject=subject),
            HealthObserved(subject=subject, healthy=True),
        ):
            assert set(touched(event)) >= SHARED_KEYS
    assert touched(EnterMaintenance(subject="n", actor="a")) == [("maintenance", "n")]


def test_only_a_setpolicy_for_all_is_shared_between_parts() -> None:
    assert shared(SetPolicy(subject=policy.ALL, actor="a", budget_window_ms=5))
    assert not shared(SetPolicy(subject="node-7", actor="a", budget_window_ms=5))
    assert not shared(EnterMaintenance(subject=policy.ALL, actor="a"))
    assert not shared(BackendCrashed(subject=policy.ALL))


def test_a_part_folds_shared_events_everywhere_and_counts_them_once() -> None:
    event = SetPolicy(subject=policy.ALL, actor="a", retry_backoff_ms=5)
    answers = [Part(n, 3).keep(event) for n in range(3)]
    assert answers.count(True) == 1
    assert answers.count(None) == 2
    other = EnterMaintenance(subject=policy.ALL, actor="a")
    assert sorted(Part(n, 3).keep(other) is True for n in range(3)) == [False, False, True]
    assert all(Part(n, 3).keep(other) in (True, False) for n in range(3))


def test_lmdb_text_keys_keep_their_stored_form() -> None:
    """Both LMDB key forms are on disk: the one scheme must give the very same bytes."""
    assert subject_key("node-7") == b"node-7"
    long = "x" * 65
    assert subject_key(long) == b"\xff" + hashlib.sha256(long.encode()).digest()
    assert text_key("x" * 400, 400) == b"x" * 400
    assert text_key("x" * 401, 400) == b"\xff" + hashlib.sha256(b"x" * 401).digest()


def test_stored_events_are_decoded_in_one_place() -> None:
    """Replay, verify, repair and the views' catch-up decode the log through one function, which
    names the first damaged position (SPEC §4.2: stored bytes are what the leaves hash)."""
    from ledger.codec import decode_chunk, encode_record  # noqa: PLC0415
    from ledger.errors import StorageError  # noqa: PLC0415
    from projections import views  # noqa: PLC0415
    from replay import derived, integrity, rebuild  # noqa: PLC0415

    for module in (views, rebuild, integrity, derived):
        assert vars(module)["decode_chunk"] is decode_chunk, module.__name__
    event = KeepAliveFailed(subject="r1")
    stored = encode_record(event, datetime(2026, 1, 1, tzinfo=UTC))
    assert decode_chunk([(1, stored)]) == [event]
    with pytest.raises(StorageError, match=r"^position 2: stored event cannot be decoded"):
        decode_chunk([(1, stored), (2, b"\xc1"), (3, b"")])
