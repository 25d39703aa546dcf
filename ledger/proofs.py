"""Self-contained proof files: an auditor checks them offline with the file and a public key.

Inclusion proof: the C2SP tlog-proof format (c2sp.org/tlog-proof)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the leaf: 8-byte big-endian position || the event's stored bytes>
    index <0-based leaf index, i.e. position - 1>
    <base64 hash>            (RFC 6962 audit path, leaf's sibling first; none for a 1-leaf tree)
    ...
    <empty line>
    <checkpoint note, verbatim: signed, or its bare body when no key is configured>

The spec's optional ``extra`` line carries the leaf itself, so the verifier recomputes the leaf
hash rather than trusting one, and learns what was logged at which position.

Consistency proof between two checkpoints of one log (no C2SP format exists; this mirrors the
one above)::

    adminchain consistency proof v1
    <base64 hash>            (RFC 6962 PROOF(old size, new size), one per line; none if equal)
    ...
    <empty line>
    <old checkpoint note, verbatim>
    <new checkpoint note, verbatim>

A checkpoint note is its four body lines (`ledger.notes.Checkpoint`), followed, when signed,
by a blank line and its signature lines (each starting with an em dash and a space); an origin
holds no space, so the lines that start the next note are never mistaken for signatures.

Verification re-derives everything: the leaf hash from the leaf, the root from the path, the
signatures from the public keys. Any refusal raises `ProofError` saying what did not hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.codec import leaf_bytes
from ledger.errors import ProofError, UsageError
from ledger.merkle import HASH_SIZE, check_consistency, check_inclusion, leaf_hash
from ledger.notes import (
    CONTROL,
    EM_DASH,
    Checkpoint,
    VerifierKeys,
    decode_base64,
    encode_base64,
    parse_note,
    verifier_map,
)

__all__ = [
    "CONSISTENCY_HEADER",
    "INCLUSION_HEADER",
    "VerifiedConsistency",
    "VerifiedInclusion",
    "make_consistency_proof",
    "make_inclusion_proof",
    "verify_consistency_proof",
    "verify_inclusion_proof",
]

INCLUSION_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER = "adminchain consistency proof v1"

_MAX_HASHES = 128
"""No proof in a tree below 2**64 leaves needs more hashes; more is refused before decoding."""

_POSITION_BYTES = 8
_INDEX = re.compile(r"index (0|[1-9][0-9]*)")
_SIGNATURE_PREFIX = EM_DASH + " "


@dataclass(frozen=True, slots=True)
class VerifiedInclusion:
    """What a verified inclusion proof establishes: this event is at this position of the log
    whose checkpoint (signed by `signed_by`, or unsigned if no key was required) is given."""

    index: int
    position: int
    leaf: bytes
    event: bytes
    checkpoint: Checkpoint
    signed_by: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """The checkpoint note as the file carries it (with any witness cosignatures)."""

    @property
    def size(self) -> int:
        """The tree size of the checkpoint the event is proven against."""
        return self.checkpoint.size


@dataclass(frozen=True, slots=True)
class VerifiedConsistency:
    """What a verified consistency proof establishes: the old log is a prefix of the new one."""

    old: Checkpoint
    new: Checkpoint
    signed_by: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """The old and new checkpoint notes as the file carries them (with any cosignatures)."""


# ----------------------------------------------------------------------------- helpers


def _decode(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProofError(f"the proof is not valid UTF-8 (byte {e.start})") from None
    if not isinstance(text, str):
        raise UsageError(f"a proof is str or bytes, not {type(text).__name__}")
    bad = CONTROL.search(text)
    if bad:
        raise ProofError(
            f"the proof contains the control character U+{ord(bad.group()):04X} "
            f"at character {bad.start()}"
        )
    if not text.endswith("\n"):
        raise ProofError("the proof is truncated: it does not end with a newline")
    return text


def _hash_lines(lines: Sequence[str], first_line: int) -> list[bytes]:
    if len(lines) > _MAX_HASHES:
        raise ProofError(f"the proof has {len(lines)} hash lines, more than any tree needs")
    hashes = []
    for number, line in enumerate(lines, first_line):
        h = decode_base64(line, f"line {number}: the proof hash")
        if len(h) != HASH_SIZE:
            raise ProofError(f"line {number}: the proof hash is {len(h)} bytes, not {HASH_SIZE}")
        hashes.append(h)
    return hashes


def _open_checkpoint(note: str, what: str, keys: VerifierKeys | None) -> Checkpoint:
    try:
        return Checkpoint.open(note, keys)
    except ProofError as e:
        raise ProofError(f"{what}: {e}") from e


def _signers(notes: Sequence[str], keys: VerifierKeys | None) -> tuple[str, ...]:
    """The names of the known keys that signed `notes` (already verified), in order."""
    if keys is None:
        return ()
    known = verifier_map(keys)
    return tuple(
        dict.fromkeys(
            s.name
            for note in notes
            for s in parse_note(note).signatures
            if (s.name, s.key_id) in known
        )
    )


def _check_note_text(note: str, what: str) -> None:
    if not isinstance(note, str) or not note.endswith("\n"):
        raise UsageError(f"the {what} note must be text ending with a newline")


# ----------------------------------------------------------------------------- inclusion


def make_inclusion_proof(
    position: int, stored: bytes, proof: Sequence[bytes], checkpoint_note: str
) -> str:
    """The tlog-proof file for the event stored at `position` (1-based).

    `proof` is the audit path of leaf ``position - 1`` in the checkpoint's tree, and
    `checkpoint_note` the checkpoint as stored (signed note or bare body). The result is
    verified before it is returned, so a proof that would not verify is never written:
    `ProofError` if the path does not lead to the checkpoint's root.
    """
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise UsageError(f"a position is an integer from 1, got {position!r}")
    _check_note_text(checkpoint_note, "checkpoint")
    leaf = leaf_bytes(position, stored)
    lines = [
        INCLUSION_HEADER,
        f"extra {encode_base64(leaf)}",
        f"index {position - 1}",
        *(encode_base64(h) for h in proof),
    ]
    text = "\n".join(lines) + "\n\n" + checkpoint_note
    verify_inclusion_proof(text, None)
    return text


def verify_inclusion_proof(
    text: str | bytes, verifier_keys: VerifierKeys | None
) -> VerifiedInclusion:
    """Check a tlog-proof file; returns what it proves, or raises `ProofError`.

    With `verifier_keys`, the checkpoint must be signed by one of them; with None (no key
    required), an unsigned checkpoint is accepted and signatures are not checked.
    """
    text = _decode(text)
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise ProofError("the proof is truncated: no empty line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != INCLUSION_HEADER:
        raise ProofError(f"line 1: not a {INCLUSION_HEADER} proof")
    if len(lines) < 3:
        raise ProofError("the proof is truncated: it needs an extra line and an index line")
    if not lines[1].startswith("extra "):
        raise ProofError(
            "line 2: no extra line; an adminchain proof carries the leaf there, base64"
        )
    leaf = decode_base64(lines[1][len("extra ") :], "line 2: the leaf data")
    found = _INDEX.fullmatch(lines[2])
    if not found or int(found.group(1)) >= 1 << 64:
        raise ProofError("line 3: expected 'index <decimal, no leading zeros, below 2**64>'")
    index = int(found.group(1))
    hashes = _hash_lines(lines[3:], 4)
    checkpoint = _open_checkpoint(note, "checkpoint", verifier_keys)
    if len(leaf) < _POSITION_BYTES:
        raise ProofError(f"line 2: the leaf is {len(leaf)} bytes, too short to hold a position")
    position, event = int.from_bytes(leaf[:_POSITION_BYTES], "big"), leaf[_POSITION_BYTES:]
    if position != index + 1 or leaf_bytes(position, event) != leaf:
        raise ProofError(
            f"the leaf is for position {position}, but the proof is for index {index} "
            f"(position {index + 1})"
        )
    try:
        check_inclusion(leaf_hash(leaf), index, checkpoint.size, hashes, checkpoint.root)
    except ProofError as e:
        raise ProofError(f"inclusion proof of position {position}: {e}") from e
    return VerifiedInclusion(
        index, position, leaf, event, checkpoint, _signers([note], verifier_keys), (note,)
    )


# ----------------------------------------------------------------------------- consistency


def make_consistency_proof(old_note: str, new_note: str, proof: Sequence[bytes]) -> str:
    """The consistency proof file from the old checkpoint to the new one.

    `proof` is RFC 6962 PROOF(old size, new size); the notes are the checkpoints as stored.
    The result is verified before it is returned (`ProofError` if it would not verify).
    """
    _check_note_text(old_note, "old checkpoint")
    _check_note_text(new_note, "new checkpoint")
    lines = [CONSISTENCY_HEADER, *(encode_base64(h) for h in proof)]
    text = "\n".join(lines) + "\n\n" + old_note + new_note
    verify_consistency_proof(text, None)
    return text


def _take_note(lines: Sequence[str], start: int, what: str) -> tuple[str, int]:
    """The checkpoint note starting at line index `start`, and the index after it."""
    end = start + 4
    if end > len(lines):
        raise ProofError(f"the proof is truncated: the {what} has fewer than 4 lines")
    if end < len(lines) and lines[end] == "":
        end += 1
        first = end
        while end < len(lines) and lines[end].startswith(_SIGNATURE_PREFIX):
            end += 1
        if end == first:
            raise ProofError(f"the {what} has an empty line but no signature after it")
    return "\n".join(lines[start:end]) + "\n", end


def verify_consistency_proof(
    text: str | bytes, verifier_keys: VerifierKeys | None
) -> VerifiedConsistency:
    """Check a consistency proof file; returns the two checkpoints, or raises `ProofError`.

    Both checkpoints must be of one origin and, with `verifier_keys`, each signed by one of
    them; the proof must show the old tree is a prefix of the new (equal sizes: equal roots
    and equal state digests).
    """
    text = _decode(text)
    lines = text[:-1].split("\n")
    if lines[0] != CONSISTENCY_HEADER:
        raise ProofError(f"line 1: not an {CONSISTENCY_HEADER!r} file")
    try:
        blank = lines.index("", 1)
    except ValueError:
        raise ProofError("the proof is truncated: no empty line after the hashes") from None
    hashes = _hash_lines(lines[1:blank], 2)
    old_note, after_old = _take_note(lines, blank + 1, "old checkpoint")
    new_note, end = _take_note(lines, after_old, "new checkpoint")
    if end != len(lines):
        raise ProofError(f"line {end + 1}: unexpected text after the new checkpoint")
    old = _open_checkpoint(old_note, "old checkpoint", verifier_keys)
    new = _open_checkpoint(new_note, "new checkpoint", verifier_keys)
    if old.origin != new.origin:
        raise ProofError(
            f"the checkpoints are of different logs: {old.origin!r} and {new.origin!r}"
        )
    if old.size > new.size:
        raise ProofError(
            f"the old checkpoint (size {old.size}) is larger than the new one (size {new.size})"
        )
    if old.size == new.size and old.state_digest != new.state_digest:
        raise ProofError(f"two checkpoints of size {old.size} with different state digests")
    try:
        check_consistency(old.size, new.size, hashes, old.root, new.root)
    except ProofError as e:
        raise ProofError(f"consistency proof from size {old.size} to {new.size}: {e}") from e
    return VerifiedConsistency(
        old, new, _signers([old_note, new_note], verifier_keys), (old_note, new_note)
    )
