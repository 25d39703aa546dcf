"""Big appends in bounded memory (`Ledger.append_bulk`, `adminchain append FILE`; issue 17, and
item 5 of issue 16): the input is read and prepared a chunk at a time and stored in ONE
transaction, so a big append is still all or nothing (SPEC §1).

The mechanism is tested, not the time: how much of the input has been read when the first
chunk is prepared, how many events each stored piece holds, and that an error anywhere (a bad
line, a refusal, a forged signature) after many chunks leaves nothing stored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger import backend as backend_module
from ledger import bulk
from ledger.codec import encode_event_json, iter_lines
from ledger.errors import InvalidEventError, SignatureError, StrictRefusedError
from ledger.events import (
    EnterMaintenance,
    Event,
    ExitMaintenance,
    KeepAliveFailed,
    MaintenanceObserved,
)
from ledger.ledger import Ledger
from ledger.lmdb_backend import LMDBBackend
from ledger.notes import Signer
from ledger.signing import OperatorKey
from projections.api import Views
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.eventgen import ts

BACKENDS = ["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)]
REPO = Path(__file__).resolve().parent.parent


@contextmanager
def fresh_ledger(backend: str) -> Iterator[Ledger]:
    if backend == "lmdb":
        with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "b.lmdb") as log:
            yield log
        return
    url = fresh_pg_url()
    try:
        with Ledger.open(url) as log:
            yield log
    finally:
        drop_pg_schema(url)


def failures(n: int, start: int = 0) -> list[Event]:
    return [KeepAliveFailed(subject=f"r{i % 7}", at=ts(start + i)) for i in range(n)]


def numbered(events: list[Event]) -> list[tuple[int, Event]]:
    return list(enumerate(events, start=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_line_after_many_chunks_stores_nothing(backend: str) -> None:
    lines = [encode_event_json(e) for e in failures(95)]
    lines[90] = b'{"type": "KeepAliveFailed", "subject": ""}'  # line 91: an empty subject
    with fresh_ledger(backend) as log:
        log.append_batch(failures(3))
        with pytest.raises(InvalidEventError) as caught:
            log.append_bulk(iter_lines(lines), validated=True, chunk=10)
        assert caught.value.line == 91
        assert caught.value.field == "subject"
        assert log.size() == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refusal_in_a_later_chunk_stores_nothing_and_names_the_input_line(backend: str) -> None:
    events = failures(40)
    events[33] = EnterMaintenance(subject="n1", actor="op", at=ts(100))
    events.insert(36, ExitMaintenance(subject="n1", actor="op", at=ts(101)))  # still entering
    with fresh_ledger(backend) as log:
        views = Views(log)
        pairs = [(line * 2, event) for line, event in numbered(events)]  # blank lines between
        with pytest.raises(StrictRefusedError) as caught:
            log.append_bulk(pairs, precondition=views.strict(), chunk=10)
        assert caught.value.line == 37 * 2
        assert log.size() == 0
        del events[36]
        result = log.append_bulk(numbered(events), precondition=views.strict(), chunk=10)
        assert [a.position for a in result] == list(range(1, 41))
        assert views.catch_up() == 40


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_follow_the_input_with_repeats_across_chunks(backend: str) -> None:
    with fresh_ledger(backend) as log:
        log.append(KeepAliveFailed(subject="r", id="stored-before", at=ts(0)))
        events = failures(25, start=1)
        events[3] = KeepAliveFailed(subject="r", id="twice", at=ts(3))
        events[21] = KeepAliveFailed(subject="r", id="twice", at=ts(21))  # two chunks later
        events[12] = KeepAliveFailed(subject="r", id="stored-before", at=ts(12))
        seen: list[tuple[int, int]] = []
        result = log.append_bulk(
            numbered(events), chunk=5, progress=lambda done, total: seen.append((done, total))
        )
        appended = list(result)
        assert len(appended) == len(result) == 25
        assert result.stored == 23
        assert appended[21].duplicate
        assert appended[21].position == appended[3].position == 5
        assert appended[12].duplicate
        assert appended[12].position == 1
        assert [a.id for a in appended][3] == "twice"
        assert log.size() == 24
        assert result.span() == (2, 24)
        assert seen == [(n, 25) for n in (5, 10, 15, 20, 25)]
        assert [e.position for e in log.read()] == list(range(1, 25))


def test_the_input_is_read_and_stored_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first chunk is prepared when only its events have been read, and the transaction
    stores the events a chunk at a time: memory holds a chunk, not the input."""
    pulled = 0

    def source() -> Iterator[tuple[int, Event]]:
        nonlocal pulled
        for pair in numbered(failures(95)):
            pulled += 1
            yield pair

    read_when_spooled: list[int] = []
    real_add = bulk.Spool.add

    def add(self: bulk.Spool, chunk: bulk.Chunk) -> None:
        read_when_spooled.append(pulled)
        real_add(self, chunk)

    stored_pieces: list[int] = []
    real_add_rows = backend_module._Pending.add_rows

    def add_rows(self: Any, rows: Any, minted: Any) -> Any:
        stored_pieces.append(len(rows))
        return real_add_rows(self, rows, minted)

    monkeypatch.setattr(bulk.Spool, "add", add)
    monkeypatch.setattr(backend_module._Pending, "add_rows", add_rows)
    with fresh_ledger("lmdb") as log:
        log.append_bulk(source(), chunk=10)
        assert log.size() == 95
    assert read_when_spooled == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert stored_pieces == [10] * 9 + [5]


