"""The durable, totally ordered, tamper-evident log: events, codecs, storage, Merkle tree.

`ledger` knows nothing of projections. Start with `Ledger.open(path_or_url)`.
"""

from __future__ import annotations

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
