"""`adminchain demo`: a guided scenario on a fresh embedded ledger, narrated step by step.

The scenario uses a simulated clock (each event carries its own `at`), so the windows it shows —
the runner's recovery window, the backend's crash budget — behave the same on every run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.panel import Panel
from rich.text import Text

from adminchain import plain, render
from adminchain.cli import emit_json, json_option, main
from ledger.events import (
    BackendCrashed,
    BroadcastAcked,
    BroadcastTimedOut,
    EnterMaintenance,
    Event,
    ExitMaintenance,
    HealthObserved,
    IssueBroadcast,
    KeepAliveFailed,
    MaintenanceObserved,
    MembershipObserved,
    Quiesce,
    Target,
)
from ledger.ledger import Ledger
from ledger.notes import Signer
from projections.api import Views
from replay.audit import run_audit
from replay.integrity import make_checkpoint, verify

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """The scenario's clock: seconds after 09:00 UTC."""
    return T0 + timedelta(seconds=seconds)


class Narrator:
    """Prints the story (unless quiet) and collects what happened for ``--json``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.steps: list[dict[str, Any]] = []
        self.number = 0

    def step(self, title: str, story: str) -> None:
        self.number += 1
        self.steps.append({"step": self.number, "title": title, "events": []})
        if not self.quiet:
            render.console.print()
            panel = Panel(Text(story), title=f"[bold]{self.number}. {title}", title_align="left")
            render.console.print(panel, width=min(render.console.width, 100))

    def appended(self, views: Views, event: Event, *, who: str) -> None:
        result = views.ledger.append(event)
        verdicts = views.history(event.subject)
        mine = next(row for row in verdicts if row["position"] == result.position)["verdicts"]
        self.steps[-1]["events"].append(
            {
                "position": result.position,
                "type": type(event).__name__,
                "subject": event.subject,
                "verdicts": mine,
            }
        )
        if self.quiet:
            return
        marks = []
        for v in mine:
            style = render.VERDICT_STYLES[v["verdict"]]
            reason = f": {v['reason']}" if v.get("reason") else ""
            detail = f" ({v['detail']})" if v.get("detail") else ""
            marks.append(f"[{style}]{v['projection']} {v['verdict']}{reason}{detail}[/]")
        render.console.print(
            f"  [dim]#{result.position:<3}[/] {who:<7} [bold]{type(event).__name__}[/] "
            f"{event.subject}  →  " + "; ".join(marks)
        )

    def show(self, views: Views, kind: str, subject: str, now: datetime) -> None:
        if not self.quiet:
            plain.document_tables(views.status(kind, subject, now=now), now)


@contextmanager
def _ledger_dir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        if (path / "data.mdb").exists():
            raise click.UsageError(f"{path} already holds a ledger; give a new folder to --keep")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="adminchain-demo-") as tmp:
        yield Path(tmp) / "demo.lmdb"


def run_demo(path: Path, *, quiet: bool = False) -> dict[str, Any]:
    """Play the scenario on a new ledger at `path`; returns a summary."""
    say = Narrator(quiet)
    with Ledger.open(path) as log:
        views = Views(log)
        say.step(
            "An operator drains a node",
            "alice puts node-7 into maintenance for a kernel upgrade, with a 30-minute deadline.",
        )
        say.appended(
            views,
            EnterMaintenance(
                subject="node-7",
                actor="alice",
                at=at(0),
                reason="kernel upgrade",
                deadline=at(1800),
            ),
            who="alice",
        )
        say.step("The drain fails", "The reconciler cannot evict two pods and reports DrainFailed.")
        say.appended(
            views,
            MaintenanceObserved(
                subject="node-7", state="DrainFailed", reason="2 pods would not evict", at=at(600)
            ),
            who="loop",
        )
        say.show(views, "maintenance", "node-7", at(620))
        say.step(
            "The operator forces the exit",
            "A plain exit from DrainFailed is refused (needs_force); alice forces it.",
        )
        say.appended(
            views, ExitMaintenance(subject="node-7", actor="alice", at=at(700)), who="alice"
        )
        say.appended(
            views,
            ExitMaintenance(subject="node-7", actor="alice", at=at(705), force=True),
            who="alice",
        )
        say.step(
            "A late 'drain failed' arrives",
            "A slow loop replays its old DrainFailed observation. It must not undo the forced "
            "exit: "
            "ExitingMaintenance -> DrainFailed is not a valid successor.",
        )
        say.appended(
            views,
            MaintenanceObserved(
                subject="node-7", state="DrainFailed", reason="2 pods would not evict", at=at(610)
            ),
            who="loop",
        )
        say.show(views, "maintenance", "node-7", at(720))

        say.step(
            "A runner loses its keep-alives",
            "runner-a misses 3 keep-alives in a row (the threshold) and is detached.",
        )
        for second in (800, 805, 810):
            say.appended(views, KeepAliveFailed(subject="runner-a", at=at(second)), who="health")
        say.show(views, "detachment", "runner-a", at(811))
        say.step(
            "...and re-attaches after its healthy window",
            "The first healthy signal starts the 500 ms recovery window; one a second later "
            "re-attaches it.",
        )
        say.appended(
            views, HealthObserved(subject="runner-a", healthy=True, at=at(820)), who="health"
        )
        say.appended(
            views, HealthObserved(subject="runner-a", healthy=True, at=at(821)), who="health"
        )
        say.show(views, "detachment", "runner-a", at(822))

        say.step(
            "A backend crashes twice",
            "The first crash in the budget window gets one retry after 250 ms; the second is "
            "refused "
            "with a retry-after for the rest of the 60 s window.",
        )
        say.appended(views, BackendCrashed(subject="broker-1/search/v3", at=at(900)), who="broker")
        say.appended(views, BackendCrashed(subject="broker-1/search/v3", at=at(915)), who="broker")
        say.show(views, "recovery", "broker-1/search/v3", at(916))

        say.step(
            "A quiesce broadcast",
            "alice asks three backends to drain; b3 is dead and skipped. b1 acks, b2 times out, "
            "and "
            "b2's ack, arriving after its timeout, is refused as late.",
        )
        say.appended(
            views,
            MembershipObserved(
                subject="cluster-east", peers=["node-1", "node-7", "node-9"], at=at(950)
            ),
            who="poller",
        )
        say.appended(
            views,
            IssueBroadcast(
                subject="quiesce-42",
                actor="alice",
                at=at(1000),
                operation=Quiesce("maintenance"),
                targets=[Target("b1"), Target("b2"), Target("b3", live=False)],
                ack_timeout_ms=2000,
            ),
            who="alice",
        )
        say.appended(
            views, BroadcastAcked(subject="quiesce-42", backend="b1", at=at(1000.4)), who="broker"
        )
        say.appended(
            views, BroadcastTimedOut(subject="quiesce-42", backend="b2", at=at(1002)), who="broker"
        )
        say.appended(
            views, BroadcastAcked(subject="quiesce-42", backend="b2", at=at(1003)), who="broker"
        )
        say.show(views, "broadcasts", "quiesce-42", at(1004))

        say.step(
            "The auditor replays the log",
            "Every projection is rebuilt from the log and compared with the stored views.",
        )
        report = run_audit(log)
        if not quiet:
            render.replay_report(report)
        say.step(
            "Checkpoint and verify",
            "A signed checkpoint (C2SP tlog-checkpoint) pins the tree root and the projection "
            "digest; "
            "verify recomputes both from the stored events.",
        )
        signer = Signer.generate("demo-auditor")
        checkpoint, note = make_checkpoint(views, signer)
        result = verify(log, verifiers=[signer.verifier])
        if not quiet:
            render.checkpoint_note(checkpoint, note, signed=True)
            render.verify_result(result)
        return {
            "ledger": str(path),
            "events": log.size(),
            "steps": say.steps,
            "replay": report.to_json(),
            "checkpoint": {"size": checkpoint.size, "root": checkpoint.root.hex(), "note": note},
            "verify": result.to_json(),
        }


@main.command()
@click.option(
    "--keep", metavar="DIR", help="Keep the demo ledger in DIR (default: a temporary folder)."
)
@json_option
def demo(keep: str | None, as_json: bool) -> None:
    """Play a guided scenario on a fresh embedded ledger, narrated step by step.

    An operator drains a node, the drain fails, the operator forces the exit and a late
    "drain failed" is refused; a runner detaches and re-attaches; a backend crashes twice; a
    quiesce broadcast collects acks and a timeout; then the log is replayed, checkpointed and
    verified.

    \b
    Example:
      adminchain demo
      adminchain demo --keep ./demo.lmdb && adminchain status --ledger ./demo.lmdb
    """
    with _ledger_dir(keep) as path:
        summary = run_demo(path, quiet=as_json)
    if as_json:
        emit_json(summary)
    elif keep:
        render.console.print(
            f"\nthe demo ledger is kept in {keep}: try `adminchain history node-7 --ledger {keep}`"
        )
