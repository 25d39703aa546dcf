"""The audit report (SPEC §5 ``replay``): rebuild, count verdicts, list refusals, find divergence.

The stored states and their tracking position are read in one snapshot; the log is rebuilt,
and each projection's rebuilt state as of that position is compared with its stored state (by
digest, then subject by subject for the message), and every projection that differs is named in
``diverged``. A replay to an earlier position (``--to``) cannot be compared with views that are
further on, so it reports no divergence.

Views that are behind the log (right after a big append) are not caught up separately: the
replay folds the whole log anyway. It keeps its states as they stood at the views' tracking
position T and compares those with the stored states (which are as of T); folds are
deterministic, so when they are equal, catching the stored views up from T would give exactly
the replay's states at the end, and the replay writes those that changed since T, with the new
tracking position, as the catch-up would have. When they differ, the views are caught up the
ordinary way and compared at the end, as before. (A read-only ledger, an archive, is audited
against the views it holds, as they are; a server's against what it serves.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ledger.ledger import Ledger
from projections.api import KINDS, Views, status_document
from projections.base import Verdict
from projections.remote import RemoteViews, views_of
from projections.state import PROJECTIONS, Folder, decode_state, digest, encode_state
from replay import workers
from replay.audit_record import Audit, Rejected
from replay.parts import Part
from replay.rebuild import paused_gc, rebuild, trust_fold
from replay.sources import FolderSource

__all__ = ["AuditReport", "run_audit"]


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
    half the subjects (`Part`), and the halves are merged here: the same report, sooner. Views
    that are behind are brought up to the end by the replay itself (see the module docstring).
    """
    views = views_of(ledger)
    tracking, snapshot, stored, target = _starting_point(ledger, views, to, progress)
    other = None
    if target >= workers.PARALLEL_FROM:
        other = workers.start("audit", _Request(ledger.location, target, snapshot))
    try:
        audit = Audit(on_rejected=on_rejected if other is None else None)
        mine = Part(0, 2) if other is not None else None
        folder, at_snapshot, position = _fold(
            ledger, target, snapshot, audit, part=mine, progress=progress
        )
        if other is not None:
            half = _other_half(ledger, target, snapshot, other)
            _merge(folder, audit, half, half.states)
            if at_snapshot is not None:
                _merge(at_snapshot, None, half, half.states_at)
            audit.rejected.sort(key=lambda r: r.position)
            if on_rejected is not None:
                for item in audit.rejected:
                    on_rejected(item)
                audit.rejected.clear()
    finally:
        if other is not None:
            workers.stop(other)
    if snapshot is not None and isinstance(views, Views):
        assert at_snapshot is not None
        assert stored is not None
        diverged, differences = diverged_projections(at_snapshot, stored)
        if not diverged and views.advance(snapshot, position, _changes(at_snapshot, folder)):
            return AuditReport(position, audit.counts, audit.rejected, [], True)
        # the ordinary way: catch up, compare at the end
        tracking, stored = views.catch_up(), None
    same = position == tracking
    compared, diverged, differences = _compare(views, folder, same, tracking, stored)
    return AuditReport(position, audit.counts, audit.rejected, diverged, compared, differences)


def _starting_point(
    ledger: Ledger,
    views: Views | RemoteViews,
    to: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int | None, dict[str, dict[str, Any]] | None, int]:
    """(the views' tracking position, the snapshot position to keep states at or None, the
    stored states if read, the position to replay to) for `run_audit`."""
    if isinstance(views, RemoteViews):
        tracking = views.catch_up()
        return tracking, None, None, to if to is not None else tracking
    if to is None and not ledger.backend.read_only:
        # The stored states and the position they were folded to, from ONE snapshot.
        tracking, size, states = views.stored_states()
        snapshot = tracking if tracking < size else None
        return tracking, snapshot, states, size if snapshot is not None else tracking
    if not ledger.backend.read_only:  # an archive is audited against the views it holds
        views.catch_up(progress)
    tracking, stored = views.tracked_states(with_states=to is None)
    return tracking, None, stored, to if to is not None else tracking


def _compare(
    views: Views | RemoteViews,
    folder: Folder,
    compared: bool,
    tracking: int,
    stored: dict[str, dict[str, Any]] | None,
) -> tuple[bool, list[str], dict[str, list[str]]]:
    """(compared, diverged, differences) of the states rebuilt to the views' position
    `tracking` (if `compared`) against the views' `stored` states, or what a server serves."""
    diverged: list[str] = []
    differences: dict[str, list[str]] = {}
    if compared and isinstance(views, RemoteViews):
        diverged, differences = server_divergence(folder, views)
        if views.tracking() != tracking:  # the server moved on meanwhile: no comparison
            compared, diverged, differences = False, [], {}
    elif compared and isinstance(views, Views):
        if stored is None:  # the views' position was named: compare if they are still there
            now, stored = views.tracked_states()
            compared = now == tracking
        if compared and stored is not None:
            diverged, differences = diverged_projections(folder, stored)
    return compared, diverged, differences


