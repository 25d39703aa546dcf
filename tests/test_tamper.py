"""Tamper evidence (SPEC §4): `verify` names the first position that was changed, removed,
reordered or inserted, whatever an attacker with write access to the LMDB files did.

Every attack here is made on the files themselves, with the ledger closed: a byte flipped inside
``data.mdb``, or records rewritten through py-lmdb in the named databases the embedded backend
keeps (``stored_events.log``: position -> record; ``ledger.merkle``: level + index -> node hash;
``ledger.checkpoints``; ``views.state``). The ledger under attack has 200 events and signed
checkpoints at sizes 50, 120 and 200; position 101 carries a unique marker in its `actor`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest

from ledger import merkle
from ledger.codec import decode_record, encode_record, leaf_bytes
from ledger.errors import LedgerError
from ledger.events import (
    BackendCrashed,
    EnterMaintenance,
    Event,
    HealthObserved,
    KeepAliveFailed,
    LeaseExpired,
    MaintenanceObserved,
    MembershipObserved,
)
from ledger.ledger import Ledger
from ledger.lmdb import _split
from ledger.notes import Checkpoint, Signer
from projections.api import Views
from projections.views import codec as state_codec
from replay import integrity, workers
from replay.audit import run_audit
from replay.integrity import VerifyResult, make_checkpoint, verify

SIZE = 200
CHECKPOINTS = (50, 120, SIZE)
MARKED = 101
MARKER = b"tamper-marker-at-position-101"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

LOG_DB = b"stored_events.log"  # ledger.lmdb: <events table>.log, the backend's default table
MERKLE_DB = b"ledger.merkle"
CHECKPOINTS_DB = b"ledger.checkpoints"
STATE_DB = b"views.state"


# ---------------------------------------------------------------------------- building


def event_at(position: int) -> Event:
    """A deterministic mix of events; position `MARKED` carries the marker as its actor."""
    at = T0 + timedelta(seconds=position)
    if position == MARKED:
        return LeaseExpired(subject="runner-marked", actor=MARKER.decode(), at=at)
    subject = f"r{position % 7}"
    match position % 6:
        case 0:
            return HealthObserved(subject=subject, healthy=position % 12 == 0, at=at)
        case 1:
            return BackendCrashed(subject=f"backend-{position % 3}", at=at)
        case 2:
            return MembershipObserved(subject="cluster", peers=[f"n{position % 5}", "n9"], at=at)
        case 3 if position == 3:
            return EnterMaintenance(subject="node-1", actor="alice", reason="kernel", at=at)
        case 4 if position == 4:
            return MaintenanceObserved(subject="node-1", state="Maintenance", at=at)
        case _:
            return KeepAliveFailed(subject=subject, at=at)


def build(path: Path, size: int = SIZE, checkpoints: tuple[int, ...] = CHECKPOINTS) -> Signer:
    """A closed ledger of `size` events with signed checkpoints at `checkpoints`."""
    signer = Signer.generate("auditor")
    with Ledger.open(path) as log:
        views = Views(log)
        position = 0
        for stop in (*checkpoints, size):
            if stop <= position:
                continue
            log.append_batch([event_at(p) for p in range(position + 1, stop + 1)])
            position = stop
            if stop in checkpoints:
                make_checkpoint(views, signer)
        assert log.size() == size
        assert [s for s, _ in log.checkpoints()] == [c for c in checkpoints if c <= size]
        assert verify(log, verifiers=[signer.verifier]).ok
    return signer


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    path = tmp_path_factory.mktemp("pristine") / "ledger.lmdb"
    return path, build(path)


@pytest.fixture
def victim(pristine: tuple[Path, Signer], tmp_path: Path) -> tuple[Path, Signer]:
    """A private copy of the pristine ledger, to attack."""
    path, signer = pristine
    copy = tmp_path / "victim.lmdb"
    shutil.copytree(path, copy)
    return copy, signer


@pytest.fixture(params=["inline", "parallel"])
def digests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How verify folds for the checkpoints' projection digests: in its own process (a short
    log), or in a second process beside its other checks (a long log; forced here)."""
    if request.param == "parallel":
        monkeypatch.setattr(workers, "PARALLEL_FROM", 1)
    return str(request.param)


