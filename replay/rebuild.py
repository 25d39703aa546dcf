"""Rebuild every projection from the log, streaming: to a position, or as of a recorded time.

Memory is bounded by the number of subjects, not the number of events: events are read in
order, folded and dropped. The audit (`replay.audit_record.Audit`) counts verdicts per
projection and hands each rejected event to a callback (or keeps it), so a 5M-event log replays
in the memory of a 1M one.

Events go through in small chunks (`read_chunks`, `ledger.codec.decode_chunk`): a chunk is read
from the log, then decoded, then folded, so that each stage runs over many events while its code
and data are hot in the CPU caches (about a fifth faster than taking each event through every
stage in turn), and memory stays flat.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final, cast

from ledger.codec import decode_chunk
from ledger.errors import StorageError, UsageError
from ledger.events import TRUST_EVENTS, Event
from ledger.ledger import Ledger
from ledger.trust import TrustFold
from projections.base import Verdict
from projections.state import Folder
from replay.audit_record import Audit, Rejected
from replay.parts import Part
from replay.sources import FolderSource

__all__ = [
    "CHUNK",
    "FolderSource",  # re-exported: adminchain/server/app.py imports it from here
    "Progress",
    "as_of",
    "paused_gc",
    "position_at",
    "read_chunks",
    "rebuild",
    "trust_fold",
]

CHUNK: Final = 128
"""Events read, decoded and folded together (see the module's docstring)."""

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` during long work (the CLI draws a bar with it)."""


def read_chunks(
    ledger: Ledger, start: int = 1, stop: int | None = None
) -> Iterator[list[tuple[int, bytes]]]:
    """The log's (position, stored bytes) from `start` to `stop` (default: the end), in lists of
    up to `CHUNK`, read through one snapshot."""
    return cast("Iterator[list[tuple[int, bytes]]]", ledger.read_chunks(start, stop, CHUNK))


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a long fold (its passes over the young events and
    states cost some 5%; a fold makes no cycles: reference counting frees what it drops), back
    on after it if it was on. Also a decorator."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    `replay.parts.Part`); the trust events are followed in every part, whatever their subject.
    With `resume`, (a folder, the position it was folded to, the trust followed so far: see
    `trust_fold`), folding goes on from there into that folder.
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
    for done, events in _read(ledger, last, to, may_keep):
        for position, event in events:
            if keep is not None and not (counted := keep(event)):
                _follow(event, position, counted, appliers, trust)
                continue
            why = None
            if trust is not None and type(event) in trust.watched:
                why = trust.step(event, position)
            for verdict in appliers[type(event)](event):
                if verdict.verdict == "rejected":
                    reject(position, event, verdict)
                else:
                    tally[verdict] = tally_get(verdict, 0) + 1
            if why is not None:
                reject(position, event, Verdict("signatures", "rejected", why))
        if progress is not None and done // every != last // every:
            progress(done, to)
        last = done
    if progress is not None:
        progress(last, to)
    return folder, last


def _read(
    ledger: Ledger, last: int, to: int, may_keep: Callable[[bytes, bytes], bool] | None
) -> Iterator[tuple[int, Iterable[tuple[int, Event]]]]:
    """(a chunk's last position, its (position, event)) from position `last` + 1 to `to`. With
    `may_keep` (a part), through the backend's own read of the events it may keep where it has
    one (LMDB's `read_kept`: the others' events are not even listed), else chunk by chunk
    (`_events_of`). `StorageError` names a missing position."""
    read_kept = None if may_keep is None else getattr(ledger.backend, "read_kept", None)
    if read_kept is None or may_keep is None:
        for chunk in ledger.read_chunks(last + 1, to, CHUNK, may_keep):
            yield last + len(chunk), _events_of(chunk, last)
            last += len(chunk)
        return
    chunks: Iterator[tuple[int, list[tuple[int, bytes]]]] = read_kept(last + 1, to, CHUNK, may_keep)
    for done, kept in chunks:
        yield done, zip([p for p, _ in kept], decode_chunk(kept), strict=True)
        last = done
    if last < to:
        raise StorageError(f"position {last + 1} is missing from the log")


def _events_of(chunk: list[tuple[int, bytes | None]], last: int) -> Iterable[tuple[int, Event]]:
    """(position, event) of a chunk that follows position `last`, without the events a part left
    undecoded (stored bytes None); `StorageError` if a position is missing."""
    # positions come in increasing order: the chunk has no gap when it spans its length
    first = chunk[0][0]
    if first != last + 1 or chunk[-1][0] - first != len(chunk) - 1:
        missing = next(p for p, (q, _) in enumerate(chunk, last + 1) if p != q)
        raise StorageError(f"position {missing} is missing from the log")
    mine = [(p, stored) for p, stored in chunk if stored is not None]
    if len(mine) == len(chunk):
        return enumerate(decode_chunk(mine), first)
    return zip((p for p, _ in mine), decode_chunk(mine), strict=True)


def _follow(
    event: Event,
    position: int,
    counted: bool | None,
    appliers: dict[type, Callable[[Event], list[Verdict]]],
    trust: TrustFold | None,
) -> None:
    """Another part's event that reached this part: a setting for every subject is folded (and
    counted by its own part), a trust event followed (every part follows the trust set)."""
    if counted is None:
        appliers[type(event)](event)
    if trust is not None and type(event) in TRUST_EVENTS:
        trust.step(event, position)


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
