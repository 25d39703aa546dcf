"""The backend contract (`tests/contract.py`) on the shared PostgreSQL backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.backend import LogBackend
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.contract import LogBackendContract, ViewStoreContract

pytestmark = pytest.mark.postgres


class _Postgres:
    @pytest.fixture
    def target(self) -> Iterator[str]:
        url = fresh_pg_url()
        try:
            yield url
        finally:
            drop_pg_schema(url)

    def open_backend(self, target: str) -> LogBackend:
        from ledger.postgres import PostgresBackend  # noqa: PLC0415  optional: psycopg

        return PostgresBackend(target)


class TestPostgresLogBackend(_Postgres, LogBackendContract):
    pass


class TestPostgresViewStore(_Postgres, ViewStoreContract):
    pass
