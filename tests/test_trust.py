"""Trust in the log (SPEC-server §8, issue 12 finding 3): `TrustKey` / `RevokeKey` events.

The rule: the first `TrustKey` may be unsigned; from then on every operator event, these two
included, must be signed by a key trusted at its position (by the trust events before it). A
revoked key signs nothing after its revocation; what it signed before stays valid; a new key for
a trusted name rotates it. Enforced at append (exit 2, nothing stored), judged by `verify` and
`replay` from the log alone (an event forced in behind the ledger's back is named at its
position). A property test checks all of it against an independent model over random histories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.backend import TRUST_HISTORY_KEY, AppendRequest, TxnOps
from ledger.codec import decode_line
from ledger.errors import InvalidEventError, SignatureError, StorageError
from ledger.events import (
    Detach,
    EnterMaintenance,
    Event,
    KeepAliveFailed,
    RevokeKey,
    TrustKey,
)
from ledger.ledger import Ledger
from ledger.notes import Signer
from ledger.signing import OperatorKey
from ledger.trust import check_append, rebuild_record
from projections.api import Views
from replay.audit import run_audit
from replay.audit_record import Audit
from replay.integrity import verify
from replay.parts import Part
from replay.rebuild import rebuild

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)

KEYS: dict[tuple[str, int], OperatorKey] = {
    (name, version): OperatorKey(Signer.generate(name))
    for name in ("alice", "bob", "carol")
    for version in (0, 1)
}
"""Two keys per name: trusting the other one rotates the name."""


def vkey(name: str, version: int = 0) -> str:
    return KEYS[name, version].signer.verifier.encode()


def signed(event: Event, name: str, version: int = 0) -> Event:
    return KEYS[name, version].sign(msgspec.structs.replace(event, actor=name))


def op(n: int, actor: str = "alice") -> Event:
    return Detach(subject=f"runner-{n}", actor=actor, id=f"op-{n}", at=T0)


def force(log: Ledger, events: list[Event]) -> list[int]:
    """Write through the backend directly, bypassing the facade's trust check."""
    now = datetime.now(UTC)
    ready = [
        msgspec.structs.replace(e, id=e.id or f"forced-{now.timestamp()}-{i}", at=e.at or now)
        for i, e in enumerate(events)
    ]
    request = AppendRequest(ready, now)
    log.backend.write([request])
    assert request.error is None
    assert request.result is not None
    return [r.position for r in request.result]


def signature_flags(log: Ledger) -> list[tuple[int, str | None]]:
    report = run_audit(log)
    return [(r.position, r.reason) for r in report.rejected if r.projection == "signatures"]


@pytest.fixture
def log(ledger_target: str) -> Iterator[Ledger]:
    """A ledger with one unsigned event, then alice trusted by the first (unsigned) TrustKey."""
    with Ledger.open(ledger_target) as ledger:
        ledger.append(op(0, actor="carol"))  # 1: no trust yet: unsigned is fine
        trusted = ledger.trust(vkey("alice"), actor="root")  # 2
        assert trusted.required_since == 2
        yield ledger


# ---------------------------------------------------------------------------- the events


def test_trust_events_are_validated_on_the_wire() -> None:
    good = {"type": "TrustKey", "subject": "alice", "actor": "root", "key": vkey("alice")}
    event = decode_line(json.dumps(good))
    assert isinstance(event, TrustKey)
    for change, where in [
        ({"subject": "bob"}, "`key` is named 'alice'"),
        ({"key": "not a key"}, "not a public key in Go note verifier format"),
        ({"key": KEYS["alice", 0].signer.encode()}, "not a public key"),  # a private key
    ]:
        with pytest.raises(InvalidEventError) as info:
            decode_line(json.dumps(good | change), 4)
        assert info.value.line == 4
        assert info.value.field == "key"
        assert where in str(info.value)
    with pytest.raises(InvalidEventError, match="actor"):
        decode_line(json.dumps({"type": "RevokeKey", "subject": "alice"}))
    revoke = decode_line(json.dumps({"type": "RevokeKey", "subject": "a", "actor": "b"}))
    assert isinstance(revoke, RevokeKey)


# ---------------------------------------------------------------------------- at append


def test_first_trust_key_may_be_unsigned_then_operator_events_must_be_signed(log: Ledger) -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        log.append(op(1))
    assert log.append(signed(op(1), "alice")).position == 3
    assert log.append(KeepAliveFailed(subject="r1")).position == 4  # loop events: no signature
    assert verify(log).ok


