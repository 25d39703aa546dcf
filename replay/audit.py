"""The audit report (SPEC §5 ``replay``): rebuild, count verdicts, list refusals, find divergence.

The stored views are caught up first; when the replay covers the whole log, each projection's
rebuilt state is compared with its stored state (by digest, then subject by subject for the
message), and every projection that differs is named in ``diverged``. A replay to an earlier
position (``--to``) cannot be compared with views that are further on, so it reports no
divergence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.ledger import Ledger
from projections.api import Views
from projections.state import PROJECTIONS, Folder, digest
from replay.rebuild import Audit, Rejected, rebuild

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


def run_audit(
    ledger: Ledger,
    to: int | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> AuditReport:
    """Rebuild every projection to `to` (default: the end), audit it, compare with the views."""
    views = Views(ledger)
    tracking = views.catch_up()
    audit = Audit(on_rejected=on_rejected)
    folder, position = rebuild(
        ledger,
        to if to is not None else tracking,
        audit=audit,
        progress=progress,
        trust=ledger.trust_policy(),
    )
    compared = position == tracking
    diverged: list[str] = []
    differences: dict[str, list[str]] = {}
    if compared:
        diverged, differences = diverged_projections(folder, views.states())
    return AuditReport(position, audit.counts, audit.rejected, diverged, compared, differences)
