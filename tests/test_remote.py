"""The remote ledger (SPEC-server §7.3): every command through a real `adminchain serve`.

The README tour, run through the CLI against a server, prints what it prints against a local
ledger (stdout and stderr, human and --json) and exits with the same statuses, on LMDB and on
PostgreSQL; only what differs by construction (ids, times, roots over those times) is
normalised. `verify` and `replay` run on the client: a server that serves a forged log, or
lies about its projections, is caught. Problem documents come back as the library's errors.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adminchain.server.tokens import create_token
from ledger.errors import (
    BackendUnavailableError,
    InvalidEventError,
    NotFoundError,
    StrictRefusedError,
    UsageError,
)
from ledger.events import EnterMaintenance, ExitMaintenance, KeepAliveFailed, MaintenanceObserved
from ledger.ledger import Ledger
from ledger.remote import RemoteAppended, RemoteLedger, TokenError, problem_error
from projections.api import Views
from projections.remote import RemoteViews
from projections.views import codec as view_codec
from replay.audit import run_audit
from replay.integrity import verify
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.serving import Served, self_signed_certificate, start_server
from tests.test_tamper import MARKED, STATE_DB, build, forge, raw_write

# ---------------------------------------------------------------------------- fixtures


def make_token(target: str | Path, name: str, role: str = "admin") -> str:
    """A new bearer token for `name` with `role` (as `adminchain token create` makes it)."""
    with Ledger.open(target) as ledger:
        return create_token(ledger, name, role)[0]


@contextmanager
def served(
    target: str | Path, *extra: str, workdir: Path, verify: ssl.SSLContext | bool = True
) -> Iterator[Served]:
    """A real `adminchain serve` over `target` during the block (tests/serving.py), stopped
    with SIGTERM after it, which must end it with exit 0."""
    server = start_server(str(target), workdir, *extra, verify=verify)
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(params=["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh ledgers on one backend: one used directly, one behind a server."""
    if request.param == "lmdb":
        yield str(tmp_path / "local.lmdb"), str(tmp_path / "served.lmdb")
        return
    urls = (fresh_pg_url(), fresh_pg_url())
    try:
        yield urls
    finally:
        for url in urls:
            drop_pg_schema(url)