@pytest.mark.parametrize("signer", [None, ("bob", 0), ("alice", 1)])
def test_unsigned_or_wrongly_signed_trust_key_after_the_first_is_refused(
    log: Ledger, signer: tuple[str, int] | None
) -> None:
    size, root = log.size(), log.root()
    event: Event = TrustKey(subject="bob", actor="bob", key=vkey("bob"))
    if signer is not None:  # bob signing his own, or alice's other (untrusted) key
        event = signed(event, *signer)
    with pytest.raises(SignatureError) as info:
        log.append_batch([KeepAliveFailed(subject="r"), event])
    assert info.value.line == 2
    assert info.value.field == "signature"
    assert log.size() == size
    assert log.root() == root
    assert [k.name for k in log.trusted_keys().keys] == ["alice"]


def test_a_trust_key_signed_by_a_trusted_key_is_accepted(log: Ledger) -> None:
    log.trust(vkey("bob"), signer=KEYS["alice", 0])  # 3
    assert [k.name for k in log.trusted_keys().keys] == ["alice", "bob"]
    assert log.append(signed(op(1), "bob")).position == 4
    assert verify(log).ok
    assert signature_flags(log) == []


def test_revoked_key_signs_nothing_after_and_what_it_signed_before_stays_valid(
    log: Ledger,
) -> None:
    log.trust(vkey("bob"), signer=KEYS["alice", 0])  # 3
    log.append(signed(op(1), "bob"))  # 4
    log.untrust("bob", signer=KEYS["alice", 0], reason="left")  # 5
    with pytest.raises(SignatureError, match="unknown_key"):
        log.append(signed(op(2), "bob"))
    assert log.size() == 5
    result = verify(log)
    assert result.ok, result.detail
    assert signature_flags(log) == []
    assert log.trusted_keys(4).keys[1].name == "bob"
    now = log.trusted_keys()
    assert [k.name for k in now.keys] == ["alice"]
    assert now.revoked == (("bob", 5),)


def test_rotation_replaces_the_old_key(log: Ledger) -> None:
    log.trust(vkey("alice", 1), signer=KEYS["alice", 0])  # 3: alice rotates her key
    with pytest.raises(SignatureError, match="unknown_key"):
        log.append(signed(op(1), "alice", 0))
    assert log.append(signed(op(1), "alice", 1)).position == 4
    assert [k.key for k in log.trusted_keys().keys] == [vkey("alice", 1)]
    assert [k.key for k in log.trusted_keys(2).keys] == [vkey("alice", 0)]
    assert verify(log).ok


def test_revoking_an_unknown_or_the_last_key_is_refused(log: Ledger) -> None:
    with pytest.raises(SignatureError, match="no trusted key is named 'bob'"):
        log.untrust("bob", signer=KEYS["alice", 0])
    with pytest.raises(SignatureError, match="last trusted key"):
        log.untrust("alice", signer=KEYS["alice", 0])
    assert log.size() == 2


def test_a_repeated_trust_event_is_a_duplicate_not_a_refusal(log: Ledger) -> None:
    first = log.get(2).event
    again = log.append(first)  # the unsigned first TrustKey, sent again with its id
    assert again.duplicate
    assert again.position == 2
    assert log.size() == 2


def test_the_trust_record_moves_with_the_batch_that_changes_it(log: Ledger) -> None:
    """Within one batch, an event signed by a key trusted earlier in the same batch passes;
    a batch refused whole changes no trust."""
    batch = [
        signed(TrustKey(subject="bob", actor="alice", key=vkey("bob")), "alice"),
        signed(op(1), "bob"),
    ]
    assert [r.position for r in log.append_batch(batch)] == [3, 4]
    refused = [
        signed(TrustKey(subject="carol", actor="alice", key=vkey("carol")), "alice"),
        op(2),  # unsigned: the whole batch is refused
    ]
    with pytest.raises(SignatureError):
        log.append_batch(refused)
    assert [k.name for k in log.trusted_keys().keys] == ["alice", "bob"]


def test_only_one_of_two_concurrent_first_trust_keys_is_stored(ledger_target: str) -> None:
    """Appenders racing to be the unsigned first TrustKey (in one group commit or not): the
    trust record is read and written under the write lock, so exactly one wins."""
    with Ledger.open(ledger_target) as ledger:
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def first(name: str) -> None:
            barrier.wait()
            try:
                ledger.append(TrustKey(subject=name, actor="root", key=vkey(name)))
                outcomes.append("stored")
            except SignatureError:
                outcomes.append("refused")

        threads = [threading.Thread(target=first, args=(n,)) for n in ("alice", "bob", "carol")]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["refused", "refused", "stored"]
        assert ledger.size() == 1
        assert len(ledger.trusted_keys().keys) == 1
        assert verify(ledger).ok


