"""Witness cosignatures: C2SP tlog-cosignature ``cosignature/v1`` with Ed25519 (SPEC-server §9).

A cosignature is a signed-note signature line on a checkpoint, by a witness key::

    — <witness name> base64(key ID || timestamp (u64, big-endian) || Ed25519 signature)

The key ID is ``SHA-256(<name> || "\\n" || 0x04 || public key)[:4]``, and what is signed is::

    cosignature/v1
    time <timestamp, decimal>
    <the checkpoint's note body, every line, the extension lines included>

Keys are written as signed-note keys with the signature type 0x04 (c2sp.org/signed-note):
``PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>`` and ``<name>+<key ID>+<base64(0x04 ||
public key)>``; being of type 0x04, a witness key can never be mistaken for a log key (0x01).

`cosigned_by` counts the valid cosignatures on a note from given witness keys; `check_quorum`
refuses a note with fewer than a quorum (`ProofError`, as any failed check of a proof).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import ProofError, UsageError
from ledger.notes import (
    Note,
    NoteSignature,
    decode_base64,
    parse_note,
)

__all__ = [
    "Cosigner",
    "CosignerKey",
    "WitnessPolicy",
    "add_cosignatures",
    "check_quorum",
    "cosigned_by",
    "cosigned_message",
    "generate_cosigner_key",
]

ALG_COSIGNATURE_V1 = 0x04
"""The signed-note signature type of Ed25519 cosignature/v1 keys."""

COSIGNATURE_HEADER = "cosignature/v1"
_MAX_TIMESTAMP = (1 << 63) - 1


def cosigner_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || "\\n" || 0x04 || public key)[:4], as an integer."""
    data = name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a cosignature signs: the header line, the time line, then the note body."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise UsageError(f"a cosignature timestamp is in [0, 2**63), got {timestamp}")
    if not body.endswith("\n") or body.count("\n") < 3:
        raise UsageError("a cosigned checkpoint body has at least three lines")
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}".encode()


