"""What every benchmark shares: options, the work directory and its disk, timers, event and
baseline generators, and the report (a Rich table on stdout, or JSON with ``--json``).

Each benchmark measures our code and its baseline in the same run, in sibling directories of one
work directory (so on the same disk), and reports both figures and their ratio against a target.
Progress goes to stderr, so ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from eventsourcing.domain import Aggregate

from ledger.events import (
    BackendCrashed,
    BackendRecovered,
    BroadcastAcked,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    MaintenanceObserved,
    MembershipObserved,
    Quiesce,
    SetPolicy,
    StorageFailed,
    Target,
)

__all__ = [
    "DEFAULT_ROOT",
    "Comparison",
    "Figure",
    "Report",
    "Workdir",
    "disk_of",
    "fill_ledger",
    "log",
    "make_events",
    "parser",
    "peak_rss_kb",
    "percentile",
    "rate",
    "run_child",
    "source_key",
    "sqlite_app",
    "sqlite_fill",
    "sqlite_read_map",
    "timed",
    "warm",
]

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_ROOT: Final = REPO / "bench-out"
"""Where work directories go by default: beside the repository (gitignored), on its disk."""


# ---------------------------------------------------------------------------- options, output


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --dir, --quick, --json, --keep."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"parent of the run's work directory (default {DEFAULT_ROOT}; avoid tmpfs)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a fast sanity run")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    return p


_T0: Final = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, with seconds since start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def disk_of(path: Path) -> str:
    """The device, filesystem type and mount point holding `path` (from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best: tuple[str, str, str] = ("?", "?", "/")
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        left, _, right = line.partition(" - ")
        mount = left.split()[4]
        fstype, source = right.split()[:2]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[2]):
            best = (source, fstype, mount)
    source, fstype, mount = best
    warning = " — tmpfs: RAM, not a disk: fsync figures mean nothing" if fstype == "tmpfs" else ""
    return f"{source} ({fstype}, mounted on {mount}){warning}"


class Workdir:
    """One run's directory under the chosen parent; subdirectories for each side; removed after."""

    def __init__(self, parent: Path, prefix: str, *, keep: bool = False) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.keep = keep
        self.disk = disk_of(self.path)

    def sub(self, name: str) -> Path:
        """A fresh path inside the work directory (not created: LMDB and SQLite make their own)."""
        path = self.path / name
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return path

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            log(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def rate(count: int, seconds: float) -> float:
    """Events per second."""
    return count / seconds if seconds > 0 else float("inf")


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0-100) by nearest rank on sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Comparison:
    """Our figure against the baseline's; the ratio is ours over the baseline's (the baseline's
    over ours when lower is better, e.g. latencies), so above 1 means we are faster. `target`
    is the minimum ratio aimed for (None: reported for information)."""

    name: str
    ours: float
    baseline: float
    unit: str
    target: float | None
    aim: float | None = None
    ours_label: str = ""
    baseline_label: str = ""
    note: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        ours, baseline = self.ours, self.baseline
        num, den = (ours, baseline) if self.higher_is_better else (baseline, ours)
        return num / den if den else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio, "met": self.met}


@dataclass
class Figure:
    """A figure reported on its own (a latency, a peak memory), with what it means."""

    name: str
    value: float
    unit: str
    note: str = ""


