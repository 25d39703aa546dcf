"""The ``status`` tables as plain aligned text: fast for ten thousand rows, ids never cut.

Rich lays a table out cell by cell and crops it to the terminal: seconds for 10k rows, and ids
cut at 80 columns. These tables are padded columns joined by two spaces, each line as long as it
needs to be (a terminal wraps it; a pipe gets it whole), with the state coloured on a terminal.
No Rich import here: ``status`` starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = ["Table", "document_tables", "policy_tables", "status_tables", "when"]

_ANSI: Final = {
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "red": "1;31",
    "dim": "2",
    "bold": "1",
}
STATE_COLOURS: Final = {
    "Active": "green",
    "EnteringMaintenance": "yellow",
    "Maintenance": "blue",
    "ExitingMaintenance": "cyan",
    "DrainFailed": "red",
    "Recovery": "magenta",
    "detached": "red",
    "attached": "green",
    "retry": "yellow",
    "refuse": "red",
    "all acked": "green",
    "complete": "yellow",
    "waiting": "dim",
}


def colour_enabled(out: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set."""
    return out.isatty() and "NO_COLOR" not in os.environ


Cell = str | tuple[str, str]
"""A cell: its text, or (text, colour name)."""


class Table:
    """Rows of cells, printed as aligned columns."""

    def __init__(self, *headers: str) -> None:
        self.headers = headers
        self.rows: list[Sequence[Cell]] = []

    def add(self, *cells: Cell) -> None:
        self.rows.append(cells)

    def lines(self, colour: bool) -> Iterable[str]:
        """The header and every row, aligned; the last column is not padded."""
        texts = [[c if isinstance(c, str) else c[0] for c in row] for row in self.rows]
        widths = [len(h) for h in self.headers]
        for texts_of_row in texts:
            for i, text in enumerate(texts_of_row):
                widths[i] = max(widths[i], len(text))
        last = len(widths) - 1
        yield "  ".join(h.ljust(widths[i]) for i, h in enumerate(self.headers)).rstrip()
        for row, text_row in zip(self.rows, texts, strict=True):
            parts: list[str] = []
            for i, (cell, text) in enumerate(zip(row, text_row, strict=True)):
                padded = text if i == last else text.ljust(widths[i])
                if colour and not isinstance(cell, str) and cell[1] in _ANSI:
                    padded = f"\x1b[{_ANSI[cell[1]]}m{text}\x1b[0m" + padded[len(text) :]
                parts.append(padded)
            yield "  ".join(parts).rstrip()


def when(value: str | None) -> str:
    """An RFC 3339 time to the second, in UTC (``2026-11-25 09:00:00Z``), or ``—``."""
    if not value:
        return "—"
    return value[:10] + " " + value[11:19] + "Z" if len(value) >= 19 else value


