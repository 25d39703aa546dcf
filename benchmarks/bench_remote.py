"""The remote ledger against the local one, side by side (SPEC-server §7.3).

    python -m benchmarks.bench_remote [--events N] [--dir DIR]

Builds an LMDB ledger of N events (default 50 000) with a checkpoint at the end, serves it
with a real ``adminchain serve`` on an ephemeral port, and times in this process, on the same
ledger: `verify` and `replay` (the client streams the log with its stored bytes and recomputes
leaves, tree, fold and digests) and 1000 appends in batches of 100, local then remote. Prints
events/s for each and the remote/local ratio, with the load average.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from adminchain.server.tokens import create_token
from ledger.events import HealthObserved, KeepAliveFailed
from ledger.ledger import Ledger
from ledger.remote import RemoteLedger
from projections.api import Views
from replay.audit import run_audit
from replay.integrity import make_checkpoint, verify
from tests.serving import start_server


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-remote-"))
    path = work / "ledger.lmdb"
    with Ledger.open(path) as log:
        for start in range(0, args.events, 10_000):
            log.append_batch(
                [
                    KeepAliveFailed(subject=f"r{i % 500}")
                    if i % 3
                    else HealthObserved(subject=f"r{i % 500}", healthy=True)
                    for i in range(start, min(args.events, start + 10_000))
                ]
            )
        make_checkpoint(Views(log))
        token = create_token(log, "bench", "admin")[0]
    print(f"load average {os.getloadavg()[0]:.2f} (before), {args.events} events")
    server = start_server(str(path), work)
    try:
        remote = RemoteLedger.connect(server.url, token=token)
        local = Ledger.open(path, create=False)
        rows = []
        for name, job, count in (
            ("verify", verify, args.events),
            ("replay", run_audit, args.events),
            (
                "append 10x100",
                lambda log: [
                    log.append_batch([KeepAliveFailed(subject=f"a{j}") for j in range(100)])
                    for _ in range(10)
                ],
                1000,
            ),
        ):
            here = _timed(functools.partial(job, local))
            there = _timed(functools.partial(job, remote))
            rows.append((name, count / here, count / there, there / here))
        local.close()
        remote.close()
    finally:
        server.stop()
    print(f"{'':<14} {'local ev/s':>12} {'remote ev/s':>12} {'remote/local time':>18}")
    for name, here_rate, there_rate, ratio in rows:
        print(f"{name:<14} {here_rate:>12,.0f} {there_rate:>12,.0f} {ratio:>17.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} (after)")


if __name__ == "__main__":
    main()
