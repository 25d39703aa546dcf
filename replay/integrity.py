"""Verification and checkpoints (SPEC §4): is the log what it was, and can anyone check it?

`verify` reads the whole log once, in order: recomputes each leaf from the stored event bytes
and compares it with the stored leaf, decodes every event, rebuilds the tree with a `Frontier`,
folds the events up to the last stored checkpoint (beyond it there is no digest to compare), and
at each checkpoint compares the recomputed root and projection digest with the signed ones. It
names the first position that was changed, removed, reordered or inserted.

`make_checkpoint` writes a C2SP tlog-checkpoint note (`ledger.notes`) for the size the stored
views have reached, with the digest of those views, signed when a key is given.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import cast

import msgspec

from ledger import merkle
from ledger.codec import record_decoder
from ledger.errors import ProofError, StorageError
from ledger.events import Event
from ledger.ledger import Ledger
from ledger.notes import Checkpoint, Signer, Verifier
from projections.api import Views
from projections.state import Folder, digest
from replay.rebuild import Progress, decode_chunk, read_chunks

__all__ = ["VerifyResult", "make_checkpoint", "stored_checkpoints", "verify"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The ``verify --json`` object (SPEC §5)."""

    ok: bool
    size: int
    root: str
    first_bad_position: int | None
    detail: str
    checkpoints_checked: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "first_bad_position": self.first_bad_position,
            "detail": self.detail,
        }


def stored_checkpoints(
    ledger: Ledger, verifiers: list[Verifier] | None = None
) -> tuple[dict[int, Checkpoint], list[str]]:
    """The ledger's stored checkpoints by size, and a problem for each that does not open."""
    found: dict[int, Checkpoint] = {}
    problems: list[str] = []
    for size, note in ledger.checkpoints():
        try:
            checkpoint = Checkpoint.open(note, verifiers or None)
        except ProofError as e:
            problems.append(f"checkpoint of size {size}: {e}")
            continue
        if checkpoint.size != size:
            problems.append(f"checkpoint stored under size {size} says size {checkpoint.size}")
            continue
        found[size] = checkpoint
    return found, problems


def _parts(
    chunks: Iterator[list[tuple[int, bytes]]], sizes: list[int]
) -> Iterator[list[tuple[int, bytes]]]:
    """The chunks, cut after each position in `sizes` (sorted): a checkpoint ends a part.

    Cuts assume the chunk has no gap; where it has one, `verify` stops at the gap before it
    reaches the cut, so a misplaced cut is never acted on."""
    for chunk in chunks:
        first, last = chunk[0][0], chunk[-1][0]
        start = 0
        for size in sizes[bisect_left(sizes, first) : bisect_right(sizes, last)]:
            cut = size - first + 1
            if cut > start:
                yield chunk[start:cut]
                start = cut
        if start < len(chunk):
            yield chunk[start:]


def _decode_or_none(chunk: list[tuple[int, bytes]]) -> list[Event] | list[Event | None]:
    """The events of a chunk, None for each that cannot be decoded (`verify` says why in turn)."""
    try:
        return decode_chunk(chunk)
    except StorageError:
        events: list[Event | None] = []
        for _, stored in chunk:
            try:
                events.append(record_decoder.decode(stored).event)
            except msgspec.DecodeError:
                events.append(None)
        return events


def _leaf_mismatch(position: int, stored_position: int) -> str:
    if stored_position != position:
        what = "an event was inserted" if stored_position == 0 else "leaves are missing"
        return f"position {position} has no stored leaf: {what}"
    return (
        f"the event at position {position} does not match its leaf hash: it was changed, "
        "reordered or inserted"
    )


def _undecodable(position: int, stored: bytes) -> str:
    try:
        record_decoder.decode(stored)
    except msgspec.DecodeError as e:
        return f"the event at position {position} cannot be decoded: {e}"
    return f"the event at position {position} could not be decoded"  # pragma: no cover


def _leaves(ledger: Ledger) -> Iterator[tuple[int, bytes]]:
    yield from ledger.backend.read_leaves(1)
    while True:
        yield 0, b""


