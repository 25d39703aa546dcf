"""The attack suite of issue 13 (and issue 12 item 2): an operator's worst day, each attack a test.

Each test here failed on fa4645a and passes now. They run on both backends where the attack
applies. Long forms (many rounds) are the soak in `tests/test_soak.py`, marked ``slow`` and left
out of the default run (``pytest -m slow tests/test_soak.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ledger.events import KeepAliveFailed, LeaseExpired
from ledger.ledger import Ledger
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


def jsonl(*events: dict[str, object]) -> str:
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
                event = {"type": kinds[n % 4], "subject": f"runner-{n % 5}", "id": f"s-{n}"}
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
