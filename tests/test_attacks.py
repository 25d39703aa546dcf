"""The attack suite of issue 13 (and issue 12 item 2): an operator's worst day, each attack a test.

Each test here failed on fa4645a and passes now. They run on both backends where the attack
applies. Long forms (many rounds) are the soak in `tests/test_soak.py`, marked ``slow`` and left
out of the default run (``pytest -m slow tests/test_soak.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import psycopg
import pytest

from ledger.events import KeepAliveFailed, LeaseExpired
from ledger.ledger import Ledger
from ledger.lmdb_backend import subject_key
from projections.api import Views
from replay.audit import run_audit
from replay.integrity import verify
from replay.rebuild import as_of, position_at
from tests.conftest import PG_URL, drop_pg_schema, fresh_pg_url, require_postgres

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli(
    *args: str,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`adminchain ARGS` as a subprocess; never a traceback, never a signal."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    full_env = dict(os.environ, ADMINCHAIN_ACTOR="alice", **(env or {}))
    full_env.pop("ADMINCHAIN_LEDGER", None)
    done = subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        input=data, capture_output=True, cwd=cwd, env=full_env, timeout=timeout, check=False,
    )  # fmt: skip
    result = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr}"
    return result


def one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The result failed with `status` and one ``error:`` line (a hint may follow)."""
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("error:", "hint:")) for line in lines), result.stderr
    return errors[0]