# ---------------------------------------------------------------------------- attacking


@contextmanager
def raw_write(path: Path) -> Iterator[tuple[Any, Any]]:
    """A py-lmdb write transaction on the ledger's files, as an attacker would open them."""
    env = lmdb.open(str(path), max_dbs=64)
    try:
        with env.begin(write=True) as txn:

            def db(name: bytes) -> Any:
                return env.open_db(name, txn=txn, create=False)

            yield txn, db
    finally:
        env.close()


def pos_key(position: int) -> bytes:
    return position.to_bytes(8, "big")


def leaf_key(position: int) -> bytes:
    return b"\x00" + (position - 1).to_bytes(8, "big")


def rewrite_state(record: bytes, state: bytes) -> bytes:
    """A log record with its stored event bytes replaced (header, id and topic kept)."""
    return record[: _split(record)[3]] + state


def stored_state(record: bytes) -> bytes:
    return record[_split(record)[3] :]


def forged(record: bytes) -> bytes:
    """The stored bytes of the record's event, backdated by an hour (same type, same subject)."""
    stored = decode_record(stored_state(record))
    at = stored.event.at
    assert at is not None
    event = msgspec.structs.replace(stored.event, at=at - timedelta(hours=1))
    return encode_record(event, stored.recorded_at)


def forge(txn: Any, db: Any, position: int, *, leaf: bool = True) -> None:
    """Backdate the event at `position` in place (`forged`); with `leaf`, also rewrite its leaf
    hash to match, as an attacker who knows the leaf format would."""
    log = db(LOG_DB)
    record = bytes(txn.get(pos_key(position), db=log))
    state = forged(record)
    txn.put(pos_key(position), rewrite_state(record, state), db=log)
    if leaf:
        leaf_hash = merkle.leaf_hash(leaf_bytes(position, state))
        txn.put(leaf_key(position), leaf_hash, db=db(MERKLE_DB))


def check(path: Path, signer: Signer | None = None) -> VerifyResult:
    with Ledger.open(path, create=False) as log:
        return verify(log, verifiers=[signer.verifier] if signer else None)


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[bytes]) -> None:
    """Exit 1 with a message, never a traceback or a signal."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr.decode(errors="replace")[-2000:])
    assert b"Traceback" not in proc.stderr
    assert proc.stderr.startswith(b"error: "), proc.stderr


# ---------------------------------------------------------------------------- the attacks


def test_untouched_copy_verifies(
    victim: tuple[Path, Signer], digests: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline every attack below starts from (in parallel, the worker folds, not us)."""
    path, signer = victim
    folded_here: list[object] = []
    real = integrity.checkpoint_digests

    def spy(*args: Any) -> Any:
        folded_here.append(args)
        return real(*args)

    monkeypatch.setattr(integrity, "checkpoint_digests", spy)
    result = check(path, signer)
    assert len(folded_here) == (0 if digests == "parallel" else 1)
    assert result.ok, result.detail
    assert result.checkpoints_checked == len(CHECKPOINTS)
    assert result.first_bad_position is None


