"""`adminchain serve` over real HTTP (SPEC-server §7): routes, roles, problems, limits.

Every test talks to a real server process on an ephemeral port (tests/serving.py), on LMDB and
on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adminchain.server.tokens import create_token, revoke_token
from ledger import Ledger
from ledger.notes import generate_key
from tests.serving import Served, make_tokens, self_signed_certificate, start_server

JSONL = {"content-type": "application/jsonl"}


def jsonl(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def append(client: httpx.Client, *events: dict[str, Any], **params: Any) -> httpx.Response:
    return client.post("/v1/events", content=jsonl(*events), headers=JSONL, params=params)


@pytest.fixture
def checkpoint_key(tmp_path: Path) -> Path:
    signer, _ = generate_key("server")
    path = tmp_path / "server.key"
    path.write_text(signer + "\n", encoding="utf-8")
    return path


@pytest.fixture
def served(ledger_target: str, tmp_path: Path, checkpoint_key: Path) -> Iterator[Served]:
    """A server with a token per role and a checkpoint key, on each backend."""
    tokens = make_tokens(ledger_target)
    server = start_server(
        ledger_target, tmp_path, "--checkpoint-key", str(checkpoint_key), tokens=tokens
    )
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log.read_text()


# ---------------------------------------------------------------- every route


def test_every_route_answers_as_the_spec_says(served: Served) -> None:
    with served.client("admin") as admin:
        r = append(
            admin,
            {"type": "EnterMaintenance", "subject": "node-7", "reason": "kernel"},
            {"type": "MaintenanceObserved", "subject": "node-7", "state": "DrainFailed",
             "reason": "pods stuck"},
            {"type": "ExitMaintenance", "subject": "node-7"},
            {"type": "BackendCrashed", "subject": "broker-1/search/1.4"},
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["position"] for x in results] == [1, 2, 3, 4]
        assert [x["duplicate"] for x in results] == [False] * 4
        assert results[2]["verdicts"] == [
            {"projection": "maintenance", "verdict": "rejected", "reason": "needs_force",
             "detail": "DrainFailed -> ExitingMaintenance needs force: true"}
        ]
        # the answer came after the fold: the server's own status already shows the events
        node = admin.get("/v1/status/maintenance/node-7").json()
        assert node["maintenance"]["node-7"]["state"] == "DrainFailed"
        everything = admin.get("/v1/status").json()
        assert set(everything) == {"maintenance", "detachment", "recovery", "membership",
                                   "broadcasts"}
        assert set(admin.get("/v1/status/recovery").json()) == {"recovery"}
        # a subject with slashes, plain or percent-encoded, is the same backend key
        plain = admin.get("/v1/status/recovery/broker-1/search/1.4").json()
        encoded = admin.get("/v1/status/recovery/broker-1%2Fsearch%2F1.4").json()
        assert plain == encoded
        assert plain["recovery"]["broker-1/search/1.4"]["decision"]["kind"] == "retry"
        as_of = admin.get("/v1/status/maintenance/node-7", params={"as_of": 1}).json()
        assert as_of["maintenance"]["node-7"]["state"] == "EnteringMaintenance"

        history = admin.get("/v1/history/node-7").json()
        assert [row["position"] for row in history] == [1, 2, 3]
        assert history[0]["actor"] == "admin"  # an operator event's actor: the token's name
        assert admin.get("/v1/history/nobody").json() == []

        log = admin.get("/v1/log", params={"from": 2, "to": 3})
        assert log.headers["content-type"].startswith("application/jsonl")
        lines = [json.loads(line) for line in log.text.splitlines()]
        assert [line["position"] for line in lines] == [2, 3]
        assert lines[0]["event"]["type"] == "MaintenanceObserved"

        note = admin.get("/v1/checkpoint")
        assert note.status_code == 200
        assert note.headers["content-type"].startswith("text/plain")
        origin, size = note.text.splitlines()[:2]
        assert size == "4"
        assert "\n\n— server " in note.text  # signed with the server's key
        stored = admin.get("/v1/checkpoints").json()
        assert [c["size"] for c in stored] == [4]

        proof = admin.get("/v1/proofs/inclusion/2")
        assert proof.status_code == 200
        assert proof.text.startswith("c2sp.org/tlog-proof@v1")
        assert origin in proof.text
        assert admin.get("/v1/proofs/inclusion/99").status_code == 404
        append(admin, {"type": "BackendRecovered", "subject": "broker-1/search/1.4"})
        assert admin.get("/v1/checkpoint").text.splitlines()[1] == "5"
        consistency = admin.get("/v1/proofs/consistency", params={"old": 4, "new": 5})
        assert consistency.status_code == 200, consistency.text
        assert "\n4\n" in consistency.text
        assert "\n5\n" in consistency.text

        info = admin.get("/v1/info").json()
        assert info == {"origin": origin, "size": 5, "tracking": 5}

        assert admin.get("/healthz").json()["status"] == "ok"
        assert admin.get("/readyz").status_code == 200
        metrics = admin.get("/metrics")
        assert metrics.status_code == 200
        for name in (
            'adminchain_append_requests_total{outcome="ok"} 2.0',
            'adminchain_appended_events_total{outcome="stored"} 5.0',
            "adminchain_append_duration_seconds_bucket",
            'adminchain_events_total{type="EnterMaintenance"} 1.0',
            'adminchain_verdicts_total{projection="maintenance",reason="needs_force",'
            'verdict="rejected"} 1.0',
            "adminchain_log_size_events 5.0",
            "adminchain_projection_lag_events 0.0",
            "adminchain_seconds_since_last_checkpoint",
            "adminchain_open_subscriptions 0.0",
            "adminchain_http_requests_total",
        ):
            assert name in metrics.text, name

        schema = admin.get("/openapi.json").json()
        assert schema["openapi"].startswith("3.1")
        for path in ("/v1/events", "/v1/status/{kind}/{subject}", "/v1/history/{subject}",
                     "/v1/policy", "/v1/log", "/v1/subscribe", "/v1/checkpoint", "/metrics",
                     "/readyz"):
            assert path in schema["paths"], path
        body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]
        assert "application/json" in body
        assert admin.get("/no/such/route").status_code == 404


def test_a_repeated_id_is_reported_as_a_duplicate_with_its_verdicts(served: Served) -> None:
    event = {"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-1"}
    with served.client("loop") as loop:
        first = append(loop, event).json()["results"][0]
        again = loop.post("/v1/events", json=[event]).json()["results"][0]
    assert again == {**first, "duplicate": True}
    assert first["verdicts"][0]["projection"] == "detachment"


# ---------------------------------------------------------------- bad input, refusals, limits


def test_a_bad_line_gets_400_naming_line_and_field_and_nothing_is_stored(served: Served) -> None:
    with served.client("loop") as loop:
        r = append(
            loop,
            {"type": "KeepAliveFailed", "subject": "runner-a"},
            {"type": "MaintenanceObserved", "subject": "node-1", "state": "Sideways"},
        )
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 400
        assert problem["line"] == 2
        assert problem["field"] == "state"
        assert {"type", "title", "detail"} <= set(problem)
        not_json = loop.post("/v1/events", content=b"[1, 2", headers={"content-type":
                                                                      "application/json"})
        assert not_json.status_code == 400
        assert loop.post("/v1/events", content=b"", headers=JSONL).status_code == 400
        assert loop.get("/v1/info").json()["size"] == 0


def test_a_strict_append_the_projection_rejects_gets_409(served: Served) -> None:
    with served.client("operator") as op:
        append(op, {"type": "EnterMaintenance", "subject": "node-1"},
               {"type": "MaintenanceObserved", "subject": "node-1", "state": "DrainFailed",
                "reason": "stuck"})
        refused = append(op, {"type": "ExitMaintenance", "subject": "node-1"}, strict="true")
        assert refused.status_code == 409
        assert refused.json()["line"] == 1
        assert "needs_force" in refused.json()["detail"]
        assert op.get("/v1/info").json()["size"] == 2
        forced = append(op, {"type": "ExitMaintenance", "subject": "node-1", "force": True},
                        strict="true")
        assert forced.status_code == 200


def test_an_operator_appends_only_as_itself(served: Served) -> None:
    with served.client("operator") as op:
        other = append(op, {"type": "Detach", "subject": "runner-a", "actor": "mallory"})
        assert other.status_code == 403
        assert other.json()["field"] == "actor"
        same = append(op, {"type": "Detach", "subject": "runner-a", "actor": "operator"})
        assert same.status_code == 200
        default = append(op, {"type": "Detach", "subject": "runner-b"})
        assert default.status_code == 200
        assert op.get("/v1/history/runner-b").json()[0]["actor"] == "operator"
    with served.client("loop") as loop:
        assert append(loop, {"type": "Detach", "subject": "r", "actor": "loop"}).status_code == 403
        assert append(loop, {"type": "Detach", "subject": "r"}).status_code == 403
        assert loop.get("/v1/info").json()["size"] == 2


def test_bodies_and_batches_over_the_limits_get_413(ledger_target: str, tmp_path: Path) -> None:
    tokens = make_tokens(ledger_target)
    server = start_server(ledger_target, tmp_path, "--max-events", "3", "--max-body", "2k",
                          tokens=tokens)
    try:
        with server.client("loop") as loop:
            event = {"type": "KeepAliveFailed", "subject": "runner-a"}
            assert append(loop, *[event] * 4).status_code == 413
            big = {"type": "StorageFailed", "subject": "runner-a", "message": "x" * 3000}
            r = append(loop, big)
            assert r.status_code == 413
            assert r.headers["content-type"] == "application/problem+json"
            assert append(loop, *[event] * 3).status_code == 200
            assert loop.get("/v1/info").json()["size"] == 3
    finally:
        assert server.stop() == 0


def test_min_position_waits_for_the_fold_or_answers_504(served: Served) -> None:
    with served.client("admin") as admin:
        started = time.monotonic()
        r = admin.get("/v1/status", params={"min_position": 5, "wait": 300})
        assert r.status_code == 504
        assert time.monotonic() - started >= 0.25
        assert admin.get("/v1/status", params={"wait": 30001}).status_code == 400
        append(admin, {"type": "LeaseExpired", "subject": "runner-a"})
        ok = admin.get("/v1/status/detachment/runner-a", params={"min_position": 1, "wait": 1000})
        assert ok.status_code == 200
        assert ok.json()["detachment"]["runner-a"]["detached"] is True


def test_unknown_kinds_positions_and_times_are_problems(served: Served) -> None:
    with served.client("admin") as admin:
        assert admin.get("/v1/status/nonsense").status_code == 404
        assert admin.get("/v1/status", params={"now": "yesterday"}).status_code == 400
        assert admin.get("/v1/log", params={"from": 0}).status_code == 400
        assert admin.get("/v1/subscribe", params={"type": "Nope"}).status_code == 400


# ---------------------------------------------------------------- the role matrix

ROUTES: list[tuple[str, str, frozenset[str]]] = [
    ("POST", "/v1/events", frozenset({"loop", "operator"})),
    ("GET", "/v1/status", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/status/maintenance", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/status/maintenance/node-1",
     frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/history/node-1", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/policy/node-1", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/subscribe", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/info", frozenset({"reader", "loop", "operator", "auditor"})),
    ("GET", "/v1/log", frozenset({"auditor"})),
    ("GET", "/v1/checkpoint", frozenset({"auditor"})),
    ("GET", "/v1/checkpoints", frozenset({"auditor"})),
    ("GET", "/v1/proofs/inclusion/1", frozenset({"auditor"})),
    ("GET", "/v1/proofs/consistency?old=1", frozenset({"auditor"})),
    ("GET", "/metrics", frozenset({"metrics"})),
]
OPEN_ROUTES = ["/healthz", "/readyz", "/openapi.json"]


def _request(client: httpx.Client, method: str, path: str) -> httpx.Response:
    if method == "POST":
        return client.post(path, content=jsonl({"type": "KeepAliveFailed", "subject": "r-1"}),
                           headers=JSONL)
    if path.startswith("/v1/subscribe"):
        with client.stream("GET", path) as response:
            response.read() if response.status_code != 200 else None
            return response
    return client.get(path)


def test_each_route_admits_exactly_its_roles(served: Served) -> None:
    with Ledger.open(served.target) as ledger:
        revoked, _ = create_token(ledger, "gone", "admin")
        revoke_token(ledger, "gone")
    with served.client("admin") as admin:  # a log to prove, a checkpoint to show
        append(admin, {"type": "EnterMaintenance", "subject": "node-1"})
        assert admin.get("/v1/checkpoint").status_code == 200
    time.sleep(2.1)  # past the token book's reload: the revocation is known
    credentials: dict[str, str | None] = {
        "none": None,
        "bad": "adminchain_not-a-token",
        "revoked": revoked,
        **served.tokens,
    }
    seen: dict[tuple[str, str], int] = {}
    for who, token in credentials.items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
            for method, path, roles in ROUTES:
                r = _request(client, method, path)
                seen[(who, path)] = r.status_code
                if who in ("none", "bad", "revoked"):
                    expected = 401
                else:
                    expected = 200 if who == "admin" or who in roles else 403
                assert r.status_code == expected, (who, method, path, r.status_code)
                if expected == 401:
                    assert r.headers["www-authenticate"].startswith("Bearer")
                if expected != 200:
                    assert r.headers["content-type"] == "application/problem+json"
            for path in OPEN_ROUTES:
                assert client.get(path).status_code == 200, (who, path)
    assert len(seen) == len(credentials) * len(ROUTES)


def test_public_audit_opens_checkpoints_without_a_token(
    ledger_target: str, tmp_path: Path, checkpoint_key: Path
) -> None:
    tokens = make_tokens(ledger_target)
    server = start_server(ledger_target, tmp_path, "--public-audit", "--checkpoint-key",
                          str(checkpoint_key), tokens=tokens)
    try:
        with server.client("loop") as loop:
            append(loop, {"type": "LeaseExpired", "subject": "runner-a"})
        with server.client(None) as anonymous:
            assert anonymous.get("/v1/checkpoint").status_code == 200
            assert anonymous.get("/v1/log").status_code == 401
            assert anonymous.get("/v1/status").status_code == 401
    finally:
        assert server.stop() == 0


def test_a_revoked_token_is_refused_within_five_seconds(served: Served) -> None:
    with served.client("reader") as reader:
        assert reader.get("/v1/status").status_code == 200
        with Ledger.open(served.target) as ledger:
            revoke_token(ledger, "reader")
        revoked_at = time.monotonic()
        while reader.get("/v1/status").status_code == 200:
            assert time.monotonic() - revoked_at < 5.0
            time.sleep(0.1)
        assert reader.get("/v1/status").status_code == 401


def test_an_expired_token_is_refused(ledger_target: str, tmp_path: Path) -> None:
    from datetime import timedelta  # noqa: PLC0415

    with Ledger.open(ledger_target) as ledger:
        token, _ = create_token(ledger, "brief", "reader", timedelta(seconds=1))
    server = start_server(ledger_target, tmp_path)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        time.sleep(1.2)
        assert httpx.get(f"{server.url}/v1/status", headers=headers).status_code == 401
    finally:
        server.stop()


def test_the_access_log_names_tokens_but_never_contains_one(served: Served) -> None:
    with served.client("loop") as loop:
        append(loop, {"type": "LeaseExpired", "subject": "runner-a"})
        loop.get("/v1/status", params={"now": "2026-01-01T00:00:00Z"})
    with httpx.Client(base_url=served.url) as anonymous:
        anonymous.get("/v1/status", headers={"Authorization": "Bearer adminchain_secret-guess"})
    # a request's log line is written once its response is sent: wait for the last one
    deadline = time.monotonic() + 10
    requests: list[dict[str, Any]] = []
    while not any(r["status"] == 401 for r in requests) and time.monotonic() < deadline:
        time.sleep(0.05)
        requests = [line for line in served.log_lines() if line.get("event") == "request"]
    text = served.log.read_text()
    for token in served.tokens.values():
        assert token not in text
    assert "adminchain_secret-guess" not in text
    assert {"method", "path", "status", "ms", "token"} <= set(requests[0])
    assert any(r["token"] == "loop" and r["path"] == "/v1/events" for r in requests)
    assert any(r["status"] == 401 and r["token"] is None for r in requests)


# ---------------------------------------------------------------- subscriptions


class SSE:
    """The entries of one Server-Sent Events stream, read as they come (comments skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def take(self, count: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        current: dict[str, str] = {}
        for line in self.lines:
            if line.startswith(":"):
                continue
            if not line:
                if "data" in current:
                    entries.append({"id": int(current["id"]), **json.loads(current["data"])})
                    if len(entries) == count:
                        return entries
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
        return entries


def test_a_subscription_catches_up_then_goes_live_and_resumes(served: Served) -> None:
    with served.client("loop") as loop:
        append(loop, *[{"type": "KeepAliveFailed", "subject": f"r-{i}"} for i in range(3)])
        with loop.stream("GET", "/v1/subscribe", params={"from": 2}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            sse = SSE(stream)
            first = sse.take(2)
            assert [e["id"] for e in first] == [2, 3]
            assert first[0]["position"] == 2
            assert first[0]["event"]["subject"] == "r-1"
            assert first[0]["verdicts"][0]["projection"] == "detachment"
            append(loop, {"type": "LeaseExpired", "subject": "r-9"})
            live = sse.take(1)
            assert live[0]["id"] == 4
            assert live[0]["event"]["type"] == "LeaseExpired"
        with loop.stream("GET", "/v1/subscribe", headers={"Last-Event-ID": "3"}) as resumed:
            assert [e["id"] for e in SSE(resumed).take(1)] == [4]
        with loop.stream(
            "GET", "/v1/subscribe", params={"type": "LeaseExpired", "subject": "r-9"}
        ) as filtered:
            assert [e["id"] for e in SSE(filtered).take(1)] == [4]


def test_a_live_subscription_shows_what_the_log_shows(served: Served) -> None:
    """Entries delivered live (from the server's memory of its own appends, with the verdicts
    its fold gave) are exactly those a later subscription reads back from the log (with the
    verdicts recomputed), and the verdicts are those the appends answered."""
    batches: list[list[dict[str, Any]]] = [
        [
            {"type": "EnterMaintenance", "subject": "node-1", "reason": "kernel"},
            {"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-1"},
        ],
        [
            {"type": "MaintenanceObserved", "subject": "node-1", "state": "DrainFailed",
             "reason": "pods stuck", "at": "2099-11-25T16:00:00+02:00"},
            {"type": "ExitMaintenance", "subject": "node-1"},  # rejected: the drain failed
            {"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-1"},  # a duplicate
        ],
        [{"type": "ExitMaintenance", "subject": "node-1", "force": True}],
        [{"type": "BackendCrashed", "subject": "broker-1/search/1.4"}],
    ]
    answered: dict[int, list[dict[str, Any]]] = {}
    with served.client("operator") as op:
        with op.stream("GET", "/v1/subscribe") as stream:
            live = SSE(stream)
            for batch in batches:
                r = append(op, *batch)
                assert r.status_code == 200, r.text
                for result in r.json()["results"]:
                    if not result["duplicate"]:
                        answered[result["position"]] = result["verdicts"]
            delivered = live.take(len(answered))
        assert any(v["verdict"] == "rejected" for found in answered.values() for v in found)
        with op.stream("GET", "/v1/subscribe") as stream:
            read_back = SSE(stream).take(len(answered))
    assert delivered == read_back
    assert [e["position"] for e in delivered] == sorted(answered)
    assert {e["position"]: e["verdicts"] for e in delivered} == answered
    assert delivered[2]["event"]["at"] == "2099-11-25T14:00:00Z"


def test_a_subscription_delivers_appends_made_beside_the_server(served: Served) -> None:
    """Another process (the CLI on LMDB, or any writer on PostgreSQL) appends to the ledger."""
    with served.client("reader") as reader, reader.stream("GET", "/v1/subscribe") as stream:
        subprocess.run(
            [sys.executable, "-m", "adminchain", "append", "--ledger", served.target],
            input=jsonl({"type": "BackendCrashed", "subject": "b-1"}),
            check=True,
            capture_output=True,
        )
        (entry,) = SSE(stream).take(1)
        assert entry["event"]["subject"] == "b-1"
        assert entry["verdicts"][0]["projection"] == "recovery"


def test_a_subscription_sends_heartbeats(ledger_target: str, tmp_path: Path) -> None:
    tokens = make_tokens(ledger_target)
    server = start_server(ledger_target, tmp_path, "--heartbeat", "0.2", tokens=tokens)
    try:
        with server.client("reader") as reader, reader.stream("GET", "/v1/subscribe") as stream:
            lines = stream.iter_lines()
            comments = [next(lines) for _ in range(6)]
        assert sum(1 for c in comments if c == ": heartbeat") >= 2
    finally:
        assert server.stop() == 0


def test_sigterm_ends_subscriptions_and_exits_zero(served: Served) -> None:
    with served.client("reader") as reader, reader.stream("GET", "/v1/subscribe") as stream:
        next(stream.iter_lines())
        started = time.monotonic()
        assert served.stop() == 0
        assert time.monotonic() - started < 10


# ---------------------------------------------------------------- TLS and the token commands


def test_the_server_speaks_tls(lmdb_target: str, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    tokens = make_tokens(lmdb_target)
    server = start_server(
        lmdb_target, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), tokens=tokens,
        verify=ssl.create_default_context(cafile=str(cert)),
    )
    try:
        assert server.url.startswith("https://")
        headers = {"Authorization": f"Bearer {tokens['reader']}"}
        trust = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(f"{server.url}/v1/status", headers=headers, verify=trust)
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        assert server.stop() == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args], capture_output=True, text=True, check=False
    )


def test_token_commands_show_a_token_once_and_keep_only_its_hash(lmdb_target: str) -> None:
    created = _cli("token", "create", "ci-bot", "--role", "loop", "--expires", "1h",
                   "--ledger", lmdb_target, "--json")
    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)
    assert document["name"] == "ci-bot"
    assert document["role"] == "loop"
    assert document["token"].startswith("adminchain_")
    assert len(document["token"]) >= len("adminchain_") + 43  # 256 random bits
    assert document["expires"] is not None
    listed = _cli("token", "list", "--ledger", lmdb_target, "--json")
    assert document["token"] not in listed.stdout
    (row,) = json.loads(listed.stdout)
    assert row["active"] is True
    assert "sha256" not in row
    with Ledger.open(lmdb_target) as ledger:
        raw = b"".join(value for _, value in ledger.backend.meta_items("token:"))
    assert document["token"].encode() not in raw
    again = _cli("token", "create", "ci-bot", "--role", "loop", "--ledger", lmdb_target)
    assert again.returncode == 2
    assert "revoke it first" in again.stderr
    bad_role = _cli("token", "create", "x", "--role", "root", "--ledger", lmdb_target)
    assert bad_role.returncode == 2
    assert _cli("token", "revoke", "ci-bot", "--ledger", lmdb_target).returncode == 0
    listed = json.loads(_cli("token", "list", "--ledger", lmdb_target, "--json").stdout)
    assert listed[0]["active"] is False
    assert _cli("token", "revoke", "nobody", "--ledger", lmdb_target).returncode == 2
    replaced = _cli("token", "create", "ci-bot", "--role", "reader", "--ledger", lmdb_target)
    assert replaced.returncode == 0


