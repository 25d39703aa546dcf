"""Proofs from tlog-tiles against proofs from the server, on a large log (SPEC-server §9).

    python -m benchmarks.bench_tiles [--quick] [--json] [--dir DIR] [--keep] [--size N]
        [--proofs N] [--duration S] [--fresh]

`adminchain serve` runs in its own process over a ledger of `--size` events (default 10M,
``--quick`` 100k; built once with batch appends), publishing a
signed checkpoint (the ledger and its key are kept in ``DIR/cache``). Then, in the same run,
side by side:

- proof latency: a client with an empty cache proves one random event from tiles alone (its
  entry bundle, then the hash tiles `ledger.merkle.inclusion_proof` asks for, over HTTP
  keep-alive) and checks it against the signed checkpoint, against ``GET
  /v1/proofs/inclusion/{position}`` and checking that file; alternating, random positions;
- throughput under load: wrk (2 threads, 16 connections) fetching random full level-0 tiles,
  then random inclusion proofs from ``/v1/proofs/inclusion`` (wrk skipped, and said so, when
  it is not installed);
- the Go client (tests/go/tlogclient, where Go is installed): one run's wall time to check the
  checkpoint and prove three records and a consistency from tiles.

The server has one process (uvicorn, one event loop, ledger work in threads) on a 2-core
machine shared with the client and wrk: figures are relative, read the ratios.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    Comparison,
    Figure,
    Report,
    Workdir,
    cached_ledger,
    log,
    parser,
    percentile,
    source_key,
)
from ledger.merkle import check_inclusion, inclusion_proof, leaf_hash, node_hash
from ledger.notes import Checkpoint, Signer
from ledger.proofs import verify_inclusion_proof
from ledger.tiles import TILE_WIDTH, encode_index, parse_entry_bundle

REPO = Path(__file__).resolve().parent.parent


class TileClient:
    """A tlog-tiles client with an empty cache: hashes from tiles, fetched on demand."""

    def __init__(self, http: httpx.Client, size: int) -> None:
        self.http, self.size = http, size
        self.tiles: dict[tuple[str, int], bytes] = {}

    def fetch(self, level: str, index: int, hashes_at_level: int) -> bytes:
        key = (level, index)
        if key not in self.tiles:
            width = min(TILE_WIDTH, hashes_at_level - index * TILE_WIDTH)
            suffix = "" if width == TILE_WIDTH else f".p/{width}"
            response = self.http.get(f"/tile/{level}/{encode_index(index)}{suffix}")
            response.raise_for_status()
            self.tiles[key] = response.content
        return self.tiles[key]

    def get(self, level: int, index: int) -> bytes:
        """Node (level, index): hashed up from the tile at level ``level // 8``."""
        tile_level, height = divmod(level, 8)
        first = index << height
        tile, offset = divmod(first, TILE_WIDTH)
        data = self.fetch(str(tile_level), tile, self.size >> (8 * tile_level))
        hashes = [data[i * 32 : (i + 1) * 32] for i in range(offset, offset + (1 << height))]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def prove(self, index: int, checkpoint: Checkpoint) -> int:
        """Prove and check leaf `index`; returns how many tiles it fetched."""
        bundle = self.fetch("entries", index // TILE_WIDTH, self.size)
        leaf = parse_entry_bundle(bundle)[index % TILE_WIDTH]
        proof = inclusion_proof(self, index, self.size)
        check_inclusion(leaf_hash(leaf), index, self.size, proof, checkpoint.root)
        return len(self.tiles)


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wrk(url: str, script: Path, seconds: int) -> float:
    result = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if found is None or errors is not None:
        raise RuntimeError(f"wrk: {result.stdout}")
    return float(found.group(1))


_LUA_ENCODE = """
local function encode(n)
  local groups = {}
  repeat
    table.insert(groups, 1, string.format("%03d", n % 1000))
    n = math.floor(n / 1000)
  until n == 0
  for i = 1, #groups - 1 do groups[i] = "x" .. groups[i] end
  return table.concat(groups, "/")
end
"""


def _go_client(work: Path) -> Path | None:
    go = shutil.which("go")
    if go is None or not Path("/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog").is_dir():
        return None
    binary = work / "tlogclient"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode",
           "GOCACHE": str(work / "gocache")}  # fmt: skip
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=REPO / "tests/go/tlogclient",
                   env=env, check=True, timeout=300)  # fmt: skip
    return binary


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, help="events in the log (default 10M; --quick 100k)")
    p.add_argument("--proofs", type=int, default=300, help="proofs of each kind (latency)")
    p.add_argument("--duration", type=int, default=8, help="seconds of each wrk run")
    p.add_argument("--fresh", action="store_true", help="rebuild the cached ledger")
    args = p.parse_args(argv)
    size = args.size or (100_000 if args.quick else 10_000_000)
    duration = 3 if args.quick else args.duration

    t0 = time.perf_counter()
    path = cached_ledger(args.dir, size, key=source_key(), fresh=args.fresh)
    log(f"ledger of {size:,} events ready in {time.perf_counter() - t0:.0f} s")
    from adminchain.server.tokens import create_token  # noqa: PLC0415
    from ledger.ledger import Ledger  # noqa: PLC0415

    with Workdir(args.dir, "tiles-", keep=args.keep) as work:
        key_file = args.dir / "cache" / "bench-tiles.key"  # the cached ledger keeps its note
        if not key_file.exists():
            key_file.write_text(Signer.generate("bench.example").encode() + "\n")
        signer = Signer.parse(key_file.read_text().strip())
        with Ledger.open(path) as ledger:
            name = f"bench-{os.getpid()}"
            token, _ = create_token(ledger, name, "auditor")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        stderr = (work.path / "serve.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "adminchain", "serve", "--ledger", str(path), "--public-audit",
             "--listen", f"127.0.0.1:{port}", "--checkpoint-key", str(key_file),
             "--checkpoint-every", "1h"],
            cwd=REPO, stderr=stderr,
        )  # fmt: skip
        try:
            report = _measure(args, base, token, signer, size, duration, work.path)
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=120)
            stderr.close()
            from adminchain.server.tokens import revoke_token  # noqa: PLC0415

            with Ledger.open(path) as ledger:
                revoke_token(ledger, name)
        report.disk, report.workdir = work.disk, str(work.path)
        report.emit(as_json=args.json)


