"""Verification and checkpoints (SPEC §4): is the log what it was, and can anyone check it?

`verify` reads the whole log once, in order: recomputes each leaf from the stored event bytes
and compares it with the stored leaf, decodes every event, rebuilds the tree with a `Frontier`,
and at each checkpoint compares the recomputed root with the signed one. Beside that pass, the
events up to the last stored checkpoint (beyond it there is no digest to compare) are folded to
compare each checkpoint's projection digest: in a second process for a long log, so that both
cores work. It names the first position that was changed, removed, reordered or inserted.

`make_checkpoint` writes a C2SP tlog-checkpoint note (`ledger.notes`) for the size the stored
views have reached, with the digest of those views, signed when a key is given.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Final, cast

import msgspec

from ledger import merkle
from ledger.backend import IndexCheck
from ledger.codec import decode_chunk, leaf_hashes, record_decoder
from ledger.cosign import WitnessPolicy
from ledger.errors import LedgerError, ProofError, StorageError, UsageError
from ledger.events import Event
from ledger.ledger import Ledger
from ledger.notes import Checkpoint, Signer, Verifier
from ledger.remote import RemoteLedger
from ledger.trust import TrustFold, problem_detail, record_mismatch
from projections.api import Views
from projections.remote import RemoteViews
from projections.state import Folder, digest
from replay import workers
from replay.derived import derived_problem
from replay.rebuild import Progress, read_chunks

__all__ = [
    "StoredCheckpoints",
    "VerifyResult",
    "checkpoint_digests",
    "is_signed",
    "key_name_warning",
    "make_checkpoint",
    "stored_checkpoints",
    "verify",
]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The ``verify --json`` object (SPEC §5)."""

    ok: bool
    size: int
    root: str
    first_bad_position: int | None
    detail: str
    checkpoints_checked: int = 0
    unsigned_checkpoints: tuple[int, ...] = ()
    """With verifier keys: the sizes of the stored checkpoints that carry no signature (their
    roots are checked like the others', but no key vouches for them)."""
    hidden: tuple[int, int] | None = None
    """(first, last) positions a big append on LMDB has committed but not yet shown (under
    way, or cut short by a crash: the next append removes them); not part of the log, and not
    verified (`ledger.lmdb_backend`, "Staged appends")."""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "first_bad_position": self.first_bad_position,
            "detail": self.detail,
        }
        if self.unsigned_checkpoints:  # only then: SPEC §5's object otherwise
            data["unsigned_checkpoints"] = list(self.unsigned_checkpoints)
        if self.hidden is not None:  # likewise
            data["hidden_positions"] = list(self.hidden)
        return data


def is_signed(note: str) -> bool:
    """Whether a checkpoint note carries signature lines (a bare body does not)."""
    return "\n\n" in note


@dataclass(frozen=True, slots=True)
class StoredCheckpoints:
    """The ledger's stored checkpoints that open, by size; the problems of those that do not;
    and the sizes of those that carry no signature."""

    found: dict[int, Checkpoint]
    problems: list[str]
    unsigned: tuple[int, ...]


def stored_checkpoints(
    ledger: Ledger,
    verifiers: list[Verifier] | None = None,
    witnesses: WitnessPolicy | None = None,
) -> StoredCheckpoints:
    """The ledger's stored checkpoints. With `verifiers`, a signed checkpoint must verify with
    one of them; an unsigned one is read as a plain checkpoint and listed as unsigned (never
    reported as malformed: it is what ``checkpoint`` without ``--key`` records). With
    `witnesses`, a checkpoint not cosigned by a quorum of them is a problem (SPEC-server §9)."""
    found: dict[int, Checkpoint] = {}
    problems: list[str] = []
    unsigned: list[int] = []
    for size, note in ledger.checkpoints():
        signed = is_signed(note)
        if not signed:
            unsigned.append(size)
        try:
            checkpoint = Checkpoint.open(note, (verifiers or None) if signed else None)
            if witnesses is not None:
                witnesses.check(note)
        except ProofError as e:
            problems.append(f"checkpoint of size {size}: {e}")
            continue
        if checkpoint.size != size:
            problems.append(f"checkpoint stored under size {size} says size {checkpoint.size}")
            continue
        found[size] = checkpoint
    return StoredCheckpoints(found, problems, tuple(unsigned))


def key_name_warning(signer: Signer, origin: str) -> str | None:
    """A warning when a checkpoint key's name is not the log's origin (C2SP tlog-checkpoint:
    they SHOULD match; `adminchain keygen --log` makes such a key), or None."""
    if signer.name == origin:
        return None
    return (
        f"the checkpoint is signed by the key {signer.name!r}, but the log's origin is "
        f"{origin!r}: C2SP tlog-checkpoint says a log's key SHOULD be named after its origin "
        "(make one with `adminchain keygen --log`)"
    )


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
    yield from ledger.read_leaves(1)
    while True:
        yield 0, b""