def verify(
    ledger: Ledger,
    *,
    verifiers: list[Verifier] | None = None,
    progress: Progress | None = None,
    every: int = 50_000,
) -> VerifyResult:
    """Recompute every leaf, the tree and the projection digests; name the first bad position."""
    checkpoints, problems = stored_checkpoints(ledger, verifiers)
    frontier = merkle.Frontier()
    folder = Folder()
    leaves = _leaves(ledger)
    good_until = 0  # every position up to here matched a checkpoint or its leaf
    trust = ledger.trust_policy()
    size = ledger.size()
    checked = 0

    def result(bad: int | None, detail: str, *, ok: bool | None = None) -> VerifyResult:
        return VerifyResult(
            ok=bad is None if ok is None else ok,
            size=size,
            root=frontier.root().hex(),
            first_bad_position=bad,
            detail=detail,
            checkpoints_checked=checked,
        )

    if problems:
        return result(None, "; ".join(problems), ok=False)
    expected = 1
    sha256 = hashlib.sha256
    appliers, push = folder.appliers, frontier.push
    sizes = sorted(checkpoints)
    fold_until = sizes[-1] if sizes else 0  # past the last checkpoint no digest is compared
    next_checkpoint = sizes[0] if sizes else 0
    for part in _parts(read_chunks(ledger), sizes):
        # the leaves, decoding, signatures and tree of every position in the part, in order
        stored_leaves = list(islice(leaves, len(part)))
        events = _decode_or_none(part)
        for (position, stored), (stored_position, stored_leaf), event in zip(
            part, stored_leaves, events, strict=True
        ):
            if position != expected:
                return result(expected, f"position {expected} is missing: an event was removed")
            # merkle.leaf_hash(codec.leaf_bytes(position, stored)), inlined on the hot path
            leaf = sha256(b"\x00" + position.to_bytes(8, "big") + stored).digest()
            if stored_leaf != leaf:
                return result(position, _leaf_mismatch(position, stored_position))
            if event is None:
                return result(position, _undecodable(position, stored))
            if trust is not None:
                problem = trust.problem(event, position)
                if problem is not None:
                    return result(
                        position,
                        f"the operator event at position {position} breaks the signing policy: "
                        f"{problem}",
                    )
            push(leaf)
            expected += 1
        # then the fold (it cannot fail), then the checkpoint that may end the part
        if expected - 1 <= fold_until:
            for event in cast(list[Event], events):
                appliers[type(event)](event)
        if expected - 1 == next_checkpoint:
            checkpoint = checkpoints[next_checkpoint]
            checked += 1
            if checkpoint.root != frontier.root():
                return result(
                    good_until + 1,
                    f"the log up to {next_checkpoint} does not match the checkpoint of size "
                    f"{next_checkpoint}: a change after position {good_until}",
                )
            if checkpoint.state_digest != folder.digest():
                return result(
                    good_until + 1,
                    f"the projection digest at size {next_checkpoint} differs from the "
                    "checkpoint's",
                )
            good_until = next_checkpoint
            next_checkpoint = sizes[checked] if checked < len(sizes) else 0
        if progress is not None and (expected - 1) // every != (expected - 1 - len(part)) // every:
            progress(expected - 1, size)
    if progress is not None:
        progress(expected - 1, size)
    stored_position, _ = next(leaves)
    if stored_position:
        return result(
            expected,
            f"the tree has a leaf for position {stored_position} but the log ends at "
            f"{expected - 1}: events were removed",
        )
    beyond = [s for s in checkpoints if s > expected - 1]
    if beyond:
        return result(
            expected,
            f"a checkpoint of size {min(beyond)} is beyond the log's end ({expected - 1}): "
            "events were removed",
        )
    if ledger.root(expected - 1) != frontier.root():
        return result(
            good_until + 1, "the stored tree's inner nodes differ from the recomputed tree"
        )
    return result(None, f"{expected - 1} events, {checked} checkpoint(s) verified")


def make_checkpoint(views: Views, signer: Signer | None = None) -> tuple[Checkpoint, str]:
    """A checkpoint of the log at the size the stored views have reached, stored in the ledger."""
    views.catch_up()
    ledger = views.ledger
    with views.reader() as reader:
        size = reader.tracking()
        states = {name: dict(rows) for name, rows in _decoded(reader).items()}
    checkpoint = Checkpoint(ledger.origin(), size, ledger.root(size), digest(states))
    note = checkpoint.sign(signer) if signer is not None else checkpoint.to_body()
    ledger.put_checkpoint(size, note)
    return checkpoint, note


def _decoded(reader: object) -> dict[str, list[tuple[str, object]]]:
    from projections.state import PROJECTIONS  # noqa: PLC0415
    from projections.views import codec  # noqa: PLC0415

    scan = reader.scan  # type: ignore[attr-defined]
    return {
        m.NAME: [(s, codec.decode_state(m.NAME, data)) for s, data in scan(m.NAME)]
        for m in PROJECTIONS
    }
