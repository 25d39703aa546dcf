"""Defaults every layer shares, in a module that imports nothing (the CLI reads them at start-up,
before any of the ledger's heavier modules load)."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_LEDGER"]

DEFAULT_LEDGER: Final = "./adminchain.lmdb"
"""Where the embedded ledger lives when no ``--ledger`` (or ``ADMINCHAIN_LEDGER``) names one."""