def flip_marker(path: Path, marker: bytes, position: int, signer: Signer | None = None) -> Path:
    """Flip one byte of `marker` inside data.mdb; returns the copy where verify names `position`.

    LMDB is copy-on-write, so stale copies of a page may linger in free pages: each occurrence of
    the marker is attacked on its own copy of the ledger; exactly one must be named, and the
    others (free pages) must leave the log as it was.
    """
    data = (path / "data.mdb").read_bytes()
    offsets = [i for i in range(len(data)) if data.startswith(marker, i)]
    assert offsets, "the marker is not in the data file"
    named: list[Path] = []
    for n, offset in enumerate(offsets):
        attacked = path.with_name(f"flip-{n}.lmdb")
        shutil.copytree(path, attacked)
        with open(attacked / "data.mdb", "r+b") as f:
            f.seek(offset + 7)
            original = f.read(1)
            f.seek(offset + 7)
            f.write(bytes([original[0] ^ 0x01]))
        result = check(attacked, signer)
        if result.ok:  # a free page: the log still reads back as it was
            with Ledger.open(attacked, create=False) as log:
                assert log.get(position).event.actor == marker.decode()
            shutil.rmtree(attacked)
            continue
        assert result.first_bad_position == position, result
        assert "does not match its leaf hash" in result.detail
        named.append(attacked)
    assert len(named) == 1, f"the live copy of position {position} was not found in {offsets}"
    return named[0]


def test_one_byte_flipped_in_data_file_is_named(victim: tuple[Path, Signer]) -> None:
    """Flip one byte of the marker inside data.mdb: verify names position 101 (library and CLI)."""
    path, signer = victim
    attacked = flip_marker(path, MARKER, MARKED, signer)
    proc = cli("verify", "--json", "--ledger", str(attacked))
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout) == check(attacked).to_json()
    assert json.loads(proc.stdout)["first_bad_position"] == MARKED
    assert json.loads(proc.stdout)["ok"] is False


def test_deleted_middle_event_is_named(victim: tuple[Path, Signer], digests: str) -> None:
    path, signer = victim
    with raw_write(path) as (txn, db):
        assert txn.delete(pos_key(77), db=db(LOG_DB))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 77
    assert "missing" in result.detail


def test_deleted_last_event_is_named(victim: tuple[Path, Signer]) -> None:
    path, signer = victim
    with raw_write(path) as (txn, db):
        assert txn.delete(pos_key(SIZE), db=db(LOG_DB))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == SIZE
    assert "removed" in result.detail


def test_deleted_tail_and_its_leaves_is_caught_by_a_checkpoint(
    victim: tuple[Path, Signer],
    digests: str,
) -> None:
    """Removing the last events AND their leaves and nodes leaves a checkpoint beyond the end."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        for position in range(181, SIZE + 1):
            assert txn.delete(pos_key(position), db=db(LOG_DB))
        cursor = txn.cursor(db=db(MERKLE_DB))
        doomed = [
            bytes(key)
            for key, _ in cursor
            if ((int.from_bytes(key[1:], "big") + 1) << key[0]) > 180
        ]
        for key in doomed:
            txn.delete(key, db=db(MERKLE_DB))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 181
    assert "checkpoint of size 200 is beyond the log" in result.detail


@pytest.mark.parametrize(("p", "q"), [(60, 140), (199, 200), (1, 2)])
def test_swapped_events_name_the_smaller_position(
    victim: tuple[Path, Signer], p: int, q: int
) -> None:
    path, signer = victim
    with raw_write(path) as (txn, db):
        log = db(LOG_DB)
        a, b = bytes(txn.get(pos_key(p), db=log)), bytes(txn.get(pos_key(q), db=log))
        assert a != b
        txn.put(pos_key(p), b, db=log)
        txn.put(pos_key(q), a, db=log)
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == p, result.detail


@pytest.mark.parametrize("p", [1, 90, SIZE])
def test_inserted_event_is_named(victim: tuple[Path, Signer], p: int) -> None:
    """Shift positions p..200 up by one and put a new event at p, as a table rewrite would."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        log = db(LOG_DB)
        template = bytes(txn.get(pos_key(p), db=log))
        for position in range(SIZE, p - 1, -1):
            value = bytes(txn.get(pos_key(position), db=log))
            txn.put(pos_key(position + 1), value, db=log)
        txn.put(pos_key(p), rewrite_state(template, forged(template)), db=log)
    with Ledger.open(path, create=False) as log_:
        assert log_.size() == SIZE + 1  # the attack took: one more event, no gap
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == p, result.detail


