"""The PostgreSQL backend's own guarantees (SPEC §4, §6): what the shared tests cannot see.

Several processes appending to one schema (positions 1..N, no gaps, each id once, the stored tree
equal to a recomputation); idempotency enforced by the database; no gap after a rolled-back
append; wake-ups across processes; views that move with their tracking in one transaction and
are never folded twice; clear errors for an unreachable server. Each test gets a fresh schema.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from ledger import merkle
from ledger import postgres as pg
from ledger.backend import Appended, AppendRequest, TxnOps
from ledger.codec import leaf_bytes
from ledger.errors import BackendUnavailableError, StorageError
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
from ledger.notes import Checkpoint
from projections.api import Views
from projections.state import Folder
from projections.store_postgres import PostgresViews
from replay import integrity, workers
from replay.integrity import make_checkpoint, verify
from tests.conftest import drop_pg_schema, fresh_pg_url

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def url() -> Iterator[str]:
    target = fresh_pg_url()
    try:
        yield target
    finally:
        drop_pg_schema(target)


@pytest.fixture
def log(url: str) -> Iterator[Ledger]:
    with Ledger.open(url) as opened:
        yield opened


def raw(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A plain connection to the test database (outside the backend)."""
    return psycopg.connect(url.partition("?")[0], autocommit=True)


