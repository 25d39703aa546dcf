"""``python -m replay JOB``: a worker process started by `replay.workers` (JOB: ``audit``, the
second half of a long replay; ``digests``, the checkpoint digests of a long verify)."""

import sys

from replay import audit, integrity

JOBS = {"audit": audit.work, "digests": integrity.work}

if __name__ == "__main__":
    JOBS[sys.argv[1]]()
