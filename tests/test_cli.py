"""The command line as an operator and an auditor use it (SPEC §5), run as a subprocess.

Every command: its output and exit status, including bad usage and bad input; `--json` puts
nothing else on stdout; every command and group has help with an example; errors never show a
traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from adminchain.cli import main

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = dict(os.environ)
    env["ADMINCHAIN_LEDGER"] = str(tmp_path / "cli.lmdb")
    env["ADMINCHAIN_ACTOR"] = "alice"
    env.pop("ADMINCHAIN_CHECKPOINT_KEY", None)

    def invoke(*args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(
            [sys.executable, "-m", "adminchain", *args],
            input=data,
            capture_output=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )
        result = subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return invoke


def jsonl(*events: Mapping[str, object]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def all_commands() -> list[list[str]]:
    """Every command path, e.g. ["maintenance", "enter"]."""
    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # loads the lazily imported command modules
            command = group.get_command(ctx, name)
            assert command is not None, name
            paths.append([*prefix, name])
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(main, [])
    return paths


def test_the_spec_commands_all_exist() -> None:
    names = {" ".join(p) for p in all_commands()}
    for command in (
        "append", "log", "status", "history", "replay", "verify", "checkpoint", "prove", "demo",
        "maintenance enter", "maintenance exit", "detach", "policy set", "broadcast issue",
    ):  # fmt: skip
        assert command in names


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    runner = CliRunner()
    result = runner.invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert "Example" in result.output, f"`{' '.join(path)} --help` shows no example"


def test_append_reports_positions_and_one_duplicate(run: Run) -> None:
    doc = jsonl(
        {"type": "LeaseExpired", "subject": "runner-a", "id": "a"},
        {"type": "KeepAliveFailed", "subject": "runner-b", "id": "b"},
        {"type": "LeaseExpired", "subject": "runner-a", "id": "a"},
    )
    result = run("append", "--json", stdin=doc)
    assert result.returncode == 0
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [{k: v for k, v in x.items() if k != "verdicts"} for x in lines] == [
        {"position": 1, "id": "a", "duplicate": False},
        {"position": 2, "id": "b", "duplicate": False},
        {"position": 1, "id": "a", "duplicate": True},
    ]
    assert lines[0]["verdicts"] == [{"projection": "detachment", "verdict": "applied"}]
    assert lines[2]["verdicts"] == lines[0]["verdicts"], "a repeat shows its original's verdicts"
    human = run("append", stdin=doc)
    assert human.returncode == 0
    assert "duplicate" in human.stdout


def test_append_from_a_file(run: Run, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(jsonl({"type": "BackendCrashed", "subject": "b1"}))
    result = run("append", "in.jsonl", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["position"] == 1


def test_a_bad_line_rejects_the_batch_naming_line_and_field(run: Run) -> None:
    doc = jsonl(
        {"type": "LeaseExpired", "subject": "ok"},
        {"type": "LeaseExpired", "subject": "ok2"},
        {"type": "Detach", "subject": "runner-a"},
    )
    result = run("append", "--json", stdin=doc)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "line 3, field `actor`" in result.stderr
    assert run("log", "--json").stdout == ""


def test_non_utf8_input_is_refused(run: Run) -> None:
    result = run("append", stdin=b'{"type": "LeaseExpired", "subject": "\xff"}\n')
    assert result.returncode == 2
    assert "line 1" in result.stderr
    assert "UTF-8" in result.stderr


def test_stream_prints_each_result_and_stops_at_a_bad_line_with_stop_on_error(run: Run) -> None:
    doc = jsonl(
        {"type": "LeaseExpired", "subject": "a"},
        {"type": "Nope", "subject": "b"},
        {"type": "LeaseExpired", "subject": "c"},
    )
    result = run("append", "--stream", "--stop-on-error", "--json", stdin=doc)
    assert result.returncode == 2
    assert json.loads(result.stdout)["position"] == 1
    assert "line 2, field `type`" in result.stderr
    assert "nothing was stored" not in result.stderr
    assert "1 event (position 1) was stored" in result.stderr
    assert len(run("log", "--json").stdout.splitlines()) == 1


def test_log_exports_json_lines_that_append_back(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "node-7", "--reason", "kernel", "--deadline", "30m")
    run("append", stdin=jsonl({"type": "HealthObserved", "subject": "r", "healthy": True}))
    out = run("log", "--json")
    assert out.returncode == 0
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r["position"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"position", "recorded_at", "event"}
    assert rows[0]["event"]["type"] == "EnterMaintenance"
    assert rows[0]["event"]["actor"] == "alice"
    assert run("log", "--from", "2", "--json").stdout.count("\n") == 1
    assert "EnterMaintenance" in run("log").stdout
    export = "".join(json.dumps(r["event"]) + "\n" for r in rows)
    other = run("append", "--ledger", str(tmp_path / "other.lmdb"), "--json", stdin=export)
    assert other.returncode == 0
    assert all(not json.loads(x)["duplicate"] for x in other.stdout.splitlines())


def test_status_json_shapes(run: Run) -> None:
    run("maintenance", "enter", "node-7", "--deadline", "2026-01-01T00:00:00Z")
    run("append", stdin=jsonl({"type": "LeaseExpired", "subject": "runner-a"}))
    result = run("status", "--json", "--now", "2026-06-01T00:00:00Z")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"maintenance", "detachment", "recovery", "membership", "broadcasts"}
    node = doc["maintenance"]["node-7"]
    assert node["state"] == "EnteringMaintenance"
    assert node["deadline_overdue"] is True
    assert set(node) == {
        "state", "since", "deadline", "reason",
        "non_active", "steady_maintenance", "deadline_overdue",
    }  # fmt: skip
    runner = doc["detachment"]["runner-a"]
    assert runner["reason"] == {"kind": "lease_expired", "display": "lease expired"}
    only = json.loads(run("status", "maintenance", "node-9", "--json").stdout)
    assert only == {
        "maintenance": {
            "node-9": {
                "state": "Active", "since": None, "deadline": None, "reason": None,
                "non_active": False, "steady_maintenance": False, "deadline_overdue": False,
            }
        }
    }  # fmt: skip
    by_subject = json.loads(run("status", "runner-a", "--json").stdout)
    assert list(by_subject["detachment"]) == ["runner-a"]
    assert by_subject["maintenance"] == {}
    assert "EnteringMaintenance" in run("status").stdout


def test_status_as_of_a_position_and_a_time(run: Run) -> None:
    run("maintenance", "enter", "node-7")
    run(
        "append",
        stdin=jsonl({"type": "MaintenanceObserved", "subject": "node-7", "state": "Maintenance"}),
    )
    now = json.loads(run("status", "maintenance", "node-7", "--json").stdout)
    then = json.loads(run("status", "maintenance", "node-7", "--as-of", "1", "--json").stdout)
    assert now["maintenance"]["node-7"]["state"] == "Maintenance"
    assert then["maintenance"]["node-7"]["state"] == "EnteringMaintenance"
    before = json.loads(
        run("status", "maintenance", "node-7", "--as-of", "2000-01-01T00:00:00Z", "--json").stdout
    )
    assert before["maintenance"]["node-7"]["state"] == "Active"


def test_history_shows_verdicts_with_reasons(run: Run) -> None:
    run("append", stdin=jsonl({"type": "EnterMaintenance", "subject": "n", "actor": "bob"}))
    run(
        "append",
        stdin=jsonl(
            {"type": "MaintenanceObserved", "subject": "n", "state": "DrainFailed", "reason": "x"}
        ),
    )
    run("maintenance", "exit", "n")
    rows = json.loads(run("history", "n", "--json").stdout)
    assert [r["position"] for r in rows] == [1, 2, 3]
    assert rows[0]["actor"] == "bob"
    assert set(rows[0]) == {"position", "type", "at", "actor", "verdicts"}
    assert rows[2]["verdicts"][0]["verdict"] == "rejected"
    assert rows[2]["verdicts"][0]["reason"] == "needs_force"
    human = run("history", "n").stdout
    assert "needs_force" in human
    assert "✗" in human


def test_strict_refuses_with_exit_3_and_stores_nothing(run: Run) -> None:
    run("maintenance", "enter", "n", "--strict")
    run(
        "append",
        stdin=jsonl(
            {"type": "MaintenanceObserved", "subject": "n", "state": "DrainFailed", "reason": "x"}
        ),
    )
    refused = run("maintenance", "exit", "n", "--strict")
    assert refused.returncode == 3
    assert "needs_force" in refused.stderr
    assert len(run("log", "--json").stdout.splitlines()) == 2
    assert run("maintenance", "exit", "n", "--strict", "--force").returncode == 0
    batch = jsonl(
        {"type": "EnterMaintenance", "subject": "m", "actor": "a"},
        {"type": "ExitMaintenance", "subject": "m", "actor": "a"},
    )
    strict_batch = run("append", "--strict", stdin=batch)
    assert strict_batch.returncode == 3
    assert "line 2" in strict_batch.stderr


def test_operator_shortcuts(run: Run) -> None:
    assert run("detach", "runner-a", "--reason", "split brain", "--json").returncode == 0
    assert (
        run("policy", "set", "*", "--recover-window", "2s", "--keepalive-threshold", "5").returncode
        == 0
    )
    assert run("policy", "set", "r1", "--budget-window", "90000", "--json").returncode == 0
    ok = run(
        "broadcast",
        "issue",
        "q-1",
        "--quiesce",
        "maintenance",
        "--target",
        "b1",
        "--dead",
        "b2",
        "--ack-timeout",
        "2s",
    )
    assert ok.returncode == 0
    rel = run("broadcast", "issue", "r-1", "--release-handles", "/data", "--target", "b1")
    assert rel.returncode == 0
    events = [json.loads(x)["event"] for x in run("log", "--json").stdout.splitlines()]
    assert events[0] == {**events[0], "type": "Detach", "actor": "alice", "reason": "split brain"}
    assert events[1]["recover_window_ms"] == 2000
    assert events[1]["keepalive_failure_threshold"] == 5
    assert events[3]["targets"] == [
        {"backend": "b1", "live": True},
        {"backend": "b2", "live": False},
    ]
    assert events[3]["ack_timeout_ms"] == 2000
    assert events[4]["operation"] == {"kind": "release_handles", "path_prefix": "/data"}
    status = json.loads(run("status", "broadcasts", "q-1", "--json").stdout)
    assert status["broadcasts"]["q-1"]["skipped_dead"] == ["b2"]
    assert status["broadcasts"]["q-1"]["pending"] == ["b1"]


@pytest.mark.parametrize(
    "args",
    [
        ["maintenance", "enter", "n", "--deadline", "soon"],
        ["maintenance", "enter", ""],
        ["policy", "set", "*"],
        ["policy", "set", "*", "--recover-window", "fast"],
        ["broadcast", "issue", "b", "--target", "x"],
        ["broadcast", "issue", "b", "--quiesce", "maintenance"],
        ["broadcast", "issue", "b", "--quiesce", "bored", "--target", "x"],
        ["status", "--as-of", "yesterday"],
        ["status", "--now", "2026-01-01T00:00:00"],
        ["log", "--from", "0"],
        ["prove"],
        ["prove", "5"],
        ["replay", "--to", "99"],
        ["nonsense"],
    ],
    ids=lambda a: " ".join(a) or "empty",
)
def test_bad_usage_exits_2(run: Run, args: list[str]) -> None:
    run("append", stdin=jsonl({"type": "LeaseExpired", "subject": "a"}))
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip()
    assert result.stdout == ""


def test_commands_on_a_missing_ledger_say_so(run: Run) -> None:
    result = run("status", "--ledger", "no-such.lmdb")
    assert result.returncode == 2
    assert "no ledger at" in result.stderr
    assert not Path("no-such.lmdb").exists()


def test_replay_verify_checkpoint_prove_and_keygen(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "node-7")
    run("maintenance", "exit", "node-7")
    keys = run("keygen", "auditor", "--json")
    assert keys.returncode == 0
    assert (tmp_path / "auditor.key").stat().st_mode & 0o777 == 0o600
    assert run("keygen", "auditor").returncode == 2  # no silent overwrite
    replay = json.loads(run("replay", "--json").stdout)
    assert replay["position"] == 2
    assert replay["diverged"] == []
    assert replay["projections"]["maintenance"] == {"applied": 1, "idempotent": 0, "rejected": 1}
    assert replay["rejected"][0]["reason"] == "invalid_successor"
    assert set(replay["rejected"][0]) == {
        "position",
        "type",
        "subject",
        "projection",
        "reason",
        "detail",
    }
    cp = run("checkpoint", "--key", "auditor.key", "--out", "cp.txt", "--json")
    assert cp.returncode == 0
    assert json.loads(cp.stdout)["size"] == 2
    assert "— auditor " in (tmp_path / "cp.txt").read_text()
    verify = run("verify", "--pub", "auditor.pub", "--json")
    assert verify.returncode == 0
    assert json.loads(verify.stdout) == {
        "ok": True, "size": 2, "root": json.loads(cp.stdout)["root"],
        "first_bad_position": None, "detail": "2 events, 1 checkpoint(s) verified",
    }  # fmt: skip
    run("keygen", "mallory")
    wrong = run("verify", "--pub", "mallory.pub", "--json")
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["ok"] is False
    assert run("prove", "1", "--out", "p.txt").returncode == 0
    ok = run("prove", "--verify", "p.txt", "--pub", "auditor.pub", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["position"] == 1
    assert run("prove", "--verify", "p.txt", "--pub", "mallory.pub").returncode == 1
    text = (tmp_path / "p.txt").read_text().replace("index 0", "index 1")
    (tmp_path / "bad.txt").write_text(text)
    assert run("prove", "--verify", "bad.txt", "--pub", "auditor.pub").returncode == 1
    run("maintenance", "enter", "node-8")
    run("checkpoint", "--key", "auditor.key")
    assert run("prove", "--consistency", "2", "--out", "c.txt").returncode == 0
    assert run("prove", "--verify", "c.txt", "--pub", "auditor.pub").returncode == 0
    assert "✓ verified" in run("verify").stdout


def test_trust_requires_signed_operator_events(run: Run) -> None:
    run("keygen", "alice")
    assert run("trust", "add", "alice.pub").returncode == 0
    unsigned = run("detach", "r1")
    assert unsigned.returncode == 2
    assert "signature" in unsigned.stderr
    assert run("detach", "r1", "--sign-key", "alice.key").returncode == 0
    assert run("append", stdin=jsonl({"type": "LeaseExpired", "subject": "r2"})).returncode == 0
    listed = json.loads(run("trust", "list", "--json").stdout)
    assert listed["required_since"] == 1
    assert listed["keys"][0]["key"].startswith("alice+")
    assert run("trust", "remove", "alice").returncode == 2  # unsigned, and the last key
    run("keygen", "bob")
    assert run("trust", "add", "bob.pub", "--sign-key", "alice.key").returncode == 0
    assert run("trust", "remove", "alice", "--sign-key", "bob.key").returncode == 0
    assert run("detach", "r3", "--sign-key", "alice.key").returncode == 2  # revoked
    assert run("detach", "r3", "--sign-key", "bob.key", "--actor", "bob").returncode == 0


def test_copy_keeps_positions_and_root(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "n1")
    run("append", stdin=jsonl({"type": "BackendCrashed", "subject": "b"}))
    copied = run("copy", str(tmp_path / "cli.lmdb"), str(tmp_path / "copy.lmdb"), "--json")
    assert copied.returncode == 0
    out = json.loads(copied.stdout)
    assert out["size"] == 2
    assert out["root"] == out["source_root"]
    assert (
        run("copy", str(tmp_path / "copy.lmdb"), str(tmp_path / "cli.lmdb")).returncode == 0
    )  # a prefix: no-op


def test_demo_runs_and_json_is_clean(run: Run) -> None:
    result = run("demo", "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["verify"]["ok"] is True
    reasons = [r["reason"] for r in summary["replay"]["rejected"]]
    assert reasons == ["needs_force", "invalid_successor", "late"]
    story = run("demo")
    assert story.returncode == 0
    assert "A late 'drain failed' arrives" in story.stdout


def test_catch_up_and_a_following_runner(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "n1")
    once = run("catch-up", "--json")
    assert once.returncode == 0
    assert json.loads(once.stdout) == {"tracking": 1, "size": 1}
    env = dict(os.environ, ADMINCHAIN_LEDGER=str(tmp_path / "cli.lmdb"))
    runner = subprocess.Popen(
        [sys.executable, "-m", "adminchain", "catch-up", "--follow", "--poll", "0.05", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        from ledger.events import LeaseExpired  # noqa: PLC0415
        from ledger.ledger import Ledger  # noqa: PLC0415
        from projections.api import Views  # noqa: PLC0415

        with Ledger.open(tmp_path / "cli.lmdb") as log:
            log.append_batch([LeaseExpired(subject=f"r{i}") for i in range(5)])
            views = Views(log)
            deadline = time.monotonic() + 30
            while views.tracking() < 6 and time.monotonic() < deadline:  # folded by the runner
                time.sleep(0.05)
            assert views.tracking() == 6
    finally:
        runner.terminate()
        out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert json.loads(out) == {"tracking": 6, "size": 6}
