"""PostgreSQL backend: batch append and replay against eventsourcing's own PostgreSQL stack.

    python -m benchmarks.bench_postgres [--events N] [--batch B] [--rounds R] [--url URL]
                                        [--quick] [--json] [--keep]

a. Append N events (default 100k) through our `Ledger` on PostgreSQL (`append_batch` in batches
   of B, default N: one atomic batch, positions, ids and Merkle tree included) against an
   eventsourcing `Application` with ``PERSISTENCE_MODULE=eventsourcing.postgres`` saving 100
   events per `save` (aggregates of 100 events, built before the clock starts, as ours are).
   Target ≥ 3x.
b. Replay the whole log: ours reads the stored events in pages, decodes each and folds it through
   every projection (`projections.state.Folder`); the baseline reads the notification log in
   pages (`recorder.select_notifications`) and maps each notification to a domain event with the
   application's mapper (no fold). Target ≥ 3x.

Both sides use one database (default ``adminchain_bench`` on 127.0.0.1:5432, created if missing),
each in a fresh schema dropped afterwards (``--keep`` keeps them). With R rounds the two sides
alternate and the median is reported, with the per-round ratios. Wall-clock ratios move with
whatever else the machine runs, so the report also gives the CPU each side spends per event
(this process plus the server backends of the benchmark database, read from /proc when the
server is local). Progress goes to stderr; ``--json`` prints the report only.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.common import (
    Comparison,
    Figure,
    Node,
    Report,
    log,
    make_events,
    median,
    rate,
    sqlite_read_map,
)
from ledger.codec import decode_record
from ledger.events import Event
from ledger.ledger import Ledger
from ledger.postgres import PAGE, PgTarget, parse_url
from projections.state import Folder

DEFAULT_URL = os.environ.get(
    "ADMINCHAIN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/adminchain_bench"
)
PER_SAVE = 100


def admin(target: PgTarget, dbname: str | None = None) -> psycopg.Connection[Any]:
    kwargs = target.connect_kwargs() | ({"dbname": dbname} if dbname else {})
    return psycopg.connect(**kwargs, autocommit=True)


def ensure_database(target: PgTarget) -> None:
    """Create the benchmark database if it does not exist."""
    with admin(target, "postgres") as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)
        ).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))


@contextmanager
def schema(target: PgTarget, prefix: str, *, keep: bool) -> Iterator[str]:
    """A fresh, empty schema name (created by whoever uses it first), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        if keep:
            log(f"kept schema {name}")
        else:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            with admin(target) as conn:
                conn.execute(drop)


def ledger_url(target: PgTarget, name: str) -> str:
    user = target.user + (f":{target.password}" if target.password else "")
    return f"postgresql://{user}@{target.where}/{target.dbname}?schema={name}"


def es_app(target: PgTarget, name: str) -> Any:
    """An eventsourcing `Application` on its PostgreSQL module, its tables in schema `name`."""
    from eventsourcing.application import Application  # noqa: PLC0415

    with admin(target) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        "POSTGRES_PASSWORD": target.password,
        "POSTGRES_SCHEMA": name,
    }
    return Application(env=env)


