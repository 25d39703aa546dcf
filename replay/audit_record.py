"""What a replay's audit gathers: verdict counts per projection and the rejected events.

`replay.rebuild.rebuild` fills an `Audit` as it folds; `replay.audit` turns it into the report
(SPEC §5 ``replay``) and merges the second process's half into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from projections.base import Verdict
from projections.state import PROJECTIONS

__all__ = ["Audit", "Rejected"]


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