def revision() -> str:
    """The commit measured, and whether the measured sources had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *_SOURCES, "replay"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


@dataclass
class Report:
    """What a benchmark prints: its comparisons, its other figures and the run's parameters."""

    title: str
    disk: str
    workdir: str
    params: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    load: list[float] = field(default_factory=lambda: [round(x, 2) for x in os.getloadavg()])
    """1-minute load average at the start and the end: other work on the machine skews figures."""
    revision: str = field(default_factory=revision)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "disk": self.disk,
            "workdir": self.workdir,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average": self.load,
            "revision": self.revision,
            "params": self.params,
            "comparisons": [c.to_json() for c in self.comparisons],
            "figures": [asdict(f) for f in self.figures],
        }

    def emit(self, *, as_json: bool) -> None:
        """Print the report: JSON, or Rich tables."""
        self.load.append(round(os.getloadavg()[0], 2))
        self.load = [self.load[0], self.load[-1]]
        if as_json:
            print(json.dumps(self.to_json(), indent=2))
            return
        from rich.console import Console  # noqa: PLC0415  only for the human output
        from rich.table import Table  # noqa: PLC0415

        console = Console(width=max(100, Console().width))
        console.print(f"[bold]{self.title}[/bold]")
        console.print(f"code: {self.revision}")
        console.print(f"disk: {self.disk}   work dir: {self.workdir}")
        console.print(
            f"cpus: {os.cpu_count()}   load average (1 min) at start / end: "
            f"{self.load[0]:g} / {self.load[-1]:g}"
        )
        console.print("params: " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        if self.comparisons:
            table = Table(show_lines=False)
            for column in ("benchmark", "ours", "baseline", "ratio", "target", ""):
                table.add_column(column, justify="left" if column == "benchmark" else "right")
            for c in self.comparisons:
                if c.target is None:
                    target, status = "none (info)", "[dim]info[/dim]"
                else:
                    target = f"≥ {c.target:g}x" + (f" (aim {c.aim:g}x)" if c.aim else "")
                    status = "[green]met[/green]" if c.met else "[red]MISSED[/red]"
                table.add_row(
                    c.name + (f"\n[dim]{c.note}[/dim]" if c.note else ""),
                    f"{_fmt(c.ours)} {c.unit}"
                    + (f"\n[dim]{c.ours_label}[/dim]" if c.ours_label else ""),
                    f"{_fmt(c.baseline)} {c.unit}"
                    + (f"\n[dim]{c.baseline_label}[/dim]" if c.baseline_label else ""),
                    f"{c.ratio:.2f}x",
                    target,
                    status,
                )
            console.print(table)
        if self.figures:
            table = Table()
            table.add_column("figure")
            table.add_column("value", justify="right")
            table.add_column("note")
            for f in self.figures:
                table.add_row(f.name, f"{_fmt(f.value)} {f.unit}", f.note)
            console.print(table)


def _fmt(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):  # nan, inf
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# ---------------------------------------------------------------------------- events

BASE_TIME: Final = datetime(2024, 1, 1, tzinfo=UTC)
STEP_MS: Final = 10
"""Milliseconds between consecutive events: with 1k subjects, one subject's events are 10 s
apart, so recovery and budget windows elapse between them, as in a calm cluster."""

CYCLE: Final = 16
"""Each subject goes through a fixed lifecycle of 16 events that every projection handles:
maintenance in and out, keep-alive failures and health, a crash and recovery, a broadcast with
an ack, a storage failure, membership and per-subject policy. Verdicts are mostly ``applied``."""


def make_event(i: int, subjects: int = 1000) -> Event:
    """The `i`-th event (0-based) of the benchmark log over `subjects` nodes; deterministic.

    No ``id``: the ledger assigns one, as it does for most appends. ``at`` is set.
    """
    s = i % subjects
    round_ = i // subjects
    step = round_ % CYCLE
    node = f"node-{s:05d}"
    at = BASE_TIME + timedelta(milliseconds=i * STEP_MS)
    if step == 0:
        return EnterMaintenance(
            subject=node, actor="alice", at=at, reason="kernel upgrade",
            deadline=at + timedelta(hours=1),
        )  # fmt: skip
    if step == 1:
        return MaintenanceObserved(subject=node, at=at, state="Maintenance")
    if step in (2, 3):
        return KeepAliveFailed(subject=node, at=at)
    if step in (4, 13):
        return HealthObserved(subject=node, at=at, healthy=True)
    if step == 5:
        return ExitMaintenance(subject=node, actor="alice", at=at)
    if step == 6:
        return MaintenanceObserved(subject=node, at=at, state="Recovery")
    if step == 7:
        return BackendCrashed(subject=node, at=at)
    if step == 8:
        return MaintenanceObserved(subject=node, at=at, state="Active")
    if step == 9:
        return BackendRecovered(subject=node, at=at)
    broadcast = f"{node}/b{round_ // CYCLE % 8}"
    if step == 10:
        return IssueBroadcast(
            subject=broadcast, actor="bob", at=at, operation=Quiesce(reason="maintenance"),
            targets=[Target(backend=node), Target(backend=f"{node}-replica")],
        )  # fmt: skip
    if step == 11:
        return BroadcastAcked(subject=broadcast, at=at, backend=node)
    if step == 12:
        return StorageFailed(subject=node, at=at, message="disk full on /var")
    cycle = round_ // CYCLE
    if step == 14:
        cluster = s % 16
        members = [f"node-{p:05d}" for p in range(cluster, subjects, 16)][:8]
        gone = cycle % max(1, len(members))  # one member is missing: it changes every cycle
        peers = members[:gone] + members[gone + 1 :]
        return MembershipObserved(subject=f"cluster-{cluster}", at=at, peers=peers)
    threshold = 2 + cycle % 2
    return SetPolicy(subject=node, actor="alice", at=at, keepalive_failure_threshold=threshold)


def make_events(count: int, subjects: int = 1000, start: int = 0) -> list[Event]:
    """Events `start` .. `start + count - 1` of the benchmark log."""
    return [make_event(i, subjects) for i in range(start, start + count)]


def fill_ledger(
    path: Path,
    count: int,
    *,
    subjects: int = 1000,
    chunk: int = 100_000,
    sync: bool = False,
    views: bool = False,
) -> float:
    """Append benchmark events until the ledger at `path` holds `count` (setup only: batches of
    `chunk`, not flushed by default); with `views`, catch the stored views up. Returns seconds.

    The LMDB map is sized up front (about 1 kB an event), so no batch is aborted and retried
    to grow it: setup time is not what is measured.
    """
    from ledger.ledger import Ledger  # noqa: PLC0415
    from ledger.lmdb import DEFAULT_MAP_SIZE, LMDBDatastore  # noqa: PLC0415

    t0 = time.perf_counter()
    presized = LMDBDatastore.open(path, map_size=DEFAULT_MAP_SIZE + count * 1024, sync=sync)
    try:
        with Ledger.open(path, sync=sync) as ledger:
            done = ledger.size()
            while done < count:
                n = min(chunk, count - done)
                ledger.append_batch(make_events(n, subjects, done))
                done += n
                if done % 500_000 == 0 or done == count:
                    log(f"  {path.name}: {done:,} events appended")
            if views:
                from projections.api import Views  # noqa: PLC0415

                Views(ledger).catch_up()
                log(f"  {path.name}: views caught up")
    finally:
        presized.close()
    return time.perf_counter() - t0


_SOURCES: Final = ("ledger", "projections")
_STORED_FORM: Final = (
    *(f"ledger/{m}.py" for m in ("backend", "codec", "events", "lmdb", "lmdb_backend", "merkle")),
    "projections/*.py",
)
"""What decides the bytes of a setup ledger: the event catalogue and codecs, the LMDB layout,
the Merkle tree, the folds and the stored views (not the Ledger facade, PostgreSQL or proofs)."""


def source_key() -> str:
    """A short hash of the sources that shape a stored ledger (`_STORED_FORM`) and of this
    module: cached setup ledgers are reused only while none of them changed."""
    h = hashlib.sha256()
    files = sorted(
        p
        for pattern in _STORED_FORM
        for p in REPO.glob(pattern)
        if p.name not in ("store_postgres.py", "api.py")
    )
    for path in [*files, Path(__file__)]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cached_ledger(
    root: Path, count: int, *, key: str, subjects: int = 1000, fresh: bool = False
) -> Path:
    """A ledger of `count` benchmark events with caught-up views, kept under ``root/cache``.

    Building millions of events takes minutes, so setups are kept between runs, keyed by
    `key` (`source_key()`, computed once per run: others may edit the sources meanwhile); a
    bigger one is built by copying the biggest smaller one and extending it. `fresh` rebuilds.
    Returns the ledger's path (read it, do not append to it).
    """
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.iterdir():
        if stale.name.startswith("ledger-") and not stale.name.endswith(f"-{key}"):
            shutil.rmtree(stale, ignore_errors=True)
    target = cache / f"ledger-{count}-{subjects}-{key}"
    if target.exists() and not fresh:
        log(f"  reusing {target}")
        return target
    shutil.rmtree(target, ignore_errors=True)
    building = cache / f"building-{count}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    smaller = sorted(
        (int(p.name.split("-")[1]), p)
        for p in cache.glob(f"ledger-*-{subjects}-{key}")
        if int(p.name.split("-")[1]) < count
    )
    if smaller and not fresh:
        log(f"  copying {smaller[-1][1].name} to extend it")
        shutil.copytree(smaller[-1][1], building)
    seconds = fill_ledger(building, count, subjects=subjects, views=True)
    log(f"  built {count:,} events in {seconds:.0f} s")
    building.rename(target)
    return target


