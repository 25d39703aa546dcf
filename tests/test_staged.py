"""Staged big appends on LMDB (`ledger.lmdb_backend`, "Staged appends"; issue 16 item 5 and
issue 17): a big append commits `bulk.COMMIT` events at a time, so the write's memory is
bounded, and is still all or nothing (SPEC §1): nobody sees a part of it, a failure or a
crash leaves nothing visible, and the next writer removes what a dead one left.

`bulk.COMMIT` is set small here so that small inputs take several commits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger import backend as backend_module
from ledger import bulk
from ledger.errors import InvalidEventError, StrictRefusedError
from ledger.events import (
    EnterMaintenance,
    Event,
    ExitMaintenance,
    KeepAliveFailed,
    MaintenanceObserved,
)
from ledger.ledger import Ledger
from ledger.lmdb_backend import FORMAT, FORMAT_KEY, FORMAT_STAGED, PENDING_KEY, LMDBBackend
from ledger.lmdb_datastore import LMDBDatastore
from projections.api import Views
from replay.audit import run_audit
from replay.integrity import verify
from tests.eventgen import ts

REPO = Path(__file__).resolve().parent.parent
COMMIT = 300
CHUNK = 100


@pytest.fixture(autouse=True)
def small_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "COMMIT", COMMIT)


def failures(n: int, start: int = 0, prefix: str = "e") -> list[tuple[int, Event]]:
    return [
        (i + 1, KeepAliveFailed(subject=f"r{i % 7}", id=f"{prefix}{start + i}", at=ts(start + i)))
        for i in range(n)
    ]


def layout(log: Ledger) -> bytes | None:
    backend = log.backend
    assert isinstance(backend, LMDBBackend)
    with backend.snapshot() as txn:
        found = txn.get(FORMAT_KEY.encode(), db=backend.meta_db)
        return None if found is None else bytes(found)


def marked(log: Ledger) -> bool:
    backend = log.backend
    assert isinstance(backend, LMDBBackend)
    with backend.snapshot() as txn:
        return txn.get(PENDING_KEY, db=backend.meta_db) is not None


def commits_of(log: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of write transactions of the log's datastore, counted as they begin."""
    backend = log.backend
    assert isinstance(backend, LMDBBackend)
    count = [0]
    real = backend.datastore.write

    def write(**kwargs: bool):  # type: ignore[no-untyped-def]
        count[0] += 1
        return real(**kwargs)

    monkeypatch.setattr(backend.datastore, "write", write)
    return count


