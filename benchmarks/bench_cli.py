"""The command line: start-up of `--help`, `status`, `status --json`, and `status` of 10k subjects.

    python -m benchmarks.bench_cli [--quick] [--json] [--dir DIR] [--keep]
                                   [--baseline REV] [--runs N] [--subjects N] [--hyperfine]
                                   [--source-only] [--append-events N]

Both sides run in the same run, alternating: our working tree, and the baseline — the sources
of git revision REV (default ``main``) extracted with ``git archive`` into the work directory —
each as ``python -m adminchain`` with its own tree first on PYTHONPATH, in the same virtual
environment, on the same ledgers. Bare ``python -c pass`` runs beside them: the floor.

- start-up: `--help`; `status` and `status --json` on a small ledger (5 events). Wall time per
  process, min and median of `--runs` runs (targets: `--help` ≤ 80 ms, `status` ≤ 120 ms).
  With ``--hyperfine`` (if installed) the start-up figures come from hyperfine instead.
- 10k subjects: `status` (human, to a pipe) and `status --json` on a ledger of 10k nodes with
  long ids (views already caught up), min and median of a few runs; and our plain-text table
  renderer alone, in process.
- a big append: ``append FILE`` of a JSON Lines file of `--append-events` events (default 550k,
  about 66 MB; ``--quick`` 100k; 0 skips it) into a fresh ledger, each tree twice, alternating:
  wall time and peak RSS (the process's VmHWM, file-backed pages of the ledger included), the
  peak also as a multiple of the input's size (target ≤ 3x).

Both trees are byte-compiled first (``compileall``), as ``pip install`` does: where
PYTHONDONTWRITEBYTECODE is set (as on the machine these figures come from) nothing else writes
``__pycache__``, and each process would compile every module of the tree again — about half of
`status`'s start-up, a cost no installed CLI pays. ``--source-only`` measures that case instead.

The machine's load average is reported at start and end: these are wall-clock figures, and on
a shared machine the minimum is the steadiest.
"""

from __future__ import annotations

import compileall
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import REPO, Comparison, Figure, Report, Workdir, disk_of, log, parser
from ledger.events import EnterMaintenance, Event, MaintenanceObserved
from ledger.ledger import Ledger
from projections.api import Views