def test_a_transaction_run_again_reads_the_spool_again(tmp_path: Path) -> None:
    """An LMDB map too small for the append grows and the transaction runs again from the
    spool: every event once, at its position, the tree intact."""
    with Ledger(LMDBBackend(tmp_path / "small.lmdb", map_size=1 << 20)) as log:
        starts: list[int] = []
        result = log.append_bulk(
            numbered(failures(6000)),
            chunk=1000,
            progress=lambda done, total: starts.append(done) if done == 1000 else None,
        )
        assert len(starts) > 1, "the map grew: the transaction ran more than once"
        assert [a.position for a in result] == list(range(1, 6001))
        assert log.size() == 6000
        from replay.integrity import verify  # noqa: PLC0415

        assert verify(log).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_signatures_are_checked_on_the_events_as_given(backend: str) -> None:
    """With a trusted key in the log, a signed operator event is accepted; a forged or an
    unsigned one in a later chunk refuses the whole append (the trust set as of the append)."""
    alice = OperatorKey(Signer.generate("alice"))
    with fresh_ledger(backend) as log:
        log.trust(alice.signer.verifier.encode())
        signed = alice.sign(EnterMaintenance(subject="n1", actor="alice"))
        events = [*failures(12), signed, *failures(12, start=20)]
        assert log.append_bulk(numbered(events), chunk=5).stored == 25
        size = log.size()
        # the signature is n1's (and covers the id: a new one, so it is not a mere repeat)
        forged = msgspec.structs.replace(signed, subject="n9", id="forged-1")
        for bad in (forged, EnterMaintenance(subject="n3", actor="alice")):  # and unsigned
            with pytest.raises(SignatureError) as caught:
                log.append_bulk(numbered([*failures(12), bad, *failures(3)]), chunk=5)
            assert caught.value.line == 13
            assert log.size() == size


def test_cli_append_file_is_atomic_past_many_chunks(tmp_path: Path) -> None:
    """`adminchain append FILE` with a bad line after more than two chunks: exit 2, the line and
    the field named, nothing stored; the same file fixed appends every line."""
    lines = [encode_event_json(e).decode() for e in failures(2 * bulk.CHUNK + 500)]
    bad = 2 * bulk.CHUNK + 321
    good = lines[bad - 1]
    lines[bad - 1] = '{"type": "KeepAliveFailed", "subject": "r", "at": "yesterday"}'
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    ledger = tmp_path / "cli.lmdb"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "adminchain", *args, "--ledger", str(ledger)],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip

    failed = cli("append", str(events))
    assert failed.returncode == 2, failed.stderr
    assert f"line {bad}" in failed.stderr
    assert "at" in failed.stderr
    assert "nothing was stored" in failed.stderr
    assert "Traceback" not in failed.stderr
    with Ledger.open(ledger, create=False) as log:
        assert log.size() == 0
    lines[bad - 1] = good
    events.write_text("\n".join(lines) + "\n")
    done = cli("append", str(events), "--json")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["position"] for r in results] == list(range(1, len(lines) + 1))
    assert not any(r["duplicate"] for r in results)


