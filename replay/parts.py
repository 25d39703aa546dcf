"""Disjoint parts of the subjects, for folding one log in several processes (`replay.workers`)."""

from __future__ import annotations

import zlib
from typing import Final

from ledger.errors import UsageError
from ledger.events import TRUST_EVENTS, Event, event_types
from projections.state import SHARED_KEYS, shared, shares

__all__ = ["Part"]


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

    def folds(self, subject: bytes, kind: bytes) -> bool:
        """Whether this part's fold of the projections alone (no trust followed: a catch-up of
        the stored views, `replay.catchup`) takes an event of this subject and type (UTF-8,
        from a record's header): its own subjects' events, and those every part folds (a
        setting for every subject, `projections.state.shares`). Exact, so no event needs
        `keep` after it."""
        if zlib.crc32(subject) % self.count == self.number:
            return True
        return (kind, subject) in _SHARED_KINDS

    def owns(self, subject: str) -> bool:
        """Whether `subject`'s states are this part's (each subject's are one part's)."""
        part = self._parts.get(subject)
        if part is None:
            part = self._parts[subject] = zlib.crc32(subject.encode()) % self.count
        return part == self.number

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
_SHARED_KINDS: Final = frozenset(
    (name.encode(), subject.encode())
    for _, subject in SHARED_KEYS
    for name, kind in event_types().items()
    if shares(kind, subject)
)
"""(type, subject), UTF-8, of the events every part folds (`projections.state.shares`: only
subjects whose states are shared can be)."""
