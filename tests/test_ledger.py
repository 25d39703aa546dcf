"""The `Ledger` facade on every backend (SPEC §1 envelope and batches, §4 durability and order).

Runs through the `ledger_target` fixture: each test runs on LMDB and on PostgreSQL.
"""

from __future__ import annotations

import gc
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ledger import merkle
from ledger.backend import Appended, AppendRequest, TxnOps
from ledger.codec import leaf_bytes
from ledger.errors import InvalidEventError, LedgerError, StrictRefusedError, UsageError
from ledger.events import (
    BackendCrashed,
    Detach,
    EnterMaintenance,
    KeepAliveFailed,
    LeaseExpired,
)
from ledger.ledger import BIG_BATCH, Ledger

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def log(ledger_target: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_target) as opened:
        yield opened


def naive_root(log: Ledger) -> bytes:
    """The RFC 6962 root recomputed from the stored events, without the stored tree."""
    frontier = merkle.Frontier()
    for position, stored in log.read_stored():
        frontier.append(merkle.leaf_hash(leaf_bytes(position, stored)))
    return frontier.root()


def test_positions_are_one_two_three_without_gaps(log: Ledger) -> None:
    results = [log.append(LeaseExpired(subject=f"r{i}")) for i in range(5)]
    results += log.append_batch([KeepAliveFailed(subject="r") for _ in range(7)])
    assert [r.position for r in results] == list(range(1, 13))
    assert [e.position for e in log.read()] == list(range(1, 13))
    assert log.size() == 12


def test_read_returns_what_was_appended(log: Ledger) -> None:
    event = EnterMaintenance(subject="node-7", actor="alice", id="e-1", at=T0, reason="kernel")
    log.append(event)
    entry = log.get(1)
    assert entry.event == event
    assert entry.recorded_at.tzinfo is not None


def test_missing_id_and_at_are_filled_by_the_ledger(log: Ledger) -> None:
    before = datetime.now(UTC)
    result = log.append(LeaseExpired(subject="r1"))
    stored = log.get(result.position).event
    assert stored.id == result.id
    assert len(result.id) == 36  # a UUID
    assert stored.at is not None
    assert stored.at >= before.replace(microsecond=0)


def test_repeated_id_reports_the_original_position(log: Ledger) -> None:
    first = log.append(LeaseExpired(subject="r1", id="same"))
    again = log.append(LeaseExpired(subject="r1", id="same"))
    assert (again.position, again.duplicate) == (first.position, True)
    assert log.size() == 1


def test_repeated_id_inside_one_batch_is_stored_once(log: Ledger) -> None:
    results = log.append_batch(
        [
            LeaseExpired(subject="a", id="x"),
            LeaseExpired(subject="b", id="y"),
            LeaseExpired(subject="c", id="x"),
        ]
    )
    assert [(r.position, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
    assert log.size() == 2


def test_invalid_event_rejects_the_whole_batch(log: Ledger) -> None:
    log.append(LeaseExpired(subject="before"))
    batch = [LeaseExpired(subject="ok"), LeaseExpired(subject=""), LeaseExpired(subject="ok2")]
    with pytest.raises(InvalidEventError) as info:
        log.append_batch(batch)
    assert info.value.line == 2
    assert info.value.field == "subject"
    assert log.size() == 1


def test_operator_event_without_actor_is_refused(log: Ledger) -> None:
    with pytest.raises(InvalidEventError) as info:
        log.append(Detach(subject="r1", actor=""))
    assert info.value.field == "actor"
    assert log.size() == 0


def test_precondition_refusal_stores_nothing(log: Ledger) -> None:
    def refuse(ops: object, events: object) -> None:
        raise StrictRefusedError("no")

    with pytest.raises(StrictRefusedError):
        log.append_batch(
            [LeaseExpired(subject="a"), LeaseExpired(subject="b")], precondition=refuse
        )
    assert log.size() == 0


def test_history_lists_only_that_subject_in_order(log: Ledger) -> None:
    log.append_batch(
        [LeaseExpired(subject="a"), BackendCrashed(subject="b"), KeepAliveFailed(subject="a")]
    )
    assert [e.position for e in log.history("a")] == [1, 3]
    assert log.history("nobody") == []


def test_stored_tree_matches_a_recomputation(log: Ledger) -> None:
    for size in (1, 2, 3, 7, 8, 9):
        log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(size)])
    assert log.root() == naive_root(log)


