"""What an auditor runs: rebuild, as-of queries, the audit report, checkpoints, proofs, verify.

The modules: `rebuild` (the fold), `audit` (the report), `integrity` (verify, checkpoints),
`prove` (proof files), `derived` (repair of derived records); `audit_record`, `parts`, `sources`
and `workers` serve them.
"""

from __future__ import annotations

from replay.audit import run_audit
from replay.integrity import verify
from replay.rebuild import as_of

__all__ = ["as_of", "run_audit", "verify"]
