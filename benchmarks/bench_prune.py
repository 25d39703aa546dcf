"""Two "keep what pays" questions of issue 11, measured in ways the machine's load cannot blur.

    python -m benchmarks.bench_prune

a. The collector during a big append: how many collections and how much CPU the cyclic garbage
   collector takes in one 100k-event `append_batch` with the pause switched off, and how many of
   the objects it tracks are event structs (what msgspec's ``gc=False`` on them could save).
b. LMDB's map: 20 batches of 10k events on a map that starts at 16 MiB (grown by doubling) and
   on a 1 TiB map from the start, alternating, best of 3; the disk used by each.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

import ledger.ledger as ledger_module
from ledger.codec import decode_lines
from ledger.events import Event
from ledger.ledger import Ledger
from ledger.lmdb import LMDBDatastore


def _lines(n: int, tag: str = "k") -> str:
    return "\n".join(
        f'{{"type":"KeepAliveFailed","subject":"r{i % 5000}","id":"{tag}-{i}",'
        '"at":"2026-01-01T00:00:00Z"}'
        for i in range(n)
    )


def collector_during_append(n: int = 100_000) -> dict[str, Any]:
    """(a): collections by generation, CPU in the collector, tracked objects by kind."""
    events = decode_lines(_lines(n))
    stats: dict[str, Any] = {"collections": [0, 0, 0], "seconds": 0.0}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            stats["collections"][info["generation"]] += 1
            stats["seconds"] += time.process_time() - started[0]

    big = ledger_module.BIG_BATCH
    vars(ledger_module)["BIG_BATCH"] = 1 << 62  # the pause off
    with tempfile.TemporaryDirectory() as d:
        log = Ledger.open(Path(d) / "l", sync=False)
        gc.collect()
        before = {id(o) for o in gc.get_objects()}
        gc.callbacks.append(callback)
        t = time.process_time()
        try:
            results = log.append_batch(events, validated=True)
        finally:
            gc.callbacks.remove(callback)
            vars(ledger_module)["BIG_BATCH"] = big
        total = time.process_time() - t
        kinds = Counter(
            "event struct"
            if isinstance(o, msgspec.Struct) and isinstance(o, Event.__args__)
            else type(o).__name__
            for o in gc.get_objects()
            if id(o) not in before
        )
        log.close()
    del results
    stats["cpu_seconds"] = total
    stats["tracked_new"] = dict(kinds.most_common(6))
    stats["events_tracked"] = sum(1 for e in events if gc.is_tracked(e))
    return stats


def map_growth(batches: int = 20, size: int = 10_000) -> dict[str, Any]:
    """(b): best append time, final map and disk used, per initial map size."""
    data = [decode_lines(_lines(size, f"b{b}")) for b in range(batches)]

    def run(map_size: int) -> tuple[float, int, int]:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "l"
            datastore = LMDBDatastore.open(
                path, sync=False, map_size=map_size, max_map_size=1 << 41
            )
            log = Ledger.open(path, sync=False)
            t = time.perf_counter()
            for events in data:
                log.append_batch(events, validated=True)
            elapsed = time.perf_counter() - t
            final = datastore.env.info()["map_size"]
            used = os.stat(path / "data.mdb").st_blocks * 512
            log.close()
            datastore.close()
            return elapsed, final, used

    runs: dict[int, list[tuple[float, int, int]]] = {16 << 20: [], 1 << 40: []}
    for _ in range(3):
        for map_size, results in runs.items():
            results.append(run(map_size))
    return {f"{m >> 20} MiB": min(r) for m, r in runs.items()}


def main() -> None:
    print(f"load average: {os.getloadavg()}")
    a = collector_during_append()
    share = 100 * a["seconds"] / a["cpu_seconds"]
    print(
        f"a. unpaused 100k append: collections gen0/1/2 {a['collections']}, collector "
        f"{a['seconds']:.3f}s of {a['cpu_seconds']:.3f}s CPU ({share:.0f}%); new tracked objects "
        f"{a['tracked_new']}; event structs tracked: {a['events_tracked']}"
    )
    for name, (elapsed, final, used) in map_growth().items():
        print(
            f"b. initial map {name}: 200k events in {elapsed:.3f}s, final map {final >> 20} MiB, "
            f"disk used {used >> 20} MiB"
        )


if __name__ == "__main__":
    main()
