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
from ledger.ledger import Ledger
from projections.api import Views
from projections.state import PROJECTIONS, Folder
from projections.views import codec
from replay.rebuild import read_chunks

__all__ = ["derived_problem", "repair"]

REPAIR_HINT = "run `adminchain repair` to rebuild it from the log"


def derived_problem(ledger: Ledger, frozen: Ledger, indexes: IndexCheck) -> str | None:
    """What is wrong with the indexes (given every event of `frozen` through `indexes.add`) or
    the stored views of `ledger`; None when everything derived matches the log."""
    problem = indexes.problem(lambda position: frozen.get(position).event)
    if problem is None and ledger.backend.kind != "remote":  # a server's views: `replay`
        problem = views_problem(ledger)
    return None if problem is None else f"{problem}: {REPAIR_HINT}"


def views_problem(ledger: Ledger) -> str | None:
    """Fold the log to the views' tracking position and compare every state with what is
    stored, in one snapshot of the views (verdicts are not stored: `projections.views`). None
    when they match."""
    views = Views(ledger)
    with views.reader() as reader:
        tracking, size = reader.tracking(), reader.size()
        if tracking > size:
            return f"the stored views are at position {tracking}, beyond the log's end ({size})"
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


@dataclass(frozen=True, slots=True)
class Repaired:
    """What `repair` rebuilt."""

    indexed: int
    views_at: int


def repair(ledger: Ledger) -> Repaired:
    """Rebuild the indexes and the stored views from the log; nothing else changes."""
    indexed = ledger.backend.rebuild_indexes()
    return Repaired(indexed, Views(ledger).rebuild())
