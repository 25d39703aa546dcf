"""Security (SPEC §4, §5): private files, and signed operator events.

Permissions: a new embedded ledger is a 0700 directory of 0600 files, and `adminchain keygen`
writes its private key 0600 — whatever the umask.

Signed operator events: once a ledger trusts an operator key, every operator event appended must
be signed by a trusted key over its canonical bytes. Unsigned, wrongly signed (another event's
signature, a flipped byte), unknown-key and changed-after-signing events are refused at append
(`SignatureError` naming `signature`, exit 2, nothing stored); a correctly signed one is accepted;
loop events need no signature. Operator events that got into the log unsigned after trust was
configured (written through the backend, bypassing the facade) are flagged by `run_audit`
(projection ``signatures``) and by `verify`; events from before trust was configured are not.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest

from ledger.backend import AppendRequest
from ledger.errors import SignatureError
from ledger.events import (
    Detach,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    MaintenanceObserved,
    Quiesce,
    SetPolicy,
    Signature,
    Target,
)
from ledger.ledger import Ledger
from ledger.notes import Signer
from ledger.signing import OperatorKey
from replay.audit import run_audit
from replay.integrity import verify

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def cli(
    *args: str, cwd: Path | None = None, stdin: bytes | None = None, mask: int = 0o022
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=60,
        check=False,
        umask=mask,
    )


# ---------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_new_ledger_directory_is_0700_and_its_files_0600(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "new.lmdb"
    with umask(mask), Ledger.open(path) as log:
        log.append(KeepAliveFailed(subject="r"))
        from projections.api import Views  # noqa: PLC0415  the views live in the same files

        Views(log).catch_up()
    assert mode(path) == 0o700
    files = sorted(p.name for p in path.iterdir())
    assert files == ["data.mdb", "lock.mdb"]
    for name in files:
        assert mode(path / name) == 0o600, name


def test_ledger_created_by_the_cli_is_private_even_with_umask_000(tmp_path: Path) -> None:
    path = tmp_path / "cli.lmdb"
    event = json.dumps({"type": "KeepAliveFailed", "subject": "r"}).encode()
    proc = cli("append", "--ledger", str(path), stdin=event + b"\n", mask=0)
    assert proc.returncode == 0, proc.stderr
    assert mode(path) == 0o700
    for child in path.iterdir():
        assert mode(child) == 0o600, child.name


def test_keygen_private_key_is_0600_even_with_umask_000(tmp_path: Path) -> None:
    proc = cli("keygen", "alice", "--json", cwd=tmp_path, mask=0)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    private = tmp_path / out["private_key_file"]
    assert private.name == "alice.key"
    assert mode(private) == 0o600
    assert private.read_text().startswith("PRIVATE+KEY+alice+")
    public = tmp_path / out["public_key_file"]
    assert public.read_text().strip() == out["public_key"]
    assert "PRIVATE" not in public.read_text()


def test_keygen_force_over_a_world_readable_key_makes_it_0600(tmp_path: Path) -> None:
    stale = tmp_path / "bob.key"
    stale.write_text("old\n")
    stale.chmod(0o644)
    refused = cli("keygen", "bob", cwd=tmp_path)
    assert refused.returncode == 2
    assert stale.read_text() == "old\n"  # not overwritten without --force
    proc = cli("keygen", "bob", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mode(stale) == 0o600
    assert stale.read_text().startswith("PRIVATE+KEY+bob+")


# ---------------------------------------------------------------------------- signing


def operator_event(n: int = 0) -> Event:
    return EnterMaintenance(
        subject=f"node-{n}", actor="alice", reason=f"kernel {n}", id=f"op-{n}", at=T0
    )


@pytest.fixture
def alice() -> OperatorKey:
    return OperatorKey(Signer.generate("alice"))


@pytest.fixture
def trusted(ledger_target: str, alice: OperatorKey) -> Iterator[Ledger]:
    """A ledger with a few events, then alice's key trusted (the first TrustKey, at 5)."""
    with Ledger.open(ledger_target) as log:
        log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(3)])
        log.append(Detach(subject="runner-early", actor="bob"))  # before trust: unsigned is fine
        trusted = log.trust(alice.signer.verifier.encode())
        assert trusted.required_since == 5
        assert [k.name for k in trusted.keys] == ["alice"]
        yield log


def _flip_signature_byte(event: Event, index: int) -> Event:
    assert event.signature is not None
    blob = bytearray(base64.b64decode(event.signature.sig))
    blob[index] ^= 0x01
    signature = Signature(event.signature.key, base64.b64encode(bytes(blob)).decode())
    return msgspec.structs.replace(event, signature=signature)


