"""Bulk work through the CLI, as a user runs it, beside eventsourcing + SQLite (issue 17).

    python -m benchmarks.bench_bulk [--events N] [--quick] [--json] [--dir DIR] [--keep]

A JSON Lines file of N benchmark events (default 500k; ``--quick`` 100k) is appended with
``adminchain append FILE`` in a fresh process (wall time; peak RSS, its VmHWM, and the anonymous
and file-backed RSS sampled from here). ``append FILE`` folds the stored views in its own
transaction, so they are current when it returns. Then:

- ``adminchain replay`` right after the append, as a user runs it (on a copy);
- on two more copies whose stored views are dropped (as after an append that does not fold
  them: the library's `Ledger.append_bulk`, another host's appends to PostgreSQL), the first
  ``adminchain catch-up``, and ``adminchain replay`` with the views empty (it brings them up);
- on the original, ``adminchain replay`` again, then ``adminchain checkpoint`` (not timed) and
  ``adminchain verify`` (leaves, tree and the checkpoint's projection digest).

The baseline, in the same run and on the same disk: eventsourcing 9.5.6's SQLite module, an
`Application` saving 100 events per save (``--baseline-saves`` events of them, timed: the append
comparison is by events/s), then filled up to N events (1000 per save, not timed) and read back
with `select_notifications` in pages of 1000, each notification mapped to a domain event (the
read-and-map that replay and verify are compared with).
"""

from __future__ import annotations

import compileall
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    Comparison,
    Figure,
    Report,
    Workdir,
    log,
    make_events,
    parser,
    rate,
    sqlite_app,
    sqlite_fill,
    sqlite_read_map,
)
from ledger.codec import encode_event_json

_CLI = """
import atexit, sys
out = sys.argv[1]
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(line.split()[1])
atexit.register(peak)
sys.argv = ["adminchain", *sys.argv[2:]]
from adminchain.cli import main
main()
"""
"""`adminchain ARGS` as the installed script runs it, writing its peak RSS (kB) at exit."""


def write_events(path: Path, count: int) -> int:
    """The benchmark log as JSON Lines; returns the file's size in bytes."""
    with path.open("wb") as out:
        for start in range(0, count, 50_000):
            events = make_events(min(50_000, count - start), 1000, start)
            out.write(b"".join(encode_event_json(e) + b"\n" for e in events))
    return path.stat().st_size


def cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> dict[str, Any]:
    """Run ``adminchain ARGS`` in a fresh process (by default our tree's, from the repository;
    `env` and `cwd` pick another, e.g. a baseline tree on PYTHONPATH); its wall time, peak RSS
    and sampled peaks."""
    peak_file = workdir / "peak.kb"
    peaks = {"anon": 0, "file": 0}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, str(peak_file), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    done = threading.Event()

    def sample() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while not done.wait(0.02):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                if line.startswith("RssAnon:"):
                    peaks["anon"] = max(peaks["anon"], int(line.split()[1]))
                elif line.startswith("RssFile:"):
                    peaks["file"] = max(peaks["file"], int(line.split()[1]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if process.returncode not in (0,):
        raise RuntimeError(f"adminchain {' '.join(args)} failed: {stderr.decode()[-2000:]}")
    peak = int(peak_file.read_text()) if peak_file.exists() else 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu": cpu,  # the process and its workers (reaped children count in RUSAGE_CHILDREN)
        "peak_kb": peak,
        "anon_kb": peaks["anon"],
        "file_kb": peaks["file"],
    }


def byte_compile(root: Path = REPO) -> None:
    """Byte-compile our packages under `root` (``__pycache__``), as installing them does: each
    timed command then starts as an installed one does, not compiling its modules first (about
    0.1 s of every command where ``PYTHONDONTWRITEBYTECODE`` keeps Python from caching them)."""
    for package in ("adminchain", "ledger", "projections", "replay"):
        compileall.compile_dir(root / package, quiet=1)


def drop_views(path: Path) -> None:
    """Drop the stored views of the ledger at `path` (not timed)."""
    from ledger.ledger import Ledger  # noqa: PLC0415
    from projections.api import Views  # noqa: PLC0415

    with Ledger.open(path, create=False) as log:
        Views(log).store.reset()


def cpu_timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(fn(), wall seconds, CPU seconds of this process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=None, help="events in the file (default 500k)")
    p.add_argument(
        "--baseline-saves", type=int, default=None, help="baseline events saved 100 a save"
    )
    args = p.parse_args()
    count = args.events or (100_000 if args.quick else 500_000)
    saves = args.baseline_saves or (50_000 if args.quick else 200_000)
    report: Report
    byte_compile()
    with Workdir(args.dir, "bench-bulk-", keep=args.keep) as work:
        report = Report("adminchain bench_bulk (CLI)", work.disk, str(work.path))
        report.params = {"events": count, "subjects": 1000, "baseline_saves_at_100": saves}
        events_file = work.sub("events.jsonl")
        size = write_events(events_file, count)
        log(f"{count:,} events written: {size / 1e6:.1f} MB")
        ledger, copy = work.sub("ledger"), work.sub("ledger-copy")
        unfolded, unfolded_replay = work.sub("ledger-unfolded"), work.sub("ledger-unfolded-2")

        log("ours: append FILE")
        appended = cli(work.path, "append", str(events_file), "--ledger", str(ledger))
        shutil.copytree(ledger, copy)
        for target in (unfolded, unfolded_replay):
            shutil.copytree(ledger, target)
            drop_views(target)
        log("baseline: SQLite application, 100 events per save")
        app = sqlite_app(work.sub("baseline.sqlite"))
        (baseline_save, _), _, baseline_save_cpu = cpu_timed(
            lambda: sqlite_fill(app, saves, per_save=100)
        )
        log("ours: replay right after the append; catch-up and replay with the views dropped")
        replay_fresh = cli(work.path, "replay", "--json", "--ledger", str(copy))
        catch_up = cli(work.path, "catch-up", "--json", "--ledger", str(unfolded))
        replay_empty = cli(work.path, "replay", "--json", "--ledger", str(unfolded_replay))
        log("baseline: filled up to the same size (not timed), read and mapped")
        if count > saves:
            sqlite_fill(app, count - saves, per_save=1000)
        (read_count, read_map), _, read_cpu = cpu_timed(lambda: sqlite_read_map(app))
        log("ours: replay again, checkpoint, verify")
        replay_caught_up = cli(work.path, "replay", "--json", "--ledger", str(ledger))
        cli(work.path, "checkpoint", "--json", "--ledger", str(ledger))
        verified = cli(work.path, "verify", "--json", "--ledger", str(ledger))
        log("baseline: read and map again (after ours: both sides see the same machine)")
        (_, read_map_again), _, read_cpu_again = cpu_timed(lambda: sqlite_read_map(app))
        read_map = min(read_map, read_map_again)
        read_cpu = min(read_cpu, read_cpu_again)

    baseline_read = rate(read_count, read_map)
    label = f"SQLite read + map {read_count:,}"
    report.comparisons = [
        Comparison(
            f"append FILE, {count:,} events",
            rate(count, appended["seconds"]),
            rate(saves, baseline_save),
            "events/s",
            8.0,
            ours_label="adminchain append FILE (one atomic batch)",
            baseline_label=f"SQLite app, 100/save, {saves:,}",
            note="fresh process; parse, validate, store, flush",
        ),
        Comparison(
            "replay right after the append",
            rate(count, replay_fresh["seconds"]),
            baseline_read,
            "events/s",
            3.0,
            aim=5.0,
            ours_label="adminchain replay",
            baseline_label=label,
            note="append FILE folded the views in its own commit",
        ),
        Comparison(
            "replay, views dropped",
            rate(count, replay_empty["seconds"]),
            baseline_read,
            "events/s",
            3.0,
            ours_label="adminchain replay (views empty)",
            baseline_label=label,
            note="the replay also brings the stored views up",
        ),
        Comparison(
            "replay again",
            rate(count, replay_caught_up["seconds"]),
            baseline_read,
            "events/s",
            None,
            ours_label="adminchain replay",
            baseline_label=label,
        ),
        Comparison(
            "verify, checkpoint digest included",
            rate(count, verified["seconds"]),
            baseline_read,
            "events/s",
            4.0,
            ours_label="adminchain verify",
            baseline_label=label,
            note="a checkpoint at the end: every event folded",
        ),
    ]
    report.figures = [
        Figure(
            "catch-up",
            rate(count, catch_up["seconds"]),
            "events/s",
            f"adminchain catch-up of {count:,} (views dropped): {catch_up['seconds']:.2f} s "
            "(target ≥ 600k/s)",
        ),
        Figure(
            "append FILE, peak RSS",
            appended["peak_kb"] / 1024,
            "MB",
            f"{appended['peak_kb'] * 1024 / size:.1f}x the {size / 1e6:.0f} MB input; sampled "
            f"anon {appended['anon_kb'] // 1024} MB + file {appended['file_kb'] // 1024} MB",
        ),
        Figure(
            "append FILE, wall",
            appended["seconds"],
            "s",
            f"baseline {baseline_save:.2f} s for {saves:,}",
        ),
        Figure("replay right after the append, wall", replay_fresh["seconds"], "s", ""),
        Figure("replay, views dropped, wall", replay_empty["seconds"], "s", ""),
        Figure("replay caught up, wall", replay_caught_up["seconds"], "s", ""),
        Figure("verify, wall", verified["seconds"], "s", ""),
        Figure("baseline read + map, wall", read_map, "s", f"{read_count:,} events, best of 2"),
        *(
            Figure(
                f"{name}: CPU ratio",
                base / ours["cpu"] if ours["cpu"] else float("inf"),
                "x",
                f"CPU seconds, ours {ours['cpu']:.2f} (process + workers, start-up included) vs "
                f"baseline {base:.2f}: less sensitive to other load on the machine",
            )
            for name, ours, base in (
                ("append FILE", appended, baseline_save_cpu * count / saves),
                ("replay right after the append", replay_fresh, read_cpu),
                ("replay, views dropped", replay_empty, read_cpu),
                ("replay caught up", replay_caught_up, read_cpu),
                ("verify", verified, read_cpu),
            )
        ),
        Figure(
            "catch-up, CPU",
            rate(count, catch_up["cpu"]),
            "events/CPU-s",
            f"{catch_up['cpu']:.2f} CPU s, start-up included",
        ),
    ]
    report.emit(as_json=args.json)


if __name__ == "__main__":
    main()
