"""Storage faults on the embedded ledger (SPEC §4): a full map, and readers during writes.

A full LMDB map: the datastore of a ledger directory is opened first with a tiny map and a small
maximum (`LMDBDatastore.open(path, map_size=..., max_map_size=...)`); the `Ledger` opened on the
same path then shares it (one environment per path and process). Appending until the map cannot
grow any more must fail with a clear error and write nothing of the refused batch — the log, its
tree and its views stay as they were — and the same appends succeed once growth is allowed.

Readers during writes: while a writer appends batches of known sizes (the map growing under it),
readers in other threads and in another process repeatedly take `size()` and `read()`: every
observed log is a gap-free prefix 1..n whose n is a batch boundary — a batch is wholly visible or
not at all.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import OperationalError

from ledger.errors import LedgerError, StorageError
from ledger.events import Event, HealthObserved, KeepAliveFailed, StorageFailed
from ledger.ledger import Ledger
from ledger.lmdb import LMDBDatastore
from projections.api import Views
from replay.audit import run_audit
from replay.integrity import verify

TINY = 64 * 1024
SMALL_MAX = 256 * 1024


def batch(tag: str, n: int, size: int = 60) -> list[Event]:
    return [
        KeepAliveFailed(subject=f"r{i % 7}", id=f"{tag}-{i}", actor="x" * size) for i in range(n)
    ]


def open_with_map(path: Path, map_size: int, max_map_size: int) -> tuple[LMDBDatastore, Ledger]:
    """A ledger whose environment was opened with these map sizes (the facade shares it)."""
    datastore = LMDBDatastore.open(path, map_size=map_size, max_map_size=max_map_size)
    log = Ledger.open(path)
    assert log.backend.datastore is datastore  # type: ignore[attr-defined]
    return datastore, log


def fill(log: Ledger) -> tuple[BaseException, list[Event]]:
    """Append batches of 25 until one is refused; returns the error and the refused batch."""
    for n in range(10_000):
        events = batch(f"b{n}", 25)
        try:
            log.append_batch(events)
        except Exception as e:  # noqa: BLE001  the type is what the tests check
            return e, events
    raise AssertionError("the map never filled up")


def snapshot(log: Ledger) -> tuple[int, bytes, list[tuple[int, bytes]]]:
    return log.size(), log.root(), list(log.read_stored())


@pytest.fixture
def full(tmp_path: Path) -> Iterator[tuple[Path, Ledger, BaseException, list[Event]]]:
    path = tmp_path / "full.lmdb"
    datastore, log = open_with_map(path, TINY, SMALL_MAX)
    Views(log).catch_up()
    error, refused = fill(log)
    try:
        yield path, log, error, refused
    finally:
        log.close()
        datastore.close()


def test_full_map_refuses_the_batch_whole_and_keeps_the_log_intact(
    full: tuple[Path, Ledger, BaseException, list[Event]],
) -> None:
    _, log, error, refused = full
    assert isinstance(error, StorageError | OperationalError), repr(error)
    assert "full" in str(error)
    assert "maximum" in str(error)
    size, root, stored = snapshot(log)
    assert size > 100  # some batches went in before the map filled
    assert size % 25 == 0  # whole batches only
    ids = {entry.event.id for entry in log.read()}
    assert not ids & {e.id for e in refused}
    assert [entry.position for entry in log.read()] == list(range(1, size + 1))
    result = verify(log)
    assert result.ok, result.detail
    # the same refused batch again, and a single event: refused or stored, never half-stored
    for attempt in (refused, batch("one", 1)):
        try:
            log.append_batch(attempt)
        except (StorageError, OperationalError):
            assert snapshot(log) == (size, root, stored)
        else:
            assert log.size() == size + len(attempt)
            size, root, stored = snapshot(log)
    assert verify(log).ok


def test_full_map_is_the_public_storage_error(
    full: tuple[Path, Ledger, BaseException, list[Event]],
) -> None:
    _, _, error, _ = full
    assert isinstance(error, StorageError), f"{type(error).__module__}.{type(error).__name__}"
    assert isinstance(error, LedgerError)


def test_growth_works_again_when_allowed(
    full: tuple[Path, Ledger, BaseException, list[Event]],
) -> None:
    """Close the full ledger; reopen it with a higher maximum: the refused batch goes in, then
    more, with positions continuing gap-free, the tree verifying and the views converging."""
    path, log, _, refused = full
    size = log.size()
    log.close()
    log.backend.datastore.close()  # type: ignore[attr-defined]
    datastore, log = open_with_map(path, TINY, 64 * 1024 * 1024)
    try:
        results = log.append_batch(refused)
        assert [r.position for r in results] == list(range(size + 1, size + 26))
        for n in range(20):
            log.append_batch(batch(f"after{n}", 100))
        assert log.size() == size + 25 + 2000
        assert datastore.map_size > SMALL_MAX
        assert [e.position for e in log.read()] == list(range(1, log.size() + 1))
        result = verify(log)
        assert result.ok, result.detail
        assert run_audit(log).diverged == []
        assert Views(log).tracking() == log.size()
    finally:
        log.close()
        datastore.close()


def test_a_batch_larger_than_the_maximum_map_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "huge.lmdb"
    datastore, log = open_with_map(path, TINY, SMALL_MAX)
    try:
        log.append_batch(batch("first", 10))
        before = snapshot(log)
        huge = [StorageFailed(subject=f"r{i}", message="m" * 4000) for i in range(100)]
        with pytest.raises((StorageError, OperationalError)):
            log.append_batch(huge)
        assert snapshot(log) == before
        assert log.append(HealthObserved(subject="r1", healthy=True)).position == 11
        assert verify(log).ok
    finally:
        log.close()
        datastore.close()


def test_an_oversized_batch_does_not_fail_a_concurrent_small_append(tmp_path: Path) -> None:
    path = tmp_path / "group.lmdb"
    datastore, log = open_with_map(path, TINY, SMALL_MAX)
    try:
        log.append_batch(batch("first", 10))
        entered, release = threading.Event(), threading.Event()

        def stall(ops: object, events: object) -> None:
            entered.set()
            release.wait(10)

        outcomes: dict[str, object] = {}

        def run(name: str, events: list[Event], **kwargs: object) -> None:
            try:
                outcomes[name] = log.append_batch(events, **kwargs)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001  recorded for the assertions
                outcomes[name] = e

        huge = [StorageFailed(subject=f"r{i}", message="m" * 4000) for i in range(100)]
        first = threading.Thread(
            target=run, args=("first", batch("stall", 1)), kwargs={"precondition": stall}
        )
        first.start()
        assert entered.wait(10)  # the first writer holds the write lock: the others queue
        others = [
            threading.Thread(target=run, args=("huge", huge)),
            threading.Thread(
                target=run, args=("small", [HealthObserved(subject="r1", healthy=True)])
            ),
        ]
        for t in others:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._committer._queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        for t in (first, *others):
            t.join(30)
        assert isinstance(outcomes["huge"], StorageError | OperationalError)
        assert not isinstance(outcomes["small"], BaseException), repr(outcomes["small"])
        assert log.size() == 12
    finally:
        log.close()
        datastore.close()


# ---------------------------------------------------------------------------- readers


BATCH_SIZES = [1 + (n * 7) % 37 for n in range(120)]
BOUNDARIES = {0} | {sum(BATCH_SIZES[: n + 1]) for n in range(len(BATCH_SIZES))}


def _check_prefix(observed: list[int], size: int) -> None:
    assert observed == list(range(1, len(observed) + 1)), "a gap in a read"
    assert len(observed) in BOUNDARIES, f"half a batch visible: {len(observed)}"
    assert size in BOUNDARIES, f"half a batch counted: {size}"


def test_readers_in_threads_see_only_whole_committed_batches(tmp_path: Path) -> None:
    path = tmp_path / "readers.lmdb"
    datastore, log = open_with_map(path, TINY, 256 * 1024 * 1024)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0, 0]
    seen: set[int] = set()

    def reader(k: int) -> None:
        last = 0
        try:
            while not stop.is_set():
                size = log.size()
                observed = [entry.position for entry in log.read()]
                _check_prefix(observed, size)
                assert len(observed) >= size >= last, "the log went backwards"
                last = len(observed)
                seen.add(last)
                reads[k] += 1
                time.sleep(0.002)  # let the writer have the GIL now and then
        except AssertionError as e:
            problems.append(str(e))
        except Exception as e:  # noqa: BLE001  any failure of a reader is a finding
            problems.append(repr(e))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    try:
        for t in threads:
            t.start()
        for n, count in enumerate(BATCH_SIZES):
            log.append_batch(batch(f"w{n}", count, size=200))
        stop.set()
        for t in threads:
            t.join(30)
        assert not problems, problems[:3]
        assert min(reads) > 5, reads  # the readers really ran alongside the writer
        assert len(seen) > 10, sorted(seen)
        assert log.size() == sum(BATCH_SIZES)
        assert datastore.map_size > TINY  # the map grew while they read
        assert verify(log).ok
    finally:
        stop.set()
        log.close()
        datastore.close()


_CHILD_WRITER = """
import sys
from ledger.events import KeepAliveFailed
from ledger.ledger import Ledger
from ledger.lmdb import LMDBDatastore
sizes = [1 + (n * 7) % 37 for n in range(120)]
datastore = LMDBDatastore.open(sys.argv[1], map_size=64 * 1024, max_map_size=256 * 1024 * 1024)
log = Ledger.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for n, count in enumerate(sizes):
    events = [KeepAliveFailed(subject="r", id=f"w{n}-{i}", actor="x" * 200) for i in range(count)]
    log.append_batch(events)
print(log.size(), datastore.map_size, flush=True)
"""


def test_reader_sees_whole_batches_of_another_process_that_grows_the_map(tmp_path: Path) -> None:
    """The writer is another process whose map starts tiny and grows; this process reads with
    its own small map and must adopt each growth (MDB_MAP_RESIZED) without ever seeing a
    partial batch."""
    path = tmp_path / "xproc.lmdb"
    datastore, log = open_with_map(path, TINY, 256 * 1024 * 1024)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == b"ready"
        child.stdin.write(b"go\n")
        child.stdin.flush()
        observations, last, seen = 0, 0, set()
        while child.poll() is None or log.size() != last:
            size = log.size()
            observed = [entry.position for entry in log.read()]
            _check_prefix(observed, size)
            assert len(observed) >= last
            last = len(observed)
            seen.add(last)
            observations += 1
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()[-2000:]
        child_size, child_map = (int(x) for x in out.split())
        assert child_size == sum(BATCH_SIZES) == log.size()
        assert child_map > TINY
        assert observations > 5
        assert len(seen) > 3, sorted(seen)  # it saw the log at several sizes while it grew
        assert verify(log).ok
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
        datastore.close()
