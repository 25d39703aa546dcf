"""What an auditor runs: rebuild, as-of queries, the audit report, checkpoints, proofs, verify.

The modules: `rebuild` (the fold), `audit` (the report), `integrity` (verify, checkpoints),
`prove` (proof files), `derived` (repair of derived records), `catchup` (a long catch-up of the
stored views in two processes); `audit_record`, `parts`, `sources` and `workers` serve them.

`run_audit`, `verify` and `as_of` are imported from here on first use, not with the package:
a command that needs one module (``catch-up``: `catchup` and `workers`) does not pay for
importing the others (the trust set, notes, cosignatures: tens of milliseconds of every run).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replay.audit import run_audit
    from replay.integrity import verify
    from replay.rebuild import as_of

__all__ = ["as_of", "run_audit", "verify"]

_HOMES = {"run_audit": "replay.audit", "verify": "replay.integrity", "as_of": "replay.rebuild"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'replay' has no attribute {name!r}")
    return getattr(import_module(home), name)
