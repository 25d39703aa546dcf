"""The attack suite, continued (issue 13.5, 13.8): faults end in one ``error:`` line.

A full disk (a file size limit: writes fail with EFBIG as they would with ENOSPC), zeroed pages
and flipped bits in ``data.mdb``, input built to exhaust memory or the stack, durations beyond
any calendar, malformed JSON that msgspec would accept silently, odd ledger paths and a umask of
000. Each ends in one error line with the documented exit status, never a signal or traceback.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import lmdb_files
from tests.test_attacks import cli, jsonl, one_error_line

KA = {"type": "KeepAliveFailed", "subject": "runner-1"}


def limited(limit: int) -> None:
    """In the child: files may not grow beyond `limit` bytes (as on a disk that is full)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def cli_limited(limit: int, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ADMINCHAIN_ACTOR="alice")
    env.pop("ADMINCHAIN_LEDGER", None)
    done = subprocess.run(
        [sys.executable, "-m", "adminchain", *args], input=stdin.encode(), capture_output=True,
        env=env, timeout=120, check=False, preexec_fn=lambda: limited(limit),
    )  # fmt: skip
    result = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode >= 0, f"killed by signal {-result.returncode}"
    return result


def nothing_stored(target: Path) -> None:
    """No ledger at `target`, or an empty one (``append`` opens its ledger before reading)."""
    if target.exists():
        assert cli("log", "--json", "--ledger", str(target)).stdout.strip() == ""


# ------------------------------------------------------------------ 13.5: a full disk


@pytest.mark.parametrize("limit", [0, 4096, 8192, 12_000, 16_384, 40_000])
def test_creating_a_ledger_on_a_full_disk_is_one_error_line(tmp_path: Path, limit: int) -> None:
    target = tmp_path / "new.lmdb"
    result = cli_limited(limit, "append", "--ledger", str(target), stdin=jsonl(KA))
    if result.returncode == 0:  # it fitted
        assert cli("verify", "--ledger", str(target)).returncode == 0
        return
    line = one_error_line(result, 1)
    assert "File too large" in line or "full" in line or "No space" in line, line
    if target.exists():  # made, then the append failed: an empty ledger, sound
        verified = cli("verify", "--json", "--ledger", str(target))
        assert json.loads(verified.stdout)["size"] == 0
        assert verified.returncode == 0


READ_AND_CATCH_UP = [
    ["status"],
    ["status", "--as-of", "2"],
    ["history", "runner-1"],
    ["replay"],
    ["checkpoint"],
    ["catch-up"],
    ["verify"],
]


@pytest.mark.parametrize("args", READ_AND_CATCH_UP, ids=" ".join)
def test_commands_that_catch_up_on_a_full_disk_say_so(tmp_path: Path, args: list[str]) -> None:
    target = tmp_path / "full.lmdb"
    events = [dict(KA, subject=f"r-{n}", id=f"k-{n}", actor="x" * 200) for n in range(1500)]
    assert cli("append", "--ledger", str(target), stdin=jsonl(*events)).returncode == 0
    size = (target / "data.mdb").stat().st_size
    before = cli("log", "--json", "--ledger", str(target)).stdout
    result = cli_limited(size, *args, "--ledger", str(target))
    if result.returncode != 0:
        one_error_line(result, 1)
    assert cli("log", "--json", "--ledger", str(target)).stdout == before  # nothing lost
    assert cli("verify", "--ledger", str(target)).returncode == 0


def test_appending_on_a_full_disk_stores_nothing(tmp_path: Path) -> None:
    target = tmp_path / "full.lmdb"
    assert cli("append", "--ledger", str(target), stdin=jsonl(KA)).returncode == 0
    size = (target / "data.mdb").stat().st_size
    big = [dict(KA, id=f"b-{n}", actor="y" * 200) for n in range(500)]
    line = one_error_line(cli_limited(size, "append", "--ledger", str(target),
                                      stdin=jsonl(*big)), 1)  # fmt: skip
    assert "could not be written" in line
    assert json.loads(cli("verify", "--json", "--ledger", str(target)).stdout)["size"] == 1


def _tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


def test_a_really_full_disk_is_refused_before_lmdb_maps_a_file(tmp_path: Path) -> None:
    """A tmpfs with 8 kB left: LMDB would write its lock file through a map and die of SIGBUS.
    (Needs permission to mount a tmpfs; the file-size-limit tests above run everywhere.)"""
    small = tmp_path / "small"
    if shutil.which("mount") is None or not _tmpfs(small, "64k"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        (small / "fill").write_bytes(bytes(56 * 1024))
        line = one_error_line(cli("append", "--ledger", str(small / "x.lmdb"), stdin=jsonl(KA)), 1)
        assert "the disk is full" in line
        assert not (small / "x.lmdb").exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)


