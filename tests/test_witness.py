"""The tlog-witness protocol (`ledger.witness.Witness`, SPEC-server §9): every status code of
c2sp.org/tlog-witness, in the spec's order, and the state it keeps. The same witness over HTTP,
in separate processes, is tested in tests/test_transparency.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.cosign import Cosigner, cosigned_by
from ledger.errors import UsageError
from ledger.merkle import DictNodeStore, append_leaves, consistency_proof, leaf_hash, root
from ledger.notes import Signer, sign_note
from ledger.witness import LogCheckpoint, Witness, add_checkpoint_body

ORIGIN = "example.com/log"


class Log:
    """A log of `n` leaves named by a seed (two seeds: two branches of one origin)."""

    def __init__(self, signer: Signer, seed: str = "a") -> None:
        self.signer, self.seed = signer, seed
        self.store = DictNodeStore()
        self.size = 0

    def grow(self, to: int, fork_at: int | None = None) -> None:
        leaves = [
            leaf_hash(f"{self.seed if fork_at is not None and i >= fork_at else 'a'}{i}".encode())
            for i in range(self.size, to)
        ]
        self.size = append_leaves(self.store, self.size, leaves)

    def note(self, size: int | None = None, signer: Signer | None = None) -> str:
        size = self.size if size is None else size
        state = f"adminchain-state-sha256 {'0' * 64}"
        body = f"{ORIGIN}\n{size}\n{_b64(root(self.store, size))}\n{state}\n"
        return sign_note(body, signer or self.signer)

    def request(self, old: int, size: int | None = None, proof: list[bytes] | None = None) -> bytes:
        size = self.size if size is None else size
        if proof is None:
            proof = consistency_proof(self.store, old, size) if 0 < old < size else []
        return add_checkpoint_body(old, proof, self.note(size))


def _b64(data: bytes) -> str:
    import base64  # noqa: PLC0415

    return base64.b64encode(data).decode()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Witness, Log, Cosigner]:
    log_key = Signer.generate("log-key")
    cosigner = Cosigner.generate("witness.example/w1")
    witness = Witness({ORIGIN: [log_key.verifier]}, cosigner, tmp_path / "w", clock=lambda: 1e9)
    return witness, Log(log_key), cosigner


def test_cosigns_a_consistent_log_and_keeps_the_latest(
    setup: tuple[Witness, Log, Cosigner], tmp_path: Path
) -> None:
    witness, log, cosigner = setup
    log.grow(5)
    answer = witness.add_checkpoint(log.request(0))
    assert answer.status == 200, answer.body
    assert answer.body.startswith("\u2014 witness.example/w1 ")
    (cosignature,) = cosigned_by(log.note() + answer.body, [cosigner.key])
    assert cosignature.timestamp == 1_000_000_000
    log.grow(300)
    assert witness.add_checkpoint(log.request(5)).status == 200
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert LogCheckpoint.parse(latest.split("\n\n")[0] + "\n").size == 300
    assert cosigned_by(latest, [cosigner.key])  # the stored note carries our cosignature
    # the same size again (a new note, same root) is fine; a signature by a key the witness
    # does not know is ignored, and not kept; a second process may not share the directory
    stranger = Signer.generate("someone-else")
    body = log.note().split("\n\n")[0] + "\n"
    both = sign_note(body, log.signer, stranger)
    assert witness.add_checkpoint(add_checkpoint_body(300, [], both)).status == 200
    kept = witness.latest(ORIGIN)
    assert kept is not None
    assert "\u2014 log-key " in kept
    assert "someone-else" not in kept
    with pytest.raises(UsageError, match="another witness"):
        Witness(witness.logs, cosigner, tmp_path / "w")
    witness.close()
    reopened = Witness(witness.logs, cosigner, tmp_path / "w")
    assert reopened.add_checkpoint(log.request(0)).body == "300\n"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"old 01\n\nx", "leading zero"),
        (b"old 1\nnot base64!\n\n", "bad proof line"),
        (b"old 1\nAAAA\n\n", "proof hash not 32 bytes"),
        (b"old 0\n", "no empty line"),
        (b"new 0\n\n", "no old line"),
        (b"\xff\n\n", "not UTF-8"),
        (b"old 0\n\nexample.com/log\n5\n\n\xe2\x80\x94 k AAAA\n", "malformed checkpoint"),
        (("old 0\n" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n").encode(), "64"),
    ],
)
def test_malformed_requests_are_400(
    setup: tuple[Witness, Log, Cosigner], body: bytes, why: str
) -> None:
    assert setup[0].add_checkpoint(body).status == 400, why


def test_status_codes_in_the_spec_order(setup: tuple[Witness, Log, Cosigner]) -> None:
    witness, log, _ = setup
    log.grow(10)
    stranger = Signer.generate("log-key")  # same name, another key: an unknown key, ignored
    other_origin = log.note().replace(ORIGIN, "example.com/other")
    assert witness.add_checkpoint(add_checkpoint_body(0, [], other_origin)).status == 404
    assert (
        witness.add_checkpoint(add_checkpoint_body(0, [], log.note(signer=stranger))).status == 403
    )
    tampered = log.note().replace("\n10\n", "\n11\n")
    assert witness.add_checkpoint(add_checkpoint_body(0, [], tampered)).status == 403
    assert witness.add_checkpoint(log.request(11)).status == 400  # old above the size
    assert witness.add_checkpoint(log.request(4)).status == 409  # it has nothing: 0
    answer = witness.add_checkpoint(log.request(0, proof=[b"\x00" * 32]))
    assert answer.status == 422  # a proof from 0
    assert witness.add_checkpoint(log.request(0, size=4)).status == 200
    answer = witness.add_checkpoint(log.request(0))
    assert (answer.status, answer.content_type, answer.body) == (409, "text/x.tlog.size", "4\n")
    bad_proof = consistency_proof(log.store, 4, 10)
    bad_proof[0] = bytes(32)
    assert witness.add_checkpoint(log.request(4, proof=bad_proof)).status == 422
    assert witness.add_checkpoint(log.request(4)).status == 200


def test_size_zero_needs_the_empty_root(setup: tuple[Witness, Log, Cosigner]) -> None:
    witness, log, _ = setup
    assert witness.add_checkpoint(log.request(0, size=0)).status == 200
    body = f"{ORIGIN}\n0\n{_b64(bytes(32))}\n"
    note = sign_note(body, log.signer)
    assert witness.add_checkpoint(add_checkpoint_body(0, [], note)).status == 422


def test_a_fork_and_a_rollback_are_refused(setup: tuple[Witness, Log, Cosigner]) -> None:
    witness, log, _ = setup
    log.grow(20)
    assert witness.add_checkpoint(log.request(0)).status == 200
    fork = Log(log.signer, seed="b")
    fork.grow(30, fork_at=7)  # the same origin and key, another event at position 8
    assert witness.add_checkpoint(fork.request(0)).status == 409
    assert witness.add_checkpoint(fork.request(20)).status == 422  # no proof from our 20
    same_size = Log(log.signer, seed="b")
    same_size.grow(20, fork_at=7)
    assert witness.add_checkpoint(same_size.request(20)).status == 422  # same size, other root
    rolled_back = Log(log.signer)
    rolled_back.grow(12)  # restored from an old backup
    assert witness.add_checkpoint(rolled_back.request(0)).status == 409
    assert witness.add_checkpoint(rolled_back.request(20, size=12)).status == 400


def test_usage_errors_name_the_option(tmp_path: Path) -> None:
    """Each misuse is one `error:` line and exit 2, with nothing stored."""
    from tests.transparency_support import cli, log_keys  # noqa: PLC0415

    keys = log_keys(tmp_path)
    ledger = str(tmp_path / "l.lmdb")
    cli("maintenance", "enter", "node-1", "--actor", "alice", "--ledger", ledger)
    w = Cosigner.generate("w.example/1")
    (tmp_path / "w.pub").write_text(w.key.encode())
    cases = [
        (["checkpoint", "--quorum", "1"], "--quorum needs --witness"),
        (["checkpoint", "--witness", f"http://127.0.0.1:9={tmp_path / 'w.pub'}"],
         "witnesses cosign only signed checkpoints"),
        (["checkpoint", "--key", str(keys.log_key), "--witness", "127.0.0.1:9=x"],
         "expected URL=KEY"),
        (["checkpoint", "--key", str(keys.log_key), "--quorum", "2",
          "--witness", f"http://127.0.0.1:9={tmp_path / 'w.pub'}"], "--quorum 2 must be"),
        (["verify", "--quorum", "1"], "--quorum needs --witness-key"),
        (["verify", "--witness-key", str(keys.log_pub)], "not an Ed25519 cosignature/v1 key"),
    ]  # fmt: skip
    for args, message in cases:
        result = cli(*args, "--ledger", ledger, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert f"error: {message}" in result.stderr or message in result.stderr, result.stderr
    assert cli("prove", "1", "--ledger", ledger, "--witness-key", str(tmp_path / "w.pub"),
               check=False).returncode == 2  # no cosigned checkpoint covers it  # fmt: skip
    from ledger.ledger import Ledger  # noqa: PLC0415

    with Ledger.open(ledger) as log:
        assert log.checkpoints() == []
