"""Commands an auditor runs: replay, verify, checkpoint, prove, keygen (and the demo)."""

from __future__ import annotations