def test_cli_append_file_reports_the_refusals_of_a_later_chunk(tmp_path: Path) -> None:
    """A big `append FILE` (past two chunks) names each event a projection refused, with its
    input line and position, read back beside the results (verdicts are recomputed as the views
    fold, never stored); with --json every result carries its verdicts."""
    events: list[Event] = [*failures(2 * bulk.CHUNK + 100)]
    events += [EnterMaintenance(subject="n1", actor="op")]
    events += [MaintenanceObserved(subject="n1", state="DrainFailed", reason="pods")]
    events += [ExitMaintenance(subject="n1", actor="op"), *failures(5, start=3 * bulk.CHUNK)]
    refused_line = 2 * bulk.CHUNK + 103
    (tmp_path / "events.jsonl").write_bytes(b"".join(encode_event_json(e) + b"\n" for e in events))

    def cli(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "adminchain", *args, "--ledger", str(tmp_path / name)],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip

    done = cli("text.lmdb", "append", str(tmp_path / "events.jsonl"))
    assert done.returncode == 0, done.stderr
    assert f"appended {len(events)} events" in done.stdout
    refusals = [line for line in done.stdout.splitlines() if "refused" in line]
    assert len(refusals) == 1, done.stdout
    assert refusals[0].startswith(
        f"line {refused_line} (position {refused_line}): ExitMaintenance n1 refused by "
        "maintenance: needs_force"
    ), refusals
    again = cli("json.lmdb", "append", str(tmp_path / "events.jsonl"), "--json")
    assert again.returncode == 0, again.stderr
    results = [json.loads(line) for line in again.stdout.splitlines()]
    assert len(results) == len(events)
    assert results[0]["verdicts"] == [{"projection": "detachment", "verdict": "applied"}]
    assert [v["verdict"] for v in results[refused_line - 1]["verdicts"]] == ["rejected"]


def test_the_first_query_after_a_big_append_reports_its_catch_up(tmp_path: Path) -> None:
    """A query catches the views up by itself; with a progress callback (the CLI draws a bar
    with it) it is told how that goes, within a chunk too, not only when it is done."""
    with Ledger.open(tmp_path / "q.lmdb") as log:
        log.append_bulk(numbered(failures(25_000)))
        seen: list[tuple[int, int]] = []
        views = Views(log, progress=lambda done, total: seen.append((done, total)))
        assert views.status("detachment")["detachment"]
        assert {total for _, total in seen} == {25_000}
        dones = [done for done, _ in seen]
        assert dones == sorted(dones)
        assert dones[-1] == 25_000
        assert any(done < 25_000 for done in dones), "progress while catching up"
        seen.clear()
        views.status()
        assert seen == [(25_000, 25_000)]  # caught up: nothing to show


def test_a_strict_big_append_folds_the_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strict check of each chunk goes on from the states the previous chunk left (the
    same transaction, the log grown by exactly those events): the events not yet in the views
    are read once, not once per chunk."""
    reads: list[tuple[int, int]] = []
    real = backend_module._Pending.read_stored

    def read_stored(self: Any, start: int, stop: int) -> Any:
        reads.append((start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(backend_module._Pending, "read_stored", read_stored)
    with fresh_ledger("lmdb") as log:
        log.append_batch(failures(30))  # not folded into the views yet
        views = Views(log)
        events = [*failures(45, start=40), EnterMaintenance(subject="n1", actor="op", at=ts(99))]
        events.append(ExitMaintenance(subject="n1", actor="op", at=ts(100)))  # refused
        with pytest.raises(StrictRefusedError) as caught:
            log.append_bulk(numbered(events), precondition=views.strict(), chunk=10)
        assert caught.value.line == 47
        assert reads == [(1, 30)]
        reads.clear()
        result = log.append_bulk(numbered(events[:-1]), precondition=views.strict(), chunk=10)
        assert result.stored == 46
        assert reads == [(1, 30)]
        assert views.catch_up() == 76


def _mixed(n: int, start: int = 0) -> list[Event]:
    """Failures with, every 40th event, maintenance that is refused half of the time."""
    events: list[Event] = []
    for i in range(n):
        if i % 40 == 7:
            kind = EnterMaintenance if i % 80 == 7 else ExitMaintenance
            events.append(kind(subject=f"n{i % 3}", actor="op", at=ts(start + i)))
        else:
            events.append(KeepAliveFailed(subject=f"r{i % 7}", at=ts(start + i)))
    return events


def _fold_of(log: Ledger) -> dict[str, dict[str, Any]]:
    from projections.state import Folder  # noqa: PLC0415

    folder = Folder()
    for entry in log.read():
        folder.apply(entry.event)
    return {name: {s: v for s, v in table.items() if v is not None}
            for name, table in folder.states.items()}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_big_append_through_the_views_folds_them_in_its_own_commit(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Views.append_spooled` (what `append FILE` runs): the views are folded chunk by chunk in
    the append's own transaction (events appended before and not folded yet included), so they
    include the append the moment it commits, without another transaction; the verdicts each
    event gets are the fold's (equal to those recomputed), a repeat's are its original's."""
    with fresh_ledger(backend) as log:
        log.append_batch(failures(30))  # not folded into the views yet
        views = Views(log)
        events = _mixed(95, start=40)
        events[60] = msgspec.structs.replace(events[60], id="again")
        events[90] = msgspec.structs.replace(events[90], id="again")  # a repeat, chunks later
        spool = log.spool(numbered(events), chunk=10)
        writes: list[int] = []
        if backend == "lmdb":
            real = LMDBBackend.transaction

            def transaction(self: LMDBBackend, body: Any, **kw: Any) -> Any:
                writes.append(1)
                return real(self, body, **kw)

            monkeypatch.setattr(LMDBBackend, "transaction", transaction)
        result = views.append_spooled(spool, progress=None)
        outcomes = list(views.outcomes(result))
        if backend == "lmdb":
            assert writes == [1], "one transaction: the append and its fold"
        assert views.tracked_states(with_states=False)[0] == log.size() == 30 + 94
        stored = views.stored_states()[2]
        assert {n: t for n, t in stored.items() if t} == {
            n: t for n, t in _fold_of(log).items() if t
        }
        assert outcomes[90].duplicate
        assert outcomes[90].position == outcomes[60].position
        assert outcomes[90].verdicts == outcomes[60].verdicts
        positions = [o.position or 0 for o in outcomes]
        assert [o.verdicts for o in outcomes] == views.verdicts_at(positions)
        assert any(o.rejected for o in outcomes)
        expected = [(i, o) for i, o in enumerate(outcomes) if not o.duplicate and o.rejected]
        assert list(views.refused(result, range(95))) == expected  # from the fold's verdicts
        assert list(Views(log).refused(result, range(95))) == expected  # recomputed
        spool.close()


