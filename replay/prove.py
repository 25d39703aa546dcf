"""Proof files an auditor can check offline (SPEC §4): inclusion of one event, consistency of
two checkpoints. The file formats are `ledger.proofs`; this module picks the checkpoints.

An inclusion proof is made against the newest signed stored checkpoint that covers the
position. If none does: with a signer, a new signed checkpoint is recorded; without one, the
newest unsigned stored checkpoint that covers it, or else a fresh unsigned checkpoint that is
NOT stored (a proof never changes what the ledger holds without being asked to). Each of these
is said through `notice`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.cosign import WitnessPolicy
from ledger.errors import NotFoundError, ProofError, UsageError
from ledger.ledger import Ledger
from ledger.notes import Checkpoint, Signer, VerifierKeys
from ledger.proofs import (
    CONSISTENCY_HEADER,
    INCLUSION_HEADER,
    VerifiedConsistency,
    VerifiedInclusion,
    make_consistency_proof,
    make_inclusion_proof,
    verify_consistency_proof,
    verify_inclusion_proof,
)
from projections.remote import views_of
from replay.integrity import is_signed, key_name_warning, make_checkpoint

__all__ = ["prove_consistency", "prove_inclusion", "verify_proof_file"]


def _checkpoint_notes(ledger: Ledger) -> dict[int, str]:
    return dict(ledger.checkpoints())


def _cosigned(notes: dict[int, str], witnesses: WitnessPolicy | None) -> dict[int, str]:
    """The notes a quorum of `witnesses` cosigned (all of them without a policy)."""
    if witnesses is None:
        return notes
    found = {}
    for size, note in notes.items():
        try:
            witnesses.check(note)
        except ProofError:
            continue
        found[size] = note
    return found


def prove_inclusion(
    ledger: Ledger,
    position: int,
    signer: Signer | None = None,
    witnesses: WitnessPolicy | None = None,
    *,
    notice: Callable[[str], None] | None = None,
    size: int | None = None,
) -> str:
    """The tlog-proof file for the event at `position` (see the module's docstring for the
    checkpoint it leads to: with `size`, the stored checkpoint of that size; `notice` hears what
    was recorded, or why the proof is unsigned).

    With `witnesses`, only checkpoints a quorum of them cosigned count (SPEC-server §9);
    `NotFoundError` if none covers the position.
    """
    log_size = ledger.size()
    if not 1 <= position <= log_size:
        raise NotFoundError(f"no event at position {position} (the log has {log_size} events)")
    say = notice if notice is not None else _silent
    notes = _cosigned(_checkpoint_notes(ledger), witnesses)
    if size is not None:
        if size not in notes or size < position:
            known = ", ".join(str(s) for s in sorted(notes) if s >= position) or "none"
            raise NotFoundError(
                f"no stored checkpoint of size {size} covers position {position} "
                f"(covering: {known})"
            )
        covering = [size]
    else:
        covering = [s for s in notes if s >= position]
    if not covering and witnesses is not None:
        raise NotFoundError(
            f"no stored checkpoint covering position {position} is cosigned by {witnesses.quorum} "
            "of the given witnesses: publish one with `adminchain checkpoint --witness …`"
        )
    signed = [s for s in covering if is_signed(notes[s])]
    if signed:
        checkpoint_size = max(signed)
        note = notes[checkpoint_size]
    elif signer is not None:
        checkpoint, note = make_checkpoint(views_of(ledger), signer)
        _must_cover(checkpoint, position)
        checkpoint_size = checkpoint.size
        say(f"recorded a new checkpoint of size {checkpoint_size}, signed by {signer.name}")
        if (warning := key_name_warning(signer, checkpoint.origin)) is not None:
            say(warning)
    elif covering:
        checkpoint_size = max(covering)
        note = notes[checkpoint_size]
        say(
            f"the proof leads to the stored checkpoint of size {checkpoint_size}, which is "
            "unsigned: `prove --verify --pub` cannot check it (give --key to sign a new one)"
        )
    else:
        checkpoint, note = make_checkpoint(views_of(ledger), None, store=False)
        _must_cover(checkpoint, position)
        checkpoint_size = checkpoint.size
        say(
            f"no stored checkpoint covers position {position}: the proof carries an unsigned "
            f"checkpoint of size {checkpoint_size}, not stored in the ledger; "
            "`prove --verify --pub` cannot check it (give --key to sign and record one)"
        )
    stored = ledger.get(position).stored
    return make_inclusion_proof(
        position, stored, ledger.inclusion_proof(position, checkpoint_size), note
    )


def _silent(message: str) -> None:
    """A `notice` that says nothing."""


def _must_cover(checkpoint: Checkpoint, position: int) -> None:
    """Refuse a checkpoint older than the position (a server without a key has no newer one)."""
    if checkpoint.size < position:
        raise NotFoundError(
            f"no checkpoint covers position {position} (the newest is of size "
            f"{checkpoint.size}): the server makes them with --checkpoint-key"
        )


def prove_consistency(
    ledger: Ledger,
    old_size: int,
    new_size: int | None = None,
    witnesses: WitnessPolicy | None = None,
) -> str:
    """The consistency proof file between two stored checkpoints (default new: the newest);
    with `witnesses`, only checkpoints a quorum of them cosigned are used."""
    notes = _cosigned(_checkpoint_notes(ledger), witnesses)
    if not notes:
        raise NotFoundError("the ledger has no checkpoints yet (run `adminchain checkpoint`)")
    if new_size is None:
        new_size = max(notes)
    for size in (old_size, new_size):
        if size not in notes:
            known = ", ".join(str(s) for s in sorted(notes))
            raise NotFoundError(f"no checkpoint of size {size} (stored: {known})")
    if old_size > new_size:
        raise UsageError(
            f"the old checkpoint ({old_size}) must not be larger than the new ({new_size})"
        )
    proof = ledger.consistency_proof(old_size, new_size) if old_size else []
    return make_consistency_proof(notes[old_size], notes[new_size], proof)


@dataclass(frozen=True, slots=True)
class Proven:
    """What a verified proof file establishes."""

    kind: str
    inclusion: VerifiedInclusion | None = None
    consistency: VerifiedConsistency | None = None
    cosigned_by: tuple[str, ...] = ()
    """The witnesses whose cosignatures were checked (with a witness policy)."""

    def to_json(self) -> dict[str, object]:
        if self.inclusion is not None:
            i = self.inclusion
            return {
                "ok": True,
                "kind": "inclusion",
                "position": i.position,
                "size": i.size,
                "root": i.checkpoint.root.hex(),
                "origin": i.checkpoint.origin,
                "signed_by": list(i.signed_by),
                "cosigned_by": list(self.cosigned_by),
            }
        assert self.consistency is not None
        c = self.consistency
        return {
            "ok": True,
            "kind": "consistency",
            "old_size": c.old.size,
            "new_size": c.new.size,
            "old_root": c.old.root.hex(),
            "new_root": c.new.root.hex(),
            "origin": c.new.origin,
            "signed_by": list(c.signed_by),
            "cosigned_by": list(self.cosigned_by),
        }


def verify_proof_file(
    text: str | bytes, verifier_keys: VerifierKeys | None, witnesses: WitnessPolicy | None = None
) -> Proven:
    """Verify either kind of proof file with only the file and the public key(s); with
    `witnesses`, every checkpoint in it must carry a quorum of their cosignatures."""
    head = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).split("\n", 1)[0]
    if head == INCLUSION_HEADER:
        inclusion = verify_inclusion_proof(text, verifier_keys)
        cosigned = _quorum(inclusion.notes, witnesses)
        return Proven("inclusion", inclusion=inclusion, cosigned_by=cosigned)
    if head == CONSISTENCY_HEADER:
        consistency = verify_consistency_proof(text, verifier_keys)
        cosigned = _quorum(consistency.notes, witnesses)
        return Proven("consistency", consistency=consistency, cosigned_by=cosigned)
    raise ProofError(f"not a proof file: the first line is {head[:60]!r}")


def _quorum(notes: tuple[str, ...], witnesses: WitnessPolicy | None) -> tuple[str, ...]:
    """The witnesses that cosigned every note; `ProofError` if fewer than the quorum."""
    if witnesses is None:
        return ()
    names: list[str] | None = None
    for note in notes:
        found = [c.name for c in witnesses.check(note)]
        names = found if names is None else [n for n in names if n in found]
    return tuple(names or ())
