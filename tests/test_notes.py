"""Signed notes and checkpoints: known answers from Go and C2SP, round-trips, tampering."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ProofError, UsageError
from ledger.notes import (
    EM_DASH,
    STATE_EXTENSION,
    Checkpoint,
    Note,
    Signer,
    Verifier,
    decode_base64,
    generate_key,
    key_id,
    open_note,
    parse_note,
    sign_note,
)

# golang.org/x/mod/sumdb/note: the package documentation's example key and note, and the
# second key of its tests.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"  # noqa: E501  one line of a published vector
PETER_SIG = f"{EM_DASH} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"  # noqa: E501  published vector
ENOCH_SIG = f"{EM_DASH} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"  # noqa: E501  published vector

# The example of the C2SP signed-note specification.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = f"This is an example message.\n\n{EM_DASH} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"  # noqa: E501  published vector

SKEY, VKEY = generate_key("adminchain.example/log")
OTHER_SKEY, OTHER_VKEY = generate_key("adminchain.example/log")

CHECKPOINT = Checkpoint(
    origin="adminchain.example/log",
    size=5,
    root=hashlib.sha256(b"root").digest(),
    state_digest=hashlib.sha256(b"states").digest(),
)


def changed_bytes(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every one-byte change of `data`: each byte altered three ways, removed, or doubled."""
    for i, b in enumerate(data):
        for delta in (0x01, 0x20, 0x80):
            yield f"byte {i} ^ {delta:#x}", data[:i] + bytes([b ^ delta]) + data[i + 1 :]
        yield f"byte {i} removed", data[:i] + data[i + 1 :]
        yield f"byte {i} doubled", data[:i] + bytes([b]) + data[i:]
    yield "byte appended", data + b"x"
    yield "newline appended", data + b"\n"


def refused(how: str, call: Callable[[], object]) -> None:
    """`call` must raise `ProofError`; `how` names the change that should have been noticed."""
    try:
        call()
    except ProofError:
        return
    pytest.fail(f"accepted after {how}")


# ----------------------------------------------------------------------------- known answers


def test_signing_matches_go_byte_for_byte() -> None:
    assert sign_note(TEXT, PETER_SKEY) == TEXT + "\n" + PETER_SIG
    signer = Signer.parse(PETER_SKEY)
    assert signer.key_id == 0xC74F20A3
    assert signer.encode() == PETER_SKEY
    assert signer.verifier.encode() == PETER_VKEY
    assert Verifier.parse(PETER_VKEY) == signer.verifier


def test_opening_matches_go() -> None:
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, PETER_VKEY) == TEXT  # Enoch's signature is unknown: ignored
    assert open_note(both, [PETER_VKEY, ENOCH_VKEY]) == TEXT
    assert open_note(both.encode(), [ENOCH_VKEY]) == TEXT
    with pytest.raises(ProofError, match="none of them a known key"):
        open_note(both, [SPEC_VKEY])
    # Repeated signatures, and a broken one by an unknown key, do not matter.
    bad_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    messy = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + bad_enoch
    assert open_note(messy, PETER_VKEY) == TEXT
    with pytest.raises(ProofError, match="PeterNeumann\\+c74f20a3 does not verify"):
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], PETER_VKEY)
    with pytest.raises(ProofError, match="more than 100 signatures"):
        open_note(TEXT + "\n" + PETER_SIG * 101, PETER_VKEY)