def test_roots_of_every_earlier_size_and_proofs_verify(log: Ledger) -> None:
    log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(13)])
    roots = {}
    for size in range(14):
        roots[size] = log.root(size)
    assert roots[0] == merkle.EMPTY_ROOT
    for size in range(1, 14):
        for position in range(1, size + 1):
            proof = log.inclusion_proof(position, size)
            assert merkle.verify_inclusion(
                log.leaf_hash(position), position - 1, size, proof, roots[size]
            )
        for old in range(1, size + 1):
            proof = log.consistency_proof(old, size)
            assert merkle.verify_consistency(old, size, proof, roots[old], roots[size])


def test_positions_beyond_the_log_are_usage_errors(log: Ledger) -> None:
    log.append(LeaseExpired(subject="a"))
    with pytest.raises(UsageError):
        log.root(5)
    with pytest.raises(UsageError):
        log.inclusion_proof(2)
    with pytest.raises(LedgerError):
        log.get(2)


def test_concurrent_threads_share_commits(log: Ledger) -> None:
    """Group commit: 8 threads appending at once need fewer transactions than appends."""
    writes = 0
    real_write = log.backend.write

    def counting_write(requests: object) -> None:
        nonlocal writes
        writes += 1
        real_write(requests)  # type: ignore[arg-type]

    log._committer._write = counting_write
    per_thread = 25
    results: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(per_thread):
            r = log.append(LeaseExpired(subject=f"t{n}", id=f"{n}-{i}"))
            with lock:
                results.append(r.position)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 8 * per_thread + 1))
    assert writes < 8 * per_thread
    assert log.root() == naive_root(log)


def test_requests_sharing_a_transaction_see_each_other(log: Ledger) -> None:
    """Group commit writes a transaction's requests together at its end: a repeat of an id
    queued by an earlier request of the same transaction is still its duplicate, and a
    precondition that reads the stored log (as a strict check does) sees the earlier requests."""
    now = datetime.now(UTC)
    first = AppendRequest([LeaseExpired(subject="a", id="x-1", at=T0)], now)
    again = AppendRequest(
        [LeaseExpired(subject="a", id="x-2", at=T0), LeaseExpired(subject="b", id="x-1", at=T0)],
        now,
    )
    seen: list[tuple[int, list[int]]] = []

    def reads_the_log(ops: TxnOps, events: object) -> None:
        seen.append((ops.size(), [p for p, _ in ops.read_stored(1, ops.size())]))

    third = AppendRequest([LeaseExpired(subject="c", id="x-3", at=T0)], now, reads_the_log)
    refused = AppendRequest([LeaseExpired(subject="d", id="x-4", at=T0)], now, _refuse)
    last = AppendRequest([LeaseExpired(subject="e", id="x-4", at=T0)], now)
    log.backend.write([first, again, third, refused, last])
    assert first.result == [Appended(1, "x-1", duplicate=False)]
    assert again.result == [Appended(2, "x-2", duplicate=False), Appended(1, "x-1", duplicate=True)]
    assert seen == [(2, [1, 2])]
    assert third.result == [Appended(3, "x-3", duplicate=False)]
    assert refused.result is None
    assert isinstance(refused.error, LedgerError)
    assert last.result == [Appended(4, "x-4", duplicate=False)]  # the refused one wrote nothing
    assert [e.event.id for e in log.read()] == ["x-1", "x-2", "x-3", "x-4"]
    assert log.root() == naive_root(log)


def _refuse(ops: TxnOps, events: object) -> None:
    raise LedgerError("refused")


