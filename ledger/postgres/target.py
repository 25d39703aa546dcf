"""Where a PostgreSQL ledger lives: a ``postgresql://`` URL parsed (`parse_url`).

``schema`` is adminchain's own parameter (default ``adminchain``, created on first use); the
others (e.g. ``sslmode``, ``connect_timeout``) go to libpq.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ledger.errors import BackendUnavailableError
from ledger.postgres.recorder import PostgresLedgerRecorder

__all__ = ["DEFAULT_SCHEMA", "PgTarget", "parse_url"]

DEFAULT_SCHEMA: Final = "adminchain"
CONNECT_TIMEOUT: Final = 5


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A parsed ``postgresql://`` URL: where the ledger lives and how to connect."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    schema: str
    connect_timeout: int = CONNECT_TIMEOUT
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL without its password (safe for messages and checkpoints)."""
        user = quote(self.user, safe="")
        return f"postgresql://{user}@{self.where}/{self.dbname}?schema={quote(self.schema)}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect`."""
        names = ("host", "port", "user", "password", "dbname", "connect_timeout")
        return {name: getattr(self, name) for name in names} | self.options


def parse_url(url: str) -> PgTarget:
    """Parse a ``postgresql://`` URL (see the module docstring for the ``schema`` parameter)."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = options.pop("schema", DEFAULT_SCHEMA).strip() or DEFAULT_SCHEMA
    try:
        if parts.scheme not in {"postgresql", "postgres"}:
            raise ValueError("not a postgresql:// URL")  # noqa: TRY301  one message for all
        if len(schema.encode()) > PostgresLedgerRecorder.MAX_IDENTIFIER_LEN:
            raise ValueError(f"schema name {schema!r} is longer than 63 bytes")  # noqa: TRY301
        timeout = max(1, int(options.pop("connect_timeout", str(CONNECT_TIMEOUT))))
        port = parts.port or 5432
    except ValueError as e:
        raise BackendUnavailableError(f"bad PostgreSQL URL {url!r}: {e}") from e
    user = unquote(parts.username) if parts.username else getpass.getuser()
    password, dbname = unquote(parts.password or ""), unquote(parts.path.lstrip("/")) or user
    host = parts.hostname or "localhost"
    return PgTarget(host, port, user, password, dbname, schema, timeout, options)
