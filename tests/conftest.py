"""Shared fixtures: one ledger per test on every backend, hypothesis profiles.

`ledger_target` is parametrised over the backends: ``lmdb`` (a fresh directory) and ``postgres``
(a fresh schema in the scratch database named by ``ADMINCHAIN_TEST_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/adminchain_test``). Without a reachable server the
PostgreSQL cases skip with the reason — except under CI (``CI=true``), where they fail: CI must
run them for real.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("ADMINCHAIN_HYPOTHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PG_URL = os.environ.get(
    "ADMINCHAIN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/adminchain_test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_pg_state: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can). Creates the scratch database."""
    if "problem" in _pg_state:
        return _pg_state["problem"]
    problem: str | None = None
    try:
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        base, _, dbname = PG_URL.rpartition("/")
        dbname = dbname.split("?")[0]
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except ImportError as e:
        problem = f"psycopg is not installed ({e}); pip install '.[postgres]'"
    except Exception as e:  # noqa: BLE001  any failure to connect means: no server here
        problem = f"PostgreSQL at {PG_URL} is unreachable: {e}"
    _pg_state["problem"] = problem
    return problem


def require_postgres() -> None:
    """Skip (or, under CI, fail) when PostgreSQL is not available."""
    problem = postgres_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run the PostgreSQL tests: {problem}")
    pytest.skip(problem)


def fresh_pg_url() -> str:
    """A URL naming a fresh, empty schema in the scratch database."""
    require_postgres()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema=t_{uuid.uuid4().hex[:12]}"


def drop_pg_schema(url: str) -> None:
    """Remove a test schema (best effort)."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    base, _, schema = url.partition("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh ledger lives, on each backend in turn (a path or a postgresql:// URL)."""
    if request.param == "lmdb":
        yield str(tmp_path / "ledger.lmdb")
        return
    url = fresh_pg_url()
    try:
        yield url
    finally:
        drop_pg_schema(url)


@pytest.fixture
def lmdb_target(tmp_path: Path) -> str:
    """A fresh embedded ledger directory."""
    return str(tmp_path / "ledger.lmdb")


@pytest.fixture
def log_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (start, stop) spans a fold reads back from the log (`projections.views._batches`),
    recorded as the test runs: a fold given its events reads none."""
    from projections import views as views_module  # noqa: PLC0415

    read: list[tuple[int, int]] = []
    real = views_module._batches

    def batches(txn: Any, start: int, stop: int) -> Any:
        read.append((start, stop))
        return real(txn, start, stop)

    monkeypatch.setattr(views_module, "_batches", batches)
    return read
