"""What an auditor runs: rebuild, as-of queries, the audit report, checkpoints, proofs, verify."""

from __future__ import annotations

from replay.audit import AuditReport, run_audit
from replay.audit_record import Audit, Rejected
from replay.integrity import VerifyResult, make_checkpoint, verify
from replay.prove import prove_consistency, prove_inclusion, verify_proof_file
from replay.rebuild import as_of, position_at, rebuild

__all__ = [
    "Audit",
    "AuditReport",
    "Rejected",
    "VerifyResult",
    "as_of",
    "make_checkpoint",
    "position_at",
    "prove_consistency",
    "prove_inclusion",
    "rebuild",
    "run_audit",
    "verify",
    "verify_proof_file",
]
