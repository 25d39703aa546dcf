"""The Merkle tree against a naive RFC 6962 model, against pymerkle, and against tampering.

The model below is the RFC's recursive definitions (MTH, PATH, SUBPROOF) written directly over
a list of leaf hashes, with its own hashing: the module under test must agree with it for every
size, every (index, size) and every (size1, size2) up to 64 leaves, and for random pairs in a
larger tree. pymerkle 7 (RFC 6962 mode: its default ``disable_security=False`` keeps the 0x00 /
0x01 prefixes) is a second, independent implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from ledger.errors import NotFoundError, ProofError, UsageError
from ledger.merkle import (
    EMPTY_ROOT,
    DictNodeStore,
    Frontier,
    append_leaf,
    append_leaves,
    check_consistency,
    check_inclusion,
    consistency_proof,
    consistency_proof_size,
    inclusion_proof,
    inclusion_proof_size,
    leaf_hash,
    node_hash,
    plan_append,
    root,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

# ----------------------------------------------------------------------------- the model


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def data_of(i: int) -> bytes:
    return f"event {i}".encode()


N = 1500
LEAVES = [_h(b"\x00" + data_of(i)) for i in range(N)]


@cache
def mth(lo: int, hi: int) -> bytes:
    """RFC 6962 MTH(D[lo:hi]) over LEAVES."""
    n = hi - lo
    if n == 0:
        return _h(b"")
    if n == 1:
        return LEAVES[lo]
    k = _split(n)
    return _h(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def path(m: int, lo: int, hi: int) -> list[bytes]:
    """RFC 6962 PATH(m, D[lo:hi])."""
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*path(m, lo, lo + k), mth(lo + k, hi)]
    return [*path(m - k, lo + k, hi), mth(lo, lo + k)]


def shape(m: int, n: int) -> list[bool]:
    """For PATH(m, D[n]): whether each sibling, bottom-up, is on the left."""
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*shape(m, k), False]
    return [*shape(m - k, n - k), True]


def cshape(m: int, n: int, whole: bool = True) -> list[str]:
    """For SUBPROOF(m, D[n], b): per hash, bottom-up, "old" (a root of the old tree) or the
    side of the sibling ("left", "right")."""
    if m == n:
        return [] if whole else ["old"]
    k = _split(n)
    if m <= k:
        return [*cshape(m, k, whole), "right"]
    return [*cshape(m - k, n - k, False), "left"]


def subproof(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
    """RFC 6962 SUBPROOF(m, D[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if whole else [mth(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*subproof(m, lo, lo + k, whole), mth(lo + k, hi)]
    return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


def build(leaves: Sequence[bytes]) -> DictNodeStore:
    store = DictNodeStore()
    append_leaves(store, 0, leaves)
    return store


STORE = build(LEAVES)


def flips(value: bytes) -> Iterator[bytes]:
    """`value` with each single bit flipped in turn."""
    for i in range(len(value) * 8):
        changed = bytearray(value)
        changed[i // 8] ^= 1 << (i % 8)
        yield bytes(changed)


# ----------------------------------------------------------------------------- hashing


def test_hash_constants() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(b"\x00" * 32, b"\x00" * 32).hex() == (
        "ae0798d0ecaed2b778eddebf18f071a561c53658c05e76cedecc27cafbdbc577"
    )


# ----------------------------------------------------------------------------- the store


def test_roots_of_every_size() -> None:
    frontier = Frontier()
    assert root(STORE, 0) == EMPTY_ROOT == frontier.root()
    for n in range(1, N + 1):
        frontier.append(LEAVES[n - 1])
        assert root(STORE, n) == mth(0, n) == frontier.root(), n
        assert frontier.size == n


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, N])
def test_store_holds_exactly_the_complete_perfect_subtrees(n: int) -> None:
    store = build(LEAVES[:n])
    expected = {
        (level, i): mth(i << level, (i + 1) << level)
        for level in range(12)
        for i in range(n >> level)
    }
    assert store.nodes == expected
    assert Frontier.from_store(store, n).root() == mth(0, n)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70), max_size=12))
def test_batches_build_the_same_tree_as_single_appends(batches: list[int]) -> None:
    total = min(sum(batches), N)
    one_by_one = DictNodeStore()
    for i in range(total):
        assert append_leaf(one_by_one, i, LEAVES[i]) == i + 1
    batched, size = DictNodeStore(), 0
    for b in batches:
        take = LEAVES[size : min(size + b, total)]
        size = append_leaves(batched, size, take)
    assert size == total
    assert batched.nodes == one_by_one.nodes
    assert root(batched, total) == mth(0, total)


