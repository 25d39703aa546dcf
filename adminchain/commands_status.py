"""Commands that read the projections: status (filters, summary, policy, --watch) and history
(--follow). Kept apart from the write commands, and free of Rich on the status path, so that
``adminchain status`` starts fast (issue 16)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from adminchain.cli import (
    complete_kind_or_subject,
    complete_subject,
    emit_json,
    interrupted,
    ledger_options,
    main,
    open_views,
    parse_as_of,
    parse_time,
    until_interrupted,
)


@main.command()
@click.argument("kind", required=False, shell_complete=complete_kind_or_subject)
@click.argument("subject", required=False, shell_complete=complete_subject)
@click.option(
    "--as-of", metavar="POSITION|TIME", help="The state at a position or a recorded time."
)
@click.option("--now", metavar="TIME", help="The time for deadline_overdue (default: the clock).")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only nodes in this maintenance state, e.g. DrainFailed (repeatable).",
)
@click.option("--detached", is_flag=True, help="Only detached runners.")
@click.option("--overdue", is_flag=True, help="Only nodes past their maintenance deadline.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    help="At most N rows per table (the summary still counts every match).",
)
@click.option("--watch", "-w", is_flag=True, help="Print again each time the log changes.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="With --watch: the longest wait before checking the log again, in seconds.",
)
@ledger_options
def status(
    kind: str | None,
    subject: str | None,
    as_of: str | None,
    now: str | None,
    states: tuple[str, ...],
    detached: bool,
    overdue: bool,
    limit: int | None,
    watch: bool,
    interval: float,
    ledger: str,
    as_json: bool,
) -> None:
    """Show projection state: KIND is maintenance, detachment, recovery, membership,
    broadcasts or policy.

    With SUBJECT (a node, runner, backend key, cluster or broadcast id, or a glob such as
    'node-*'), only that subject. A lone argument that is not a KIND is taken as a SUBJECT.
    Each table is preceded by a count per state; ids are never cut. `status policy` shows the
    effective policy per subject and for `*`.

    \b
    Examples:
      adminchain status
      adminchain status maintenance --state DrainFailed --limit 20
      adminchain status --detached
      adminchain status 'broker-1/*' --overdue
      adminchain status node-7 --as-of 120
      adminchain status policy
      adminchain status maintenance --now 2026-11-25T15:00:00Z --json
      adminchain status --watch
    """
    from projections.api import KINDS  # noqa: PLC0415
    from projections.query import StatusFilter, is_glob  # noqa: PLC0415

    if kind is not None and subject is None and kind not in (*KINDS, "policy"):
        kind, subject = None, kind
    pattern = None
    if subject is not None and is_glob(subject):
        pattern, subject = subject, None
    flt = StatusFilter(states, detached, overdue, pattern, limit)
    kinds = flt.kinds(kind)
    fixed_now = parse_time(now, "--now") if now else None
    position, when = parse_as_of(as_of)
    if watch and (position is not None or when is not None):
        from ledger.errors import UsageError  # noqa: PLC0415

        raise UsageError("--watch shows the state as the log changes: drop --as-of")
    views = open_views(ledger)

    def show() -> None:
        moment = fixed_now or datetime.now(UTC)
        if kind == "policy":
            document = _policy(views, subject, position, when)
            if as_json:
                emit_json(document)
            else:
                from adminchain import plain  # noqa: PLC0415

                plain.policy_tables(document)
            return
        _status(views, kinds, subject, moment, flt, position, when, as_json)

    if not watch:
        show()
        return
    _watch(views, show, interval, as_json)


def _status(
    views: Any,
    kinds: tuple[str, ...] | None,
    subject: str | None,
    moment: datetime,
    flt: Any,
    position: int | None,
    when: datetime | None,
    as_json: bool,
) -> None:
    from projections.api import status_document  # noqa: PLC0415
    from projections.query import status_report, with_known_defaults  # noqa: PLC0415

    one = kinds[0] if kinds is not None and len(kinds) == 1 else None
    if position is None and when is None:
        document = views.status(one, subject, moment)
    else:
        from replay.rebuild import as_of as replay_as_of  # noqa: PLC0415
        from replay.sources import FolderSource  # noqa: PLC0415

        folder, upto = replay_as_of(views.ledger, position, when)
        document = status_document(FolderSource(folder), one, subject, moment)
        if subject is not None and one is None and not any(document.values()):
            folded = views.folded_by(subject, upto)
            document = with_known_defaults(document, subject, folded, moment)
    if kinds is not None:
        document = {name: document.get(name, {}) for name in kinds}
    report = status_report(document, flt)
    if as_json:
        emit_json(report.document)
        return
    from adminchain import plain  # noqa: PLC0415

    if not plain.status_tables(report, moment):
        from projections.api import KINDS  # noqa: PLC0415

        if flt.pattern or flt.states or flt.detached or flt.overdue:
            click.echo("no subject matches those filters")
        else:
            click.echo(f"nothing is known about that yet (kinds are: {', '.join(KINDS)})")


def _policy(
    views: Any, subject: str | None, position: int | None, when: datetime | None
) -> dict[str, Any]:
    if position is None and when is None:
        document: dict[str, Any] = views.policy(subject)
        return document
    from projections.query import policy_document  # noqa: PLC0415
    from replay.rebuild import as_of as replay_as_of  # noqa: PLC0415
    from replay.sources import FolderSource  # noqa: PLC0415

    folder, _ = replay_as_of(views.ledger, position, when)
    return policy_document(FolderSource(folder), subject)


def _watch(views: Any, show: Any, interval: float, as_json: bool) -> None:
    """Show, then show again each time the log grows (Ctrl-C ends it, exit 0). On a terminal
    the screen is redrawn; a pipe gets one document (or table set) per change."""
    redraw = not as_json and sys.stdout.isatty()
    with until_interrupted():
        start = views.ledger.size()
        _frame(show, start, redraw, as_json)
        for size in views.changes(start, poll=interval, stop=interrupted):
            _frame(show, size, redraw, as_json)


def _frame(show: Any, size: int, redraw: bool, as_json: bool) -> None:
    if redraw:
        click.echo("\x1b[H\x1b[2J", nl=False)
    if not as_json:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        click.echo(f"— position {size}, {stamp}Z (watching; Ctrl-C to stop) —")
    show()
    sys.stdout.flush()  # a pipe (`status --watch | tee`) gets each frame as it is drawn


@main.command()
@click.argument("subject", shell_complete=complete_subject)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new events about SUBJECT as they come."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="With --follow: the longest wait before checking the log again, in seconds.",
)
@ledger_options
def history(subject: str, follow: bool, interval: float, ledger: str, as_json: bool) -> None:
    """Each event about SUBJECT with the verdict of every projection that folded it.

    Refused events are marked with their reason: this is the audit trail of one subject. With
    --follow, new events are printed as they are appended (with --json: one object per line).

    \b
    Examples:
      adminchain history node-7
      adminchain history node-7 --follow
    """
    from adminchain import render  # noqa: PLC0415

    views = open_views(ledger)
    start = views.ledger.size()
    rows = views.history(subject)
    if not follow:
        if as_json:
            emit_json(rows)
        else:
            render.history_timeline(subject, rows)
        return
    with until_interrupted():
        last = _history_rows(subject, rows, as_json, header=True)
        for size in views.changes(max(start, last), poll=interval, stop=interrupted):
            fresh = views.history_after(subject, last)
            last = max(last, _history_rows(subject, fresh, as_json, header=False), size)


def _history_rows(subject: str, rows: list[dict[str, Any]], as_json: bool, *, header: bool) -> int:
    """Print rows as ``history --follow`` does; returns the last position printed (0: none)."""
    from adminchain import render  # noqa: PLC0415

    if as_json:
        for row in rows:
            emit_json(row)
    elif header or rows:
        render.history_rows(subject, rows, header=header)
        sys.stdout.flush()
    return rows[-1]["position"] if rows else 0