def test_a_trust_change_is_seen_by_the_next_request_of_the_same_transaction(
    ledger_target: str,
) -> None:
    """Group commit writes several requests in one transaction: the second must see the trust
    record the first changed (the transaction's settings are read once, then kept current)."""

    def guard(ops: TxnOps, events: Any) -> None:
        record = check_append(ops, events, events)
        if record is not None:
            record()

    with Ledger.open(ledger_target) as ledger:
        now = datetime.now(UTC)
        requests = [
            AppendRequest(
                [TrustKey(subject=n, actor="root", key=vkey(n), id=f"t-{n}", at=now)], now, guard
            )
            for n in ("alice", "bob")
        ]
        ledger.backend.write(requests)
        assert requests[0].error is None
        assert isinstance(requests[1].error, SignatureError)
        assert ledger.size() == 1
        assert [k.name for k in ledger.trusted_keys().keys] == ["alice"]


def test_a_garbled_trust_record_is_a_clear_error_and_rebuild_repairs_it(log: Ledger) -> None:
    log.backend.put_meta(TRUST_HISTORY_KEY, b"\xff garbage")
    with pytest.raises(StorageError, match="trust rebuild"):
        log.append(signed(op(1), "alice"))
    with pytest.raises(StorageError, match="trust record"):
        log.trusted_keys()
    assert [k.name for k in rebuild_record(log).keys] == ["alice"]
    assert log.append(signed(op(1), "alice")).position == 3


class _NoScan:
    """A `TxnOps` that fails if anything reads the stored log."""

    def __init__(self, ops: TxnOps) -> None:
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        raise AssertionError("the trust check read the log")


def test_the_append_check_reads_the_trust_record_not_the_log(log: Ledger) -> None:
    log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(50)])
    seen: list[bytes | None] = []

    def spy(ops: TxnOps, events: Any) -> None:
        record = check_append(_NoScan(ops), events, events)
        seen.append(ops.get_meta(TRUST_HISTORY_KEY))
        assert record is not None
        record()

    event = signed(TrustKey(subject="bob", actor="alice", key=vkey("bob")), "alice")
    log.append(event, precondition=spy)
    assert seen[0] is not None
    assert [k.name for k in log.trusted_keys().keys] == ["alice", "bob"]


# ---------------------------------------------------------------------------- forced in


def test_a_trust_key_forced_into_the_log_is_named_by_verify_and_replay(log: Ledger) -> None:
    log.append(signed(op(1), "alice"))  # 3
    (forged,) = force(log, [TrustKey(subject="mallory", actor="mallory", key=vkey("bob"))])
    assert forged == 4  # bad_key: bob's key under another name; and unsigned
    (unsigned,) = force(log, [TrustKey(subject="bob", actor="bob", key=vkey("bob"))])
    # bob's events are not trusted: the forged TrustKey trusted no one
    (by_bob,) = force(log, [signed(op(2), "bob")])
    assert (unsigned, by_bob) == (5, 6)
    result = verify(log)
    assert not result.ok
    assert result.first_bad_position == 4
    assert "TrustKey at position 4" in result.detail
    assert signature_flags(log) == [(4, "unsigned"), (5, "unsigned"), (6, "unknown_key")]


def test_verify_judges_by_the_log_and_flags_a_record_out_of_step(log: Ledger) -> None:
    """The derived record is not what verify judges events by (replay flags nothing once it is
    wiped), but appends are checked against it: verify says when it differs from the log, and
    `rebuild_record` rewrites it from the log."""
    log.trust(vkey("bob"), signer=KEYS["alice", 0])  # 3
    log.append(signed(op(1), "bob"))
    log.backend.put_meta(TRUST_HISTORY_KEY, b"")  # behind the ledger's back
    assert signature_flags(log) == []
    result = verify(log)
    assert not result.ok
    assert result.first_bad_position is None
    assert "trust record" in result.detail
    assert "position 2" in result.detail
    assert [k.name for k in rebuild_record(log).keys] == ["alice", "bob"]
    assert verify(log).ok
    with pytest.raises(SignatureError):  # enforced again
        log.append(op(2))


