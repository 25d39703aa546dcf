"""Real `adminchain serve` processes for tests: started on an ephemeral port, stopped with SIGTERM.

`start_server(target, tmp_path)` runs ``python -m adminchain serve --listen 127.0.0.1:0`` over a
ledger, waits for its JSON "listening" line on stderr (kept in a file, so a chatty server never
blocks on a full pipe) and for ``/readyz``, and returns a `Served` with its URL. `make_tokens`
creates one token per role through the library, as `adminchain token create` does.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adminchain.server.tokens import ROLES, create_token
from ledger import Ledger

__all__ = ["Served", "make_tokens", "self_signed_certificate", "start_server"]

START_TIMEOUT = 30.0


@dataclass
class Served:
    """One running server."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    target: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = "admin", **kwargs: Any) -> httpx.Client:
        """An HTTP client carrying the token of `role` (none with None)."""
        headers = {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)

    def log_lines(self) -> list[dict[str, Any]]:
        """The structured log lines the server wrote so far."""
        lines = []
        for raw in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Send `sig` and wait for the process; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def make_tokens(target: str, prefix: str = "") -> dict[str, str]:
    """A fresh token for every role (named after the role, with `prefix`), by role."""
    with Ledger.open(target) as ledger:
        return {role: create_token(ledger, f"{prefix}{role}", role)[0] for role in ROLES}


def start_server(
    target: str,
    workdir: Path,
    *extra: str,
    tokens: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> Served:
    """Start `adminchain serve` over `target` and wait until it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"server-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        "-m",
        "adminchain",
        "serve",
        "--ledger",
        target,
        "--listen",
        "127.0.0.1:0",
        *extra,
    ]
    with log.open("wb") as err:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    served = Served(process, "", log, target, dict(tokens or {}))
    deadline = time.monotonic() + START_TIMEOUT
    while not served.url:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited {process.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            served.stop(signal.SIGKILL)
            raise RuntimeError(f"the server did not start: {log.read_text()}")
        for line in served.log_lines():
            if line.get("event") == "listening":
                served.url = line["url"]
        time.sleep(0.05)
    while True:
        try:
            if httpx.get(f"{served.url}/readyz", timeout=5, verify=verify).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            served.stop(signal.SIGKILL)
            raise RuntimeError(f"the server never became ready: {log.read_text()}")
        time.sleep(0.05)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), as a private CA would issue."""
    import datetime as dt  # noqa: PLC0415
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