def test_the_readme_curl_examples_work(lmdb_target: str, tmp_path: Path) -> None:
    """Each curl line of README.md's "Running the server" runs against a real server."""
    import re  # noqa: PLC0415

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Running the server") : readme.index("## Scale-out")]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)
    commands = [
        command
        for block in blocks
        for command in block.replace("\\\n", " ").splitlines()
        if command.strip().startswith("curl")
    ]
    assert len(commands) >= 5
    with Ledger.open(lmdb_target) as ledger:
        tokens = {
            "LOOP_TOKEN": create_token(ledger, "reconciler", "loop")[0],
            "ALICE_TOKEN": create_token(ledger, "alice", "operator")[0],
            "READER_TOKEN": create_token(ledger, "dashboards", "reader")[0],
        }
    server = start_server(lmdb_target, tmp_path)
    try:
        for command in commands:
            line = command.replace("http://ledger:8470", server.url).split(" # ")[0]
            live = "/v1/subscribe" in line
            if live:
                line = line.replace("curl ", "curl --max-time 2 ", 1)
            done = subprocess.run(
                ["bash", "-c", line], capture_output=True, text=True, env={**os.environ, **tokens},
                check=False,
            )
            assert done.returncode == (28 if live else 0), (line, done.stderr)
            if live:
                assert "event: entry" in done.stdout
            else:
                json.loads(done.stdout)
    finally:
        assert server.stop() == 0