def test_a_big_batch_pauses_the_collector_and_restores_it(
    log: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`BIG_BATCH` events or more: the cyclic collector is off while they are appended, and on
    again afterwards, also when the append fails; a caller's own `gc.disable()` is kept."""
    seen: list[bool] = []
    real_write = log.backend.write

    def write(requests: Any) -> None:
        seen.append(gc.isenabled())
        real_write(requests)

    monkeypatch.setattr(log._committer, "_write", write)
    log.append_batch([LeaseExpired(subject="r") for _ in range(3)])
    log.append_batch(LeaseExpired(subject="r") for _ in range(BIG_BATCH))  # any iterable
    assert seen == [True, False]
    assert gc.isenabled()
    with pytest.raises(InvalidEventError):
        log.append_batch([*(LeaseExpired(subject="r") for _ in range(BIG_BATCH)), "x"])  # type: ignore[list-item]
    assert gc.isenabled()
    gc.disable()
    try:
        log.append_batch([LeaseExpired(subject="r") for _ in range(BIG_BATCH)])
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert log.size() == 3 + 2 * BIG_BATCH


def _append_many(target: str, worker: int, count: int) -> None:
    with Ledger.open(target) as log:
        for i in range(count):
            log.append(KeepAliveFailed(subject=f"w{worker}", id=f"w{worker}-{i}"))


def test_four_processes_appending_at_once(ledger_target: str) -> None:
    """SPEC §4: several processes append to one ledger; nothing lost, nothing duplicated."""
    per_process = 40
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_many, args=(ledger_target, w, per_process)) for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Ledger.open(ledger_target) as log:
        entries = list(log.read())
        assert [e.position for e in entries] == list(range(1, 4 * per_process + 1))
        ids = [e.event.id or "" for e in entries]
        assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(per_process))
        assert log.root() == naive_root(log)


def test_origin_is_made_once_and_kept(log: Ledger) -> None:
    origin = log.origin()
    assert origin.startswith("adminchain.local/")
    log.backend.put_meta("origin", b"someone-else", replace=False)  # a racing first writer loses
    assert log.origin() == origin


def test_follow_yields_new_events(log: Ledger) -> None:
    log.append(LeaseExpired(subject="a"))
    seen: list[int] = []

    def late_append() -> None:
        log.append(LeaseExpired(subject="b"))

    timer = threading.Timer(0.2, late_append)
    timer.start()
    for entry in log.follow(0, poll=0.05, stop=2.0):
        seen.append(entry.position)
        if len(seen) == 2:
            break
    timer.join()
    assert seen == [1, 2]
    assert log.wait_for(2, timeout=0.1)
    assert not log.wait_for(3, timeout=0.1)


def test_index_check_add_run_sums_as_add_does(log: Ledger) -> None:
    """`IndexCheck.add_run` (verify's batched form) accounts for events as `add` does: the
    indexes of the log match either way, and a run with one event changed does not."""
    log.append_batch([KeepAliveFailed(subject=f"r{i % 3}", id=f"k{i}") for i in range(40)])
    events = [entry.event for entry in log.read()]
    one, run = log.backend.index_check(), log.backend.index_check()
    for position, event in enumerate(events, start=1):
        one.add(position, event)
    run.add_run(1, events[:25])
    run.add_run(26, events[25:])
    event_at = dict(enumerate(events, start=1)).__getitem__
    assert one.problem(event_at) is None
    assert run.problem(event_at) is None
    changed = log.backend.index_check()
    changed.add_run(1, [*events[:-1], KeepAliveFailed(subject="r9", id="k99")])
    assert changed.problem(event_at) is not None


def test_minted_ids_are_time_ordered_uuids_version_7() -> None:
    """Ids the ledger makes are RFC 9562 version 7 UUIDs: valid, unique, and ordered by the
    millisecond they were made in (what keeps a big append's id index writes together)."""
    import time  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    from ledger.ledger import new_ids  # noqa: PLC0415

    first = new_ids(1000)
    time.sleep(0.002)
    second = new_ids(1000)
    for text in first + second:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert len(set(first + second)) == 2000
    assert max(first) < min(second)
    stamp = int(first[0].replace("-", "")[:12], 16)
    assert abs(stamp - time.time() * 1000) < 60_000


def test_minted_ids_differ_across_a_fork() -> None:
    """The random bytes behind minted ids are taken a block at a time; a forked child (the
    server's workers fork after opening the ledger) must not hand out its parent's."""
    import os  # noqa: PLC0415

    from ledger.ledger import new_ids  # noqa: PLC0415

    new_ids(1)  # the parent's block is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out
        os.close(read)
        os.write(write, "\n".join(new_ids(50)).encode())
        os._exit(0)
    os.close(write)
    parent = new_ids(50)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    os.waitpid(pid, 0)
    assert len(child) == 50
    assert not {i[15:] for i in parent} & {i[15:] for i in child}