def jsonl(*events: Mapping[str, object]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


# ---------------------------------------------------------- issue 12.2: reading never creates

READERS = [
    ["status"],
    ["status", "--as-of", "1"],
    ["history", "node-1"],
    ["log"],
    ["replay"],
    ["verify"],
    ["prove", "1"],
    ["checkpoint"],
    ["trust", "list"],
]


def _schemas() -> set[str]:
    base = PG_URL.split("?")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_a_missing_lmdb_ledger_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    target = tmp_path / "no-such.lmdb"
    line = one_error_line(cli(*args, "--ledger", str(target), cwd=tmp_path), 2)
    assert "no ledger at" in line
    assert not target.exists()


@pytest.mark.parametrize(
    "args",
    [["append", "-"], ["serve", "--listen", "127.0.0.1:0"], ["status"]],
    ids=" ".join,
)
def test_an_empty_ledger_location_is_refused_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    """`--ledger ""` (an unset variable in a script) is a usage error, never an LMDB
    environment made in the working directory."""
    line = one_error_line(cli(*args, "--ledger", "", cwd=tmp_path), 2)
    assert "the ledger location is empty" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_reading_a_mistyped_pg_schema_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    url = fresh_pg_url()
    schema = url.rpartition("schema=")[2]
    try:
        line = one_error_line(cli(*args, "--ledger", url, cwd=tmp_path), 2)
        assert "no ledger at" in line
        assert schema not in _schemas()
    finally:
        drop_pg_schema(url)


@pytest.mark.postgres
def test_reading_a_mistyped_pg_database_says_no_ledger(tmp_path: Path) -> None:
    require_postgres()
    base = PG_URL.split("?")[0].rpartition("/")[0]
    line = one_error_line(cli("verify", "--ledger", f"{base}/no_such_db_x9", cwd=tmp_path), 2)
    assert "no ledger at" in line
    assert "no_such_db_x9" in line


def test_appending_creates_the_ledger(ledger_target: str, tmp_path: Path) -> None:
    assert cli("verify", "--ledger", ledger_target, cwd=tmp_path).returncode == 2
    event = {"type": "LeaseExpired", "subject": "r1"}
    assert (
        cli("append", "--ledger", ledger_target, stdin=jsonl(event), cwd=tmp_path).returncode == 0
    )
    assert cli("verify", "--ledger", ledger_target, cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------ 13.2: audits on a live ledger


class StreamingAppender:
    """`adminchain append --stream --json` in another process, fed events as fast as it takes
    them (detachment changes every few events), acknowledgements collected."""

    def __init__(self, target: str, cwd: Path) -> None:
        env = dict(os.environ, ADMINCHAIN_ACTOR="loop")
        env.pop("ADMINCHAIN_LEDGER", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adminchain", "append", "--stream", "--json",
             "--ledger", target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
            env=env,
        )  # fmt: skip
        self.acknowledged: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._feeder.start()
        self._reader.start()

    def _feed(self) -> None:
        assert self.process.stdin is not None
        n = 0
        kinds = ["KeepAliveFailed", "KeepAliveFailed", "KeepAliveFailed", "HealthObserved"]
        try:
            while not self._stop.is_set():
                event: dict[str, object] = {
                    "type": kinds[n % 4],
                    "subject": f"runner-{n % 5}",
                    "id": f"s-{n}",
                }
                if event["type"] == "HealthObserved":
                    event["healthy"] = True
                self.process.stdin.write(json.dumps(event).encode() + b"\n")
                self.process.stdin.flush()
                n += 1
        except (BrokenPipeError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.acknowledged.append(json.loads(line))

    def wait_for(self, count: int) -> None:
        """Until `count` events are acknowledged (the appender is really running)."""
        while len(self.acknowledged) < count:
            assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.01)

    def stop(self) -> list[dict[str, object]]:
        self._stop.set()
        self._feeder.join()
        self.process.wait(timeout=60)
        self._reader.join()
        assert self.process.stderr is not None
        stderr = self.process.stderr.read().decode()
        assert self.process.returncode == 0, stderr
        return self.acknowledged


def audit_live(target: str, cwd: Path, rounds: int) -> tuple[int, list[str]]:
    """`rounds` of verify and replay while an appender streams; (acknowledged, false alarms).

    Afterwards every acknowledged event is in the log, at its acknowledged position."""
    alarms: list[str] = []
    with Ledger.open(target) as log:
        log.append(KeepAliveFailed(subject="runner-0", id="seed"))
        appender = StreamingAppender(target, cwd)
        try:
            appender.wait_for(5)
            for _ in range(rounds):
                result = verify(log)
                if not result.ok:
                    alarms.append(f"verify: {result.detail}")
                report = run_audit(log)
                if report.diverged:
                    alarms.append(f"replay diverged: {report.diverged} {report.differences}")
        finally:
            acknowledged = appender.stop()
        for ack in acknowledged:
            entry = log.get(int(ack["position"]))  # type: ignore[call-overload]
            assert entry.event.id == ack["id"]
        assert verify(log).ok
    return len(acknowledged), alarms


def test_audits_of_a_live_ledger_raise_no_false_alarm(ledger_target: str, tmp_path: Path) -> None:
    acknowledged, alarms = audit_live(ledger_target, tmp_path, rounds=10)
    assert alarms == []
    assert acknowledged > 0


# ------------------------------------------------------------------ 13.3: time never runs back


class SteppedClock(datetime):
    """`datetime` whose `now` is a host clock an operator (or NTP) can step: two hosts take
    turns (`hosts` offsets), each call a second later."""

    ticks = 0
    offsets: tuple[timedelta, ...] = (timedelta(0),)
    base = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    @classmethod
    def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
        cls.ticks += 1
        return cls.base + timedelta(seconds=cls.ticks) + cls.offsets[cls.ticks % len(cls.offsets)]


@pytest.mark.parametrize(
    "offsets",
    [(timedelta(0),), (timedelta(0), timedelta(minutes=-5))],
    ids=["clock-stepped-back", "two-hosts-5min-apart"],
)
def test_recorded_at_never_decreases_and_as_of_is_exact(
    ledger_target: str, monkeypatch: pytest.MonkeyPatch, offsets: tuple[timedelta, ...]
) -> None:
    monkeypatch.setattr(SteppedClock, "offsets", offsets)
    monkeypatch.setattr("ledger.ledger.datetime", SteppedClock)
    with Ledger.open(ledger_target) as log:
        for n in range(13):
            log.append_batch([LeaseExpired(subject=f"r{n % 3}", id=f"c-{n}-{k}") for k in (1, 2)])
            if n == 6:
                monkeypatch.setattr(SteppedClock, "base", SteppedClock.base - timedelta(hours=1))
        times = [e.recorded_at for e in log.read()]
        assert times == sorted(times)
        probes = sorted({*times, times[0] - timedelta(hours=2), times[-1] + timedelta(hours=2)})
        probes += [t - timedelta(microseconds=1) for t in times]
        for when in probes:
            expected = sum(1 for t in times if t <= when)
            assert position_at(log, when) == expected
            assert as_of(log, when=when)[1] == expected


def test_a_copy_keeps_recorded_times_byte_for_byte(tmp_path: Path) -> None:
    source, copy = tmp_path / "source.lmdb", tmp_path / "copy.lmdb"
    with Ledger.open(source) as log:
        log.append(LeaseExpired(subject="r", id="one"))
        log.append(LeaseExpired(subject="r", id="two"))
        with Ledger.open(copy) as dst:
            dst.copy_from(log)
            assert list(dst.read_stored()) == list(log.read_stored())


# ------------------------------------------------------------------ 13.1: nothing derived unchecked


class Damage:
    """Edits derived data behind the ledger's back, as a bit flip or a careless admin would."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pg = target.startswith("postgresql://")

    def sql(self, statement: str, *params: object) -> None:
        base, _, schema = self.target.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(statement, params)

    @contextlib.contextmanager
    def lmdb(self) -> Iterator[tuple[Any, Callable[[bytes], Any]]]:
        env = lmdb.open(self.target, max_dbs=64)
        try:
            with env.begin(write=True) as txn:
                yield txn, lambda name: env.open_db(name, txn=txn, create=False)
        finally:
            env.close()

    def drop_id(self, event_id: str) -> None:
        if self.pg:
            self.sql("DELETE FROM ids WHERE id = %s", event_id)
            return
        with self.lmdb() as (txn, db):
            assert txn.delete(event_id.encode(), db=db(b"ledger.ids"))

    def point_id(self, event_id: str, position: int) -> None:
        """Make the id index say that `event_id` is at `position`."""
        if self.pg:
            self.sql("UPDATE ids SET position = %s WHERE id = %s", position, event_id)
            return
        with self.lmdb() as (txn, db):
            assert txn.put(event_id.encode(), position.to_bytes(8, "big"), db=db(b"ledger.ids"))

    def drop_subject_entry(self, position: int) -> None:
        with self.lmdb() as (txn, db):
            idx = db(b"stored_events.idx")
            keys = [bytes(k) for k, v in txn.cursor(db=idx) if int.from_bytes(v, "big") == position]
            assert len(keys) == 1
            txn.delete(keys[0], db=idx)

    def garble_state(self, projection: str, subject: str) -> None:
        if self.pg:
            self.sql(
                "UPDATE view_state SET state = '\\xc1c1'::bytea"
                " WHERE projection = %s AND subject = %s",
                projection,
                subject,
            )
            return
        key = projection.encode() + b"\x00" + subject_key(subject)
        with self.lmdb() as (txn, db):
            assert txn.get(key, db=db(b"views.state")) is not None
            txn.put(key, msgspec.msgpack.encode((subject, b"\xc1\xc1")), db=db(b"views.state"))

    def tracking_to(self, position: int) -> None:
        if self.pg:
            self.sql("UPDATE view_tracking SET position = %s", position)
            return
        with self.lmdb() as (txn, db):
            txn.put(b"tracking", position.to_bytes(8, "big"), db=db(b"views.meta"))


def small_ledger(target: str) -> None:
    events = [
        {"type": "EnterMaintenance", "subject": "node-1", "actor": "alice", "id": "e-1"},
        {"type": "KeepAliveFailed", "subject": "runner-1", "id": "e-2"},
        {"type": "KeepAliveFailed", "subject": "runner-1", "id": "e-3"},
        {"type": "ExitMaintenance", "subject": "node-1", "actor": "alice", "id": "e-4"},
        {"type": "KeepAliveFailed", "subject": "runner-1", "id": "e-5"},
    ]
    assert cli("append", "--ledger", target, stdin=jsonl(*events)).returncode == 0
    assert cli("catch-up", "--ledger", target).returncode == 0
    assert cli("verify", "--ledger", target).returncode == 0


def verify_names(target: str, words: str) -> None:
    result = cli("verify", "--json", "--ledger", target)
    assert result.returncode == 1, result.stdout + result.stderr
    detail = json.loads(result.stdout)["detail"]
    assert words in detail, detail


def repaired(target: str) -> None:
    assert cli("repair", "--ledger", target).returncode == 0
    result = cli("verify", "--json", "--ledger", target)
    assert result.returncode == 0, result.stdout


def test_a_lost_id_index_entry_is_named_and_repaired(ledger_target: str) -> None:
    small_ledger(ledger_target)
    Damage(ledger_target).drop_id("e-3")
    verify_names(ledger_target, "id index has no entry for position 3")
    repaired(ledger_target)
    again = cli("append", "--json", "--ledger", ledger_target, stdin=jsonl(
        {"type": "KeepAliveFailed", "subject": "runner-1", "id": "e-3"}))  # fmt: skip
    found = json.loads(again.stdout)
    assert {k: found[k] for k in ("position", "id", "duplicate")} == {
        "position": 3,
        "id": "e-3",
        "duplicate": True,
    }


def test_an_id_index_entry_beyond_the_log_is_named_and_repaired(ledger_target: str) -> None:
    small_ledger(ledger_target)
    Damage(ledger_target).point_id("e-3", 99)
    verify_names(ledger_target, "id index names position 99, beyond the log (5)")
    repaired(ledger_target)


def test_an_id_stored_twice_behind_a_lost_entry_is_named(ledger_target: str) -> None:
    small_ledger(ledger_target)
    Damage(ledger_target).drop_id("e-3")
    event = {"type": "KeepAliveFailed", "subject": "runner-1", "id": "e-3"}
    assert cli("append", "--ledger", ledger_target, stdin=jsonl(event)).returncode == 0
    verify_names(ledger_target, "position 3 repeats the key of position 6")


def test_a_lost_subject_index_entry_is_named_and_repaired(lmdb_target: str) -> None:
    small_ledger(lmdb_target)
    Damage(lmdb_target).drop_subject_entry(2)
    verify_names(lmdb_target, "subject index has no entry for position 2")
    repaired(lmdb_target)
    history = json.loads(cli("history", "runner-1", "--json", "--ledger", lmdb_target).stdout)
    assert [row["position"] for row in history] == [2, 3, 5]


def test_a_damaged_stored_state_is_one_error_line_named_and_repaired(ledger_target: str) -> None:
    """Verdicts are not stored (they are recomputed from the log); the states are."""
    small_ledger(ledger_target)
    Damage(ledger_target).garble_state("maintenance", "node-1")
    line = one_error_line(cli("status", "maintenance", "--ledger", ledger_target), 1)
    assert "cannot be decoded" in line
    assert "repair" in line
    verify_names(ledger_target, "stored maintenance state of 'node-1' differs")
    repaired(ledger_target)
    assert cli("status", "maintenance", "--ledger", ledger_target).returncode == 0
    assert cli("history", "node-1", "--ledger", ledger_target).returncode == 0


def test_views_beyond_the_log_are_named_and_repaired(ledger_target: str) -> None:
    small_ledger(ledger_target)
    Damage(ledger_target).tracking_to(9)
    verify_names(ledger_target, "views are at position 9, beyond the log's end (5)")
    repaired(ledger_target)


def test_repair_touches_nothing_but_what_is_derived(ledger_target: str) -> None:
    small_ledger(ledger_target)
    with Ledger.open(ledger_target, create=False) as log:
        before = (list(log.read_stored()), log.root(), log.checkpoints(), log.origin())
    repaired(ledger_target)
    with Ledger.open(ledger_target, create=False) as log:
        assert (list(log.read_stored()), log.root(), log.checkpoints(), log.origin()) == before


# ------------------------------------------------------------------ 13.6: read-only archives


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only: a read-only bind mount for root (whom permissions do not stop),
    files without write permission for anyone else."""
    if os.getuid() == 0:
        mount = ["mount", "--bind", str(directory), str(directory)]
        if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
            pytest.skip("cannot bind-mount here")
        try:
            remount = ["mount", "-o", "remount,ro,bind", str(directory)]
            subprocess.run(remount, capture_output=True, check=True)
            yield
        finally:
            subprocess.run(["umount", str(directory)], capture_output=True, check=False)
        return
    paths = [*directory.rglob("*"), directory]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield
    finally:
        for path in paths:
            path.chmod(0o700)


def test_an_archived_read_only_ledger_can_be_audited(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    target = archive / "ledger.lmdb"
    small_ledger(str(target))
    more = {"type": "KeepAliveFailed", "subject": "runner-2", "id": "e-6"}
    assert cli("append", "--ledger", str(target), stdin=jsonl(more)).returncode == 0  # views lag
    ledger = ["--ledger", str(target)]
    with read_only(archive):
        with pytest.raises(OSError, match=r"Read-only|Permission"):
            (target / "probe").write_text("x")
        verified = cli("verify", "--json", *ledger)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["size"] == 6
        log = cli("log", "--json", *ledger)
        assert [json.loads(line)["position"] for line in log.stdout.splitlines()] == list(
            range(1, 7)
        )
        as_of = cli("status", "--as-of", "3", "--json", *ledger)
        assert as_of.returncode == 0, as_of.stderr
        replayed = cli("replay", "--json", *ledger)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["diverged"] == []
        refused = cli("maintenance", "enter", "node-9", *ledger)
        assert "read-only" in one_error_line(refused, 1).lower()
    assert cli("verify", *ledger).returncode == 0


# ------------------------------------------------------------------ 13.4: commit uncertainty


class LostCommitAnswer:
    """The next write transaction commits on the server, then its connection is cut before
    the answer reaches the appender (as a network failure right after COMMIT would)."""

    def __init__(self, backend: Any) -> None:
        self._original = backend.datastore.get_connection
        self.armed = self.cuts = 0
        backend.datastore.get_connection = self._get_connection

    @contextlib.contextmanager
    def _get_connection(self) -> Iterator[Any]:
        armed, self.armed = self.armed, 0  # an append's first connection is its write's
        with self._original() as conn:
            yield conn
        if armed:
            self.cuts += 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.postgres
def test_a_retry_after_a_lost_commit_answer_is_answered_as_the_first_attempt() -> None:
    url = fresh_pg_url()
    try:
        with Ledger.open(url) as log:
            cut = LostCommitAnswer(log.backend)
            cut.armed = 1
            given = log.append(LeaseExpired(subject="r1", id="sent-1"))
            assert given.duplicate is False
            cut.armed = 1
            minted = log.append(LeaseExpired(subject="r1"))  # the ledger mints its id
            assert (minted.position, minted.duplicate) == (2, False)
            cut.armed = 1
            mixed = log.append_batch(
                [LeaseExpired(subject="r2", id="sent-1"), LeaseExpired(subject="r2", id="new")]
            )
            assert [(a.position, a.duplicate) for a in mixed] == [(1, True), (3, False)]
            assert cut.cuts == 3
            assert log.size() == 3  # nothing stored twice
            assert verify(log).ok
    finally:
        drop_pg_schema(url)


# ------------------------------------------------------------------ 13.7: outages, many clients


class Outage:
    """A TCP proxy in front of PostgreSQL that an attack can take down (every connection cut,
    new ones refused) and bring back: a restart or a network outage, without touching the
    server the other tests share."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._up.set()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self._up.clear()
        with self._lock:
            cut, self._open = self._open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def up(self) -> None:
        self._up.set()

    def close(self) -> None:
        """Cut everything and end the accepting thread (closing a socket does not wake an
        `accept` blocked on it; shutting it down does): no thread outlives the test (a
        process with threads stands no worker by, `replay.workers.standing_by`)."""
        self.down()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(timeout=10)

    def url(self, url: str) -> str:
        return url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")


def ride_out_outage(seconds: float, events: int) -> tuple[int, str, str]:
    """A stream appender and a follower through a proxy that is down `seconds` in the middle:
    (acknowledged events, the appender's stderr, the follower's stderr)."""
    url = fresh_pg_url()
    proxy = Outage(("127.0.0.1", 5432))
    target = proxy.url(url)
    env = dict(os.environ, ADMINCHAIN_ACTOR="loop")
    env.pop("ADMINCHAIN_LEDGER", None)
    command = [sys.executable, "-m", "adminchain"]
    try:
        assert (
            cli("append", "--ledger", url, stdin=jsonl(dict(KA_EVENT, id="first"))).returncode == 0
        )
        appender = subprocess.Popen(
            [*command, "append", "--stream", "--json", "--ledger", target], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        follower = subprocess.Popen(
            [*command, "catch-up", "--follow", "--poll", "0.2", "--ledger", target], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert appender.stdin is not None
        assert appender.stdout is not None
        acknowledged = []
        for n in range(events):
            if n == events // 2:
                proxy.down()
                time.sleep(seconds)  # the outage itself: the processes must wait it out
                proxy.up()
            appender.stdin.write(json.dumps(dict(KA_EVENT, id=f"o-{n}")).encode() + b"\n")
            appender.stdin.flush()
            acknowledged.append(json.loads(appender.stdout.readline()))
        appender.stdin.close()
        assert appender.wait(timeout=120) == 0
        with Ledger.open(url, create=False) as log:
            views = Views(log)
            deadline = time.monotonic() + 120
            while views.tracking() < log.size() and time.monotonic() < deadline:
                time.sleep(0.2)  # the follower catches up
            assert views.tracking() == log.size()
            for ack in acknowledged:
                assert log.get(int(ack["position"])).event.id == ack["id"]
            assert log.size() == events + 1
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=60) == 0
        assert appender.stderr is not None
        assert follower.stderr is not None
        return len(acknowledged), appender.stderr.read().decode(), follower.stderr.read().decode()
    finally:
        proxy.close()
        drop_pg_schema(url)


KA_EVENT = {"type": "KeepAliveFailed", "subject": "runner-1"}


@pytest.mark.postgres
def test_long_running_processes_ride_out_a_postgres_outage() -> None:
    """Down for 8 s (the old appender gave up after about 5 s): nothing lost, said on stderr."""
    require_postgres()
    acknowledged, appender, follower = ride_out_outage(8, 20)
    assert acknowledged == 20
    assert "unreachable" in appender
    assert "retrying" in appender
    assert "is back" in appender
    assert "Traceback" not in appender + follower


@pytest.mark.postgres
def test_sixty_concurrent_appenders_share_pooled_connections(tmp_path: Path) -> None:
    """60 appender processes at once, more than the server's connection slots allow at one
    time: they queue for them (retrying with backoff) instead of failing."""
    require_postgres()
    url = fresh_pg_url()
    try:
        assert cli("append", "--ledger", url, stdin=jsonl(dict(KA_EVENT, id="x"))).returncode == 0
        env = dict(os.environ, ADMINCHAIN_ACTOR="loop")
        env.pop("ADMINCHAIN_LEDGER", None)
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "adminchain", "append", "--json", "--ledger", url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for _ in range(60)
        ]
        outcomes = [
            p.communicate(jsonl(dict(KA_EVENT, id=f"p-{n}")).encode(), timeout=300)
            for n, p in enumerate(processes)
        ]
        failures = [
            err.decode() for p, (_, err) in zip(processes, outcomes, strict=True) if p.returncode
        ]
        assert failures == []
        with Ledger.open(url, create=False) as log:
            assert log.size() == 61
    finally:
        drop_pg_schema(url)


def test_history_through_an_index_entry_the_log_lacks_is_damage_not_usage(lmdb_target: str) -> None:
    """Found by the bit-flip soak: the subject index names a position whose event is gone."""
    small_ledger(lmdb_target)
    with Damage(lmdb_target).lmdb() as (txn, db):
        assert txn.delete((3).to_bytes(8, "big"), db=db(b"stored_events.log"))
    line = one_error_line(cli("history", "runner-1", "--ledger", lmdb_target), 1)
    assert "position 3" in line
    assert "damaged" in line