def _attacks(alice: OperatorKey) -> dict[str, tuple[Event, str]]:
    """Each refused operator event and the problem it must be refused for."""
    signed = alice.sign(operator_event(1))
    other = alice.sign(operator_event(2))
    mallory = OperatorKey(Signer.generate("alice"))  # same name, another key
    return {
        "unsigned": (operator_event(1), "unsigned"),
        "another event's signature": (
            msgspec.structs.replace(operator_event(1), signature=other.signature),
            "bad_signature",
        ),
        "flipped signature byte": (_flip_signature_byte(signed, 20), "bad_signature"),
        "flipped key id byte": (_flip_signature_byte(signed, 0), "unknown_key"),
        "unknown key of the same name": (mallory.sign(operator_event(1)), "unknown_key"),
        "unknown key": (
            OperatorKey(Signer.generate("mallory")).sign(operator_event(1)),
            "unknown_key",
        ),
        "reason changed after signing": (
            msgspec.structs.replace(signed, reason="something else"),
            "bad_signature",
        ),
        "actor changed after signing": (
            msgspec.structs.replace(signed, actor="bob"),
            "bad_signature",
        ),
        "actor is not the signing key's name": (
            alice.sign(msgspec.structs.replace(operator_event(1), actor="bob")),
            "actor_mismatch",
        ),
        "time changed after signing": (
            msgspec.structs.replace(signed, at=T0 + timedelta(seconds=1)),
            "bad_signature",
        ),
        "id removed after signing": (msgspec.structs.replace(signed, id=None), "unsigned_fields"),
        "signature not base64": (
            msgspec.structs.replace(signed, signature=Signature("alice", "%%%not base64%%%")),
            "bad_signature",
        ),
        "signature too short": (
            msgspec.structs.replace(signed, signature=Signature("alice", "AAAA")),
            "bad_signature",
        ),
    }


ATTACKS = list(_attacks(OperatorKey(Signer.generate("alice"))))


@pytest.mark.parametrize("attack", ATTACKS)
def test_badly_signed_operator_event_is_refused_and_nothing_stored(
    trusted: Ledger, alice: OperatorKey, attack: str
) -> None:
    event, problem = _attacks(alice)[attack]
    size, root = trusted.size(), trusted.root()
    loop = HealthObserved(subject="r0", healthy=True)  # fine on its own: the batch is refused whole
    with pytest.raises(SignatureError) as info:
        trusted.append_batch([loop, event])
    assert info.value.field == "signature"
    assert info.value.line == 2
    assert str(info.value).startswith(f"line 2, field `signature`: {problem}")
    assert trusted.size() == size
    assert trusted.root() == root


def test_correctly_signed_operator_events_are_accepted(trusted: Ledger, alice: OperatorKey) -> None:
    events: list[Event] = [
        alice.sign(operator_event(1)),
        alice.sign(ExitMaintenance(subject="node-1", actor="alice", force=True)),
        alice.sign(Detach(subject="runner-a", actor="alice")),
        alice.sign(SetPolicy(subject="*", actor="alice", recover_window_ms=100)),
        alice.sign(
            IssueBroadcast(
                subject="q-1",
                actor="alice",
                operation=Quiesce("maintenance"),
                targets=[Target("b1", True)],
                at=datetime(2026, 4, 1, 13, 0, tzinfo=timezone(timedelta(hours=2))),
            )
        ),
    ]
    results = trusted.append_batch(events)
    assert [r.position for r in results] == list(range(6, 11))
    assert not any(r.duplicate for r in results)
    stored = [e.event for e in trusted.read(6)]
    assert [e.signature for e in stored] == [e.signature for e in events]
    again = trusted.append(events[0])  # a replayed signed event is a duplicate, not a new one
    assert again.duplicate
    assert again.position == 6
    assert trusted.size() == 10
    result = verify(trusted)
    assert result.ok, result.detail


def test_a_second_trusted_key_is_accepted_and_untrusting_it_refuses_it(
    trusted: Ledger, alice: OperatorKey
) -> None:
    carol = OperatorKey(Signer.generate("carol"))
    trusted.trust(carol.signer.verifier.encode(), signer=alice)  # 6
    as_carol = {n: msgspec.structs.replace(operator_event(n), actor="carol") for n in (7, 9)}
    assert trusted.append(carol.sign(as_carol[7])).position == 7
    assert trusted.append(alice.sign(operator_event(8))).position == 8
    trusted.untrust("carol", signer=alice)  # 9
    with pytest.raises(SignatureError, match="unknown_key"):
        trusted.append(carol.sign(as_carol[9]))
    assert trusted.size() == 9
    assert verify(trusted).ok  # what carol signed before her revocation stays valid


def test_loop_events_need_no_signature(trusted: Ledger) -> None:
    loops: list[Event] = [
        KeepAliveFailed(subject="r9"),
        HealthObserved(subject="r9", healthy=True),
        MaintenanceObserved(subject="node-1", state="EnteringMaintenance"),
    ]
    results = trusted.append_batch(loops)
    assert [r.position for r in results] == [6, 7, 8]


def _sneak_in(log: Ledger, events: list[Event]) -> list[int]:
    """Write through the backend directly, bypassing the facade's signature check."""
    now = datetime.now(UTC)
    ready = [
        msgspec.structs.replace(e, id=e.id or f"sneak-{i}", at=e.at or now)
        for i, e in enumerate(events)
    ]
    request = AppendRequest(ready, now)
    log.backend.write([request])
    assert request.error is None
    assert request.result is not None
    return [r.position for r in request.result]