def _name_ok(name: str, what: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise UsageError(f"{what}: key name {name!r} is empty or holds a space or '+'")


def _key_material(text: str, what: str) -> bytes:
    try:
        data = decode_base64(text, what)
    except ProofError as e:
        raise UsageError(str(e)) from None
    if len(data) != 33 or data[0] != ALG_COSIGNATURE_V1:
        raise UsageError(
            f"{what} is not an Ed25519 cosignature/v1 key (type 0x04 and 32 bytes); "
            "make one with `adminchain witness keygen`"
        )
    return data[1:]


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A verified cosignature: who, when (POSIX seconds), and its note signature line."""

    name: str
    timestamp: int
    line: str


@dataclass(frozen=True, slots=True)
class CosignerKey:
    """A witness's public key (vkey of type 0x04)."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def parse(cls, vkey: str) -> CosignerKey:
        """Read ``<name>+<key ID>+<base64(0x04 || public key)>``; `UsageError` if malformed."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise UsageError("a witness key has the form <name>+<key ID>+<key>")
        name, id_text, key64 = parts
        _name_ok(name, "witness key")
        public_key = _key_material(key64, "witness key")
        if id_text != f"{cosigner_key_id(name, public_key):08x}":
            raise UsageError(f"witness key {name}: the key ID does not match the name and key")
        return cls(name, int(id_text, 16), public_key)

    def encode(self) -> str:
        data = bytes([ALG_COSIGNATURE_V1]) + self.public_key
        return f"{self.name}+{self.key_id:08x}+{_b64(data)}"

    def verify(self, body: str, signature: NoteSignature) -> Cosignature | None:
        """The cosignature if `signature` is this key's valid cosignature on `body`; None if it
        is another key's; `ProofError` if it claims to be this key's but does not verify."""
        if (signature.name, signature.key_id) != (self.name, self.key_id):
            return None
        blob = signature.signature
        if len(blob) != 8 + 64:
            raise ProofError(f"the cosignature by {self.name} is not 72 bytes")
        timestamp = int.from_bytes(blob[:8], "big")
        try:
            message = cosigned_message(body, timestamp)
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[8:], message)
        except (InvalidSignature, UsageError):
            raise ProofError(
                f"the cosignature by witness {self.name} does not verify: the checkpoint was "
                "changed after cosigning, or not cosigned by this key"
            ) from None
        return Cosignature(self.name, timestamp, signature.line())


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A witness's private key (type 0x04). Its seed never appears in `repr`."""

    name: str
    seed: bytes = field(repr=False)

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        """Read ``PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>``."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise UsageError("a witness signer key has the form PRIVATE+KEY+<name>+<id>+<key>")
        name, id_text, key64 = parts[2:]
        _name_ok(name, "witness signer key")
        signer = cls(name, _key_material(key64, "witness signer key"))
        if id_text != f"{signer.key.key_id:08x}":
            raise UsageError(f"witness signer key {name}: the key ID does not match")
        return signer

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        _name_ok(name, "witness key")
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def key(self) -> CosignerKey:
        """The matching public key."""
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return CosignerKey(self.name, cosigner_key_id(self.name, public), public)

    def encode(self) -> str:
        data = bytes([ALG_COSIGNATURE_V1]) + self.seed
        return f"PRIVATE+KEY+{self.name}+{self.key.key_id:08x}+{_b64(data)}"

    def cosign(self, body: str, timestamp: int) -> str:
        """The cosignature line (newline included) on checkpoint `body` at `timestamp`."""
        if timestamp <= 0:
            raise UsageError("a witness cosignature carries a non-zero timestamp")
        message = cosigned_message(body, timestamp)
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        blob = timestamp.to_bytes(8, "big") + signature
        return NoteSignature(self.name, self.key.key_id, blob).line()


def generate_cosigner_key(name: str) -> tuple[str, str]:
    """A new witness key pair: ``(signer key, verifier key)`` strings."""
    signer = Cosigner.generate(name)
    return signer.encode(), signer.key.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _keys(keys: Iterable[str | CosignerKey]) -> list[CosignerKey]:
    return [k if isinstance(k, CosignerKey) else CosignerKey.parse(k) for k in keys]


def cosigned_by(note: str | bytes | Note, keys: Iterable[str | CosignerKey]) -> list[Cosignature]:
    """The valid cosignatures on `note` by `keys`, one per witness key (others are ignored).

    `ProofError` if a signature line carries a given key's name and ID but does not verify.
    """
    parsed = note if isinstance(note, Note) else parse_note(note)
    found: dict[tuple[str, int], Cosignature] = {}
    for key in _keys(keys):
        for signature in parsed.signatures:
            cosignature = key.verify(parsed.body, signature)
            if cosignature is not None:
                found.setdefault((key.name, key.key_id), cosignature)
    return list(found.values())


def check_quorum(
    note: str | bytes, keys: Iterable[str | CosignerKey], quorum: int
) -> list[Cosignature]:
    """The valid cosignatures on `note`, if at least `quorum` of the witness `keys` cosigned it;
    `ProofError` saying how many did otherwise."""
    keys = _keys(keys)
    if quorum > len(keys):
        raise UsageError(f"a quorum of {quorum} needs at least {quorum} witness keys")
    found = cosigned_by(note, keys)
    if len(found) < quorum:
        names = ", ".join(c.name for c in found) or "none"
        raise ProofError(
            f"the checkpoint has {len(found)} valid witness cosignature(s) ({names}), "
            f"fewer than the quorum of {quorum}"
        )
    return found


def add_cosignatures(note: str, lines: Iterable[str]) -> str:
    """The note with cosignature lines appended (each ending in a newline; repeats dropped)."""
    present = set(note.split("\n"))
    extra = [line for line in lines if line.rstrip("\n") not in present]
    return note + "".join(extra)


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """Which witnesses an auditor trusts and how many of them must have cosigned a checkpoint."""

    keys: tuple[CosignerKey, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not self.keys:
            raise UsageError("a witness quorum needs witness keys (--witness-key)")
        if not 1 <= self.quorum <= len(self.keys):
            raise UsageError(
                f"--quorum {self.quorum} must be from 1 to the {len(self.keys)} witness key(s)"
            )

    @classmethod
    def of(cls, keys: Iterable[str | CosignerKey], quorum: int | None) -> WitnessPolicy:
        """From vkeys; no quorum given means all of them."""
        parsed = tuple(_keys(keys))
        return cls(parsed, len(parsed) if quorum is None else quorum)

    def check(self, note: str | bytes) -> list[Cosignature]:
        """`check_quorum` under this policy."""
        return check_quorum(note, self.keys, self.quorum)