# ------------------------------------------------------------------ 13.5: damaged files


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("sound") / "sound.lmdb"
    events = [dict(KA, subject=f"runner-{n % 7}", id=f"s-{n}") for n in range(300)]
    assert cli("append", "--ledger", str(target), stdin=jsonl(*events)).returncode == 0
    assert cli("catch-up", "--ledger", str(target)).returncode == 0
    return target


def damaged_copy(sound: Path, where: Path, change: bytes, at: int) -> Path:
    target = where / "damaged.lmdb"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(sound, target)
    with (target / "data.mdb").open("r+b") as f:
        f.seek(at)
        f.write(change)
    return target


def test_a_damaged_key_in_the_log_is_named_by_verify(sound: Path, tmp_path: Path) -> None:
    """One event's key in the log table changed in place (its record intact, the page's order
    broken): the readers that count positions instead of decoding every key (replay's, the
    catch-up's, verify's) compare every key with its count, so verify names the position
    instead of passing a log that `log` cannot read by position past it."""
    data = (sound / "data.mdb").read_bytes()
    node = b"\x08\x00" + (135).to_bytes(8, "big")  # a leaf node's key size, then the key
    assert data.count(node) == 1, "the log table's key of position 135"
    at = data.index(node) + 4  # a high byte of the key: position 135 + 2**40
    target = damaged_copy(sound, tmp_path, bytes([data[at] ^ 1]), at)
    verified = cli("verify", "--json", "--ledger", str(target))
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["first_bad_position"] == 135
    for args in (["replay"], ["catch-up"]):
        result = cli(*args, "--ledger", str(target))
        if result.returncode != 0:
            one_error_line(result, 1)


def test_zeroed_pages_are_named_not_an_abort(sound: Path, tmp_path: Path) -> None:
    """Every fifth page here; every page in the soak (`tests/test_soak.py`)."""
    zeroed_pages_are_named(sound, tmp_path, step=5)


def zeroed_pages_are_named(sound: Path, tmp_path: Path, step: int = 1) -> int:
    """Each page in use, zeroed, is named by verify, log and replay; a page in LMDB's free
    list, zeroed, is no damage: LMDB never reads it (they read and verify as before)."""
    data = sound / "data.mdb"
    pages = data.stat().st_size // 4096
    free = lmdb_files.free_pages(data.read_bytes(), 4096)
    for page in range(2, pages, step):
        target = damaged_copy(sound, tmp_path, bytes(4096), page * 4096)
        for args in (["verify"], ["log"], ["replay"]):
            result = cli(*args, "--ledger", str(target))
            if page in free:
                assert result.returncode == 0, (page, result.stderr)
                continue
            line = one_error_line(result, 1)
            assert f"page {page}" in line, line
            assert "zeros" in line
    return len(range(2, pages, step))


def test_flipped_bits_never_end_in_a_signal_or_a_traceback(sound: Path, tmp_path: Path) -> None:
    """Random flips (seeded): every command ends with a status and at most one error line;
    when verify says ok, the log reads back exactly as before."""
    rng = random.Random(13)
    size = (sound / "data.mdb").stat().st_size
    before = cli("log", "--json", "--ledger", str(sound)).stdout
    for _ in range(12):
        at = rng.randrange(size)
        original = (sound / "data.mdb").read_bytes()[at]
        target = damaged_copy(sound, tmp_path, bytes([original ^ (1 << rng.randrange(8))]), at)
        verified = cli("verify", "--ledger", str(target))
        for args in (["log", "--json"], ["replay"], ["status"], ["history", "runner-1"]):
            result = cli(*args, "--ledger", str(target))
            if result.returncode != 0:
                one_error_line(result, 1)
            elif args[0] == "log" and verified.returncode == 0:
                assert result.stdout == before
        if verified.returncode != 0:
            one_error_line(verified, 1) if verified.stderr.strip() else None


# ------------------------------------------------------------------ 13.5: exhaustion


def test_nesting_a_thousand_deep_is_one_error_line(tmp_path: Path) -> None:
    line = '{"a":' * 1000 + "1" + "}" * 1000
    error = one_error_line(cli("append", "--ledger", str(tmp_path / "l"), stdin=line + "\n"), 2)
    assert "nested too deep" in error
    nothing_stored(tmp_path / "l")


