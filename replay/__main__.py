"""``python -m replay JOB``: a worker process started by `replay.workers` (JOB: ``audit``, the
second half of a long replay; ``digests``, the checkpoint digests of a long verify;
``catch-up``, the second part of a long catch-up). A forked standby worker runs the same
functions (`run`): only the job's own module is imported, if it is not already."""

from __future__ import annotations

import sys
from importlib import import_module

JOBS = {"audit": "replay.audit", "digests": "replay.integrity", "catch-up": "replay.catchup"}
"""Each job's module: its ``work()`` is the job."""


def run(job: str) -> None:
    """Run `job` (its request is read, and its answer written, through `replay.workers`)."""
    import_module(JOBS[job]).work()


if __name__ == "__main__":
    run(sys.argv[1])