@paused_gc()
def _fold(
    ledger: Ledger,
    target: int,
    snapshot: int | None,
    audit: Audit,
    *,
    part: Part | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Folder, Folder | None, int]:
    """Fold (a part of) the log to `target`; with `snapshot`, also keep the states as they
    stood at that position. Returns (states at the end, states at the snapshot, position)."""
    scaled = None if progress is None else (lambda done, _total: progress(done, target))
    if snapshot is None:
        folder, position = rebuild(ledger, target, audit=audit, progress=scaled, part=part)
        return folder, None, position
    trust = trust_fold(audit)
    folder, _ = rebuild(
        ledger, snapshot, audit=audit, progress=scaled, part=part, resume=(Folder(), 0, trust)
    )
    at_snapshot = folder.copy()
    folder, position = rebuild(
        ledger, target, audit=audit, progress=scaled, part=part,
        resume=(folder, snapshot, trust),
    )  # fmt: skip
    return folder, at_snapshot, position


def _changes(before: Folder, after: Folder) -> list[tuple[str, str, Any]]:
    """(projection, subject, state or None) for every state that differs from `before`."""
    changes: list[tuple[str, str, Any]] = []
    for name, table in after.states.items():
        old = before.states.get(name, {})
        for subject, state in table.items():
            if old.get(subject) != state:
                changes.append((name, subject, state))
        changes.extend((name, subject, None) for subject in old if subject not in table)
    return changes


_Encoded = dict[str, list[tuple[str, bytes]]]


class _Request(msgspec.Struct, array_like=True):
    """What the second process is asked: fold part 1 of 2 of the subjects of the ledger at
    `location` to `to` (and keep its states as they stood at `snapshot`)."""

    location: str
    to: int
    snapshot: int | None


class _Half(msgspec.Struct, array_like=True):
    """What the second process sends back: its part's audit and states (encoded), and with a
    snapshot position, its states as they stood there."""

    tally: list[tuple[Verdict, int]]
    rejections: dict[str, int]
    rejected: list[tuple[int, str, str, str, str | None, str | None]]
    states: _Encoded
    states_at: _Encoded = {}


def _encoded(folder: Folder) -> _Encoded:
    return {
        name: [(subject, encode_state(state)) for subject, state in table.items()]
        for name, table in folder.states.items()
    }


def _second_half(ledger: Ledger, target: int, snapshot: int | None) -> _Half:
    """Part 1 of 2 of the subjects folded to `target` and audited, as the worker sends it."""
    audit = Audit()
    folder, at_snapshot, _ = _fold(ledger, target, snapshot, audit, part=Part(1, 2))
    return _Half(
        list(audit.tally.items()),
        audit.rejections,
        [astuple(r) for r in audit.rejected],
        _encoded(folder),
        {} if at_snapshot is None else _encoded(at_snapshot),
    )


def _other_half(
    ledger: Ledger,
    target: int,
    snapshot: int | None,
    process: workers.Worker,
) -> _Half:
    """The second process's half, or (if it failed) the same half folded here."""
    try:
        return workers.receive(process, _HALF)
    except (workers.WorkerFailed, OSError):
        return _second_half(ledger, target, snapshot)


def _merge(folder: Folder, audit: Audit | None, half: _Half, states: _Encoded) -> None:
    """Add the other half's `states` (and with `audit`, its audit) to this one's (their subjects
    are disjoint; the settings for every subject, folded by both, are the same in both)."""
    if audit is not None:
        for verdict, count in half.tally:
            audit.tally[verdict] = audit.tally.get(verdict, 0) + count
        for name, count in half.rejections.items():
            audit.rejections[name] = audit.rejections.get(name, 0) + count
        audit.rejected.extend(Rejected(*r) for r in half.rejected)
    for name, rows in states.items():
        table = folder.states[name]
        for subject, data in rows:
            table.setdefault(subject, decode_state(name, data))


_REQUEST: Final = msgspec.msgpack.Decoder(_Request)
_HALF: Final = msgspec.msgpack.Decoder(_Half)


def work() -> None:
    """``python -m replay audit``: the second half of `run_audit`'s replay, one `_Half` message
    (none on a failure: the parent folds that half itself)."""
    request = workers.request(_REQUEST)
    with Ledger.open(request.location, create=False) as ledger:
        half = _second_half(ledger, request.to, request.snapshot)
    workers.send(half)
