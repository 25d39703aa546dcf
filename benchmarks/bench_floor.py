"""The floor of a big append and of verify on this machine: what their irreducible parts cost.

    python -m benchmarks.bench_floor [--events N] [--quick] [--json] [--dir DIR] [--keep]

Issue 17 asks `adminchain append FILE` for 8 times and `adminchain verify` for 4 times the SQLite
baseline (`benchmarks.bench_bulk`). This measures, on the benchmark's own events and beside that
baseline in the same run, the parts that neither command can leave out, each at the fastest
Python reaches it (one call into C per event, no glue of ours around it):

- append: decode a line into its event; check the catalogue's constraints (the mirror without
  the control-character pattern, the plain lines' fast path); encode the stored record; hash its
  leaf and one tree node (a tree of n leaves has n - 1 inner nodes); store the record, its id, its
  subject index entry and its leaf in LMDB (`putmulti`, keys in order where they can be; one
  durable commit); fold it into the projections' states;
- verify: read the stored record (an LMDB cursor); hash its leaf and one tree node; decode it;
  fold it (for the checkpoint's projection digest); check its two index entries (hashed and
  summed, as implied by the event and as stored).

Their sum per event, plus the CLI's start-up (``adminchain --help``), is a floor: the time a
command would take with all of its own code gone. "Both cores" divides the per-event sum by two,
as if the work split perfectly across this machine's two cores (it cannot quite: a single LMDB
writer, one ordered tree). A target whose floor is below what it asks cannot be met by any
change to our Python, only by moving that work into native code.
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import lmdb
import msgspec

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
    sqlite_read_map,
)
from ledger import codec
from ledger.codec import encode_event_json, encode_record, record_decoder
from ledger.ledger import new_ids
from projections.state import Folder


def per_event(count: int, fn: Callable[[], Any], rounds: int = 3) -> float:
    """Microseconds per event of `fn` (which handles all `count` events), best of `rounds`, the
    cyclic collector paused (as our bulk paths pause it)."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
    return best / count * 1e6


def inner_nodes(leaves: Sequence[bytes]) -> list[bytes]:
    """n - 1 node hashes over `leaves` (the pairs of each level, as a tree of them has)."""
    sha256, out, level = hashlib.sha256, [], list(leaves)
    while len(level) > 1:
        level = [
            sha256(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=False)
        ]
        out += level
    return out


def index_sums(events: Sequence[Any]) -> int:
    """The index check's own work (`ledger.backend.IndexCheck`): the id and the subject entry
    each event implies, hashed and summed, and as many stored entries hashed and summed."""
    positions = range(1, len(events) + 1)
    ids = [e.id.encode() for e in events]
    subjects = [e.subject.encode() for e in events]
    total = 0
    for keys in (ids, subjects):
        implied = sum(map(hash, zip(keys, positions, strict=True)))
        stored = sum(map(hash, list(zip(keys, positions, strict=True))))
        total += implied - stored
    return total


