"""Everything derived from the log, checked against it (`derived_problem`) and rebuilt (`repair`).

Derived: the backend's indexes (the id index that idempotency relies on, the subject index that
``history`` reads: see `ledger.backend.IndexCheck`) and the stored views (every subject's state
and the tracking position; verdicts are recomputed, not stored). `verify` calls
`derived_problem` once the log itself has verified; `repair` rebuilds all of it from the log and
touches nothing else (not the log, not the Merkle tree, not the checkpoints, not the settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.backend import IndexCheck
from ledger.codec import decode_chunk
from ledger.errors import StorageError
from ledger.ledger import Ledger
from projections.api import Views
from projections.state import PROJECTIONS, Folder, digest
from projections.views import ViewTxn, codec
from replay.rebuild import read_chunks

__all__ = ["derived_problem", "repair"]

REPAIR_HINT = "run `adminchain repair` to rebuild it from the log"


def derived_problem(
    ledger: Ledger, frozen: Ledger, indexes: IndexCheck, folded: tuple[int, bytes] | None = None
) -> str | None:
    """What is wrong with the indexes (given every event of `frozen` through `indexes.add`) or
    the stored views of `ledger`; None when everything derived matches the log. `folded`: the
    projection digest of the log's first N events, (N, digest), if the caller has it."""
    problem = indexes.problem(lambda position: frozen.get(position).event)
    if problem is None and ledger.backend.kind != "remote":  # a server's views: `replay`
        problem = views_problem(ledger, folded)
    return None if problem is None else f"{problem}: {REPAIR_HINT}"


def views_problem(ledger: Ledger, folded: tuple[int, bytes] | None = None) -> str | None:
    """Fold the log to the views' tracking position and compare every state with what is
    stored, in one snapshot of the views (verdicts are not stored: `projections.views`). None
    when they match. With `folded`, (N, the projection digest of the log's first N events) and
    the views at N: the stored states' digest is compared with it instead (`verify` has it
    folded by its second process); only if they differ is the log folded here, to name what
    differs."""
    views = Views(ledger)
    with views.reader() as reader:
        tracking, size = reader.tracking(), reader.size()
        if tracking > size:
            return f"the stored views are at position {tracking}, beyond the log's end ({size})"
        if folded is not None and folded[0] == tracking and _digest_of(reader) == folded[1]:
            return None
        folder = Folder()
        appliers = folder.appliers
        for chunk in read_chunks(ledger, 1, tracking):
            for event in decode_chunk(chunk):
                appliers[type(event)](event)
        for module in PROJECTIONS:
            name = module.NAME
            mine = {s: codec.encode(state) for s, state in folder.states.get(name, {}).items()}
            for subject, data in reader.scan(name):
                if mine.pop(subject, None) != data:
                    return f"the stored {name} state of {subject!r} differs from the log's"
            if mine:
                return f"the stored {name} state of {min(mine)!r} is missing"
    return None


def _digest_of(reader: ViewTxn) -> bytes | None:
    """The projection digest of the stored states (None: one cannot be decoded)."""
    try:
        stored = {
            m.NAME: {s: codec.decode_state(m.NAME, data) for s, data in reader.scan(m.NAME)}
            for m in PROJECTIONS
        }
    except StorageError:
        return None
    return digest(stored)


@dataclass(frozen=True, slots=True)
class Repaired:
    """What `repair` rebuilt."""

    indexed: int
    views_at: int


def repair(ledger: Ledger) -> Repaired:
    """Rebuild the indexes and the stored views from the log; nothing else changes."""
    indexed = ledger.backend.rebuild_indexes()
    return Repaired(indexed, Views(ledger).rebuild())
