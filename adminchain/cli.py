"""The `adminchain` command: a thin layer over the library (SPEC §5).

Every command maps to one library call. One handler (`AdminGroup.invoke`) turns library errors
into a message on stderr and an exit status: 0 success; 1 verification failure, replay divergence
or a storage failure; 2 bad usage or bad input (nothing appended); 3 a strict append refused.
With ``--json``, stdout carries only the machine-readable output.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, TypeVar

import click

from ledger.defaults import DEFAULT_LEDGER
from ledger.errors import (
    BackendUnavailableError,
    InvalidEventError,
    LedgerError,
    NotFoundError,
    ProofError,
    StrictRefusedError,
    UsageError,
)

__all__ = ["EXIT_FAILED", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130
"""Ctrl-C, as shells report a process ended by SIGINT (128 + 2)."""

F = TypeVar("F", bound=Callable[..., Any])


class StreamErrorsError(LedgerError):
    """``append --stream`` went on past bad lines (or, with --strict, refused ones): the exit
    status says so — 2 if any line was bad, else 3 — once every other line was appended."""

    def __init__(self, bad: list[int], refused: list[int]) -> None:
        self.bad = bad
        self.refused = refused
        parts = [
            f"{what} {'line' if len(numbers) == 1 else 'lines'} {_numbers(numbers)}"
            for what, numbers in (("bad", bad), ("refused (--strict)", refused))
            if numbers
        ]
        count = len(bad) + len(refused)
        super().__init__(f"{count} input line{'s' * (count != 1)} not stored: {'; '.join(parts)}")


def _numbers(numbers: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def exit_status(error: LedgerError) -> int:
    """The exit status SPEC §5 gives to a library error."""
    if isinstance(error, StreamErrorsError):
        return EXIT_USAGE if error.bad else EXIT_REFUSED
    if isinstance(error, InvalidEventError | UsageError | NotFoundError):
        return EXIT_USAGE
    if isinstance(error, StrictRefusedError):
        return EXIT_REFUSED
    return EXIT_FAILED


_HINTS: dict[type[LedgerError], str] = {
    InvalidEventError: "fix that line and append again",
    StrictRefusedError: "see `adminchain status` and `adminchain history`",
    ProofError: "the file does not verify: it was altered, or the key is not the signer's",
}
_NOTHING_STORED_HINTS = (InvalidEventError, StrictRefusedError, StreamErrorsError)
"""Errors whose hint says what was stored: nothing, or what earlier lines stored (`STORED`)."""


class StoredSoFar:
    """What this process has appended so far: the one truth every message about it is built on
    (an error after some lines of ``--stream`` were stored, Ctrl-C)."""

    __slots__ = ("count", "first", "last")

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None

    def note(self, results: Iterable[Any]) -> None:
        """Count the new (non-duplicate) events among append results."""
        if hasattr(results, "span"):  # a big append's `ledger.bulk.BulkResult`: count and span
            bulk: Any = results  # (not imported here: start-up)
            span = bulk.span()
            if span is not None:
                self.count += bulk.stored
                self.first = span[0] if self.first is None else min(self.first, span[0])
                self.last = span[1] if self.last is None else max(self.last, span[1])
            return
        for result in results:
            if result.duplicate:
                continue
            self.count += 1
            position = result.position
            self.first = position if self.first is None else min(self.first, position)
            self.last = position if self.last is None else max(self.last, position)

    def describe(self) -> str:
        """``nothing was stored`` or ``N events (positions a-b) were stored``."""
        if self.count == 0:
            return "nothing was stored"
        if self.count == 1:
            return f"1 event (position {self.first}) was stored"
        return f"{self.count} events (positions {self.first}-{self.last}) were stored"


STORED = StoredSoFar()


class _Interrupt:
    """Whether Ctrl-C was pressed. Python can lose the KeyboardInterrupt of a SIGINT (raised
    inside a weakref callback or a destructor, it is only printed as "Exception ignored"), so
    the signal is also recorded here, and `check_interrupt` raises it again where it is safe."""

    seen = False


def _on_sigint(signum: int, frame: object) -> None:
    _Interrupt.seen = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C was pressed during this command (even if its exception was lost)."""
    return _Interrupt.seen


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (call it between units of work)."""
    if _Interrupt.seen:
        raise KeyboardInterrupt


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while a write is in flight, then raise it once the write has returned
    (and its results were noted in `STORED`): a message about what was stored is then true."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if not pending:
            click.echo("interrupt: finishing the write in progress…", err=True)
        pending.append(signum)
        _Interrupt.seen = True

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


@contextmanager
def until_interrupted() -> Iterator[None]:
    """For commands that run until Ctrl-C (``status --watch``, ``history --follow``): Ctrl-C
    ends the block normally (exit 0)."""
    with suppress(KeyboardInterrupt):
        yield
    _Interrupt.seen = False


def read_lines_interruptibly(stream: IO[bytes], poll: float = 0.25) -> Iterator[bytes]:
    """Lines of a binary stream as they arrive (for ``--stream``), checking for Ctrl-C at least
    every `poll` seconds while waiting, so that an interrupt is never left unanswered. A line
    longer than `ledger.codec.MAX_LINE_BYTES` is never held: its first bytes beyond the limit
    are given as the line (which `decode_line` refuses) and the rest of it is skipped."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        yield from read_lines(stream)
        return
    import select  # noqa: PLC0415

    from ledger.codec import MAX_LINE_BYTES  # noqa: PLC0415

    pending = b""
    skipping = False  # inside an overlong line, already given
    while True:
        ready, _, _ = select.select([fd], [], [], poll)
        check_interrupt()
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                continue
            chunk, skipping = chunk[end + 1 :], False
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line.rstrip(b"\r")
            check_interrupt()
        if len(pending) > MAX_LINE_BYTES + 1:
            yield pending[: MAX_LINE_BYTES + 2]  # too long: refused as such, not held
            pending, skipping = b"", True
    if pending and not skipping:
        yield pending.rstrip(b"\r")


