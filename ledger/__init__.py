"""The durable, totally ordered, tamper-evident log: events, codecs, storage, Merkle tree.

`ledger` knows nothing of projections. Start with `Ledger.open(path_or_url)`.

The names below are imported on first use (PEP 562), so that ``import ledger.errors`` — all the
command line needs to start — does not load the storage, codec and Merkle modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.backend import Appended
    from ledger.errors import (
        InvalidEventError,
        LedgerError,
        LedgerNotFoundError,
        NotFoundError,
        ProofError,
        SignatureError,
        StorageError,
        StrictRefusedError,
        UsageError,
    )
    from ledger.ledger import Entry, Ledger

__all__ = [
    "Appended",
    "Entry",
    "InvalidEventError",
    "Ledger",
    "LedgerError",
    "LedgerNotFoundError",
    "NotFoundError",
    "ProofError",
    "SignatureError",
    "StorageError",
    "StrictRefusedError",
    "UsageError",
]

_HOMES = {"Appended": "ledger.backend", "Entry": "ledger.ledger", "Ledger": "ledger.ledger"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(_HOMES.get(name, "ledger.errors")), name)
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")