@pytest.mark.parametrize(
    "text",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_malformed_notes_from_go(text: str) -> None:
    with pytest.raises(ProofError, match=r"malformed note|control character"):
        open_note(text, PETER_VKEY)
    with pytest.raises(ProofError, match="not valid UTF-8"):
        open_note(b"\xff" + TEXT.encode() + b"\n" + PETER_SIG.encode(), PETER_VKEY)


def test_c2sp_specification_example() -> None:
    assert open_note(SPEC_NOTE, SPEC_VKEY) == "This is an example message.\n"
    verifier = Verifier.parse(SPEC_VKEY)
    assert verifier.key_id == key_id("example.com/foo", verifier.public_key) == 0x530D903A


# ----------------------------------------------------------------------------- keys


@pytest.mark.parametrize("key", [PETER_VKEY, PETER_SKEY])
def test_every_mangled_key_is_refused(key: str) -> None:
    """As Go's tests: every proper substring, and every byte incremented, is not a key."""
    parse = Signer.parse if key.startswith("PRIVATE") else Verifier.parse
    raw = key.encode()
    for i in range(len(raw) + 1):
        for j in range(i + 1, len(raw) + 1):
            if (i, j) != (0, len(raw)):
                with pytest.raises(UsageError):
                    parse(raw[i:j].decode())
    for i in range(len(raw)):
        mangled = raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :]
        with pytest.raises(UsageError):
            parse(mangled.decode())
    # wrong key length, and an unknown algorithm, each with a key ID that matches
    with pytest.raises(UsageError, match=r"32 bytes|not canonical"):
        Verifier.parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(UsageError, match="signature type 0x65"):
        Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_generated_keys() -> None:
    skey, vkey = generate_key("example.com/log42")
    assert re.fullmatch(r"PRIVATE\+KEY\+example\.com/log42\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", skey)
    assert re.fullmatch(r"example\.com/log42\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", vkey)
    signer = Signer.parse(skey)
    assert signer.verifier == Verifier.parse(vkey)
    assert skey.split("+")[4] not in repr(signer)
    assert signer.encode() == skey
    for name in ("", "a b", "a+b", "tab\there", "nbsp\u00a0x"):
        with pytest.raises(UsageError, match="invalid"):
            generate_key(name)


def test_key_configuration_errors() -> None:
    with pytest.raises(UsageError, match="no verifier key"):
        open_note(sign_note("x\n", SKEY), [])
    peter = Verifier.parse(PETER_VKEY)
    assert open_note(TEXT + "\n" + PETER_SIG, [peter, PETER_VKEY, peter]) == TEXT
    with pytest.raises(UsageError, match="form"):
        Verifier.parse("nonsense")
    with pytest.raises(UsageError):
        Verifier("x", 0, b"\x00" * 32)


# ----------------------------------------------------------------------------- notes


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30), min_size=1
    ).map(lambda lines: "\n".join(lines) + "\n")
)
def test_any_body_round_trips(body: str) -> None:
    note = sign_note(body, SKEY, OTHER_SKEY)
    assert open_note(note, VKEY) == body
    assert open_note(note, [OTHER_VKEY]) == body
    parsed = parse_note(note)
    assert parsed.body == body
    assert parsed.text() == note
    assert [s.name for s in parsed.signatures] == ["adminchain.example/log"] * 2


def test_every_changed_byte_is_refused() -> None:
    note = sign_note("hello\nworld, — «ünïcode»\n", SKEY).encode()
    assert open_note(note, VKEY) == "hello\nworld, — «ünïcode»\n"
    count = 0
    for how, changed in changed_bytes(note):
        refused(how, partial(open_note, changed, VKEY))
        count += 1
    assert count > 5 * 100


def test_wrong_key_is_refused() -> None:
    note = sign_note("hello\n", SKEY)
    with pytest.raises(ProofError, match="none of them a known key"):
        open_note(note, OTHER_VKEY)  # same name, another key: another key ID
    with pytest.raises(ProofError, match="none of them a known key"):
        open_note(note, PETER_VKEY)


def test_signing_refuses_bad_bodies() -> None:
    with pytest.raises(UsageError, match="end with a newline"):
        sign_note("no newline", SKEY)
    with pytest.raises(UsageError, match="control character U\\+0009"):
        sign_note("tab\there\n", SKEY)
    with pytest.raises(UsageError, match="no signer key"):
        sign_note("x\n")
    assert isinstance(parse_note(sign_note("x\n", SKEY)), Note)


def test_decode_base64_is_canonical() -> None:
    assert decode_base64("AAE=", "x") == b"\x00\x01"
    for bad in ("AAF=", "AAE", "AA E=", "AAE==", "AAE=\n", "ÄAE="):
        with pytest.raises(ProofError, match="x is not"):
            decode_base64(bad, "x")


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_body_format() -> None:
    body = CHECKPOINT.to_body()
    root64 = "SBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I="  # base64 of SHA-256("root")
    assert body == (
        f"adminchain.example/log\n5\n{root64}\n{STATE_EXTENSION} {CHECKPOINT.state_digest.hex()}\n"
    )
    assert Checkpoint.parse(body) == CHECKPOINT


