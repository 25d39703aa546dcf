"""Ledger core: durable single appends, a 100k batch, and group commit under 8 appenders.

    python -m benchmarks.bench_ledger [--quick] [--json] [--dir DIR] [--keep]

a. `Ledger.append`, one event at a time, flushed (the default), against raw py-lmdb commits of
   one ~200-byte value per write transaction with ``sync=True`` on the same disk. Target ≥ 0.9x.
b. `Ledger.append_batch` of 100k events (one call) against eventsourcing's SQLite module saving
   100 events per `save` (1000 saves), the aggregates' events built before the clock starts on
   both sides. Target ≥ 5x (aim 10x). Also, for information, our batches in the baseline's shape.
c. 8 threads each appending one event at a time (group commit shares each flush) against one
   thread doing the same: total events/s. Target ≥ 4x.

Rounds of (a) alternate ours and the baseline, so disk noise hits both; the median is reported.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import lmdb

from benchmarks.common import (
    Comparison,
    Figure,
    Report,
    Workdir,
    log,
    make_events,
    median,
    parser,
    rate,
    sqlite_app,
    sqlite_fill,
)
from ledger.codec import encode_record
from ledger.events import Event
from ledger.ledger import Ledger

RAW_VALUE_BYTES = 200


def ours_single(path: Path, events: Sequence[Event]) -> float:
    """Durable single appends per second through `Ledger.append` (after one warm-up append)."""
    with Ledger.open(path) as ledger:
        ledger.append(events[0])
        t0 = time.perf_counter()
        for event in events[1:]:
            ledger.append(event)
        return rate(len(events) - 1, time.perf_counter() - t0)


def raw_single(path: Path, count: int) -> float:
    """Raw LMDB: one put of a ~200-byte value per write transaction, ``sync=True``."""
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, max_dbs=2)
    try:
        db = env.open_db(b"log")
        value = os.urandom(RAW_VALUE_BYTES)
        with env.begin(write=True) as txn:
            txn.put((0).to_bytes(8, "big"), value, db=db)
        t0 = time.perf_counter()
        for i in range(1, count + 1):
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), value, db=db, append=True)
        return rate(count, time.perf_counter() - t0)
    finally:
        env.close()


def ours_batch(path: Path, events: Sequence[Event], per_batch: int) -> float:
    """`Ledger.append_batch` of `events` in batches of `per_batch`, flushed; events/s."""
    with Ledger.open(path) as ledger:
        t0 = time.perf_counter()
        for start in range(0, len(events), per_batch):
            ledger.append_batch(events[start : start + per_batch])
        return rate(len(events), time.perf_counter() - t0)


def baseline_batch(path: Path, count: int, per_save: int) -> float:
    """eventsourcing + SQLite: aggregates of `per_save` events (built first), one `save` each."""
    app = sqlite_app(path)
    try:
        seconds, _ = sqlite_fill(app, count, per_save)
        return rate(count // per_save * per_save, seconds)
    finally:
        app.close()


def ours_concurrent(path: Path, events: Sequence[Event], threads: int) -> tuple[float, float]:
    """`threads` appenders share `events`, each appending one at a time; (events/s, mean batch).

    The mean batch is events per write transaction, from the log size and the commit count.
    """
    with Ledger.open(path) as ledger:
        ledger.append(events[0])
        commits = 0
        write = ledger._committer._write  # count transactions, to show what group commit did

        def counting(batch: object) -> None:
            nonlocal commits
            commits += 1
            write(batch)  # type: ignore[arg-type]

        ledger._committer._write = counting
        shares = [events[1 + k :: threads] for k in range(threads)]
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def appender(share: Sequence[Event]) -> None:
            barrier.wait()
            try:
                for event in share:
                    ledger.append(event)
            except BaseException as e:  # noqa: BLE001  reported after the run
                errors.append(e)

        workers = [threading.Thread(target=appender, args=(s,)) for s in shares]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return rate(len(events) - 1, elapsed), (len(events) - 1) / max(1, commits)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    single_n = 200 if quick else 1500
    rounds = 1 if quick else 3
    batch_n = 10_000 if quick else 100_000
    per_save = 100
    conc_threads = 8
    conc_n = 400 if quick else 4000

    with Workdir(args.dir, "bench-ledger-", keep=args.keep) as work:
        log(f"work dir {work.path} on {work.disk}")
        sample = make_events(1000)
        stored = [len(encode_record(e, datetime.now(UTC))) + 40 for e in sample]  # + id
        report = Report(
            "adminchain bench_ledger (ledger core)",
            work.disk,
            str(work.path),
            params={
                "single_appends": f"{single_n} x {rounds} rounds",
                "batch_events": batch_n,
                "baseline_per_save": per_save,
                "concurrent": f"{conc_threads} threads, {conc_n} events",
                "avg_event_bytes": round(sum(stored) / len(stored)),
                "raw_value_bytes": RAW_VALUE_BYTES,
            },
        )

        # a. single durable appends
        ours_rates, raw_rates = [], []
        for r in range(rounds):
            events = make_events(single_n + 1, start=r * (single_n + 1))
            ours_rates.append(ours_single(work.sub(f"single-ours-{r}"), events))
            raw_rates.append(raw_single(work.sub(f"single-raw-{r}"), single_n))
            log(f"a. round {r + 1}: ours {ours_rates[-1]:,.0f}/s, raw LMDB {raw_rates[-1]:,.0f}/s")
        report.comparisons.append(
            Comparison(
                "a. single durable appends",
                median(ours_rates),
                median(raw_rates),
                "events/s",
                target=0.9,
                ours_label="Ledger.append, sync",
                baseline_label="py-lmdb 1 put/txn, sync",
                note=f"median of {rounds} alternating rounds",
            )
        )

        # b. a 100k batch against the SQLite baseline at 100 per save
        events = make_events(batch_n)
        log(f"b. Ledger.append_batch of {batch_n:,} events")
        ours_big = ours_batch(work.sub("batch-ours"), events, batch_n)
        log(f"   {ours_big:,.0f}/s; eventsourcing SQLite, {per_save} per save")
        baseline = baseline_batch(work.sub("batch-sqlite.db"), batch_n, per_save)
        log(f"   {baseline:,.0f}/s; Ledger.append_batch of {per_save} per call (info)")
        ours_small = ours_batch(work.sub("batch-ours-100"), events, per_save)
        log(f"   {ours_small:,.0f}/s")
        report.comparisons.append(
            Comparison(
                f"b. batch append of {batch_n // 1000}k events",
                ours_big,
                baseline,
                "events/s",
                target=5,
                aim=10,
                ours_label=f"append_batch({batch_n // 1000}k), sync",
                baseline_label=f"SQLite app, {per_save}/save",
            )
        )
        report.comparisons.append(
            Comparison(
                f"b'. same shape: batches of {per_save}",
                ours_small,
                baseline,
                "events/s",
                target=1,
                ours_label=f"append_batch({per_save}) x {batch_n // per_save}",
                baseline_label=f"SQLite app, {per_save}/save",
                note="information: no target in the issue",
            )
        )

        # c. group commit
        one_rates, many_rates, batches = [], [], []
        for r in range(rounds):
            events = make_events(conc_n + 1, start=r * (conc_n + 1))
            one, _ = ours_concurrent(work.sub(f"conc-1-{r}"), events, 1)
            many_dir = work.sub(f"conc-{conc_threads}-{r}")
            many, batch = ours_concurrent(many_dir, events, conc_threads)
            one_rates.append(one)
            many_rates.append(many)
            batches.append(batch)
            log(f"c. round {r + 1}: 1 appender {one:,.0f}/s, {conc_threads}: {many:,.0f}/s")
        report.comparisons.append(
            Comparison(
                f"c. {conc_threads} concurrent appenders",
                median(many_rates),
                median(one_rates),
                "events/s",
                target=4,
                ours_label=f"{conc_threads} threads, group commit",
                baseline_label="1 thread",
                note=f"median of {rounds} alternating rounds",
            )
        )
        report.figures.append(
            Figure(
                "c. events per write transaction, 8 appenders",
                median(batches),
                "events",
                "group commit: how many appends shared one flush",
            )
        )
        report.emit(as_json=args.json)


if __name__ == "__main__":
    main()
