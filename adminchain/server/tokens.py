"""Bearer tokens and roles (SPEC-server §7.2), kept in the ledger so every server sees them.

A token is 256 random bits, shown once when it is created; the ledger keeps only its SHA-256
(a high-entropy secret needs no slow hash) under the setting ``token:<name>``. Servers compare
hashes in constant time and reload the set every few seconds, so a revoked or expired token is
refused by every server over the ledger within `RELOAD_SECONDS`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

import msgspec

from ledger.errors import NotFoundError, UsageError
from ledger.ledger import Ledger

__all__ = [
    "ROLES",
    "Role",
    "TokenBook",
    "TokenRecord",
    "create_token",
    "list_tokens",
    "revoke_token",
]

Role = Literal["reader", "loop", "operator", "auditor", "metrics", "admin"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
PREFIX: Final = "token:"
TOKEN_PREFIX: Final = "adminchain_"  # noqa: S105  a public prefix, not a secret
"""Tokens start with this, so secret scanners and people recognise one."""
RELOAD_SECONDS: Final = 2.0

_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


class TokenRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the ledger keeps of one token: never the token itself."""

    name: str
    role: Role
    sha256: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def to_json(self, now: datetime) -> dict[str, object]:
        """The ``token list --json`` object (no hash)."""
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "active": self.active(now),
        }


_decoder = msgspec.json.Decoder(TokenRecord)
_encoder = msgspec.json.Encoder()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 128 or not set(name) <= _NAME_CHARS:
        raise UsageError(
            f"token name {name!r}: 1-128 letters, digits and - _ . @ (an operator token's name "
            "is the actor its events are recorded under)"
        )


def create_token(
    ledger: Ledger, name: str, role: str, expires: timedelta | None = None
) -> tuple[str, TokenRecord]:
    """Make a new token for `name` with `role`; returns the token (shown once) and its record.

    A name is used once: revoke the old token first to reuse a revoked name.
    """
    _check_name(name)
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    existing = ledger.backend.get_meta(PREFIX + name)
    now = datetime.now(UTC)
    if existing is not None and _decoder.decode(existing).revoked_at is None:
        raise UsageError(f"a token named {name!r} exists; revoke it first (`token revoke {name}`)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(
        name=name,
        role=role,  # type: ignore[arg-type]  # checked against ROLES above
        sha256=_digest(token),
        created_at=now,
        expires_at=None if expires is None else now + expires,
    )
    ledger.backend.put_meta(PREFIX + name, _encoder.encode(record))
    return token, record


def list_tokens(ledger: Ledger) -> list[TokenRecord]:
    """Every token record, by name."""
    return [_decoder.decode(value) for _, value in ledger.backend.meta_items(PREFIX)]


def revoke_token(ledger: Ledger, name: str) -> TokenRecord:
    """Revoke the token called `name` (servers refuse it within `RELOAD_SECONDS`)."""
    data = ledger.backend.get_meta(PREFIX + name)
    if data is None:
        raise NotFoundError(f"no token named {name!r}")
    record = _decoder.decode(data)
    if record.revoked_at is None:
        record = msgspec.structs.replace(record, revoked_at=datetime.now(UTC))
        ledger.backend.put_meta(PREFIX + name, _encoder.encode(record))
    return record


class TokenBook:
    """The tokens a server accepts, reloaded from the ledger at most every `RELOAD_SECONDS`."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._records: list[TokenRecord] = []
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> list[TokenRecord]:
        with self._lock:
            if time.monotonic() - self._loaded >= RELOAD_SECONDS:
                self._records = list_tokens(self._ledger)
                self._loaded = time.monotonic()
            return self._records

    def authenticate(self, token: str) -> TokenRecord | None:
        """The active record whose hash matches `token` (constant-time compare), or None."""
        digest = _digest(token).encode()
        found = None
        for record in self._refresh():
            if hmac.compare_digest(record.sha256.encode(), digest):
                found = record
        if found is None or not found.active(datetime.now(UTC)):
            return None
        return found


def may(role: str, allowed: Iterable[str]) -> bool:
    """Whether `role` opens a route for `allowed` roles (admin opens every route)."""
    return role == "admin" or role in allowed