def _age(value: str | None, now: datetime) -> str:
    if not value:
        return ""
    try:
        then = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = int((now - then.astimezone(UTC)).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _maintenance(rows: dict[str, Any], now: datetime) -> Table:
    table = Table("node", "state", "since", "deadline", "reason")
    for node, s in rows.items():
        deadline = when(s["deadline"])
        if s["deadline_overdue"]:
            deadline += " (overdue)"
        since = f"{when(s['since'])} ({_age(s['since'], now)})" if s["since"] else "—"
        table.add(node, (s["state"], s["state"]), since, deadline, s["reason"] or "")
    return table


def _detachment(rows: dict[str, Any], now: datetime) -> Table:
    table = Table(
        "runner", "state", "detached at", "healthy since", "keep-alive failures", "reason"
    )
    for runner, s in rows.items():
        state = "detached" if s["detached"] else "attached"
        table.add(
            runner,
            (state, state),
            when(s["detached_at"]),
            when(s["healthy_since"]),
            str(s["keepalive_failures"]),
            s["reason"]["display"] if s["reason"] else "",
        )
    return table


def _recovery(rows: dict[str, Any], now: datetime) -> Table:
    table = Table("backend", "decision", "retry after", "crashes in window", "window started")
    for backend, s in rows.items():
        decision = s["decision"] or {}
        kind = decision.get("kind", "—")
        label = kind if kind != "refuse" else f"refuse ({decision.get('reason')})"
        table.add(
            backend,
            (label, kind),
            f"{decision.get('retry_after_ms', '—')} ms",
            str(s["crashes_in_window"]),
            when(s["window_started_at"]),
        )
    return table


def _membership(rows: dict[str, Any], now: datetime) -> Table:
    table = Table("cluster", "peers", "joined", "left")
    for cluster, s in rows.items():
        table.add(
            cluster,
            ", ".join(s["peers"]),
            (", ".join(s["joined"]), "green"),
            (", ".join(s["left"]), "red"),
        )
    return table


def _broadcasts(rows: dict[str, Any], now: datetime) -> Table:
    table = Table(
        "broadcast",
        "done",
        "operation",
        "acks",
        "timeouts",
        "failures",
        "skipped (dead)",
        "pending",
    )
    for broadcast, s in rows.items():
        op = s["operation"] or {}
        operation = f"{op.get('kind')} {op.get('reason') or op.get('path_prefix') or ''}".strip()
        done = (
            "all acked"
            if s["all_live_backends_acked"]
            else "complete"
            if s["complete"]
            else "waiting"
        )
        table.add(
            broadcast,
            (done, done),
            operation,
            ", ".join(s["acks"]),
            ", ".join(f"{t['backend']} ({t['timeout_ms']} ms)" for t in s["timeouts"]),
            ", ".join(f"{f['backend']} ({f['reason']})" for f in s["failures"]),
            ", ".join(s["skipped_dead"]),
            ", ".join(s["pending"]),
        )
    return table


TABLES: Final[dict[str, Callable[[dict[str, Any], datetime], Table]]] = {
    "maintenance": _maintenance,
    "detachment": _detachment,
    "recovery": _recovery,
    "membership": _membership,
    "broadcasts": _broadcasts,
}
_NOUNS: Final = {
    "maintenance": "node",
    "detachment": "runner",
    "recovery": "backend",
    "membership": "cluster",
    "broadcasts": "broadcast",
}


def _summary(name: str, matched: int, counts: dict[str, int], shown: int) -> str:
    noun = _NOUNS[name] + ("s" if matched != 1 else "")
    parts = ", ".join(f"{count} {label}" for label, count in counts.items())
    line = f"{name}: {matched} {noun}" + (f" — {parts}" if parts and name != "membership" else "")
    if shown < matched:
        line += f" (showing {shown}; --limit to change)"
    return line


def status_tables(report: Any, now: datetime, out: TextIO | None = None) -> bool:
    """Print a `projections.query.StatusReport`: per projection, the count per state, then the
    table. Returns False if there was nothing to show."""
    out = out or sys.stdout
    colour = colour_enabled(out)
    shown = False
    chunks: list[str] = []
    for name, rows in report.document.items():
        matched = report.matched.get(name, len(rows))
        if not rows and not matched:
            continue
        if shown:
            chunks.append("")
        shown = True
        title = _summary(name, matched, report.counts.get(name, {}), len(rows))
        chunks.append(f"\x1b[1m{title}\x1b[0m" if colour else title)
        if rows:
            chunks.extend(TABLES[name](rows, now).lines(colour))
    if shown:
        out.write("\n".join(chunks) + "\n")
        out.flush()
    return shown


def document_tables(document: dict[str, dict[str, Any]], now: datetime) -> None:
    """A whole ``status`` document (no filter), as `status_tables` prints it."""
    from projections.query import StatusFilter, status_report  # noqa: PLC0415

    status_tables(status_report(document, StatusFilter()), now)


def _ms(value: int) -> str:
    return f"{value} ms"


def policy_tables(document: dict[str, Any], out: TextIO | None = None) -> None:
    """``status policy``: the effective policy per subject; `*` marks a value from ``*``,
    nothing marks the subject's own, ``(default)`` the built-in default."""
    out = out or sys.stdout
    colour = colour_enabled(out)
    table = Table(
        "subject", "recover window", "keep-alive threshold", "retry backoff", "budget window"
    )
    rows = document["policy"]
    star = rows.get("*", {}).get("own") or {}
    fields = (
        ("recover_window_ms", _ms),
        ("keepalive_failure_threshold", str),
        ("retry_backoff_ms", _ms),
        ("budget_window_ms", _ms),
    )
    for subject, row in rows.items():
        cells: list[Cell] = [subject]
        for name, show in fields:
            text = show(row["effective"][name])
            if row["own"][name] is not None:
                cells.append(text)
            elif subject != "*" and star.get(name) is not None:
                cells.append((text + " (*)", "dim"))
            else:
                cells.append((text + " (default)", "dim"))
        table.add(*cells)
    out.write("\n".join(table.lines(colour)) + "\n")
    out.flush()
