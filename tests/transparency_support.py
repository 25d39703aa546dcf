"""Processes for the transparency tests: witnesses, `adminchain serve`, the Go tlog client.

Every process is started from this test's own files and stopped by its pid (never by name).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ledger.cosign import Cosigner
from ledger.events import Event, HealthObserved
from ledger.notes import Signer
from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parent.parent
GO_CLIENT = REPO / "tests" / "go" / "tlogclient"
GOPATH = "/usr/share/gocode"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def events(start: int, count: int, tag: str = "") -> list[Event]:
    return [
        HealthObserved(
            subject=f"node-{i % 31}{tag}", at=T0 + timedelta(seconds=i), healthy=i % 2 == 0
        )
        for i in range(start, start + count)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "adminchain", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"adminchain {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


@dataclass
class Keys:
    log: Signer
    log_key: Path
    log_pub: Path


def log_keys(tmp: Path) -> Keys:
    signer = Signer.generate("log.example")
    key, pub = tmp / "log.key", tmp / "log.pub"
    key.write_text(signer.encode() + "\n")
    pub.write_text(signer.verifier.encode() + "\n")
    return Keys(signer, key, pub)


@dataclass
class WitnessProc:
    name: str
    signer: Cosigner
    key_file: Path
    pub_file: Path
    state: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vkey(self) -> str:
        return self.signer.key.encode()

    def start(self, logs: list[str]) -> None:
        args = [sys.executable, "-m", "adminchain", "witness", "serve", "--key", str(self.key_file)]
        args += ["--state", str(self.state), "--listen", f"127.0.0.1:{self.port}"]
        for log in logs:
            args += ["--log", log]
        self.proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.DEVNULL)
        wait_http(f"{self.url}/{'0' * 64}/checkpoint", self.proc)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None


def make_witnesses(tmp: Path, count: int) -> list[WitnessProc]:
    found = []
    for i in range(1, count + 1):
        signer = Cosigner.generate(f"witness.example/w{i}")
        key, pub = tmp / f"w{i}.key", tmp / f"w{i}.pub"
        key.write_text(signer.encode() + "\n")
        pub.write_text(signer.key.encode() + "\n")
        found.append(WitnessProc(f"w{i}", signer, key, pub, tmp / f"w{i}-state", free_port()))
    return found


@contextmanager
def running(witnesses: list[WitnessProc], logs: list[str]) -> Iterator[list[WitnessProc]]:
    try:
        for w in witnesses:
            w.start(logs)
        yield witnesses
    finally:
        for w in witnesses:
            w.kill()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until `url` answers at all (any status), or fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        return
    raise AssertionError(f"{url} did not answer within {timeout} s")


@contextmanager
def serving(ledger: str, tmp: Path, *args: str) -> Iterator[str]:
    """`adminchain serve` on a free port with --public-audit; yields its base URL."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "adminchain", "serve", "--ledger", ledger),
                *("--public-audit", "--listen", f"127.0.0.1:{port}", *args),
            ],
            cwd=REPO,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def wait_checkpoint(url: str, size: int, timeout: float = 60) -> str:
    """The server's /checkpoint once it is of `size`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/checkpoint", timeout=10)
        if response.status_code == 200 and response.text.split("\n")[1] == str(size):
            return response.text
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of size {size} published within {timeout} s")


def go_client(tmp: Path) -> Path:
    """The Go tlog client, built; skips (fails under CI) without Go and x/mod."""
    go = shutil.which("go")
    problem = None
    if go is None:
        problem = "Go is not installed (apt-get install golang-go golang-golang-x-mod-dev)"
    elif not (Path(GOPATH) / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        problem = "golang.org/x/mod is not installed (apt-get install golang-golang-x-mod-dev)"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI must run the Go client test: {problem}")
        pytest.skip(problem)
    assert go is not None
    binary = tmp / "tlogclient"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": str(tmp / "gocache")}
    subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=GO_CLIENT, env=env, check=True, timeout=300
    )
    return binary


def run_go(binary: Path, url: str, log_vkey: str, witness_vkeys: list[str], quorum: int,
           old: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = [str(binary), url, log_vkey, ",".join(witness_vkeys) or "-", str(quorum)]
    if old is not None:
        args.append(str(old))
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def go_result(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    value: dict[str, object] = json.loads(result.stdout)
    return value
