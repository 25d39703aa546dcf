"""Proof files: made from a tree, verified with the file and a public key alone, and refused
after any change, truncation, or with the wrong key."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from ledger.codec import leaf_bytes
from ledger.errors import ProofError, UsageError
from ledger.merkle import (
    DictNodeStore,
    append_leaves,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)
from ledger.notes import Checkpoint, generate_key
from ledger.proofs import (
    CONSISTENCY_HEADER,
    INCLUSION_HEADER,
    make_consistency_proof,
    make_inclusion_proof,
    verify_consistency_proof,
    verify_inclusion_proof,
)

ORIGIN = "adminchain.example/ledger"
SKEY, VKEY = generate_key(ORIGIN)
OTHER_SKEY, OTHER_VKEY = generate_key(ORIGIN)
WITNESS_SKEY, WITNESS_VKEY = generate_key("witness.example")

EVENTS = [f'{{"type":"node_added","n":{i}}}'.encode() for i in range(1, 21)]
STORE = DictNodeStore()
append_leaves(STORE, 0, [leaf_hash(leaf_bytes(p, e)) for p, e in enumerate(EVENTS, 1)])


def checkpoint(size: int, origin: str = ORIGIN) -> Checkpoint:
    digest = hashlib.sha256(f"states at {size}".encode()).digest()
    return Checkpoint(origin, size, root(STORE, size), digest)


def inclusion(position: int, size: int, note: str | None = None) -> str:
    if note is None:
        note = checkpoint(size).sign(SKEY)
    path = inclusion_proof(STORE, position - 1, size)
    return make_inclusion_proof(position, EVENTS[position - 1], path, note)


def consistency(size1: int, size2: int, *, signed: bool = True) -> str:
    old, new = checkpoint(size1), checkpoint(size2)
    notes = (old.sign(SKEY), new.sign(SKEY)) if signed else (old.to_body(), new.to_body())
    return make_consistency_proof(*notes, consistency_proof(STORE, size1, size2))


def changed_bytes(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every one-byte change of `data`: each byte altered three ways, removed, or doubled."""
    for i, b in enumerate(data):
        for delta in (0x01, 0x20, 0x80):
            yield f"byte {i} ^ {delta:#x}", data[:i] + bytes([b ^ delta]) + data[i + 1 :]
        yield f"byte {i} removed", data[:i] + data[i + 1 :]
        yield f"byte {i} doubled", data[:i] + bytes([b]) + data[i:]
    yield "byte appended", data + b"x"
    yield "newline appended", data + b"\n"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def leaf64(position: int, event: bytes) -> str:
    return b64(leaf_bytes(position, event))


def refused(how: str, call: Callable[[], object]) -> None:
    """`call` must raise `ProofError`; `how` names the change that should have been noticed."""
    try:
        call()
    except ProofError:
        return
    pytest.fail(f"accepted after {how}")


# ----------------------------------------------------------------------------- inclusion


def test_inclusion_file_layout() -> None:
    text = inclusion(4, 6)
    leaf_re = r"AAAAAAAAAAR7[A-Za-z0-9+/=]+"  # 8-byte position 4, then the event
    hash64 = r"[A-Za-z0-9+/]{43}="
    body = re.escape(checkpoint(6).to_body())
    signature = f"\u2014 {re.escape(ORIGIN)} [A-Za-z0-9+/]{{91}}="
    pattern = rf"{re.escape(INCLUSION_HEADER)}\nextra {leaf_re}\nindex 3\n(?:{hash64}\n){{3}}\n"
    assert re.fullmatch(f"{pattern}{body}\n{signature}\n", text)


@pytest.mark.parametrize("size", [1, 2, 5, 6, 8, 20])
def test_every_position_round_trips(size: int) -> None:
    for position in range(1, size + 1):
        result = verify_inclusion_proof(inclusion(position, size), VKEY)
        assert (result.index, result.position, result.size) == (position - 1, position, size)
        assert result.event == EVENTS[position - 1]
        assert result.leaf == leaf_bytes(position, EVENTS[position - 1])
        assert result.checkpoint == checkpoint(size)
        assert result.signed_by == (ORIGIN,)


