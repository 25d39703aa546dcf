"""Live views through a server (issue 16, item 4): ``status --watch`` and ``history --follow``
with ``--ledger http://…`` update as events arrive, exactly as on a local ledger, across a
server restart too, and end on Ctrl-C as the local ones do. Subprocess CLI tests against a real
`adminchain serve` (tests/serving.py), on LMDB and PostgreSQL."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.remote import RemoteLedger
from projections.remote import RemoteViews
from tests.serving import Served, make_tokens, start_server
from tests.test_remote import cli


def child_env(ledger: str, token: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ADMINCHAIN_TOKEN", None)
    env.update(USER="tester", LOGNAME="tester", ADMINCHAIN_LEDGER=ledger, COLUMNS="200")
    if token is not None:
        env["ADMINCHAIN_TOKEN"] = token
    return env


def live(cwd: Path, ledger: str, token: str | None, *args: str) -> subprocess.Popen[bytes]:
    """`adminchain ARGS` left running (stdout piped, read line by line)."""
    return subprocess.Popen(
        [sys.executable, "-m", "adminchain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=child_env(ledger, token),
        # Ctrl-C as at a terminal, even when this test runs with SIGINT ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )


_pending: dict[int, bytes] = {}
"""What was read of each child's stdout (by pid) beyond the lines given."""