def test_an_endless_line_is_refused_without_being_held(tmp_path: Path) -> None:
    """200 MB without a newline: refused after the first megabyte, never read whole (the
    process stays far below 200 MB; before, it held the line and, endless, died of it)."""
    code = (
        "import resource, subprocess, sys;"
        "p = subprocess.Popen([sys.executable, '-m', 'adminchain', 'append', '--stream',"
        " '--ledger', sys.argv[1]], stdin=subprocess.PIPE, stderr=subprocess.PIPE);"
        "chunk = b'x' * (1 << 20)\n"
        "try:\n"
        "    for _ in range(200): p.stdin.write(chunk)\n"
        "    p.stdin.close()\n"
        "except BrokenPipeError: pass\n"
        "err = p.stderr.read(); p.wait();"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10);"
        "sys.stdout.write(err.decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "l")],
        capture_output=True, timeout=120, check=True, text=True,
    )  # fmt: skip
    status, peak_mb = map(int, done.stdout.splitlines()[0].split())
    stderr = "\n".join(done.stdout.splitlines()[1:])
    assert "Traceback" not in stderr
    assert status == 2
    assert "longer than 1048576 bytes" in stderr
    assert peak_mb < 150


@pytest.mark.parametrize(
    "args",
    [
        ["maintenance", "enter", "node-1", "--deadline", "3000000d"],
        ["policy", "set", "*", "--budget-window", "99999999999999999999ms"],
        ["policy", "set", "*", "--budget-window", "99999999999999999999"],
    ],
    ids=["deadline-3000000d", "budget-window-ms", "budget-window-number"],
)
def test_durations_beyond_any_calendar_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    one_error_line(cli(*args, "--ledger", str(tmp_path / "l")), 2)
    nothing_stored(tmp_path / "l")


# ------------------------------------------------------------------ 13.8: smaller


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"type":"KeepAliveFailed","subject":"a","subject":"b"}', "subject", "twice"),
        ('{"type":"KeepAliveFailed","type":"LeaseExpired","subject":"a"}', "type", "twice"),
        (
            '{"type":"KeepAliveFailed","subject":"a","at":"2026-01-01T00:00:00.123456789Z"}',
            "at",
            "nanoseconds",
        ),
        ('{"type":"KeepAliveFailed","subject":"a\\ud800"}', "subject", "surrogate"),
        (
            '{"type":"IssueBroadcast","subject":"b","actor":"a","operation":{"kind":"quiesce","reason":"maintenance"},'
            '"targets":[{"backend":"x"},{"backend":"y","backend":"z"}]}',
            "targets[1].backend",
            "twice",
        ),
    ],
    ids=["duplicate-key", "type-twice", "nanoseconds", "lone-surrogate", "nested-duplicate"],
)
def test_json_accepted_silently_before_is_refused_naming_the_field(
    tmp_path: Path, line: str, field: str, words: str
) -> None:
    error = one_error_line(cli("append", "--ledger", str(tmp_path / "l"), stdin=line + "\n"), 2)
    assert f"field `{field}`" in error, error
    assert words in error
    nothing_stored(tmp_path / "l")


def test_repeated_keys_in_sibling_objects_are_fine(tmp_path: Path) -> None:
    line = (
        '{"type":"IssueBroadcast","subject":"b","actor":"a","operation":{"kind":"quiesce","reason":"maintenance"},'
        '"targets":[{"backend":"x","live":true},{"backend":"y","live":true}]}'
    )
    assert cli("append", "--ledger", str(tmp_path / "l"), stdin=line + "\n").returncode == 0


def test_a_byte_order_mark_is_named(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + json.dumps(KA).encode() + b"\n"
    error = one_error_line(cli("append", "--ledger", str(tmp_path / "l"), stdin=data), 2)
    assert "byte order mark" in error


def test_a_regular_file_as_the_ledger_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a ledger")
    for args in (["append"], ["status"], ["verify"]):
        error = one_error_line(cli(*args, "--ledger", str(tmp_path / "file"), stdin=jsonl(KA)), 1)
        assert "is a file, not a ledger directory" in error
    assert (tmp_path / "file").read_text() == "not a ledger"


def test_a_symlink_loop_as_the_ledger_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for args in (["append"], ["status"]):
        error = one_error_line(cli(*args, "--ledger", str(tmp_path / "a"), stdin=jsonl(KA)), 1)
        assert "symbolic link loop" in error


def test_files_are_created_0644_and_0600_under_umask_000(tmp_path: Path) -> None:
    env = dict(os.environ, ADMINCHAIN_ACTOR="alice", ADMINCHAIN_LEDGER=str(tmp_path / "l.lmdb"))

    def run(*args: str, stdin: str = "") -> None:
        done = subprocess.run(
            [sys.executable, "-m", "adminchain", *args], input=stdin.encode(),
            cwd=tmp_path, env=env, capture_output=True, check=False,
            preexec_fn=lambda: os.umask(0),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    run("append", stdin=jsonl(KA))
    run("keygen", "auditor")
    run("checkpoint", "--key", "auditor.key", "--out", "checkpoint.txt")
    run("prove", "1", "--key", "auditor.key", "--out", "event-1.proof")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir() if p.is_file()}
    assert modes == {
        "auditor.key": 0o600,
        "auditor.pub": 0o644,
        "checkpoint.txt": 0o644,
        "event-1.proof": 0o644,
    }
