"""Replay and verify: speed against the SQLite read+map baseline, and peak memory at scale.

    python -m benchmarks.bench_replay [--quick] [--json] [--dir DIR] [--keep] [--fresh]

Every measurement runs in a fresh Python process (its peak RSS is its VmHWM; a thread
in it samples anonymous and file-backed RSS, since LMDB's mapped pages count in RSS):

- replay: `replay.audit.run_audit` (rebuild every projection, audit the verdicts, compare with
  the stored views) on ledgers of 1M and 5M events (``--quick``: 100k and 500k), views caught
  up beforehand; events/s at 1M against the baseline: target ≥ 4x. Peak memory at both sizes.
- verify: `replay.integrity.verify` on the 1M ledger (recompute every leaf and the tree; with
  no checkpoint it folds nothing), and again with a checkpoint at the end (then it folds every
  event to compare the projection digest); events/s against the baseline: target ≥ 2x.
- baseline: eventsourcing's SQLite module, as many events as the smaller ledger (1000 saves
  of 100 each per 100k), read by selecting every notification in pages of 1000 and mapping
  each to a domain event with the application's mapper; its speed and peak memory.
- idle: a process that imports everything and opens the ledger: the floor under the peaks.

The setup ledgers take minutes to build (append_batch of 100k, unflushed), so they are kept in
``DIR/cache`` and reused while the ledger and projection sources are unchanged (``--fresh``
rebuilds them). The baseline database is built in the run's work directory each time.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Comparison,
    Figure,
    Report,
    Workdir,
    anon_sampler,
    cached_ledger,
    log,
    parser,
    peak_rss_kb,
    rate,
    run_child,
    source_key,
    sqlite_app,
    sqlite_fill,
    sqlite_read_map,
    warm,
)

MODULE = "benchmarks.bench_replay"


# ---------------------------------------------------------------------------- child processes


def child(mode: str, target: Path) -> dict[str, Any]:
    """Run one measurement in this (fresh) process; returns what the parent reports."""
    with anon_sampler() as peaks:
        if mode == "sqlite":
            app = sqlite_app(target)
            try:
                events, seconds = sqlite_read_map(app)
            finally:
                app.close()
            return {"events": events, "seconds": seconds} | peaks
        from ledger.ledger import Ledger  # noqa: PLC0415
        from replay.audit import run_audit  # noqa: PLC0415
        from replay.integrity import verify  # noqa: PLC0415

        with Ledger.open(target, create=False) as ledger:
            events = ledger.size()
            if mode == "verify-checkpoint":
                _checkpoint_at_the_end(ledger)
            t0 = time.perf_counter()
            detail: dict[str, Any] = {}
            if mode == "replay":
                report = run_audit(ledger)
                detail = {"diverged": report.diverged, "rejected": len(report.rejected)}
            elif mode in {"verify", "verify-checkpoint"}:
                result = verify(ledger)
                detail = {"ok": result.ok, "detail": result.detail}
            seconds = time.perf_counter() - t0
        return {"events": events, "seconds": seconds, **detail} | peaks


def _checkpoint_at_the_end(ledger: Any) -> None:
    """Make `verify` in this process see a checkpoint at the log's end (as after `adminchain
    checkpoint`), without writing to the cached ledger: verify then folds every event to compare
    the projection digest. The checkpoint is computed before the clock starts."""
    import replay.integrity as integrity  # noqa: PLC0415
    from ledger.notes import Checkpoint  # noqa: PLC0415
    from replay.rebuild import rebuild  # noqa: PLC0415

    folder, size = rebuild(ledger)
    checkpoint = Checkpoint(ledger.origin(), size, ledger.root(size), folder.digest())
    integrity.stored_checkpoints = lambda *_: integrity.StoredCheckpoints(
        {size: checkpoint}, [], ()
    )


def run(mode: str, target: Path) -> dict[str, Any]:
    """`child` in a fresh process, with its peak RSS (kB) as ``maxrss_kb``; `target` is read
    through once first, so that both sides start with their files in the page cache."""
    seconds = warm(target)
    if seconds > 5:
        log(f"  (warming {target.name} took {seconds:.0f} s: it was not in the page cache)")
    result = run_child(MODULE, ["--child", mode, str(target)])
    if mode != "idle":
        result["rate"] = rate(result["events"], result["seconds"])
    return result


def _mb(kb: float) -> float:
    return kb / 1024


# ---------------------------------------------------------------------------- the report


def main(argv: Sequence[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--fresh", action="store_true", help="rebuild the cached setup ledgers")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child(args.child[0], Path(args.child[1]))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        print(json.dumps(result | {"maxrss_kb": peak_rss_kb(), "major_faults": faults}))
        return
    small, large = (100_000, 500_000) if args.quick else (1_000_000, 5_000_000)
    baseline_n = small

    with Workdir(args.dir, "bench-replay-", keep=args.keep) as work:
        log(f"work dir {work.path} on {work.disk}")
        log(f"setup: ledgers of {small:,} and {large:,} events (views caught up), cached")
        t0 = time.perf_counter()
        key = source_key()
        ledger_small = cached_ledger(args.dir, small, key=key, fresh=args.fresh)
        ledger_large = cached_ledger(args.dir, large, key=key, fresh=args.fresh)
        setup_ledgers = time.perf_counter() - t0
        log(f"setup: eventsourcing SQLite database of {baseline_n:,} events, 100 per save")
        db = work.sub("baseline.sqlite")
        app = sqlite_app(db)
        save_seconds, _ = sqlite_fill(app, baseline_n, 100)
        app.close()

        log("measuring: idle floor")
        idle = run("idle", ledger_small)
        log("measuring: baseline read+map")
        base = run("sqlite", db)
        log(f"  {base['rate']:,.0f}/s, peak RSS {_mb(base['maxrss_kb']):,.0f} MB")
        results: dict[str, dict[str, Any]] = {}
        for name, mode, target in (
            (f"replay {small:,}", "replay", ledger_small),
            (f"verify {small:,}", "verify", ledger_small),
            (f"verify+checkpoint {small:,}", "verify-checkpoint", ledger_small),
            (f"replay {large:,}", "replay", ledger_large),
        ):
            log(f"measuring: {name}")
            results[name] = r = run(mode, target)
            peak = _mb(r["maxrss_kb"])
            log(f"  {r['rate']:,.0f}/s, peak RSS {peak:,.0f} MB, {r['seconds']:.1f} s")

        report = Report(
            "adminchain bench_replay",
            work.disk,
            str(work.path),
            params={
                "ledgers": f"{small:,} and {large:,} events over 1000 subjects",
                "baseline_events": baseline_n,
                "baseline_page": 1000,
                "setup_ledgers_s": round(setup_ledgers),
                "baseline_save_rate": round(rate(baseline_n, save_seconds)),
            },
        )
        replay_small, verify_small = results[f"replay {small:,}"], results[f"verify {small:,}"]
        verify_cp = results[f"verify+checkpoint {small:,}"]
        replay_large = results[f"replay {large:,}"]
        for replay_ok in (replay_small, replay_large):
            if replay_ok.get("diverged") or replay_ok.get("rejected"):
                log(f"  note: replay reported {replay_ok}")
        if not verify_small.get("ok"):
            log(f"  note: verify failed: {verify_small.get('detail')}")
        baseline_label = f"SQLite select pages + mapper, {baseline_n:,}"
        report.comparisons += [
            Comparison(
                f"replay (run_audit), {small:,} events",
                replay_small["rate"],
                base["rate"],
                "events/s",
                target=4,
                ours_label="all projections + audit",
                baseline_label=baseline_label,
                note="fresh process each",
            ),
            Comparison(
                f"verify, {small:,} events",
                verify_small["rate"],
                base["rate"],
                "events/s",
                target=2,
                ours_label="replay.integrity.verify",
                baseline_label=baseline_label,
                note="fresh process each",
            ),
            Comparison(
                f"verify with a checkpoint at the end, {small:,} events",
                verify_cp["rate"],
                base["rate"],
                "events/s",
                target=2,
                ours_label="verify, folding every event",
                baseline_label=baseline_label,
                note="the digest is compared at the end",
            ),
            Comparison(
                f"replay peak RSS, {small:,} events",
                _mb(replay_small["maxrss_kb"]),
                _mb(base["maxrss_kb"]),
                "MB",
                target=None,
                ours_label="run_audit",
                baseline_label=f"SQLite read+map, {baseline_n:,}",
                note="VmHWM: includes mapped LMDB pages",
                higher_is_better=False,
            ),
        ]
        report.figures += [
            Figure(f"replay {large:,} events", replay_large["rate"], "events/s",
                   f"{replay_large['seconds']:.1f} s, {replay_large['major_faults']} major faults"),
            Figure(f"replay peak RSS, {small:,}", _mb(replay_small["maxrss_kb"]), "MB",
                   f"anon {_mb(replay_small['rss_anon_kb']):,.0f} MB + file "
                   f"{_mb(replay_small['rss_file_kb']):,.0f} MB (sampled peaks)"),
            Figure(f"replay peak RSS, {large:,}", _mb(replay_large["maxrss_kb"]), "MB",
                   f"anon {_mb(replay_large['rss_anon_kb']):,.0f} MB + file "
                   f"{_mb(replay_large['rss_file_kb']):,.0f} MB (sampled peaks)"),
            Figure(f"verify peak RSS, {small:,}", _mb(verify_small["maxrss_kb"]), "MB",
                   f"anon {_mb(verify_small['rss_anon_kb']):,.0f} MB"),
            Figure("idle floor RSS", _mb(idle["maxrss_kb"]), "MB",
                   "imports + open the ledger, nothing read"),
            Figure("baseline peak RSS", _mb(base["maxrss_kb"]), "MB",
                   f"anon {_mb(base['rss_anon_kb']):,.0f} MB"),
        ]  # fmt: skip
        report.emit(as_json=args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