def test_a_staged_append_stores_what_one_transaction_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several commits; the same events, positions, tree and views as one transaction."""
    events = failures(1000)
    first = [(1, KeepAliveFailed(subject="r0", id="before", at=ts(0)))]
    logs = {}
    for name, commit in (("one", 10**9), ("staged", COMMIT)):
        monkeypatch.setattr(bulk, "COMMIT", commit)
        log = logs[name] = Ledger.open(tmp_path / f"{name}.lmdb")
        log.append_bulk(first)
        views = Views(log)
        views.catch_up()
        counted = commits_of(log, monkeypatch)
        result = views.append_spooled(log.spool(events, chunk=CHUNK))
        assert [a.position for a in result] == list(range(2, 1002))
        assert counted[0] == (1 if name == "one" else 5), "commits of 300, then the last one"
    one, staged = logs["one"], logs["staged"]
    try:
        assert [e.event for e in staged.read()] == [e.event for e in one.read()]
        assert staged.size() == 1001
        assert verify(staged).ok
        assert run_audit(staged).diverged == []
        assert Views(staged).tracking() == 1001
        for subject in ("r0", "r3"):
            assert Views(staged).state("detachment", subject) == Views(one).state(
                "detachment", subject
            )
        assert not marked(staged)
        assert layout(staged) == FORMAT
    finally:
        one.close()
        staged.close()


def test_readers_see_nothing_of_a_staged_append_until_its_last_commit(tmp_path: Path) -> None:
    """Between its commits, the log's size, a subject's history, the index check, the views
    and `verify` all stay as before it; the marker is there, the layout says so."""
    seen: list[tuple[int, int, int, bool, bool, bytes | None]] = []
    with Ledger.open(tmp_path / "r.lmdb") as log:
        log.append_batch([KeepAliveFailed(subject="r0", id="before", at=ts(0))])
        views = Views(log)
        views.catch_up()

        def progress(done: int, total: int) -> None:
            if done and done % COMMIT == 0:  # this commit's chunks are committed, hidden
                seen.append(
                    (
                        log.size(),
                        len(log.history("r0")),
                        Views(log).tracking(),
                        verify(log).ok,
                        marked(log),
                        layout(log),
                    )
                )

        views.append_spooled(log.spool(failures(1000), chunk=CHUNK), progress=progress)
        assert log.size() == 1001
        assert len(log.history("r0")) == 1 + len([i for i in range(1000) if i % 7 == 0])
    assert len(seen) == 3
    # the first commit's progress comes before that commit: no marker yet
    assert seen[0][:4] == (1, 1, 1, True)
    for size, history, tracking, ok, mark, form in seen[1:]:
        assert (size, history, tracking, ok) == (1, 1, 1, True)
        assert mark
        assert form == FORMAT_STAGED


def test_a_failure_after_some_commits_leaves_nothing(tmp_path: Path) -> None:
    """A chunk of its third commit refused: what the earlier commits wrote is removed; the same
    input is then stored whole, none of it a duplicate."""
    with Ledger.open(tmp_path / "f.lmdb") as log:
        log.append_batch([KeepAliveFailed(subject="r0", id="before", at=ts(0))])
        events = failures(1000)
        calls = [0]

        def check(ops: object, batch: object) -> None:
            calls[0] += 1
            if calls[0] == 8:  # the chunk of input lines 701..800, in the third commit
                raise InvalidEventError("refused for the test", line=777)

        with pytest.raises(InvalidEventError):
            _refuse_later(log, events, check)
        assert calls[0] == 8
        assert log.size() == 1
        assert not marked(log)
        assert layout(log) == FORMAT
        assert verify(log).ok
        result = log.append_bulk(events, chunk=CHUNK)
        assert result.stored == 1000
        assert log.size() == 1001
        assert verify(log).ok


def _refuse_later(
    log: Ledger, events: list[tuple[int, Event]], check: object, chunk: int = CHUNK
) -> None:
    """A staged append whose `check_chunk` refuses a chunk of a later commit."""
    from ledger.backend import AppendRequest  # noqa: PLC0415

    spool = log.spool(events, chunk=chunk)
    request = AppendRequest(
        [], spool.recorded_at, source=spool.read, check_chunk=check,  # type: ignore[arg-type]
        spooled=spool.count, stageable=True,
    )  # fmt: skip
    log.backend.write([request])


def test_a_strict_staged_append_checks_each_commit_on_the_states_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`append FILE --strict`, staged: an exit in the fourth commit is accepted only because
    the first commit put the node in maintenance (states held back, not yet stored: the check
    must read them); a refused exit in a later commit refuses the whole append, leaving
    nothing."""
    with Ledger.open(tmp_path / "strict.lmdb") as log:
        views = Views(log)
        counted = commits_of(log, monkeypatch)

        def events(*, drained: bool) -> list[tuple[int, Event]]:
            out: list[Event] = [EnterMaintenance(subject="n1", actor="op", at=ts(0))]
            if drained:
                out.append(MaintenanceObserved(subject="n1", at=ts(1), state="Maintenance"))
            out += [e for _, e in failures(1000, start=10)]
            out.append(ExitMaintenance(subject="n1", actor="op", at=ts(2000)))
            return list(enumerate(out, 1))

        with pytest.raises(StrictRefusedError) as caught:  # not drained: the exit is refused
            views.append_spooled(log.spool(events(drained=False), chunk=CHUNK), strict=True)
        assert caught.value.line == 1002
        assert counted[0] >= 4, "it was staged: three commits before the refused chunk"
        assert log.size() == 0
        assert not marked(log)
        reads: list[tuple[int, int]] = []
        real = backend_module._Pending.read_stored

        def read_stored(self: object, start: int, stop: int) -> object:
            reads.append((start, stop))
            return real(self, start, stop)  # type: ignore[arg-type]

        monkeypatch.setattr(backend_module._Pending, "read_stored", read_stored)
        result = views.append_spooled(log.spool(events(drained=True), chunk=CHUNK), strict=True)
        assert result.stored == 1003
        # each commit's check goes on from the held-back states: it reads none of the append
        assert [(a, b) for a, b in reads if b >= a] == []
        state = views.state("maintenance", "n1")
        assert state is not None
        assert state.state == "ExitingMaintenance"
        assert verify(log).ok
        assert run_audit(log).diverged == []


