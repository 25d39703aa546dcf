"""Second processes for long replays and verifications: the other core's share of the work.

A worker is ``python -m replay JOB`` (`replay.__main__`): a fresh interpreter that imports
nothing of the caller's program (unlike `multiprocessing`'s spawn, which re-runs the caller's
main module). It reads its request as JSON on stdin and writes its answer on stdout; whoever
starts it falls back to doing the work itself if it fails, so a worker only makes things faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PARALLEL_FROM", "request", "start", "stop"]

PARALLEL_FROM = 100_000
"""From this many events, replay and verify share the work with a second process (on two cores
the two halves overlap); below it, starting a process costs more than it saves."""


def start(job: str, request: Mapping[str, Any]) -> subprocess.Popen[bytes] | None:
    """Start ``python -m replay JOB`` with `request` on its stdin; None if it cannot start."""
    root = str(Path(__file__).resolve().parent.parent)  # where this package is importable from
    path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
    try:
        process = subprocess.Popen(  # noqa: S603  our own module, no shell
            [sys.executable, "-m", "replay", job],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path),
        )
    except OSError:
        return None
    try:
        assert process.stdin is not None
        process.stdin.write(json.dumps(request).encode())
        process.stdin.close()
    except OSError:
        stop(process)
        return None
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the worker if it still runs (its answer is no longer needed) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def request() -> Any:
    """In a worker: the request its starter wrote on stdin."""
    return json.loads(sys.stdin.buffer.read())
