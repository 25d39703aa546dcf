"""A long catch-up shared with a second process (`replay.catchup`) stores exactly what the
single-process catch-up stores: the same states, the same tracking position, the same verdicts
in ``history``; with the settings for every subject (``SetPolicy`` for ``*``) interleaved, from
views already part-way, by a forked standby worker or a started interpreter, when the worker
fails, when the views move meanwhile. A catch-up killed before its one commit leaves the views
as they were. Also: the standby worker itself (`replay.workers.standing_by`), and the readers
that count positions (`iter_chunks_txn`, `iter_kept_txn`) still name a missing one."""

from __future__ import annotations

import gc
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import StorageError
from ledger.events import Event, KeepAliveFailed, MaintenanceObserved, SetPolicy
from ledger.ledger import Ledger
from ledger.lmdb_backend import LMDBBackend
from projections.api import Views
from projections.views import ViewTxn, fold_part
from replay import catchup, workers
from replay.parts import Part
from replay.rebuild import rebuild
from tests.eventgen import event_logs

RUNNERS = [f"runner-{i}" for i in range(8)]  # both parts have some (by CRC-32)


def interleaved() -> list[Event]:
    """Settings for every subject between the runners' events, changed twice, and events about
    ``*`` itself (its own states are one part's: the settings, every part's)."""
    events: list[Event] = []
    for round_ in range(6):
        if round_ in (1, 4):
            events.append(
                SetPolicy(subject="*", actor="op", keepalive_failure_threshold=round_ % 3 + 1)
            )
        events += [KeepAliveFailed(subject=r) for r in RUNNERS]
        events.append(KeepAliveFailed(subject="*"))
        events += [MaintenanceObserved(subject=r, state="Active") for r in RUNNERS[::3]]
    return events


def build(path: Path, first: list[Event], rest: list[Event]) -> None:
    """A ledger whose views are caught up (the usual way) after `first`, then behind by
    `rest`."""
    with Ledger.open(path) as log:
        if first:
            log.append_batch(first)
        Views(log).catch_up()
        if rest:
            log.append_batch(rest)


def stored(path: Path) -> tuple[int, int, dict[str, dict[str, Any]], dict[str, Any]]:
    """(tracking, size, every stored state, every subject's history) of the ledger at `path`."""
    with Ledger.open(path, create=False) as log:
        views = Views(log)
        tracking, size, states = views.stored_states()
        subjects = {e.event.subject for e in log.read(1, None)}
        return tracking, size, states, {s: views.history(s) for s in sorted(subjects)}


def single(path: Path) -> int:
    with Ledger.open(path, create=False) as log:
        return Views(log).catch_up()


def split(path: Path) -> int:
    with workers.standing_by(str(path)), Ledger.open(path, create=False) as log:
        return catchup.catch_up(Views(log))


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split any catch-up, and stand a worker by for any ledger directory."""
    monkeypatch.setattr(workers, "PARALLEL_FROM", 1)
    monkeypatch.setattr(workers, "STANDBY_FROM", 0)


@pytest.fixture
def parts_folded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The parts this process folds (the worker's are not seen: another process)."""
    folded: list[int] = []
    fold = catchup._fold

    def spy(views: Views, part: Part, *args: Any, **kwargs: Any) -> Any:
        if os.getpid() == me:
            folded.append(part.number)
        return fold(views, part, *args, **kwargs)

    me = os.getpid()
    monkeypatch.setattr(catchup, "_fold", spy)
    return folded


def twins(tmp_path: Path, first: list[Event], rest: list[Event]) -> tuple[Path, Path]:
    a, b = tmp_path / "single.lmdb", tmp_path / "split.lmdb"
    build(a, first, rest)
    shutil.copytree(a, b)
    return a, b


