"""Signed operator events: Ed25519 signatures over an event's canonical bytes.

Which keys are trusted, and from which position, is recorded in the log itself (`TrustKey`,
`RevokeKey`; `ledger.trust`, SPEC-server §8). A signed operator event carries a `signature` by
a trusted key over `ledger.codec.canonical_bytes(event)` — the wire form without the signature,
keys sorted, times in UTC. Such an event must also carry its own `id` and `at` (the ledger would
otherwise fill them in after signing, and the signature would no longer match).

Keys use the same Go note format as checkpoint keys (`ledger.notes`); the signature field holds
the key name and base64(4-byte key ID || Ed25519 signature), as a signed-note line does. The
key's name is the operator's: a signed event's `actor` must be that name, so the audit trail's
"who" is attested, not just claimed.

`TrustPolicy` is how earlier versions kept trust: a ledger setting beside the log. It is read
only to move such a policy into the log (`ledger.trust.migrate_legacy_policy`).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec

from ledger.codec import canonical_bytes
from ledger.errors import UsageError
from ledger.events import OPERATOR_EVENTS, Event, Signature
from ledger.ledger import TRUST_KEY
from ledger.notes import Signer, Verifier

__all__ = ["DETAIL", "TRUST_KEY", "OperatorKey", "Problem", "TrustPolicy", "signature_problem"]


Problem = Literal[
    "unsigned", "unknown_key", "bad_signature", "unsigned_fields", "actor_mismatch", "bad_key"
]


class OperatorKey:
    """An operator's private key: signs the operator events they append."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    @classmethod
    def load(cls, path: str | Path) -> OperatorKey:
        """Read a private key file written by `adminchain keygen`."""
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"cannot read signing key {path}: {e.strerror}") from e
        return cls(Signer.parse(text))

    def sign(self, event: Event) -> Event:
        """The event with its `id` and `at` fixed (filled in if missing) and signed."""
        changes: dict[str, object] = {}
        if event.id is None:
            changes["id"] = str(uuid.uuid4())
        if event.at is None:
            changes["at"] = datetime.now(UTC)
        if changes:
            event = msgspec.structs.replace(event, **changes)
        raw = self.signer.sign(canonical_bytes(event))
        key_id = self.signer.key_id.to_bytes(4, "big")
        signature = Signature(self.signer.name, base64.b64encode(key_id + raw).decode())
        return msgspec.structs.replace(event, signature=signature)

    def sign_if_operator(self, event: Event) -> Event:
        """Sign operator events that are not signed yet; leave loop events alone."""
        if isinstance(event, OPERATOR_EVENTS) and event.signature is None:
            return self.sign(event)
        return event


def signature_problem(event: Event, verifiers: dict[tuple[str, int], Verifier]) -> Problem | None:
    """Why an operator event's signature is not acceptable under these keys (None: it is)."""
    signature = event.signature
    if signature is None:
        return "unsigned"
    if event.id is None or event.at is None:
        return "unsigned_fields"
    try:
        blob = base64.b64decode(signature.sig, validate=True)
    except (binascii.Error, ValueError):
        return "bad_signature"
    if len(blob) != 4 + 64:
        return "bad_signature"
    verifier = verifiers.get((signature.key, int.from_bytes(blob[:4], "big")))
    if verifier is None:
        return "unknown_key"
    if not verifier.verify(canonical_bytes(event), blob[4:]):
        return "bad_signature"
    return None if event.actor == signature.key else "actor_mismatch"


DETAIL: Final[dict[str, str]] = {
    "unsigned": "operator events must be signed by a trusted operator key (--sign-key)",
    "unsigned_fields": "a signed operator event must carry its own `id` and `at`",
    "unknown_key": "signed by a key this ledger does not trust at this position",
    "bad_signature": "the signature does not match the event",
    "actor_mismatch": "the `actor` must be the name of the key that signs (an operator signs as "
    "themselves)",
    "bad_key": "the `key` is not a verifier key named after the subject",
}


class _PolicyDoc(msgspec.Struct, frozen=True):
    since: int
    keys: list[str]


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """The trusted operator keys as earlier versions kept them (a ledger setting), and the
    position from which they were required."""

    since: int
    keys: tuple[str, ...]

    @classmethod
    def decode(cls, data: bytes | None) -> TrustPolicy | None:
        """The policy as stored in the ledger (None: no trust configured)."""
        if not data:
            return None
        doc = msgspec.json.decode(data, type=_PolicyDoc)
        return cls(doc.since, tuple(doc.keys)) if doc.keys else None

    def encode(self) -> bytes:
        return msgspec.json.encode(_PolicyDoc(self.since, list(self.keys)))