def cli(
    *args: str, cwd: Path, ledger: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("ADMINCHAIN_TOKEN", "ADMINCHAIN_CHECKPOINT_KEY", "ADMINCHAIN_TOKEN_FILE"):
        env.pop(name, None)
    env.update(USER="tester", LOGNAME="tester", ADMINCHAIN_LEDGER=ledger, COLUMNS="300")
    if token is not None:
        env["ADMINCHAIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------- the tour

EVENTS = (
    '{"type": "MaintenanceObserved", "subject": "node-7", "state": "DrainFailed", '
    '"reason": "2 pods would not evict", "id": "obs-1"}\n'
) + """\
{"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-1"}
{"type": "BackendCrashed", "subject": "broker-1/search/v3", "id": "crash-1"}
{"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-1"}
"""
MORE = """\
{"type": "KeepAliveFailed", "subject": "runner-a", "id": "ka-2"}
{"type": "HealthObserved", "subject": "runner-a", "healthy": true, "id": "h-1"}
"""
BAD = '{"type": "ExitMaintenance", "subject": "node-7", "force": true}\n'

TOUR: list[tuple[list[str], str | None]] = [
    (["maintenance", "enter", "node-7", "--deadline", "30m", "--reason", "kernel upgrade",
      "--actor", "alice"], None),
    (["detach", "runner-b", "--reason", "suspected split brain", "--actor", "alice"], None),
    (["policy", "set", "*", "--budget-window", "2m", "--actor", "alice", "--json"], None),
    (["broadcast", "issue", "q-1", "--quiesce", "maintenance", "--target", "b1", "--target",
      "b2", "--dead", "b3", "--actor", "alice"], None),
    (["append", "events.jsonl", "--json"], None),
    (["append", "events.jsonl"], None),
    (["append"], BAD),
    (["append", "--json"], '{"type": "Bogus", "subject": "x"}\n'),
    (["maintenance", "exit", "node-7", "--actor", "alice", "--strict"], None),
    (["append", "--strict", "--json"],
     '{"type": "ExitMaintenance", "subject": "node-7", "actor": "alice"}\n'),
    (["maintenance", "exit", "node-7", "--actor", "alice"], None),
    (["append", "--stream"], MORE),
    (["status"], None),
    (["status", "--json"], None),
    (["status", "maintenance", "node-7", "--json"], None),
    (["status", "node-7", "--json"], None),
    (["status", "node-7", "--as-of", "3"], None),
    (["status", "node-7", "--as-of", "3", "--json"], None),
    (["status", "maintenance", "--now", "2031-01-01T00:00:00Z", "--json"], None),
    (["status", "recovery", "broker-1/search/v3", "--json"], None),
    (["status", "bogus", "node-7"], None),
    (["history", "node-7"], None),
    (["history", "node-7", "--json"], None),
    (["history", "broker-1/search/v3", "--json"], None),
    (["history", "nobody"], None),
    (["checkpoint", "--key", "auditor.key", "--json"], None),
    (["replay"], None),
    (["replay", "--json"], None),
    (["replay", "--to", "3", "--json"], None),
    (["verify", "--pub", "auditor.pub"], None),
    (["verify", "--pub", "auditor.pub", "--json"], None),
    (["prove", "2", "--out", "event-2.proof"], None),
    (["prove", "--verify", "event-2.proof", "--pub", "auditor.pub", "--json"], None),
    (["prove", "999"], None),
    (["append", "--json"], MORE.replace("ka-2", "ka-3").replace("h-1", "h-2")),
    (["checkpoint", "--key", "auditor.key"], None),
    (["prove", "--consistency", "10", "--out", "c.proof"], None),
    (["prove", "--verify", "c.proof", "--pub", "auditor.pub"], None),
    (["prove", "--consistency", "11"], None),
    (["verify", "--pub", "auditor.pub", "--json"], None),
    (["log", "--json"], None),
    (["log", "--from", "2", "--to", "4"], None),
]

_NORMAL = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?Z"), "<time>"),
    (re.compile(r"\(\d+[smhd] ago\)|\(in the future\)"), "(<age>)"),
    (re.compile(r"[0-9a-f]{64}"), "<hex>"),
    (re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"), "<base64>"),
    (re.compile(r"\\u2014 auditor <base64>"), "— auditor <base64>"),
    (re.compile(r"[ \t]+"), " "),
]


def normal(text: str) -> str:
    """Output with what differs by construction (ids, times, hashes over them) replaced."""
    for pattern, replacement in _NORMAL:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def run_tour(cwd: Path, ledger: str, token: str | None) -> list[tuple[str, int, str, str]]:
    (cwd / "events.jsonl").write_text(EVENTS, encoding="utf-8")
    outcomes = []
    for args, stdin in TOUR:
        result = cli(*args, cwd=cwd, ledger=ledger, token=token, stdin=stdin)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        outcomes.append((" ".join(args), result.returncode, result.stdout, result.stderr))
    for name in ("event-2.proof", "c.proof"):
        outcomes.append((name, 0, normal((cwd / name).read_text(encoding="utf-8")), ""))
    return outcomes


def test_the_tour_prints_the_same_through_a_server(
    two_ledgers: tuple[str, str], tmp_path: Path
) -> None:
    local, remote = two_ledgers
    keys = tmp_path / "keys"
    keys.mkdir()
    assert cli("keygen", "auditor", cwd=keys, ledger=local).returncode == 0
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    for folder in (here, there):
        for name in ("auditor.key", "auditor.pub"):
            (folder / name).write_bytes((keys / name).read_bytes())
    expected = run_tour(here, local, None)
    token = make_token(remote, "alice", "admin")
    # no periodic checkpoints during the tour: the local run has none to compare them with
    with served(
        remote,
        "--checkpoint-key",
        str(keys / "auditor.key"),
        "--checkpoint-every",
        "24h",
        workdir=tmp_path,
    ) as s:
        got = run_tour(there, s.url, token)
        assert s.url.startswith("http://127.0.0.1:")
    statuses = [code for _, code, _, _ in expected]
    assert statuses.count(2) == 5, expected  # the tour has its failures too
    assert statuses.count(3) == 2, expected
    shown = {command: normal(out) for command, _, out, _ in got}
    assert "maintenance: rejected: needs_force" in shown["history node-7"]  # not normalised away
    assert '"diverged":[]' in shown["replay --json"]
    assert '"ok":true' in shown["verify --pub auditor.pub --json"]
    assert shown["log --json"].count('"position":') == 12
    for (command, code, out, err), (_, remote_code, remote_out, remote_err) in zip(
        expected, got, strict=True
    ):
        assert remote_code == code, (command, remote_err)
        assert normal(remote_out) == normal(out), command
        assert normal(remote_err) == normal(err), command


# ---------------------------------------------------------------------------- the Python API


@pytest.fixture
def server(ledger_target: str, tmp_path: Path) -> Iterator[tuple[Served, str, str]]:
    """A server for a fresh ledger, with an admin token for `alice`."""
    token = make_token(ledger_target, "alice", "admin")
    with served(ledger_target, workdir=tmp_path) as s:
        yield s, token, ledger_target


def test_the_python_api_opens_a_server_with_the_local_method_names(
    server: tuple[Served, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, token, target = server
    monkeypatch.setenv("ADMINCHAIN_TOKEN", token)
    with Ledger.open(s.url) as log:
        assert isinstance(log, RemoteLedger)
        views = RemoteViews(log)
        first = log.append(EnterMaintenance(subject="node-1", actor="alice", reason="kernel"))
        assert isinstance(first, RemoteAppended)
        assert first.position == 1
        assert not first.duplicate
        assert first.verdicts == [{"projection": "maintenance", "verdict": "applied"}]
        batch = log.append_batch(
            [
                MaintenanceObserved(subject="node-1", state="DrainFailed", reason="pdb", id="o-1"),
                KeepAliveFailed(subject="runner-a", id="k-1"),
                KeepAliveFailed(subject="runner-a", id="k-1"),
            ]
        )
        assert [(r.position, r.duplicate) for r in batch] == [(2, False), (3, False), (3, True)]
        with pytest.raises(StrictRefusedError, match="needs_force") as refused:
            log.append(ExitMaintenance(subject="node-1", actor="alice"),
                       precondition=views.strict())
        assert refused.value.line == 1
        assert log.size() == 3
        views.wait_until(3)
        assert views.catch_up() == 3
        entries = list(log.read())
        followed = list(log.follow(0, stop=1.0))
        resumed = list(log.follow(2, stop=1.0))
        assert log.wait_for(3, timeout=1.0)
        assert views.verdicts(2) == [{"projection": "maintenance", "verdict": "applied"}]
        fresh = RemoteViews(RemoteLedger.connect(s.url, token=token))  # nothing cached: asks
        assert fresh.verdicts_at([2, 3]) == [
            [{"projection": "maintenance", "verdict": "applied"}],
            [{"projection": "detachment", "verdict": "applied"}],
        ]
        history = views.history("node-1")
        status = views.status()
        remote_facts = (
            [(e.position, e.recorded_at, e.event, e.stored) for e in entries],
            log.root(), log.root(2), log.inclusion_proof(2), log.inclusion_proof(1, 2),
            log.consistency_proof(1, 3), log.leaf_hash(3), log.origin(),
            [e.position for e in log.history("node-1")],
        )
        assert [e.position for e in resumed] == [3]
        assert [(e.position, e.stored) for e in followed] == [(e.position, e.stored)
                                                               for e in entries]
        with pytest.raises(NotFoundError, match="no event at position 9"):
            log.get(9)
        with pytest.raises(UsageError, match="direct access"):
            log.put_checkpoint(3, "x")
    with Ledger.open(target, create=False) as local:  # beside the server, as SPEC-server §7 allows
        local_views = Views(local)
        assert remote_facts == (
            [(e.position, e.recorded_at, e.event, e.stored) for e in local.read()],
            local.root(), local.root(2), local.inclusion_proof(2), local.inclusion_proof(1, 2),
            local.consistency_proof(1, 3), local.leaf_hash(3), local.origin(),
            [e.position for e in local.history("node-1")],
        )
        assert json.loads(msgspec.json.encode(local_views.history("node-1"))) == history
        assert json.loads(msgspec.json.encode(local_views.status())) == status


def test_problem_documents_become_the_librarys_errors(
    server: tuple[Served, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, token, _ = server
    log = RemoteLedger.connect(s.url, token=token)
    with pytest.raises(InvalidEventError) as bad:
        log.remote.client.request(
            "POST", "/v1/events", content=b'{"type": "KeepAliveFailed", "subject": "r"}\n'
            b'{"type": "Bogus", "subject": "x"}\n', headers={"Content-Type": "application/jsonl"}
        )
    assert (bad.value.line, bad.value.field) == (2, "type")
    assert str(bad.value) == "line 2, field `type`: unknown event type 'Bogus'"
    assert log.size() == 0  # nothing stored
    with pytest.raises(TokenError, match="refused the token"):
        RemoteLedger.connect(s.url, token="not-a-token").size()
    monkeypatch.delenv("ADMINCHAIN_TOKEN", raising=False)
    with pytest.raises(TokenError, match="no token"):
        RemoteLedger.connect(s.url).size()
    with pytest.raises(UsageError, match="only strict appends"):
        log.append(KeepAliveFailed(subject="r"), precondition=lambda ops, events: None)
    log.close()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendUnavailableError, match="cannot reach the server"):
        RemoteLedger.connect(f"http://127.0.0.1:{port}", token=token).size()


@pytest.mark.parametrize(
    ("status", "body", "error", "exit_status"),
    [
        (503, {"detail": "the ledger cannot commit: map full; nothing was stored"},
         BackendUnavailableError, 1),
        (409, {"detail": "line 2: refused", "line": 2}, StrictRefusedError, 3),
        (404, {"detail": "no event at position 4"}, NotFoundError, 2),
        (403, {"detail": "a reader token may not use /v1/events"}, TokenError, 2),
        (413, {"detail": "too many events"}, UsageError, 2),
        (504, {"detail": "the projections did not reach position 9"}, TimeoutError, 1),
    ],
)
def test_each_problem_status_maps_to_its_exit_status(
    status: int, body: dict[str, Any], error: type[Exception], exit_status: int
) -> None:
    from adminchain.cli import exit_status as status_of  # noqa: PLC0415

    response = httpx.Response(status, json={"status": status, **body})
    found = problem_error(response, "http://server")
    assert isinstance(found, error)
    assert body["detail"].removeprefix("line 2: ") in str(found)
    code = status_of(found) if not isinstance(found, TimeoutError) else 1
    assert code == exit_status


# ---------------------------------------------------------------------------- the CLI's errors


def test_cli_errors_through_a_server_exit_as_they_should(
    server: tuple[Served, str, str], tmp_path: Path
) -> None:
    s, token, target = server
    reader = make_token(target, "rita", "reader")
    line = '{"type": "KeepAliveFailed", "subject": "r"}\n'
    no_token = cli("append", cwd=tmp_path, ledger=s.url, stdin=line)
    assert no_token.returncode == 2
    assert no_token.stderr.startswith("error: the server at")
    assert "ADMINCHAIN_TOKEN" in no_token.stderr
    assert "--token-file" in no_token.stderr
    forbidden = cli("append", cwd=tmp_path, ledger=s.url, token=reader, stdin=line)
    assert forbidden.returncode == 2
    assert "refused this token's role" in forbidden.stderr
    (tmp_path / "token").write_text(token + "\n", encoding="utf-8")
    from_file = cli("append", "--json", "--token-file", "token", cwd=tmp_path, ledger=s.url,
                    stdin=line)
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["position"] == 1
    # (`trust list` reads the log's trust events, which a server serves; changes need access)
    for args in (["token", "list"], ["catch-up"], ["trust", "remove", "k"], ["serve"],
                 ["copy", target, s.url], ["token", "create", "x", "--role", "reader"]):
        refused = cli(*args, cwd=tmp_path, ledger=s.url, token=token)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "needs direct access to the ledger" in refused.stderr, args
    nowhere = cli("status", cwd=tmp_path, ledger="http://", token=token)
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("error: 'http://' names no server")
    s.stop()
    down = cli("status", cwd=tmp_path, ledger=s.url, token=token)
    assert down.returncode == 1
    assert down.stderr.startswith(f"error: cannot reach the server at {s.url}")
    assert "Traceback" not in down.stderr


def test_a_ledger_copies_out_of_a_server_byte_for_byte(
    server: tuple[Served, str, str], tmp_path: Path
) -> None:
    s, token, _ = server
    lines = "".join(f'{{"type": "KeepAliveFailed", "subject": "r{i}"}}\n' for i in range(40))
    assert cli("append", cwd=tmp_path, ledger=s.url, token=token, stdin=lines).returncode == 0
    copied = cli("copy", s.url, str(tmp_path / "copy.lmdb"), "--json", cwd=tmp_path,
                 ledger=s.url, token=token)
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert report["size"] == 40
    assert report["root"] == report["source_root"]


# ---------------------------------------------------------------------------- a lying server


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, str]:
    """A closed LMDB ledger of 200 events with checkpoints (see tests/test_tamper), the
    auditor's public key file beside it, and an admin token."""
    path = tmp_path / "victim.lmdb"
    signer = build(path)
    pub = tmp_path / "auditor.pub"
    pub.write_text(signer.verifier.encode() + "\n", encoding="utf-8")
    return path, make_token(path, "alice", "admin")


def test_a_server_serving_a_forged_log_is_caught_by_client_side_verify(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    """The event at 101 backdated, its leaf rewritten to match: the bytes the server serves
    no longer make the signed checkpoints' roots; the client names the same position the
    local verify names, and exits 1."""
    path, token = built
    with raw_write(path) as (txn, db):
        forge(txn, db, MARKED)
    with Ledger.open(path, create=False) as log:
        local = verify(log).to_json()
    assert local["ok"] is False
    assert local["first_bad_position"] == 51
    with served(path, workdir=tmp_path) as s:
        remote = cli("verify", "--pub", "auditor.pub", "--json", cwd=tmp_path, ledger=s.url,
                     token=token)
        human = cli("verify", cwd=tmp_path, ledger=s.url, token=token)
    assert remote.returncode == 1, remote.stderr
    assert json.loads(remote.stdout) == local
    assert human.returncode == 1
    assert "51" in human.stdout + human.stderr


def test_a_forged_log_without_its_leaf_is_caught_as_well(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    """A server cannot hide a change behind its stored leaves: the client never reads them."""
    path, token = built
    with raw_write(path) as (txn, db):
        forge(txn, db, MARKED, leaf=False)
    with served(path, workdir=tmp_path) as s:
        remote = cli("verify", "--json", cwd=tmp_path, ledger=s.url, token=token)
    assert remote.returncode == 1, remote.stderr
    result = json.loads(remote.stdout)
    assert result["ok"] is False
    assert result["first_bad_position"] == 51
    assert "does not match the checkpoint of size 120" in result["detail"]


def test_a_server_lying_about_its_projections_is_named_as_diverged(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    """node-1's stored maintenance state edited in the server's views: the client's own fold
    of the log disagrees with what the server serves, and replay names `maintenance`."""
    path, token = built
    with raw_write(path) as (txn, db):
        views = db(STATE_DB)
        for key, value in txn.cursor(db=views):
            subject, data = msgspec.msgpack.decode(value, type=tuple[str, bytes])
            if bytes(key).startswith(b"maintenance\x00") and subject == "node-1":
                state = view_codec.decode_state("maintenance", data)
                edited = msgspec.structs.replace(state, state="Active")
                txn.put(bytes(key), msgspec.msgpack.encode(("node-1", view_codec.encode(edited))),
                        db=views)
    with served(path, workdir=tmp_path) as s:
        log = RemoteLedger.connect(s.url, token=token)
        report = run_audit(log)
        assert report.compared
        assert report.diverged == ["maintenance"]
        assert report.differences["maintenance"] == ["node-1"]
        cli_json = cli("replay", "--json", cwd=tmp_path, ledger=s.url, token=token)
        clean = cli("verify", "--json", cwd=tmp_path, ledger=s.url, token=token)
    assert cli_json.returncode == 1
    assert json.loads(cli_json.stdout)["diverged"] == ["maintenance"]
    assert clean.returncode == 0, clean.stdout  # the log itself is intact


def test_replay_and_verify_of_a_server_share_the_work_with_a_second_process(
    built: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From `workers.PARALLEL_FROM` events (forced to 1 here) the second process opens the same
    URL (with the token from the environment) and folds its share: the same reports."""
    from replay import audit, integrity, workers  # noqa: PLC0415

    path, token = built
    monkeypatch.setenv("ADMINCHAIN_TOKEN", token)
    with served(path, workdir=tmp_path) as s:
        log = RemoteLedger.connect(s.url)
        inline_audit, inline_verify = run_audit(log).to_json(), verify(log).to_json()
        monkeypatch.setattr(workers, "PARALLEL_FROM", 1)
        folded_here: list[object] = []
        real = integrity.checkpoint_digests
        def digests(*a: Any) -> Any:
            folded_here.append(a)
            return real(*a)

        monkeypatch.setattr(integrity, "checkpoint_digests", digests)
        halves_here: list[object] = []
        real_half = audit._second_half
        def half(*a: Any) -> Any:
            halves_here.append(a)
            return real_half(*a)

        monkeypatch.setattr(audit, "_second_half", half)
        assert run_audit(log).to_json() == inline_audit
        assert verify(log).to_json() == inline_verify
        assert folded_here == []  # the worker folded the digests, over HTTP
        assert halves_here == []  # and the other half of the subjects
    assert inline_verify["ok"] is True
    assert inline_audit["diverged"] == []


def test_follow_resumes_after_the_server_restarts(lmdb_target: str, tmp_path: Path) -> None:
    """`follow` over ``/v1/subscribe``: the server going away ends the stream; the client
    reconnects and resumes after the last position it saw (``Last-Event-ID``), no entry twice."""
    token = make_token(lmdb_target, "alice", "admin")
    s = start_server(lmdb_target, tmp_path)
    try:
        log = RemoteLedger.connect(s.url, token=token)
        log.append_batch([KeepAliveFailed(subject=f"r{i}") for i in range(3)])
        stream = log.follow(0)
        assert [next(stream).position for _ in range(3)] == [1, 2, 3]
    finally:
        assert s.stop() == 0
    port = s.url.rsplit(":", 1)[1]
    with served(lmdb_target, "--listen", f"127.0.0.1:{port}", workdir=tmp_path) as again:
        assert again.url == s.url
        other = RemoteLedger.connect(again.url, token=token)
        other.append(KeepAliveFailed(subject="r-after", id="after"))
        entry = next(stream)
        assert (entry.position, entry.event.id) == (4, "after")
        assert entry.stored == other.get(4).stored
        stream.close()  # type: ignore[attr-defined]  # a generator: ends the subscription


def test_an_https_server_is_a_ledger_too(
    lmdb_target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``https://`` with the server's certificate trusted through ``SSL_CERT_FILE``; without
    it, the client refuses to talk (exit 1), as it should with an unknown certificate."""
    cert, key = self_signed_certificate(tmp_path)
    token = make_token(lmdb_target, "alice", "admin")
    line = '{"type": "KeepAliveFailed", "subject": "r", "id": "k-1"}\n'
    trusting = ssl.create_default_context(cafile=str(cert))
    with served(lmdb_target, "--tls-cert", str(cert), "--tls-key", str(key), workdir=tmp_path,
                verify=trusting) as s:
        assert s.url.startswith("https://127.0.0.1:")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        appended = cli("append", "--json", cwd=tmp_path, ledger=s.url, token=token, stdin=line)
        checked = cli("verify", "--json", cwd=tmp_path, ledger=s.url, token=token)
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = cli("status", cwd=tmp_path, ledger=s.url, token=token)
    assert appended.returncode == 0, appended.stderr
    assert json.loads(appended.stdout) == {
        "position": 1,
        "id": "k-1",
        "duplicate": False,
        "verdicts": [{"projection": "detachment", "verdict": "applied"}],
    }
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["size"] == 1
    assert untrusted.returncode == 1
    assert untrusted.stderr.startswith(f"error: cannot reach the server at {s.url}")