def test_replay_in_parts_flags_what_the_whole_replay_flags(log: Ledger) -> None:
    """A long replay folds half the subjects in each of two processes (`Part`): both follow
    every trust event, whatever its subject, and each flags its own subjects' events."""
    for n, name in enumerate(("bob", "carol")):
        log.trust(vkey(name), signer=KEYS["alice", 0])
        log.append_batch([signed(op(10 * n + i, actor=name), name) for i in range(6)])
    log.untrust("bob", signer=KEYS["carol", 0])
    force(log, [signed(op(100 + i, actor="bob"), "bob") for i in range(6)])  # after revocation
    force(log, [op(200 + i) for i in range(6)])  # unsigned
    whole = Audit()
    rebuild(log, audit=whole)
    halves = [Audit(), Audit()]
    for number, audit in enumerate(halves):
        rebuild(log, audit=audit, part=Part(number, 2))
    flagged = sorted(
        (r.position, r.reason) for a in halves for r in a.rejected if r.projection == "signatures"
    )
    assert flagged == [
        (r.position, r.reason) for r in whole.rejected if r.projection == "signatures"
    ]
    assert len(flagged) == 12
    assert all(len([r for r in a.rejected if r.projection == "signatures"]) for a in halves)


def test_projections_tolerate_trust_events(log: Ledger) -> None:
    log.trust(vkey("bob"), signer=KEYS["alice", 0])
    log.append(signed(EnterMaintenance(subject="node-1", actor="alice", id="e", at=T0), "alice"))
    views = Views(log)
    assert views.history("bob")[0]["verdicts"] == []
    assert views.history("bob")[0]["type"] == "TrustKey"
    assert "node-1" in views.status("maintenance")["maintenance"]
    report = run_audit(log)
    assert report.diverged == []
    assert report.rejected == []


# ---------------------------------------------------------------------------- the property


@dataclass
class Model:
    """The rule of SPEC-server §8, written independently of `ledger.trust`."""

    trusted: dict[str, int] = field(default_factory=dict)  # name -> key version
    established: bool = False

    def good(self, event: Event, signer: tuple[str, int] | None) -> bool:
        if not self.established:
            if isinstance(event, TrustKey):
                return signer is None or signer == (event.subject, _version(event))
            return True
        return signer is not None and self.trusted.get(signer[0]) == signer[1]

    def refused_anyway(self, event: Event) -> bool:
        """Well signed, but refused at append: revoking an unknown or the last key."""
        if not (self.established and isinstance(event, RevokeKey)):
            return False
        return event.subject not in self.trusted or len(self.trusted) == 1

    def apply(self, event: Event) -> None:
        if isinstance(event, TrustKey):
            self.trusted[event.subject] = _version(event)
            self.established = True
        elif isinstance(event, RevokeKey) and self.established:
            self.trusted.pop(event.subject, None)


def _version(event: TrustKey) -> int:
    return next(v for (n, v), k in KEYS.items() if k.signer.verifier.encode() == event.key)


NAMES = ("alice", "bob", "carol")
Action = tuple[str, str, int, tuple[str, int] | None]


@st.composite
def histories(draw: st.DrawFn) -> list[Action]:
    """Random histories of trust changes and operator events. Signers are drawn mostly from the
    keys trusted at that point (as the model sees it), else unsigned or any key: so that
    revocations, rotations and keys used after their revocation all come up often."""
    model = Model()
    actions: list[Action] = []
    for number in range(draw(st.integers(1, 16))):
        kind = draw(st.sampled_from(["trust", "trust", "revoke", "op", "op", "loop"]))
        name = draw(st.sampled_from(NAMES))
        version = draw(st.integers(0, 1))
        trusted = sorted(model.trusted.items())
        choice = draw(st.integers(0, 9))
        signer: tuple[str, int] | None
        if choice < 6 and trusted:
            signer = draw(st.sampled_from(trusted))
        elif choice < 8:
            signer = None
        else:
            signer = (draw(st.sampled_from(NAMES)), draw(st.integers(0, 1)))
        actions.append((kind, name, version, signer))
        event = _event(number, kind, name, version, signer)
        if kind != "loop" and model.good(event, signer) and not model.refused_anyway(event):
            model.apply(event)
    return actions


ACTIONS = histories()


def _event(number: int, kind: str, name: str, version: int, signer: Any) -> Event:
    base: Event
    if kind == "trust":
        base = TrustKey(subject=name, actor="root", key=vkey(name, version))
    elif kind == "revoke":
        base = RevokeKey(subject=name, actor="root")
    elif kind == "op":
        base = op(number, actor="root")
    else:
        return KeepAliveFailed(subject=f"r{number}", id=f"loop-{number}")
    base = msgspec.structs.replace(base, id=f"e-{number}", at=T0)
    return base if signer is None else signed(base, *signer)