def checkpoint_digests(ledger: Ledger, sizes: Sequence[int]) -> Iterator[tuple[int, bytes]]:
    """(size, projection digest of the log's first `size` events) for each size in `sizes`
    (ascending), folded in one pass. Stops at the first position that is missing or cannot be
    decoded (`verify` names it), leaving out the sizes beyond it."""
    if not sizes:
        return
    wanted = set(sizes)
    folder = Folder()
    appliers = folder.appliers
    expected = 1
    for part in _parts(read_chunks(ledger, 1, sizes[-1]), list(sizes)):
        if part[0][0] != expected or part[-1][0] != expected + len(part) - 1:
            return
        try:
            events = decode_chunk(part)
        except StorageError:
            return
        for event in events:
            appliers[type(event)](event)
        expected += len(part)
        if expected - 1 in wanted:
            yield expected - 1, folder.digest()


class _DigestsRequest(msgspec.Struct, array_like=True):
    """What the digests worker is asked: the digests of the checkpoints of these `sizes`."""

    location: str
    sizes: list[int]


_REQUEST: Final = msgspec.msgpack.Decoder(_DigestsRequest)
_DIGEST: Final[msgspec.msgpack.Decoder[tuple[int, bytes] | None]] = msgspec.msgpack.Decoder(
    tuple[int, bytes] | None
)
"""A message of the digests worker: (size, digest) of one checkpoint, or None: all sent."""


class _Digests:
    """The checkpoints' digests: folded beside `verify`'s own checks by another process for a
    long log, or in this one when asked (`get`) for a short log or if the other process fails.

    The other process is ``python -m replay digests`` (see `work`): a fresh interpreter
    that imports nothing of the caller's program. It is asked the ledger's location and the
    sizes, and sends one (size, digest) message per checkpoint as soon as it is folded, then
    None (`replay.workers`).
    """

    def __init__(self, ledger: Ledger, sizes: list[int]) -> None:
        self._ledger, self._sizes = ledger, sizes
        self._found: dict[int, bytes] = {}
        self._process: workers.Worker | None = None
        if sizes and sizes[-1] >= workers.PARALLEL_FROM:
            request = _DigestsRequest(ledger.location, sizes)
            self._process = workers.start("digests", request)

    def collect(self) -> None:
        """Take the digests already written, without waiting (keeps the pipe from filling up
        when there are many checkpoints)."""
        while self._process is not None and workers.ready(self._process) and self._receive():
            pass

    def get(self, wanted: Sequence[int]) -> dict[int, bytes]:
        """The digests of (at least) the `wanted` sizes the log holds, waiting for them if the
        other process is still folding."""
        needed = set(wanted)
        while self._process is not None and not needed <= self._found.keys():
            if not self._receive():
                break
        if needed and not needed <= self._found.keys():
            last = max(needed)
            self._found.update(
                checkpoint_digests(self._ledger, [s for s in self._sizes if s <= last])
            )
        return self._found

    def _receive(self) -> bool:
        """Take one message of the other process; False once it is done (or failed: then the
        digests it sent are dropped, to be folded here)."""
        assert self._process is not None
        try:
            message = workers.receive(self._process, _DIGEST)
        except (workers.WorkerFailed, OSError):
            self._found.clear()
        else:
            if message is not None:
                size, digest = message
                self._found[size] = digest
                return True
        self.close()
        return False

    def close(self) -> None:
        """Stop the other process, if any (when verify ends early, its digests are not needed)."""
        process, self._process = self._process, None
        if process is not None:
            workers.stop(process)


def work() -> None:
    """``python -m replay digests``: `checkpoint_digests` for `_Digests`, one message each, then
    None (nothing more on a failure: the parent folds by itself instead)."""
    request = workers.request(_REQUEST)
    with Ledger.open(request.location, create=False) as ledger:
        for size, digest in checkpoint_digests(ledger, request.sizes):
            workers.send((size, digest))
    workers.send(None)


@dataclass(frozen=True, slots=True)
class _Passed:
    """A checkpoint whose root matched, its digest still to compare."""

    size: int
    good_until: int  # the checkpoint before it, or 0
    root: bytes
    number: int  # how many checkpoints were reached with it


