"""The audit report (SPEC §5 ``replay``): rebuild, count verdicts, list refusals, find divergence.

The stored views are caught up first, then their states and tracking position are read in one
snapshot; the log is rebuilt to that position, and each projection's rebuilt state is compared
with its stored state (by digest, then subject by subject for the
message), and every projection that differs is named in ``diverged``. A replay to an earlier
position (``--to``) cannot be compared with views that are further on, so it reports no
divergence.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger.ledger import Ledger
from projections.api import KINDS, Views, status_document
from projections.base import Verdict
from projections.remote import RemoteViews, views_of
from projections.state import PROJECTIONS, Folder, decode_state, digest, encode_state
from replay import workers
from replay.rebuild import Audit, FolderSource, Part, Rejected, rebuild

__all__ = ["AuditReport", "diverged_projections", "run_audit"]


@dataclass(slots=True)
class AuditReport:
    """What ``replay`` prints: counts per projection, refusals, divergence."""

    position: int
    counts: dict[str, dict[str, int]]
    rejected: list[Rejected]
    diverged: list[str]
    compared: bool
    differences: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "projections": self.counts,
            "rejected": [
                {
                    "position": r.position,
                    "type": r.type,
                    "subject": r.subject,
                    "projection": r.projection,
                    "reason": r.reason,
                    "detail": r.detail,
                }
                for r in self.rejected
            ],
            "diverged": self.diverged,
        }


def diverged_projections(
    rebuilt: Folder, stored: dict[str, dict[str, Any]]
) -> tuple[list[str], dict[str, list[str]]]:
    """Projections whose stored state differs from the rebuilt one, and the subjects that do."""
    names: list[str] = []
    differences: dict[str, list[str]] = {}
    for module in PROJECTIONS:
        name = module.NAME
        mine, theirs = rebuilt.states.get(name, {}), stored.get(name, {})
        if mine == theirs or digest({name: mine}) == digest({name: theirs}):
            continue  # equal states have equal digests: the digest only decides the rest
        names.append(name)
        differences[name] = sorted(
            s for s in set(mine) | set(theirs) if mine.get(s) != theirs.get(s)
        )
    return names, differences


def server_divergence(
    rebuilt: Folder, views: RemoteViews
) -> tuple[list[str], dict[str, list[str]]]:
    """Projections whose ``status`` on the server differs from the one folded here.

    A server is compared by what it serves: its ``status`` document at one fixed time against
    the document of the states folded here from the log, subject by subject (SPEC-server §7.3:
    a server that lies about its state is named as diverged)."""
    moment = datetime.now(UTC)
    mine = _builtins(status_document(FolderSource(rebuilt), now=moment))
    theirs = views.status(now=moment)
    names: list[str] = []
    differences: dict[str, list[str]] = {}
    for name in KINDS:
        a, b = mine.get(name, {}), theirs.get(name, {})
        if a != b:
            names.append(name)
            differences[name] = sorted(s for s in set(a) | set(b) if a.get(s) != b.get(s))
    return names, differences


def _builtins(document: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A document as it reads once sent as JSON (times as strings, tuples as lists)."""
    decoded: dict[str, dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(document))
    return decoded


def run_audit(
    ledger: Ledger,
    to: int | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> AuditReport:
    """Rebuild every projection to `to` (default: the end), audit it, compare with the views.

    A long replay is shared with a second process (`replay.workers`): each folds the events of
    half the subjects (`Part`), and the halves are merged here: the same report, sooner.
    """
    views = views_of(ledger)
    stored: dict[str, dict[str, Any]] | None = None
    if isinstance(views, RemoteViews):
        tracking = views.catch_up()
    else:
        if not ledger.backend.read_only:  # an archive is audited against the views it holds
            views.catch_up()
        # The stored states and the position they were folded to, from ONE snapshot: the
        # rebuild to that position is then compared like with like, however far others catch
        # up meanwhile.
        tracking, stored = views.tracked_states(with_states=to is None)
    target = to if to is not None else tracking
    other = None
    if target >= workers.PARALLEL_FROM:
        request = {"location": ledger.location, "to": target}
        other = workers.start("audit", request)
    try:
        audit = Audit(on_rejected=on_rejected if other is None else None)
        mine = Part(0, 2) if other is not None else None
        folder, position = rebuild(ledger, target, audit=audit, progress=progress, part=mine)
        if other is not None:
            _merge(folder, audit, _other_half(ledger, target, other))
            audit.rejected.sort(key=lambda r: r.position)
            if on_rejected is not None:
                for item in audit.rejected:
                    on_rejected(item)
                audit.rejected.clear()
    finally:
        if other is not None:
            workers.stop(other)
    compared = position == tracking
    diverged: list[str] = []
    differences: dict[str, list[str]] = {}
    if compared and isinstance(views, RemoteViews):
        diverged, differences = server_divergence(folder, views)
        if views.tracking() != tracking:  # the server moved on meanwhile: no comparison
            compared, diverged, differences = False, [], {}
    elif compared and isinstance(views, Views):
        if stored is None:  # --to named the views' position: compare if they are still there
            now, stored = views.tracked_states()
            compared = now == tracking
        if compared and stored is not None:
            diverged, differences = diverged_projections(folder, stored)
    return AuditReport(position, audit.counts, audit.rejected, diverged, compared, differences)


class _Half(msgspec.Struct, array_like=True):
    """What the second process sends back: its part's audit and states (encoded)."""

    tally: list[tuple[Verdict, int]]
    rejections: dict[str, int]
    rejected: list[tuple[int, str, str, str, str | None, str | None]]
    states: dict[str, list[tuple[str, bytes]]]


def _second_half(ledger: Ledger, target: int) -> _Half:
    """Part 1 of 2 of the subjects folded to `target` and audited, as the worker sends it."""
    audit = Audit()
    folder, _ = rebuild(ledger, target, audit=audit, part=Part(1, 2))
    return _Half(
        list(audit.tally.items()),
        audit.rejections,
        [astuple(r) for r in audit.rejected],
        {
            name: [(subject, encode_state(state)) for subject, state in table.items()]
            for name, table in folder.states.items()
        },
    )


def _other_half(ledger: Ledger, target: int, process: subprocess.Popen[bytes]) -> _Half:
    """The second process's half, or (if it failed) the same half folded here."""
    assert process.stdout is not None
    try:
        return msgspec.msgpack.decode(process.stdout.read(), type=_Half)
    except (msgspec.DecodeError, OSError):
        return _second_half(ledger, target)


def _merge(folder: Folder, audit: Audit, half: _Half) -> None:
    """Add the other half's states and audit to this one's (their subjects are disjoint; the
    settings for every subject, folded by both, are the same in both)."""
    for verdict, count in half.tally:
        audit.tally[verdict] = audit.tally.get(verdict, 0) + count
    for name, count in half.rejections.items():
        audit.rejections[name] = audit.rejections.get(name, 0) + count
    audit.rejected.extend(Rejected(*r) for r in half.rejected)
    for name, rows in half.states.items():
        table = folder.states[name]
        for subject, data in rows:
            table.setdefault(subject, decode_state(name, data))


def work() -> None:
    """``python -m replay audit``: the second half of `run_audit`'s replay, as `_Half` msgpack on
    stdout (nothing on a failure: the parent folds that half itself)."""
    request = workers.request()
    with Ledger.open(request["location"], create=False) as ledger:
        half = msgspec.msgpack.encode(_second_half(ledger, request["to"]))
    sys.stdout.buffer.write(half)
    sys.stdout.buffer.flush()
