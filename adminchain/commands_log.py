"""Commands that write and read the log and the projections: append, log, status, history."""

from __future__ import annotations

from typing import IO, Any

import click

from adminchain import render
from adminchain.cli import (
    STORED,
    StreamErrorsError,
    emit_json,
    interrupted,
    interrupts_deferred,
    is_remote,
    json_option,
    ledger_options,
    long_running,
    main,
    open_ledger,
    open_views,
    read_lines,
    read_lines_interruptibly,
    require_local,
    until_interrupted,
)
from ledger.codec import decode_line, iter_lines
from ledger.errors import InvalidEventError, StrictRefusedError, UsageError


def _signer(sign_key: str | None) -> Any:
    if sign_key is None:
        return None
    from ledger.signing import OperatorKey  # noqa: PLC0415

    return OperatorKey.load(sign_key)


@main.command()
@click.argument("file", type=click.File("rb"), default="-", required=False)
@click.option("--stream", is_flag=True, help="Append line by line; print each result once durable.")
@click.option(
    "--stop-on-error",
    is_flag=True,
    help="With --stream: stop at the first bad line (the lines before it stay stored).",
)
@click.option(
    "--strict", is_flag=True, help="Refuse (exit 3) operator events the projections reject."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the verdicts the events would get; append nothing."
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="ADMINCHAIN_SIGN_KEY",
    help="Sign unsigned operator events with this operator key file.",
)
@ledger_options
def append(
    file: IO[bytes],
    stream: bool,
    stop_on_error: bool,
    strict: bool,
    dry_run: bool,
    sign_key: str | None,
    ledger: str,
    as_json: bool,
) -> None:
    """Append JSON Lines events from FILE (or stdin) as one atomic batch.

    Every line is validated first; one bad line rejects the whole batch (exit 2, the line and the
    field named, nothing stored). An event whose `id` is already in the log is reported with its
    original position and "duplicate": true. Each result carries the projections' verdicts; a
    refused event is named with the fix. --dry-run prints the verdicts the events would get
    (folded in order on the current state) and appends nothing.

    With --stream, lines are appended one by one as they are read, and each result is printed
    only once that event is durable. A bad line gets its own error result (with --json:
    {"line", "error", "field"}) and the stream goes on; the exit status is then 2 (3 if the
    only errors were --strict refusals). --stop-on-error stops at the first one instead.

    \b
    Example:
      echo '{"type":"LeaseExpired","subject":"runner-a","id":"e-1"}' | adminchain append
      adminchain append events.jsonl --json
      adminchain append events.jsonl --dry-run --strict
      tail -F observations.jsonl | adminchain append --stream --json
    """
    signer = _signer(sign_key)
    if stream and dry_run:
        raise UsageError("--dry-run folds the whole input at once: drop --stream")
    if stop_on_error and not stream:
        raise UsageError("--stop-on-error is for --stream (a batch always stops at a bad line)")
    views = open_views(ledger, create=not dry_run)
    if stream:
        long_running(views.ledger)
        _stream(views, file, signer, strict=strict, stop=stop_on_error, as_json=as_json)
        return
    if dry_run or is_remote(ledger):
        _in_memory(views, file, signer, strict=strict, dry_run=dry_run, as_json=as_json)
        return
    # A big input streams through a spool: memory holds a chunk (`Ledger.append_bulk`).
    with render.append_progress(file, enabled=not as_json) as (source, stored):
        numbered = iter_lines(read_lines(source))
        if signer is not None:
            numbered = ((n, signer.sign_if_operator(e)) for n, e in numbered)
        spooled = views.ledger.spool(numbered, validated=True)  # Ctrl-C here: nothing stored
        with interrupts_deferred():
            result = views.append_spooled(spooled, strict=strict, progress=stored)
            STORED.note(result)
    if as_json:
        render.write_lines(render.outcome_json(o) for o in views.outcomes(result))
    else:
        render.bulk_summary(result)
        refused = list(views.refused(result, result.inputs()))  # the views are folded already
        render.refusals([given for given, _ in refused], [outcome for _, outcome in refused])