def verify(
    ledger: Ledger,
    *,
    verifiers: list[Verifier] | None = None,
    witnesses: WitnessPolicy | None = None,
    progress: Progress | None = None,
    every: int = 50_000,
) -> VerifyResult:
    """Recompute every leaf, the tree and the projection digests; name the first bad position.

    Everything is read through one snapshot (`Ledger.snapshot`): a live ledger is verified as
    it stood when verify began. One pass in order checks each position's leaf, decoding and
    signatures, and each checkpoint's root; the checkpoints' projection digests are folded
    beside it (`_Digests`) and compared at the end, or when a later check fails (a digest that
    differs at an earlier checkpoint is then the first failure). Then everything derived from
    the log (the backend's indexes, the stored views) is checked against it (`replay.derived`).
    checkpoint is then the first failure).
    """
    with ledger.snapshot() as frozen:  # one consistent state, whatever is appended meanwhile
        stored = stored_checkpoints(frozen, verifiers, witnesses)
        checkpoints = stored.found
        size = frozen.size()
        # the views' position too, when the checkpoints' digests are folded that far anyway:
        # their states are then checked against the digest folded there
        views_at = _views_tracking(ledger, min(size, max(checkpoints, default=0)))
        digests = _Digests(frozen, sorted({*checkpoints, *((views_at,) if views_at else ())}))
        indexes = frozen.backend.index_check()
        hidden = getattr(frozen.backend, "hidden", lambda: None)()  # a staged append's (LMDB)
        views_digest: bytes | None = None
        try:
            result = _verify(
                frozen, checkpoints, digests, indexes, progress=progress, every=every, size=size
            )
            if result.ok and views_at:
                views_digest = digests.get([views_at]).get(views_at)
        finally:
            digests.close()
        if result.ok:
            folded = None if views_digest is None else (views_at, views_digest)
            problem = derived_problem(ledger, frozen, indexes, folded)
            if problem is not None:
                result = replace(result, ok=False, detail=problem)
    unsigned = stored.unsigned if verifiers else ()
    detail = result.detail
    if unsigned:
        sizes = ", ".join(str(s) for s in unsigned)
        detail += f"; unsigned checkpoint(s), vouched for by no key: size {sizes}"
    if stored.problems:  # the log itself was checked all the same: its real root is reported
        detail = "; ".join(stored.problems) + "; " + detail
    return VerifyResult(
        result.ok and not stored.problems,
        result.size,
        result.root,
        result.first_bad_position,
        detail,
        result.checkpoints_checked,
        unsigned,
        hidden,
    )


def _views_tracking(ledger: Ledger, limit: int) -> int:
    """The stored views' tracking position when it is at most `limit` (0: none to check by
    digest, e.g. a server's views, or views beyond the last checkpoint or the snapshot)."""
    if ledger.backend.kind == "remote":
        return 0
    try:
        tracking = Views(ledger).tracked_states(with_states=False)[0]
    except (LedgerError, UsageError):
        return 0  # `derived_problem` looks at the views itself, and says what is wrong
    return tracking if 0 < tracking <= limit else 0


def _check_part(
    part: list[tuple[int, bytes]],
    stored_leaves: list[tuple[int, bytes]],
    events: Sequence[Event | None],
    hashes: list[bytes],
    *,
    expected: int,
    trust: TrustFold,
) -> tuple[int, tuple[int, str] | None]:
    """Check each position of a part in order (its place, leaf, decoding, signatures): the
    position after the last that passed, and (the first bad position, why) if one did not."""
    for (position, stored), (stored_position, stored_leaf), event, leaf in zip(
        part, stored_leaves, events, hashes, strict=True
    ):
        if position != expected:
            return expected, (expected, f"position {expected} is missing: an event was removed")
        if stored_leaf != leaf:
            return expected, (position, _leaf_mismatch(position, stored_position))
        if event is None:
            return expected, (position, _undecodable(position, stored))
        if type(event) in trust.watched:
            problem = trust.step(event, position)
            if problem is not None:
                return expected, (position, problem_detail(event, position, problem))
        expected += 1
    return expected, None