def test_changed_event_in_a_large_log_is_named(tmp_path: Path) -> None:
    """50 000 events; one byte of position 31 337 flipped in data.mdb; verify names it."""
    path = tmp_path / "large.lmdb"
    size, marked = 50_000, 31_337
    marker = b"large-log-marker-31337"
    with Ledger.open(path, sync=False) as log:
        for start in range(1, size + 1, 10_000):
            batch = [
                KeepAliveFailed(
                    subject=f"r{p % 50}", actor=marker.decode() if p == marked else None
                )
                if p % 3
                else HealthObserved(subject=f"r{p % 50}", healthy=True)
                for p in range(start, start + 10_000)
            ]
            log.append_batch(batch)
        assert log.size() == size
    result = check(flip_marker(path, marker, marked))
    assert not result.ok
    assert result.first_bad_position == marked
    assert result.size == size


def test_consistent_event_and_leaf_rewrite_is_caught_by_the_signed_checkpoint(
    victim: tuple[Path, Signer],
    digests: str,
) -> None:
    """The attacker rewrites event 100 and its leaf hash to match: the leaf check passes, the
    signed checkpoint of size 120 does not; the first bad position is after the last good one."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        forge(txn, db, 100)
    with Ledger.open(path, create=False) as log_:
        assert log_.leaf_hash(100) == merkle.leaf_hash(leaf_bytes(100, log_.get(100).stored))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 51  # the checkpoint of 50 still holds
    assert "checkpoint of size 120" in result.detail


def _recompute_inner_nodes(txn: Any, merkle_db: Any, position: int) -> int:
    """Rewrite every stored inner node above leaf `position` from its children; returns how many."""
    index, level, rewritten = position - 1, 1, 0
    while True:
        index //= 2
        key = level.to_bytes(1, "big") + index.to_bytes(8, "big")
        if txn.get(key, db=merkle_db) is None:
            return rewritten
        child = (level - 1).to_bytes(1, "big")
        left = txn.get(child + (2 * index).to_bytes(8, "big"), db=merkle_db)
        right = txn.get(child + (2 * index + 1).to_bytes(8, "big"), db=merkle_db)
        txn.put(key, merkle.node_hash(bytes(left), bytes(right)), db=merkle_db)
        rewritten += 1
        level += 1


def test_rewrite_of_event_leaf_and_every_inner_node_is_caught_by_the_checkpoint(
    victim: tuple[Path, Signer],
    digests: str,
) -> None:
    """A thorough attacker also recomputes the inner nodes above the leaf: the stored tree is
    self-consistent again, and only the signed checkpoint of size 200 catches it."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        forge(txn, db, 150)
        assert _recompute_inner_nodes(txn, db(MERKLE_DB), 150) >= 3
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 121  # the checkpoint of 120 still holds
    assert "checkpoint of size 200" in result.detail