def test_another_writer_waits_for_a_staged_append_then_follows_it(tmp_path: Path) -> None:
    """A single append started while a staged append is between commits is stored after it
    (its position follows the whole append), never in the middle of it."""
    with Ledger.open(tmp_path / "w.lmdb") as log:
        started = threading.Event()
        other: list[int] = []

        def append_one() -> None:
            started.set()
            (appended,) = log.append_batch([KeepAliveFailed(subject="x", id="other", at=ts(5))])
            other.append(appended.position)

        thread = threading.Thread(target=append_one)

        def progress(done: int, total: int) -> None:
            if done == 2 * COMMIT:  # the first commit is in: the marker is there
                thread.start()
                started.wait()
                time.sleep(0.3)
                assert other == [], "the other writer waits for the staged append"

        log.append_bulk(failures(1000), chunk=CHUNK, progress=progress)
        thread.join(30)
        assert other == [1001]
        assert verify(log).ok


def test_a_map_that_must_grow_mid_commit_starts_the_append_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without reserving room ahead, a full map aborts a commit in the middle: what was
    committed is removed and the append starts again on the grown map; all of it, once."""
    monkeypatch.setattr(LMDBDatastore, "reserve", lambda self, n: None)
    with Ledger(LMDBBackend(tmp_path / "small.lmdb", map_size=1 << 20)) as log:
        starts = [0]
        result = log.append_bulk(
            failures(6000),
            chunk=1000,
            progress=lambda done, total: starts.__setitem__(0, starts[0] + (done == 1000)),
        )
        assert starts[0] > 1, "the map grew: the append started again"
        assert [a.position for a in result] == list(range(1, 6001))
        assert log.size() == 6000
        assert not marked(log)
        assert verify(log).ok


KILLED = """
import os, signal, sys
from ledger import backend as backend_module
from ledger import bulk
bulk.COMMIT = {commit}
from ledger.ledger import Ledger
from ledger.events import KeepAliveFailed
from projections.api import Views
log = Ledger.open({target!r})
views = Views(log)
events = [(i + 1, KeepAliveFailed(subject=f"r{{i % 7}}", id=f"k{{i}}")) for i in range(1000)]
def progress(done, total):
    if done == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
views.append_spooled(log.spool(events, chunk={chunk}), progress=progress)
"""


def test_a_staged_append_killed_midway_is_invisible_then_swept(tmp_path: Path) -> None:
    """kill -9 after two of its commits: the ledger reads, verifies and audits as before it,
    with the marker left; the next append removes the hidden events (their ids are new again)
    and stores after the last visible position."""
    target = tmp_path / "k.lmdb"
    with Ledger.open(target) as log:
        log.append_batch([KeepAliveFailed(subject="r0", id="before", at=ts(0))])
        Views(log).catch_up()
    script = KILLED.format(commit=COMMIT, target=str(target), kill_at=7 * CHUNK, chunk=CHUNK)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL
    with Ledger.open(target) as log:
        assert marked(log), "two commits were in when it died"
        assert layout(log) == FORMAT_STAGED
        assert log.size() == 1
        assert verify(log).ok
        assert run_audit(log).diverged == []
        assert Views(log).tracking() == 1
        assert [e.position for e in log.history("r0")] == [1]
        events = [(i + 1, KeepAliveFailed(subject=f"r{i % 7}", id=f"k{i}")) for i in range(1000)]
        result = Views(log).append_spooled(log.spool(events[:10], chunk=CHUNK))
        assert [a.duplicate for a in result] == [False] * 10
        assert [a.position for a in result] == list(range(2, 12))
        assert not marked(log)
        assert layout(log) == FORMAT
        assert verify(log).ok
        assert run_audit(log).diverged == []


def test_a_single_append_after_a_dead_staged_append_sweeps_it(tmp_path: Path) -> None:
    """The writer that meets a dead append's marker is any writer: a one-event append too."""
    target = tmp_path / "s.lmdb"
    script = KILLED.format(commit=COMMIT, target=str(target), kill_at=9 * CHUNK, chunk=CHUNK)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL
    with Ledger.open(target) as log:
        assert marked(log)
        assert log.size() == 0
        (appended,) = log.append_batch([KeepAliveFailed(subject="r0", id="k3", at=ts(0))])
        assert (appended.position, appended.duplicate) == (1, False)
        assert not marked(log)
        assert verify(log).ok