def extract(revision: str, into: Path) -> Path:
    """The baseline's Python packages, as of `revision`, in `into`."""
    data = subprocess.run(
        ["git", "archive", revision, "adminchain", "ledger", "projections", "replay"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    return into


def byte_compile(tree: Path) -> None:
    """Write the ``__pycache__`` of the four packages of `tree` (as an install does)."""
    for package in ("adminchain", "ledger", "projections", "replay"):
        if not compileall.compile_dir(tree / package, quiet=2, workers=1):
            raise SystemExit(f"{tree / package} does not byte-compile")


def small_ledger(path: Path) -> None:
    t = datetime(2026, 11, 25, 9, tzinfo=UTC)
    with Ledger.open(path) as log_:
        log_.append_batch(
            [
                EnterMaintenance(subject="node-7", actor="alice", at=t, reason="kernel"),
                MaintenanceObserved(
                    subject="node-7", state="DrainFailed", reason="pods", at=t + timedelta(1)
                ),
                EnterMaintenance(subject="node-8", actor="alice", at=t),
                EnterMaintenance(subject="node-9", actor="alice", at=t),
                MaintenanceObserved(subject="node-9", state="Maintenance", at=t),
            ]
        )
        Views(log_).catch_up()


def big_ledger(path: Path, subjects: int) -> None:
    """`subjects` nodes with ids longer than 80 columns; one in 50 DrainFailed."""
    t = datetime(2026, 11, 25, 9, tzinfo=UTC)
    events: list[Event] = []
    for i in range(subjects):
        node = f"broker-{i % 7}/search/rack-{i // 100:03d}/node-{i:05d}.cluster.example.org"
        events.append(EnterMaintenance(subject=node, actor="alice", at=t, reason="upgrade"))
        if i % 50 == 0:
            events.append(
                MaintenanceObserved(subject=node, state="DrainFailed", reason="pods", at=t)
            )
    with Ledger.open(path) as log_:
        log_.append_batch(events)
        Views(log_).catch_up()


CPU: dict[str, list[float]] = {}
"""CPU time (user + system) of each run, by variant: far less sensitive to the machine's load
than wall time, so it shows what an idle machine would take (minus waiting on the disk)."""


def timed(command: list[str], env: dict[str, str], cwd: Path, name: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(name, []).append(cpu * 1000)
    return elapsed * 1000


def env_for(tree: Path, ledger: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env["ADMINCHAIN_LEDGER"] = str(ledger)
    env.pop("ADMINCHAIN_CHECKPOINT_KEY", None)
    return env


def alternate(
    variants: dict[str, tuple[list[str], dict[str, str]]], runs: int, cwd: Path
) -> dict[str, list[float]]:
    """Each variant once per round, `runs` rounds (after one warm-up round)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(runs + 1):
        for name, (command, env) in variants.items():
            elapsed = timed(command, env, cwd, name)
            if round_:
                times[name].append(elapsed)
    return times


def hyperfine(
    variants: dict[str, tuple[list[str], dict[str, str]]], runs: int, cwd: Path
) -> dict[str, list[float]]:
    """The same, measured by hyperfine (one variant after the other)."""
    times: dict[str, list[float]] = {}
    for name, (command, env) in variants.items():
        out = cwd / "hyperfine.json"
        subprocess.run(
            ["hyperfine", "-N", "-w", "3", "-r", str(runs), "--export-json", str(out),
             " ".join(command)],
            env=env, cwd=cwd, capture_output=True, check=True,
        )  # fmt: skip
        times[name] = [t * 1000 for t in json.loads(out.read_text())["results"][0]["times"]]
    return times


def cpu_min(name: str) -> float:
    """The least CPU time of a variant's runs (the warm-up round included: it is the least)."""
    return min(CPU.get(name, [float("nan")]))


def stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[0], ordered[len(ordered) // 2]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--baseline", default="main", help="git revision to compare with")
    p.add_argument("--runs", type=int, default=20, help="runs per start-up figure")
    p.add_argument("--subjects", type=int, default=10_000, help="subjects of the big ledger")
    p.add_argument("--hyperfine", action="store_true", help="start-up timed by hyperfine")
    p.add_argument(
        "--source-only",
        action="store_true",
        help="do not byte-compile the trees (with PYTHONDONTWRITEBYTECODE, every run compiles)",
    )
    p.add_argument(
        "--append-events",
        type=int,
        default=None,
        help="events of the big append (default 550k, --quick 100k; 0: skip it)",
    )
    args = p.parse_args()
    runs = 5 if args.quick else args.runs
    appended = args.append_events
    if appended is None:
        appended = 100_000 if args.quick else 550_000
    subjects = 1000 if args.quick else args.subjects
    python = sys.executable
    with Workdir(args.dir, "cli", keep=args.keep) as work:
        report = Report(
            "adminchain command line",
            disk_of(work.path),
            str(work.path),
            params={
                "runs": runs,
                "subjects": subjects,
                "baseline": args.baseline,
                "bytecode": not args.source_only,
                "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
            },
        )
        base_tree = extract(args.baseline, work.sub("baseline"))
        if not args.source_only:
            log("byte-compiling both trees")
            byte_compile(base_tree)
            byte_compile(REPO)
        small, big = work.sub("small.lmdb"), work.sub("big.lmdb")
        log("small ledger")
        small_ledger(small)
        log(f"big ledger: {subjects} subjects")
        big_ledger(big, subjects)
        cli = [python, "-m", "adminchain"]
        ours, base = env_for(REPO, small), env_for(base_tree, small)
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([python, "-c", "pass"], ours)
        }
        for args_ in (["--help"], ["status"], ["status", "--json"]):
            label = " ".join(args_)
            variants[f"ours {label}"] = ([*cli, *args_], ours)
            variants[f"baseline {label}"] = ([*cli, *args_], base)
        use_hyperfine = args.hyperfine and shutil.which("hyperfine") is not None
        log(f"start-up, {runs} runs each ({'hyperfine' if use_hyperfine else 'alternating'})")
        times = (hyperfine if use_hyperfine else alternate)(variants, runs, work.path)
        floor_min, floor_median = stats(times["python -c pass"])
        report.figures.append(
            Figure(
                "python -c pass",
                floor_min,
                "ms",
                f"min; median {floor_median:.1f} ms; CPU min {cpu_min('python -c pass'):.1f} ms",
            )
        )
        targets = {"--help": 80.0, "status": 120.0, "status --json": 120.0}
        for label, target in targets.items():
            ours_min, ours_median = stats(times[f"ours {label}"])
            base_min, base_median = stats(times[f"baseline {label}"])
            report.comparisons.append(
                Comparison(
                    f"start-up: adminchain {label} (min)",
                    ours_min,
                    base_min,
                    "ms",
                    None,
                    higher_is_better=False,
                    note=f"median {ours_median:.1f} vs {base_median:.1f} ms; CPU min "
                    f"{cpu_min(f'ours {label}'):.1f} vs {cpu_min(f'baseline {label}'):.1f} ms; "
                    f"target ≤ {target:.0f} ms",
                )
            )
        big_ours, big_base = env_for(REPO, big), env_for(base_tree, big)
        big_runs = 3 if args.quick else 5
        log(f"status of {subjects} subjects, {big_runs} runs each")
        big_variants = {
            "big ours status": ([*cli, "status"], big_ours),
            "big baseline status": ([*cli, "status"], big_base),
            "big ours status --json": ([*cli, "status", "--json"], big_ours),
            "big baseline status --json": ([*cli, "status", "--json"], big_base),
        }
        big_times = alternate(big_variants, big_runs, work.path)
        for label in ("status", "status --json"):
            ours_min, ours_median = stats(big_times[f"big ours {label}"])
            base_min, base_median = stats(big_times[f"big baseline {label}"])
            report.comparisons.append(
                Comparison(
                    f"{label} of {subjects} subjects, whole command (min)",
                    ours_min,
                    base_min,
                    "ms",
                    None,
                    higher_is_better=False,
                    note=f"median {ours_median:.1f} vs {base_median:.1f} ms; CPU min "
                    f"{cpu_min(f'big ours {label}'):.1f} vs "
                    f"{cpu_min(f'big baseline {label}'):.1f} ms",
                )
            )
        report.figures.append(render_alone(big, subjects))
        if appended:
            report.comparisons.extend(big_append(work, appended, base_tree))
        report.emit(as_json=args.json)


def big_append(work: Workdir, events: int, base_tree: Path) -> list[Comparison]:
    """``append FILE`` of `events` events into a fresh ledger by each tree (twice, alternating):
    the best wall time and the least peak RSS of each."""
    from benchmarks.bench_bulk import cli, write_events  # noqa: PLC0415

    data = work.sub("big-append.jsonl")
    log(f"big append: writing {events} events")
    size = write_events(data, events)
    results: dict[str, list[tuple[float, int]]] = {"ours": [], "baseline": []}
    for round_ in range(2):
        for name, tree in (("ours", REPO), ("baseline", base_tree)):
            ledger = work.sub(f"append-{name}-{round_}.lmdb")
            ran = cli(work.path, "append", str(data), env=env_for(tree, ledger), cwd=work.path)
            results[name].append((ran["seconds"], ran["peak_kb"]))
            shutil.rmtree(ledger)
            log(f"big append {name}: {results[name][-1][0]:.1f} s, {results[name][-1][1]} kB")
    mb = size / 1e6
    ours_s, base_s = (min(t for t, _ in results[n]) for n in ("ours", "baseline"))
    ours_kb, base_kb = (min(k for _, k in results[n]) for n in ("ours", "baseline"))
    ours_x, base_x = ours_kb * 1024 / size, base_kb * 1024 / size
    return [
        Comparison(
            f"append FILE, {events} events ({mb:.0f} MB), wall (best of 2)",
            ours_s, base_s, "s", None, higher_is_better=False,
        ),
        Comparison(
            f"append FILE, {events} events, peak RSS (least of 2)",
            ours_kb / 1024, base_kb / 1024, "MB", None, higher_is_better=False,
            note=f"{ours_x:.2f}x vs {base_x:.2f}x the input; target ≤ 3x",
        ),
    ]  # fmt: skip


def render_alone(path: Path, subjects: int) -> Figure:
    """Our plain-text renderer alone: the status document of `path`, printed to a buffer."""
    from adminchain import plain  # noqa: PLC0415
    from projections.query import StatusFilter, status_report  # noqa: PLC0415

    now = datetime.now(UTC)
    with Ledger.open(path, create=False) as log_:
        document = Views(log_).status(now=now)
    best = float("inf")
    for _ in range(5):
        out = io.StringIO()
        start = time.perf_counter()
        plain.status_tables(status_report(document, StatusFilter()), now, out)
        best = min(best, time.perf_counter() - start)
    rows = sum(len(rows) for rows in document.values())
    return Figure(
        f"plain renderer alone, {rows} rows", best * 1000, "ms", "filter, count and print (min)"
    )


if __name__ == "__main__":
    main()
