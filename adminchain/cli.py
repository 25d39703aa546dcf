"""The `adminchain` command: a thin layer over the library (SPEC §5).

Every command maps to one library call. One handler (`AdminGroup.invoke`) turns library errors
into a message on stderr and an exit status: 0 success; 1 verification failure, replay divergence
or a storage failure; 2 bad usage or bad input (nothing appended); 3 a strict append refused.
With ``--json``, stdout carries only the machine-readable output.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
import msgspec

from ledger.errors import (
    InvalidEventError,
    LedgerError,
    NotFoundError,
    ProofError,
    StrictRefusedError,
    UsageError,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

F = TypeVar("F", bound=Callable[..., Any])
_json = msgspec.json.Encoder()


def exit_status(error: LedgerError) -> int:
    """The exit status SPEC §5 gives to a library error."""
    if isinstance(error, InvalidEventError | UsageError | NotFoundError):
        return EXIT_USAGE
    if isinstance(error, StrictRefusedError):
        return EXIT_REFUSED
    return EXIT_FAILED


class AdminGroup(click.Group):
    """The one place library errors become messages and exit statuses — never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            hint = _HINTS.get(type(e), "")
            click.secho(f"error: {e}", err=True, fg="red")
            if hint:
                click.echo(f"hint: {hint}", err=True)
            ctx.exit(exit_status(e))
        except OSError as e:
            click.secho(f"error: {e.strerror or e} ({e.filename or 'I/O'})", err=True, fg="red")
            ctx.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


_HINTS: dict[type[LedgerError], str] = {
    InvalidEventError: "fix that line and append the batch again; nothing was stored",
    StrictRefusedError: "check `adminchain status`; nothing was stored",
    ProofError: "the proof or checkpoint does not match; it may have been altered",
}


def emit_json(value: object) -> None:
    """Write one JSON document (and a newline) to stdout."""
    sys.stdout.buffer.write(_json.encode(value) + b"\n")
    sys.stdout.flush()


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    """Stop with a message on stderr and an exit status."""
    click.secho(f"error: {message}", err=True, fg="red")
    raise SystemExit(status)


def ledger_options(func: F) -> F:
    """`--ledger` and `--json`, taken by every command."""
    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Machine-readable output on stdout (SPEC §5), nothing else.",
    )(func)
    return click.option(
        "--ledger",
        envvar="ADMINCHAIN_LEDGER",
        default="./adminchain.lmdb",
        show_default=True,
        metavar="PATH|URL",
        help="Ledger directory (embedded LMDB) or postgresql:// URL. Env: ADMINCHAIN_LEDGER.",
    )(func)


def actor_option(func: F) -> F:
    """`--actor` (default: the login name) and `--strict`, taken by operator shortcuts."""
    func = click.option(
        "--strict",
        is_flag=True,
        help="Refuse (exit 3, nothing stored) if the current projection would reject it.",
    )(func)
    return click.option(
        "--actor",
        default=lambda: os.environ.get("ADMINCHAIN_ACTOR") or _login(),
        show_default="login name",
        help="Who is doing this (recorded in the event).",
    )(func)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_lines(source: click.File | Any) -> Iterator[bytes]:
    """Lines of a binary stream, without their newline."""
    for raw in source:
        yield raw.rstrip(b"\r\n")


@click.group(cls=AdminGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adminchain")
def main() -> None:
    """adminchain: an event-sourced, tamper-evident admin ledger for clusters.

    Operators and control loops append events; projections fold them into the state services
    query (maintenance, detachment, recovery, membership, broadcasts); auditors replay, verify
    and prove.

    \b
    Example:
      adminchain maintenance enter node-7 --deadline 30m --reason "kernel upgrade"
      adminchain status maintenance node-7
    """