class CountingStore(DictNodeStore):
    __slots__ = ("reads",)

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return super().get(level, index)


def test_reads_are_logarithmic() -> None:
    store = CountingStore()
    store.nodes.update(STORE.nodes)
    for n in (1, 2, 5, 100, 1023, 1024, 1025, N):
        store.reads = 0
        runs = plan_append(store, n, LEAVES[:3])
        assert store.reads <= n.bit_length() + 1
        assert [(level, start) for level, start, _ in runs] == sorted(
            (level, start) for level, start, _ in runs
        )
        store.reads = 0
        root(store, n)
        assert store.reads == n.bit_count()
        for i in (0, n // 2, n - 1):
            store.reads = 0
            inclusion_proof(store, i, n)
            assert store.reads <= 2 * n.bit_length() + 1
            store.reads = 0
            consistency_proof(store, max(i, 1), n)
            assert store.reads <= 2 * n.bit_length() + 1


def test_append_refuses_bad_input() -> None:
    with pytest.raises(UsageError, match="leaf hash 1 of the batch"):
        append_leaves(DictNodeStore(), 0, [LEAVES[0], b"short"])
    with pytest.raises(NotFoundError, match=r"node \(0, 4\) is missing"):
        append_leaf(DictNodeStore(), 5, LEAVES[5])
    with pytest.raises(UsageError):
        append_leaves(DictNodeStore(), -1, [])


def test_reading_beyond_the_store_is_not_found() -> None:
    small = build(LEAVES[:5])
    with pytest.raises(NotFoundError):
        root(small, 6)
    with pytest.raises(NotFoundError):
        inclusion_proof(small, 0, 8)
    with pytest.raises(UsageError, match="not in a tree of size 5"):
        inclusion_proof(small, 5, 5)
    with pytest.raises(UsageError, match="larger than size2"):
        consistency_proof(small, 5, 4)
    with pytest.raises(UsageError):
        subtree_hash(small, 3, 3)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, N - 1), st.integers(1, 64))
def test_subtree_hash_of_any_range(start: int, width: int) -> None:
    end = min(start + width, N)
    assert subtree_hash(STORE, start, end) == mth(start, end)


# ----------------------------------------------------------------------------- proofs


def test_inclusion_for_every_pair_up_to_64() -> None:
    for n in range(1, 65):
        r = mth(0, n)
        for i in range(n):
            proof = inclusion_proof(STORE, i, n)
            assert proof == path(i, 0, n), (i, n)
            assert len(proof) == inclusion_proof_size(i, n)
            assert verify_inclusion(LEAVES[i], i, n, proof, r)
            # A proof only fixes the order of hashing: another index or size is refused
            # exactly when it changes that order (the root then binds the rest).
            for j in {i - 1, i + 1, i ^ 1, i ^ 2, n} - {i}:
                same = 0 <= j < n and shape(j, n) == shape(i, n)
                assert verify_inclusion(LEAVES[i], j, n, proof, r) is same, (i, j, n)
            for m in {n - 1, n + 1, 2 * n} - {n}:
                same = i < m and shape(i, m) == shape(i, n)
                assert verify_inclusion(LEAVES[i], i, m, proof, r) is same, (i, n, m)


def test_consistency_for_every_pair_up_to_64() -> None:
    for n in range(1, 65):
        for m in range(1, n + 1):
            proof = consistency_proof(STORE, m, n)
            assert proof == subproof(m, 0, n, True), (m, n)
            if m < n:
                assert len(proof) == consistency_proof_size(m, n)
            assert verify_consistency(m, n, proof, mth(0, m), mth(0, n))
            if m == n:
                continue
            # As for inclusion: other sizes are refused exactly when they change the order
            # of hashing.
            for m2, n2 in {(m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1), (m, 2 * n)}:
                same = 0 < m2 < n2 and cshape(m2, n2) == cshape(m, n)
                ok = verify_consistency(m2, n2, proof, mth(0, m), mth(0, n))
                assert ok is same, (m, n, m2, n2)
            assert not verify_consistency(m, n, proof, mth(0, n), mth(0, m))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_pairs_in_a_larger_tree(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, N), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="size1")
    proof = inclusion_proof(STORE, i, n)
    assert proof == path(i, 0, n)
    check_inclusion(LEAVES[i], i, n, proof, mth(0, n))
    cproof = consistency_proof(STORE, m, n)
    assert cproof == subproof(m, 0, n, True)
    check_consistency(m, n, cproof, mth(0, m), mth(0, n))


