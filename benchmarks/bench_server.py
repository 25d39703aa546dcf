"""bench_server — `adminchain serve` under load from wrk, beside its baseline in the same run.

Load comes from wrk (Debian's `wrk`), a C client, so the client does not eat the cores it
measures. Ours: a real `adminchain serve --workers N` over LMDB and over PostgreSQL. Baseline: the
same HTTP stack (Litestar on uvicorn, `benchmarks.baseline_server`, as many worker processes) in
front of eventsourcing's PostgreSQL application, saving one event per request (its errors are
reported: they must be 0). The ceiling of that stack on this machine is measured too: our
`/healthz` (no token, no ledger work).

Measured (each `--duration` seconds):
- 64 concurrent clients, one event per request, durable: requests/s, p50 and p99 latency, and
  the CPU one append costs across every process (`CpuMeter`) with the rate that allows;
- batch requests of 10k events (4 clients): events/s;
- status reads under that write load (4 readers): p99;
- append-to-delivery on a subscription under that write load: p99.

    python -m benchmarks.bench_server [--quick] [--duration 10] [--workers 2] [--json]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import Comparison, Figure, Report, Workdir, log, parser, percentile
from tests.serving import Served, make_tokens, start_server

PG_URL = os.environ.get(
    "ADMINCHAIN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/adminchain_test"
)
CLIENTS = 64
BATCH = 10_000
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, *, connections: int, duration: float) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 latency (ms), errors (non-2xx and socket errors)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = {"errors": 0.0}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    for p in ("50", "99"):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{p}"] = float(value) * _UNITS[unit]
    for pattern in (r"Non-2xx or 3xx responses:\s+(\d+)", r"Socket errors:.*?timeout (\d+)"):
        found = re.search(pattern, out)
        if found:
            result["errors"] += float(found.group(1))
    return result


def settle(server: Served, quiet: float = 0.5, limit: float = 120.0) -> float:
    """Wait until the server has finished the requests wrk left in flight (the log stops
    growing for `quiet` seconds), so that one measurement does not run into the last one's
    work: when wrk stops, the requests it sent are still served (a few 10k-event batches on
    PostgreSQL take seconds). Returns the seconds waited."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {server.tokens['reader']}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        size, since = -1, time.monotonic()
        while time.monotonic() - started < limit:
            now_size = client.get(f"{server.url}/v1/info").json()["size"]
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.1)
    return time.monotonic() - started


