"""Projections: one subject's status, view lag behind appends, and a full rebuild.

    python -m benchmarks.bench_projections [--quick] [--json] [--dir DIR] [--keep]

On a ledger of 100k events over 1k subjects (views caught up), and an eventsourcing SQLite
application holding as many events (1000 aggregates of 100), in the same work directory:

- status query latency: `Views.status(kind, subject)` and `Views.state(projection, subject)`,
  p50 and p99, against eventsourcing's way of getting one subject's current state,
  `repository.get(id)` (read and replay its 100 events). No target: information.
- lag: the main thread appends one event at a time (flushed) at a steady rate while another
  thread runs `Views.follow()`; lag = from `append` returning to the chunk holding that event
  committed in the stored views (p50, p99). Also read-your-writes: `Views.wait_until(position)`
  right after `append`. eventsourcing's SQLite module cannot subscribe, so there is no baseline
  to follow with; the append latency of the same run is shown beside it.
- full rebuild: `Views.rebuild()` (drop the stored views, fold the whole log into them again)
  and `replay.rebuild.rebuild` (fold into memory) in events/s, against selecting every SQLite
  notification in pages of 1000 and mapping each to a domain event with the application's
  mapper. Target ≥ 4x (aim 8x).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    Comparison,
    Figure,
    Report,
    Workdir,
    fill_ledger,
    log,
    make_events,
    median,
    parser,
    percentile,
    rate,
    sqlite_app,
    sqlite_fill,
    sqlite_read_map,
    timed,
)
from ledger.ledger import Ledger
from projections.api import Views
from replay.rebuild import rebuild


def latencies_us(calls: Sequence[Any], fn: Any) -> list[float]:
    """Each call's latency in µs: ``fn(*args)`` for each args tuple in `calls`."""
    out: list[float] = []
    clock = time.perf_counter
    for args in calls:
        t0 = clock()
        fn(*args)
        out.append((clock() - t0) * 1e6)
    return out


def measure_lag(
    ledger: Ledger, per_second: float, seconds: float, start: int
) -> tuple[list[float], list[float], int]:
    """Append at a steady rate while a thread follows; (lags ms, append latencies ms, chunks).

    The follower's chunk commits are timed by wrapping its store's `catch_up_chunk`, so the lag
    is measured without a polling thread adding its own delay.
    """
    follower = Views(ledger)
    follower.catch_up()
    commits: list[tuple[float, int]] = []
    chunk = follower.store.catch_up_chunk

    def timed_chunk(limit: int, *rest: Any) -> tuple[int, int]:
        tracking, size = chunk(limit, *rest)
        commits.append((time.perf_counter(), tracking))
        return tracking, size

    follower.store.catch_up_chunk = timed_chunk  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    thread = threading.Thread(target=lambda: follower.follow(poll=0.5, stop=stop.is_set))
    thread.start()
    count = int(per_second * seconds)
    events = make_events(count, start=start)
    appended: list[tuple[int, float, float]] = []
    try:
        t0 = time.perf_counter()
        for k, event in enumerate(events):
            delay = t0 + k / per_second - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            began = time.perf_counter()
            position = ledger.append(event).position
            returned = time.perf_counter()
            appended.append((position, returned, returned - began))
        deadline = time.monotonic() + 10
        last = appended[-1][0]
        while (not commits or commits[-1][1] < last) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    lags: list[float] = []
    i = 0
    for position, returned, _ in appended:
        while i < len(commits) and commits[i][1] < position:
            i += 1
        if i == len(commits):
            raise RuntimeError(f"the views never reached position {position}")
        lags.append(max(0.0, commits[i][0] - returned) * 1e3)
    return lags, [a[2] * 1e3 for a in appended], len(commits)