def test_more_subscriptions_than_the_cap_get_503(lmdb_target: str, tmp_path: Path) -> None:
    tokens = make_tokens(lmdb_target)
    server = start_server(lmdb_target, tmp_path, "--max-subscriptions", "1", tokens=tokens)
    try:
        with server.client("reader") as reader, reader.stream("GET", "/v1/subscribe") as first:
            assert first.status_code == 200
            # the stream counts once it runs: its first line ("subscribed") comes after that
            lines = first.iter_lines()  # kept: an iterator dropped closes the stream
            assert next(lines) == ": subscribed"
            second = reader.get("/v1/subscribe", timeout=30)
            assert second.status_code == 503
            assert second.headers["retry-after"]
            assert second.headers["content-type"] == "application/problem+json"
    finally:
        assert server.stop() == 0


@pytest.mark.postgres
def test_a_ledger_that_cannot_commit_answers_503_and_stores_nothing(tmp_path: Path) -> None:
    """The database refuses every insert (as a full disk would): 503 with Retry-After."""
    import psycopg  # noqa: PLC0415

    from tests.conftest import drop_pg_schema, fresh_pg_url  # noqa: PLC0415

    url = fresh_pg_url()
    try:
        tokens = make_tokens(url)
        server = start_server(url, tmp_path, tokens=tokens)
        try:
            base, _, schema = url.partition("?schema=")
            with psycopg.connect(base, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT table_name FROM information_schema.columns WHERE table_schema = %s"
                    " AND column_name = 'notification_id' LIMIT 1",
                    (schema,),
                ).fetchone()
                assert row is not None
                (table,) = row
                conn.execute(
                    f"CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'"
                    " USING ERRCODE = '53100'; END $$"
                )
                conn.execute(
                    f"CREATE TRIGGER refuse BEFORE INSERT ON {schema}.{table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()"
                )
            with server.client("loop") as loop:
                r = loop.post("/v1/events", content=b'{"type":"LeaseExpired","subject":"r"}\n',
                              headers={"content-type": "application/jsonl"})
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"]
                assert "No space left" in r.json()["detail"]
                assert loop.get("/v1/info").json()["size"] == 0
        finally:
            assert server.stop() == 0
    finally:
        drop_pg_schema(url)
