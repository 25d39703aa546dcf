"""`adminchain witness`: run a C2SP tlog-witness, make its key (SPEC-server §9).

The protocol is `ledger.witness.Witness`; this module puts it behind HTTP (Litestar, served by
uvicorn): ``POST /add-checkpoint`` and the monitoring read ``GET /<sha256(origin) hex>/checkpoint``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from adminchain import render
from adminchain.cli import emit_json, ledger_options, main, open_ledger
from ledger.errors import UsageError


def create_witness_app(witness: Any) -> Any:
    """The witness's ASGI app over a `ledger.witness.Witness`."""
    from litestar import Litestar, Response, get, post  # noqa: PLC0415

    @post("/add-checkpoint", sync_to_thread=True)
    def add_checkpoint(body: bytes) -> Response[str]:
        answer = witness.add_checkpoint(body)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    @get("/{origin_hash:str}/checkpoint", sync_to_thread=True)
    def checkpoint(origin_hash: str) -> Response[str]:
        for origin in witness.logs:
            if witness.checkpoint_file(origin).name.startswith(origin_hash + "."):
                note = witness.latest(origin)
                if note is not None:
                    return Response(note, media_type="text/plain; charset=utf-8")
        return Response("no checkpoint cosigned for that log\n", status_code=404)

    return Litestar(
        route_handlers=[add_checkpoint, checkpoint],
        openapi_config=None,
        signature_namespace={"Response": Response},
    )


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _read_key(value: str) -> str:
    """A key given inline or as a file holding it."""
    if os.path.isfile(value):
        return Path(value).read_text(encoding="utf-8").strip()
    return value


def parse_logs(values: tuple[str, ...]) -> dict[str, list[Any]]:
    """``ORIGIN=VERIFIER_KEY`` options (the key inline or a .pub file) by origin."""
    from ledger.notes import Verifier  # noqa: PLC0415

    logs: dict[str, list[Any]] = {}
    for value in values:
        origin, sep, key = value.partition("=")
        if not sep or not origin or not key:
            raise UsageError(f"--log {value!r}: expected ORIGIN=VERIFIER_KEY")
        logs.setdefault(origin, []).append(Verifier.parse(_read_key(key)))
    return logs


@main.group()
def witness() -> None:
    """Run a C2SP tlog-witness that cosigns the checkpoints of logs it follows.

    A witness remembers the latest checkpoint it cosigned for each log and cosigns a new one
    only with a valid consistency proof from it: a log that forks or rolls back is refused.

    \b
    Example:
      adminchain witness keygen witness.example/w1 --out w1
      adminchain witness serve --key w1.key --state ./w1 --log ORIGIN=auditor.pub
    (ORIGIN: the first line of the log's checkpoint, `adminchain checkpoint`)
    """


@witness.command("origin")
@ledger_options
def witness_origin(ledger: str, as_json: bool) -> None:
    """Print the ledger's checkpoint origin: what a witness's --log ORIGIN=KEY names.

    \b
    Example:
      adminchain witness serve --key w1.key --state w1 --log "$(adminchain witness origin)=log.pub"
    """
    origin = open_ledger(ledger, create=False).origin()
    if as_json:
        emit_json({"origin": origin})
    else:
        click.echo(origin)


@witness.command("keygen")
@click.argument("name")
@click.option("--out", "prefix", help="File prefix (default: NAME's last part).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def witness_keygen(name: str, prefix: str | None, as_json: bool) -> None:
    """Make a witness key pair (Ed25519 cosignature/v1): PREFIX.key (0600) and PREFIX.pub.

    \b
    Example:
      adminchain witness keygen witness.example/w1 --out w1
    """
    from ledger.cosign import generate_cosigner_key  # noqa: PLC0415

    base = Path(prefix or name.rsplit("/", 1)[-1])
    private, public = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists; remove it first")
    signer, verifier = generate_cosigner_key(name)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(signer + "\n")
    public.write_text(verifier + "\n", encoding="utf-8")
    if as_json:
        emit_json({"name": name, "private_key_file": str(private), "public_key": verifier})
    else:
        render.console.print(f"private key: {private} (keep it secret)\npublic key:  {verifier}")


@witness.command("serve")
@click.option(
    "--log",
    "logs",
    multiple=True,
    required=True,
    metavar="ORIGIN=VERIFIER_KEY",
    help="A log to witness: its checkpoint origin and its public key (inline or a .pub file).",
)
@click.option(
    "--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
    help="The witness's private key file (`adminchain witness keygen`).",
)  # fmt: skip
@click.option("--listen", default="127.0.0.1:8471", show_default=True, metavar="HOST:PORT")
@click.option(
    "--state", "state_dir", required=True, type=click.Path(file_okay=False),
    help="Directory for the latest cosigned checkpoint of each log (kept durably).",
)  # fmt: skip
def witness_serve(logs: tuple[str, ...], key_path: str, listen: str, state_dir: str) -> None:
    """Serve POST /add-checkpoint (c2sp.org/tlog-witness) until SIGTERM or SIGINT.

    \b
    Example:
      adminchain witness serve --key w1.key --state ./w1 --listen 127.0.0.1:8471 \\
          --log adminchain.local/1b2c…=auditor.pub
    """
    import uvicorn  # noqa: PLC0415

    from ledger.cosign import Cosigner  # noqa: PLC0415
    from ledger.witness import Witness  # noqa: PLC0415

    host, port = _listen(listen)
    signer = Cosigner.parse(Path(key_path).read_text(encoding="utf-8"))
    state = Witness(parse_logs(logs), signer, Path(state_dir))
    try:
        click.echo(f"witness {signer.key.encode()} listening on http://{host}:{port}", err=True)
        uvicorn.run(create_witness_app(state), host=host, port=port, log_level="warning")
    finally:
        state.close()
