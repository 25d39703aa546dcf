"""Operator shortcuts: maintenance enter|exit, detach, policy set, broadcast issue.

Each builds one operator event, appends it (strictly with ``--strict``) and prints the result in
the ``append`` format, so scripts can treat a shortcut like ``adminchain append``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import msgspec

from adminchain import render
from adminchain.cli import (
    STORED,
    complete_subject,
    emit_json,
    interrupts_deferred,
    ledger_options,
    main,
    open_views,
    operator_options,
    parse_deadline,
    parse_duration,
)
from ledger.errors import StrictRefusedError, UsageError
from ledger.events import (
    Detach,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    IssueBroadcast,
    Quiesce,
    ReleaseHandles,
    SetPolicy,
    Target,
)


@dataclass(frozen=True, slots=True)
class _Operator:
    """What every shortcut takes besides its own arguments: the event's id and actor, how to
    append it (``--strict``, ``--sign-key``), where, and how to print the result."""

    event_id: str | None
    actor: str
    strict: bool
    dry_run: bool
    sign_key: str | None
    ledger: str
    as_json: bool

    def append(self, event: Event) -> None:
        """Sign (with ``--sign-key``), append (or with ``--dry-run``, only fold) and print
        `event` as ``append`` does, with its verdicts (SPEC §5)."""
        if self.sign_key is not None:
            from ledger.signing import OperatorKey  # noqa: PLC0415

            key = OperatorKey.load(self.sign_key)
            source = click.get_current_context().get_parameter_source("actor")
            if source is click.core.ParameterSource.DEFAULT:  # no --actor: sign as its owner
                event = msgspec.structs.replace(event, actor=key.signer.name)
            event = key.sign_if_operator(event)
        views = open_views(self.ledger, create=not self.dry_run)
        try:
            if self.dry_run:
                (outcome,) = views.dry_run([event], strict=self.strict)
            else:
                with interrupts_deferred():
                    (outcome,) = views.append_with_verdicts(
                        [event], strict=self.strict, states=True
                    )
                    STORED.note([outcome])
        except StrictRefusedError as e:
            raise e.at_line(None) from e  # one event, no input lines: no "line 1"
        if self.as_json:
            data = outcome.to_json()
            if self.dry_run:
                data["dry_run"] = True
            emit_json(data)
        else:
            render.operator_result(event, outcome, strict=self.strict, dry_run=self.dry_run)


def _operator_command(func: Callable[..., None]) -> Callable[..., None]:
    """`--id`, `--actor`, `--strict`, `--dry-run`, `--sign-key`, `--ledger` and `--json`,
    handed to the shortcut as one `_Operator` (its first argument)."""

    @functools.wraps(func)
    def command(
        *,
        event_id: str | None,
        actor: str,
        strict: bool,
        dry_run: bool,
        sign_key: str | None,
        ledger: str,
        as_json: bool,
        **arguments: Any,
    ) -> None:
        func(_Operator(event_id, actor, strict, dry_run, sign_key, ledger, as_json), **arguments)

    command = click.option(
        "--dry-run", is_flag=True, help="Print the verdicts it would get; record nothing."
    )(command)
    return click.option("--id", "event_id", help="Idempotency key (default: a new UUID).")(
        operator_options(ledger_options(command))
    )


@main.group()
def maintenance() -> None:
    """Put a node into maintenance, or take it out.

    \b
    Examples:
      adminchain maintenance enter node-7 --deadline 30m --reason "kernel upgrade"
      adminchain maintenance exit node-7 --force
    """


@maintenance.command("enter")
@click.argument("node", shell_complete=complete_subject)
@click.option("--reason", help="Why, for the audit trail.")
@click.option("--deadline", metavar="TIME|DURATION", help="When draining must be done (e.g. 30m).")
@_operator_command
def maintenance_enter(
    op: _Operator,
    node: str,
    reason: str | None,
    deadline: str | None,
) -> None:
    """Ask NODE to enter maintenance (it becomes EnteringMaintenance).

    \b
    Example:
      adminchain maintenance enter node-7 --deadline 30m --reason "kernel upgrade" --strict
    """
    now = datetime.now(UTC)
    event = EnterMaintenance(
        subject=node,
        id=op.event_id,
        at=now,
        actor=op.actor,
        reason=reason,
        deadline=parse_deadline(deadline, now) if deadline else None,
    )
    op.append(event)


@maintenance.command("exit")
@click.argument("node", shell_complete=complete_subject)
@click.option("--force", is_flag=True, help="Exit even from DrainFailed.")
@_operator_command
def maintenance_exit(
    op: _Operator,
    node: str,
    force: bool,
) -> None:
    """Ask NODE to leave maintenance (it becomes ExitingMaintenance; from DrainFailed, --force).

    \b
    Example:
      adminchain maintenance exit node-7 --force --strict
    """
    event = ExitMaintenance(subject=node, id=op.event_id, actor=op.actor, force=force)
    op.append(event)


@main.command()
@click.argument("runner", shell_complete=complete_subject)
@click.option("--reason", help="Why, for the audit trail.")
@_operator_command
def detach(
    op: _Operator,
    runner: str,
    reason: str | None,
) -> None:
    """Detach RUNNER by hand (reason: manual detachment).

    \b
    Example:
      adminchain detach runner-a --reason "suspected split brain"
    """
    event = Detach(subject=runner, id=op.event_id, actor=op.actor, reason=reason)
    op.append(event)


@main.group()
def policy() -> None:
    """Tune the projections, for one subject or for all (`*`).

    \b
    Example:
      adminchain policy set '*' --recover-window 2s --keepalive-threshold 5
    """


def _millis(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    duration = parse_duration(value)
    if duration is None:
        raise UsageError(
            f"{option}: {value!r} is not a duration (e.g. 500ms, 2s, 1m) or milliseconds"
        )
    return int(duration.total_seconds() * 1000)


@policy.command("set")
@click.argument("subject", default="*")
@click.option(
    "--recover-window", metavar="DURATION", help="Healthy time before re-attaching (default 500ms)."
)
@click.option(
    "--keepalive-threshold",
    type=click.IntRange(min=1),
    help="Keep-alive failures that detach (default 3).",
)
@click.option(
    "--retry-backoff", metavar="DURATION", help="Delay before the one retry (default 250ms)."
)
@click.option("--budget-window", metavar="DURATION", help="Crash budget window (default 60s).")
@_operator_command
def policy_set(
    op: _Operator,
    subject: str,
    recover_window: str | None,
    keepalive_threshold: int | None,
    retry_backoff: str | None,
    budget_window: str | None,
) -> None:
    """Set policy for SUBJECT (default `*`: everyone) from this point of the log on.

    A subject's own settings win over `*`. Durations take 500ms, 2s, 1m or plain milliseconds.

    \b
    Examples:
      adminchain policy set '*' --budget-window 2m
      adminchain policy set runner-a --keepalive-threshold 5
    """
    event = SetPolicy(
        subject=subject,
        id=op.event_id,
        actor=op.actor,
        recover_window_ms=_millis(recover_window, "--recover-window"),
        keepalive_failure_threshold=keepalive_threshold,
        retry_backoff_ms=_millis(retry_backoff, "--retry-backoff"),
        budget_window_ms=_millis(budget_window, "--budget-window"),
    )
    if all(
        v is None
        for v in (
            event.recover_window_ms,
            event.keepalive_failure_threshold,
            event.retry_backoff_ms,
            event.budget_window_ms,
        )
    ):
        raise UsageError("give at least one setting (see `adminchain policy set --help`)")
    op.append(event)


@main.group()
def broadcast() -> None:
    """Issue lifecycle broadcasts to backends.

    \b
    Example:
      adminchain broadcast issue q-1 --quiesce maintenance --target b1 --target b2 --dead b3
    """


@broadcast.command("issue")
@click.argument("broadcast_id")
@click.option(
    "--quiesce",
    type=click.Choice(["idle_timeout", "broker_shutdown", "maintenance"]),
    help="Ask backends to drain, for this reason.",
)
@click.option(
    "--release-handles", metavar="PATH_PREFIX", help="Ask backends to release handles below a path."
)
@click.option("--target", "targets", multiple=True, help="A live backend (repeatable).")
@click.option("--dead", "dead", multiple=True, help="A dead backend, skipped at once (repeatable).")
@click.option(
    "--ack-timeout",
    default="5000",
    show_default=True,
    metavar="DURATION",
    help="Per-backend ack timeout.",
)
@_operator_command
def broadcast_issue(
    op: _Operator,
    broadcast_id: str,
    quiesce: str | None,
    release_handles: str | None,
    targets: tuple[str, ...],
    dead: tuple[str, ...],
    ack_timeout: str,
) -> None:
    """Issue broadcast BROADCAST_ID: one operation to live and dead targets.

    \b
    Examples:
      adminchain broadcast issue q-1 --quiesce maintenance --target b1 --target b2 --dead b3
      adminchain broadcast issue r-1 --release-handles /var/data --target b1 --ack-timeout 2s
    """
    if (quiesce is None) == (release_handles is None):
        raise UsageError("give exactly one operation: --quiesce REASON or --release-handles PATH")
    if not targets and not dead:
        raise UsageError("give at least one --target (or --dead) backend")
    operation: Quiesce | ReleaseHandles = (
        Quiesce(quiesce) if quiesce is not None else ReleaseHandles(str(release_handles))  # type: ignore[arg-type]
    )
    timeout = _millis(ack_timeout, "--ack-timeout")
    event = IssueBroadcast(
        subject=broadcast_id,
        id=op.event_id,
        actor=op.actor,
        operation=operation,
        targets=[Target(t, True) for t in targets] + [Target(d, False) for d in dead],
        ack_timeout_ms=5000 if timeout is None else timeout,
    )
    op.append(event)