def _measure(
    args: Any, base: str, token: str, signer: Signer, size: int, duration: int, work: Path
) -> Report:
    http = httpx.Client(base_url=base, timeout=60)
    deadline = time.monotonic() + 600
    while True:
        try:
            response = http.get("/checkpoint")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            checkpoint = Checkpoint.open(response.text, [signer.verifier])
            if checkpoint.size == size:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the server published no checkpoint of the whole log")
        time.sleep(0.2)
    log(f"checkpoint of {size:,} published; measuring {args.proofs} proofs of each kind")
    auth = {"Authorization": f"Bearer {token}"}
    rng = random.Random(7)
    tiles_ms: list[float] = []
    server_ms: list[float] = []
    fetched: list[int] = []
    for _ in range(args.proofs):
        index = rng.randrange(size)
        start = time.perf_counter()
        fetched.append(TileClient(http, size).prove(index, checkpoint))
        tiles_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        text = http.get(f"/v1/proofs/inclusion/{index + 1}", headers=auth).text
        verify_inclusion_proof(text, [signer.verifier])
        server_ms.append((time.perf_counter() - start) * 1000)
    report = Report(
        "tlog-tiles: proofs from tiles against proofs from the server",
        disk="",
        workdir="",
        params={"size": size, "proofs": args.proofs, "wrk_seconds": duration},
    )
    p50_t, p50_s = percentile(tiles_ms, 50), percentile(server_ms, 50)
    report.comparisons.append(
        Comparison(
            f"inclusion proof, fetched and checked by the client (p50), {size:,} events",
            p50_t, p50_s, "ms", None, higher_is_better=False,
            ours_label=f"from tiles ({sum(fetched) / len(fetched):.1f} requests)",
            baseline_label="GET /v1/proofs/inclusion (1 request)",
        )
    )  # fmt: skip
    report.figures += [
        Figure("proof from tiles, p99", percentile(tiles_ms, 99), "ms", "empty client cache"),
        Figure("proof from the server, p99", percentile(server_ms, 99), "ms"),
    ]
    if shutil.which("wrk") is None:
        report.figures.append(Figure("wrk", float("nan"), "", "wrk is not installed: skipped"))
    else:
        full_tiles = (size >> 8) or 1
        tiles_lua = work / "tiles.lua"
        tiles_lua.write_text(
            _LUA_ENCODE + f"request = function()\n  return wrk.format('GET', '/tile/0/' .. "
            f"encode(math.random(0, {full_tiles - 1})))\nend\n"
        )
        proofs_lua = work / "proofs.lua"
        proofs_lua.write_text(
            f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
            "request = function()\n  return wrk.format('GET', '/v1/proofs/inclusion/' .. "
            f"math.random(1, {size}))\nend\n"
        )
        log(f"wrk: tiles, then proofs, {duration} s each")
        tiles_rps = _wrk(base, tiles_lua, duration)
        proofs_rps = _wrk(base, proofs_lua, duration)
        report.comparisons.append(
            Comparison(
                "requests/s under load (wrk -t2 -c16)", tiles_rps, proofs_rps, "req/s", None,
                ours_label="GET /tile/0/<random full tile>",
                baseline_label="GET /v1/proofs/inclusion/<random>",
                note="a tile serves 256 leaves' proofs to a caching client",
            )
        )  # fmt: skip
    binary = _go_client(work)
    if binary is not None:
        old = work / "old.checkpoint"
        old.write_text(http.get("/checkpoint").text)
        start = time.perf_counter()
        result = subprocess.run(
            [str(binary), base, signer.verifier.encode(), "-", "0", str(old)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"the Go client failed: {result.stderr}")
        note = f"from tiles alone: {result.stdout.strip()[:120]}"
        name = "Go tlog client: checkpoint + 3 records + consistency"
        report.figures.append(Figure(name, seconds * 1000, "ms", note))
    http.close()
    return report


if __name__ == "__main__":
    main()