def test_verified_with_the_file_and_the_public_key_alone() -> None:
    text = inclusion(7, 20).encode()
    assert verify_inclusion_proof(text, [VKEY]).event == EVENTS[6]
    with pytest.raises(ProofError, match="none of them a known key"):
        verify_inclusion_proof(text, OTHER_VKEY)
    with pytest.raises(ProofError, match="none of them a known key"):
        verify_inclusion_proof(text, WITNESS_VKEY)
    assert verify_inclusion_proof(text, [OTHER_VKEY, VKEY]).signed_by == (ORIGIN,)


def test_cosigned_checkpoint_names_every_known_signer() -> None:
    text = inclusion(3, 5, checkpoint(5).sign(SKEY, WITNESS_SKEY))
    assert verify_inclusion_proof(text, [VKEY, WITNESS_VKEY]).signed_by == (
        ORIGIN,
        "witness.example",
    )
    assert verify_inclusion_proof(text, WITNESS_VKEY).signed_by == ("witness.example",)


def test_unsigned_only_when_no_key_is_required() -> None:
    unsigned = inclusion(2, 5, checkpoint(5).to_body())
    assert verify_inclusion_proof(unsigned, None).signed_by == ()
    with pytest.raises(ProofError, match="checkpoint: it is unsigned"):
        verify_inclusion_proof(unsigned, VKEY)
    assert verify_inclusion_proof(inclusion(2, 5), None).signed_by == ()


def test_every_changed_byte_is_refused() -> None:
    data = inclusion(4, 6).encode()
    for how, changed in changed_bytes(data):
        refused(how, partial(verify_inclusion_proof, changed, VKEY))


def test_every_truncation_is_refused() -> None:
    text = inclusion(5, 10)
    for cut in range(len(text)):
        refused(f"cut at {cut}", partial(verify_inclusion_proof, text[:cut], VKEY))
    # Without a key, dropping the signatures leaves a valid unsigned proof; anything shorter
    # is refused.
    body_end = text.index("\n\n", text.index("\n\n") + 2) + 1
    for cut in range(body_end):
        refused(f"cut at {cut}", partial(verify_inclusion_proof, text[:cut], None))


def test_refusals_say_why() -> None:
    text = inclusion(4, 6)
    lines = text.split("\n")
    other_leaf = inclusion(5, 6).split("\n")[1]
    changed_event = f"extra {leaf64(4, b'forged')}"
    cases = {
        "line 1: not a c2sp.org/tlog-proof@v1": "\n".join(["c2sp.org/tlog-proof@v2", *lines[1:]]),
        "line 2: no extra line": "\n".join([lines[0], *lines[2:]]),
        "line 3: expected 'index": "\n".join([*lines[:2], "index 03", *lines[3:]]),
        "leaf is for position 5, but the proof is for index 3": "\n".join(
            [lines[0], other_leaf, *lines[2:]]
        ),
        "inclusion proof of position 4: .* not the expected root": "\n".join(
            [lines[0], changed_event, *lines[2:]]
        ),
        "inclusion proof of position 4: .* has 2 hashes, expected 3": "\n".join(
            [*lines[:3], *lines[4:]]
        ),
        "line 4: the proof hash is not canonical": "\n".join(
            [*lines[:3], lines[3][:-2] + "h=", *lines[4:]]
        ),
        "more than any tree needs": "\n".join([*lines[:3], *[lines[3]] * 200, *lines[3:]]),
        "not below the tree size 6": "\n".join(
            [lines[0], f"extra {leaf64(7, b'x')}", "index 6", *lines[3:]]
        ),
        "does not end with a newline": text[:-1],
        "no empty line before the checkpoint": text.replace("\n\n", "\n"),
    }
    for message, bad in cases.items():
        with pytest.raises(ProofError, match=message):
            verify_inclusion_proof(bad, VKEY)


def test_a_proof_that_would_not_verify_is_never_made() -> None:
    note = checkpoint(6).sign(SKEY)
    with pytest.raises(ProofError, match="not the expected root"):
        make_inclusion_proof(4, b"forged", inclusion_proof(STORE, 3, 6), note)
    with pytest.raises(ProofError, match="expected 3"):
        make_inclusion_proof(4, EVENTS[3], inclusion_proof(STORE, 3, 4), note)
    with pytest.raises(UsageError, match="position"):
        make_inclusion_proof(0, EVENTS[0], [], note)
    with pytest.raises(UsageError, match="ending with a newline"):
        make_inclusion_proof(4, EVENTS[3], inclusion_proof(STORE, 3, 6), note[:-1])