# ---------------------------------------------------------------------------- the baseline


class Node(Aggregate):
    """The baseline's aggregate: one node, observed many times (fields like our events')."""

    class Observed(Aggregate.Event):
        kind: str
        subject: str
        actor: str
        reason: str

    def observe(self, kind: str, subject: str, actor: str, reason: str) -> None:
        self.trigger_event(self.Observed, kind=kind, subject=subject, actor=actor, reason=reason)


def sqlite_app(path: Path) -> Any:
    """An eventsourcing `Application` on its SQLite module with a database file at `path`."""
    from eventsourcing.application import Application  # noqa: PLC0415

    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    return Application(env=env)


def sqlite_fill(
    app: Any, count: int, per_save: int = 100, subjects: int = 1000
) -> tuple[float, list[Any]]:
    """Save `count` events, `per_save` per `save` (one new aggregate each: Created + the rest
    observed). Aggregates are built ahead, 100 at a time; only the saves are timed. Returns
    (seconds, the aggregates' ids)."""
    seconds = 0.0
    ids: list[Any] = []
    saves = count // per_save
    for first in range(0, saves, 100):
        aggregates = []
        for k in range(first, min(saves, first + 100)):
            aggregate = Node()
            subject = f"node-{k % subjects:05d}"
            for _ in range(per_save - 1):
                aggregate.observe("MaintenanceObserved", subject, "alice", "kernel upgrade window")
            aggregates.append(aggregate)
        t0 = time.perf_counter()
        for aggregate in aggregates:
            app.save(aggregate)
        seconds += time.perf_counter() - t0
        ids += [a.id for a in aggregates]
    return seconds, ids


