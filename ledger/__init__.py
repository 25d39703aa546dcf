"""The durable, totally ordered, tamper-evident log: events, codecs, storage, Merkle tree.

`ledger` knows nothing of projections. Start with `Ledger.open(path_or_url)`.

`Ledger` is imported on first use (PEP 562), so that ``import ledger.errors`` — all the
command line needs to start — does not load the storage, codec and Merkle modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.ledger import Ledger

__all__ = ["Ledger"]


def __getattr__(name: str) -> Any:
    if name == "Ledger":
        return importlib.import_module("ledger.ledger").Ledger
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")
