"""Real `adminchain serve` processes for tests (SPEC-server §7), on ephemeral ports.

    with served(ledger_target, "--public-audit") as server:
        httpx.get(server.url + "/healthz")

`start_server` runs ``python -m adminchain serve --ledger TARGET --listen 127.0.0.1:0 EXTRA…``
with stderr to a file, and returns once the JSON ``listening`` line names its URL. `stop` sends
SIGTERM and waits for the exit status (the process is killed if it does not end). `make_token`
creates a bearer token with the CLI, as an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Served", "make_token", "served", "start_server"]

STARTUP_LIMIT = 60.0
"""Seconds a server may take to print its URL (a loaded CI machine is slow; not a measure)."""


@dataclass
class Served:
    """One running server: its URL, its process and the file its stderr (JSON logs) goes to."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    returncode: int | None = field(default=None)

    def log_lines(self) -> list[dict[str, object]]:
        """The server's JSON log lines so far."""
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Ask the server to stop (SIGTERM) and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    for name in ("ADMINCHAIN_TOKEN", "ADMINCHAIN_LEDGER", "ADMINCHAIN_CHECKPOINT_KEY"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def start_server(
    ledger: str | Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> Served:
    """Start ``adminchain serve`` for `ledger` with `extra` arguments; returns once it listens."""
    directory = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="serve-"))
    log_path = directory / f"serve-{time.monotonic_ns()}.log"
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adminchain",
                "serve",
                "--ledger",
                str(ledger),
                "--listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=_env(env),
            cwd=cwd,
        )
    deadline = time.monotonic() + STARTUP_LIMIT
    served = Served("", process, log_path)
    while time.monotonic() < deadline:
        for line in served.log_lines():
            if line.get("event") == "listening":
                served.url = str(line["url"])
                return served
        if process.poll() is not None:
            break
        time.sleep(0.05)
    served.stop()
    raise RuntimeError(
        f"adminchain serve did not start (exit {process.returncode}):\n"
        + log_path.read_text(encoding="utf-8", errors="replace")
    )


@contextmanager
def served(
    ledger: str | Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> Iterator[Served]:
    """A server for `ledger` during the block, stopped (SIGTERM) after it."""
    server = start_server(ledger, *extra, env=env, cwd=cwd, log_dir=log_dir)
    try:
        yield server
    finally:
        server.stop()


def make_token(ledger: str | Path, name: str, role: str = "admin") -> str:
    """A new bearer token for `name` with `role`, made by ``adminchain token create``."""
    result = subprocess.run(
        [sys.executable, "-m", "adminchain", "token", "create", name, "--role", role,
         "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        env=_env(None),
        check=True,
    )
    return result.stdout.strip()
