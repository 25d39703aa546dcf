"""Tests of `ledger.lmdb` beyond eventsourcing's suites: several processes on one environment,
map growth, the transaction hooks the Ledger facade uses, error translation, permissions."""

from __future__ import annotations

import functools
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from uuid import UUID, uuid4

import lmdb
import pytest
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.popo import POPOAggregateRecorder
from hypothesis import given
from hypothesis import strategies as st

from ledger.lmdb import (
    LMDBAggregateRecorder,
    LMDBApplicationRecorder,
    LMDBDatastore,
    LMDBMapFullError,
)

SPAWN = multiprocessing.get_context("spawn")
TINY_MAP = 64 * 1024


def event(originator_id: UUID | str, version: int, size: int = 16, topic: str = "t") -> StoredEvent:
    return StoredEvent(originator_id, version, topic, bytes([version % 256]) * size)


@pytest.fixture
def env_path(tmp_path: Path) -> Path:
    return tmp_path / "env"


@pytest.fixture
def datastore(env_path: Path) -> Iterator[LMDBDatastore]:
    datastore = LMDBDatastore.open(env_path)
    yield datastore
    datastore.close()


@pytest.fixture
def recorder(datastore: LMDBDatastore) -> LMDBApplicationRecorder:
    return LMDBApplicationRecorder(datastore)


# ---------------------------------------------------------------------------- other processes


def append_worker(
    path: str, worker: int, count: int, map_size: int, start: Barrier | None = None
) -> None:
    """Append `count` events in batches of 1, 2, 3, … to the sequence ``worker-<n>``."""
    datastore = LMDBDatastore.open(path, map_size=map_size)
    recorder = LMDBApplicationRecorder(datastore)
    if start is not None:
        start.wait(30)
    version = 0
    batch = 1
    while version < count:
        size = min(batch, count - version)
        sequence = f"worker-{worker}"
        recorder.insert_events([event(sequence, version + i + 1, 64) for i in range(size)])
        version += size
        batch = batch % 3 + 1
    datastore.close()


def run_processes(*processes: multiprocessing.process.BaseProcess, timeout: float = 60) -> None:
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


@pytest.mark.parametrize("map_size", [64 * 1024 * 1024, TINY_MAP], ids=["map-64MiB", "map-64KiB"])
def test_processes_append_gap_free(env_path: Path, map_size: int) -> None:
    workers, count = 4, 400
    start = SPAWN.Barrier(workers)
    run_processes(
        *(
            SPAWN.Process(target=append_worker, args=(str(env_path), w, count, map_size, start))
            for w in range(workers)
        )
    )
    datastore = LMDBDatastore.open(env_path)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        notifications = recorder.select_notifications(None, limit=10 * workers * count)
        assert [n.id for n in notifications] == list(range(1, workers * count + 1))
        assert recorder.max_notification_id() == workers * count
        for w in range(workers):
            mine = [n for n in notifications if n.originator_id == f"worker-{w}"]
            assert [n.originator_version for n in mine] == list(range(1, count + 1))
            assert len(recorder.select_events(f"worker-{w}")) == count
        if map_size == TINY_MAP:
            assert datastore.map_size > TINY_MAP
    finally:
        datastore.close()


def append_later(path: str, count: int, delay: float) -> None:
    time.sleep(delay)
    append_worker(path, 99, count, 64 * 1024 * 1024)


def test_subscription_wakes_on_another_process_append(recorder: LMDBApplicationRecorder) -> None:
    recorder.insert_events([event("here", 1)])
    child = SPAWN.Process(target=append_later, args=(recorder.datastore.path, 3, 0.5))
    received: list[Notification] = []
    with recorder.subscribe(gt=1) as subscription:
        watchdog = threading.Timer(30, subscription.stop)
        watchdog.start()
        child.start()
        for notification in subscription:
            received.append(notification)
            if len(received) == 3:
                break
        watchdog.cancel()
    child.join(30)
    assert child.exitcode == 0
    assert [(n.id, n.originator_id) for n in received] == [(i, "worker-99") for i in (2, 3, 4)]


def grow_elsewhere(path: str) -> None:
    datastore = LMDBDatastore.open(path, map_size=TINY_MAP)
    recorder = LMDBApplicationRecorder(datastore)
    recorder.insert_events([event("big", v, 1000) for v in range(1, 2001)])
    datastore.close()


