"""Serving the application with uvicorn: the listening socket, TLS, graceful shutdown.

SIGTERM or SIGINT: stop accepting, end the subscriptions (their clients resume with
`Last-Event-ID`), let in-flight requests finish, close the ledger, exit 0.
"""

from __future__ import annotations

import socket
from types import FrameType
from typing import Any

import uvicorn

from adminchain.server.access import log_event
from adminchain.server.app import ServerConfig, create_app
from ledger.errors import UsageError

__all__ = ["parse_listen", "serve"]

GRACE_SECONDS = 30


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8470`` for IPv6) as a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8470)")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Server(uvicorn.Server):
    """uvicorn's server, ending open subscriptions as soon as a shutdown is asked for."""

    app_ref: Any = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        server = getattr(getattr(self.app_ref, "state", None), "server", None)
        if server is not None:
            server.hub.draining()
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has shut down; a graceful stop exits 0 instead
        self._captured_signals.clear()


def serve(
    config: ServerConfig,
    listen: str,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve `config.ledger` on `listen` until SIGTERM or SIGINT."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise UsageError(f"--listen {listen}: cannot listen there ({e.strerror})") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        timeout_graceful_shutdown=GRACE_SECONDS,
        timeout_keep_alive=30,
        backlog=2048,
    )
    server = _Server(uv_config)
    server.app_ref = app
    bound_port = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log_event(event="listening", url=f"{scheme}://{shown}:{bound_port}", ledger=config.ledger)
    server.run(sockets=[sock])
    log_event(event="stopped")