@given(actions=ACTIONS)
def test_verify_accepts_exactly_the_events_signed_by_a_key_trusted_at_their_position(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[str, str, int, Any]]
) -> None:
    """Forced into the log as they come: `replay` flags exactly the operator events the model
    says are not signed by a key trusted at their position, and `verify` fails at the first."""
    model = Model()
    bad: list[int] = []
    events = []
    for number, (kind, name, version, signer) in enumerate(actions, start=1):
        event = _event(number, kind, name, version, signer)
        events.append(event)
        if kind != "loop" and not model.good(event, signer):
            bad.append(number)
        elif kind != "loop":
            model.apply(event)
    with Ledger.open(tmp_path_factory.mktemp("prop") / "l.lmdb") as ledger:
        assert force(ledger, events) == list(range(1, len(events) + 1))
        assert [p for p, _ in signature_flags(ledger)] == bad
        rebuild_record(ledger)  # forced in: the record beside the log did not follow
        result = verify(ledger)
        assert result.ok == (not bad), result.detail
        assert result.first_bad_position == (bad[0] if bad else None)


@given(actions=ACTIONS)
def test_append_accepts_exactly_what_the_rule_allows(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[str, str, int, Any]]
) -> None:
    """Through the facade: each event is stored iff the model allows it (else refused, nothing
    stored), and the trust set at every position is the model's."""
    model = Model()
    expected_sets: dict[int, dict[str, int]] = {}
    with Ledger.open(tmp_path_factory.mktemp("prop") / "l.lmdb") as ledger:
        for number, (kind, name, version, signer) in enumerate(actions, start=1):
            event = _event(number, kind, name, version, signer)
            size = ledger.size()
            allowed = kind == "loop" or (
                model.good(event, signer) and not model.refused_anyway(event)
            )
            if allowed:
                assert ledger.append(event).position == size + 1
                if kind != "loop":
                    model.apply(event)
                expected_sets[size + 1] = dict(model.trusted)
            else:
                with pytest.raises(SignatureError):
                    ledger.append(event)
                assert ledger.size() == size
        result = verify(ledger)
        assert result.ok, result.detail
        for position, trusted in expected_sets.items():
            found = ledger.trusted_keys(position)
            assert {k.name: k.key for k in found.keys} == {
                n: vkey(n, v) for n, v in trusted.items()
            }


# ---------------------------------------------------------------------------- the CLI


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_trust_add_remove_list_as_of(tmp_path: Path) -> None:
    env = dict(os.environ, ADMINCHAIN_LEDGER=str(tmp_path / "l.lmdb"), ADMINCHAIN_ACTOR="root")
    for name in ("alice", "bob", "mallory"):
        assert cli("keygen", name, cwd=tmp_path, env=env).returncode == 0
    assert cli("trust", "add", "alice.pub", cwd=tmp_path, env=env).returncode == 0  # 1
    size_before = cli("log", "--json", cwd=tmp_path, env=env).stdout.count("\n")
    for refused in (
        ["trust", "add", "mallory.pub"],
        ["trust", "add", "mallory.pub", "--sign-key", "mallory.key"],
    ):
        proc = cli(*refused, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: line 1, field `signature`: ")
    assert cli("log", "--json", cwd=tmp_path, env=env).stdout.count("\n") == size_before
    added = cli("trust", "add", "bob.pub", "--sign-key", "alice.key", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr  # 2
    removed = cli(
        "trust", "remove", "alice", "--sign-key", "bob.key", "--reason", "rotated out",
        "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr  # 3
    assert json.loads(removed.stdout)["revoked"] == [{"name": "alice", "position": 3}]
    at_2 = json.loads(cli("trust", "list", "--as-of", "2", "--json", cwd=tmp_path, env=env).stdout)
    assert [k["name"] for k in at_2["keys"]] == ["alice", "bob"]
    assert at_2["required_since"] == 1
    now = json.loads(cli("trust", "list", "--json", cwd=tmp_path, env=env).stdout)
    assert [(k["name"], k["since"]) for k in now["keys"]] == [("bob", 2)]
    at_0 = json.loads(cli("trust", "list", "--as-of", "0", "--json", cwd=tmp_path, env=env).stdout)
    assert at_0["keys"] == []
    assert at_0["required_since"] is None
    future = cli("trust", "list", "--as-of", "2999-01-01T00:00:00Z", cwd=tmp_path, env=env)
    assert "bob+" in future.stdout
    assert "revoked: alice (at 3)" in future.stdout
    assert cli("verify", cwd=tmp_path, env=env).returncode == 0
    assert cli("replay", cwd=tmp_path, env=env).returncode == 0
    rebuilt = cli("trust", "rebuild", "--json", cwd=tmp_path, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout) == now
    history = json.loads(cli("history", "alice", "--json", cwd=tmp_path, env=env).stdout)
    assert [h["type"] for h in history] == ["TrustKey", "RevokeKey"]
