"""`adminchain serve --workers N`: several server processes on one socket over one ledger.

Each worker is a whole server over the same ledger (SPEC-server §7): appends through any of them
get gap-free positions, every subscriber sees every event once and in order whichever worker
took it, the metrics add up over the workers, a worker that dies is started again, and SIGTERM
stops them all gracefully (exit 0).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from replay import verify
from tests.serving import Served, make_tokens, start_server
from tests.test_server import SSE, jsonl

JSONL = {"content-type": "application/jsonl"}
CLIENTS = 8
EACH = 25


def _workers_of(server: Served) -> list[int]:
    """The pids of the server's worker processes (its children)."""
    with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def _wait(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _metric(text: str, name: str, labels: str) -> float:
    selector = re.escape(name) + (rf"\{{{re.escape(labels)}\}}" if labels else "")
    found = re.search(rf"^{selector} ([0-9.e+]+)$", text, re.M)
    assert found, f"{name}{{{labels}}} is not in the exposition"
    return float(found.group(1))


def test_workers_share_one_ledger(ledger_target: str, tmp_path: Path) -> None:
    """8 clients on fresh connections through 2 workers: positions 1..N, each id once, both
    workers answered, a subscriber sees every event once in order, the counters add up, the
    tree verifies."""
    target = ledger_target
    tokens = make_tokens(target)
    server = start_server(target, tmp_path / "s", "--workers", "2", tokens=tokens)
    total = CLIENTS * EACH
    seen: list[dict[str, Any]] = []
    try:
        assert len(_workers_of(server)) == 2
        reader = server.client("reader")
        stream = reader.send(reader.build_request("GET", "/v1/subscribe"), stream=True)

        def read() -> None:
            sse = SSE(stream)
            while len(seen) < total:
                got = sse.take(1)
                if not got:
                    return
                seen.extend(got)

        threading.Thread(target=read, daemon=True).start()

        def client_loop(number: int) -> None:
            for k in range(EACH):
                # a new connection each time, so the kernel spreads them over the workers
                with server.client("loop") as loop:
                    event = {
                        "type": "KeepAliveFailed",
                        "subject": f"r-{number}",
                        "id": f"{number}-{k}",
                    }
                    r = loop.post("/v1/events", content=jsonl(event), headers=JSONL)
                    assert r.status_code == 200, r.text

        clients = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        _wait(lambda: len(seen) >= total, what="the subscriber to see every event")
        stream.close()
        reader.close()
        assert [e["position"] for e in seen] == list(range(1, total + 1))
        assert sorted(e["event"]["id"] for e in seen) == sorted(
            f"{n}-{k}" for n in range(CLIENTS) for k in range(EACH)
        )
        answered_by = {
            line["worker"]
            for line in server.log_lines()
            if line.get("event") == "request" and line.get("path") == "/v1/events"
        }
        assert answered_by == {0, 1}, "both workers should have taken appends"
        with server.client("metrics") as client:
            exposition = client.get("/metrics").text
        assert _metric(exposition, "adminchain_appended_events_total", 'outcome="stored"') == total
        assert _metric(exposition, "adminchain_events_total", 'type="KeepAliveFailed"') == total

        # the gauges are set by every worker once a second; the newest is the log's size
        def size_shown() -> float:
            with server.client("metrics") as client:
                return _metric(client.get("/metrics").text, "adminchain_log_size_events", "")

        _wait(lambda: size_shown() == total, what="the log size gauge")
    finally:
        assert server.stop(signal.SIGTERM) == 0
    with Ledger.open(target, create=False) as ledger:
        assert ledger.size() == total
        result = verify(ledger)
        assert result.ok, result.detail


def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    """kill -9 of one worker: the parent logs it and starts another; the server keeps
    answering and stops gracefully afterwards."""
    target = str(tmp_path / "ledger.lmdb")
    tokens = make_tokens(target)
    server = start_server(target, tmp_path / "s", "--workers", "2", tokens=tokens)
    try:
        victim = _workers_of(server)[0]
        os.kill(victim, signal.SIGKILL)
        _wait(
            lambda: any(line.get("event") == "worker exited" for line in server.log_lines()),
            what="the parent to notice",
        )
        _wait(
            lambda: len(_workers_of(server)) == 2 and victim not in _workers_of(server),
            what="a new worker",
        )
        exited = next(line for line in server.log_lines() if line.get("event") == "worker exited")
        assert exited["pid"] == victim
        assert exited["status"] == -signal.SIGKILL
        for k in range(20):  # fresh connections: some reach the new worker
            with server.client("loop") as loop:
                r = loop.post(
                    "/v1/events",
                    content=jsonl({"type": "KeepAliveFailed", "subject": "r", "id": f"after-{k}"}),
                    headers=JSONL,
                )
                assert r.status_code == 200, r.text
    finally:
        assert server.stop(signal.SIGTERM) == 0
    with Ledger.open(target, create=False) as ledger:
        assert ledger.size() == 20


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    """SIGTERM to the parent: every worker stops, the parent exits 0, and the log says so."""
    target = str(tmp_path / "ledger.lmdb")
    server = start_server(target, tmp_path / "s", "--workers", "3", tokens=make_tokens(target))
    workers = _workers_of(server)
    assert len(workers) == 3
    assert server.stop(signal.SIGTERM) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert any(line.get("event") == "stopped" for line in server.log_lines())


def test_sigterm_while_the_workers_start_is_still_a_graceful_stop(tmp_path: Path) -> None:
    """SIGTERM as soon as the socket is bound, while the workers are still making the app
    (before uvicorn takes the signals over): every worker stops, the parent exits 0."""
    target = str(tmp_path / "ledger.lmdb")
    make_tokens(target)
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "adminchain", "serve", "--ledger", target,
             "--listen", "127.0.0.1:0", "--workers", "3"],
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        _wait(lambda: b'"listening"' in log.read_bytes(), what="the socket")
        time.sleep(0.005)  # the workers are forked and importing or opening the ledger
        process.send_signal(signal.SIGTERM)
        assert process.wait(40) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_a_ledger_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    """A ledger no server can open: exit 1 (as every command's storage failure) with one line
    naming it, before any worker starts
    (not a traceback from every worker)."""
    target = tmp_path / "ledger.lmdb"
    target.mkdir()
    (target / "data.mdb").write_bytes(b"not an lmdb file" * 1024)
    with pytest.raises(RuntimeError, match="exited 1") as failed:
        start_server(str(target), tmp_path / "s", "--workers", "2")
    assert "not an LMDB file" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_workers_that_keep_dying_end_the_server(tmp_path: Path) -> None:
    """Workers that die again and again right after starting: the parent gives up (exit 1)
    instead of restarting them forever."""
    target = str(tmp_path / "ledger.lmdb")
    server = start_server(target, tmp_path / "s", "--workers", "2", tokens=make_tokens(target))
    deadline = time.monotonic() + 60
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "the server kept restarting its workers"
        for pid in _workers_of(server):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.2)
    assert server.process.returncode == 1
    assert any(line.get("event") == "worker cannot start; stopping" for line in server.log_lines())


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--workers"):
        start_server(str(tmp_path / "l.lmdb"), tmp_path / "s", "--workers", "0")


