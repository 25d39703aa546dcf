"""Crash safety (SPEC §4): kill -9 an appender mid-flight; nothing acknowledged is ever lost.

Each round starts `adminchain append --stream --json` as a subprocess, feeds it events, reads the
acknowledgements it prints (each printed only once durable), kills it with SIGKILL at a random
moment, reopens the ledger and checks: every acknowledged id is stored at its acknowledged
position, positions are 1..N without gaps, the tree verifies. Rounds: ``ADMINCHAIN_KILL_ROUNDS``
(default 12 here; the soak command runs hundreds).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger.ledger import Ledger
from replay.integrity import verify

ROUNDS = int(os.environ.get("ADMINCHAIN_KILL_ROUNDS", "12"))


def _feed(proc: subprocess.Popen[bytes], round_no: int, stop: threading.Event) -> None:
    assert proc.stdin is not None
    i = 0
    try:
        while not stop.is_set():
            line = {
                "type": "KeepAliveFailed",
                "subject": f"runner-{i % 5}",
                "id": f"r{round_no}-e{i}",
            }
            proc.stdin.write(json.dumps(line).encode() + b"\n")
            proc.stdin.flush()
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)
    except (BrokenPipeError, OSError):
        return


def test_sigkill_during_stream_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    target = str(tmp_path / "kill.lmdb")
    rng = random.Random(7)
    acknowledged: dict[str, int] = {}
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adminchain",
                "append",
                "--stream",
                "--json",
                "--ledger",
                target,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        feeder = threading.Thread(target=_feed, args=(proc, round_no, stop), daemon=True)
        feeder.start()
        assert proc.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        acks_this_round = 0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            ack = json.loads(line)
            acknowledged[ack["id"]] = ack["position"]
            acks_this_round += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        feeder.join(5)
        # anything it printed before dying was acknowledged too
        for line in proc.stdout.read().splitlines():
            if line.strip():
                ack = json.loads(line)
                acknowledged[ack["id"]] = ack["position"]
        assert proc.returncode == -signal.SIGKILL
    assert acknowledged, "the appender acknowledged nothing: the test proved nothing"
    with Ledger.open(target) as log:
        stored = {e.event.id: e.position for e in log.read()}
        assert sorted(stored.values()) == list(range(1, log.size() + 1))
        missing = {i: p for i, p in acknowledged.items() if stored.get(i) != p}
        assert not missing, f"{len(missing)} acknowledged events lost or moved"
        result = verify(log)
        assert result.ok, result.detail
    print(f"\nkill rounds: {ROUNDS}, acknowledged events: {len(acknowledged)}, all present")


PREAMBLE = """
from ledger.ledger import Ledger
from ledger.events import KeepAliveFailed
from projections.api import Views
from replay.integrity import make_checkpoint
log = Ledger.open(T)
views = Views(log)
def batch(n):
    return [KeepAliveFailed(subject=f"r{i % 9}") for i in range(n)]
"""
PHASES = {
    "append": "while True:\n    log.append_batch(batch(2000))\n",
    "catch-up": "log.append_batch(batch(60000))\nprint('ready', flush=True)\n"
    "while True:\n    views.rebuild()\n",
    "checkpoint": "print('ready', flush=True)\n"
    "while True:\n    log.append_batch(batch(500))\n    make_checkpoint(views)\n",
    # `append FILE`: a big append in chunks, the views folded in its own transaction
    "big-append": "print('ready', flush=True)\n"
    "while True:\n    views.append_spooled(log.spool(enumerate(batch(BIG), 1), chunk=1000))\n",
    # the same, staged: committed 3000 events at a time behind the marker (`bulk.COMMIT`)
    "staged-big-append": "from ledger import bulk\nbulk.COMMIT = 3000\nprint('ready', flush=True)\n"
    "while True:\n    views.append_spooled(log.spool(enumerate(batch(BIG), 1), chunk=1000))\n",
}
BIG = 12_000


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_sigkill_in_each_phase_then_views_converge(tmp_path: Path, phase: str) -> None:
    """Kill a process while it appends, updates the stored views, or writes a checkpoint."""
    target = str(tmp_path / f"{phase}.lmdb")
    with Ledger.open(target) as log:
        assert log.size() == 0  # created empty
    script = PREAMBLE + PHASES[phase]
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", f"T = {target!r}\nBIG = {BIG}\n" + script],
            stdout=subprocess.PIPE,
        )
        if phase != "append":
            assert proc.stdout is not None
            proc.stdout.readline()
        time.sleep(random.uniform(0.2, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    from projections.api import Views  # noqa: PLC0415
    from replay.audit import run_audit  # noqa: PLC0415

    with Ledger.open(target) as log:
        assert verify(log).ok
        report = run_audit(log)
        assert report.diverged == []
        assert Views(log).tracking() == log.size()
        if phase.endswith("big-append"):  # all of a big append or none, its views with it
            assert log.size() % BIG == 0, log.size()
            print(f"\nbig appends stored whole: {log.size() // BIG}")