# ----------------------------------------------------------------------------- consistency


SIZES = [1, 2, 3, 5, 6, 8, 13, 20]


def test_consistency_file_layout() -> None:
    text = consistency(6, 10)
    hashes = "".join(f"{h}\n" for h in [*map(b64, consistency_proof(STORE, 6, 10))])
    assert text == (
        f"{CONSISTENCY_HEADER}\n{hashes}\n{checkpoint(6).sign(SKEY)}{checkpoint(10).sign(SKEY)}"
    )


@pytest.mark.parametrize("signed", [True, False])
def test_every_pair_round_trips(signed: bool) -> None:
    for size2 in SIZES:
        for size1 in [s for s in SIZES if s <= size2]:
            text = consistency(size1, size2, signed=signed)
            result = verify_consistency_proof(text, VKEY if signed else None)
            assert (result.old, result.new) == (checkpoint(size1), checkpoint(size2))
            assert result.signed_by == ((ORIGIN,) if signed else ())


def test_mixed_signed_and_unsigned() -> None:
    old, new = checkpoint(3), checkpoint(8)
    proof = consistency_proof(STORE, 3, 8)
    for notes in [(old.to_body(), new.sign(SKEY)), (old.sign(SKEY), new.to_body())]:
        text = make_consistency_proof(*notes, proof)
        assert verify_consistency_proof(text, None).new == new
        with pytest.raises(ProofError, match="checkpoint: it is unsigned"):
            verify_consistency_proof(text, VKEY)


def test_consistency_every_changed_byte_and_truncation_is_refused() -> None:
    data = consistency(5, 8).encode()
    for how, changed in changed_bytes(data):
        refused(how, partial(verify_consistency_proof, changed, VKEY))
    for cut in range(len(data)):
        refused(f"cut at {cut}", partial(verify_consistency_proof, data[:cut], VKEY))


def test_consistency_wrong_key_is_refused() -> None:
    text = consistency(2, 13)
    with pytest.raises(ProofError, match=r"old checkpoint: .*none of them a known key"):
        verify_consistency_proof(text, OTHER_VKEY)


def test_consistency_refusals_say_why() -> None:
    proof = consistency_proof(STORE, 5, 8)
    other = checkpoint(8, origin="other.example/ledger")
    bad_digest = Checkpoint(ORIGIN, 8, root(STORE, 8), hashlib.sha256(b"x").digest())
    cases: dict[str, tuple[str, str, list[bytes]]] = {
        "different logs": (checkpoint(5).to_body(), other.to_body(), proof),
        r"old checkpoint \(size 8\) is larger": (
            checkpoint(8).to_body(),
            checkpoint(5).to_body(),
            proof,
        ),
        "size 8 with different state digests": (
            checkpoint(8).to_body(),
            bad_digest.to_body(),
            [],
        ),
        "from size 5 to 8: .* has 2 hashes, expected 4": (
            checkpoint(5).to_body(),
            checkpoint(8).to_body(),
            proof[:2],
        ),
        "from size 5 to 8: .*not the expected": (
            checkpoint(5).to_body(),
            checkpoint(8).to_body(),
            [proof[0], proof[2], proof[1], proof[3]],
        ),
        "from size 0 to 8: .*empty tree proves nothing": (
            Checkpoint(ORIGIN, 0, root(STORE, 0), bytes(32)).to_body(),
            checkpoint(8).to_body(),
            [],
        ),
    }
    for message, (old, new, hashes) in cases.items():
        with pytest.raises(ProofError, match=message):
            make_consistency_proof(old, new, hashes)
    good = consistency(5, 8, signed=False)
    for message, bad in {
        "line 1: not an": good.replace(CONSISTENCY_HEADER, "adminchain consistency proof v2"),
        "no empty line after the hashes": CONSISTENCY_HEADER + "\n",
        "fewer than 4 lines": good[: good.rindex(ORIGIN)],
        "unexpected text after the new checkpoint": good + "trailing\n",
        "empty line but no signature": good.replace(
            checkpoint(5).to_body(), checkpoint(5).to_body() + "\n"
        ),
    }.items():
        with pytest.raises(ProofError, match=message):
            verify_consistency_proof(bad, None)
