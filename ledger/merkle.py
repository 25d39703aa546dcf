"""The ledger's Merkle tree: RFC 6962 / RFC 9162 hashing, storage-agnostic, append-only.

Hashing is RFC 6962's: SHA-256, leaf hash ``SHA-256(0x00 || data)``, interior node
``SHA-256(0x01 || left || right)``, the empty tree ``SHA-256("")``; a tree of n leaves splits at
the largest power of two below n (MTH).

Storage: a `NodeStore` keeps the hash of every *complete perfect* subtree, addressed by
``(level, index)``: level 0 holds the leaf hashes, and node ``(k, i)`` is the hash of leaves
``[i * 2**k, (i + 1) * 2**k)``. Such a node never changes once its last leaf is appended, so the
table is append-only (no rewrites, easy to keep in the append's own transaction), and the root
of *any* earlier size, every inclusion proof and every consistency proof need only O(log n)
lookups. An append costs one interior hash per leaf, amortised, plus O(log n) reads.

Verification (`verify_inclusion`, `verify_consistency` and their raising forms
`check_inclusion`, `check_consistency`) is pure: RFC 9162 §2.1.3.2 and §2.1.4.2 bit for bit,
preceded by exact length checks so that any proof of the wrong shape is refused with a message
that says why. Every refusal raises `ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from hmac import compare_digest
from typing import Protocol

from ledger.errors import NotFoundError, ProofError, UsageError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "MAX_SIZE",
    "DictNodeStore",
    "Frontier",
    "Node",
    "NodeReader",
    "NodeStore",
    "ProofError",
    "append_leaf",
    "append_leaves",
    "check_consistency",
    "check_inclusion",
    "consistency_proof",
    "consistency_proof_size",
    "inclusion_proof",
    "inclusion_proof_size",
    "leaf_hash",
    "node_hash",
    "plan_append",
    "root",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 6962: the hash of the empty string)."""

LEAF_PREFIX = b"\x00"
"""RFC 6962's domain separation byte before a leaf's data."""
NODE_PREFIX = b"\x01"
"""RFC 6962's domain separation byte before an interior node's two children."""
MAX_SIZE = 1 << 64
"""Tree sizes are unsigned 64-bit integers, as in RFC 9162 and the C2SP formats."""

_sha256 = hashlib.sha256

Node = tuple[int, int, bytes]
"""One stored node: ``(level, index, hash)``."""

NodeRun = tuple[int, int, list[bytes]]
"""Consecutive new nodes of one level: ``(level, first index, hashes)``."""


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of one leaf: SHA-256(0x00 || data)."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