def sqlite_read_map(app: Any, page: int = 1000) -> tuple[int, float]:
    """Select every notification in pages of `page` and map each to a domain event with the
    application's mapper; returns (events, seconds)."""
    select = app.recorder.select_notifications
    to_domain_event = app.mapper.to_domain_event
    count = 0
    start = 1
    t0 = time.perf_counter()
    while True:
        notifications = select(start, page)
        if not notifications:
            break
        for notification in notifications:
            to_domain_event(notification)
        count += len(notifications)
        start = notifications[-1].id + 1
    return count, time.perf_counter() - t0


# ---------------------------------------------------------------------------- subprocesses


@contextmanager
def anon_sampler(interval: float = 0.02) -> Iterator[dict[str, int]]:
    """Sample this process's anonymous and file-backed RSS (kB) in a thread; keeps the peaks.

    ``ru_maxrss`` counts the pages of the LMDB file mapped in (they are page cache, shared and
    reclaimable), so the anonymous peak is the heap the code itself needed.
    """
    peaks = {"rss_anon_kb": 0, "rss_file_kb": 0}
    done = threading.Event()

    def sample() -> None:
        while True:
            try:
                text = Path("/proc/self/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    peaks["rss_anon_kb"] = max(peaks["rss_anon_kb"], int(line.split()[1]))
                elif line.startswith("RssFile:"):
                    peaks["rss_file_kb"] = max(peaks["rss_file_kb"], int(line.split()[1]))
            if done.wait(interval):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()


def warm(path: Path) -> float:
    """Read every file under `path` once, so a measurement starts with it in the page cache
    (as a freshly written file is): what is compared is code, not the disk's read speed.
    Returns the seconds it took (long: the files were not cached)."""
    t0 = time.perf_counter()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with file.open("rb", buffering=0) as f:
            while f.read(1 << 22):
                pass
    return time.perf_counter() - t0


def peak_rss_kb() -> int:
    """This process's peak RSS in kB (VmHWM). Unlike ``ru_maxrss`` it starts afresh at exec,
    so a child does not inherit the peak of the parent it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_child(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process; returns the JSON it printed last."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0
