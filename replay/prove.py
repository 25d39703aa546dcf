"""Proof files an auditor can check offline (SPEC §4): inclusion of one event, consistency of
two checkpoints. The file formats are `ledger.proofs`; this module picks the checkpoints.

An inclusion proof is made against the newest stored checkpoint that covers the position; if
none does, a new checkpoint is recorded first (signed when a signer is given).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import NotFoundError, ProofError, UsageError
from ledger.ledger import Ledger
from ledger.notes import Signer, VerifierKeys
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
from replay.integrity import make_checkpoint

__all__ = ["Proven", "prove_consistency", "prove_inclusion", "verify_proof_file"]


def _checkpoint_notes(ledger: Ledger) -> dict[int, str]:
    return dict(ledger.checkpoints())


def prove_inclusion(
    ledger: Ledger, position: int, signer: Signer | None = None, *, size: int | None = None
) -> str:
    """The tlog-proof file for the event at `position` (against the stored checkpoint of
    `size` if given, else the newest covering one)."""
    log_size = ledger.size()
    if not 1 <= position <= log_size:
        raise NotFoundError(f"no event at position {position} (the log has {log_size} events)")
    notes = _checkpoint_notes(ledger)
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
    if covering:
        checkpoint_size = max(covering)
        note = notes[checkpoint_size]
    else:
        checkpoint, note = make_checkpoint(views_of(ledger), signer)
        if checkpoint.size < position:  # a server without a key has no newer one
            raise NotFoundError(
                f"no checkpoint covers position {position} (the newest is of size "
                f"{checkpoint.size}): the server makes them with --checkpoint-key"
            )
        checkpoint_size = checkpoint.size
    stored = ledger.get(position).stored
    return make_inclusion_proof(
        position, stored, ledger.inclusion_proof(position, checkpoint_size), note
    )


def prove_consistency(ledger: Ledger, old_size: int, new_size: int | None = None) -> str:
    """The consistency proof file between two stored checkpoints (default new: the newest)."""
    notes = _checkpoint_notes(ledger)
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
        }


def verify_proof_file(text: str | bytes, verifier_keys: VerifierKeys | None) -> Proven:
    """Verify either kind of proof file with only the file and the public key(s)."""
    head = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).split("\n", 1)[0]
    if head == INCLUSION_HEADER:
        return Proven("inclusion", inclusion=verify_inclusion_proof(text, verifier_keys))
    if head == CONSISTENCY_HEADER:
        return Proven("consistency", consistency=verify_consistency_proof(text, verifier_keys))
    raise ProofError(f"not a proof file: the first line is {head[:60]!r}")
