"""The backend contract (`tests/contract.py`) on the embedded LMDB backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.backend import LogBackend
from ledger.lmdb_backend import LMDBBackend
from tests.contract import LogBackendContract, ViewStoreContract


class _LMDB:
    @pytest.fixture
    def target(self, tmp_path: Path) -> str:
        return str(tmp_path / "ledger.lmdb")

    def open_backend(self, target: str) -> LogBackend:
        return LMDBBackend(Path(target))


class TestLMDBLogBackend(_LMDB, LogBackendContract):
    pass


class TestLMDBViewStore(_LMDB, ViewStoreContract):
    pass
