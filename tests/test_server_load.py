"""The server under concurrent load and hard stops (SPEC-server §7): nothing acknowledged is
lost, two servers share one PostgreSQL ledger, SIGTERM lets in-flight requests finish.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger import Ledger
from replay import verify
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.serving import Served, make_tokens, start_server
from tests.test_server import SSE, jsonl

JSONL = {"content-type": "application/jsonl"}


@pytest.fixture
def pg_target() -> Iterator[str]:
    url = fresh_pg_url()
    try:
        yield url
    finally:
        drop_pg_schema(url)


class Appenders:
    """`count` client threads appending one event per request until stopped; each records the
    ids whose 2xx reached it, and every other outcome."""

    def __init__(self, urls: list[str], token: str, count: int) -> None:
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.unanswered: list[str] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(urls[i % len(urls)], token, i), daemon=True)
            for i in range(count)
        ]

    def _run(self, url: str, token: str, number: int) -> None:
        headers = {"Authorization": f"Bearer {token}", **JSONL}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                event_id = f"c{number}-{uuid.uuid4().hex[:8]}"
                body = jsonl({"type": "KeepAliveFailed", "subject": f"r-{number}", "id": event_id})
                try:
                    r = client.post("/v1/events", content=body)
                except httpx.TransportError as e:
                    with self._lock:
                        self.failures.append(type(e).__name__)
                        self.unanswered.append(event_id)
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.statuses.append(r.status_code)
                    if r.status_code == 200:
                        assert r.json()["results"][0]["id"] == event_id
                        self.acked.append(event_id)

    def start(self) -> Appenders:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} appends acknowledged"
            time.sleep(0.05)


def _stored_ids(target: str) -> list[str]:
    with Ledger.open(target, create=False) as ledger:
        return [e.event.id for e in ledger.read() if e.event.id is not None]


def _verified(target: str) -> None:
    with Ledger.open(target, create=False) as ledger:
        result = verify(ledger)
        assert result.ok, result.detail


@pytest.mark.postgres
def test_two_servers_over_one_postgres_ledger(pg_target: str, tmp_path: Path) -> None:
    """8 clients append through both servers at once: positions 1..N, each id once, and a
    subscriber on each server sees every event exactly once, in order."""
    tokens = make_tokens(pg_target)
    servers = [start_server(pg_target, tmp_path / f"s{i}", tokens=tokens) for i in (1, 2)]
    seen: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    total = 8 * 25
    try:
        streams = []
        for i, server in enumerate(servers):
            client = server.client("reader")
            response = client.send(client.build_request("GET", "/v1/subscribe"), stream=True)
            streams.append((client, response))

            def read(i: int = i, response: httpx.Response = response) -> None:
                sse = SSE(response)
                while len(seen[i]) < total:
                    got = sse.take(1)
                    if not got:
                        return
                    seen[i].extend(got)

            threading.Thread(target=read, daemon=True).start()

        def client_loop(number: int) -> None:
            server = servers[number % 2]
            with server.client("loop") as loop:
                for k in range(25):
                    event = {"type": "KeepAliveFailed", "subject": f"r-{number}",
                             "id": f"{number}-{k}"}
                    r = loop.post("/v1/events", content=jsonl(event), headers=JSONL)
                    assert r.status_code == 200, r.text

        clients = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        deadline = time.monotonic() + 30
        while min(len(v) for v in seen.values()) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        for client, response in streams:
            response.close()
            client.close()
    finally:
        for server in servers:
            server.stop()
    ids = _stored_ids(pg_target)
    assert len(ids) == total
    assert sorted(ids) == sorted({f"{n}-{k}" for n in range(8) for k in range(25)})
    with Ledger.open(pg_target, create=False) as ledger:
        assert [e.position for e in ledger.read()] == list(range(1, total + 1))
    for i in (0, 1):
        positions = [entry["position"] for entry in seen[i]]
        assert positions == list(range(1, total + 1)), f"server {i + 1} delivered {positions[:5]}…"
        assert [entry["event"]["id"] for entry in seen[i]] == ids
    _verified(pg_target)


def test_kill_9_under_load_loses_no_acknowledged_event(ledger_target: str, tmp_path: Path) -> None:
    tokens = make_tokens(ledger_target)
    server = start_server(ledger_target, tmp_path, tokens=tokens)
    load = Appenders([server.url], tokens["loop"], 16).start()
    try:
        load.wait_for(200)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        load.stop()
    stored = set(_stored_ids(ledger_target))
    lost = [i for i in load.acked if i not in stored]
    assert lost == [], f"{len(lost)} acknowledged events lost"
    assert len(stored) >= len(load.acked)
    _verified(ledger_target)
    restarted = start_server(ledger_target, tmp_path / "again", tokens=tokens)
    try:
        with restarted.client("reader") as reader:
            info = reader.get("/v1/info").json()
        assert info["size"] == info["tracking"] == len(stored)
    finally:
        assert restarted.stop() == 0


def test_sigterm_under_load_finishes_in_flight_requests(
    ledger_target: str, tmp_path: Path
) -> None:
    tokens = make_tokens(ledger_target)
    server: Served = start_server(ledger_target, tmp_path, tokens=tokens)
    load = Appenders([server.url], tokens["loop"], 16).start()
    try:
        load.wait_for(200)
        assert server.stop(signal.SIGTERM) == 0
    finally:
        load.stop()
    # every request the server took in got a complete answer (a 2xx, never a 5xx); a request
    # sent on a keep-alive connection as the server closed it, or after, was never taken in:
    # it got no answer and nothing of it was stored, so the client may safely send it again
    assert set(load.statuses) <= {200}, sorted(set(load.statuses))
    stored = set(_stored_ids(ledger_target))
    assert set(load.acked) <= stored
    assert not stored & set(load.unanswered)
    _verified(ledger_target)
    lines = [json.dumps(line) for line in server.log_lines() if line.get("event") == "stopped"]
    assert lines, "the server logs that it stopped"
