"""adminchain: the command line and the guided demo over `ledger`, `projections` and `replay`."""
