"""``python -m replay JOB``: a worker process started by `replay.workers` (JOB: ``audit``, the
second half of a long replay; ``digests``, the checkpoint digests of a long verify;
``catch-up``, the second part of a long catch-up). A forked standby worker runs the same
functions (`run`): only the job's own module is imported, if it is not already."""

from __future__ import annotations

import sys
from contextlib import suppress
from importlib import import_module
from typing import Any

JOBS = {"audit": "replay.audit", "digests": "replay.integrity", "catch-up": "replay.catchup"}
"""Each job's module: its ``work()`` is the job."""


def prepare(location: str) -> Any:
    """The ledger at `location` opened by a standby worker before its job comes (None if it
    cannot be): kept open, so that the job's own opening finds it (`ledger.lmdb_datastore`
    keeps one environment per process) instead of waiting for it."""
    from ledger.ledger import Ledger  # noqa: PLC0415

    with suppress(Exception):  # the job will open it (or fail) by itself
        return Ledger.open(location, create=False)
    return None


def run(job: str) -> None:
    """Run `job` (its request is read, and its answer written, through `replay.workers`)."""
    import_module(JOBS[job]).work()


if __name__ == "__main__":
    run(sys.argv[1])