def test_map_grown_by_another_process_is_adopted(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        recorder.insert_events([event("small", 1)])
        run_processes(SPAWN.Process(target=grow_elsewhere, args=(datastore.path,)))
        assert datastore.map_size == TINY_MAP  # not yet adopted: the next transaction does it
        assert recorder.max_notification_id() == 2001
        assert datastore.map_size > 2_000_000
        assert len(recorder.select_events("big")) == 2000
        assert recorder.insert_events([event("small", 2)]) == [2002]
    finally:
        datastore.close()


# ---------------------------------------------------------------------------- map growth


def test_map_grows_from_tiny_size_without_loss(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        for batch in range(50):
            ids = recorder.insert_events([event(f"s{batch}", v, 100) for v in range(1, 101)])
            assert ids == list(range(batch * 100 + 1, batch * 100 + 101))
        assert datastore.map_size >= 1024 * 1024
        assert recorder.max_notification_id() == 5000
        assert [e.originator_version for e in recorder.select_events("s49")] == list(range(1, 101))
        assert len(recorder.select_notifications(None, 10_000)) == 5000
    finally:
        datastore.close()


def test_map_full_at_maximum_writes_nothing(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP, max_map_size=4 * TINY_MAP)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        with pytest.raises(LMDBMapFullError, match="maximum size") as info:
            recorder.insert_events([event("big", v, 1000) for v in range(1, 1001)])
        assert isinstance(info.value.__cause__, lmdb.MapFullError)
        assert isinstance(info.value, OperationalError)
        assert recorder.max_notification_id() is None
        assert recorder.insert_events([event("small", 1)]) == [1]
    finally:
        datastore.close()


def test_growth_refused_while_this_thread_reads(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        with recorder.read(), pytest.raises(LMDBMapFullError, match="this thread"):
            recorder.insert_events([event("big", v, 1000) for v in range(1, 200)])
        assert recorder.insert_events([event("big", v, 1000) for v in range(1, 200)])
    finally:
        datastore.close()


def test_growth_waits_for_other_threads_reads(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    datastore.grow_timeout = 0.3
    try:
        recorder = LMDBApplicationRecorder(datastore)
        holding, release = threading.Event(), threading.Event()

        def hold_read() -> None:
            with recorder.read():
                holding.set()
                release.wait(10)

        reader = threading.Thread(target=hold_read)
        reader.start()
        holding.wait(10)
        with pytest.raises(LMDBMapFullError, match="read transactions stayed open"):
            recorder.insert_events([event("big", v, 1000) for v in range(1, 200)])
        release.set()
        reader.join()
        ids = recorder.insert_events([event("big", v, 1000) for v in range(1, 200)])
        assert ids == list(range(1, 200))
    finally:
        datastore.close()


# ---------------------------------------------------------------------------- hooks for the facade


def test_write_retrying_shares_one_transaction_with_own_tables(
    datastore: LMDBDatastore, recorder: LMDBApplicationRecorder
) -> None:
    own = datastore.db(b"facade.ids")

    def append(txn: lmdb.Transaction[bytes]) -> list[int]:
        ids = recorder.insert_events_txn(txn, [event("a", 1), event("a", 2)])
        for nid in ids:
            txn.put(f"id-{nid}".encode(), nid.to_bytes(8, "big"), db=own)
        assert recorder.max_notification_id_txn(txn) == 2
        return ids

    assert recorder.write_retrying(append) == [1, 2]

    def refused() -> None:
        with recorder.write() as txn:
            txn.put(b"id-x", b"x", db=own)
            recorder.insert_events_txn(txn, [event("b", 1), event("a", 2)])

    with pytest.raises(IntegrityError):
        refused()
    with recorder.read() as txn:
        assert txn.get(b"id-x", db=own) is None
        assert txn.get(b"id-2", db=own) == (2).to_bytes(8, "big")
        assert list(recorder.iter_stored_txn(txn, 2, 5)) == [(2, event("a", 2).state)]
        assert [n.id for n in recorder.select_notifications_txn(txn, None, 10)] == [1, 2]
    assert recorder.select_events("b") == []


def test_write_retrying_reruns_after_growth(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    try:
        recorder = LMDBApplicationRecorder(datastore)
        runs: list[int] = []

        def append(txn: lmdb.Transaction[bytes]) -> list[int]:
            runs.append(1)
            return recorder.insert_events_txn(txn, [event("x", v, 1000) for v in range(1, 300)])

        assert recorder.write_retrying(append) == list(range(1, 300))
        assert len(runs) > 1
        assert recorder.max_notification_id() == 299
    finally:
        datastore.close()


def test_lmdb_errors_in_transactions_are_translated(recorder: LMDBApplicationRecorder) -> None:
    with pytest.raises(IntegrityError) as info, recorder.write():
        raise lmdb.KeyExistsError("boom")
    assert isinstance(info.value.__cause__, lmdb.KeyExistsError)
    with pytest.raises(OperationalError), recorder.read():
        raise lmdb.ReadersFullError("boom")
    with pytest.raises(DataError):
        recorder.insert_events([event("x", 2**63)])
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent("x", 1, "t", "not bytes")])  # type: ignore[arg-type]
    assert recorder.max_notification_id() is None


def test_misuse_is_a_programming_error(
    datastore: LMDBDatastore, recorder: LMDBApplicationRecorder
) -> None:
    with recorder.write(), pytest.raises(ProgrammingError, match="already open"):
        recorder.insert_events([event("x", 1)])
    with recorder.write(), pytest.raises(ProgrammingError, match="before starting"):
        datastore.db(b"late.table")
    datastore.db(b"plain")
    with pytest.raises(ProgrammingError, match="dupsort"):
        datastore.db(b"plain", dupsort=True)


def test_readers_see_committed_prefixes_only(recorder: LMDBApplicationRecorder) -> None:
    recorder.insert_events([event("x", 1)])
    with recorder.read() as txn:
        writer = threading.Thread(target=recorder.insert_events, args=([event("x", 2)],))
        writer.start()
        writer.join()
        assert recorder.max_notification_id_txn(txn) == 1
    assert recorder.max_notification_id() == 2


def test_in_process_appends_wake_subscribers_at_once(recorder: LMDBApplicationRecorder) -> None:
    recorder.subscription_poll_interval = 30.0
    with recorder.subscribe(gt=None) as subscription:
        threading.Timer(0.1, recorder.insert_events, args=([event("x", 1)],)).start()
        started = time.monotonic()
        notification = next(subscription)
    assert notification.id == 1
    assert time.monotonic() - started < 5


def test_wait_beyond(recorder: LMDBApplicationRecorder) -> None:
    assert not recorder.wait_beyond(0, 0.05)
    threading.Timer(0.1, recorder.insert_events, args=([event("x", 1)],)).start()
    assert recorder.wait_beyond(0, 10)
    assert not recorder.wait_beyond(1, 0.05)


# ---------------------------------------------------------------------------- datastore


def test_files_are_private(datastore: LMDBDatastore) -> None:
    assert stat.S_IMODE(os.stat(datastore.path).st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE(os.stat(os.path.join(datastore.path, name)).st_mode) == 0o600


def test_one_environment_per_path_and_process(env_path: Path) -> None:
    first = LMDBDatastore.open(env_path)
    second = LMDBDatastore.open(str(env_path) + "/")
    assert first is second
    with pytest.raises(ProgrammingError, match="sync"):
        LMDBDatastore.open(env_path, sync=False)
    recorder = LMDBApplicationRecorder(first)
    recorder.insert_events([event("x", 1)])
    first.close()
    assert recorder.max_notification_id() == 1
    second.close()
    with pytest.raises(InterfaceError):
        recorder.max_notification_id()
    third = LMDBDatastore.open(env_path, sync=False)
    try:
        assert third is not first
        assert LMDBApplicationRecorder(third).max_notification_id() == 1
    finally:
        third.close()


def test_ids_keep_their_type_and_long_ids_work(recorder: LMDBApplicationRecorder) -> None:
    uuid_id, long_id = uuid4(), "subject-" + "é" * 600
    recorder.insert_events([event(uuid_id, 1), event(long_id, 1), event(long_id, 2)])
    assert recorder.select_events(uuid_id)[0].originator_id == uuid_id
    assert [e.originator_id for e in recorder.select_events(long_id)] == [long_id, long_id]
    assert recorder.select_events(long_id[:-1]) == []
    with pytest.raises(IntegrityError):
        recorder.insert_events([event(long_id, 2)])


# ---------------------------------------------------------------------------- select_events model


@pytest.fixture(scope="module")
def shared_recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LMDBAggregateRecorder]:
    """One environment for all hypothesis examples (each example uses new ids); an application
    recorder, which is also an aggregate recorder."""
    datastore = LMDBDatastore.open(tmp_path_factory.mktemp("model") / "env")
    recorder = LMDBApplicationRecorder(datastore)
    recorder.create_table()
    yield recorder
    datastore.close()


@given(
    versions=st.sets(st.integers(-5, 30), max_size=12),
    gt=st.none() | st.integers(-7, 32),
    lte=st.none() | st.integers(-7, 32),
    desc=st.booleans(),
    limit=st.none() | st.integers(0, 6),
)
def test_select_events_agrees_with_popo(
    shared_recorder: LMDBAggregateRecorder,
    versions: set[int],
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> None:
    lmdb_recorder, model = shared_recorder, POPOAggregateRecorder()
    originator_id, neighbour = f"id-{uuid4()}", f"id-{uuid4()}"
    events = [event(originator_id, v) for v in sorted(versions)]
    for recorder in (lmdb_recorder, model):
        recorder.insert_events(events)
        recorder.insert_events([event(neighbour, v) for v in range(-3, 3)])
    expected = model.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
    if limit == 0:
        expected = []  # POPO treats 0 as "no limit"; SQL backends (and LMDB) return nothing
    got = lmdb_recorder.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
    assert got == expected


@given(
    versions=st.sets(st.integers(-(2**63), 2**63 - 1), max_size=6),
    before=st.sets(st.integers(-3, 3), max_size=3),
    after=st.sets(st.integers(-3, 3), max_size=3),
)
def test_last_version_is_the_highest_of_that_sequence_only(
    shared_recorder: LMDBAggregateRecorder, versions: set[int], before: set[int], after: set[int]
) -> None:
    """`last_version_txn` seeks the end of one sequence, whatever its neighbours hold (a
    sequence sorting just before or after it, versions at both ends of the 64-bit range)."""
    assert isinstance(shared_recorder, LMDBApplicationRecorder)
    stem = f"id-{uuid4()}"
    originator_id = stem + "-m"
    neighbours = {stem + "-a": before, stem + "-z": after, stem + "-m0": after}
    for oid, vs in (*neighbours.items(), (originator_id, versions)):
        if vs:
            shared_recorder.insert_events([event(oid, v) for v in sorted(vs)])
    with shared_recorder.datastore.read() as txn:
        assert shared_recorder.last_version_txn(txn, originator_id) == max(versions, default=None)


# ---------------------------------------------------------------------------- concurrency


def test_aborts_finish_under_steady_reads(recorder: LMDBApplicationRecorder) -> None:
    """py-lmdb 3.0 starves a write abort while other threads keep reading (see _abort_write)."""
    recorder.insert_events([event("x", 1)])
    stop = threading.Event()
    refused: list[int] = []

    def read_steadily() -> None:
        while not stop.is_set():
            recorder.select_notifications(None, 10)

    def conflict() -> None:
        for _ in range(30):
            try:
                recorder.insert_events([event("x", 1)])
            except IntegrityError:
                refused.append(1)

    readers = [threading.Thread(target=read_steadily, daemon=True) for _ in range(3)]
    writer = threading.Thread(target=conflict, daemon=True)
    for thread in [*readers, writer]:
        thread.start()
    writer.join(30)
    stop.set()
    for reader in readers:
        reader.join(10)
    assert not writer.is_alive(), "a write abort starved behind the readers"
    assert len(refused) == 30


def test_aborts_do_not_wait_for_idle_read_transactions(recorder: LMDBApplicationRecorder) -> None:
    recorder.insert_events([event("x", 1)])
    holding, release = threading.Event(), threading.Event()

    def hold_read() -> None:
        with recorder.read():
            holding.set()
            release.wait(30)

    reader = threading.Thread(target=hold_read, daemon=True)
    reader.start()
    holding.wait(10)
    started = time.monotonic()
    with pytest.raises(IntegrityError):
        recorder.insert_events([event("x", 1)])
    release.set()
    reader.join(10)
    assert time.monotonic() - started < 5


def test_threads_append_read_and_follow_a_growing_map(env_path: Path) -> None:
    datastore = LMDBDatastore.open(env_path, map_size=TINY_MAP)
    recorder = LMDBApplicationRecorder(datastore)
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001  reported by the test below
                errors.append(e)

        return run

    def append(worker: int) -> None:
        for batch in range(60):
            events = [event(f"w{worker}", batch * 10 + i, 300) for i in range(1 + batch % 10)]
            recorder.insert_events(events)

    def read() -> None:
        while not done.is_set():
            notifications = recorder.select_notifications(None, 50)
            ids = [n.id for n in notifications]
            assert ids == list(range(1, len(ids) + 1))

    followed: list[int] = []

    def follow() -> None:
        with recorder.subscribe(gt=None) as subscription:
            watchdog = threading.Timer(60, subscription.stop)
            watchdog.start()
            for notification in subscription:
                followed.append(notification.id)
                if notification.originator_id == "last":
                    break
            watchdog.cancel()

    writers = [threading.Thread(target=guarded(functools.partial(append, w))) for w in range(4)]
    others = [threading.Thread(target=guarded(read)) for _ in range(2)]
    others.append(threading.Thread(target=guarded(follow)))
    try:
        for thread in writers + others:
            thread.start()
        for thread in writers:
            thread.join(60)
        done.set()
        recorder.insert_events([event("last", 1)])  # the follower stops there
        for thread in others:
            thread.join(60)
        assert errors == []
        total = recorder.max_notification_id()
        assert total == 4 * sum(1 + b % 10 for b in range(60)) + 1
        assert followed == list(range(1, total + 1))
        assert datastore.map_size > TINY_MAP
    finally:
        datastore.close()