def lua(path: Path, *, method: str, token: str, body_file: Path | None = None) -> Path:
    """A wrk script sending `method` with a bearer token (and a JSON Lines body)."""
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body_file is not None:
        lines += [
            'wrk.headers["Content-Type"] = "application/jsonl"',
            f'local f = io.open("{body_file}", "rb")',
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def background_writes(url: str, script: Path, duration: float) -> Iterator[None]:
    """wrk appending single events with 64 clients while the block runs."""
    process = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{CLIENTS}",
            f"-d{duration:g}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        process.wait()


def _ticks(pid: int) -> float:
    """CPU seconds (user + system) a process has used, 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes(named: str) -> list[int]:
    """The pids of every process whose command is `named`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == named:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """Where the cores went while a block ran (Linux /proc): the server's processes (the
    parent and its workers), PostgreSQL's (every backend process, the bench's and the
    baseline's none then), wrk and the rest, and idle. With `per(n)`: each, per request.

    This is the floor argument of a 2-core machine in figures: requests/s can be at most
    (cores x 1 s) / (CPU per request, all processes), and what is idle was not the limit."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.seconds = 0.0

    def _sample(self) -> tuple[float, float, float, float, float]:
        server = [self.server_pid, *_children(self.server_pid)]
        times = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        return (
            time.monotonic(),
            sum(_ticks(pid) for pid in server),
            sum(_ticks(pid) for pid in _processes("postgres")),
            sum(times) / tick,
            (times[3] + times[4]) / tick,  # idle and iowait
        )

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        self.seconds = end[0] - self._start[0]
        self.server, self.postgres, total, idle = (
            end[i] - self._start[i] for i in range(1, 5)
        )
        self.idle_share = idle / total if total else 0.0
        self.other = max(0.0, total - idle - self.server - self.postgres)

    def per(self, requests: float) -> dict[str, float]:
        """Microseconds of CPU per request: server, postgres, other (wrk, kernel threads),
        and the machine's idle share."""
        scale = 1e6 / max(requests, 1.0)
        return {
            "server_us": self.server * scale,
            "postgres_us": self.postgres * scale,
            "other_us": self.other * scale,
            "idle": self.idle_share,
        }


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


SUBSCRIBERS = 2
"""Subscription streams of the delivery probe, each on its own connection (with `--workers`,
the kernel hands each connection to some worker: several streams and several probe connections
sample both the same-worker and the cross-worker delivery paths)."""
PROBE_CONNECTIONS = 4


def build_probe(work: Path) -> Path | None:
    """The Go delivery probe (`benchmarks/go/deliveryprobe`, the standard library only), built;
    None without Go (the Python probe is used then, and the report says so)."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = work / "deliveryprobe"
    env = {**os.environ, "GO111MODULE": "off", "GOCACHE": str(work / "gocache")}
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=Path(__file__).parent / "go" / "deliveryprobe",
        env=env,
        check=True,
        timeout=300,
    )
    return binary


def delivery_latencies(
    server: Served, duration: float, probe: Path | None, rate: float = 50.0
) -> dict[str, list[float]]:
    """Milliseconds, per probe event and subscriber: from sending the append to receiving it on
    the subscription (``sent``: what a client appending and one subscribing see end to end, the
    append's own latency under the write load included), the append's own latency (``append``:
    send to 2xx), and from the 2xx to the delivery (``after_ack``: 0 when it came first).

    With `probe` (the Go probe: `build_probe`), the probe costs the cores next to nothing, as
    wrk does; without it, the same measurement runs here in Python (three threads and a GIL
    beside the server: its own waits add to the figures)."""
    headers = {"Authorization": f"Bearer {server.tokens['admin']}"}
    start = httpx.get(f"{server.url}/v1/info", headers=headers).json()["size"] + 1
    if probe is not None:
        args = [server.url, server.tokens["admin"], start, duration, rate, SUBSCRIBERS]
        done = subprocess.run(
            [str(probe), *map(str, args), str(PROBE_CONNECTIONS)],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        )
        figures: dict[str, list[float]] = json.loads(done.stdout)
        return figures
    return _python_probe(server, duration, rate, start)


def _python_probe(
    server: Served, duration: float, rate: float, start: int
) -> dict[str, list[float]]:
    """`delivery_latencies` in this process, as the Go probe measures it."""
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    received: list[tuple[str, float]] = []
    lock = threading.Lock()
    done = threading.Event()
    headers = {"Authorization": f"Bearer {server.tokens['admin']}"}
    ready = threading.Barrier(SUBSCRIBERS + 1)

    def listen() -> None:
        with (
            httpx.Client(headers=headers, timeout=None) as client,
            client.stream(
                "GET", f"{server.url}/v1/subscribe", params={"from": start, "type": "LeaseExpired"}
            ) as stream,
        ):
            lines = stream.iter_lines()
            next(lines)  # the "subscribed" comment: the stream is open
            ready.wait()
            for line in lines:
                if line.startswith("data:"):
                    now = time.perf_counter()
                    subject = json.loads(line[5:])["event"]["subject"]
                    with lock:
                        received.append((subject, now))
                if done.is_set():
                    return

    listeners = [threading.Thread(target=listen, daemon=True) for _ in range(SUBSCRIBERS)]
    for listener in listeners:
        listener.start()
    ready.wait(30)
    clients = [httpx.Client(headers=headers, timeout=30) for _ in range(PROBE_CONNECTIONS)]
    try:
        until = time.monotonic() + duration
        turn = 0
        while time.monotonic() < until:
            subject = f"probe-{uuid.uuid4().hex[:12]}"
            client = clients[turn % len(clients)]
            turn += 1
            sent[subject] = time.perf_counter()
            client.post(
                f"{server.url}/v1/events",
                content=json.dumps({"type": "LeaseExpired", "subject": subject}).encode(),
                headers={"content-type": "application/jsonl"},
            ).raise_for_status()
            acked[subject] = time.perf_counter()
            time.sleep(1 / rate)
    finally:
        for client in clients:
            client.close()
    time.sleep(1.0)
    done.set()
    with lock:
        got = list(received)
    figures: dict[str, list[float]] = {"sent": [], "after_ack": []}
    figures["append"] = [(acked[s] - sent[s]) * 1000 for s in sent if s in acked]
    for subject, when in got:
        if subject in sent:
            figures["sent"].append((when - sent[subject]) * 1000)
            figures["after_ack"].append(max(0.0, when - acked[subject]) * 1000)
    figures["missed"] = [float(len(sent) * SUBSCRIBERS - len(figures["sent"]))]
    return figures


PHASES = ("ceiling", "single", "batch", "reads", "delivery")


def measure_ours(
    target: str,
    work: Path,
    duration: float,
    name: str,
    workers: int,
    phases: tuple[str, ...] = PHASES,
    probe: Path | None = None,
) -> dict[str, Any]:
    tokens = make_tokens(target)
    server = start_server(target, work / f"server-{name}", "--workers", str(workers), tokens=tokens)
    figures: dict[str, Any] = {}
    try:
        single = work / "single.jsonl"
        single.write_text('{"type":"KeepAliveFailed","subject":"runner-a"}\n')
        batch = work / "batch.jsonl"
        batch.write_text(
            "".join(
                f'{{"type":"KeepAliveFailed","subject":"runner-{i % 1000}"}}\n'
                for i in range(BATCH)
            )
        )
        write = lua(work / "write.lua", method="POST", token=tokens["loop"], body_file=single)
        writes = f"{server.url}/v1/events"
        if "ceiling" in phases:
            log(f"{name}: the stack's ceiling: GET /healthz, 64 clients")
            figures["ceiling"] = wrk(
                f"{server.url}/healthz",
                lua(work / "health.lua", method="GET", token="none"),
                connections=CLIENTS,
                duration=duration,
            )
        if "single" in phases:
            log(f"{name}: 64 clients, one event per request, {duration:g} s")
            with CpuMeter(server.process.pid) as cpu:
                figures["single"] = wrk(writes, write, connections=CLIENTS, duration=duration)
            figures["single_cpu"] = cpu.per(figures["single"]["rps"] * cpu.seconds)
            settle(server)
        if "batch" in phases:
            log(f"{name}: batches of {BATCH} events, 4 clients")
            many = lua(work / "batch.lua", method="POST", token=tokens["loop"], body_file=batch)
            with CpuMeter(server.process.pid) as cpu:
                figures["batch"] = wrk(writes, many, connections=4, duration=duration)
            figures["batch_cpu"] = cpu.per(figures["batch"]["rps"] * BATCH * cpu.seconds)
            log(f"{name}: {settle(server):.1f} s for the batches still in flight")
        if "reads" in phases:
            read = lua(work / "read.lua", method="GET", token=tokens["reader"])
            log(f"{name}: status reads under the write load")
            with background_writes(writes, write, duration + 1):
                figures["reads"] = wrk(
                    f"{server.url}/v1/status/maintenance/node-1",
                    read,
                    connections=4,
                    duration=duration,
                )
            settle(server)
        if "delivery" in phases:
            log(f"{name}: append-to-delivery on a subscription under the write load")
            with background_writes(writes, write, duration + 2):
                figures["delivery"] = delivery_latencies(server, duration, probe)
    finally:
        server.stop()
    return figures


def measure_baseline(work: Path, duration: float, workers: int) -> dict[str, float]:
    """eventsourcing's PostgreSQL application behind the same HTTP stack, one event a request."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    dbname = PG_URL.rpartition("/")[2]
    env = {
        **os.environ,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname.split("?")[0],
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_SCHEMA": schema,
    }
    import psycopg  # noqa: PLC0415

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    port = 18000 + os.getpid() % 1000
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.baseline_server", str(port), str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "baseline.log").open("wb"),
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/events"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b'{"type":"KeepAliveFailed","subject":"warm"}')
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        single = work / "single.jsonl"
        single.write_text('{"type":"KeepAliveFailed","subject":"runner-a"}\n')
        script = lua(work / "baseline.lua", method="POST", token="none", body_file=single)
        log("baseline: 64 clients, one event per request (eventsourcing + PostgreSQL)")
        return wrk(url, script, connections=CLIENTS, duration=duration)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _choice(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        sys.exit(f"{option}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return chosen


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes, ours and the baseline's (default: one per core)",
    )
    p.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated measurements to run (default all: {','.join(PHASES)})",
    )
    p.add_argument(
        "--backends",
        default="lmdb,postgres",
        help="comma-separated: lmdb, postgres (default both)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the baseline (ratios are then not reported)",
    )
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_server needs wrk: apt-get install wrk")
    phases = _choice(args.only, PHASES, "--only")
    backends = _choice(args.backends, ("lmdb", "postgres"), "--backends")
    duration = 3.0 if args.quick else args.duration
    with Workdir(args.dir, "bench-server-", keep=args.keep) as work:
        report = Report(
            "bench_server — adminchain serve under wrk",
            work.disk,
            str(work.path),
            params={
                "clients": CLIENTS,
                "batch": BATCH,
                "duration_s": duration,
                "workers": args.workers,
            },
        )
        probe = build_probe(work.path) if "delivery" in phases else None
        report.params["delivery probe"] = "Go" if probe is not None else "Python (no Go here)"
        baseline = None if args.no_baseline else measure_baseline(work.path, duration, args.workers)
        ours: dict[str, dict[str, Any]] = {}
        if "lmdb" in backends:
            ours["LMDB"] = measure_ours(
                str(work.sub("ledger.lmdb")), work.path, duration, "lmdb", args.workers, phases,
                probe,
            )
        if "postgres" in backends:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            pg_target = f"{PG_URL}?schema={schema}"
            try:
                ours["PostgreSQL"] = measure_ours(
                    pg_target, work.path, duration, "postgres", args.workers, phases, probe
                )
            finally:
                import psycopg  # noqa: PLC0415

                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if baseline is not None:
            report.figures.append(
                Figure(
                    "baseline: errors (non-2xx, timeouts)",
                    baseline["errors"],
                    "",
                    "must be 0 (a baseline that answers errors fast is not a baseline)",
                )
            )
        for backend, figures in ours.items():
            _report(report, backend, figures, baseline)
        report.emit(as_json=args.json)


def _cpu_figures(backend: str, what: str, cpu: dict[str, float]) -> list[Figure]:
    """The CPU one unit of work cost across every process (`CpuMeter`), and the rate that
    allows with every core busy."""
    spent = cpu["server_us"] + cpu["postgres_us"] + cpu["other_us"]
    cores = os.cpu_count() or 1
    return [
        Figure(
            f"{backend}: CPU per {what}",
            spent,
            "µs",
            f"server {cpu['server_us']:.1f} + PostgreSQL {cpu['postgres_us']:.1f} + "
            f"wrk and the rest {cpu['other_us']:.1f}; machine idle {cpu['idle']:.0%}",
        ),
        Figure(
            f"{backend}: the most {cores} cores allow at that CPU per {what.split(maxsplit=1)[0]}",
            cores * 1e6 / spent if spent else 0.0,
            "events/s",
            "every core busy: the ceiling this code has on this machine",
        ),
    ]


def _report(
    report: Report, backend: str, figures: dict[str, Any], baseline: dict[str, float] | None
) -> None:
    label = "eventsourcing + PostgreSQL behind Litestar/uvicorn"
    single = figures.get("single")
    if single is not None and baseline is not None:
        report.comparisons.append(
            Comparison(
                f"{backend}: 64 clients, 1 event/request, durable",
                single["rps"],
                baseline["rps"],
                "events/s",
                5.0,
                ours_label=f"p50 {single['p50']:.1f} ms, p99 {single['p99']:.1f} ms",
                baseline_label=f"p50 {baseline['p50']:.1f} ms, p99 {baseline['p99']:.1f} ms",
                note=label,
            )
        )
    if "ceiling" in figures:
        ceiling = figures["ceiling"]["rps"]
        versus = "" if baseline is None else f"{ceiling / baseline['rps']:.2f}x the baseline: "
        report.figures.append(
            Figure(
                f"{backend}: the HTTP stack's ceiling (GET /healthz)",
                ceiling,
                "requests/s",
                f"{versus}what the HTTP stack alone serves here",
            )
        )
    if single is not None:
        report.figures += [
            Figure(
                f"{backend}: single-event appends",
                single["rps"],
                "events/s",
                f"target ≥ 5,000; p50 {single['p50']:.1f} ms",
            ),
            Figure(f"{backend}: single-event p99", single["p99"], "ms", "target ≤ 25"),
        ]
        if "single_cpu" in figures:
            report.figures += _cpu_figures(backend, "single-event append", figures["single_cpu"])
    batch = figures.get("batch")
    if batch is not None:
        report.figures.append(
            Figure(
                f"{backend}: batches of 10k",
                batch["rps"] * BATCH,
                "events/s",
                f"target ≥ 100,000; p99 {batch['p99']:.0f} ms per request",
            )
        )
        if "batch_cpu" in figures:
            report.figures += _cpu_figures(backend, "event in 10k batches", figures["batch_cpu"])
    if "reads" in figures:
        report.figures.append(
            Figure(
                f"{backend}: status read p99 under write load",
                figures["reads"]["p99"],
                "ms",
                f"target ≤ 10; {figures['reads']['rps']:.0f} reads/s",
            )
        )
    delivery = figures.get("delivery")
    if delivery is not None:
        sent, after, own = delivery["sent"], delivery["after_ack"], delivery["append"]
        report.figures += [
            Figure(
                f"{backend}: append-to-delivery p99 under write load (send to delivery)",
                percentile(sent, 99),
                "ms",
                f"target ≤ 20; {len(sent)} deliveries ({SUBSCRIBERS} subscribers, "
                f"{int(delivery['missed'][0])} missed), p50 {percentile(sent, 50):.1f} ms",
            ),
            Figure(
                f"{backend}: the probe appends' own latency p99 (send to 2xx)",
                percentile(own, 99),
                "ms",
                f"p50 {percentile(own, 50):.1f} ms: the floor of send-to-delivery",
            ),
            Figure(
                f"{backend}: delivery after the 2xx p99",
                percentile(after, 99),
                "ms",
                f"p50 {percentile(after, 50):.1f} ms (0 when delivered before the 2xx came)",
            ),
        ]
    errors = sum(figures[k]["errors"] for k in ("single", "batch") if k in figures)
    report.figures.append(Figure(f"{backend}: errors (non-2xx, timeouts)", errors, "", "must be 0"))


if __name__ == "__main__":
    main()