@pytest.mark.usefixtures("forced")
@pytest.mark.parametrize("cut", [0, 20, 61])
def test_a_split_catch_up_stores_what_one_process_stores(
    tmp_path: Path, cut: int, parts_folded: list[int]
) -> None:
    events = interleaved()
    a, b = twins(tmp_path, events[:cut], events[cut:])
    assert single(a) == split(b) == len(events)
    assert parts_folded == [0], "the worker folded part 1"
    assert stored(b) == stored(a)
    with Ledger.open(b, create=False) as log:  # and both are the log's fold
        folder, _ = rebuild(log)
        states = Views(log).stored_states()[2]
    assert {k: v for k, v in states.items() if v} == {k: v for k, v in folder.states.items() if v}


@pytest.mark.usefixtures("forced")
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=event_logs(max_size=60), cut=st.integers(0, 60))
def test_any_log_split_caught_up_is_the_single_catch_up(
    tmp_path_factory: pytest.TempPathFactory, events: list[Event], cut: int
) -> None:
    tmp = tmp_path_factory.mktemp("split")
    a, b = twins(tmp, events[:cut], events[cut:])
    single(a)
    split(b)
    assert stored(b) == stored(a)


@pytest.mark.usefixtures("forced")
def test_without_a_standby_the_worker_is_started(
    tmp_path: Path, parts_folded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``python -m replay catch-up`` path (no standby: the library, a server)."""
    events = interleaved()
    a, b = twins(tmp_path, events[:10], events[10:])
    single(a)
    monkeypatch.setattr(workers, "STANDBY_FROM", 1 << 62)
    started: list[object] = []
    start = workers.start

    def spy(job: str, message: object) -> Any:
        started.append(process := start(job, message))
        return process

    monkeypatch.setattr(workers, "start", spy)
    split(b)
    assert len(started) == 1
    assert not isinstance(started[0], workers._Forked)
    assert parts_folded == [0]
    assert stored(b) == stored(a)


@pytest.mark.usefixtures("forced")
def test_a_failed_worker_leaves_its_part_to_this_process(
    tmp_path: Path, parts_folded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = interleaved()
    a, b = twins(tmp_path, events[:30], events[30:])
    single(a)
    work = catchup._second_part

    def dies_in_the_worker(*args: Any) -> Any:
        if os.getpid() != me:
            os.kill(os.getpid(), signal.SIGKILL)
        return work(*args)

    me = os.getpid()
    monkeypatch.setattr(catchup, "_second_part", dies_in_the_worker)
    split(b)
    assert parts_folded == [0, 1]
    assert stored(b) == stored(a)


@pytest.mark.usefixtures("forced")
def test_views_moved_meanwhile_are_caught_up_from_where_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another catch-up commits while the parts fold: the parts' states, folded from the
    position the views left, are not written over them; the views go on from their position."""
    events = interleaved()
    a, b = twins(tmp_path, events[:5], events[5:])
    single(a)
    other_part = catchup._other_part
    advanced: list[bool] = []

    def meanwhile(views: Views, *args: Any) -> Any:
        with Ledger.open(b, create=False) as log:
            Views(log).catch_up()
        return other_part(views, *args)

    def advance(self: Views, *args: Any) -> bool:
        advanced.append(result := real_advance(self, *args))
        return result

    real_advance = Views.advance
    monkeypatch.setattr(catchup, "_other_part", meanwhile)
    monkeypatch.setattr(Views, "advance", advance)
    assert split(b) == len(events)
    assert advanced in ([], [False]), "nothing written (the worker may see the move first)"
    assert stored(b) == stored(a)


@pytest.mark.usefixtures("forced")
@pytest.mark.parametrize("where", ["while the worker folds", "before the commit"])
def test_a_catch_up_killed_part_way_leaves_the_views_as_they_were(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = interleaved()
    a, b = twins(tmp_path, events[:25], events[25:])
    before = stored(b)
    assert before[0] == 25
    if where == "before the commit":
        monkeypatch.setattr(Views, "advance", lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    else:
        monkeypatch.setattr(catchup, "_other_part", lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    pid = os.fork()
    if pid == 0:  # the catch-up, killed on the way
        try:
            split(b)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    monkeypatch.undo()
    assert stored(b) == before
    single(a)
    assert single(b) == len(events)
    assert stored(b) == stored(a)


def test_a_short_catch_up_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*_: object) -> None:
        raise AssertionError("no worker for a short catch-up")

    monkeypatch.setattr(workers, "start", no)
    path = tmp_path / "short.lmdb"
    build(path, [], interleaved())
    with Ledger.open(path, create=False) as log:
        assert catchup.catch_up(Views(log)) == log.size()


@pytest.mark.postgres
def test_on_postgres_the_catch_up_is_not_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import drop_pg_schema, fresh_pg_url  # noqa: PLC0415

    def no(*_: object) -> None:
        raise AssertionError("no worker on PostgreSQL")

    monkeypatch.setattr(workers, "PARALLEL_FROM", 1)
    monkeypatch.setattr(workers, "start", no)
    url = fresh_pg_url()
    try:
        with Ledger.open(url) as log:
            log.append_batch(interleaved())
            views = Views(log)
            assert catchup.catch_up(views) == log.size()
            folder, _ = rebuild(log)
            states = views.stored_states()[2]
            assert {k: v for k, v in states.items() if v} == {
                k: v for k, v in folder.states.items() if v
            }
    finally:
        drop_pg_schema(url)


class _Plain:
    """A `ViewTxn` without the store's own readers (`read_kept`, `read_batches`), as a store
    that has none gives: `fold_part` decodes every event and chooses them itself."""

    def __init__(self, txn: ViewTxn) -> None:
        self._txn = txn

    def tracking(self) -> int:
        return self._txn.tracking()

    def size(self) -> int:
        return self._txn.size()

    def load(self, projection: str, subject: str) -> bytes | None:
        return self._txn.load(projection, subject)

    def read_stored(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        return self._txn.read_stored(start, stop)


def test_fold_part_chooses_the_same_events_without_the_stores_reader(tmp_path: Path) -> None:
    path = tmp_path / "p.lmdb"
    events = interleaved()
    build(path, events[:7], events[7:])
    with Ledger.open(path, create=False) as log, Views(log).reader() as reader:
        for number in range(2):
            part = Part(number, 2)
            assert fold_part(_Plain(reader), log.size(), part.folds) == fold_part(  # type: ignore[arg-type]
                reader, log.size(), part.folds
            )


@pytest.mark.parametrize("missing", [1, 77, 128, 129, 199])
def test_a_missing_position_is_named_by_every_reader(tmp_path: Path, missing: int) -> None:
    """Positions are counted, not read from each key: a gap in the log is still seen, and
    named, by the parts' reader (`iter_kept_txn`: a catch-up's or a replay's part) and by the
    whole log's (`iter_chunks_txn`)."""
    path = tmp_path / "gap.lmdb"
    with Ledger.open(path) as log:
        log.append_batch([KeepAliveFailed(subject=RUNNERS[i % 8]) for i in range(200)])
    env = lmdb.open(str(path), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            assert txn.delete(
                missing.to_bytes(8, "big"), db=env.open_db(b"stored_events.log", txn=txn)
            )
    finally:
        env.close()
    with Ledger.open(path, create=False) as log:
        with pytest.raises(StorageError, match=f"position {missing} is missing"):
            rebuild(log)
        for number in range(2):  # a replay's part reads the events it keeps only
            with pytest.raises(StorageError, match=f"position {missing} is missing"):
                rebuild(log, part=Part(number, 2))
        with (
            Views(log).reader() as reader,
            pytest.raises(StorageError, match=f"position {missing} is missing"),
        ):
            fold_part(reader, 200, Part(0, 1).folds)
        backend = cast("LMDBBackend", log.backend)
        with backend.snapshot(what="read") as txn:
            chunks = list(backend.recorder.iter_chunks_txn(txn, 1, 200, 128))
    positions = [p for chunk in chunks for p, _ in chunk]
    assert positions == [p for p in range(1, 201) if p != missing], "as the keys say"


def test_a_standby_stands_by_only_for_a_big_ledger_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.lmdb"
    build(path, interleaved(), [])
    for location, threshold, expected in [
        (str(path), 0, True),
        (str(path), 1 << 40, False),
        ("postgresql://nowhere/db", 0, False),
        (str(tmp_path / "absent"), 0, False),
    ]:
        monkeypatch.setattr(workers, "STANDBY_FROM", threshold)
        with workers.standing_by(location):
            standby = workers._standby
            assert (standby is not None) == expected, location
        assert workers._standby is None
        if standby is not None:  # not taken: it ended, and was reaped
            assert standby.returncode == 0
            with pytest.raises(ChildProcessError):
                os.waitpid(standby.pid, os.WNOHANG)


def test_a_standby_takes_a_job_while_this_process_holds_the_ledger_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby was forked before the ledger was opened here (an LMDB environment must not
    cross a fork): it opens its own, and answers as a started worker would."""
    monkeypatch.setattr(workers, "STANDBY_FROM", 0)
    path = tmp_path / "j.lmdb"
    build(path, [], interleaved())
    with workers.standing_by(str(path)), Ledger.open(path, create=False) as log:
        tracking = Views(log).tracking()
        process = workers.start("catch-up", catchup._Request(str(path), tracking, log.size()))
        assert isinstance(process, workers._Forked)
        try:
            answer = workers.receive(process, catchup._PART)
            with pytest.raises(workers.WorkerFailed):  # then the end: it exits
                workers.receive(process, catchup._PART)
            process.wait()
        finally:
            workers.stop(process)
        assert process.returncode == 0
        assert answer == catchup._second_part(Views(log), tracking, log.size())
        assert answer is not None
        assert answer.last == log.size()
        assert answer.changes


@pytest.mark.usefixtures("forced")
def test_a_replay_and_a_verify_with_a_standby_report_what_they_report_alone(
    tmp_path: Path,
) -> None:
    """`replay` and `verify` hand their second process's job to the standby as the catch-up
    does: the same report as without one (views behind, then caught up)."""
    from replay.audit import run_audit  # noqa: PLC0415
    from replay.integrity import make_checkpoint, verify  # noqa: PLC0415

    path = tmp_path / "r.lmdb"
    events = interleaved()
    build(path, events[:9], events[9:])
    copy = tmp_path / "copy.lmdb"
    shutil.copytree(path, copy)
    with Ledger.open(copy, create=False) as log:
        alone = run_audit(log).to_json()
    with workers.standing_by(str(path)), Ledger.open(path, create=False) as log:
        assert workers._standby is not None
        assert run_audit(log).to_json() == alone
        assert workers._standby is None, "the replay took it"
    assert stored(path) == stored(copy)
    with Ledger.open(path, create=False) as log:
        make_checkpoint(Views(log))
        alone_verified = verify(log)
    with workers.standing_by(str(path)), Ledger.open(path, create=False) as log:
        verified = verify(log)
        assert workers._standby is None, "the verify took it"
    assert verified.ok
    assert (verified.size, verified.root, verified.detail) == (
        alone_verified.size,
        alone_verified.root,
        alone_verified.detail,
    )


@pytest.mark.usefixtures("forced")
def test_the_catch_up_command_splits_a_long_catch_up(
    tmp_path: Path, parts_folded: list[int]
) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from adminchain.cli import main  # noqa: PLC0415

    events = interleaved()
    a, b = twins(tmp_path, events[:3], events[3:])
    single(a)
    result = CliRunner().invoke(main, ["--ledger", str(b), "catch-up", "--json"])
    assert result.exit_code == 0, result.output
    assert f'"tracking":{len(events)}' in result.output.replace(" ", "")
    assert parts_folded == [0]
    assert stored(b) == stored(a)


def test_a_long_fold_pauses_the_garbage_collector_and_restores_it() -> None:
    from replay.rebuild import paused_gc  # noqa: PLC0415

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "left as it was"
    finally:
        gc.enable()
