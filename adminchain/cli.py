"""The `adminchain` command: a thin layer over the library (SPEC §5).

Every command maps to one library call. One handler (`AdminGroup.invoke`) turns library errors
into a message on stderr and an exit status: 0 success; 1 verification failure, replay divergence
or a storage failure; 2 bad usage or bad input (nothing appended); 3 a strict append refused.
With ``--json``, stdout carries only the machine-readable output.
"""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any, TypeVar

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


_HINTS: dict[type[LedgerError], str] = {
    InvalidEventError: "fix that line and append again; nothing was stored",
    StrictRefusedError: "see `adminchain status` and `adminchain history`; nothing was stored",
    ProofError: "the file does not verify: it was altered, or the key is not the signer's",
}


class AdminGroup(click.Group):
    """The one place library errors become messages and exit statuses — never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as e:
            click.secho(f"error: {e}", err=True, fg="red")
            hint = next((h for cls, h in _HINTS.items() if isinstance(e, cls)), "")
            if hint:
                click.echo(f"hint: {hint}", err=True)
            ctx.exit(exit_status(e))
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            click.secho(f"error: {e.strerror or e}{where}", err=True, fg="red")
            ctx.exit(EXIT_FAILED)
        except TimeoutError as e:
            click.secho(f"error: {e}", err=True, fg="red")
            ctx.exit(EXIT_FAILED)


def emit_json(value: object) -> None:
    """Write one JSON document (and a newline) to stdout."""
    sys.stdout.buffer.write(_json.encode(value) + b"\n")
    sys.stdout.flush()


def ledger_options(func: F) -> F:
    """`--ledger` and `--json`, taken by every command."""
    func = click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable output on stdout, nothing else."
    )(func)
    return click.option(
        "--ledger",
        envvar="ADMINCHAIN_LEDGER",
        default="./adminchain.lmdb",
        show_default=True,
        metavar="PATH|URL",
        help="Ledger directory (embedded LMDB) or postgresql:// URL [env: ADMINCHAIN_LEDGER].",
    )(func)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def operator_options(func: F) -> F:
    """`--actor` (default: the login name), `--strict` and `--sign-key`, on operator shortcuts."""
    func = click.option(
        "--sign-key",
        type=click.Path(exists=True, dir_okay=False),
        envvar="ADMINCHAIN_SIGN_KEY",
        help="Sign the event with this operator key file (from `adminchain keygen`).",
    )(func)
    func = click.option(
        "--strict",
        is_flag=True,
        help="Refuse (exit 3, nothing stored) if the current projection would reject it.",
    )(func)
    return click.option(
        "--actor",
        envvar="ADMINCHAIN_ACTOR",
        default=_login,
        show_default="login name; with --sign-key, the key's name",
        help="Who is doing this; recorded in the event [env: ADMINCHAIN_ACTOR].",
    )(func)


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta | None:
    """`30m`, `2h`, `1h30m`, `45s`, `500ms`, `2d` as a timedelta; None if it is not one."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def parse_time(text: str, option: str) -> datetime:
    """An RFC 3339 time (a time zone is required) as an aware UTC datetime."""
    try:
        value = msgspec.json.decode(_json.encode(text), type=datetime)
    except msgspec.ValidationError:
        raise UsageError(
            f"{option}: {text!r} is not an RFC 3339 time (e.g. 2026-11-25T14:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise UsageError(f"{option}: {text!r} needs a time zone (add Z for UTC)")
    return value.astimezone(UTC)


def parse_deadline(text: str, now: datetime) -> datetime:
    """A deadline: an RFC 3339 time, or a duration from now (`30m`, `2h`)."""
    duration = parse_duration(text)
    if duration is not None:
        return now + duration
    return parse_time(text, "--deadline")


def parse_as_of(text: str | None, option: str = "--as-of") -> tuple[int | None, datetime | None]:
    """``--as-of`` (or `option`): a position (an integer) or a recorded time."""
    if text is None:
        return None, None
    if text.isdigit():
        return int(text), None
    return None, parse_time(text, option)


def read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of a binary stream, without their line ending."""
    for raw in stream:
        yield raw.rstrip(b"\r\n")


def open_ledger(target: str, *, create: bool = True) -> Any:
    """The ledger named by ``--ledger`` (imported lazily so that ``--help`` stays fast)."""
    from ledger.ledger import Ledger  # noqa: PLC0415

    return Ledger.open(target, create=create)


def open_views(target: str, *, create: bool = False) -> Any:
    """The ledger named by ``--ledger`` with its stored projections."""
    from adminchain.render import catch_up_progress  # noqa: PLC0415
    from projections.api import Views  # noqa: PLC0415

    return Views(open_ledger(target, create=create), progress=catch_up_progress())


@click.group(cls=AdminGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adminchain")
def main() -> None:
    """adminchain: an event-sourced, tamper-evident admin ledger for clusters.

    Operators and control loops append events; projections fold them into the state that
    services query (maintenance, detachment, recovery, membership, broadcasts); auditors
    replay, verify and prove.

    \b
    Examples:
      adminchain demo
      adminchain maintenance enter node-7 --deadline 30m --reason "kernel upgrade"
      adminchain status maintenance node-7
      adminchain verify
    """


from adminchain import commands_audit, commands_log, commands_ops, demo  # noqa: E402, F401  registers commands
