"""Projections (SPEC §2): pure folds of the log into the state services query.

One module per projection (`maintenance`, `detachment`, `recovery`, `membership`, `broadcasts`,
`policy`), each ``fold(state, event, policy) -> (state, verdict)`` over frozen msgspec structs and
``view(subject, state, now)`` for ``status --json``; `projections.state` folds them all together.

The names below are imported on first use (PEP 562), as in `ledger`: ``import projections.query``
(or one fold) does not load the stored views, the ledger and every fold with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from projections.api import Views

__all__ = ["Views"]

_HOMES = {"Views": "projections.api"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'projections' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