def _request_burst(url: str, count: int) -> None:
    """`count` connections opened at once (as a load generator opens them), then one GET
    /healthz on each."""
    import socket  # noqa: PLC0415

    host, port = url.removeprefix("http://").rsplit(":", 1)
    conns = [socket.create_connection((host, int(port)), timeout=30) for _ in range(count)]
    try:
        for conn in conns:
            conn.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for conn in conns:
            conn.close()


def _listening_sockets(port: int) -> int:
    """How many IPv4 TCP sockets listen on `port` (the kernel's table: /proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    fields = [row.split() for row in rows]
    return sum(1 for f in fields if f[1].endswith(f":{port:04X}") and f[3] == "0A")


def test_connections_opened_at_once_are_spread_over_the_workers(tmp_path: Path) -> None:
    """Each worker accepts on its own socket (SO_REUSEPORT), so a burst of connections is spread
    over them by the kernel; on one shared socket, the worker that woke first took most of a
    burst (64 load-generator clients came out as 6 and 58)."""
    target = str(tmp_path / "ledger.lmdb")
    server = start_server(target, tmp_path / "s", "--workers", "2", tokens=make_tokens(target))
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert _listening_sockets(port) == 2  # one per worker (one shared socket: 1)
        _request_burst(server.url, 48)
        _wait(
            lambda: sum(line.get("path") == "/healthz" for line in server.log_lines()) == 48,
            what="the access log",
        )
        served = [line["worker"] for line in server.log_lines() if line.get("path") == "/healthz"]
        # a binomial(48, 1/2) count falls below 10 about once in 10^5 runs
        assert min(served.count(0), served.count(1)) >= 10, served
    finally:
        assert server.stop(signal.SIGTERM) == 0


def test_a_port_in_use_is_refused_even_by_a_server_with_workers(tmp_path: Path) -> None:
    """Several sockets share the workers' port (SO_REUSEPORT); a second server on that port
    must not join them: it fails as on any port in use."""
    target = str(tmp_path / "ledger.lmdb")
    first = start_server(target, tmp_path / "a", "--workers", "2", tokens=make_tokens(target))
    try:
        listen = first.url.removeprefix("http://")
        done = subprocess.run(
            [sys.executable, "-m", "adminchain", "serve", "--ledger", str(tmp_path / "b.lmdb"),
             "--listen", listen, "--workers", "2"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"--listen {listen}: cannot listen there" in done.stderr
    finally:
        assert first.stop(signal.SIGTERM) == 0