def _inclusion_tampers(i: int, n: int) -> Iterator[tuple[bytes, int, int, list[bytes], bytes]]:
    leaf, proof, r = LEAVES[i], inclusion_proof(STORE, i, n), mth(0, n)
    for bad in flips(leaf):
        yield bad, i, n, proof, r
    for bad in flips(r):
        yield leaf, i, n, proof, bad
    for k, h in enumerate(proof):
        for bad in flips(h):
            yield leaf, i, n, [*proof[:k], bad, *proof[k + 1 :]], r
        yield leaf, i, n, proof[:k] + proof[k + 1 :], r  # one hash removed
        yield leaf, i, n, [*proof[:k], h, *proof], r  # one hash repeated
    for k in range(len(proof) + 1):
        yield leaf, i, n, [*proof[:k], LEAVES[0], *proof[k:]], r  # one hash inserted
    yield leaf, i, n, [*proof, b""], r
    yield leaf, i, n, [*proof, r], r
    yield leaf, i, n, [*proof, b"\x00" * 33], r
    if proof:
        yield leaf, i, n, [h[:-1] for h in proof], r
    if len(proof) > 1:
        yield leaf, i, n, proof[::-1], r


def test_every_tampered_inclusion_proof_is_refused() -> None:
    for n in range(1, 13):
        for i in range(n):
            for args in _inclusion_tampers(i, n):
                assert not verify_inclusion(*args), (i, n)
                with pytest.raises(ProofError):
                    check_inclusion(*args)


def _consistency_tampers(m: int, n: int) -> Iterator[tuple[int, int, list[bytes], bytes, bytes]]:
    proof, r1, r2 = consistency_proof(STORE, m, n), mth(0, m), mth(0, n)
    for bad in flips(r1):
        yield m, n, proof, bad, r2
    for bad in flips(r2):
        yield m, n, proof, r1, bad
    for k, h in enumerate(proof):
        for bad in flips(h):
            yield m, n, [*proof[:k], bad, *proof[k + 1 :]], r1, r2
        yield m, n, proof[:k] + proof[k + 1 :], r1, r2
        yield m, n, [*proof[:k], h, *proof], r1, r2
    for k in range(len(proof) + 1):
        yield m, n, [*proof[:k], LEAVES[0], *proof[k:]], r1, r2
    yield m, n, [*proof, r2], r1, r2
    yield m, n, [r1, *proof], r1, r2
    yield 0, n, proof, EMPTY_ROOT, r2
    if len(proof) > 1:
        yield m, n, proof[::-1], r1, r2


