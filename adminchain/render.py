"""Human output of the CLI, with Rich: tables, timelines, verdicts and progress bars.

Machine output (``--json``) does not come through here beyond the small byte encoders; progress
bars go to stderr and only on a terminal, so stdout stays clean for pipes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final, cast

import click
import msgspec

from ledger.codec import event_to_builtins

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class _LazyConsole:
    """A Rich `Console` made on first use: importing Rich takes about 45 ms, which a command
    that prints nothing through it (``--json``, a catch-up, a replay) need not pay."""

    def __init__(self, make: Callable[[], Console]) -> None:
        self._make = make
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = self._make()
        return getattr(self._console, name)


def _stdout_console() -> Console:
    from rich.console import Console  # noqa: PLC0415  see `_LazyConsole`

    made = Console(highlight=False)
    if not made.is_terminal:  # piped: never crop a column or wrap a line to 80
        made = Console(highlight=False, width=160)
    return made


def _stderr_console() -> Console:
    from rich.console import Console  # noqa: PLC0415  see `_LazyConsole`

    return Console(stderr=True, highlight=False)


console: Console = cast("Console", _LazyConsole(_stdout_console))
errors: Console = cast("Console", _LazyConsole(_stderr_console))
_json = msgspec.json.Encoder()


def escape(markup: str) -> str:
    """`rich.markup.escape` (Rich imported on first use)."""
    from rich.markup import escape as rich_escape  # noqa: PLC0415  see `_LazyConsole`

    return rich_escape(markup)


VERDICT_STYLES: Final = {"applied": "green", "idempotent": "dim", "rejected": "bold red"}


def _interactive() -> bool:
    return not os.environ.get("CI") and errors.is_terminal


@contextmanager
def progress_bar(
    label: str, total: int | None, *, enabled: bool = True
) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal); yields `update(done, total)`."""
    if not enabled or not _interactive():
        yield lambda done, total: None
        return
    from rich.progress import (  # noqa: PLC0415  see `_LazyConsole`
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def append_progress(
    stream: IO[bytes], *, enabled: bool = True
) -> Iterator[tuple[IO[bytes], Callable[[int, int], None]]]:
    """A big append's progress on stderr (a large regular file, on a terminal): the input read,
    then the events stored. Yields the stream to read and `stored(done, total)`."""
    from rich.progress import (  # noqa: PLC0415  see `_LazyConsole`
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    try:
        size = os.fstat(stream.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        size = 0
    if not enabled or size < (8 << 20) or not _interactive():
        yield stream, lambda done, total: None
        return
    with (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=errors,
            transient=True,
        ) as bar,
        bar.wrap_file(cast(BinaryIO, stream), total=size, description="reading") as wrapped,
    ):
        task: list[Any] = []

        def stored(done: int, total: int) -> None:
            if not task:
                task.append(bar.add_task("storing", total=total))
            bar.update(task[0], completed=done, total=total)

        yield wrapped, stored


class _CatchUpBar:
    """A progress bar on stderr (on a terminal) for a long catch-up of the stored views, drawn
    only once one is under way (`projections.api.Views` calls it as ``progress(done, total)``)."""

    def __init__(self, label: str = "catching up the views", least: int = 50_000) -> None:
        self._label, self._least = label, least
        self._bar: Progress | None = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if total - done < self._least or not _interactive():
                return
            from rich.progress import (  # noqa: PLC0415  see `_LazyConsole`
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), console=errors, transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=total)
        self._bar.update(self._task, completed=done, total=total)
        if done >= total:
            self._bar.stop()
            self._bar = None


def catch_up_progress(least: int = 50_000) -> Callable[[int, int], None]:
    """What the CLI's queries show while the stored views catch up (see `_CatchUpBar`)."""
    return _CatchUpBar(least=least)


def _when(value: datetime | str | None) -> str:
    """A time to the second, in UTC, for people (JSON output keeps full precision)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            when: datetime = msgspec.json.decode(_json.encode(value), type=datetime)
        except msgspec.ValidationError:
            return value
    else:
        when = value
    return when.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _age(since: str | None, now: datetime) -> str:
    if not since:
        return ""
    then = msgspec.json.decode(_json.encode(since), type=datetime)
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# ------------------------------------------------------------------------ append and log


def write_lines(lines: Iterable[bytes]) -> None:
    """Machine output: each line (already encoded, newline included) to stdout, then flush."""
    out = sys.stdout.buffer
    for line in lines:
        out.write(line)
    out.flush()


def append_json(result: Any) -> bytes:
    """One ``append --json`` line."""
    return (
        _json.encode({"position": result.position, "id": result.id, "duplicate": result.duplicate})
        + b"\n"
    )


def append_line(outcome: Any, line: int) -> None:
    """One streamed append result, with the verdicts when a projection refused it."""
    note = " [dim](duplicate: already stored)[/]" if outcome.duplicate else ""
    console.print(f"line {line}: position {outcome.position} id {escape(str(outcome.id))}{note}")
    for v in [] if outcome.duplicate else outcome.rejected:
        detail = f" ({v['detail']})" if v.get("detail") else ""
        console.print(f"[yellow]  refused by {v['projection']}: {v['reason']}{escape(detail)}[/]")


def line_error(error: Any, as_json: bool) -> None:
    """One bad line of ``append --stream``: its own result (JSON on stdout with --json, else a
    message on stderr), and the stream goes on."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    if as_json:
        data = {"line": error.line, "error": str(error), "field": getattr(error, "field", None)}
        write_lines([_json.encode(data) + b"\n"])
    else:
        errors.print(
            Text(f"error: {error}", style="red"),
            Text("(not stored; the stream goes on)"),
            soft_wrap=True,
        )


_FIXES: Final = {
    "needs_force": ("needs --force", 'needs "force": true'),
    "invalid_successor": ("not a next state of the current one: see `adminchain history {s}`",) * 2,
    "stale": ("older than the detachment it would undo: see `adminchain history {s}`",) * 2,
    "duplicate": ("issue it under a new broadcast id",) * 2,
    "unknown_target": ("see `adminchain status broadcasts` for its targets",) * 2,
    "late": ("that backend has already answered: see `adminchain history {s}`",) * 2,
}


def fix_for(reason: str | None, subject: str, *, shortcut: bool) -> str:
    """What to do about a rejection (``needs --force``), for a shortcut or an ``append`` line."""
    fixes = _FIXES.get(reason or "")
    if fixes is None:
        return f"see `adminchain history {subject}`"
    return fixes[0 if shortcut else 1].replace("{s}", subject)


def state_phrase(projection: str, view: dict[str, Any]) -> str:
    """A subject's state in one projection, in a few words (from its ``status`` JSON)."""
    if projection == "maintenance":
        return str(view["state"])
    if projection == "detachment":
        return "detached" if view["detached"] else "attached"
    if projection == "recovery":
        decision = view["decision"]
        if not decision:
            return "no decision"
        return f"{decision['kind']} after {decision['retry_after_ms']} ms"
    if projection == "broadcasts":
        pending = ", ".join(view["pending"])
        if view["all_live_backends_acked"]:
            return "all live backends acked"
        return "complete" if view["complete"] else f"waiting for {pending or 'nothing'}"
    if projection == "membership":
        return "peers " + (", ".join(view["peers"]) or "none")
    if projection == "policy":
        return ", ".join(f"{k}={v}" for k, v in view.items() if v is not None)
    return ""


def operator_result(event: Any, outcome: Any, *, strict: bool, dry_run: bool = False) -> None:
    """What an operator shortcut did (or, `dry_run`, would do): where it was recorded, what the
    projections made of it, the resulting state and, for a rejection, the fix."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    subject = escape(event.subject)
    what = f"{type(event).__name__} {subject}"
    if outcome.duplicate:
        where = f"already at position {outcome.position}" if outcome.position else "a repeat"
        console.print(
            f"[dim]{what}: id {escape(str(outcome.id))} is {where}; nothing new is recorded[/]"
        )
        return
    if dry_run:
        console.print(f"dry run: {what} (nothing was appended)")
    else:
        console.print(
            f"recorded {what} at position {outcome.position} (id {escape(str(outcome.id))})"
        )
    for v in outcome.verdicts:
        style = VERDICT_STYLES[v["verdict"]]
        verb = "would be " if dry_run else ""
        reason = f": {v['reason']}" if v.get("reason") else ""
        detail = f" ({v['detail']})" if v.get("detail") else ""
        console.print(
            Text(f"  {v['projection']}: {verb}{v['verdict']}{reason}{detail}", style=style)
        )
        view = outcome.states.get(v["projection"])
        if view is None:
            continue
        state = escape(state_phrase(v["projection"], view))
        if v["projection"] == "policy":
            console.print(
                f"  the policy for {subject} {'would set' if dry_run else 'sets'} {state}"
            )
        elif v["verdict"] == "rejected":
            stays = "would stay" if dry_run else "stays"
            fix = fix_for(v.get("reason"), subject, shortcut=True)
            console.print(f"  {subject} {stays} {state}; {fix}")
        else:
            becomes = "would be" if dry_run else "is now"
            console.print(f"  {subject} {becomes} {state}")
    if outcome.rejected and not strict and not dry_run:
        console.print(
            "  [yellow]the event is in the log, but the projection refused it; "
            "--strict refuses such commands before they are recorded[/]"
        )


def outcome_json(outcome: Any, *, dry_run: bool = False) -> bytes:
    """One ``append --json`` line with its verdicts (and ``"dry_run": true`` in a dry run)."""
    data = outcome.to_json()
    if dry_run:
        data["dry_run"] = True
    return _json.encode(data) + b"\n"


def refusals(
    inputs: Iterable[tuple[int, str, str]], outcomes: Iterable[Any], *, dry_run: bool = False
) -> None:
    """Print each event the projections refused (or would refuse), with the fix: `inputs` are
    the (input line, type, subject) of the events, `outcomes` what each got."""
    for (line, kind, subject), outcome in zip(inputs, outcomes, strict=True):
        if outcome.duplicate or not outcome.rejected:
            continue
        where = "" if dry_run else f" (position {outcome.position})"
        for v in outcome.rejected:
            detail = f" ({v['detail']})" if v.get("detail") else ""
            fix = fix_for(v.get("reason"), subject, shortcut=False)
            verb = "would be refused" if dry_run else "refused"
            console.print(
                f"[yellow]line {line}{where}: {kind} {subject} {verb} by "
                f"{v['projection']}: {v['reason']}{detail}; {fix}[/]"
            )


def dry_run_summary(outcomes: list[Any]) -> None:
    """What a dry run of ``append`` found."""
    fresh = sum(1 for o in outcomes if not o.duplicate)
    refused = sum(1 for o in outcomes if not o.duplicate and o.rejected)
    dups = len(outcomes) - fresh
    console.print(
        f"dry run: {fresh} new event{'s' * (fresh != 1)} would be appended "
        f"({refused} refused by a projection), {dups} duplicate{'s' * (dups != 1)}; "
        "nothing was appended"
    )


def append_summary(results: list[Any]) -> None:
    """What a batch append did."""
    fresh = [r for r in results if not r.duplicate]
    dups = [r for r in results if r.duplicate]
    if fresh:
        span = (
            f"position {fresh[0].position}"
            if len(fresh) == 1
            else f"positions {fresh[0].position}-{fresh[-1].position}"
        )
        console.print(
            f"[green]appended {len(fresh)} event{'s' * (len(fresh) != 1)}[/] ({span}), durable"
        )
    for r in dups:
        console.print(f"[dim]duplicate: id {escape(r.id)} is already at position {r.position}[/]")
    if not results:
        console.print("nothing to append (no events in the input)")


def bulk_summary(result: Any) -> None:
    """What a big append (`ledger.bulk.BulkResult`) did."""
    span = result.span()
    if span is not None:
        count = result.stored
        where = f"position {span[0]}" if count == 1 else f"positions {span[0]}-{span[1]}"
        console.print(f"[green]appended {count} event{'s' * (count != 1)}[/] ({where}), durable")
    if result.stored < len(result):
        for r in result:
            if r.duplicate:
                console.print(f"[dim]duplicate: id {r.id} is already at position {r.position}[/]")
    if not len(result):
        console.print("nothing to append (no events in the input)")


def log_json(entry: Any) -> bytes:
    """One ``log --json`` line."""
    return (
        _json.encode(
            {
                "position": entry.position,
                "recorded_at": entry.recorded_at,
                "event": event_to_builtins(entry.event),
            }
        )
        + b"\n"
    )


def _fields(event: Any) -> str:
    data = event_to_builtins(event)
    for key in ("type", "subject", "id", "at", "actor", "signature"):
        data.pop(key, None)
    return " ".join(f"{k}={_json.encode(v).decode()}" for k, v in data.items())


def log_table(entries: Iterable[Any]) -> None:
    """The log as a table."""
    from rich.table import Table  # noqa: PLC0415  see `_LazyConsole`

    table = Table("pos", "recorded", "type", "subject", "actor", "fields", box=None, pad_edge=False)
    count = 0
    for entry in entries:
        event = entry.event
        table.add_row(
            str(entry.position),
            _when(entry.recorded_at),
            type(event).__name__,
            event.subject,
            event.actor or "",
            _fields(event),
        )
        count += 1
    if count:
        console.print(table)
    else:
        console.print("the log has no events in that range")


# ------------------------------------------------------------------------ status and history


def history_timeline(subject: str, rows: list[dict[str, Any]]) -> None:
    """A subject's events as a timeline, refused ones visibly marked with their reason."""
    if not rows:
        console.print(f"no events about {subject!r}")
        return
    history_rows(subject, rows, header=True)


def history_rows(subject: str, rows: list[dict[str, Any]], *, header: bool) -> None:
    """Rows of the timeline (for ``history --follow``, a few at a time)."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    if header:
        console.print(Text(f"history of {subject}", style="bold underline"))
    for row in rows:
        verdicts = row["verdicts"]
        refused = [v for v in verdicts if v["verdict"] == "rejected"]
        mark = Text("✗ ", style="bold red") if refused else Text("✓ ", style="green")
        line = Text.assemble(
            mark,
            (f"{row['position']:>6}  ", "dim"),
            (_when(row["at"]) + "  ", ""),
            (f"{row['type']:<20}", "bold"),
            (f" by {row['actor']}" if row["actor"] else "", "cyan"),
        )
        console.print(line)
        for v in verdicts:
            style = VERDICT_STYLES[v["verdict"]]
            extra = f": {v['reason']}" if v.get("reason") else ""
            extra += f" ({v['detail']})" if v.get("detail") else ""
            console.print(Text(f"          {v['projection']}: {v['verdict']}{extra}", style=style))


# ------------------------------------------------------------------------ audit


def replay_report(report: Any) -> None:
    """The audit: a summary table per projection, then every refused event."""
    from rich.table import Table  # noqa: PLC0415  see `_LazyConsole`
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    table = Table("projection", "applied", "idempotent", "rejected", "stored view", box=None)
    for name, counts in report.counts.items():
        if not report.compared:
            stored = Text("not compared (--to)", style="dim")
        elif name in report.diverged:
            stored = Text("DIVERGED", style="bold red")
        else:
            stored = Text("matches", style="green")
        rejected = Text(str(counts["rejected"]), style="bold red" if counts["rejected"] else "")
        table.add_row(name, str(counts["applied"]), str(counts["idempotent"]), rejected, stored)
    console.print(Text(f"replayed {report.position} events", style="bold"))
    console.print(table)
    if report.rejected:
        console.print(Text(f"\nrefused events ({len(report.rejected)})", style="bold underline"))
        refused = Table("pos", "type", "subject", "projection", "reason", "detail", box=None)
        for r in report.rejected:
            refused.add_row(
                str(r.position),
                r.type,
                r.subject,
                r.projection,
                Text(r.reason or "", style="red"),
                r.detail or "",
            )
        console.print(refused)
    for name, subjects in report.differences.items():
        shown = ", ".join(subjects[:10]) + (" …" if len(subjects) > 10 else "")
        console.print(
            Text(f"{name}: stored state differs from the log for {shown}", style="bold red")
        )


def verify_result(result: Any) -> None:
    """The verdict of `verify`, plainly."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    if result.ok:
        console.print(Text(f"✓ verified: {result.detail}", style="bold green"))
    else:
        where = f" at position {result.first_bad_position}" if result.first_bad_position else ""
        console.print(Text(f"✗ verification FAILED{where}", style="bold red"))
        console.print(result.detail)
    console.print(f"size {result.size}, root {result.root}", style="dim")


def checkpoint_note(checkpoint: Any, note: str, *, signed: bool) -> None:
    """A new checkpoint and its note."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    label = "signed checkpoint" if signed else "checkpoint (unsigned: give --key to sign)"
    console.print(
        Text(f"{label} at size {checkpoint.size}", style="bold green" if signed else "yellow")
    )
    click.echo(note.rstrip("\n"))


def proof_verified(proven: Any, *, signed: bool) -> None:
    """What a verified proof file establishes."""
    from rich.text import Text  # noqa: PLC0415  see `_LazyConsole`

    data = proven.to_json()
    signers = ", ".join(data["signed_by"]) or "nobody (no --pub given: signatures not checked)"
    if data["kind"] == "inclusion":
        console.print(
            Text(
                f"✓ the event at position {data['position']} is in the log of size {data['size']}",
                style="bold green",
            )
        )
    else:
        console.print(
            Text(
                f"✓ the log of size {data['old_size']} is a prefix of the log of size "
                f"{data['new_size']}",
                style="bold green",
            )
        )
    console.print(f"origin {data['origin']}; checkpoint signed by {signers}")
    if data.get("cosigned_by"):
        console.print(f"cosigned by the witnesses {', '.join(data['cosigned_by'])}")
    if not signed:
        console.print("[yellow]warning:[/] without --pub, anyone could have made this checkpoint")