def store(path: str, records: list[bytes], ids: list[str], subjects: list[str],
          leaves: list[bytes]) -> None:  # fmt: skip
    """The four tables an append writes, one `putmulti` each, in one durable commit."""
    env = lmdb.open(path, map_size=1 << 32, max_dbs=8, sync=True)
    log_db, ids_db, idx_db, tree_db = (env.open_db(n) for n in (b"log", b"ids", b"idx", b"tree"))
    keys = [p.to_bytes(8, "big") for p in range(1, len(records) + 1)]
    with env.begin(write=True) as txn:
        txn.cursor(db=log_db).putmulti(zip(keys, records, strict=True), append=True)
        txn.cursor(db=ids_db).putmulti(zip((i.encode() for i in ids), keys, strict=True))
        versions = (s.encode() + k for s, k in zip(subjects, keys, strict=True))
        txn.cursor(db=idx_db).putmulti(zip(versions, keys, strict=True))
        txn.cursor(db=tree_db).putmulti(zip(keys, leaves, strict=True), append=True)
    env.close()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=None, help="events measured (default 500k)")
    args = p.parse_args()
    count = args.events or (100_000 if args.quick else 500_000)
    saves = min(count, 200_000)  # as bench_bulk: the appends timed, 100 a save
    with Workdir(args.dir, "bench-floor-", keep=args.keep) as work:
        report = Report("adminchain bench_floor", work.disk, str(work.path))
        report.params = {"events": count, "baseline_saves_at_100": saves}
        now = datetime.now(UTC)
        events = make_events(count, 1000)
        ids = new_ids(count)
        stored_events = [
            msgspec.structs.replace(e, id=i, at=e.at or now)
            for e, i in zip(events, ids, strict=True)
        ]
        lines = [encode_event_json(e) for e in events]
        records = [encode_record(e, now) for e in stored_events]
        sha256 = hashlib.sha256
        leaves = [
            sha256(b"\x00" + n.to_bytes(8, "big") + r).digest() for n, r in enumerate(records, 1)
        ]

        def fold() -> None:
            appliers = Folder().appliers
            for event in stored_events:
                appliers[type(event)](event)

        def read(path: str) -> None:
            env = lmdb.open(path, max_dbs=8, readonly=True, lock=False)
            with env.begin(db=env.open_db(b"log", create=False)) as txn:
                for _ in txn.cursor().iternext(keys=False):
                    pass
            env.close()

        log("append's parts")
        decode = codec._json_decoder.decode  # the typed decode, no checks
        check = codec._wire_printable_checker.decode
        parts_append = {
            "decode a line": per_event(count, lambda: [decode(x) for x in lines]),
            "check its constraints": per_event(count, lambda: [check(x) for x in lines]),
            "encode the record": per_event(
                count, lambda: [encode_record(e, now) for e in stored_events]
            ),
            "hash its leaf and a node": per_event(
                count,
                lambda: inner_nodes(
                    [
                        sha256(b"\x00" + n.to_bytes(8, "big") + r).digest()
                        for n, r in enumerate(records, 1)
                    ]
                ),
            ),
            "store 4 rows, one durable commit": per_event(
                count,
                lambda: store(
                    str(work.sub(f"lmdb-{time.perf_counter_ns()}")),
                    records,
                    ids,
                    [e.subject for e in stored_events],
                    leaves,
                ),
                rounds=2,
            ),
            "fold it": per_event(count, fold),
        }
        stored = str(work.sub("lmdb-read"))
        store(stored, records, ids, [e.subject for e in stored_events], leaves)
        log("verify's parts")
        parts_verify = {
            "read the record": per_event(count, lambda: read(stored)),
            "hash its leaf and a node": parts_append["hash its leaf and a node"],
            "decode the record": per_event(
                count, lambda: [record_decoder.decode(r) for r in records]
            ),
            "fold it": parts_append["fold it"],
            "check its 2 index entries": per_event(count, lambda: index_sums(stored_events)),
        }
        log("the CLI's start-up")
        startup = min(_wall([sys.executable, "-m", "adminchain", "--help"]) for _ in range(3))
        log("baseline: SQLite application, 100 events per save; read and map")
        app = sqlite_app(work.sub("baseline.sqlite"))
        save_seconds, _ = sqlite_fill(app, saves, per_save=100)
        if count > saves:  # filled up to `count` (not timed), as bench_bulk does
            sqlite_fill(app, count - saves, per_save=1000)
        read_count, read_seconds = sqlite_read_map(app)

    baseline_append = rate(saves, save_seconds)
    for name, parts in (("append", parts_append), ("verify", parts_verify)):
        for part, micros in parts.items():
            report.figures.append(Figure(f"{name}: {part}", micros, "µs/event"))
    for name, parts, baseline, target in (
        ("append FILE", parts_append, baseline_append, 8.0),
        ("verify", parts_verify, rate(read_count, read_seconds), 4.0),
    ):
        total = sum(parts.values())
        for cores in (1, 2):
            seconds = startup + total / cores * count / 1e6
            report.comparisons.append(
                Comparison(
                    f"{name}: the floor, {'one core' if cores == 1 else 'both cores'}",
                    rate(count, seconds),
                    baseline,
                    "events/s",
                    target,
                    ours_label=f"{total:.2f} µs/event + start-up {startup * 1000:.0f} ms",
                    note="no code of ours: the parts above only",
                )
            )
    report.emit(as_json=args.json)


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
