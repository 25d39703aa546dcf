"""Commands that write and read the log and the projections: append, log, status, history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any

import click

from adminchain import render
from adminchain.cli import (
    emit_json,
    ledger_options,
    main,
    open_ledger,
    open_views,
    parse_as_of,
    parse_time,
    read_lines,
)
from ledger.codec import decode_line, iter_lines
from ledger.errors import StrictRefusedError


def _signer(sign_key: str | None) -> Any:
    if sign_key is None:
        return None
    from ledger.signing import OperatorKey  # noqa: PLC0415

    return OperatorKey.load(sign_key)


@main.command()
@click.argument("file", type=click.File("rb"), default="-", required=False)
@click.option("--stream", is_flag=True, help="Append line by line; print each result once durable.")
@click.option(
    "--strict", is_flag=True, help="Refuse (exit 3) operator events the projections reject."
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="ADMINCHAIN_SIGN_KEY",
    help="Sign unsigned operator events with this operator key file.",
)
@ledger_options
def append(
    file: IO[bytes], stream: bool, strict: bool, sign_key: str | None, ledger: str, as_json: bool
) -> None:
    """Append JSON Lines events from FILE (or stdin) as one atomic batch.

    Every line is validated first; one bad line rejects the whole batch (exit 2, the line and the
    field named, nothing stored). An event whose `id` is already in the log is reported with its
    original position and "duplicate": true. With --stream, lines are appended one by one as they
    are read, and each result is printed only once that event is durable.

    \b
    Example:
      echo '{"type":"LeaseExpired","subject":"runner-a","id":"e-1"}' | adminchain append
      adminchain append events.jsonl --json
    """
    signer = _signer(sign_key)
    views = open_views(ledger, create=True)
    log = views.ledger
    precondition = views.strict() if strict else None
    if stream:
        for number, raw in enumerate(read_lines(file), start=1):
            if not raw.strip():
                continue
            event = decode_line(raw, number)
            if signer is not None:
                event = signer.sign_if_operator(event)
            try:
                result = log.append(event, precondition=precondition, validated=True)
            except StrictRefusedError as e:
                raise e.at_line(number) from e
            _print_result(result, number, as_json)
        return
    with render.append_progress(file, enabled=not as_json) as (source, stored):
        numbered = iter_lines(read_lines(source))
        if signer is not None:
            numbered = ((n, signer.sign_if_operator(e)) for n, e in numbered)
        result = log.append_bulk(
            numbered, precondition=precondition, validated=True, progress=stored
        )
    if as_json:
        render.write_lines(render.append_json(r) for r in result)
    else:
        render.bulk_summary(result)


def _print_result(result: Any, line: int, as_json: bool) -> None:
    if as_json:
        render.write_lines([render.append_json(result)])
    else:
        render.append_line(result, line)


@main.command("log")
@click.option("--from", "start", type=click.IntRange(min=1), default=1, help="First position.")
@click.option("--to", "stop", type=click.IntRange(min=1), help="Last position (default: the end).")
@ledger_options
def log_command(start: int, stop: int | None, ledger: str, as_json: bool) -> None:
    """Print the log itself, for export and audit.

    With --json, JSON Lines of {"position", "recorded_at", "event"}, the event in its wire form:
    the output can be appended to another ledger as is (`jq -c .event`).

    \b
    Example:
      adminchain log --from 100 --to 120
      adminchain log --json > export.jsonl
    """
    entries = open_ledger(ledger, create=False).read(start, stop)
    if as_json:
        render.write_lines(render.log_json(e) for e in entries)
    else:
        render.log_table(entries)


@main.command()
@click.argument("kind", required=False)
@click.argument("subject", required=False)
@click.option(
    "--as-of", metavar="POSITION|TIME", help="The state at a position or a recorded time."
)
@click.option("--now", metavar="TIME", help="The time for deadline_overdue (default: the clock).")
@ledger_options
def status(
    kind: str | None,
    subject: str | None,
    as_of: str | None,
    now: str | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Show projection state: KIND is maintenance, detachment, recovery, membership or broadcasts.

    With SUBJECT (a node, runner, backend key, cluster or broadcast id), only that subject. A lone
    argument that is not a KIND is taken as a SUBJECT.

    \b
    Examples:
      adminchain status
      adminchain status maintenance node-7
      adminchain status node-7 --as-of 120
      adminchain status maintenance --now 2026-11-25T15:00:00Z --json
    """
    from projections.api import KINDS, status_document  # noqa: PLC0415
    from replay.rebuild import FolderSource  # noqa: PLC0415
    from replay.rebuild import as_of as replay_as_of  # noqa: PLC0415

    if kind is not None and subject is None and kind not in KINDS:
        kind, subject = None, kind
    moment = parse_time(now, "--now") if now else datetime.now(UTC)
    position, when = parse_as_of(as_of)
    views = open_views(ledger)
    if position is None and when is None:
        document = views.status(kind, subject, moment)
    else:
        folder, _ = replay_as_of(views.ledger, position, when)
        document = status_document(FolderSource(folder), kind, subject, moment)
    if as_json:
        emit_json(document)
    else:
        render.status_tables(document, moment)