def test_rewrite_of_event_and_leaf_with_no_later_checkpoint_is_an_inner_node_mismatch(
    victim: tuple[Path, Signer],
) -> None:
    """The attacker rewrites event 150 and its leaf, and deletes the checkpoint of size 200 that
    would catch it: the stored inner nodes no longer match the recomputed tree."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        forge(txn, db, 150)
        assert txn.delete(pos_key(SIZE), db=db(CHECKPOINTS_DB))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 121
    assert "inner nodes" in result.detail


def put_checkpoint_with_digest(path: Path, signer: Signer, size: int, state: bytes) -> None:
    """Replace the checkpoint of `size` with one signed over the right root and `state`."""
    with Ledger.open(path, create=False) as log:
        note = Checkpoint(log.origin(), size, log.root(size), state).sign(signer)
        log.put_checkpoint(size, note)


def test_a_checkpoint_whose_projection_digest_differs_is_named(
    victim: tuple[Path, Signer], digests: str
) -> None:
    """The events match the checkpoint of 120's root but not its projection digest: the first
    bad position is just after the checkpoint that still holds (50)."""
    path, signer = victim
    put_checkpoint_with_digest(path, signer, 120, bytes(32))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 51
    assert result.detail == "the projection digest at size 120 differs from the checkpoint's"
    assert result.checkpoints_checked == 2
    with Ledger.open(path, create=False) as log:
        assert result.root == log.root(120).hex()


def test_an_earlier_digest_difference_comes_before_a_later_change(
    victim: tuple[Path, Signer], digests: str
) -> None:
    """A wrong digest at the checkpoint of 50 and a changed event at 150: the digest is named
    first (position 1), though it is compared only after the pass over the log."""
    path, signer = victim
    put_checkpoint_with_digest(path, signer, 50, bytes(32))
    with raw_write(path) as (txn, db):
        forge(txn, db, 150, leaf=False)
    result = check(path, signer)
    assert result.first_bad_position == 1
    assert "projection digest at size 50" in result.detail
    assert result.checkpoints_checked == 1


def test_checkpoint_digests_fold_each_size_once(victim: tuple[Path, Signer]) -> None:
    """The digests verify compares are those of a replay to each size, and they stop at the
    first event that cannot be read."""
    path, _ = victim
    with Ledger.open(path, create=False) as log:
        folded = dict(integrity.checkpoint_digests(log, [50, 120, SIZE]))
        assert folded == {s: Checkpoint.open(n, None).state_digest for s, n in log.checkpoints()}
    with raw_write(path) as (txn, db):
        assert txn.delete(pos_key(77), db=db(LOG_DB))
    with Ledger.open(path, create=False) as log:
        assert dict(integrity.checkpoint_digests(log, [50, 120, SIZE])) == {50: folded[50]}


def test_digests_are_folded_here_when_the_other_process_fails(
    victim: tuple[Path, Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process cannot open the ledger (a wrong location): verify folds by itself."""
    path, signer = victim
    monkeypatch.setattr(workers, "PARALLEL_FROM", 1)
    put_checkpoint_with_digest(path, signer, 120, bytes(32))
    with Ledger.open(path, create=False) as log:
        monkeypatch.setattr(log.backend, "location", str(path.with_name("nowhere")))
        result = verify(log, verifiers=[signer.verifier])
    assert result.first_bad_position == 51
    assert "projection digest at size 120" in result.detail
    assert not path.with_name("nowhere").exists()


def test_forged_checkpoint_note_is_refused_under_the_auditor_key(
    victim: tuple[Path, Signer],
) -> None:
    """Rewriting everything AND the checkpoint note (signed with the attacker's own key) still
    fails verification against the auditor's public key."""
    path, signer = victim
    mallory = Signer.generate("auditor")  # same name, different key
    with raw_write(path) as (txn, db):
        forge(txn, db, 150)
        _recompute_inner_nodes(txn, db(MERKLE_DB), 150)
        txn.put(pos_key(SIZE), b"forged", db=db(CHECKPOINTS_DB))
    with Ledger.open(path, create=False) as log_:
        views = Views(log_)
        views.rebuild()
        make_checkpoint(views, mallory)  # replaces the note of size 200
    result = check(path, signer)
    assert not result.ok
    assert "checkpoint of size 200" in result.detail


TRUNCATIONS = ["half", "100 bytes", "empty"]


@pytest.mark.parametrize("cut", TRUNCATIONS)
def test_truncated_data_file_fails_cleanly(victim: tuple[Path, Signer], cut: str) -> None:
    """data.mdb cut short: opening or verifying raises `LedgerError` (or verify fails) in the
    library, and `verify`, `log` and `replay` exit 1 with a message — never ok, never a
    traceback, never a crash. Everything runs in subprocesses, so a crash of the code under test
    cannot take the test run down."""
    path, _ = victim
    data = path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, {"half": size // 2, "100 bytes": 100, "empty": 0}[cut])
    script = (
        "import sys\n"
        "from ledger.errors import LedgerError\n"
        "from ledger.ledger import Ledger\n"
        "from replay.integrity import verify\n"
        "try:\n"
        "    with Ledger.open(sys.argv[1], create=False) as log:\n"
        "        result = verify(log)\n"
        "except LedgerError as e:\n"
        "    print('refused:', e)\n"
        "    sys.exit(0)\n"
        "print(result)\n"
        "sys.exit(0 if not result.ok else 5)\n"
    )
    library = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, timeout=60, check=False
    )
    assert library.returncode == 0, (library.returncode, library.stdout, library.stderr[-2000:])
    for command in (["verify", "--json"], ["log", "--json"], ["replay", "--json"]):
        assert_clean_failure(cli(*command, "--ledger", str(path)))