def _in_memory(
    views: Any, file: IO[bytes], signer: Any, *, strict: bool, dry_run: bool, as_json: bool
) -> None:
    """``append --dry-run``, and a batch for a server: the input is read whole, then sent."""
    lines: list[int] = []
    events = []
    with render.append_progress(file, enabled=not as_json) as (source, _):
        for number, event in iter_lines(read_lines(source)):
            events.append(signer.sign_if_operator(event) if signer is not None else event)
            lines.append(number)
    inputs = [(line, type(e).__name__, e.subject) for line, e in zip(lines, events, strict=True)]
    try:
        if dry_run:
            outcomes = views.dry_run(events, strict=strict, validated=True)
        else:
            precondition = views.strict() if strict else None
            with interrupts_deferred():
                results = views.ledger.append_batch(
                    events, precondition=precondition, validated=True
                )
                STORED.note(results)
    except StrictRefusedError as e:
        raise e.at_line(lines[e.line - 1] if e.line else None) from e
    if dry_run:
        if as_json:
            render.write_lines(render.outcome_json(o, dry_run=True) for o in outcomes)
        else:
            render.refusals(inputs, outcomes, dry_run=True)
            render.dry_run_summary(outcomes)
        return
    with render.progress_bar("folding", None, enabled=not as_json) as update:
        done = views.outcomes(results, progress=update)
        if as_json:
            render.write_lines(render.outcome_json(o) for o in done)
        else:
            render.append_summary(results)
            render.refusals(inputs, done)


def _stream(
    views: Any, file: IO[bytes], signer: Any, *, strict: bool, stop: bool, as_json: bool
) -> None:
    """``append --stream``: each line appended once read; a bad line gets its own result."""
    bad: list[int] = []
    refused: list[int] = []
    precondition = views.strict() if strict else None
    for number, raw in enumerate(read_lines_interruptibly(file), start=1):
        if not raw.strip():
            continue
        try:
            event = decode_line(raw, number)
            if signer is not None:
                event = signer.sign_if_operator(event)
            with interrupts_deferred():  # a stored event's result is printed before Ctrl-C ends
                result = views.ledger.append(event, precondition=precondition, validated=True)
                STORED.note([result])
                (outcome,) = views.outcomes([result])
                if as_json:
                    render.write_lines([render.outcome_json(outcome)])
                else:
                    render.append_line(outcome, number)
        except (InvalidEventError, StrictRefusedError) as e:
            located = e.at_line(number)
            if stop:
                raise located from e
            (refused if isinstance(e, StrictRefusedError) else bad).append(number)
            render.line_error(located, as_json)
    if bad or refused:
        raise StreamErrorsError(bad, refused)


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
@click.argument("source", metavar="SOURCE")
@click.argument("destination", metavar="DESTINATION")
@json_option
def copy(source: str, destination: str, as_json: bool) -> None:
    """Copy the ledger at SOURCE into DESTINATION byte for byte: same positions, same root.

    For moving an embedded ledger to PostgreSQL (or back). DESTINATION must be empty or a prefix
    of SOURCE (an interrupted copy resumes). Checkpoints, the origin and the trusted keys come
    along, so existing proofs stay valid.

    \b
    Example:
      adminchain copy ./adminchain.lmdb postgresql://postgres@db:5432/adminchain
    """
    require_local(destination, "copying into a ledger")
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
    import signal  # noqa: PLC0415

    from replay import workers  # noqa: PLC0415
    from replay.catchup import catch_up as split_catch_up  # noqa: PLC0415

    require_local(ledger, "catch-up (a server keeps its own views current)")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    with workers.standing_by(ledger):  # the second process of a long catch-up, ready at once
        views = open_views(ledger)
        signal.signal(signal.SIGTERM, stop)
        size = views.ledger.size()
        with render.progress_bar("catching up", size, enabled=not as_json) as update:
            tracking = split_catch_up(views, update)
    if follow:
        long_running(views.ledger)
        with until_interrupted():  # Ctrl-C ends a runner normally
            views.follow(poll=poll, stop=lambda: stopping or interrupted())
        tracking = views.tracking()
    if as_json:
        emit_json({"tracking": tracking, "size": views.ledger.size()})
    else:
        render.console.print(f"the stored views include every event up to position {tracking}")