@main.command()
@click.argument("subject")
@ledger_options
def history(subject: str, ledger: str, as_json: bool) -> None:
    """Each event about SUBJECT with the verdict of every projection that folded it.

    Refused events are marked with their reason: this is the audit trail of one subject.

    \b
    Example:
      adminchain history node-7
    """
    rows = open_views(ledger).history(subject)
    if as_json:
        emit_json(rows)
    else:
        render.history_timeline(subject, rows)


@main.command()
@click.argument("source", metavar="SOURCE")
@click.argument("destination", metavar="DESTINATION")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def copy(source: str, destination: str, as_json: bool) -> None:
    """Copy the ledger at SOURCE into DESTINATION byte for byte: same positions, same root.

    For moving an embedded ledger to PostgreSQL (or back). DESTINATION must be empty or a prefix
    of SOURCE (an interrupted copy resumes). Checkpoints, the origin and the trusted keys come
    along, so existing proofs stay valid.

    \b
    Example:
      adminchain copy ./adminchain.lmdb postgresql://postgres@db:5432/adminchain
    """
    src = open_ledger(source, create=False)
    dst = open_ledger(destination)
    with render.progress_bar("copying", src.size(), enabled=not as_json) as update:
        size = dst.copy_from(src, progress=update)
    root = dst.root(size).hex()
    if as_json:
        emit_json({"size": size, "root": root, "source_root": src.root(size).hex()})
    else:
        render.console.print(f"copied {size} events; root {root} (same as the source)")


@main.command("catch-up")
@click.option("--follow", is_flag=True, help="Keep going: fold new events as they are appended.")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between checks when idle.")
@ledger_options
def catch_up(follow: bool, poll: float, ledger: str, as_json: bool) -> None:
    """Bring the stored projections up to the end of the log (a projection runner).

    Queries catch the views up by themselves; run this where appends come from many hosts
    (a shared PostgreSQL ledger) to keep the views current for readers, with --follow as a
    service. Each chunk is folded with its tracking position in one transaction, so runners
    on several hosts never fold an event twice, and a killed runner resumes where it stopped.

    \b
    Example:
      adminchain catch-up
      adminchain catch-up --follow --ledger postgresql://postgres@db:5432/adminchain
    """
    import contextlib  # noqa: PLC0415
    import signal  # noqa: PLC0415

    views = open_views(ledger)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with render.progress_bar("catching up", views.ledger.size(), enabled=not as_json) as update:
        tracking = views.catch_up(update)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a runner normally
            views.follow(poll=poll, stop=lambda: stopping)
        tracking = views.tracking()
    if as_json:
        emit_json({"tracking": tracking, "size": views.ledger.size()})
    else:
        render.console.print(f"the stored views include every event up to position {tracking}")
