"""Projections (SPEC §2): pure folds of the log into the state services query.

One module per projection (`maintenance`, `detachment`, `recovery`, `membership`, `broadcasts`,
`policy`), each ``fold(state, event, policy) -> (state, verdict)`` over frozen msgspec structs and
``view(subject, state, now)`` for ``status --json``; `projections.state` folds them all together.
"""

from __future__ import annotations

from projections.api import KINDS, Views, status_document
from projections.base import Outcome, Policy, Verdict
from projections.state import PROJECTIONS, Folder, digest

__all__ = [
    "KINDS",
    "PROJECTIONS",
    "Folder",
    "Outcome",
    "Policy",
    "Verdict",
    "Views",
    "digest",
    "status_document",
]