class NodeReader(Protocol):
    """Read access to stored perfect-subtree hashes."""

    def get(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``; raises `KeyError` if it is not stored."""
        ...


class NodeStore(NodeReader, Protocol):
    """Read and write access to stored perfect-subtree hashes (see the module docstring)."""

    def put(self, level: int, index: int, digest: bytes) -> None:
        """Store the hash of node ``(level, index)``; nodes are written once, never changed."""
        ...


class DictNodeStore:
    """An in-memory `NodeStore`, for tests and for recomputing a tree during verification."""

    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``; `KeyError` if absent."""
        return self.nodes[level, index]

    def put(self, level: int, index: int, digest: bytes) -> None:
        """Store the hash of node ``(level, index)``."""
        self.nodes[level, index] = digest

    def __len__(self) -> int:
        return len(self.nodes)


# ----------------------------------------------------------------------------- appending


def _check_size(size: int, what: str = "size") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < MAX_SIZE:
        raise UsageError(f"{what} must be an integer in [0, 2**64), got {size!r}")


def plan_append(store: NodeReader, size: int, leaf_hashes: Sequence[bytes]) -> list[NodeRun]:
    """The nodes that appending `leaf_hashes` to the tree of `size` leaves creates.

    Pure: reads at most one stored node per level (the left neighbours on the right edge) and
    writes nothing. The runs come level by level, indices ascending, so ``(level, index)`` keys
    arrive in sorted order (handy for B-tree stores). Raises `UsageError` for a hash that is not
    32 bytes, `NotFoundError` if the store does not hold the tree of `size` leaves.
    """
    _check_size(size)
    _check_size(size + len(leaf_hashes), "new size")
    for i, h in enumerate(leaf_hashes):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise UsageError(f"leaf hash {i} of the batch is not {HASH_SIZE} bytes")
    runs: list[NodeRun] = []
    level, start, current = 0, size, list(leaf_hashes)
    while current:
        runs.append((level, start, current))
        if start & 1:
            try:
                left = store.get(level, start - 1)
            except KeyError as e:
                raise NotFoundError(
                    f"Merkle node ({level}, {start - 1}) is missing: "
                    f"the store does not hold a tree of {size} leaves"
                ) from e
            pairs = [left, *current]
            start = (start - 1) >> 1
        else:
            pairs = current
            start >>= 1
        sha, prefix = _sha256, NODE_PREFIX
        current = [
            sha(prefix + pairs[i] + pairs[i + 1]).digest() for i in range(0, len(pairs) - 1, 2)
        ]
        level += 1
    return runs


def append_leaves(store: NodeStore, size: int, leaf_hashes: Sequence[bytes]) -> int:
    """Append leaf hashes to the tree of `size` leaves in `store`; returns the new size.

    Writes each leaf hash and each newly completed parent once (about two `put` calls a leaf,
    or one ``put_run(level, start, hashes)`` call a level when the store offers that method);
    see `plan_append` for the errors.
    """
    put_run = getattr(store, "put_run", None)
    put = store.put
    for level, start, hashes in plan_append(store, size, leaf_hashes):
        if put_run is not None:
            put_run(level, start, hashes)
            continue
        for offset, h in enumerate(hashes):
            put(level, start + offset, h)
    return size + len(leaf_hashes)


def append_leaf(store: NodeStore, size: int, leaf: bytes) -> int:
    """Append one leaf hash to the tree of `size` leaves; returns the new size."""
    return append_leaves(store, size, (leaf,))


# ----------------------------------------------------------------------------- reading


def _split(n: int) -> int:
    """The largest power of two strictly below `n` (n >= 2): where MTH splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _get(store: NodeReader, level: int, index: int) -> bytes:
    try:
        return store.get(level, index)
    except KeyError as e:
        raise NotFoundError(
            f"Merkle node ({level}, {index}) is missing: leaves up to "
            f"{(index + 1) << level} are not in the store"
        ) from e


def _range_hash(store: NodeReader, start: int, end: int) -> bytes:
    """MTH of leaves [start, end), end > start, from stored nodes.

    A range that is a node of the tree (as every range in a proof is) costs O(log n) reads:
    its left part is then an aligned perfect subtree, and only the right part recurses.
    """
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return _get(store, n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(_range_hash(store, start, start + k), _range_hash(store, start + k, end))


def root(store: NodeReader, size: int) -> bytes:
    """The Merkle tree hash (RFC 6962 MTH) of the first `size` leaves.

    Reads one stored node per set bit of `size`: the perfect subtrees that make up the tree,
    folded from the right. `NotFoundError` if the store holds fewer than `size` leaves.
    """
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    subtrees: list[bytes] = []
    offset = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            subtrees.append(_get(store, level, offset >> level))
            offset += 1 << level
    result = subtrees.pop()
    while subtrees:
        result = node_hash(subtrees.pop(), result)
    return result


def subtree_hash(store: NodeReader, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)`` (0 <= start < end).

    O(log n) reads for the ranges that are nodes of some tree (start a multiple of the
    smallest power of two >= end - start); any other range is hashed correctly but may read
    up to ``end - start`` nodes.
    """
    _check_size(start, "start")
    _check_size(end, "end")
    if not start < end:
        raise UsageError(f"empty or reversed leaf range [{start}, {end})")
    return _range_hash(store, start, end)


def inclusion_proof(store: NodeReader, index: int, size: int) -> list[bytes]:
    """The RFC 6962 audit path PATH(index, D[size]) for the leaf at 0-based `index`.

    Hashes are ordered from the leaf's sibling up to the root's child. `UsageError` unless
    0 <= index < size.
    """
    _check_size(size)
    _check_size(index, "index")
    if not index < size:
        raise UsageError(f"leaf index {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(_range_hash(store, start + k, end))
            end = start + k
        else:
            proof.append(_range_hash(store, start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(store: NodeReader, size1: int, size2: int) -> list[bytes]:
    """The RFC 6962 consistency proof PROOF(size1, D[size2]).

    Empty when size1 == size2 or size1 == 0: there is nothing to prove, and the verifier
    accepts equal sizes with equal roots but refuses a proof from the empty tree (it proves
    nothing about the later tree). `UsageError` unless 0 <= size1 <= size2.
    """
    _check_size(size1, "size1")
    _check_size(size2, "size2")
    if size1 > size2:
        raise UsageError(f"size1 {size1} is larger than size2 {size2}")
    if size1 in (0, size2):
        return []
    proof: list[bytes] = []
    start, m, n, whole = 0, size1, size2, True
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(_range_hash(store, start + k, start + n))
            n = k
        else:
            proof.append(_range_hash(store, start, start + k))
            start, m, n, whole = start + k, m - k, n - k, False
    if not whole:
        proof.append(_range_hash(store, start, start + n))
    proof.reverse()
    return proof


class Frontier:
    """The root of a growing tree kept from O(log n) hashes, with no store.

    Holds the hashes of the perfect subtrees that make up the tree (one per set bit of the
    size), which is all that appending and the root need: what a verifier uses to recompute
    a log from its leaves without keeping every node.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @classmethod
    def from_store(cls, store: NodeReader, size: int) -> Frontier:
        """The frontier of the tree of `size` leaves held in `store` (popcount(size) reads)."""
        _check_size(size)
        frontier = cls()
        offset = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier._stack.append(_get(store, level, offset >> level))
                offset += 1 << level
        frontier._size = size
        return frontier

    @property
    def size(self) -> int:
        """How many leaves have been appended."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise UsageError(f"a leaf hash is {HASH_SIZE} bytes")
        self.push(leaf)

    def push(self, leaf: bytes) -> None:
        """Append one leaf hash the caller computed itself (a 32-byte digest: not checked)."""
        stack, n, h = self._stack, self._size, leaf
        while n & 1:
            h = _sha256(NODE_PREFIX + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self._size += 1

    def push_run(self, leaves: Sequence[bytes]) -> None:
        """`push` each leaf hash in order, hashing a level at a time (as `plan_append` does):
        a few list comprehensions instead of a loop step per hash."""
        if len(leaves) < 16:
            for leaf in leaves:
                self.push(leaf)
            return
        old = self._size
        new = old + len(leaves)
        held = [level for level in range(old.bit_length() - 1, -1, -1) if old >> level & 1]
        have = dict(zip(held, self._stack, strict=True))  # the old frontier, by level
        sha, prefix = _sha256, NODE_PREFIX
        frontier: list[bytes] = []
        level, start, current = 0, old, list(leaves)
        while new >> level:
            if new >> level & 1:  # the new tree has a perfect subtree at this level: its last
                frontier.append(current[-1] if current else have[level])
            pairs = [have[level], *current] if start & 1 and current else current
            current = [
                sha(prefix + pairs[i] + pairs[i + 1]).digest() for i in range(0, len(pairs) - 1, 2)
            ]
            start >>= 1
            level += 1
        frontier.reverse()
        self._stack, self._size = frontier, new

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append leaf hashes in order."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            result = node_hash(h, result)
        return result


# ----------------------------------------------------------------------------- verifying
#
# As transparency-dev/merkle's proof/verify.go: a proof is checked by chaining hashes from a
# seed with three helpers (`_chain_inner`, `_chain_inner_right`, `_chain_border_right`), after
# its exact length is known from the tree's shape (`_decompose`). Inclusion and consistency share
# them; both are RFC 9162 §2.1.3.2 and §2.1.4.2 written as those chains.


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border) of the audit path of leaf `index` in a tree of `size` leaves: `inner`
    hashes below the level where the paths to `index` and to the last leaf part, then `border`
    hashes of left siblings on the right border (verify.go ``decompInclProof``)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash `seed` up through `proof`, as the left or right child by the bits of `index`."""
    for level, h in enumerate(proof):
        seed = node_hash(h, seed) if index >> level & 1 else node_hash(seed, h)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """`_chain_inner` with only the left siblings: the hash of the smaller tree's part."""
    for level, h in enumerate(proof):
        if index >> level & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    """Hash `seed` up the right border: every hash of `proof` is a left sibling."""
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def inclusion_proof_size(index: int, size: int) -> int:
    """How many hashes the inclusion proof of leaf `index` in a tree of `size` holds."""
    inner, border = _decompose(index, size)
    return inner + border


def _consistency_shape(size1: int, size2: int) -> tuple[int, int, int]:
    """(shift, inner, border) of a consistency proof, 0 < size1 < size2: the proof is the
    inclusion path of leaf size1 - 1 from level `shift` (the largest perfect subtree ending the
    smaller tree), preceded by that subtree's hash unless the smaller tree is that subtree."""
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    return shift, inner - shift, border


def consistency_proof_size(size1: int, size2: int) -> int:
    """How many hashes the consistency proof from `size1` to `size2` holds (0 < size1 < size2)."""
    shift, inner, border = _consistency_shape(size1, size2)
    return (0 if size1 == 1 << shift else 1) + inner + border


def _check_int(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer, got {value!r}")
    if not 0 <= value < MAX_SIZE:
        raise ProofError(f"{what} {value} is outside [0, 2**64)")


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if not isinstance(h, bytes):
            raise ProofError(f"proof hash {i} is a {type(h).__name__}, not bytes")
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")


def _check_length(proof: Sequence[bytes], expected: int, what: str) -> None:
    if len(proof) != expected:
        raise ProofError(f"{what} has {len(proof)} hashes, expected {expected}")


def _same(a: bytes, b: bytes) -> bool:
    return isinstance(a, bytes) and isinstance(b, bytes) and compare_digest(a, b)


def _expect(computed: bytes, expected: bytes, message: str) -> None:
    """Raise `ProofError` (`message` with the two roots filled in) unless they are equal."""
    if not _same(computed, expected):
        raise ProofError(message.format(computed=computed.hex(), expected=_hex(expected)))


def check_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise `ProofError` unless `proof` shows leaf hash `leaf` at `index` under `root_hash`.

    RFC 9162 §2.1.3.2 (verify.go ``RootFromInclusionProof``), after checking that index < size,
    that the leaf hash and every proof hash are 32 bytes, and that the proof has exactly the
    number of hashes the shape of the tree calls for.
    """
    _check_int(index, "leaf index")
    _check_int(size, "tree size")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise ProofError(f"the leaf hash is not {HASH_SIZE} bytes")
    _check_hashes(proof)
    inner, border = _decompose(index, size)
    what = f"inclusion proof for index {index} in a tree of size {size}"
    _check_length(proof, inner + border, what)
    computed = _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])
    _expect(
        computed,
        root_hash,
        f"inclusion proof for index {index} leads to root {{computed}}, "
        "not the expected root {expected}",
    )


def _check_same_tree(size: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """A consistency proof between equal sizes: empty, with equal roots (size 0: the empty one)."""
    if proof:
        raise ProofError(f"proof between equal sizes must be empty, got {len(proof)} hashes")
    if size == 0 and not (_same(root1, EMPTY_ROOT) and _same(root2, EMPTY_ROOT)):
        raise ProofError("a tree of size 0 must have the empty root")
    if not _same(root1, root2):
        raise ProofError(f"roots differ for the same size {size}")


def check_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise `ProofError` unless `proof` shows tree (size1, root1) is a prefix of (size2, root2).

    RFC 9162 §2.1.4.2 for 0 < size1 < size2 (verify.go ``RootFromConsistencyProof``), after
    exact shape checks. Equal sizes need an empty proof and equal roots (the empty root for size
    0). A proof from size 0 to a larger size is refused: RFC 9162 defines none, and it would
    prove nothing about the later tree.
    """
    _check_int(size1, "size1")
    _check_int(size2, "size2")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")
    _check_hashes(proof)
    if size1 == size2:
        _check_same_tree(size1, proof, root1, root2)
        return
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing (size1 is 0)")
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to size {size2}")
    if not isinstance(root1, bytes):
        raise ProofError(f"the root for size {size1} is a {type(root1).__name__}, not bytes")
    shift, inner, _ = _consistency_shape(size1, size2)
    what = f"consistency proof from size {size1} to size {size2}"
    _check_length(proof, consistency_proof_size(size1, size2), what)
    seed, path = (root1, proof) if size1 == 1 << shift else (proof[0], proof[1:])
    mask = (size1 - 1) >> shift
    old = _chain_border_right(_chain_inner_right(seed, path[:inner], mask), path[inner:])
    message = (
        "consistency proof leads to root {{computed}} for size {}, not the expected {{expected}}"
    )
    _expect(old, root1, message.format(size1))
    new = _chain_border_right(_chain_inner(seed, path[:inner], mask), path[inner:])
    _expect(new, root2, message.format(size2))


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Whether `proof` shows leaf hash `leaf` at `index` in the tree (size, root_hash)."""
    try:
        check_inclusion(leaf, index, size, proof, root_hash)
    except ProofError:
        return False
    return True


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> bool:
    """Whether `proof` shows the tree (size1, root1) is a prefix of the tree (size2, root2)."""
    try:
        check_consistency(size1, size2, proof, root1, root2)
    except ProofError:
        return False
    return True


def _hex(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)
