"""Commands for running the ledger as a network service: serve, token (SPEC-server §7)."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime

import click

from adminchain import render
from adminchain.cli import (
    emit_json,
    ledger_options,
    main,
    open_ledger,
    parse_duration,
    require_local,
)
from ledger.errors import UsageError

MIB = 1024 * 1024


def _size(text: str) -> int:
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit() or int(number) == 0:
        raise UsageError(f"--max-body: {text!r} is not a size (e.g. 16MiB, 512k)")
    return int(number) * factor


@main.command()
@click.option(
    "--listen",
    default="127.0.0.1:8470",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen (port 0: any free port, printed at start).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS private key.")
@click.option(
    "--checkpoint-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="ADMINCHAIN_CHECKPOINT_KEY",
    help="Sign checkpoints with this key (`adminchain keygen`).",
)
@click.option(
    "--checkpoint-every",
    default="10s",
    show_default=True,
    metavar="DURATION",
    help="With --checkpoint-key: publish a signed checkpoint this often while the log grows.",
)
@click.option(
    "--witness",
    "witness_urls",
    multiple=True,
    metavar="URL=KEY",
    help="A witness that must cosign each published checkpoint (C2SP tlog-witness).",
)
@click.option(
    "--quorum",
    type=click.IntRange(min=1),
    help="Publish a checkpoint only with this many witness cosignatures (default: all).",
)
@click.option("--public-audit", is_flag=True, help="Serve checkpoints and tiles without a token.")
@click.option("--max-body", default="16MiB", show_default=True, help="Largest request body.")
@click.option("--max-events", default=100_000, show_default=True, help="Most events in one append.")
@click.option(
    "--request-timeout",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Longest a request may take in the ledger.",
)
@click.option(
    "--max-subscriptions",
    default=1024,
    show_default=True,
    help="Most open /v1/subscribe streams (more get 503).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=64),
    help="Server processes on this host (one per core serves the most requests).",
)
@click.option(
    "--heartbeat",
    default=15.0,
    hidden=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between subscription heartbeats.",
)
@ledger_options
def serve(
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    checkpoint_key: str | None,
    checkpoint_every: str,
    witness_urls: tuple[str, ...],
    quorum: int | None,
    public_audit: bool,
    max_body: str,
    max_events: int,
    request_timeout: str,
    max_subscriptions: int,
    workers: int,
    heartbeat: float,
    ledger: str,
    as_json: bool,
) -> None:
    """Serve the ledger over HTTP/JSON to loops, services and the CLI on other hosts.

    Clients authenticate with bearer tokens (`adminchain token create`). Logs are JSON lines on
    stderr; the first one names the URL. SIGTERM or Ctrl-C stops it gracefully. The API is
    described at /openapi.json; see docs/server.md.

    \b
    Example:
      adminchain token create reconciler --role loop
      adminchain serve --listen 0.0.0.0:8470 --ledger ./adminchain.lmdb
    """
    require_local(ledger, "serve")
    # open it once here: a ledger that cannot be opened is one clear error, not a server whose
    # every worker fails to start (closed again before any worker is forked)
    open_ledger(ledger, create=True).close()
    timeout = parse_duration(request_timeout)
    if timeout is None or timeout.total_seconds() <= 0:
        raise UsageError(f"--request-timeout: {request_timeout!r} is not a duration (e.g. 30s)")
    if max_events < 1 or max_subscriptions < 0:
        raise UsageError("--max-events must be at least 1 and --max-subscriptions at least 0")
    metrics_dir = None
    if workers > 1:
        # prometheus-client's multiprocess mode must be chosen before it is first imported
        metrics_dir = tempfile.mkdtemp(prefix="adminchain-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from adminchain.server.app import ServerConfig  # noqa: PLC0415
    from adminchain.server.publish import publisher_from  # noqa: PLC0415
    from adminchain.server.run import serve as run  # noqa: PLC0415
    from adminchain.server.tiles import TILE_ROUTES  # noqa: PLC0415

    try:
        publisher = publisher_from(checkpoint_key, checkpoint_every, witness_urls, quorum)
        config = ServerConfig(
            ledger=ledger,
            max_body=_size(max_body),
            max_events=max_events,
            request_timeout=timeout.total_seconds(),
            max_subscriptions=max_subscriptions,
            heartbeat=heartbeat,
            public_audit=public_audit,
            # with witnesses, only the publisher signs: every stored checkpoint is cosigned
            checkpoint_key=None if witness_urls else checkpoint_key,
            extra_routes=TILE_ROUTES,
            background=(publisher.start,) if publisher else (),
            workers=workers,
        )
        run(config, listen, tls_cert=tls_cert, tls_key=tls_key, workers=workers)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@main.group()
def token() -> None:
    """Bearer tokens for the server: create, list, revoke (kept hashed in the ledger).

    Roles: reader (status, history, subscribe), loop (reader + loop events), operator (reader +
    operator and loop events, as the token's name), auditor (reader + log, checkpoints, proofs,
    tiles), metrics (/metrics), admin (everything). Manage tokens only with direct access to the
    ledger; every server over it sees a change within 5 seconds.

    \b
    Example:
      adminchain token create loop-1 --role loop --expires 30d
      adminchain token list
    """


@token.command("create")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["reader", "loop", "operator", "auditor", "metrics", "admin"]),
    help="What the token may do.",
)
@click.option("--expires", metavar="DURATION", help="Expire after this long (e.g. 90d).")
@ledger_options
def token_create(name: str, role: str, expires: str | None, ledger: str, as_json: bool) -> None:
    """Create a token for NAME and print it (once: the ledger keeps only its hash).

    An operator token's NAME is the actor its operator events are recorded under.

    \b
    Example:
      adminchain token create alice --role operator --expires 90d
    """
    from adminchain.server.tokens import create_token  # noqa: PLC0415

    lifetime = None
    if expires is not None:
        lifetime = parse_duration(expires)
        if lifetime is None or lifetime.total_seconds() <= 0:
            raise UsageError(f"--expires: {expires!r} is not a duration (e.g. 90d, 12h)")
    require_local(ledger, "token create")
    secret, record = create_token(open_ledger(ledger), name, role, lifetime)
    if as_json:
        emit_json(
            {
                "name": record.name,
                "role": record.role,
                "token": secret,
                "expires": record.expires_at,
            }
        )
        return
    click.echo(secret)
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M}Z" if record.expires_at else ""
    click.echo(f"token {record.name!r} ({record.role}{until}); shown once: store it now", err=True)


@token.command("list")
@ledger_options
def token_list(ledger: str, as_json: bool) -> None:
    """List the tokens (names, roles, expiry and revocation; never the tokens).

    \b
    Example:
      adminchain token list --json
    """
    from adminchain.server.tokens import list_tokens  # noqa: PLC0415

    now = datetime.now(UTC)
    require_local(ledger, "token list")
    records = list_tokens(open_ledger(ledger, create=False))
    if as_json:
        emit_json([r.to_json(now) for r in records])
        return
    if not records:
        render.console.print(
            "no tokens (create one with `adminchain token create NAME --role ROLE`)"
        )
    for r in records:
        state = "active" if r.active(now) else ("revoked" if r.revoked_at else "expired")
        until = f" expires {r.expires_at:%Y-%m-%d %H:%M}Z" if r.expires_at else ""
        render.console.print(f"{r.name:<24} {r.role:<9} {state}{until}", highlight=False)


@token.command("revoke")
@click.argument("name")
@ledger_options
def token_revoke(name: str, ledger: str, as_json: bool) -> None:
    """Revoke NAME's token: every server refuses it within 5 seconds.

    \b
    Example:
      adminchain token revoke loop-1
    """
    from adminchain.server.tokens import revoke_token  # noqa: PLC0415

    require_local(ledger, "token revoke")
    record = revoke_token(open_ledger(ledger, create=False), name)
    if as_json:
        emit_json(record.to_json(datetime.now(UTC)))
    else:
        render.console.print(f"revoked token {record.name!r}")
