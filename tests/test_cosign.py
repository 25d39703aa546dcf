"""C2SP tlog-cosignature cosignature/v1 (Ed25519): `ledger.cosign` (SPEC-server §9).

Checked against the spec's own example of the signed message, by hand-built signatures with
`cryptography` directly, and (in tests/test_transparency.py) by a Go verifier on
golang.org/x/mod/sumdb/note.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.cosign import (
    Cosigner,
    CosignerKey,
    add_cosignatures,
    check_quorum,
    cosigned_by,
    cosigned_message,
)
from ledger.errors import ProofError, UsageError
from ledger.notes import Signer, parse_note, sign_note

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SEED = bytes(range(32))


def test_the_signed_message_is_the_spec_example() -> None:
    assert cosigned_message(SPEC_BODY, 1679315147) == (
        b"cosignature/v1\n"
        b"time 1679315147\n"
        b"example.com/behind-the-sofa\n"
        b"20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_a_line_built_by_hand_from_the_spec_verifies() -> None:
    """Key ID, timestamp and signature laid out as the spec says, with cryptography directly."""
    name = "witness.example.com/w1"
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    public = private.public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    message = b"cosignature/v1\ntime 1679315147\n" + SPEC_BODY.encode()
    blob = key_id + (1679315147).to_bytes(8, "big") + private.sign(message)
    line = f"\u2014 {name} {base64.b64encode(blob).decode()}\n"
    material = base64.b64encode(b"\x04" + public).decode()
    vkey = f"{name}+{key_id.hex()}+{material}"
    note = SPEC_BODY + "\n" + line
    (found,) = cosigned_by(note, [vkey])
    assert (found.name, found.timestamp) == (name, 1679315147)
    # and ours makes exactly that line (Ed25519 is deterministic)
    assert Cosigner(name, SEED).cosign(SPEC_BODY, 1679315147) == line
    assert Cosigner(name, SEED).key.encode() == vkey


def test_keys_round_trip_and_are_not_log_keys() -> None:
    signer = Cosigner.generate("w.example/1")
    assert Cosigner.parse(signer.encode()) == signer
    assert CosignerKey.parse(signer.key.encode()) == signer.key
    log_key = Signer.generate("w.example/1")
    with pytest.raises(UsageError, match="cosignature/v1"):
        CosignerKey.parse(log_key.verifier.encode())
    name, key_id, material = signer.key.encode().split("+", 2)
    with pytest.raises(UsageError, match="key ID"):
        CosignerKey.parse(f"{name}+{int(key_id, 16) ^ 1:08x}+{material}")


def test_changed_checkpoint_or_timestamp_is_refused() -> None:
    signer = Cosigner("w1", SEED)
    line = signer.cosign(SPEC_BODY, 1700000000)
    changed = SPEC_BODY.replace("20852163", "20852164") + "\n" + line
    with pytest.raises(ProofError, match="does not verify"):
        cosigned_by(changed, [signer.key])
    sig = parse_note(SPEC_BODY + "\n" + line).signatures[0]
    blob = bytearray(sig.signature)
    blob[7] ^= 1  # the timestamp is signed too
    forged = sig.__class__(sig.name, sig.key_id, bytes(blob)).line()
    with pytest.raises(ProofError):
        cosigned_by(SPEC_BODY + "\n" + forged, [signer.key])


def test_quorum() -> None:
    log = Signer.generate("example.com/log")
    note = sign_note(SPEC_BODY, log)
    witnesses = [Cosigner.generate(f"w{i}") for i in range(3)]
    keys = [w.key for w in witnesses]
    one = add_cosignatures(note, [witnesses[0].cosign(SPEC_BODY, 1)])
    with pytest.raises(ProofError, match=r"1 valid witness cosignature.*quorum of 2"):
        check_quorum(one, keys, 2)
    more = [witnesses[2].cosign(SPEC_BODY, 2), witnesses[0].cosign(SPEC_BODY, 1)]
    two = add_cosignatures(one, more)
    assert [c.name for c in check_quorum(two, keys, 2)] == ["w0", "w2"]
    assert two.count("\u2014 w0 ") == 1  # a repeated line is not added twice
    # the same witness twice does not count twice; an unknown witness does not count
    stranger = Cosigner.generate("w9")
    other = add_cosignatures(one, [stranger.cosign(SPEC_BODY, 3)])
    with pytest.raises(ProofError):
        check_quorum(other, keys, 2)
    with pytest.raises(UsageError):
        check_quorum(two, keys[:1], 2)