def measure_read_your_writes(ledger: Ledger, count: int, start: int) -> list[float]:
    """`Views.wait_until(position)` right after each `append`, in ms (the append not counted)."""
    views = Views(ledger)
    views.catch_up()
    out: list[float] = []
    for event in make_events(count, start=start):
        position = ledger.append(event).position
        t0 = time.perf_counter()
        views.wait_until(position)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    events_n = 20_000 if quick else 100_000
    subjects = 1000
    queries = 300 if quick else 3000
    baseline_queries = 100 if quick else 500
    rounds = 1 if quick else 3
    lag_rate, lag_seconds = 100.0, 1.5 if quick else 6.0
    ryw_count = 50 if quick else 300

    with Workdir(args.dir, "bench-projections-", keep=args.keep) as work:
        log(f"work dir {work.path} on {work.disk}")
        report = Report(
            "adminchain bench_projections",
            work.disk,
            str(work.path),
            params={
                "events": events_n,
                "subjects": subjects,
                "queries": queries,
                "baseline_queries": baseline_queries,
                "rebuild_rounds": rounds,
                "lag": f"{lag_rate:g}/s for {lag_seconds:g} s",
                "read_your_writes": ryw_count,
            },
        )
        path = work.sub("ledger")
        log(f"setup: {events_n:,} events over {subjects} subjects, views caught up")
        fill_ledger(path, events_n, subjects=subjects, views=True)
        log("setup: eventsourcing SQLite application with as many events, 100 per aggregate")
        app = sqlite_app(work.sub("baseline.sqlite"))
        _, ids = sqlite_fill(app, events_n, 100, subjects)

        rng = random.Random(7)
        with Ledger.open(path) as ledger:
            views = Views(ledger)
            views.catch_up()

            # status and state of one subject
            nodes = [f"node-{rng.randrange(subjects):05d}" for _ in range(queries)]
            status = latencies_us([("maintenance", n) for n in nodes], views.status)
            state = latencies_us([("detachment", n) for n in nodes], views.state)
            get = app.repository.get
            chosen = [(rng.choice(ids),) for _ in range(baseline_queries)]
            baseline = latencies_us(chosen, get)
            log(
                f"status p50 {percentile(status, 50):.1f} µs, "
                f"state p50 {percentile(state, 50):.1f} µs, "
                f"repository.get p50 {percentile(baseline, 50):.1f} µs"
            )
            for name, values, label in (
                ("status query, p50", status, 'Views.status("maintenance", s)'),
                ("state query, p50", state, 'Views.state("detachment", s)'),
            ):
                report.comparisons.append(
                    Comparison(
                        name,
                        percentile(values, 50),
                        percentile(baseline, 50),
                        "µs",
                        target=None,
                        ours_label=label,
                        baseline_label="SQLite repository.get(id), 100 events",
                        higher_is_better=False,
                    )
                )
            report.figures += [
                Figure("status query, p99", percentile(status, 99), "µs", "Views.status"),
                Figure("state query, p99", percentile(state, 99), "µs", "Views.state"),
                Figure("baseline repository.get, p99", percentile(baseline, 99), "µs", ""),
            ]

            # full rebuild
            stored, memory, base = [], [], []
            size = ledger.size()
            for r in range(rounds):
                _, seconds = timed(views.rebuild)
                stored.append(rate(size, seconds))
                _, seconds = timed(lambda: rebuild(ledger))
                memory.append(rate(size, seconds))
                mapped, seconds = sqlite_read_map(app)
                base.append(rate(mapped, seconds))
                log(
                    f"rebuild round {r + 1}: Views.rebuild {stored[-1]:,.0f}/s, "
                    f"replay.rebuild {memory[-1]:,.0f}/s, SQLite read+map {base[-1]:,.0f}/s"
                )
            for name, values, label in (
                ("full rebuild, stored views", stored, "Views.rebuild()"),
                ("full rebuild, in memory", memory, "replay.rebuild.rebuild"),
            ):
                report.comparisons.append(
                    Comparison(
                        name,
                        median(values),
                        median(base),
                        "events/s",
                        target=4,
                        aim=8,
                        ours_label=label,
                        baseline_label="SQLite select pages + mapper",
                        note=f"{size:,} events, median of {rounds}",
                    )
                )

            # lag
            log(f"lag: appending {lag_rate:g}/s for {lag_seconds:g} s while a thread follows")
            lags, appends, chunks = measure_lag(ledger, lag_rate, lag_seconds, ledger.size())
            log(f"read-your-writes: {ryw_count} appends, each followed by Views.wait_until")
            ryw = measure_read_your_writes(ledger, ryw_count, ledger.size())
            report.figures += [
                Figure("lag append → stored view, p50", percentile(lags, 50), "ms",
                       f"Views.follow in a thread; {len(lags)} events, {chunks} view commits"),
                Figure("lag append → stored view, p99", percentile(lags, 99), "ms", ""),
                Figure("append latency in that run, p50", percentile(appends, 50), "ms",
                       "Ledger.append, flushed (context for the lag)"),
                Figure("append latency in that run, p99", percentile(appends, 99), "ms", ""),
                Figure("read-your-writes wait_until, p50", percentile(ryw, 50), "ms",
                       "Views.wait_until(position) right after append"),
                Figure("read-your-writes wait_until, p99", percentile(ryw, 99), "ms", ""),
            ]  # fmt: skip
        app.close()
        report.emit(as_json=args.json)


if __name__ == "__main__":
    main()