def count(url: str, table: str) -> int:
    schema = pg.parse_url(url).schema
    with raw(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def naive_root(log: Ledger) -> bytes:
    frontier = merkle.Frontier()
    for position, stored in log.read_stored():
        frontier.append(merkle.leaf_hash(leaf_bytes(position, stored)))
    return frontier.root()


def mixed_events(n: int) -> list[Event]:
    """A deterministic log touching every kind of fold, with rejections along the way."""
    events: list[Event] = []
    for i in range(n):
        at = T0 + timedelta(milliseconds=100 * i)
        kind = i % 6
        if kind == 0:
            events.append(KeepAliveFailed(subject=f"r{i % 7}", at=at))
        elif kind == 1:
            events.append(HealthObserved(subject=f"r{i % 7}", healthy=i % 4 == 1, at=at))
        elif kind == 2:
            events.append(EnterMaintenance(subject=f"n{i % 5}", actor="op", at=at))
        elif kind == 3:
            events.append(MaintenanceObserved(subject=f"n{i % 5}", state="Maintenance", at=at))
        elif kind == 4:
            events.append(BackendCrashed(subject=f"b{i % 3}", at=at))
        else:
            peers = [f"p{j}" for j in range(i % 4)]
            events.append(MembershipObserved(subject="c", peers=peers, at=at))
    return events


# ----------------------------------------------------------------------------- several writers


def _append_worker(url: str, worker: int, batches: int) -> None:
    with Ledger.open(url) as log:
        for b in range(batches):
            size = 1 + (worker + b) % 5
            log.append_batch(
                [
                    KeepAliveFailed(subject=f"w{worker}-{i % 3}", id=f"w{worker}-{b}-{i}")
                    for i in range(size)
                ]
            )


def test_four_processes_get_positions_one_to_n_and_a_matching_tree(url: str) -> None:
    Ledger.open(url).close()  # create the schema first: the workers then race only on appends
    procs = [SPAWN.Process(target=_append_worker, args=(url, w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    expected = {
        f"w{w}-{b}-{i}" for w in range(4) for b in range(30) for i in range(1 + (w + b) % 5)
    }
    with Ledger.open(url) as log:
        entries = list(log.read())
        assert [e.position for e in entries] == list(range(1, len(expected) + 1))
        ids = [e.event.id for e in entries]
        assert len(ids) == len(set(ids))
        assert set(ids) == expected
        assert log.root() == naive_root(log)
        for w in range(4):  # per-subject versions follow positions: history in log order
            positions = log.backend.positions_of(f"w{w}-0")
            assert positions
            assert positions == sorted(positions)
    assert count(url, "ids") == len(expected)


def _same_ids_worker(url: str, reverse: bool, out: multiprocessing.Queue[dict[str, int]]) -> None:
    keys = [f"shared-{i}" for i in range(60)]
    if reverse:
        keys.reverse()
    seen: dict[str, int] = {}
    with Ledger.open(url) as log:
        for start in range(0, len(keys), 6):
            chunk = keys[start : start + 6]
            for key, result in zip(
                chunk, log.append_batch([LeaseExpired(subject=k, id=k) for k in chunk]), strict=True
            ):
                seen[key] = result.position
    out.put(seen)


def test_same_ids_from_two_processes_are_stored_once(url: str) -> None:
    Ledger.open(url).close()
    queue: multiprocessing.Queue[dict[str, int]] = SPAWN.Queue()
    procs = [SPAWN.Process(target=_same_ids_worker, args=(url, r, queue)) for r in (False, True)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert results[0] == results[1]  # both were told the one position each id has
    with Ledger.open(url) as log:
        assert log.size() == 60
        stored = {e.event.id: e.position for e in log.read()}
        assert stored == results[0]
        assert log.root() == naive_root(log)


def test_the_database_refuses_a_second_row_for_an_id(log: Ledger, url: str) -> None:
    log.append(LeaseExpired(subject="r", id="only-once"))
    schema = pg.parse_url(url).schema
    with raw(url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            sql.SQL("INSERT INTO {}.ids VALUES ('only-once', 99)").format(sql.Identifier(schema))
        )


# ----------------------------------------------------------------------------- gap-free


def test_a_rolled_back_append_leaves_no_gap(log: Ledger) -> None:
    log.append(LeaseExpired(subject="a"))

    def explode(ops: object, events: object) -> None:
        raise RuntimeError("crash inside the write transaction")

    with pytest.raises(RuntimeError):
        log.append(LeaseExpired(subject="b"), precondition=explode)
    assert log.append(LeaseExpired(subject="c")).position == 2
    assert [e.position for e in log.read()] == [1, 2]


def test_the_recorders_own_insert_path_is_gap_free_too(log: Ledger) -> None:
    """eventsourcing's BIGSERIAL would skip the ids of the failed insert; ours does not."""
    from eventsourcing.persistence import IntegrityError, StoredEvent  # noqa: PLC0415

    backend = log.backend
    assert isinstance(backend, pg.PostgresBackend)
    recorder = backend.recorder
    assert list(recorder.insert_events([StoredEvent("s", 1, "T", b"x")]) or []) == [1]
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent("s", 2, "T", b"y"), StoredEvent("s", 1, "T", b"z")])
    assert list(recorder.insert_events([StoredEvent("s", 2, "T", b"y")]) or []) == [2]
    notifications = recorder.select_notifications(1, 10)
    assert [(n.id, n.originator_id, n.originator_version) for n in notifications] == [
        (1, "s", 1),
        (2, "s", 2),
    ]


def test_eventsourcing_reads_the_ledgers_events_as_notifications(log: Ledger) -> None:
    log.append_batch([LeaseExpired(subject="r1"), KeepAliveFailed(subject="r1")])
    backend = log.backend
    assert isinstance(backend, pg.PostgresBackend)
    notifications = backend.recorder.select_notifications(1, 10)
    assert [(n.id, n.originator_id, n.originator_version, n.topic) for n in notifications] == [
        (1, "r1", 1, "LeaseExpired"),
        (2, "r1", 2, "KeepAliveFailed"),
    ]
    assert [bytes(n.state) for n in notifications] == [s for _, s in log.read_stored()]


def test_reads_cross_page_boundaries(log: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "PAGE", 7)
    log.append_batch([LeaseExpired(subject=f"r{i}") for i in range(30)])
    assert [p for p, _ in log.read_stored()] == list(range(1, 31))
    assert [p for p, _ in log.read_stored(5, 22)] == list(range(5, 23))
    assert [p for p, _ in log.backend.read_leaves(3)] == list(range(3, 31))
    assert log.root() == naive_root(log)


def test_dropped_connections_are_retried(url: str) -> None:
    name = f"adminchain-{pg.parse_url(url).schema}"  # libpq options pass through the URL
    with Ledger.open(f"{url}&application_name={name}") as log:
        log.append(LeaseExpired(subject="a"))
        assert log.backend.wait_beyond(0, 1)
        with raw(url) as conn:  # kill this ledger's pooled sessions, nobody else's
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert killed is not None
        assert int(str(killed[0])) >= 1
        assert log.append(LeaseExpired(subject="b")).position == 2
        assert log.size() == 2
        assert [p for p, _ in log.read_stored()] == [1, 2]


# ----------------------------------------------------------------------------- waking


def _append_later(url: str, go: threading.Event) -> None:
    go.wait(30)
    with Ledger.open(url) as log:
        log.append(LeaseExpired(subject="late"))


def test_wait_beyond_is_woken_by_another_process(log: Ledger, url: str) -> None:
    go = SPAWN.Event()
    proc = SPAWN.Process(target=_append_later, args=(url, go))
    proc.start()
    try:
        assert not log.backend.wait_beyond(0, 0.3)  # also starts the LISTEN connection
        go.set()
        started = time.monotonic()
        assert log.backend.wait_beyond(0, 30)
        assert time.monotonic() - started < 20
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    assert [e.event.subject for e in log.follow(0, stop=0.1)] == ["late"]


def test_a_notify_announces_the_size_so_waiters_need_no_read(
    log: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every append's NOTIFY carries the log's new size: once the listener heard it, waiters
    answer without a query of their own (with several servers over one ledger, every commit
    wakes every waiter). A NOTIFY without a size (eventsourcing's own insert path) makes them
    read the size again."""
    backend = log.backend
    assert isinstance(backend, pg.PostgresBackend)
    assert not backend.wait_beyond(0, 0.3)  # starts the LISTEN connection
    reads: list[int] = []
    real_size = backend.size

    def counted() -> int:
        reads.append(1)
        return real_size()

    monkeypatch.setattr(backend, "size", counted)
    log.append_batch([LeaseExpired(subject="a"), LeaseExpired(subject="b")])
    deadline = time.monotonic() + 20
    while backend._listener.known < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend._listener.known == 2
    reads.clear()
    assert backend.wait_beyond(1, 5)
    assert not backend.wait_beyond(2, 0.3)
    assert reads == [1]  # the call that found nothing read once, to be sure, then slept
    reads.clear()
    assert backend.wait_beyond(0, 5)
    assert reads == []
    with psycopg.connect(**backend.target.connect_kwargs(), autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, '')", (backend.recorder.channel_name,))
    blind = backend._listener.generation
    while backend._listener.generation == blind and time.monotonic() < deadline:
        time.sleep(0.01)
    reads.clear()
    assert not backend.wait_beyond(2, 0.2)
    assert reads == [1]


def test_eventsourcing_subscriptions_hear_the_ledgers_appends(log: Ledger) -> None:
    """The recorder's own LISTEN/NOTIFY subscription works on the ledger's channel."""
    backend = log.backend
    assert isinstance(backend, pg.PostgresBackend)
    log.append(LeaseExpired(subject="before"))
    with backend.recorder.subscribe(gt=1) as subscription:
        timer = threading.Timer(0.2, lambda: log.append(LeaseExpired(subject="after")))
        timer.start()
        try:
            notification = next(iter(subscription))
        finally:
            timer.join()
    assert (notification.id, notification.originator_id) == (2, "after")


def test_wait_beyond_polls_when_listen_is_unavailable(
    log: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = log.backend
    assert isinstance(backend, pg.PostgresBackend)
    monkeypatch.setattr(backend._listener, "start", lambda: None)
    timer = threading.Timer(0.3, lambda: log.append(LeaseExpired(subject="x")))
    timer.start()
    try:
        assert backend.wait_beyond(0, 10)
    finally:
        timer.join()


# ----------------------------------------------------------------------------- views


def test_views_match_a_replay_and_track_the_log(log: Ledger) -> None:
    events = mixed_events(300)
    log.append_batch(events[:150])
    views = Views(log)
    assert views.catch_up() == 150
    log.append_batch(events[150:])
    assert views.catch_up() == 300
    replayed = Folder().apply_all(e.event for e in log.read())
    assert views.states() == replayed.states
    history = views.history("n0")
    assert history
    assert all(row["verdicts"] for row in history)


def test_a_crash_inside_a_catch_up_writes_nothing(
    log: Ledger, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections import store_postgres  # noqa: PLC0415

    log.append_batch(mixed_events(60))
    views = Views(log)
    real_flush = store_postgres._PgViewTxn.flush

    def flush_then_crash(self: store_postgres._PgViewTxn) -> None:
        real_flush(self)  # states and tracking are written inside the transaction ...
        raise RuntimeError("crash before commit")  # ... and never committed

    monkeypatch.setattr(store_postgres._PgViewTxn, "flush", flush_then_crash)
    with pytest.raises(RuntimeError):
        views.catch_up()
    monkeypatch.undo()
    assert views.tracking() == 0
    assert count(url, "view_state") == 0
    assert views.catch_up() == 60
    assert views.states() == Folder().apply_all(e.event for e in log.read()).states


def _catch_up_worker(url: str) -> None:
    with Ledger.open(url) as log:
        store = PostgresViews(log.backend)  # type: ignore[arg-type]
        while True:
            tracking, size = store.catch_up_chunk(25)
            if tracking >= size:
                return


def test_concurrent_catch_ups_never_fold_an_event_twice(log: Ledger, url: str) -> None:
    log.append_batch(mixed_events(400))
    PostgresViews(log.backend).reset()  # type: ignore[arg-type]  # tables exist before the race
    procs = [SPAWN.Process(target=_catch_up_worker, args=(url,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    views = Views(log)
    assert views.tracking() == 400
    assert views.states() == Folder().apply_all(e.event for e in log.read()).states


def test_strict_appends_read_the_views_inside_the_write(log: Ledger) -> None:
    views = Views(log)
    log.append(EnterMaintenance(subject="n1", actor="op"))
    views.catch_up()
    log.append(MaintenanceObserved(subject="n1", state="Maintenance"))  # not yet folded
    from ledger.errors import StrictRefusedError  # noqa: PLC0415
    from ledger.events import ExitMaintenance  # noqa: PLC0415

    with pytest.raises(StrictRefusedError):
        log.append(EnterMaintenance(subject="n1", actor="op"), precondition=views.strict())
    result = log.append(ExitMaintenance(subject="n1", actor="op"), precondition=views.strict())
    assert result.position == 3


def test_tiles_hold_every_node_across_batches_and_pages(
    log: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree is stored 32 nodes of a level a row: batches that start and end anywhere in a
    tile, single appends and big batches all leave every node readable, equal to a fresh
    recomputation; leaves read back once each when a tile straddles two pages."""
    sizes = [1, 30, 1, 2, 64, 3, 100, 31, 33, 1, 1, 200]
    for n, size in enumerate(sizes):
        log.append_batch([LeaseExpired(subject=f"r{n}-{i}", at=T0) for i in range(size)])
    expected = merkle.DictNodeStore()
    leaves = [merkle.leaf_hash(leaf_bytes(p, s)) for p, s in log.read_stored()]
    merkle.append_leaves(expected, 0, leaves)
    nodes = log.backend.read_nodes()
    assert {key: nodes.get(*key) for key in expected.nodes} == expected.nodes
    with pytest.raises(KeyError):
        nodes.get(0, len(leaves))
    monkeypatch.setattr(pg, "PAGE", 7)  # pages of 7 positions: most tiles straddle two
    assert list(log.backend.read_leaves(1)) == list(enumerate(leaves, start=1))
    assert list(log.backend.read_leaves(40, 100)) == list(enumerate(leaves, start=1))[39:100]
    assert log.root() == naive_root(log)


def test_a_precondition_after_a_background_copy_gets_a_drained_connection(
    log: Ledger, url: str
) -> None:
    """A big batch is COPY'd from a worker thread; a later request's precondition that takes
    the connection (`ops.own()`) must see every earlier row, written and acknowledged."""
    big = [LeaseExpired(subject=f"r{i % 50}", id=f"big-{i}", at=T0) for i in range(6000)]
    table = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(pg.parse_url(url).schema), sql.Identifier(pg.EVENTS_TABLE)
    )
    counted: list[int] = []

    def counts_rows(ops: TxnOps, events: object) -> None:
        own = ops.own()
        assert isinstance(own, pg.PostgresTxnOps)
        row = own.cursor.execute(table).fetchone()
        assert row is not None
        counted.append(int(row[0]))

    now = datetime.now(UTC)
    first = AppendRequest(big, now)
    second = AppendRequest([LeaseExpired(subject="x", id="last", at=T0)], now, counts_rows)
    log.backend.write([first, second])
    assert counted == [6000]
    assert second.result == [Appended(6001, "last", duplicate=False)]
    assert count(url, pg.EVENTS_TABLE) == 6001
    assert log.root() == naive_root(log)


def test_rebuild_replay_checkpoint_and_verify(log: Ledger, url: str) -> None:
    log.append_batch(mixed_events(120))
    views = Views(log)
    assert views.rebuild() == 120
    checkpoint, _note = make_checkpoint(views)
    assert checkpoint.size == 120
    assert verify(log).ok
    with pytest.MonkeyPatch.context() as patch:  # the digests folded by a second process
        patch.setattr(workers, "PARALLEL_FROM", 1)
        assert verify(log).checkpoints_checked == 1
        assert dict(integrity.checkpoint_digests(log, [120])) == {120: checkpoint.state_digest}
        log.put_checkpoint(60, Checkpoint(log.origin(), 60, log.root(60), bytes(32)).to_body())
        wrong = verify(log)
        assert wrong.first_bad_position == 1
        assert "projection digest at size 60" in wrong.detail
    schema = pg.parse_url(url).schema
    with raw(url) as conn:  # tamper with one stored event behind the ledger's back
        conn.execute(
            sql.SQL(
                "UPDATE {}.{} SET state = state || '\\x00'::bytea WHERE notification_id = 57"
            ).format(sql.Identifier(schema), sql.Identifier(pg.EVENTS_TABLE))
        )
    result = verify(log)
    assert not result.ok
    assert result.first_bad_position == 57


# ----------------------------------------------------------------------------- opening


def test_an_unreachable_server_is_named_in_the_error() -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1\b"):
        Ledger.open("postgresql://postgres@127.0.0.1:1/adminchain_test?schema=x&connect_timeout=2")
    assert time.monotonic() - started < 10


def test_a_missing_database_is_a_clear_error(url: str) -> None:
    base, _, _ = url.partition("?")
    missing = base.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(BackendUnavailableError, match="no_such_database_here"):
        Ledger.open(missing)


def test_the_schema_parameter_and_the_default_schema(url: str) -> None:
    target = pg.parse_url(url)
    assert target.schema.startswith("t_")
    assert pg.parse_url(url.partition("?")[0]).schema == pg.DEFAULT_SCHEMA
    assert pg.parse_url("postgresql://u:s%40cret@h:6543/db?schema=s1").password == "s@cret"
    with Ledger.open(url) as log:
        assert "s%40cret" not in log.url
        assert log.url.endswith(f"schema={target.schema}")
        log.append(LeaseExpired(subject="a"))
        log.put_checkpoint(1, "note")
        log.backend.put_meta("k", b"v")
    with Ledger.open(url) as log:  # reopening finds everything in its own schema
        assert log.size() == 1
        assert log.checkpoints() == [(1, "note")]
        assert log.backend.get_meta("k") == b"v"


def test_a_schema_of_another_format_is_refused(url: str) -> None:
    Ledger.open(url).close()
    schema = pg.parse_url(url).schema
    with raw(url) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.meta SET value = 'other/9' WHERE key = 'format'").format(
                sql.Identifier(schema)
            )
        )
    with pytest.raises(StorageError, match="other/9"):
        Ledger.open(url)


def _open_worker(url: str) -> None:
    with Ledger.open(url) as log:
        Views(log).catch_up()
        log.append(LeaseExpired(subject="x"))


def test_processes_creating_one_schema_at_once(url: str) -> None:
    procs = [SPAWN.Process(target=_open_worker, args=(url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Ledger.open(url) as log:
        assert [e.position for e in log.read()] == [1, 2, 3, 4]


def test_small_appends_run_pipelined_and_store_what_copy_stores(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small appends (the server's) run in pipeline mode, their rows INSERTed as arrays and
    their tiles upserted; big ones COPY. Both store the same rows, ids and tree: a log built
    from small appends matches one built by a single big append, tile for tile."""
    import msgspec  # noqa: PLC0415

    events = [  # explicit ids and one clock: both logs hold the same bytes
        msgspec.structs.replace(e, id=f"id-{n}") for n, e in enumerate(mixed_events(600))
    ]

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return T0

    monkeypatch.setattr("ledger.ledger.datetime", Frozen)
    pipelined: list[bool] = []
    real = pg.PostgresBackend.transaction

    def spy(self: pg.PostgresBackend, body: object, **kwargs: object) -> object:
        if kwargs.get("what") == "append":
            pipelined.append(bool(kwargs.get("pipelined")))
        return real(self, body, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pg.PostgresBackend, "transaction", spy)
    other = fresh_pg_url()
    try:
        with Ledger.open(url) as small, Ledger.open(other) as big:
            for start in range(0, 600, 7):  # partial tiles rewritten again and again
                small.append_batch(events[start : start + 7])
            monkeypatch.setattr("ledger.postgres.backend._BACKGROUND_ROWS", 100)
            big.append_batch(events)
            assert pipelined == [True] * len(range(0, 600, 7)) + [False]
            assert small.size() == big.size() == 600
            assert small.root() == big.root() == naive_root(small)
            assert [e.stored for e in small.read()] == [e.stored for e in big.read()]
        tiles = sql.SQL("SELECT level, tile, hashes FROM {}.merkle_tiles ORDER BY level, tile")
        ids = sql.SQL("SELECT id, position FROM {}.ids ORDER BY id")
        found = []
        for target in (url, other):
            with raw(target) as conn:
                schema = sql.Identifier(pg.parse_url(target).schema)
                found.append(
                    (
                        conn.execute(tiles.format(schema)).fetchall(),
                        conn.execute(ids.format(schema)).fetchall(),
                    )
                )
        assert found[0] == found[1]
        assert len(found[0][1]) == 600
        assert found[0][0]
    finally:
        drop_pg_schema(other)
