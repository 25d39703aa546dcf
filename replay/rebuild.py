"""Rebuild every projection from the log, streaming: to a position, or as of a recorded time.

Memory is bounded by the number of subjects, not the number of events: events are read in
order, folded and dropped. The audit (`Audit`) counts verdicts per projection and hands each
rejected event to a callback (or keeps it), so a 5M-event log replays in the memory of a 1M one.

Events go through in small chunks (`read_chunks`, `decode_chunk`): a chunk is read from the
log, then decoded, then folded, so that each stage runs over many events while its code and
data are hot in the CPU caches (about a fifth faster than taking each event through every stage
in turn), and memory stays flat.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import msgspec

from ledger.codec import record_decoder
from ledger.errors import StorageError, UsageError
from ledger.events import TRUST_EVENTS, Event
from ledger.ledger import Ledger
from ledger.trust import TrustFold
from projections.base import Verdict
from projections.state import PROJECTIONS, Folder, shared

__all__ = [
    "CHUNK",
    "Audit",
    "FolderSource",
    "Part",
    "Progress",
    "Rejected",
    "as_of",
    "decode_chunk",
    "position_at",
    "read_chunks",
    "rebuild",
]

CHUNK: Final = 128
"""Events read, decoded and folded together (see the module's docstring)."""

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
    """Verdict counts per projection and the rejected events, gathered during a replay.

    `rebuild` tallies the verdicts that are not rejections (a few shared objects per projection:
    one dict update each) and hands each rejection to `reject`; `counts` sums them up by
    projection when asked.
    """

    rejected: list[Rejected] = field(default_factory=list)
    on_rejected: Callable[[Rejected], None] | None = None
    tally: dict[Verdict, int] = field(default_factory=dict)
    """How many times each verdict other than a rejection was given."""
    rejections: dict[str, int] = field(default_factory=dict)
    """How many rejections each projection (or pseudo-projection) gave."""

    def reject(self, position: int, event: Any, verdict: Verdict) -> None:
        """Count a rejection and keep it (or hand it to `on_rejected`)."""
        name = verdict.projection
        self.rejections[name] = self.rejections.get(name, 0) + 1
        item = Rejected(
            position, type(event).__name__, event.subject, name, verdict.reason, verdict.detail
        )
        if self.on_rejected is None:
            self.rejected.append(item)
        else:
            self.on_rejected(item)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """``{projection: {"applied": n, "idempotent": n, "rejected": n}}`` for every projection."""
        counts = {m.NAME: {"applied": 0, "idempotent": 0, "rejected": 0} for m in PROJECTIONS}
        for verdict, n in self.tally.items():
            if verdict.projection in counts:
                counts[verdict.projection][verdict.verdict] += n
        for name, n in self.rejections.items():
            if name in counts:
                counts[name]["rejected"] += n
        return counts


class FolderSource:
    """A replayed `Folder` as a `projections.api.StateSource` (for as-of ``status``)."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def subjects(self, projection: str) -> Iterator[tuple[str, Any]]:
        return iter(self.folder.states.get(projection, {}).items())

    def state(self, projection: str, subject: str) -> Any | None:
        return self.folder.states.get(projection, {}).get(subject)


def read_chunks(
    ledger: Ledger, start: int = 1, stop: int | None = None
) -> Iterator[list[tuple[int, bytes]]]:
    """The log's (position, stored bytes) from `start` to `stop` (default: the end), in lists of
    up to `CHUNK`, read through one snapshot."""
    return cast("Iterator[list[tuple[int, bytes]]]", ledger.read_chunks(start, stop, CHUNK))


def decode_chunk(chunk: list[tuple[int, bytes]]) -> list[Event]:
    """The events of a chunk; `StorageError` names the first position that cannot be decoded."""
    decode = record_decoder.decode
    try:
        return [decode(stored).event for _, stored in chunk]
    except msgspec.DecodeError:
        for position, stored in chunk:
            try:
                decode(stored)
            except msgspec.DecodeError as e:
                detail = f"position {position}: stored event cannot be decoded ({e})"
                raise StorageError(detail) from e
        raise


class Part:
    """One of `count` disjoint parts of the subjects, for folding a log in several processes.

    Every fold reads and writes only the states of its event's subject, plus the policy for all
    subjects (SPEC §2, `projections.state.touched`): so each part folds the events of its own
    subjects, and every part folds each event that writes a state every subject reads
    (`projections.state.shared`: a ``SetPolicy`` for ``*``), whose verdict only the part that
    owns its subject counts. Subjects are assigned by CRC-32 of their UTF-8 bytes, the same in
    every process.
    """

    def __init__(self, number: int, count: int) -> None:
        if not 0 <= number < count:
            raise UsageError(f"part {number} of {count} does not exist")
        self.number, self.count = number, count
        self._parts: dict[str, int] = {}

    def may_keep(self, subject: bytes, kind: bytes) -> bool:
        """False for an event (subject and type, UTF-8) that is surely another part's and read
        by none of this part's folds (no need to decode it); True for this part's, for ``*``
        and for the trust events, which every part follows (`keep` decides on the event)."""
        if subject == b"*" or kind in _TRUST_TYPES:
            return True
        return zlib.crc32(subject) % self.count == self.number

    def keep(self, event: Event) -> bool | None:
        """True: this part's event; False: another part's; None: fold it, but do not count it
        (a setting for every subject, counted by part 0)."""
        subject = event.subject
        part = self._parts.get(subject)
        if part is None:
            part = self._parts[subject] = zlib.crc32(subject.encode()) % self.count
        if part == self.number:
            return True
        return None if shared(event) else False


_TRUST_TYPES: Final = frozenset(t.__name__.encode() for t in TRUST_EVENTS)


def _drop(rejected: Rejected) -> None:
    """An `Audit.on_rejected` that keeps nothing (a rebuild without audit)."""


def rebuild(
    ledger: Ledger,
    to: int | None = None,
    *,
    audit: Audit | None = None,
    progress: Progress | None = None,
    every: int = 50_000,
    part: Part | None = None,
    resume: tuple[Folder, int, TrustFold | None] | None = None,
) -> tuple[Folder, int]:
    """Fold positions 1..`to` (default: all) into a fresh `Folder`; returns it and the position.

    With `audit`, operator events that break the trust rule (SPEC-server §8: signed by a key
    trusted at their position, from the log's own trust events; `ledger.trust.TrustFold`) are
    audited as rejected by the pseudo-projection ``signatures`` (they are still folded: the log
    is what it is). With `part`, only that part of the subjects is folded and audited (see
    `Part`); the trust events are followed in every part, whatever their subject. With `resume`,
    (a folder, the position it was folded to, the trust followed so far: see `trust_fold`),
    folding goes on from there into that folder.
    """
    size = ledger.size()
    if to is None:
        to = size
    elif not 0 <= to <= size:
        raise UsageError(f"--to {to} is beyond the log (it has {size} events)")
    folder, last, trust = resume if resume is not None else (Folder(), 0, trust_fold(audit))
    appliers = folder.appliers
    audit = Audit(on_rejected=_drop) if audit is None else audit
    tally, tally_get, reject = audit.tally, audit.tally.get, audit.reject
    keep = part.keep if part is not None else None
    may_keep = part.may_keep if part is not None else None
    for chunk in ledger.read_chunks(last + 1, to, CHUNK, may_keep):
        # positions come in increasing order: the chunk has no gap when it spans its length
        first = chunk[0][0]
        if first != last + 1 or chunk[-1][0] - first != len(chunk) - 1:
            missing = next(p for p, (q, _) in enumerate(chunk, last + 1) if p != q)
            raise StorageError(f"position {missing} is missing from the log")
        mine = [(p, stored) for p, stored in chunk if stored is not None]
        folding: Iterable[tuple[int, Event]] = (
            enumerate(decode_chunk(mine), first)
            if len(mine) == len(chunk)
            else zip((p for p, _ in mine), decode_chunk(mine), strict=True)
        )
        for position, event in folding:
            why = None
            if keep is not None and not (counted := keep(event)):
                if counted is None:  # a setting for every subject: folded, counted elsewhere
                    appliers[type(event)](event)
                if trust is not None and type(event) in TRUST_EVENTS:
                    trust.step(event, position)  # every part follows the trust set
                continue
            if trust is not None and type(event) in trust.watched:
                why = trust.step(event, position)
            for verdict in appliers[type(event)](event):
                if verdict.verdict == "rejected":
                    reject(position, event, verdict)
                else:
                    tally[verdict] = tally_get(verdict, 0) + 1
            if why is not None:
                reject(position, event, Verdict("signatures", "rejected", why))
        if progress is not None and (last + len(chunk)) // every != last // every:
            progress(last + len(chunk), to)
        last += len(chunk)
    if progress is not None:
        progress(last, to)
    return folder, last


def trust_fold(audit: Audit | None) -> TrustFold | None:
    """What `rebuild` follows the trust set with: with an `audit`, a fresh `TrustFold`."""
    return TrustFold() if audit is not None else None


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