def _verify(
    ledger: Ledger,
    checkpoints: dict[int, Checkpoint],
    digests: _Digests,
    indexes: IndexCheck,
    *,
    progress: Progress | None,
    every: int,
    size: int,
) -> VerifyResult:
    sizes = sorted(checkpoints)
    frontier = merkle.Frontier()
    leaves = _leaves(ledger)
    trust = TrustFold()  # the keys trusted at each position, from the log alone
    passed: list[_Passed] = []  # checkpoints whose root matched, in order

    def result(bad: int | None, detail: str) -> VerifyResult:
        """The outcome, unless a checkpoint passed before it has a digest that differs."""
        if bad is not None and not passed:
            return VerifyResult(False, size, frontier.root().hex(), bad, detail, 0)
        found = digests.get([c.size for c in passed]) if passed else {}
        for checkpoint in passed:
            if found.get(checkpoint.size) != checkpoints[checkpoint.size].state_digest:
                return VerifyResult(
                    False,
                    size,
                    checkpoint.root.hex(),
                    checkpoint.good_until + 1,
                    f"the projection digest at size {checkpoint.size} differs from the "
                    "checkpoint's",
                    checkpoint.number,
                )
        return VerifyResult(bad is None, size, frontier.root().hex(), bad, detail, len(passed))

    good_until = 0  # every position up to here matched a checkpoint's root
    expected = 1
    next_checkpoint = sizes[0] if sizes else 0
    for part in _parts(read_chunks(ledger), sizes):
        # the leaves, decoding, signatures and tree of every position in the part, in order
        stored_leaves = list(islice(leaves, len(part)))
        events = _decode_or_none(part)
        hashes = leaf_hashes(part)
        first = expected
        expected, failure = _check_part(
            part, stored_leaves, events, hashes, expected=expected, trust=trust
        )
        frontier.push_run(hashes[: expected - first])  # the positions that passed
        if failure is not None:
            return result(*failure)
        indexes.add_run(first, cast("list[Event]", events))  # every one checked above
        if expected - 1 == next_checkpoint:  # the part ends at a checkpoint
            root = frontier.root()
            if checkpoints[next_checkpoint].root != root:
                return result(
                    good_until + 1,
                    f"the log up to {next_checkpoint} does not match the checkpoint of size "
                    f"{next_checkpoint}: a change after position {good_until}",
                )
            passed.append(_Passed(next_checkpoint, good_until, root, len(passed) + 1))
            digests.collect()
            good_until = next_checkpoint
            next_checkpoint = sizes[len(passed)] if len(passed) < len(sizes) else 0
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
    mismatch = record_mismatch(ledger, trust.changes, expected - 1)
    if mismatch is not None:
        outcome = result(None, f"{expected - 1} events, {len(passed)} checkpoint(s) verified")
        if not outcome.ok:  # a checkpoint's digest differs: that comes first
            return outcome
        return VerifyResult(False, size, outcome.root, None, mismatch, outcome.checkpoints_checked)
    return result(None, f"{expected - 1} events, {len(passed)} checkpoint(s) verified")


def make_checkpoint(
    views: Views | RemoteViews,
    signer: Signer | None = None,
    publish: Callable[[Checkpoint, str], str] | None = None,
    *,
    store: bool = True,
) -> tuple[Checkpoint, str]:
    """A checkpoint of the log at the size the stored views have reached, stored in the ledger
    (unless `store` is False). See `key_name_warning` for the signer's name.

    `publish` (the witnesses: `ledger.witness.publish_checkpoint`) gets the checkpoint and its
    note before it is stored and returns the note to store (cosigned), or raises: then nothing
    is stored. On a remote ledger, the server's newest checkpoint (`server_checkpoint`).
    """
    if isinstance(views, RemoteViews):
        return server_checkpoint(views.ledger, signer)
    views.catch_up()
    ledger = views.ledger
    with views.reader() as reader:
        size = reader.tracking()
        states = {name: dict(rows) for name, rows in _decoded(reader).items()}
    checkpoint = Checkpoint(ledger.origin(), size, ledger.root(size), digest(states))
    note = checkpoint.sign(signer) if signer is not None else checkpoint.to_body()
    if publish is not None:
        note = publish(checkpoint, note)
    if store:
        ledger.put_checkpoint(size, note)
    return checkpoint, note


def server_checkpoint(ledger: RemoteLedger, signer: Signer | None) -> tuple[Checkpoint, str]:
    """A server's newest checkpoint (SPEC-server §7.1 ``/v1/checkpoint``: a server with
    ``--checkpoint-key`` signs one for its current size). Only the server can store one, so
    with `signer` the note must be signed by that very key (the server's own)."""
    note = ledger.remote.latest_checkpoint()
    if signer is None:
        return Checkpoint.open(note, None), note
    try:
        return Checkpoint.open(note, [signer.verifier]), note
    except ProofError:
        raise UsageError(
            f"--key: the server at {ledger.url} signs its checkpoints with its own key (serve "
            f"--checkpoint-key), and its newest is not signed by {signer.name!r}"
        ) from None


def _decoded(reader: object) -> dict[str, list[tuple[str, object]]]:
    from projections.state import PROJECTIONS  # noqa: PLC0415
    from projections.views import codec  # noqa: PLC0415

    scan = reader.scan  # type: ignore[attr-defined]
    return {
        m.NAME: [(s, codec.decode_state(m.NAME, data)) for s, data in scan(m.NAME)]
        for m in PROJECTIONS
    }