class LazyGroup(click.Group):
    """A group whose commands live in modules imported only when a command is used (as click's
    documentation shows): ``--help`` and ``status`` do not pay for the audit or demo imports.

    `lazy` maps a command name to (module, one-line help); the module registers the command on
    `main` when imported. A new command module adds its names to `LAZY_COMMANDS`.
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            importlib.import_module(self.lazy[cmd_name][0])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                rows.append((name, command.get_short_help_str(limit)))
            elif name in self.lazy:
                text = click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit)
                rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class AdminGroup(LazyGroup):
    """The one place library errors become messages and exit statuses — never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
        try:
            result = super().invoke(ctx)
            check_interrupt()  # Ctrl-C whose exception Python lost on the way
        except LedgerError as e:
            click.secho(f"error: {e}", err=True, fg="red")
            hint = next((h for cls, h in _HINTS.items() if isinstance(e, cls)), "")
            if isinstance(e, _NOTHING_STORED_HINTS):
                if STORED.count and isinstance(e, InvalidEventError | StrictRefusedError):
                    hint = "fix that line, then append it and the lines after it"
                hint = f"{hint}; {STORED.describe()}" if hint else STORED.describe()
            elif STORED.count:  # e.g. a storage error in the middle of --stream
                hint = f"{hint}; {STORED.describe()}" if hint else STORED.describe()
            if hint:
                click.echo(f"hint: {hint}", err=True)
            ctx.exit(exit_status(e))
        except KeyboardInterrupt:
            how = " after " if STORED.count else ": "
            click.echo(f"\ninterrupted{how}{STORED.describe()}", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            click.secho(f"error: {e.strerror or e}{where}", err=True, fg="red")
            ctx.exit(EXIT_FAILED)
        except TimeoutError as e:
            click.secho(f"error: {e}", err=True, fg="red")
            ctx.exit(EXIT_FAILED)
        return result


def emit_json(value: object) -> None:
    """Write one JSON document (and a newline) to stdout."""
    import msgspec  # noqa: PLC0415  loaded by the ledger anyway; not needed for --help

    sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")
    sys.stdout.flush()


TOKEN_FILE = "adminchain.token_file"  # noqa: S105  a key of click's context meta
"""Where ``--token-file`` is kept (in the click context's `meta`) for `open_ledger`."""


def _keep_token_file(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[TOKEN_FILE] = value


_LEDGER_HELP = (
    "Ledger directory (embedded LMDB), postgresql:// URL or http(s):// server URL "
    "[env: ADMINCHAIN_LEDGER]."
)
_JSON_HELP = "Machine-readable output on stdout, nothing else."


def _global_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option (SPEC §5): given after the command it wins; else the value given before
    the command name (`adminchain --ledger L status`); else the environment or the default."""
    assert param.name is not None
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE:
        return value
    given = ctx.find_root().params.get(param.name)
    return value if given is None or given is False else given


def json_option(func: F) -> F:
    """`--json`, before or after the command name."""
    return click.option("--json", "as_json", is_flag=True, callback=_global_value, help=_JSON_HELP)(
        func
    )


def ledger_options(func: F) -> F:
    """`--ledger`, `--token-file` and `--json`, taken by every command (and `--ledger` and
    `--json` by `adminchain` itself)."""
    func = json_option(func)
    func = click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        envvar="ADMINCHAIN_TOKEN_FILE",
        expose_value=False,
        callback=_keep_token_file,
        help="With an http(s):// --ledger: the bearer token in this file (default: "
        "$ADMINCHAIN_TOKEN).",
    )(func)
    return click.option(
        "--ledger",
        envvar="ADMINCHAIN_LEDGER",
        default=DEFAULT_LEDGER,
        show_default=True,
        metavar="PATH|URL",
        callback=_global_value,
        help=_LEDGER_HELP,
    )(func)


def _login() -> str:
    import getpass  # noqa: PLC0415  only for operator commands

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
    try:
        return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))
    except OverflowError:
        detail = f"{text!r} is too long a duration (at most {timedelta.max.days} days)"
        raise UsageError(detail) from None


def parse_time(text: str, option: str) -> datetime:
    """An RFC 3339 time (a time zone is required) as an aware UTC datetime."""
    import msgspec  # noqa: PLC0415

    try:
        value = msgspec.json.decode(msgspec.json.encode(text), type=datetime)
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
        try:
            return now + duration
        except OverflowError:
            raise UsageError(f"--deadline: {text!r} from now is after the year 9999") from None
    return parse_time(text, "--deadline")


def parse_as_of(text: str | None, option: str = "--as-of") -> tuple[int | None, datetime | None]:
    """``--as-of`` (or `option`): a position (an integer) or a recorded time."""
    if text is None:
        return None, None
    if text.isdigit():
        return int(text), None
    return None, parse_time(text, option)


def read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of a binary stream, without their line ending (an endless line is refused)."""
    from ledger.codec import read_lines as bounded  # noqa: PLC0415

    return bounded(stream)


def write_file(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write a text file with exactly `mode`, whatever the umask (a public key, a checkpoint
    or a proof is readable by all and writable by its owner only; a private key is 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def is_remote(target: str) -> bool:
    """An ``http(s)://`` ``--ledger``: a server (SPEC-server §7.3)."""
    return target.startswith(("http://", "https://"))


def require_local(target: str, what: str) -> None:
    """Refuse (exit 2) a server URL where `what` needs direct access to the ledger."""
    if is_remote(target):
        raise UsageError(
            f"{what} needs direct access to the ledger (a directory or a postgresql:// URL), "
            f"not a server URL ({target})"
        )


def open_ledger(target: str, *, create: bool = True) -> Any:
    """The ledger named by ``--ledger`` (imported lazily so that ``--help`` stays fast).

    The one place the CLI opens a ledger: for an ``http(s)://`` URL, the
    `ledger.remote.RemoteLedger` of that server.
    """
    if is_remote(target):
        from ledger.remote import RemoteLedger, read_token  # noqa: PLC0415

        ctx = click.get_current_context(silent=True)
        token_file = ctx.meta.get(TOKEN_FILE) if ctx is not None else None
        token = read_token(token_file)
        if token is not None:  # for the second process of a long replay or verify
            os.environ["ADMINCHAIN_TOKEN"] = token
        return RemoteLedger.connect(target, token=token)
    from ledger.ledger import Ledger  # noqa: PLC0415

    try:
        log = Ledger.open(target, create=create)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith(("psycopg", "eventsourcing.postgres")):
            raise
        raise BackendUnavailableError(
            "PostgreSQL support is not installed (no module named "
            f"{e.name!r}); install it with: pip install 'adminchain[postgres]'"
        ) from e
    for notice in log.notices:  # e.g. the one-time move of trust into the log (SPEC-server §8)
        click.secho(f"note: {notice}", err=True, fg="yellow")
    return log


OUTAGE_PATIENCE = 600.0
"""Seconds of backend outage a long-running command (``append --stream``, ``catch-up
--follow``) rides out, saying so on stderr, before it gives up."""


def long_running(ledger: Any) -> None:
    """Make `ledger` ride out outages of its backend (PostgreSQL) for `OUTAGE_PATIENCE`."""
    ride_out = getattr(ledger.backend, "ride_out", None)
    if ride_out is not None:
        ride_out(OUTAGE_PATIENCE, lambda message: click.echo(f"warning: {message}", err=True))


def open_views(target: str, *, create: bool = False) -> Any:
    """The ledger named by ``--ledger`` with its stored projections (a server's, remotely);
    a long catch-up shows its progress on a terminal."""
    if is_remote(target):
        from projections.remote import RemoteViews  # noqa: PLC0415

        return RemoteViews(open_ledger(target))
    from projections.api import Views  # noqa: PLC0415

    return Views(open_ledger(target, create=create), progress=_catch_up_bar())


CATCH_UP_BAR_FROM: Final = 50_000
"""A catch-up this many events long or longer shows a progress bar (on a terminal)."""


def _catch_up_bar() -> Callable[[int, int], None]:
    """The progress of the views' catch-ups: a bar on stderr (`render.catch_up_progress`),
    loaded only once a long one is under way (a quick query never imports rich)."""
    bar: list[Callable[[int, int], None]] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            if total - done < CATCH_UP_BAR_FROM:
                return
            from adminchain.render import catch_up_progress  # noqa: PLC0415

            bar.append(catch_up_progress(least=0))
        bar[0](done, total)

    return progress


def _known_subjects(ctx: click.Context, incomplete: str) -> list[str]:
    """Subjects of the ledger the command line names, for shell completion (never creates)."""
    target = ctx.params.get("ledger") or ctx.find_root().params.get("ledger")
    try:
        views = open_views(str(target or DEFAULT_LEDGER))
        return [s for s in views.subjects() if s.startswith(incomplete)]
    except Exception:  # noqa: BLE001  completion must never fail loudly
        return []


def complete_subject(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of a SUBJECT (NODE, RUNNER, …): the subjects the ledger knows."""
    from click.shell_completion import CompletionItem  # noqa: PLC0415

    return [CompletionItem(s) for s in _known_subjects(ctx, incomplete)]


def complete_kind_or_subject(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of ``status KIND``: the kinds, then the subjects the ledger knows."""
    from click.shell_completion import CompletionItem  # noqa: PLC0415

    kinds = ("maintenance", "detachment", "recovery", "membership", "broadcasts", "policy")
    items = [CompletionItem(k, help="kind") for k in kinds if k.startswith(incomplete)]
    return items + [CompletionItem(s) for s in _known_subjects(ctx, incomplete)]


LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    # name: (the module that registers it, its help's first sentence; a test checks they match)
    "append": (
        "adminchain.commands_log",
        "Append JSON Lines events from FILE (or stdin) as one atomic batch.",
    ),
    "broadcast": (
        "adminchain.commands_ops",
        "Issue lifecycle broadcasts to backends.",
    ),
    "catch-up": (
        "adminchain.commands_log",
        "Bring the stored projections up to the end of the log (a projection runner).",
    ),
    "checkpoint": (
        "adminchain.commands_audit",
        "Record a checkpoint: tree size, root and projection digest, signed with --key.",
    ),
    "copy": (
        "adminchain.commands_log",
        "Copy the ledger at SOURCE into DESTINATION byte for byte: same positions, same root.",
    ),
    "demo": (
        "adminchain.demo",
        "Play a guided scenario on a fresh embedded ledger, narrated step by step.",
    ),
    "detach": (
        "adminchain.commands_ops",
        "Detach RUNNER by hand (reason: manual detachment).",
    ),
    "history": (
        "adminchain.commands_status",
        "Each event about SUBJECT with the verdict of every projection that folded it.",
    ),
    "keygen": (
        "adminchain.commands_audit",
        "Make an Ed25519 key pair NAME: PREFIX.key (private, 0600) and PREFIX.pub.",
    ),
    "log": (
        "adminchain.commands_log",
        "Print the log itself, for export and audit.",
    ),
    "maintenance": (
        "adminchain.commands_ops",
        "Put a node into maintenance, or take it out.",
    ),
    "policy": (
        "adminchain.commands_ops",
        "Tune the projections, for one subject or for all (`*`).",
    ),
    "prove": (
        "adminchain.commands_audit",
        "Write a self-contained proof that the event at POSITION is in the log.",
    ),
    "repair": (
        "adminchain.commands_audit",
        "Rebuild everything derived from the log: the indexes and the stored views.",
    ),
    "replay": (
        "adminchain.commands_audit",
        "Rebuild every projection from the log and print the audit.",
    ),
    "serve": (
        "adminchain.commands_server",
        "Serve the ledger over HTTP/JSON to loops, services and the CLI on other hosts.",
    ),
    "status": (
        "adminchain.commands_status",
        "Show projection state: KIND is maintenance, detachment, recovery, membership, "
        "broadcasts or policy.",
    ),
    "witness": (
        "adminchain.witness",
        "Run a C2SP tlog-witness that cosigns the checkpoints of logs it follows.",
    ),
    "token": (
        "adminchain.commands_server",
        "Bearer tokens for the server: create, list, revoke (kept hashed in the ledger).",
    ),
    "trust": (
        "adminchain.commands_audit",
        "Which operator keys are trusted: recorded in the log (TrustKey, RevokeKey events).",
    ),
    "verify": (
        "adminchain.commands_audit",
        "Recompute every leaf, the tree and the projection digests; name the first bad position.",
    ),
}


@click.group(
    cls=AdminGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Environment:
  ADMINCHAIN_LEDGER     the ledger, as --ledger (default ./adminchain.lmdb)
  ADMINCHAIN_TOKEN      the bearer token for an http(s):// server ledger
  ADMINCHAIN_SIGN_KEY   an operator key file that signs operator events (--sign-key)
  ADMINCHAIN_ACTOR      who is acting (--actor; default: the login name)
  ADMINCHAIN_CHECKPOINT_KEY  the key that signs checkpoints (--key)
\b
Global options (--ledger, --json) work before the command name and after it.
Shell completion: eval "$(_ADMINCHAIN_COMPLETE=bash_source adminchain)" (see README).""",
)
@click.option("--ledger", metavar="PATH|URL", help=_LEDGER_HELP + " Default: ./adminchain.lmdb.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.version_option(package_name="adminchain")
def main(ledger: str | None, as_json: bool) -> None:
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
