"""Rebuild every projection from the log, streaming: to a position, or as of a recorded time.

Memory is bounded by the number of subjects, not the number of events: events are read in
order, folded and dropped. The audit (`Audit`) counts verdicts per projection and hands each
rejected event to a callback (or keeps it), so a 5M-event log replays in the memory of a 1M one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ledger.codec import record_decoder
from ledger.errors import StorageError, UsageError
from ledger.ledger import Ledger
from ledger.signing import TrustPolicy
from projections.base import Verdict
from projections.state import PROJECTIONS, Folder

__all__ = ["Audit", "FolderSource", "Progress", "Rejected", "as_of", "position_at", "rebuild"]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` during long work (the CLI draws a bar with it)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """One event a projection refused, for the audit report (SPEC §5 ``replay``)."""

    position: int
    type: str
    subject: str
    projection: str
    reason: str | None
    detail: str | None


@dataclass(slots=True)
class Audit:
    """Verdict counts per projection and the rejected events, gathered during a replay."""

    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            m.NAME: {"applied": 0, "idempotent": 0, "rejected": 0} for m in PROJECTIONS
        }
    )
    signature_problems: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    on_rejected: Callable[[Rejected], None] | None = None

    def record(self, position: int, event: Any, verdicts: list[Verdict]) -> None:
        """Count one event's verdicts; keep (or hand on) its rejections."""
        for verdict in verdicts:
            if verdict.projection in self.counts:
                self.counts[verdict.projection][verdict.verdict] += 1
            else:
                self.signature_problems += 1
            if verdict.verdict == "rejected":
                item = Rejected(
                    position,
                    type(event).__name__,
                    event.subject,
                    verdict.projection,
                    verdict.reason,
                    verdict.detail,
                )
                if self.on_rejected is None:
                    self.rejected.append(item)
                else:
                    self.on_rejected(item)


class FolderSource:
    """A replayed `Folder` as a `projections.api.StateSource` (for as-of ``status``)."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        return iter(self.folder.states.get(projection, {}).items())

    def state(self, projection: str, subject: str) -> Any | None:
        return self.folder.states.get(projection, {}).get(subject)


def rebuild(
    ledger: Ledger,
    to: int | None = None,
    *,
    audit: Audit | None = None,
    progress: Progress | None = None,
    every: int = 50_000,
    trust: TrustPolicy | None = None,
) -> tuple[Folder, int]:
    """Fold positions 1..`to` (default: all) into a fresh `Folder`; returns it and the position.

    With `trust`, operator events that break the signing policy are audited as rejected by
    the pseudo-projection ``signatures`` (they are still folded: the log is what it is).
    """
    size = ledger.size()
    if to is None:
        to = size
    elif not 0 <= to <= size:
        raise UsageError(f"--to {to} is beyond the log (it has {size} events)")
    folder = Folder()
    apply, decode, record = folder.apply, record_decoder.decode, audit.record if audit else None
    last = position = 0
    try:
        for position, stored in ledger.read_stored(1, to):
            if position != last + 1:
                raise StorageError(f"position {last + 1} is missing from the log")
            event = decode(stored).event
            verdicts = apply(event)
            if record is not None:
                record(position, event, verdicts)
                if trust is not None:
                    problem = trust.problem(event, position)
                    if problem is not None:
                        record(position, event, [Verdict("signatures", "rejected", problem)])
            last = position
            if progress is not None and position % every == 0:
                progress(position, to)
    except msgspec.DecodeError as e:
        raise StorageError(f"position {position}: stored event cannot be decoded ({e})") from e
    if progress is not None:
        progress(last, to)
    return folder, last


def position_at(ledger: Ledger, when: datetime) -> int:
    """The last position recorded at or before `when` (0 if none), by the ledger's clock."""
    lo, hi = 0, ledger.size()
    while lo < hi:  # recorded_at is non-decreasing in position: binary search
        mid = (lo + hi + 1) // 2
        if ledger.get(mid).recorded_at <= when:
            lo = mid
        else:
            hi = mid - 1
    return lo


def as_of(
    ledger: Ledger, position: int | None = None, when: datetime | None = None
) -> tuple[Folder, int]:
    """Every projection as it stood at a position, or at a recorded time."""
    if when is not None:
        position = position_at(ledger, when)
    return rebuild(ledger, position)
