"""Ledger core: durable single appends, a 100k batch, and group commit under 8 appenders.

    python -m benchmarks.bench_ledger [--quick] [--json] [--dir DIR] [--keep]

a. `Ledger.append`, one event at a time, flushed (the default), against raw py-lmdb commits of
   one ~200-byte value per write transaction with ``sync=True`` on the same disk. Target ≥ 0.9x.
b. `Ledger.append_batch` of 100k events (one call) against eventsourcing's SQLite module saving
   100 events per `save` (1000 saves), the aggregates' events built before the clock starts on
   both sides. Target ≥ 5x (aim 10x). Also, for information, our batches in the baseline's shape.
c. 8 threads each appending one event at a time (group commit shares each flush) against one
   thread doing the same: total events/s. Target ≥ 4x.

(a) and (c) alternate ours and the baseline in small blocks, so that the disk's varying flush
time (other work on the machine) hits both alike; each side's rate is its total over its blocks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb

from benchmarks.common import (
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
)
from ledger.codec import encode_record
from ledger.events import Event
from ledger.ledger import Ledger

RAW_VALUE_BYTES = 200


class _Clock:
    """Accumulated wall and CPU seconds over the blocks of one side."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.count = 0

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu

    @property
    def rate(self) -> float:
        return rate(self.count, self.wall)

    @property
    def cpu_us(self) -> float:
        return self.cpu / max(1, self.count) * 1e6


def single_appends(
    ours_path: Path, raw_path: Path, count: int, block: int
) -> tuple[_Clock, _Clock]:
    """Durable single appends, ours and raw LMDB, alternating in blocks of `block` writes.

    Ours: `Ledger.append` of one event (flushed). Raw: one put of a 200-byte value per write
    transaction, ``sync=True``. Alternating small blocks exposes both to the same disk weather.
    """
    events = make_events(count + 1)
    ours, raw = _Clock(), _Clock()
    env = lmdb.open(str(raw_path), map_size=1 << 30, sync=True, max_dbs=2)
    try:
        db = env.open_db(b"log")
        value = os.urandom(RAW_VALUE_BYTES)
        with Ledger.open(ours_path) as ledger:
            ledger.append(events[0])  # warm-up: tables opened, first pages written
            with env.begin(write=True) as txn:
                txn.put((0).to_bytes(8, "big"), value, db=db)
            for first in range(1, count + 1, block):
                last = min(count, first + block - 1)
                with ours:
                    for event in events[first : last + 1]:
                        ledger.append(event)
                with raw:
                    for i in range(first, last + 1):
                        with env.begin(write=True) as txn:
                            txn.put(i.to_bytes(8, "big"), value, db=db, append=True)
                ours.count = raw.count = last
    finally:
        env.close()
    return ours, raw


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


class _Concurrent:
    """A ledger appended to by `threads` threads, one event at a time each, in rounds."""

    def __init__(self, path: Path, threads: int) -> None:
        self.ledger = Ledger.open(path)
        self.threads = threads
        self.clock = _Clock()
        self.commits = 0
        write = self.ledger._committer._write  # counted: how many appends shared a flush

        def counting(batch: Any) -> None:
            self.commits += 1
            write(batch)

        self.ledger._committer._write = counting

    def round(self, events: Sequence[Event]) -> None:
        """Append `events`, shared round-robin among the threads; time from start to join."""
        shares = [events[k :: self.threads] for k in range(self.threads)]
        barrier = threading.Barrier(self.threads + 1)
        errors: list[BaseException] = []

        def appender(share: Sequence[Event]) -> None:
            barrier.wait()
            try:
                for event in share:
                    self.ledger.append(event)
            except BaseException as e:  # noqa: BLE001  re-raised by the main thread
                errors.append(e)

        workers = [threading.Thread(target=appender, args=(s,)) for s in shares]
        for w in workers:
            w.start()
        with self.clock:
            barrier.wait()
            for w in workers:
                w.join()
        if errors:
            raise errors[0]
        self.clock.count += len(events)

    def close(self) -> None:
        self.ledger.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    single_n = 200 if quick else 2000
    block = 50 if quick else 100
    batch_n = 10_000 if quick else 100_000
    per_save = 100
    threads = 8
    conc_n = 400 if quick else 4000
    conc_round = 200

    with Workdir(args.dir, "bench-ledger-", keep=args.keep) as work:
        log(f"work dir {work.path} on {work.disk}")
        sample = make_events(1000)
        stored = [len(encode_record(e, datetime.now(UTC))) + 40 for e in sample]  # + id
        report = Report(
            "adminchain bench_ledger (ledger core)",
            work.disk,
            str(work.path),
            params={
                "single_appends": f"{single_n} each, blocks of {block}",
                "batch_events": batch_n,
                "baseline_per_save": per_save,
                "concurrent": f"{threads} threads, {conc_n} events",
                "avg_event_bytes": round(sum(stored) / len(stored)),
                "raw_value_bytes": RAW_VALUE_BYTES,
            },
        )

        # a. single durable appends
        log(f"a. {single_n:,} single appends each, ours and raw LMDB in blocks of {block}")
        ours, raw = single_appends(work.sub("single-ours"), work.sub("single-raw"), single_n, block)
        log(f"   ours {ours.rate:,.0f}/s, raw LMDB {raw.rate:,.0f}/s")
        report.comparisons.append(
            Comparison(
                "a. single durable appends",
                ours.rate,
                raw.rate,
                "events/s",
                target=0.9,
                ours_label="Ledger.append, sync",
                baseline_label="py-lmdb 1 put/txn, sync",
                note=f"alternating blocks of {block}",
            )
        )
        report.figures += [
            Figure("a. CPU per single append, ours", ours.cpu_us, "µs",
                   f"of {1e6 / ours.rate:,.0f} µs wall: the rest is waiting for the disk"),
            Figure("a. CPU per raw LMDB commit", raw.cpu_us, "µs",
                   f"of {1e6 / raw.rate:,.0f} µs wall"),
        ]  # fmt: skip

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
        log(f"c. 1 appender and {threads} appenders, alternating rounds of {conc_round}")
        one, many = _Concurrent(work.sub("conc-1"), 1), _Concurrent(work.sub("conc-many"), threads)
        try:
            for first in range(0, conc_n, conc_round):
                events = make_events(conc_round, start=first)
                one.round(events)
                many.round(events)
        finally:
            one.close()
            many.close()
        log(f"   1 appender {one.clock.rate:,.0f}/s, {threads}: {many.clock.rate:,.0f}/s")
        report.comparisons.append(
            Comparison(
                f"c. {threads} concurrent appenders",
                many.clock.rate,
                one.clock.rate,
                "events/s",
                target=4,
                ours_label=f"{threads} threads, group commit",
                baseline_label="1 thread",
                note=f"alternating rounds of {conc_round}",
            )
        )
        report.figures.append(
            Figure(
                f"c. appends per write transaction, {threads} appenders",
                many.clock.count / max(1, many.commits),
                "events",
                "group commit: how many appends shared one flush",
            )
        )
        report.emit(as_json=args.json)


if __name__ == "__main__":
    main()