# ---------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One measured run: events, wall seconds, and CPU seconds of this process and the server
    backends serving the benchmark database (None when /proc cannot show them)."""

    count: int
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None

    @property
    def rate(self) -> float:
        return rate(self.count, self.wall)

    @property
    def cpu_us(self) -> float | None:
        """Client + server CPU microseconds per event: what the work costs whatever the load."""
        if self.server_cpu is None:
            return None
        return (self.client_cpu + self.server_cpu) / self.count * 1e6


def backend_cpu(target: PgTarget) -> dict[int, float] | None:
    """CPU seconds used so far by each server process connected to the benchmark database."""
    with admin(target) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (target.dbname,),
        ).fetchall()
    cpu: dict[int, float] = {}
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None  # a remote server, or no permission: report wall time only
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


@contextmanager
def measured(target: PgTarget, run: Run) -> Iterator[Run]:
    """Time the block: wall, this process's CPU, and the CPU of the database's backends."""
    before = backend_cpu(target)
    cpu0, t0 = time.process_time(), time.perf_counter()
    yield run
    run.wall = time.perf_counter() - t0
    run.client_cpu = time.process_time() - cpu0
    after = backend_cpu(target)
    if before is not None and after is not None:
        run.server_cpu = sum(v - before.get(pid, 0.0) for pid, v in after.items())


# ---------------------------------------------------------------------------- the two sides


def ours_append(target: PgTarget, url: str, events: Sequence[Event], per_batch: int) -> Run:
    """`Ledger.append_batch` of `events` in batches of `per_batch`."""
    with Ledger.open(url) as ledger:
        ledger.size()  # the pool's connections are open before the clock starts
        with measured(target, Run(len(events))) as run:
            for start in range(0, len(events), per_batch):
                ledger.append_batch(events[start : start + per_batch])
        assert ledger.size() == len(events)
    return run


def ours_replay(target: PgTarget, url: str, count: int) -> Run:
    """Read every stored event, decode it and fold it through every projection."""
    with Ledger.open(url) as ledger:
        ledger.size()
        folder = Folder()
        apply = folder.apply
        seen = 0
        with measured(target, Run(count)) as run:
            for _position, stored in ledger.read_stored():
                apply(decode_record(stored).event)
                seen += 1
        assert seen == count, (seen, count)
    return run


def baseline_append(target: PgTarget, app: Any, count: int) -> Run:
    """eventsourcing on PostgreSQL: aggregates of 100 events, one `save` each.

    The aggregates are built before the clock starts (as our events are), exactly as
    `benchmarks.common.sqlite_fill` does for the SQLite baseline; only the saves are measured.
    """
    aggregates = []
    for k in range(count // PER_SAVE):
        aggregate = Node()
        for _ in range(PER_SAVE - 1):
            subject, reason = f"node-{k % 1000:05d}", "kernel upgrade window"
            aggregate.observe("MaintenanceObserved", subject, "alice", reason)
        aggregates.append(aggregate)
    app.recorder.max_notification_id()  # connections open before the clock starts
    with measured(target, Run(len(aggregates) * PER_SAVE)) as run:
        for aggregate in aggregates:
            app.save(aggregate)
    return run


def baseline_replay(target: PgTarget, app: Any, count: int) -> Run:
    """Select the notification log in pages and map each notification to a domain event."""
    with measured(target, Run(count)) as run:
        seen, _ = sqlite_read_map(app, page=PAGE)  # backend-agnostic despite its name
    assert seen == count, (seen, count)
    return run


# ---------------------------------------------------------------------------- main


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per side (default 100k)")
    p.add_argument("--batch", type=int, default=0, help="events per append_batch (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds; median reported")
    p.add_argument("--url", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument("--quick", action="store_true", help="10k events: a fast sanity run")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the schemas afterwards")
    return p.parse_args(argv)


def server_version(target: PgTarget) -> str:
    with admin(target) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW synchronous_commit").fetchone()
    version = "?" if row is None else str(row[0])
    sync = "?" if fsync is None else str(fsync[0])
    return f"PostgreSQL {version} at {target.where} (synchronous_commit={sync})"


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(argv)
    count = 10_000 if args.quick else args.events
    count -= count % PER_SAVE
    per_batch = args.batch or count
    target = parse_url(args.url)
    ensure_database(target)
    server = server_version(target)
    log(f"{server}, database {target.dbname!r}")
    events = make_events(count)
    appends: tuple[list[Run], list[Run]] = ([], [])
    replays: tuple[list[Run], list[Run]] = ([], [])
    for r in range(args.rounds):
        with (
            schema(target, "bench_ours", keep=args.keep) as ours_schema,
            schema(target, "bench_es", keep=args.keep) as es_schema,
        ):
            url = ledger_url(target, ours_schema)
            log(f"round {r + 1}: ours, append_batch of {count:,} in batches of {per_batch:,}")
            appends[0].append(ours_append(target, url, events, per_batch))
            log(f"   {appends[0][-1].rate:,.0f}/s; eventsourcing, {PER_SAVE} events per save")
            app = es_app(target, es_schema)
            try:
                appends[1].append(baseline_append(target, app, count))
                log(f"   {appends[1][-1].rate:,.0f}/s; replays")
                replays[1].append(baseline_replay(target, app, count))
            finally:
                app.close()
            replays[0].append(ours_replay(target, url, count))
            log(f"   replay: ours {replays[0][-1].rate:,.0f}/s, es {replays[1][-1].rate:,.0f}/s")
    rounds = f"median of {args.rounds} rounds" if args.rounds > 1 else ""
    report = Report(
        "adminchain bench_postgres (shared backend)",
        server,
        f"database {target.dbname}, fresh schemas per round",
        params={
            "events": count,
            "ours_batch": per_batch,
            "baseline_per_save": PER_SAVE,
            "read_page": PAGE,
            "rounds": args.rounds,
        },
    )
    report.comparisons.append(
        Comparison(
            f"a. batch append of {count:,} events",
            median([run.rate for run in appends[0]]),
            median([run.rate for run in appends[1]]),
            "events/s",
            target=3,
            ours_label=f"Ledger.append_batch({per_batch:,})",
            baseline_label=f"es Application, {PER_SAVE}/save",
            note=rounds,
        )
    )
    report.comparisons.append(
        Comparison(
            "b. replay: read + decode (+ fold)",
            median([run.rate for run in replays[0]]),
            median([run.rate for run in replays[1]]),
            "events/s",
            target=3,
            ours_label="read_stored + decode + Folder",
            baseline_label="select_notifications + mapper",
            note=rounds,
        )
    )
    for name, (ours, baseline) in (("a. append", appends), ("b. replay", replays)):
        ratios = [o.rate / b.rate for o, b in zip(ours, baseline, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        report.figures.append(
            Figure(f"{name}: median of per-round ratios", median(ratios), "x", f"rounds: {each}")
        )
        cpu = [(o.cpu_us, b.cpu_us) for o, b in zip(ours, baseline, strict=True)]
        if all(o is not None and b is not None for o, b in cpu):
            mine = median([o for o, _ in cpu if o is not None])
            theirs = median([b for _, b in cpu if b is not None])
            note = (
                f"CPU per event, client + server: ours {mine:.1f} us, eventsourcing "
                f"{theirs:.1f} us (insensitive to other load on the machine)"
            )
            report.figures.append(Figure(f"{name}: CPU ratio", theirs / mine, "x", note))
    report.emit(as_json=args.json)


if __name__ == "__main__":
    main()
