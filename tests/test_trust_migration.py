"""Ledgers from before trust moved into the log (issue 12): they still verify, and migrate.

`tests/fixtures/legacy_trust` was made with the code before this change (its README says how):
six events, alice and bob trusted by the metadata setting of that version, two checkpoints
signed by `auditor`, an inclusion and a consistency proof. Its checkpoints and proofs still
verify; the first open by this version moves the policy into the log (a `TrustKey` per key, and
says so), after which the log's own trust decides, as for any ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.errors import SignatureError
from ledger.events import Detach, RevokeKey, TrustKey
from ledger.ledger import TRUST_KEY, Ledger
from ledger.notes import Signer
from ledger.signing import OperatorKey, TrustPolicy
from ledger.trust import MIGRATED_KEY, MIGRATION_KEY_NAME, migrate_legacy_policy
from replay.integrity import verify
from replay.prove import verify_proof_file
from tests.conftest import drop_pg_schema, fresh_pg_url

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_trust"
OLD_ROOT_6 = "13b12dbed49ed8c20deac01ee2b73f0c9da083ec69828da9a9978a3bf39a8da8"


def key(name: str) -> str:
    return (FIXTURE / name).read_text(encoding="utf-8").strip()


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A copy of the fixture ledger (opening it migrates it: never open the original)."""
    target = tmp_path / "legacy"
    shutil.copytree(FIXTURE / "ledger", target)
    return target


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ADMINCHAIN_ACTOR="root")
    env.pop("ADMINCHAIN_CHECKPOINT_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_proofs_made_before_the_change_still_verify_offline() -> None:
    pub = key("auditor.pub")
    inclusion = verify_proof_file((FIXTURE / "inclusion-2.proof").read_bytes(), pub)
    assert inclusion.inclusion is not None
    assert (inclusion.inclusion.position, inclusion.inclusion.size) == (2, 6)
    consistency = verify_proof_file((FIXTURE / "consistency-4-6.proof").read_bytes(), pub)
    assert consistency.consistency is not None
    assert consistency.consistency.new.root.hex() == OLD_ROOT_6


def test_the_legacy_ledger_verifies_and_migrates_on_first_open(legacy: Path) -> None:
    with Ledger.open(legacy) as log:
        assert len(log.notices) == 1
        notice = log.notices[0]
        assert "trust moved into the log" in notice
        assert "alice, bob" in notice
        assert "positions 7-10" in notice
        assert "the 3 operator event(s) it covered (positions 2-6)" in notice
        assert "all signed by its keys" in notice
        assert log.size() == 10
        assert log.root(6).hex() == OLD_ROOT_6  # the old log is a prefix, untouched
        events = [log.get(p).event for p in range(7, 11)]
        kinds: list[type] = [TrustKey, TrustKey, TrustKey, RevokeKey]
        assert [type(e) for e in events] == kinds
        assert [e.subject for e in events] == [
            MIGRATION_KEY_NAME,
            "alice",
            "bob",
            MIGRATION_KEY_NAME,
        ]
        assert events[0].signature is None  # the first may be unsigned
        assert all(e.signature is not None for e in events[1:])
        result = verify(log, verifiers=None)
        assert result.ok, result.detail
        assert result.checkpoints_checked == 2
        trusted = log.trusted_keys()
        assert [(k.name, k.key) for k in trusted.keys] == [
            ("alice", key("alice.pub")),
            ("bob", key("bob.pub")),
        ]
        assert trusted.required_since == 7
        assert log.backend.get_meta(TRUST_KEY) == b""
        assert TrustPolicy.decode(log.backend.get_meta(MIGRATED_KEY)) == TrustPolicy(
            2, (key("alice.pub"), key("bob.pub"))
        )
        # from here on the log's trust decides
        alice = OperatorKey(Signer.parse(key("alice.key")))
        assert log.append(alice.sign(Detach(subject="r9", actor="alice"))).position == 11
        with pytest.raises(SignatureError, match="unsigned"):
            log.append(Detach(subject="r9", actor="alice"))
        with pytest.raises(SignatureError, match="unsigned"):  # no second "first" TrustKey
            log.append(TrustKey(subject="x", actor="x", key=Signer.generate("x").verifier.encode()))
    with Ledger.open(legacy) as again:  # once only
        assert again.notices == []
        assert again.size() == 11


def test_cli_verify_on_the_legacy_ledger_says_it_migrated(legacy: Path, tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "auditor.pub", tmp_path / "auditor.pub")
    first = cli("verify", "--pub", "auditor.pub", "--ledger", str(legacy), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("note: trust moved into the log")
    assert "10 events, 2 checkpoint(s) verified" in first.stdout
    second = cli("verify", "--pub", "auditor.pub", "--json", "--ledger", str(legacy), cwd=tmp_path)
    assert second.returncode == 0
    assert second.stderr == ""
    assert json.loads(second.stdout)["ok"] is True
    listed = json.loads(
        cli("trust", "list", "--json", "--ledger", str(legacy), cwd=tmp_path).stdout
    )
    assert [k["name"] for k in listed["keys"]] == ["alice", "bob"]
    before = json.loads(
        cli("trust", "list", "--as-of", "6", "--json", "--ledger", str(legacy), cwd=tmp_path).stdout
    )
    assert before["keys"] == []  # the log's trust starts with the migration
    for proof in ("inclusion-2.proof", "consistency-4-6.proof"):
        checked = cli(
            "prove", "--verify", str(FIXTURE / proof), "--pub", "auditor.pub", cwd=tmp_path
        )
        assert checked.returncode == 0, checked.stderr
    assert cli("replay", "--ledger", str(legacy), cwd=tmp_path).returncode == 0


def test_the_migrated_legacy_ledger_copies_to_postgresql(legacy: Path) -> None:
    url = fresh_pg_url()
    try:
        with Ledger.open(legacy) as source, Ledger.open(url) as copy:
            assert copy.copy_from(source) == 10
            assert copy.notices == []
            assert verify(copy).ok
            assert [k.name for k in copy.trusted_keys().keys] == ["alice", "bob"]
            bob = OperatorKey(Signer.parse(key("bob.key")))
            assert copy.append(bob.sign(Detach(subject="r1", actor="bob"))).position == 11
    finally:
        drop_pg_schema(url)


@pytest.mark.parametrize("count", [1, 3])
def test_a_legacy_policy_migrates_on_every_backend(ledger_target: str, count: int) -> None:
    keys = [OperatorKey(Signer.generate(f"op{i}")) for i in range(count)]
    policy = TrustPolicy(2, tuple(k.signer.verifier.encode() for k in keys))
    with Ledger.open(ledger_target) as log:
        log.append(Detach(subject="r0", actor="op0"))
        log.backend.put_meta(TRUST_KEY, policy.encode())  # as an earlier version kept it
    with Ledger.open(ledger_target) as log:
        assert len(log.notices) == 1
        added = 1 if count == 1 else count + 2  # with several: the one-time key, then revoked
        assert log.size() == 1 + added
        assert [k.name for k in log.trusted_keys().keys] == [f"op{i}" for i in range(count)]
        result = verify(log)
        assert result.ok, result.detail
        for operator in keys:
            event = operator.sign(Detach(subject="r1", actor=operator.signer.name))
            assert not log.append(event).duplicate
        assert migrate_legacy_policy(log) is None  # done: nothing more to do


def test_the_migration_names_events_that_broke_the_legacy_policy(lmdb_target: str) -> None:
    """The last check of the legacy era: its operator events against its keys, said once."""
    alice = OperatorKey(Signer.generate("alice"))
    policy = TrustPolicy(2, (alice.signer.verifier.encode(),))
    with Ledger.open(lmdb_target) as log:
        log.append(Detach(subject="r0", actor="bob"))  # 1: before the policy
        log.append(alice.sign(Detach(subject="r1", actor="alice")))  # 2
        log.append(Detach(subject="r2", actor="mallory"))  # 3: unsigned (forced, say)
        log.backend.put_meta(TRUST_KEY, policy.encode())
    with Ledger.open(lmdb_target) as log:
        (notice,) = log.notices
        assert "of the 2 operator event(s) it covered (positions 2-3)" in notice
        assert "these break it: 3 (unsigned)" in notice


def test_a_migration_interrupted_after_its_events_only_clears_the_setting(lmdb_target: str) -> None:
    alice = OperatorKey(Signer.generate("alice"))
    policy = TrustPolicy(1, (alice.signer.verifier.encode(),))
    with Ledger.open(lmdb_target) as log:
        log.backend.put_meta(TRUST_KEY, policy.encode())
    with Ledger.open(lmdb_target) as log:
        assert log.size() == 1
        log.backend.put_meta(TRUST_KEY, policy.encode())  # as if it stopped before clearing it
    with Ledger.open(lmdb_target) as log:
        assert log.size() == 1  # no second set of TrustKey events
        assert log.notices == []
        assert log.backend.get_meta(TRUST_KEY) == b""