def test_a_big_append_run_again_folds_the_views_once(tmp_path: Path) -> None:
    """A transaction run again (the LMDB map grew) folds the views again from the start of the
    append: each event once, the verdicts kept those of the run that committed."""
    with Ledger(LMDBBackend(tmp_path / "small.lmdb", map_size=1 << 20)) as log:
        views = Views(log)
        starts: list[int] = []
        spool = log.spool(numbered(_mixed(6000)), chunk=1000)
        result = views.append_spooled(
            spool, progress=lambda done, total: starts.append(done) if done == 1000 else None
        )
        assert len(starts) > 1, "the map grew: the transaction ran more than once"
        outcomes = list(views.outcomes(result))
        assert len(outcomes) == 6000
        assert views.tracked_states(with_states=False)[0] == 6000
        assert [o.verdicts for o in outcomes] == views.verdicts_at(range(1, 6001))
        stored = views.stored_states()[2]
        assert {n: t for n, t in stored.items() if t} == {
            n: t for n, t in _fold_of(log).items() if t
        }
        spool.close()


def test_refusals_are_found_when_the_fold_keeps_too_many_distinct_verdicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its table of distinct verdict lists the append's fold keeps no code: the refused
    events are still all found (recomputed)."""
    from projections import api  # noqa: PLC0415

    monkeypatch.setattr(api._BulkFold, "_LIMIT", 1)
    with fresh_ledger("lmdb") as log:
        views = Views(log)
        events = _mixed(200)
        spool = log.spool(numbered(events), chunk=50)
        result = views.append_spooled(spool)
        outcomes = list(views.outcomes(result))
        expected = [(i, o) for i, o in enumerate(outcomes) if o.rejected]
        assert expected
        assert list(views.refused(result, range(200))) == expected
        spool.close()


def test_a_big_append_folds_its_chunks_without_reading_them_back(
    log_reads: list[tuple[int, int]],
) -> None:
    """The append's fold takes each chunk's events as the append decoded them; only events
    the views lagged behind by (appended before, not folded) are read from the log."""
    read = log_reads
    with fresh_ledger("lmdb") as log:
        log.append_batch(failures(30))  # not folded into the views yet
        views = Views(log)
        spool = log.spool(numbered(_mixed(95, start=40)), chunk=10)
        result = views.append_spooled(spool)
        assert read == [(1, 40)]  # the lag and the first chunk, then nothing
        assert views.tracked_states(with_states=False)[0] == 125
        assert {n: t for n, t in views.stored_states()[2].items() if t} == {
            n: t for n, t in _fold_of(log).items() if t
        }
        assert len(list(views.outcomes(result))) == 95
        spool.close()


def test_what_a_big_append_stored_is_counted_from_its_result() -> None:
    """The CLI's count of what it stored (for an interruption's message) takes a big append's
    count and span from its result, as iterating it would give them."""
    from adminchain.cli import StoredSoFar  # noqa: PLC0415

    with fresh_ledger("lmdb") as log:
        log.append_batch(failures(5))
        events = failures(30, start=10)
        events[7] = msgspec.structs.replace(events[7], id="x")
        events[20] = msgspec.structs.replace(events[20], id="x")  # a repeat
        result = log.append_bulk(numbered(events), chunk=8)
        fast, slow = StoredSoFar(), StoredSoFar()
        fast.note(result)
        slow.note(list(result))
        assert (fast.count, fast.first, fast.last) == (slow.count, slow.first, slow.last)
        assert fast.describe() == "29 events (positions 6-34) were stored"
