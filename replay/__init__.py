"""What an auditor runs: rebuild, as-of queries, the audit report, checkpoints, proofs, verify."""