def read_line(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bytes:
    """The child's next stdout line (fails the test if none comes within `timeout`). Reads
    the pipe's descriptor itself: a frame of several lines comes in one write."""
    assert proc.stdout is not None
    fd, key = proc.stdout.fileno(), proc.pid
    deadline = time.monotonic() + timeout
    while b"\n" not in _pending.get(key, b""):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the command printed nothing"
        chunk = os.read(fd, 1 << 16)
        assert chunk, "the command ended"
        _pending[key] = _pending.get(key, b"") + chunk
    line, _, rest = _pending[key].partition(b"\n")
    _pending[key] = rest
    return line + b"\n"


def ctrl_c(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """SIGINT, then the exit status, the rest of stdout and stderr."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    out = _pending.pop(proc.pid, b"") + out
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def server(ledger_target: str, tmp_path: Path) -> Iterator[Served]:
    s = start_server(ledger_target, tmp_path, tokens=make_tokens(ledger_target))
    try:
        yield s
    finally:
        assert s.stop() == 0


def append_via(s: Served, tmp_path: Path, *args: str) -> None:
    """Another client appends through the server (a shortcut, as the operator of its token)."""
    done = cli(*args, "--actor", "operator", cwd=tmp_path, ledger=s.url,
               token=s.tokens["operator"])
    assert done.returncode == 0, done.stderr


def test_status_watch_through_a_server(server: Served, tmp_path: Path) -> None:
    append_via(server, tmp_path, "maintenance", "enter", "node-1")
    proc = live(
        tmp_path, server.url, server.tokens["reader"],
        "status", "maintenance", "--watch", "--interval", "0.1", "--json",
    )
    try:
        first = json.loads(read_line(proc))
        assert list(first["maintenance"]) == ["node-1"]
        append_via(server, tmp_path, "maintenance", "enter", "node-2")
        second = json.loads(read_line(proc))
        assert list(second["maintenance"]) == ["node-1", "node-2"]
        assert second["maintenance"]["node-2"]["state"] == "EnteringMaintenance"
        append_via(server, tmp_path, "maintenance", "enter", "node-3")
        third = json.loads(read_line(proc))
        assert list(third["maintenance"]) == ["node-1", "node-2", "node-3"]
    finally:
        code, _, err = ctrl_c(proc)
    assert (code, err) == (0, "")  # as on a local ledger: Ctrl-C ends a watch normally


def test_status_watch_human_frames_through_a_server(server: Served, tmp_path: Path) -> None:
    proc = live(tmp_path, server.url, server.tokens["reader"], "status", "--watch")
    try:
        assert read_line(proc).decode().startswith("— position 0, ")
        assert b"nothing is known" in read_line(proc)
        append_via(server, tmp_path, "detach", "runner-a", "--reason", "split brain")
        header = read_line(proc).decode()
        assert header.startswith("— position 1, ")
        assert "(watching; Ctrl-C to stop) —" in header
        assert read_line(proc).decode().startswith("detachment: 1 runner")
    finally:
        code, _, err = ctrl_c(proc)
    assert (code, err) == (0, "")


def test_history_follow_through_a_server(server: Served, tmp_path: Path) -> None:
    append_via(server, tmp_path, "maintenance", "enter", "node-1")
    proc = live(
        tmp_path, server.url, server.tokens["reader"],
        "history", "node-1", "--follow", "--interval", "0.1", "--json",
    )
    try:
        first = json.loads(read_line(proc))
        assert (first["position"], first["type"]) == (1, "EnterMaintenance")
        append_via(server, tmp_path, "detach", "runner-x")  # about another subject: not shown
        append_via(server, tmp_path, "maintenance", "exit", "node-1")
        row = json.loads(read_line(proc))
        assert (row["position"], row["type"]) == (3, "ExitMaintenance")
        assert row["verdicts"][0]["reason"] == "invalid_successor"
    finally:
        code, rest, err = ctrl_c(proc)
    assert (code, err) == (0, "")
    assert rest == ""  # nothing about runner-x, nothing twice


def test_history_follow_goes_on_across_a_server_restart(
    lmdb_target: str, tmp_path: Path
) -> None:
    """The server stops and comes back on the same port: the follower resumes its stream
    (``Last-Event-ID``) and prints what is appended after, once."""
    tokens = make_tokens(lmdb_target)
    s = start_server(lmdb_target, tmp_path, tokens=tokens)
    append_via(s, tmp_path, "maintenance", "enter", "node-1")
    proc = live(
        tmp_path, s.url, tokens["reader"], "history", "node-1", "--follow", "--interval", "0.1",
        "--json",
    )
    again: Served | None = None
    try:
        assert json.loads(read_line(proc))["position"] == 1
        assert s.stop() == 0
        port = s.url.rsplit(":", 1)[1]
        again = start_server(lmdb_target, tmp_path, "--listen", f"127.0.0.1:{port}",
                             tokens=tokens)
        assert again.url == s.url
        append_via(again, tmp_path, "maintenance", "enter", "node-2")
        append_via(again, tmp_path, "maintenance", "enter", "node-1", "--reason", "again")
        row = json.loads(read_line(proc))
        assert (row["position"], row["type"]) == (3, "EnterMaintenance")
    finally:
        code, rest, err = ctrl_c(proc)
        if again is not None:
            assert again.stop() == 0
    assert (code, err) == (0, "")
    assert rest == ""


def test_changes_wait_on_one_stream_that_ends_with_the_ledger(
    lmdb_target: str, tmp_path: Path
) -> None:
    """`RemoteViews.changes` yields each new folded position from its one subscription; with
    the server gone the stream's thread keeps trying to resume, and closing the ledger ends it."""
    tokens = make_tokens(lmdb_target)
    s = start_server(lmdb_target, tmp_path, tokens=tokens)
    views = RemoteViews(RemoteLedger.connect(s.url, token=tokens["reader"]))
    stream = views.changes(0, poll=0.05)
    try:
        append_via(s, tmp_path, "detach", "runner-a")
        assert next(stream) == 1
        append_via(s, tmp_path, "detach", "runner-b")
        assert next(stream) == 2
    finally:
        assert s.stop() == 0
    watcher = views.ledger.remote._watcher
    assert watcher is not None
    assert watcher.thread.is_alive()  # retrying to reach the server
    views.ledger.close()
    watcher.thread.join(10)
    assert not watcher.thread.is_alive()  # closing the ledger ends the stream's thread


def test_status_policy_through_a_server_is_the_local_one(server: Served, tmp_path: Path) -> None:
    """``status policy`` through a server (``GET /v1/policy``, a reader's route) answers as
    the command on the ledger itself does."""
    append_via(server, tmp_path, "policy", "set", "*", "--budget-window", "2m")
    append_via(server, tmp_path, "policy", "set", "runner-a", "--keepalive-threshold", "5")
    append_via(server, tmp_path, "detach", "runner-b")
    for args in (["status", "policy", "--json"], ["status", "policy", "runner-z", "--json"],
                 ["status", "policy"]):
        remote = cli(*args, cwd=tmp_path, ledger=server.url, token=server.tokens["reader"])
        local = cli(*args, cwd=tmp_path, ledger=server.target)
        assert remote.returncode == 0, remote.stderr
        assert (remote.stdout, remote.stderr) == (local.stdout, local.stderr)
    as_reader = cli("status", "policy", "--json", cwd=tmp_path, ledger=server.url,
                    token=server.tokens["reader"])
    doc = json.loads(as_reader.stdout)["policy"]
    assert doc["runner-a"]["effective"]["keepalive_failure_threshold"] == 5
    assert doc["runner-a"]["effective"]["budget_window_ms"] == 120000
