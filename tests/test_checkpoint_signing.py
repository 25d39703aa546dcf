"""Checkpoints an auditor can rely on (issue 12, findings 1 and 4).

Finding 1: `prove N` beyond the last checkpoint, without `--key`, stored an unsigned checkpoint
silently; `verify --pub` then failed on it as "malformed" with the root of nothing. Now a proof
never changes what the ledger holds without saying so (without a key nothing is stored), an
unsigned checkpoint is reported as unsigned, verification reports the log's real root, and
`prove --key` signs a new checkpoint rather than reusing an unsigned one.

Finding 4: C2SP tlog-checkpoint says a log's checkpoint key SHOULD be named after its origin:
`adminchain keygen --log` makes such a key, and signing with a key of another name warns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.events import Detach, KeepAliveFailed
from ledger.ledger import Ledger
from ledger.notes import Signer
from projections.api import Views
from replay.integrity import is_signed, make_checkpoint, verify
from replay.prove import prove_inclusion, verify_proof_file
from tests.conftest import drop_pg_schema, fresh_pg_url

AUDITOR = Signer.generate("auditor")


@pytest.fixture
def log(ledger_target: str) -> Iterator[Ledger]:
    """Three events, a checkpoint signed by `auditor` at size 1."""
    with Ledger.open(ledger_target) as ledger:
        ledger.append(Detach(subject="r1", actor="alice"))
        make_checkpoint(Views(ledger), AUDITOR)
        ledger.append_batch([KeepAliveFailed(subject="r2"), Detach(subject="r3", actor="alice")])
        yield ledger


def test_prove_without_a_key_beyond_the_last_checkpoint_stores_nothing_and_says_so(
    log: Ledger,
) -> None:
    before = log.checkpoints()
    said: list[str] = []
    text = prove_inclusion(log, 3, notice=said.append)
    assert log.checkpoints() == before  # nothing stored
    assert len(said) == 1
    assert "unsigned checkpoint of size 3, not stored" in said[0]
    assert verify_proof_file(text, None).inclusion is not None  # a valid, unsigned proof
    result = verify(log, verifiers=[AUDITOR.verifier])
    assert result.ok, result.detail


def test_prove_with_a_key_records_a_signed_checkpoint_and_says_so(log: Ledger) -> None:
    said: list[str] = []
    text = prove_inclusion(log, 3, AUDITOR, notice=said.append)
    assert said[0] == "recorded a new checkpoint of size 3, signed by auditor"
    assert [size for size, _ in log.checkpoints()] == [1, 3]
    proven = verify_proof_file(text, AUDITOR.verifier.encode())
    assert proven.inclusion is not None
    assert proven.inclusion.signed_by


def test_an_unsigned_stored_checkpoint_is_reported_as_unsigned_with_the_real_root(
    log: Ledger,
) -> None:
    make_checkpoint(Views(log), None)  # `checkpoint` without --key: unsigned, stored, at 3
    result = verify(log, verifiers=[AUDITOR.verifier])
    assert result.ok, result.detail
    assert result.root == log.root().hex()
    assert result.root != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert result.unsigned_checkpoints == (3,)
    assert "unsigned checkpoint(s), vouched for by no key: size 3" in result.detail
    assert "malformed" not in result.detail
    assert result.to_json()["unsigned_checkpoints"] == [3]
    # a proof with a key does not reuse the unsigned checkpoint: it signs a new one
    said: list[str] = []
    text = prove_inclusion(log, 3, AUDITOR, notice=said.append)
    assert verify_proof_file(text, AUDITOR.verifier.encode()).inclusion is not None
    assert is_signed(dict(log.checkpoints())[3])
    # without a key, the unsigned stored one is used, and the proof says it is unsigned
    make_checkpoint(Views(log), None)
    log.append(KeepAliveFailed(subject="r4"))
    make_checkpoint(Views(log), None)  # 4, unsigned
    said.clear()
    prove_inclusion(log, 4, notice=said.append)
    assert "stored checkpoint of size 4, which is unsigned" in said[0]


def test_a_checkpoint_signed_by_another_key_still_fails_with_the_real_root(log: Ledger) -> None:
    other = Signer.generate("other")
    result = verify(log, verifiers=[other.verifier])
    assert not result.ok
    assert "checkpoint of size 1" in result.detail
    assert result.root == log.root().hex()


def test_copy_carries_checkpoints_and_both_verify(lmdb_target: str) -> None:
    with Ledger.open(lmdb_target) as source:
        source.append(Detach(subject="r1", actor="alice"))
        make_checkpoint(Views(source), AUDITOR)
        source.append(Detach(subject="r2", actor="alice"))
        prove_inclusion(source, 2)  # stores nothing
        make_checkpoint(Views(source), None)
        url = fresh_pg_url()
        try:
            with Ledger.open(url) as copy:
                copy.copy_from(source)
                assert copy.checkpoints() == source.checkpoints()
                result = verify(copy, verifiers=[AUDITOR.verifier])
                assert result.ok, result.detail
                assert result.unsigned_checkpoints == (2,)
        finally:
            drop_pg_schema(url)


# ---------------------------------------------------------------------------- the CLI


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ADMINCHAIN_LEDGER=str(cwd / "l.lmdb"), ADMINCHAIN_ACTOR="alice")
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


def test_cli_finding_1_prove_then_verify_pub(tmp_path: Path) -> None:
    """The issue's reproduction: prove beyond the last checkpoint, then verify --pub."""
    assert cli("keygen", "auditor", cwd=tmp_path).returncode == 0
    cli("maintenance", "enter", "node-1", cwd=tmp_path)
    assert cli("checkpoint", "--key", "auditor.key", cwd=tmp_path).returncode == 0
    cli("detach", "runner-1", cwd=tmp_path)
    proved = cli("prove", "2", "--out", "p2.proof", cwd=tmp_path)
    assert proved.returncode == 0, proved.stderr
    assert "not stored in the ledger" in proved.stderr
    verified = cli("verify", "--pub", "auditor.pub", "--json", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["size"] == 2
    unsigned = cli("prove", "--verify", "p2.proof", "--pub", "auditor.pub", cwd=tmp_path)
    assert unsigned.returncode == 1
    assert "it is unsigned" in unsigned.stderr
    assert "malformed" not in unsigned.stderr
    signed = cli("prove", "2", "--key", "auditor.key", "--out", "p2s.proof", cwd=tmp_path)
    assert signed.returncode == 0
    assert "recorded a new checkpoint of size 2" in signed.stderr
    checked = cli("prove", "--verify", "p2s.proof", "--pub", "auditor.pub", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_cli_keygen_log_names_the_key_after_the_origin_and_others_warn(tmp_path: Path) -> None:
    cli("maintenance", "enter", "node-1", cwd=tmp_path)
    made = cli("keygen", "--log", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    with Ledger.open(tmp_path / "l.lmdb", create=False) as log:
        origin = log.origin()
    assert info["name"] == origin
    assert info["private_key_file"] == "log.key"
    assert (tmp_path / "log.pub").read_text().startswith(origin + "+")
    quiet = cli("checkpoint", "--key", "log.key", cwd=tmp_path)
    assert quiet.returncode == 0
    assert "warning" not in quiet.stderr
    assert cli("verify", "--pub", "log.pub", cwd=tmp_path).returncode == 0
    assert cli("keygen", "auditor", cwd=tmp_path).returncode == 0
    cli("detach", "r1", cwd=tmp_path)
    warned = cli("checkpoint", "--key", "auditor.key", "--json", cwd=tmp_path)
    assert warned.returncode == 0
    assert json.loads(warned.stdout)["signed"] is True  # stdout stays clean JSON
    assert warned.stderr.startswith("warning: the checkpoint is signed by the key 'auditor'")
    assert origin in warned.stderr
    both = cli("keygen", "bob", "--log", cwd=tmp_path)
    assert both.returncode == 2
    neither = cli("keygen", cwd=tmp_path)
    assert neither.returncode == 2


def test_cli_keygen_log_needs_an_existing_ledger(tmp_path: Path) -> None:
    proc = cli("keygen", "--log", cwd=tmp_path)
    assert proc.returncode == 2
    assert not (tmp_path / "l.lmdb").exists()
    assert not (tmp_path / "log.key").exists()
