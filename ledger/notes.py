"""Checkpoints and signed notes: the C2SP formats a ledger's tree heads are published in.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text::

    <origin>
    <tree size, decimal>
    <root hash, base64>
    adminchain-state-sha256 <SHA-256 of all projection states at that size, 64 lowercase hex>

The extension line ties the projections to the log: an auditor who replays the log to that size
must get the same digest. The note is signed with Ed25519 per c2sp.org/signed-note: after a
blank line, one line per signature, ``— <key name> <base64(4-byte key ID || signature)>``.
Keys are written as golang.org/x/mod/sumdb/note writes them, so Go tooling reads ours::

    signer:   PRIVATE+KEY+<name>+<key ID, 8 hex>+<base64(0x01 || 32-byte seed)>
    verifier: <name>+<key ID, 8 hex>+<base64(0x01 || 32-byte public key)>

Parsing is strict, so that one text has one meaning and a changed byte anywhere is noticed:
base64 must be canonical (no stray padding bits), numbers have no leading zeros, and every
line is accounted for. Failures of a note or checkpoint to verify raise `ProofError`; bad keys
and bad arguments raise `UsageError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import ProofError, UsageError
from ledger.merkle import HASH_SIZE, MAX_SIZE

__all__ = [
    "CONTROL",
    "EM_DASH",
    "STATE_EXTENSION",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "Signer",
    "Verifier",
    "VerifierKeys",
    "decode_base64",
    "encode_base64",
    "generate_key",
    "key_id",
    "open_note",
    "parse_note",
    "sign_note",
    "verifier_map",
]

ALG_ED25519 = 0x01
"""The signed-note signature type byte of Ed25519."""

EM_DASH = "\u2014"
"""Every signature line starts with an em dash and a space."""

MAX_SIGNATURES = 100
"""More signature lines than this make a note malformed (the spec asks for at least 16)."""

STATE_EXTENSION = "adminchain-state-sha256"
"""The keyword of the checkpoint's extension line: the digest of the projection states."""

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
"""The control characters no note or proof file may hold (every one but the newline)."""
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def decode_base64(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4), canonical only; `ProofError` naming `what` otherwise.

    Canonical means re-encoding gives the same text: padding bits must be zero, so no two
    texts decode to the same bytes, and any changed character changes the value.
    """
    try:
        value = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise ProofError(f"{what} is not valid base64") from e
    if base64.b64encode(value).decode("ascii") != text:
        raise ProofError(f"{what} is not canonical base64")
    return value


def encode_base64(value: bytes) -> str:
    """Standard base64 (RFC 4648 §4) as text: what `decode_base64` reads back."""
    return base64.b64encode(value).decode("ascii")


def _name_problem(name: object) -> str | None:
    """Why `name` cannot be a key name or origin, or None if it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if any(c.isspace() for c in name):
        return "it contains a space"
    if "+" in name:
        return "it contains '+'"
    if CONTROL.search(name) or "\n" in name:
        return "it contains a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def key_id(name: str, public_key: bytes) -> int:
    """The signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _key_data(key64: str, what: str) -> bytes:
    try:
        data = decode_base64(key64, what)
    except ProofError as e:
        raise UsageError(str(e)) from None
    if not data:
        raise UsageError(f"{what} is empty")
    if data[0] != ALG_ED25519:
        raise UsageError(f"{what} is for signature type {data[0]:#04x}; only Ed25519 (0x01)")
    if len(data) != 1 + 32:
        raise UsageError(f"{what} must be 32 bytes after the type byte, got {len(data) - 1}")
    return data[1:]


def _check_key_id(text: str, name: str, public_key: bytes, what: str) -> int:
    if not _KEY_ID.fullmatch(text):
        raise UsageError(f"{what}: key ID {text!r} is not 8 lowercase hex digits")
    if int(text, 16) != key_id(name, public_key):
        raise UsageError(f"{what}: key ID {text} does not match the name and key")
    return int(text, 16)


def _check_key_fields(name: str, kid: int, public_key: bytes, what: str) -> None:
    problem = _name_problem(name)
    if problem:
        raise UsageError(f"{what} key name {name!r} is invalid: {problem}")
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise UsageError(f"{what} key: an Ed25519 public key is 32 bytes")
    if kid != key_id(name, public_key):
        raise UsageError(f"{what} key: the key ID does not match the name and key")


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that can check signatures on notes: the key name, its ID and the key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_fields(self.name, self.key_id, self.public_key, "verifier")

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read a verifier key ``<name>+<key ID>+<base64(0x01 || public key)>``."""
        if not isinstance(vkey, str):
            raise UsageError(f"a verifier key is a string, not {type(vkey).__name__}")
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise UsageError("a verifier key has the form <name>+<key ID>+<key>")
        name, id_text, key64 = parts
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"verifier key name {name!r} is invalid: {problem}")
        public_key = _key_data(key64, "verifier key")
        return cls(name, _check_key_id(id_text, name, public_key, "verifier key"), public_key)

    def encode(self) -> str:
        """The verifier key string, as `parse` reads it."""
        key64 = encode_base64(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{key64}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` (64 bytes, without the key ID) is this key's over `message`."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key that signs notes. Its seed never appears in `repr`."""

    name: str
    key_id: int
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise UsageError("an Ed25519 seed is 32 bytes")
        _check_key_fields(self.name, self.key_id, _public_key(self.seed), "signer")

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Read a signer key ``PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>``."""
        if not isinstance(skey, str):
            raise UsageError(f"a signer key is a string, not {type(skey).__name__}")
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise UsageError("a signer key has the form PRIVATE+KEY+<name>+<key ID>+<key>")
        name, id_text, key64 = parts[2:]
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"signer key name {name!r} is invalid: {problem}")
        seed = _key_data(key64, "signer key")
        public_key = _public_key(seed)
        return cls(name, _check_key_id(id_text, name, public_key, "signer key"), seed)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random Ed25519 key named `name`."""
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"key name {name!r} is invalid: {problem}")
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(name, key_id(name, _public_key(seed)), seed)

    def encode(self) -> str:
        """The signer key string, as `parse` reads it. Keep it secret."""
        data = encode_base64(bytes([ALG_ED25519]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{data}"

    @property
    def verifier(self) -> Verifier:
        """The matching public key."""
        return Verifier(self.name, self.key_id, _public_key(self.seed))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _public_key(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key pair named `name`: ``(signer key, verifier key)`` strings."""
    signer = Signer.generate(name)
    return signer.encode(), signer.verifier.encode()


VerifierKeys = str | Verifier | Iterable[str | Verifier]
"""One verifier key, or several (strings as `Verifier.parse` reads them, or `Verifier`s)."""


def verifier_map(keys: VerifierKeys) -> dict[tuple[str, int], Verifier]:
    """Known keys by (name, key ID). `UsageError` if none, or two differ but share both."""
    items = [keys] if isinstance(keys, str | Verifier) else list(keys)
    known: dict[tuple[str, int], Verifier] = {}
    for item in items:
        verifier = item if isinstance(item, Verifier) else Verifier.parse(item)
        slot = (verifier.name, verifier.key_id)
        if known.setdefault(slot, verifier) != verifier:
            raise UsageError(f"ambiguous keys: two different keys are {slot[0]}+{slot[1]:08x}")
    if not known:
        raise UsageError("no verifier key given")
    return known


# ----------------------------------------------------------------------------- notes


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key name, the key ID and the signature (without the ID)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        data = self.key_id.to_bytes(4, "big") + self.signature
        return f"{EM_DASH} {self.name} {encode_base64(data)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed note: its text (the signed body) and its signatures, none verified yet."""

    body: str
    signatures: tuple[NoteSignature, ...]

    def text(self) -> str:
        """The whole note, as `parse_note` reads it."""
        return self.body + "\n" + "".join(s.line() for s in self.signatures)


def _as_text(text: str | bytes, what: str) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProofError(f"{what} is not valid UTF-8 (byte {e.start})") from None
    if not isinstance(text, str):
        raise UsageError(f"{what} must be str or bytes, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProofError(f"{what} is not valid UTF-8 (character {e.start})") from None
    return text


def _check_text(text: str, what: str) -> None:
    bad = CONTROL.search(text)
    if bad:
        raise ProofError(
            f"{what} contains the control character U+{ord(bad.group()):04X} "
            f"at character {bad.start()}"
        )


def parse_note(text: str | bytes) -> Note:
    """Split a signed note into body and signature lines, strictly; nothing is verified.

    `ProofError` if the note is not valid UTF-8, holds a control character other than newline,
    lacks the blank line before the signatures, or has a malformed or excess signature line.
    """
    text = _as_text(text, "note")
    _check_text(text, "note")
    split = text.rfind("\n\n")
    if split < 0:
        raise ProofError("malformed note: no blank line before the signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block:
        raise ProofError("malformed note: no signature after the blank line")
    if not block.endswith("\n"):
        raise ProofError("malformed note: the last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise ProofError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    signatures = []
    for number, line in enumerate(lines, 1):
        where = f"malformed note: signature line {number}"
        if not line.startswith(EM_DASH + " "):
            raise ProofError(f"{where} does not start with '{EM_DASH} '")
        name, _, data64 = line[2:].partition(" ")
        problem = _name_problem(name)
        if problem:
            raise ProofError(f"{where}: key name {name!r} is invalid: {problem}")
        data = decode_base64(data64, f"{where}: the signature")
        if len(data) < 5:
            raise ProofError(f"{where}: the signature is too short")
        signatures.append(NoteSignature(name, int.from_bytes(data[:4], "big"), data[4:]))
    return Note(body, tuple(signatures))


def _check_body(body: str) -> None:
    if not isinstance(body, str):
        raise UsageError(f"a note body is a str, not {type(body).__name__}")
    if not body.endswith("\n"):
        raise UsageError("a note body must end with a newline")
    try:
        _check_text(_as_text(body, "note body"), "note body")
    except ProofError as e:
        raise UsageError(str(e)) from None


def sign_note(body: str, *signer_keys: str | Signer) -> str:
    """The signed note of `body` (text ending in a newline), one signature line per key."""
    _check_body(body)
    if not signer_keys:
        raise UsageError("no signer key given")
    message = body.encode()
    lines = []
    for key in signer_keys:
        signer = key if isinstance(key, Signer) else Signer.parse(key)
        lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)).line())
    return body + "\n" + "".join(lines)


def _open(text: str | bytes, keys: VerifierKeys) -> tuple[Note, tuple[Verifier, ...]]:
    known = verifier_map(keys)
    note = parse_note(text)
    message = note.body.encode()
    verified: list[Verifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # the spec: ignore signatures from unknown keys
        if not verifier.verify(message, sig.signature):
            raise ProofError(
                f"the signature by {sig.name}+{sig.key_id:08x} does not verify: "
                "the note was changed after signing, or not signed by this key"
            )
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        present = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        wanted = ", ".join(f"{n}+{i:08x}" for n, i in known)
        raise ProofError(f"the note is signed by {present}, none of them a known key ({wanted})")
    return note, tuple(verified)


def open_note(text: str | bytes, verifier_keys: VerifierKeys) -> str:
    """The body of a signed note, once a known key's signature on it has verified.

    Signatures by unknown keys are ignored; a known key's signature that fails to verify
    refuses the whole note. `ProofError` on any refusal, `UsageError` if no key is given.
    """
    return _open(text, verifier_keys)[0].body


# ----------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log's origin, its size, its root and the projection states' digest."""

    origin: str
    size: int
    root: bytes
    state_digest: bytes

    def __post_init__(self) -> None:
        problem = _name_problem(self.origin)
        if problem:
            raise UsageError(f"checkpoint origin {self.origin!r} is invalid: {problem}")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise UsageError(f"checkpoint size must be an integer, got {self.size!r}")
        if not 0 <= self.size < MAX_SIZE:
            raise UsageError(f"checkpoint size {self.size} is outside [0, 2**64)")
        for what, value in (("root", self.root), ("state digest", self.state_digest)):
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise UsageError(f"checkpoint {what} must be {HASH_SIZE} bytes")

    def to_body(self) -> str:
        """The checkpoint note text (four lines, see the module docstring)."""
        return (
            f"{self.origin}\n{self.size}\n{encode_base64(self.root)}\n"
            f"{STATE_EXTENSION} {self.state_digest.hex()}\n"
        )

    @classmethod
    def parse(cls, body: str | bytes) -> Checkpoint:
        """Read a checkpoint note text, strictly; `ProofError` naming the faulty line."""
        body = _as_text(body, "checkpoint")
        _check_text(body, "checkpoint")
        if not body.endswith("\n"):
            raise ProofError("checkpoint: the text does not end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) != 4:
            raise ProofError(
                f"checkpoint: expected 4 lines (origin, size, root, {STATE_EXTENSION}), "
                f"got {len(lines)}"
            )
        origin, size_text, root64, extension = lines
        problem = _name_problem(origin)
        if problem:
            raise ProofError(f"checkpoint line 1: origin {origin!r} is invalid: {problem}")
        if not _DECIMAL.fullmatch(size_text) or int(size_text) >= MAX_SIZE:
            raise ProofError(
                f"checkpoint line 2: tree size {size_text!r} is not a decimal number "
                "below 2**64 without leading zeros"
            )
        root = decode_base64(root64, "checkpoint line 3: the root hash")
        if len(root) != HASH_SIZE:
            raise ProofError(f"checkpoint line 3: the root hash is {len(root)} bytes, not 32")
        keyword, _, digest_hex = extension.partition(" ")
        if keyword != STATE_EXTENSION:
            raise ProofError(f"checkpoint line 4: expected the {STATE_EXTENSION} extension")
        if not _HEX_DIGEST.fullmatch(digest_hex):
            raise ProofError("checkpoint line 4: the state digest is not 64 lowercase hex digits")
        return cls(origin, int(size_text), root, bytes.fromhex(digest_hex))

    def sign(self, *signer_keys: str | Signer) -> str:
        """This checkpoint as a signed note."""
        return sign_note(self.to_body(), *signer_keys)

    @classmethod
    def open(cls, text: str | bytes, verifier_keys: VerifierKeys | None) -> Checkpoint:
        """Read a checkpoint note, signed or not.

        With verifier keys, the note must carry a valid signature by one of them. With None
        (no key required), signatures are not checked, and a bare body is accepted too.
        """
        if verifier_keys is not None:
            if "\n\n" not in _as_text(text, "checkpoint"):
                raise ProofError(
                    "it is unsigned: it carries no signature to check against the given "
                    "key(s) (sign checkpoints with a key: `checkpoint --key`, `prove --key`)"
                )
            return cls.parse(open_note(text, verifier_keys))
        text = _as_text(text, "checkpoint")
        return cls.parse(parse_note(text).body if "\n\n" in text else text)