@settings(max_examples=100, deadline=None)
@given(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1).filter(
        lambda s: "+" not in s and not any(c.isspace() for c in s)
    ),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trips(origin: str, size: int, root: bytes, digest: bytes) -> None:
    checkpoint = Checkpoint(origin, size, root, digest)
    assert Checkpoint.parse(checkpoint.to_body()) == checkpoint
    assert Checkpoint.parse(checkpoint.to_body().encode()) == checkpoint


GOOD_LINES = CHECKPOINT.to_body().splitlines()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("\n".join(GOOD_LINES), "does not end with a newline"),
        ("\n".join(GOOD_LINES[:3]) + "\n", "expected 4 lines"),
        ("\n".join([*GOOD_LINES, "extra"]) + "\n", "expected 4 lines"),
        ("\n".join(["", *GOOD_LINES[1:]]) + "\n", "line 1: origin '' is invalid"),
        ("\n".join(["a b", *GOOD_LINES[1:]]) + "\n", "line 1: origin 'a b' is invalid"),
        ("\n".join([GOOD_LINES[0], "05", *GOOD_LINES[2:]]) + "\n", "line 2"),
        ("\n".join([GOOD_LINES[0], "-5", *GOOD_LINES[2:]]) + "\n", "line 2"),
        ("\n".join([GOOD_LINES[0], "\u0665", *GOOD_LINES[2:]]) + "\n", "line 2"),
        ("\n".join([GOOD_LINES[0], str(2**64), *GOOD_LINES[2:]]) + "\n", "line 2"),
        ("\n".join([*GOOD_LINES[:2], "AAAA", GOOD_LINES[3]]) + "\n", "3 bytes, not 32"),
        (
            "\n".join([*GOOD_LINES[:2], GOOD_LINES[2][:-2] + "h=", GOOD_LINES[3]]) + "\n",
            "not canonical base64",
        ),
        ("\n".join([*GOOD_LINES[:3], GOOD_LINES[3].upper()]) + "\n", "line 4"),
        ("\n".join([*GOOD_LINES[:3], GOOD_LINES[3][:-1]]) + "\n", "line 4"),
        ("\n".join([*GOOD_LINES[:3], "other-ext x"]) + "\n", "line 4"),
        ("\n".join([*GOOD_LINES[:3], GOOD_LINES[3] + " "]) + "\n", "line 4"),
        ("\n".join(GOOD_LINES) + "\r\n", "control character"),
    ],
)
def test_checkpoint_parse_is_strict(body: str, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        Checkpoint.parse(body)


def test_checkpoint_fields_are_validated() -> None:
    with pytest.raises(UsageError, match="origin"):
        Checkpoint("has space", 1, CHECKPOINT.root, CHECKPOINT.state_digest)
    with pytest.raises(UsageError, match="size"):
        Checkpoint("o", -1, CHECKPOINT.root, CHECKPOINT.state_digest)
    with pytest.raises(UsageError, match="size"):
        Checkpoint("o", True, CHECKPOINT.root, CHECKPOINT.state_digest)
    with pytest.raises(UsageError, match="root must be 32 bytes"):
        Checkpoint("o", 1, b"short", CHECKPOINT.state_digest)
    with pytest.raises(UsageError, match="state digest must be 32 bytes"):
        Checkpoint("o", 1, CHECKPOINT.root, b"")


def test_signed_checkpoint_needs_only_the_public_key() -> None:
    note = CHECKPOINT.sign(SKEY)
    assert note.startswith(CHECKPOINT.to_body() + "\n" + EM_DASH + " adminchain.example/log ")
    assert Checkpoint.open(note, VKEY) == CHECKPOINT
    assert Checkpoint.open(note.encode(), [Verifier.parse(VKEY)]) == CHECKPOINT
    with pytest.raises(ProofError, match="none of them a known key"):
        Checkpoint.open(note, OTHER_VKEY)
    for how, changed in changed_bytes(note.encode()):
        refused(how, partial(Checkpoint.open, changed, VKEY))


def test_unsigned_checkpoint_only_when_no_key_is_required() -> None:
    body = CHECKPOINT.to_body()
    assert Checkpoint.open(body, None) == CHECKPOINT
    assert Checkpoint.open(CHECKPOINT.sign(OTHER_SKEY), None) == CHECKPOINT
    with pytest.raises(ProofError, match="it is unsigned"):
        Checkpoint.open(body, VKEY)
    with pytest.raises(ProofError):
        Checkpoint.open(body + "garbage\n", None)