def test_stored_view_edited_behind_the_ledgers_back_diverges(victim: tuple[Path, Signer]) -> None:
    """Rewrite node-1's maintenance state in ``views.state``: the audit names `maintenance`
    (and only it), and `adminchain replay` exits 1 naming it."""
    path, _ = victim
    with Ledger.open(path, create=False) as log:
        state = Views(log).state("maintenance", "node-1")
        assert state is not None
        assert state.state == "Maintenance"
    with raw_write(path) as (txn, db):
        views = db(STATE_DB)
        cursor = txn.cursor(db=views)
        hits = []
        for key, value in cursor:
            subject, data = msgspec.msgpack.decode(value, type=tuple[str, bytes])
            if bytes(key).startswith(b"maintenance\x00") and subject == "node-1":
                hits.append((bytes(key), data))
        assert len(hits) == 1
        key, data = hits[0]
        current = state_codec.decode_state("maintenance", data)
        edited = msgspec.structs.replace(current, state="Active")
        txn.put(key, msgspec.msgpack.encode(("node-1", state_codec.encode(edited))), db=views)
    with Ledger.open(path, create=False) as log:
        report = run_audit(log)
        assert report.diverged == ["maintenance"]
        assert report.differences["maintenance"] == ["node-1"]
        result = verify(log)  # the log itself is intact: verify names the stored view
        assert not result.ok
        assert result.first_bad_position is None
        assert "maintenance state of 'node-1'" in result.detail
    proc = cli("replay", "--json", "--ledger", str(path))
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["diverged"] == ["maintenance"]
    human = cli("replay", "--ledger", str(path))
    assert human.returncode == 1
    assert b"maintenance" in human.stdout + human.stderr
    assert b"Traceback" not in human.stderr


def test_corrupt_stored_event_bytes_are_named_not_raised(victim: tuple[Path, Signer]) -> None:
    """An event whose stored bytes are not msgpack at all (and its leaf made to match): verify
    names it; reading it raises `LedgerError`, not a decoder exception."""
    path, signer = victim
    with raw_write(path) as (txn, db):
        log = db(LOG_DB)
        record = bytes(txn.get(pos_key(42), db=log))
        garbage = b"\xc1\xc1\xc1 not msgpack"
        txn.put(pos_key(42), rewrite_state(record, garbage), db=log)
        txn.put(leaf_key(42), merkle.leaf_hash(leaf_bytes(42, garbage)), db=db(MERKLE_DB))
    result = check(path, signer)
    assert not result.ok
    assert result.first_bad_position == 42
    assert "cannot be decoded" in result.detail
    with Ledger.open(path, create=False) as log_, pytest.raises(LedgerError, match="position 42"):
        log_.get(42)
    proc = cli("log", "--json", "--ledger", str(path))
    assert_clean_failure(proc)


def test_verify_checks_the_views_against_the_digest_folded_at_their_position(
    victim: tuple[Path, Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored views are compared with the projection digest folded at their tracking
    position (beside the checkpoints' digests), not by folding the log once more; only a
    mismatch folds it again, to name the state (see the edited-state test above)."""
    from replay import derived  # noqa: PLC0415

    path, _ = victim
    with Ledger.open(path, create=False) as log:
        Views(log).catch_up()

        def no_second_fold(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the log was folded again to check the views")

        monkeypatch.setattr(derived, "read_chunks", no_second_fold)
        assert verify(log).ok
