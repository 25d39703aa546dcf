"""Projections (SPEC §2): pure folds of the log into the state services query.

One module per projection (`maintenance`, `detachment`, `recovery`, `membership`, `broadcasts`,
`policy`), each ``fold(state, event, policy) -> (state, verdict)`` over frozen msgspec structs and
``view(subject, state, now)`` for ``status --json``; `projections.state` folds them all together.
"""

from __future__ import annotations

from projections.api import Views

__all__ = ["Views"]