def test_cli_append_of_a_big_file_is_staged_and_whole(tmp_path: Path) -> None:
    """`adminchain append FILE` past `bulk.COMMIT` events (set small in the process): staged,
    every event stored, the views current, the ledger verifies."""
    lines = [
        f'{{"type":"KeepAliveFailed","subject":"runner-{i % 5}","id":"c{i}"}}' for i in range(1200)
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    target = tmp_path / "cli.lmdb"
    run = (
        "import sys\nfrom ledger import bulk, lmdb_backend\nbulk.COMMIT = 300\n"
        "real = lmdb_backend.LMDBBackend._stage\n"
        "def stage(self, request):\n    print('staged', file=sys.stderr)\n    real(self, request)\n"
        "lmdb_backend.LMDBBackend._stage = stage\n"
        "sys.argv = ['adminchain', '--ledger', sys.argv[1], 'append', sys.argv[2]]\n"
        "from adminchain.cli import main\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", run, str(target), str(data)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"staged" in err
    with Ledger.open(target) as log:
        assert log.size() == 1200
        assert Views(log).tracking() == 1200
        assert verify(log).ok


def test_the_free_pages_a_removal_leaves_are_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a staged append frees pages that were taken at the end of the file and never
    written: all zeros, but in LMDB's free list, so `verify` and a whole-log read go on. The
    free list as read from the file accounts for every page that no table uses."""
    import mmap  # noqa: PLC0415

    from ledger import lmdb_files  # noqa: PLC0415

    monkeypatch.setattr(bulk, "COMMIT", 5000)
    target = tmp_path / "z.lmdb"
    with Ledger.open(target) as log:
        log.append_batch([KeepAliveFailed(subject="r0", id="before", at=ts(0))])
        calls = [0]

        def check(ops: object, batch: object) -> None:
            calls[0] += 1
            if calls[0] == 30:  # the last chunk: five commits of 5000 are in
                raise InvalidEventError("refused for the test", line=29_001)

        with pytest.raises(InvalidEventError):
            _refuse_later(log, failures(30_000), check, chunk=1000)
        assert log.size() == 1
        backend = log.backend
        assert isinstance(backend, LMDBBackend)
        env = backend.datastore.env
        page_size, pages = env.stat()["psize"], env.info()["last_pgno"] + 1
        with backend.snapshot() as txn:
            used = sum(
                (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"])
                for stat in [env.stat()]
                + [txn.stat(env.open_db(bytes(name), txn=txn)) for name, _ in txn.cursor()]
            )
        data = target / "data.mdb"
        with data.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            free = lmdb_files.free_pages(view, page_size)
            meta = max(
                (0, 1), key=lambda n: int.from_bytes(view[n * page_size + 144 :][:8], "little")
            )
            at = meta * page_size
            free_tree = sum(
                int.from_bytes(view[at + o : at + o + 8], "little") for o in (48, 56, 64)
            )
            zero = bytes(page_size)
            zeroed = [n for n in range(pages) if view[n * page_size : (n + 1) * page_size] == zero]
        assert len(free) == pages - 2 - used - free_tree, "metas + tables + free list + free"
        assert zeroed, "the removal left pages of zeros (else this test shows nothing)"
        assert set(zeroed) <= free
        assert lmdb_files.zeroed_page(data, pages, page_size) is None
        assert verify(log).ok
        assert [e.position for e in log.read()] == [1]


def test_verify_names_the_positions_a_dead_staged_append_hides(tmp_path: Path) -> None:
    """`adminchain verify` after kill -9 mid-way: exit 0 for the log as it is, and a warning
    naming the hidden positions (in --json too); after the next append removes them, neither."""
    import json  # noqa: PLC0415

    target = tmp_path / "v.lmdb"
    script = KILLED.format(commit=COMMIT, target=str(target), kill_at=7 * CHUNK, chunk=CHUNK)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert proc.returncode == -signal.SIGKILL

    def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "adminchain", "--ledger", str(target), "verify", *args],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip

    human = verify_cli()
    assert human.returncode == 0, human.stderr
    assert "verified: 0 events" in human.stdout
    assert "warning: positions 1-600 hold a big append that is not part of the log" in (
        human.stderr
    )
    as_json = verify_cli("--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["hidden_positions"] == [1, 600]
    with Ledger.open(target) as log:
        log.append_batch([KeepAliveFailed(subject="r0", id="after", at=ts(0))])
    again = verify_cli("--json")
    assert again.returncode == 0
    assert "hidden_positions" not in json.loads(again.stdout)
    assert again.stderr == ""