def test_every_tampered_consistency_proof_is_refused() -> None:
    for n in range(2, 13):
        for m in range(1, n):
            for args in _consistency_tampers(m, n):
                assert not verify_consistency(*args), (m, n)
                with pytest.raises(ProofError):
                    check_consistency(*args)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_bit_flip_or_truncation_is_refused(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, N), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n - 1), label="size1")
    blob = b"".join([LEAVES[i], *inclusion_proof(STORE, i, n), mth(0, n)])
    bit = data.draw(st.integers(0, len(blob) * 8 - 1), label="bit")
    changed = bytearray(blob)
    changed[bit // 8] ^= 1 << (bit % 8)
    parts = [bytes(changed[k : k + 32]) for k in range(0, len(changed), 32)]
    assert not verify_inclusion(parts[0], i, n, parts[1:-1], parts[-1])
    cproof = consistency_proof(STORE, m, n)
    cut = data.draw(st.integers(0, len(cproof) - 1), label="cut")
    assert not verify_consistency(m, n, cproof[:cut], mth(0, m), mth(0, n))
    cblob = bytearray(b"".join([mth(0, m), *cproof, mth(0, n)]))
    cbit = data.draw(st.integers(0, len(cblob) * 8 - 1), label="cbit")
    cblob[cbit // 8] ^= 1 << (cbit % 8)
    cparts = [bytes(cblob[k : k + 32]) for k in range(0, len(cblob), 32)]
    assert not verify_consistency(m, n, cparts[1:-1], cparts[0], cparts[-1])


def test_refusals_say_why() -> None:
    proof, r = inclusion_proof(STORE, 5, 8), mth(0, 8)
    cases: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]] = [
        ("not below the tree size 8", (LEAVES[5], 8, 8, proof, r)),
        ("not below the tree size 0", (LEAVES[5], 0, 0, [], r)),
        ("leaf hash is not 32 bytes", (b"x", 5, 8, proof, r)),
        ("proof hash 1 is 31 bytes", (LEAVES[5], 5, 8, [proof[0], proof[1][:31], proof[2]], r)),
        ("has 2 hashes, expected 3", (LEAVES[5], 5, 8, proof[:2], r)),
        ("has 4 hashes, expected 3", (LEAVES[5], 5, 8, [*proof, r], r)),
        ("not the expected root", (LEAVES[4], 5, 8, proof, r)),
    ]
    for message, args in cases:
        with pytest.raises(ProofError, match=message):
            check_inclusion(*args)
    with pytest.raises(ProofError, match="must be an integer"):
        check_inclusion(LEAVES[0], True, 1, [], LEAVES[0])
    with pytest.raises(ProofError, match="outside"):
        check_inclusion(LEAVES[0], 0, 1 << 64, [], LEAVES[0])

    cp, r6 = consistency_proof(STORE, 6, 8), mth(0, 6)
    ccases: list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]] = [
        ("size1 8 is larger than size2 6", (8, 6, cp, r, r6)),
        ("must be empty", (8, 8, [r], r, r)),
        ("roots differ for the same size 8", (8, 8, [], r, r6)),
        ("must have the empty root", (0, 0, [], r, r)),
        ("from the empty tree proves nothing", (0, 8, [], EMPTY_ROOT, r)),
        ("empty consistency proof", (6, 8, [], r6, r)),
        ("has 2 hashes, expected 3", (6, 8, cp[:2], r6, r)),
        ("for size 6, not the expected", (6, 8, cp, mth(0, 5), r)),
        ("for size 8, not the expected", (6, 8, cp, r6, mth(0, 7))),
    ]
    for message, cargs in ccases:
        with pytest.raises(ProofError, match=message):
            check_consistency(*cargs)
    check_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    check_consistency(8, 8, [], r, r)


def test_degenerate_generation() -> None:
    assert consistency_proof(STORE, 0, 5) == []
    assert consistency_proof(STORE, 5, 5) == []
    assert inclusion_proof(STORE, 0, 1) == []


# ----------------------------------------------------------------------------- pymerkle


def test_agrees_with_pymerkle() -> None:
    count = 300
    tree = InmemoryTree(algorithm="sha256")  # RFC 6962 prefixes: security on (the default)
    for i in range(count):
        tree.append_entry(data_of(i))
    for n in range(count + 1):
        assert tree.get_root(n) == root(STORE, n), n
    pairs = [(i, n) for n in range(1, 41) for i in range(n)]
    pairs += [(i, n) for n in (127, 128, 129, 255, 300) for i in (0, 1, n // 3, n - 2, n - 1)]
    for i, n in pairs:
        theirs = tree.prove_inclusion(i + 1, n)  # pymerkle counts leaves from one
        assert theirs.path == [LEAVES[i], *inclusion_proof(STORE, i, n)], (i, n)
        theirs.verify(LEAVES[i], root(STORE, n))
    sizes = [(a, b) for b in range(1, 41) for a in range(1, b + 1)] + [(100, 300), (64, 257)]
    for m, n in sizes:
        # pymerkle's consistency path has its own layout (not RFC 6962's), so compare
        # through the roots: its proof must verify against ours, and ours too.
        tree.prove_consistency(m, n).verify(root(STORE, m), root(STORE, n))
        check_consistency(m, n, consistency_proof(STORE, m, n), root(STORE, m), root(STORE, n))


@pytest.mark.parametrize("runs", [[0], [1, 15, 16], [17, 31, 32, 33], [100, 257, 3, 600], [1000]])
def test_frontier_push_run_equals_pushing_each(runs: list[int]) -> None:
    """`Frontier.push_run` (verify's level-at-a-time form) gives the frontier and root that
    pushing each leaf does, from any size."""
    one, run = Frontier(), Frontier()
    for count in runs:
        leaves = [hashlib.sha256(f"{one.size + i}".encode()).digest() for i in range(count)]
        for leaf in leaves:
            one.push(leaf)
        run.push_run(leaves)
        assert run.size == one.size
        assert run.root() == one.root()
