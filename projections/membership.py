"""Membership projection (SPEC §2.4): a cluster's peer set, diffed observation by observation.

`MembershipObserved` carries the full current peer set. The fold diffs it against the previous set
(empty before the first observation): ``joined`` and ``left`` (sorted), the current ``peers``
(sorted, duplicates collapsed) and a history of deltas. An identical set is ``idempotent`` and
changes nothing (``joined``/``left`` stay the last real delta).

Where SPEC is silent:

- the history keeps the last `HISTORY_LIMIT` (100) deltas, oldest first, each with its ``at``;
  older ones are dropped (the log keeps them all);
- observations apply in log order, whatever their ``at``: each is a full snapshot, so the
  latest recorded one is the truth;
- an empty first observation is ``idempotent`` (nothing joined, nothing left: no entry).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypeAlias

import msgspec

from ledger.events import Event, MembershipObserved
from projections.base import Fold, Policy, Verdict, at_of, verdicts

__all__ = [
    "FOLDS",
    "HANDLES",
    "HISTORY_LIMIT",
    "NAME",
    "STATE",
    "MembershipDelta",
    "MembershipState",
    "fold",
    "view",
]

NAME: Final = "membership"
HISTORY_LIMIT: Final = 100


class MembershipDelta(msgspec.Struct, frozen=True):
    """Who joined and who left at one observation."""

    at: datetime
    joined: tuple[str, ...]
    left: tuple[str, ...]


class MembershipState(msgspec.Struct, frozen=True):
    """A cluster's current peers, the last delta, and the recent deltas (at most 100)."""

    peers: tuple[str, ...]
    joined: tuple[str, ...]
    left: tuple[str, ...]
    history: tuple[MembershipDelta, ...] = ()


STATE: Final = MembershipState

_APPLIED, _IDEMPOTENT = verdicts(NAME)

Result: TypeAlias = tuple[MembershipState | None, Verdict]


def _observed(state: MembershipState | None, event: MembershipObserved, policy: Policy) -> Result:
    current = frozenset(event.peers)
    previous = frozenset(() if state is None else state.peers)
    if current == previous:
        return state, _IDEMPOTENT
    joined = tuple(sorted(current - previous))
    left = tuple(sorted(previous - current))
    delta = MembershipDelta(at_of(event), joined, left)
    history = (delta,) if state is None else (*state.history[1 - HISTORY_LIMIT :], delta)
    return MembershipState(tuple(sorted(current)), joined, left, history), _APPLIED


FOLDS: Final[dict[type[Event], Fold]] = {MembershipObserved: _observed}
"""The fold of each event type this projection handles."""

HANDLES: Final[tuple[type[Event], ...]] = tuple(FOLDS)


def fold(state: MembershipState | None, event: Event, policy: Policy) -> Result:
    """Fold one observation into a cluster's state. `policy` is unused."""
    return FOLDS[type(event)](state, event, policy)


def view(subject: str, state: MembershipState | None, now: datetime | None) -> dict[str, Any]:
    """The SPEC §5 ``status --json`` object for one cluster (``joined``, ``left``: last delta)."""
    if state is None:
        return {"peers": [], "joined": [], "left": []}
    return {"peers": list(state.peers), "joined": list(state.joined), "left": list(state.left)}
