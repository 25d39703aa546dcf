# ruff: noqa: F811  `run` is test_cli's fixture, imported
"""The command line an operator of kubectl or nomad expects (issue 16), run as a subprocess:
global options, verdicts and --dry-run, status at scale, live views, --stream past bad lines,
clear interruptions, lazy start-up, install hints and shell completion."""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import Run, jsonl, run  # noqa: F401  `run`: test_cli's fixture


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ADMINCHAIN_LEDGER"] = str(tmp_path / "cli.lmdb")
    env["ADMINCHAIN_ACTOR"] = "alice"
    return env


def popen(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "adminchain", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env_for(tmp_path),
        # Ctrl-C as at a terminal, even when this test runs with SIGINT ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )


def read_line(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bytes:
    """One line of the child's stdout (fails the test if none comes within `timeout`)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the command printed nothing"
    return proc.stdout.readline()


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGINT (Ctrl-C), then the exit status and stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


# ---------------------------------------------------------------- 1. global options


def test_global_options_work_before_the_command_name(run: Run, tmp_path: Path) -> None:
    other = str(tmp_path / "other.lmdb")
    assert run("--ledger", other, "maintenance", "enter", "node-1").returncode == 0
    before = run("--ledger", other, "--json", "status", "node-1")
    assert before.returncode == 0, before.stderr
    after = run("status", "node-1", "--ledger", other, "--json")
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["maintenance"]["node-1"]["state"] == "EnteringMaintenance"
    # ADMINCHAIN_LEDGER (the fixture's) is used only when --ledger is given nowhere
    run("detach", "runner-e")
    assert run("--json", "status", "maintenance").stdout.strip() == '{"maintenance":{}}'
    # given both before and after the command, the one after wins
    mixed = run("--ledger", str(tmp_path / "nowhere"), "status", "--ledger", other, "--json")
    assert mixed.returncode == 0
    assert "node-1" in json.loads(mixed.stdout)["maintenance"]


def test_top_level_help_names_the_global_options_and_environment(run: Run) -> None:
    out = run("--help").stdout
    for word in (
        "--ledger",
        "--json",
        "ADMINCHAIN_LEDGER",
        "ADMINCHAIN_SIGN_KEY",
        "ADMINCHAIN_TOKEN",
        "_ADMINCHAIN_COMPLETE",
    ):
        assert word in out, word


def test_every_command_is_listed_lazily_with_its_own_help() -> None:
    from adminchain.cli import LAZY_COMMANDS, main  # noqa: PLC0415

    for module in {m for m, _ in LAZY_COMMANDS.values()}:
        importlib.import_module(module)
    assert set(main.commands) == set(LAZY_COMMANDS), "add new commands to cli.LAZY_COMMANDS"
    for name, (module, text) in LAZY_COMMANDS.items():
        command = main.commands[name]
        assert command.callback is not None
        assert command.get_short_help_str(10**6) == text, name
        assert module.startswith("adminchain.")


def _modules_loaded(tmp_path: Path, *args: str) -> set[str]:
    code = (
        "import sys\nfrom adminchain.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_for(tmp_path),
        check=False,
        timeout=60,
    )
    return set(done.stderr.split())


def test_help_and_status_load_only_what_they_need(run: Run, tmp_path: Path) -> None:
    heavy = {"adminchain.demo", "adminchain.commands_audit", "replay.audit", "rich.progress"}
    help_modules = _modules_loaded(tmp_path, "--help")
    assert not {m for m in help_modules if m.startswith(("adminchain.commands", "rich"))}
    assert not help_modules & {*heavy, "ledger.ledger", "projections.api", "lmdb"}
    run("maintenance", "enter", "node-1")
    status_modules = _modules_loaded(tmp_path, "status")
    assert "adminchain.commands_status" in status_modules
    assert not status_modules & heavy
    assert not {m for m in status_modules if m.startswith(("rich", "cryptography"))}


def test_the_projections_package_loads_its_names_on_first_use() -> None:
    """``import projections.query`` (completion, the renderers) loads no stored views, ledger or
    eventsourcing; the package's names still come from ``from projections import …``."""
    code = (
        "import sys\nimport projections.query\n"
        "heavy = {'projections.api', 'ledger.ledger', 'eventsourcing', 'lmdb'}\n"
        "loaded = heavy & set(sys.modules)\n"
        "from projections import Views, policy\n"
        "print(sorted(loaded), Views.__name__, policy.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["[]", "Views", "projections.policy"]


# ---------------------------------------------------------------- 2. verdicts and --dry-run


def drain_failed(run: Run, node: str = "node-7") -> None:
    assert run("maintenance", "enter", node).returncode == 0
    assert run("append", stdin=jsonl(failed(node))).returncode == 0


def failed(node: str) -> dict[str, str]:
    return {"type": "MaintenanceObserved", "subject": node, "state": "DrainFailed", "reason": "pdb"}


def test_shortcuts_report_verdicts_state_and_the_fix(run: Run) -> None:
    entered = json.loads(run("maintenance", "enter", "node-7", "--json").stdout)
    assert entered["verdicts"] == [{"projection": "maintenance", "verdict": "applied"}]
    assert entered["duplicate"] is False
    assert entered["position"] == 1
    run("append", stdin=jsonl(failed("node-7")))
    refused = run("maintenance", "exit", "node-7", "--json")
    assert refused.returncode == 0
    (verdict,) = json.loads(refused.stdout)["verdicts"]
    assert verdict["verdict"] == "rejected"
    assert verdict["reason"] == "needs_force"
    human = run("maintenance", "exit", "node-7").stdout
    assert "node-7 stays DrainFailed; needs --force" in human
    forced = run("maintenance", "exit", "node-7", "--force").stdout
    assert "node-7 is now ExitingMaintenance" in forced
    detached = run("detach", "runner-a", "--json")
    assert json.loads(detached.stdout)["verdicts"][0]["projection"] == "detachment"
    assert "runner-b is now detached" in run("detach", "runner-b").stdout
    assert "runner[x] is now detached" in run("detach", "runner[x]").stdout, "no markup"
    policy = json.loads(run("policy", "set", "*", "--budget-window", "2m", "--json").stdout)
    assert policy["verdicts"] == [{"projection": "policy", "verdict": "applied"}]
    issued = run("broadcast", "issue", "q-1", "--quiesce", "maintenance", "--target", "b1")
    assert "q-1 is now waiting for b1" in issued.stdout


def test_strict_still_exits_3(run: Run) -> None:
    drain_failed(run)
    refused = run("maintenance", "exit", "node-7", "--strict", "--json")
    assert refused.returncode == 3
    assert refused.stdout == ""
    assert "nothing was stored" in refused.stderr


def test_dry_run_on_a_shortcut_appends_nothing(run: Run) -> None:
    drain_failed(run)
    size = len(run("log", "--json").stdout.splitlines())
    dry = run("maintenance", "exit", "node-7", "--dry-run", "--json")
    assert dry.returncode == 0
    result = json.loads(dry.stdout)
    assert result["dry_run"] is True
    assert result["position"] is None
    assert result["verdicts"][0]["reason"] == "needs_force"
    human = run("maintenance", "exit", "node-7", "--dry-run")
    assert "would stay DrainFailed; needs --force" in human.stdout
    assert "nothing was appended" in human.stdout
    ok = json.loads(run("maintenance", "exit", "node-7", "--force", "--dry-run", "--json").stdout)
    assert ok["verdicts"] == [{"projection": "maintenance", "verdict": "applied"}]
    strict = run("maintenance", "exit", "node-7", "--dry-run", "--strict")
    assert strict.returncode == 3
    assert len(run("log", "--json").stdout.splitlines()) == size


def test_append_dry_run_folds_the_batch_in_order(run: Run) -> None:
    batch = jsonl(
        {"type": "EnterMaintenance", "subject": "n1", "actor": "bob", "id": "e1"},
        {**failed("n1"), "id": "o1"},
        {"type": "ExitMaintenance", "subject": "n1", "actor": "bob", "id": "x1"},
        {"type": "EnterMaintenance", "subject": "n1", "actor": "bob", "id": "e1"},
    )
    assert run("append", "--dry-run", stdin=batch).returncode == 2, "no ledger: nothing to fold on"
    run("detach", "runner-z")
    dry = run("append", "--dry-run", "--json", stdin=batch)
    assert dry.returncode == 0
    lines = [json.loads(x) for x in dry.stdout.splitlines()]
    assert [x["verdicts"][0]["verdict"] for x in lines] == [
        "applied",
        "applied",
        "rejected",
        "applied",
    ]
    assert lines[2]["verdicts"][0]["reason"] == "needs_force"
    assert lines[3]["duplicate"] is True, "a repeat within the batch is a duplicate"
    assert all(x["dry_run"] for x in lines)
    human = run("append", "--dry-run", stdin=batch)
    assert "line 3: ExitMaintenance n1 would be refused by maintenance: needs_force" in human.stdout
    assert 'needs "force": true' in human.stdout
    assert len(run("log", "--json").stdout.splitlines()) == 1, "a dry run appends nothing"
    assert run("append", "--dry-run", "--strict", stdin=batch).returncode == 3
    appended = run("append", stdin=batch).stdout
    assert "line 3 (position 4): ExitMaintenance n1 refused by maintenance: needs_force" in appended
    real = run("append", "--json", stdin=batch)  # all repeats now: their originals' verdicts
    verdicts = [json.loads(x)["verdicts"] for x in real.stdout.splitlines()]
    assert verdicts == [x["verdicts"] for x in lines], "a dry run predicts the real verdicts"


# ---------------------------------------------------------------- 3. status at scale


@pytest.fixture
def cluster(run: Run) -> Run:
    events = [
        {"type": "EnterMaintenance", "subject": "node-1", "actor": "a",
         "deadline": "2026-01-01T00:10:00Z", "at": "2026-01-01T00:00:00Z"},
        {"type": "EnterMaintenance", "subject": "node-2", "actor": "a"},
        failed("node-2"),
        {"type": "EnterMaintenance", "subject": "node-3", "actor": "a"},
        {"type": "MaintenanceObserved", "subject": "node-3", "state": "Maintenance"},
        {"type": "EnterMaintenance", "subject": "edge-1", "actor": "a"},
        {"type": "Detach", "subject": "runner-a", "actor": "a"},
        {"type": "KeepAliveFailed", "subject": "runner-b"},
        {"type": "BackendCrashed", "subject": "broker-1/search/" + "v" * 150},
    ]  # fmt: skip
    assert run("append", stdin=jsonl(*events)).returncode == 0
    return run


def test_status_filters_by_state_flag_and_glob(cluster: Run) -> None:
    failed = json.loads(cluster("status", "--state", "DrainFailed", "--json").stdout)
    assert failed == {"maintenance": {"node-2": failed["maintenance"]["node-2"]}}
    assert list(json.loads(cluster("status", "--state", "drainfailed", "--json").stdout)) == [
        "maintenance"
    ]
    detached = json.loads(cluster("status", "--detached", "--json").stdout)
    assert list(detached) == ["detachment"]
    assert list(detached["detachment"]) == ["runner-a"]
    overdue = cluster("status", "--overdue", "--now", "2026-01-01T01:00:00Z", "--json")
    assert list(json.loads(overdue.stdout)["maintenance"]) == ["node-1"]
    nodes = json.loads(cluster("status", "maintenance", "node-*", "--json").stdout)
    assert sorted(nodes["maintenance"]) == ["node-1", "node-2", "node-3"]
    limited = json.loads(cluster("status", "node-*", "--limit", "2", "--json").stdout)
    assert len(limited["maintenance"]) == 2
    bad = cluster("status", "--state", "Sleeping")
    assert bad.returncode == 2
    assert "DrainFailed" in bad.stderr
    assert cluster("status", "recovery", "--detached").returncode == 2
    assert "no subject matches" in cluster("status", "nothing-*").stdout


def test_status_summary_counts_per_state_above_the_table(cluster: Run) -> None:
    out = cluster("status").stdout
    lines = out.splitlines()
    assert lines[0] == (
        "maintenance: 4 nodes — 2 EnteringMaintenance, 1 DrainFailed, 1 Maintenance"
    )
    assert lines[1].split() == ["node", "state", "since", "deadline", "reason"]
    assert "detachment: 2 runners — 1 detached, 1 attached" in out
    limited = cluster("status", "maintenance", "--limit", "1").stdout
    assert "maintenance: 4 nodes" in limited
    assert "(showing 1; --limit to change)" in limited
    assert len([x for x in limited.splitlines() if x.startswith(("node-", "edge-"))]) == 1


def test_status_never_cuts_an_id(cluster: Run) -> None:
    long_id = "broker-1/search/" + "v" * 150
    out = cluster("status").stdout
    assert long_id in out
    assert "…" not in out


def test_a_subject_back_in_its_default_state_shows_that_state(run: Run) -> None:
    run("maintenance", "enter", "node-1")
    run("maintenance", "exit", "node-1", "--force")
    for state in ("Maintenance", "ExitingMaintenance", "Recovery", "Active"):
        observed = {"type": "MaintenanceObserved", "subject": "node-1", "state": state}
        assert run("append", stdin=jsonl(observed)).returncode == 0
    out = run("status", "node-1")
    assert "nothing is known" not in out.stdout
    assert "Active" in out.stdout
    as_json = json.loads(run("status", "node-1", "--json").stdout)
    assert as_json["maintenance"]["node-1"]["state"] == "Active"
    assert as_json["detachment"] == {}
    assert "nothing is known" in run("status", "node-404").stdout


def test_status_policy_shows_the_effective_policy(run: Run) -> None:
    run("policy", "set", "*", "--budget-window", "2m")
    run("policy", "set", "runner-a", "--keepalive-threshold", "5")
    doc = json.loads(run("status", "policy", "--json").stdout)["policy"]
    assert doc["*"]["effective"]["budget_window_ms"] == 120000
    assert doc["runner-a"]["effective"] == {
        "recover_window_ms": 500,
        "keepalive_failure_threshold": 5,
        "retry_backoff_ms": 250,
        "budget_window_ms": 120000,
    }
    assert doc["runner-a"]["own"]["budget_window_ms"] is None
    one = json.loads(run("status", "policy", "runner-z", "--json").stdout)["policy"]
    assert one["runner-z"]["effective"]["budget_window_ms"] == 120000
    human = run("status", "policy").stdout
    assert "120000 ms (*)" in human
    assert "500 ms (default)" in human


# ---------------------------------------------------------------- 4. live views


def test_status_watch_prints_again_when_the_log_changes(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "node-1")
    proc = popen(tmp_path, "status", "maintenance", "--watch", "--interval", "0.1", "--json")
    try:
        first = json.loads(read_line(proc))
        assert list(first["maintenance"]) == ["node-1"]
        run("maintenance", "enter", "node-2")
        second = json.loads(read_line(proc))
        assert list(second["maintenance"]) == ["node-1", "node-2"]
    finally:
        code, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err


def test_history_follow_prints_new_events(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "node-1")
    proc = popen(tmp_path, "history", "node-1", "--follow", "--interval", "0.1", "--json")
    try:
        assert json.loads(read_line(proc))["type"] == "EnterMaintenance"
        run("detach", "runner-x")  # about another subject: not shown
        run("maintenance", "exit", "node-1")
        row = json.loads(read_line(proc))
        assert row["type"] == "ExitMaintenance"
        assert row["verdicts"][0]["reason"] == "invalid_successor"
    finally:
        code, err = finish(proc)
    assert code == 0, err


# ---------------------------------------------------------------- 6. --stream past bad lines


def test_stream_goes_on_past_a_bad_line(run: Run) -> None:
    doc = jsonl(
        {"type": "LeaseExpired", "subject": "a"},
        {"type": "Nope", "subject": "b"},
        {"type": "LeaseExpired", "subject": "c"},
    )
    result = run("append", "--stream", "--json", stdin=doc)
    assert result.returncode == 2
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert out[0]["position"] == 1
    assert out[0]["verdicts"]
    assert out[1] == {
        "line": 2,
        "error": "line 2, field `type`: unknown event type 'Nope'",
        "field": "type",
    }
    assert out[2]["position"] == 2
    assert "1 input line not stored: bad line 2" in result.stderr
    assert "2 events (positions 1-2) were stored" in result.stderr
    assert "nothing was stored" not in result.stderr
    assert len(run("log", "--json").stdout.splitlines()) == 2
    human = run("append", "--stream", stdin=doc)
    assert human.returncode == 2
    assert "line 1: position 3" in human.stdout
    assert "line 3: position 4" in human.stdout
    assert "error: line 2, field `type`" in human.stderr


def test_stream_strict_refusals_go_on_and_exit_3(run: Run) -> None:
    drain_failed(run)
    doc = jsonl(
        {"type": "ExitMaintenance", "subject": "node-7", "actor": "bob"},
        {"type": "LeaseExpired", "subject": "c"},
    )
    result = run("append", "--stream", "--strict", "--json", stdin=doc)
    assert result.returncode == 3
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert out[0]["line"] == 1
    assert "would be rejected" in out[0]["error"]
    assert out[1]["position"] == 3


def test_a_batch_with_a_bad_line_still_says_nothing_was_stored(run: Run) -> None:
    doc = jsonl({"type": "LeaseExpired", "subject": "a"}, {"type": "Nope"})
    result = run("append", stdin=doc)
    assert result.returncode == 2
    assert "nothing was stored" in result.stderr


# ---------------------------------------------------------------- 7. Ctrl-C


def test_ctrl_c_before_anything_is_stored(tmp_path: Path) -> None:
    proc = popen(tmp_path, "append")
    assert proc.stdin is not None
    proc.stdin.write(jsonl({"type": "LeaseExpired", "subject": "a"}).encode())
    proc.stdin.flush()
    code, err = _interrupt_when_waiting(proc)
    assert code == 130
    assert "interrupted: nothing was stored" in err
    assert "Aborted" not in err
    assert "Traceback" not in err


def test_ctrl_c_during_a_stream_says_what_was_stored(tmp_path: Path) -> None:
    proc = popen(tmp_path, "append", "--stream", "--json")
    assert proc.stdin is not None
    for subject in ("a", "b"):
        proc.stdin.write(jsonl({"type": "LeaseExpired", "subject": subject}).encode())
        proc.stdin.flush()
        assert json.loads(read_line(proc))["duplicate"] is False
    code, err = finish(proc)
    assert code == 130
    assert "interrupted after 2 events (positions 1-2) were stored" in err
    assert "Traceback" not in err


def _interrupt_when_waiting(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Ctrl-C once the command is blocked reading its stdin pipe (its imports done)."""
    wchan = Path(f"/proc/{proc.pid}/wchan")
    for _ in range(1200):
        if proc.poll() is not None or "pipe" in wchan.read_text():
            break
        select.select([], [], [], 0.05)
    return finish(proc)


def test_ctrl_c_ends_a_following_runner_normally(run: Run, tmp_path: Path) -> None:
    run("detach", "runner-a")
    proc = popen(tmp_path, "catch-up", "--follow", "--poll", "0.1", "--json")
    wchan = Path(f"/proc/{proc.pid}/wchan")
    for _ in range(1200):  # until it waits for new events (its imports done)
        if proc.poll() is not None or "futex" in wchan.read_text() or "poll" in wchan.read_text():
            break
        select.select([], [], [], 0.05)
    code, err = finish(proc)
    assert code == 0, err
    assert "interrupted" not in err


# ---------------------------------------------------------------- 9. install hint, completion


def test_a_postgres_ledger_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\nsys.modules['psycopg'] = None\n"
        "from adminchain.cli import main\nmain(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "status", "--ledger", "postgresql://x@127.0.0.1:1/db"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_for(tmp_path),
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "pip install 'adminchain[postgres]'" in done.stderr
    assert "Traceback" not in done.stderr


def complete(tmp_path: Path, words: str) -> list[str]:
    env = env_for(tmp_path)
    env |= {"_ADMINCHAIN_COMPLETE": "bash_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "adminchain")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.partition(",")[2] for line in done.stdout.splitlines() if line]


def test_shell_completion_of_kinds_and_subjects(run: Run, tmp_path: Path) -> None:
    run("maintenance", "enter", "node-7")
    run("detach", "runner-a")
    assert complete(tmp_path, "adminchain status ma") == ["maintenance"]
    assert "policy" in complete(tmp_path, "adminchain status ")
    assert complete(tmp_path, "adminchain status no") == ["node-7"]
    assert complete(tmp_path, "adminchain history run") == ["runner-a"]
    assert complete(tmp_path, "adminchain maintenance exit n") == ["node-7"]
    assert complete(tmp_path, "adminchain sta") == ["status"]
    assert not (tmp_path / "missing.lmdb").exists()
    assert complete(tmp_path, "adminchain --ledger missing.lmdb history n") == []
    assert not (tmp_path / "missing.lmdb").exists(), "completion never creates a ledger"