def test_unsigned_operator_event_written_behind_the_facade_is_flagged(
    trusted: Ledger, alice: OperatorKey
) -> None:
    trusted.append(alice.sign(operator_event(1)))  # 6: signed, fine
    trusted.append(KeepAliveFailed(subject="r1"))  # 7: loop, fine
    (sneaked,) = _sneak_in(trusted, [Detach(subject="runner-x", actor="mallory")])  # 8
    (forged,) = _sneak_in(  # 9: signed by a key the ledger does not trust
        trusted, [OperatorKey(Signer.generate("mallory")).sign(operator_event(2))]
    )
    trusted.append(alice.sign(operator_event(3)))  # 10
    assert (sneaked, forged) == (8, 9)

    report = run_audit(trusted)
    flagged = [(r.position, r.reason) for r in report.rejected if r.projection == "signatures"]
    assert flagged == [(8, "unsigned"), (9, "unknown_key")]
    assert all(r.position != 4 for r in report.rejected if r.projection == "signatures")
    assert report.diverged == []

    result = verify(trusted)
    assert not result.ok
    assert result.first_bad_position == 8
    assert "signing policy" in result.detail


def test_unsigned_events_from_before_trust_are_not_flagged(ledger_target: str) -> None:
    with Ledger.open(ledger_target) as log:
        log.append_batch([operator_event(i) for i in range(3)])  # unsigned, no trust yet
        key = OperatorKey(Signer.generate("alice"))
        log.trust(key.signer.verifier.encode())
        log.append(key.sign(operator_event(9)))
        report = run_audit(log)
        assert [r for r in report.rejected if r.projection == "signatures"] == []
        result = verify(log)
        assert result.ok, result.detail
        assert result.size == 5


# ---------------------------------------------------------------------------- the CLI


def test_cli_trust_refuses_unsigned_and_accepts_signed(tmp_path: Path) -> None:
    ledger = str(tmp_path / "cli.lmdb")
    assert cli("keygen", "alice", cwd=tmp_path).returncode == 0
    assert cli("keygen", "mallory", cwd=tmp_path).returncode == 0
    seeded = cli("detach", "runner-early", "--actor", "bob", "--ledger", ledger)
    assert seeded.returncode == 0, seeded.stderr
    added = cli("trust", "add", "alice.pub", "--json", "--ledger", ledger, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    trusted = json.loads(added.stdout)
    assert trusted["required_since"] == 2
    assert [k["key"] for k in trusted["keys"]] == [(tmp_path / "alice.pub").read_text().strip()]

    unsigned = json.dumps({"type": "Detach", "subject": "runner-a", "actor": "alice"}).encode()
    loop = json.dumps({"type": "LeaseExpired", "subject": "runner-a"}).encode()
    refused = cli("append", "--ledger", ledger, stdin=loop + b"\n" + unsigned + b"\n")
    assert refused.returncode == 2
    assert refused.stderr.startswith(b"error: line 2, field `signature`: unsigned")
    assert b"Traceback" not in refused.stderr

    wrong = cli(
        "append", "--sign-key", "mallory.key", "--ledger", ledger, cwd=tmp_path, stdin=unsigned
    )
    assert wrong.returncode == 2
    assert b"field `signature`: unknown_key" in wrong.stderr

    shortcut = cli("maintenance", "enter", "node-7", "--ledger", ledger)
    assert shortcut.returncode == 2
    assert b"signature" in shortcut.stderr

    signed = cli(
        "append", "--json", "--sign-key", "alice.key", "--ledger", ledger,
        cwd=tmp_path, stdin=loop + b"\n" + unsigned + b"\n",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert [json.loads(x)["position"] for x in signed.stdout.splitlines()] == [3, 4]
    entered = cli(
        "maintenance", "enter", "node-7", "--sign-key", "alice.key", "--json", "--ledger", ledger,
        cwd=tmp_path,
    )  # fmt: skip
    assert entered.returncode == 0, entered.stderr
    assert json.loads(entered.stdout)["position"] == 5

    with Ledger.open(ledger, create=False) as log:
        assert log.size() == 5
        signature = log.get(4).event.signature
        assert signature is not None
        assert signature.key == "alice"
        assert verify(log).ok
    assert cli("verify", "--ledger", ledger).returncode == 0
    assert cli("replay", "--ledger", ledger).returncode == 0


def test_cli_trust_add_refuses_a_private_key_file(tmp_path: Path) -> None:
    """Trusting the .key file by mistake is refused: the secret never lands in the ledger."""
    ledger = tmp_path / "cli.lmdb"
    assert cli("keygen", "alice", cwd=tmp_path).returncode == 0
    proc = cli("trust", "add", "alice.key", "--ledger", str(ledger), cwd=tmp_path)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    listed = cli("trust", "list", "--json", "--ledger", str(ledger))
    assert json.loads(listed.stdout)["keys"] == []
    # PRIVATE+KEY+<name>+<hash>+<key>: the key is base64 and may itself hold a '+'
    secret = (tmp_path / "alice.key").read_text().strip().split("+", 4)[4]
    data = ledger / "data.mdb"
    assert not data.exists() or secret.encode() not in data.read_bytes()
