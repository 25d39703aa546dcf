"""Serving the application with uvicorn: the listening socket, TLS, worker processes, graceful
shutdown.

SIGTERM or SIGINT: stop accepting, end the subscriptions (their clients resume with
`Last-Event-ID`), let in-flight requests finish, close the ledger, exit 0.

With ``--workers N`` (N > 1) the parent binds N listening sockets to the address, with
SO_REUSEPORT, and forks N worker processes, each accepting on its own socket and each a whole
server over the same ledger (as several servers share one PostgreSQL ledger; on LMDB, writers
in several processes are serialised by LMDB's own lock and each append folds into the shared
views in its own transaction). Python runs one thread at a time per process, so this is how one
host's cores serve more requests. The kernel spreads new connections over the sockets by a hash
of their addresses, about evenly; on one shared socket, whichever worker woke first accepted
every connection waiting, and 64 clients came out as 6 and 58, one worker saturated and its
sibling idle. A restarted worker takes its socket over, with the connections that queued
meanwhile. Worker 0 alone runs the background jobs (checkpoint publishing). Each worker rings
the others' bell after its commits (`adminchain.server.siblings`), so a subscriber on one sees
what another appended at once.
The parent only supervises: it forwards SIGTERM, restarts a worker that dies, and exits 0 once
every worker has stopped gracefully. uvicorn's own `--workers` re-imports the application in
spawned processes and gives them no index, which worker 0 needs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
import traceback
from types import FrameType
from typing import Any, Final

import uvicorn

from adminchain.server.access import log_event
from adminchain.server.app import ServerConfig, create_app
from adminchain.server.siblings import bells
from ledger.errors import UsageError

__all__ = ["parse_listen", "serve"]

GRACE_SECONDS = 30
RESTART_DELAY: Final = 1.0
"""Seconds before a worker that died is started again."""
EARLY_DEATHS: Final = 3
"""A worker dying this many times in a row within `EARLY_SECONDS` of its start ends the server
(it cannot start: a bad ledger, a bad key), instead of restarting it forever."""
EARLY_SECONDS: Final = 10.0


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
    workers: int = 1,
) -> None:
    """Serve `config.ledger` on `listen` until SIGTERM or SIGINT, in `workers` processes."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = _bound(family, host, port, shared=False)
        bound_port = sock.getsockname()[1]
        sockets = [sock]
        if workers > 1:  # one socket per worker, on one port (the module's docstring)
            sock.close()
            sockets = [_bound(family, host, bound_port, shared=True) for _ in range(workers)]
        for each in sockets:
            each.listen(2048)
    except OSError as e:
        raise UsageError(f"--listen {listen}: cannot listen there ({e.strerror})") from e
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log_event(
        event="listening",
        url=f"{scheme}://{shown}:{bound_port}",
        ledger=config.ledger,
        workers=workers,
    )
    if workers == 1:
        _serve_one(config, sockets[0], tls_cert, tls_key)
    else:
        code = _Supervisor(config, sockets, tls_cert, tls_key, workers).run()
        if code:
            log_event(event="stopped", status=code)
            raise SystemExit(code)
    log_event(event="stopped")


def _bound(family: int, host: str, port: int, *, shared: bool) -> socket.socket:
    """A socket bound to (host, port); `shared`: one of several on that port (SO_REUSEPORT).

    The first socket is never shared: bound alone, it finds a port in use by anybody (another
    server of the same user included, which SO_REUSEPORT would silently join) and picks the
    port for ``:0``; with ``--workers`` it gives way to the workers' sockets on that port."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _serve_one(
    config: ServerConfig, sock: socket.socket, tls_cert: str | None, tls_key: str | None
) -> None:
    """One server process on the bound socket, until it is told to stop."""
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
    server.run(sockets=[sock])
    if not server.started:  # the application failed to start (its error is logged)
        raise SystemExit(1)


def _stop_before_serving(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class _Supervisor:
    """The parent of `workers` forked server processes, each on its own socket (one port)."""

    def __init__(
        self,
        config: ServerConfig,
        sockets: list[socket.socket],
        tls_cert: str | None,
        tls_key: str | None,
        workers: int,
    ) -> None:
        self.config = config
        self.sockets = sockets
        """Kept open here: a restarted worker accepts what queued on its socket meanwhile."""
        self.tls = (tls_cert, tls_key)
        self.workers = workers
        self.bells = bells(workers)
        """Made once here, so that a restarted worker hears and rings the same pipes."""
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it last started
        self.early: dict[int, int] = {}  # worker index -> early deaths in a row
        self.stopping = False
        self.failed = 0

    def run(self) -> int:
        """Start the workers, supervise them until they have all stopped; the exit status."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.workers):
            self._spawn(index)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    self.failed = self.failed or 1
                continue
            log_event(event="worker exited", worker=index, pid=pid, status=code)
            if time.monotonic() - self.started[index] < EARLY_SECONDS:
                self.early[index] = self.early.get(index, 0) + 1
            else:
                self.early[index] = 0
            if self.early[index] >= EARLY_DEATHS:
                log_event(event="worker cannot start; stopping", worker=index)
                self.failed = 1  # as one server that cannot start (the CLI's storage failure)
                self._stop(signal.SIGTERM, None)
                continue
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                self._spawn(index)
        return self.failed

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue

    def _spawn(self, index: int) -> None:
        sys.stderr.flush()
        # no signal between the fork and the worker's own handlers (it would run the parent's)
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            self.children[pid] = index
            self.started[index] = time.monotonic()
            return
        # the worker: its own process group (a terminal's Ctrl-C reaches the parent, which
        # stops the workers with SIGTERM), uvicorn's signal handling, and never the parent's code
        code = 0
        try:
            os.setpgid(0, 0)
            # told to stop before uvicorn takes the signals over (while the app is being
            # made): nothing is served yet, so stopping is graceful by definition
            signal.signal(signal.SIGTERM, _stop_before_serving)
            signal.signal(signal.SIGINT, _stop_before_serving)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            config = self.config if index == 0 else dataclasses.replace(self.config, background=())
            config = dataclasses.replace(config, worker=index, siblings=self.bells[index])
            for other, sock in enumerate(self.sockets):
                if other != index:
                    sock.close()
            _serve_one(config, self.sockets[index], *self.tls)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001  a worker reports its failure and exits non-zero
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
