"""Wake-ups between the worker processes of one `serve --workers` over an LMDB ledger.

Each worker folds its own appends into the shared views in the append's transaction; its
siblings learn of them through a bell: one pipe per worker, made by the parent before it forks,
into which every other worker writes a byte after each commit. A worker's event loop listens on
its pipe (`loop.add_reader`) and, when it rings, reads how far the views are (`Hub.refresh`):
a subscriber on one worker sees an event appended through another within one turn of its event
loop, where polling the log would cost a read and a thread switch every few milliseconds.

The bell only says "look": a byte lost to a full pipe changes nothing (the pipe is not empty, so
the reader wakes anyway), and the follower thread still polls the log, which also catches what
the CLI appends beside the server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Siblings", "bells"]


@dataclass(frozen=True, slots=True)
class Siblings:
    """One worker's end of the bells: the pipe it listens on, and those of the others."""

    listen: int
    """The read end of this worker's pipe (non-blocking)."""
    others: Sequence[int]
    """The write ends of every other worker's pipe (non-blocking)."""

    def ring(self) -> None:
        """Tell every other worker that the log grew (never blocks)."""
        for fd in self.others:
            try:
                os.write(fd, b"\0")
            except BlockingIOError:  # the pipe is full: that worker has yet to look anyway
                continue

    def drain(self) -> bool:
        """Empty this worker's pipe (it rang: time to look); False once nobody can ring any more
        (every write end closed: then stop listening, the follower's polling remains)."""
        while True:
            try:
                data = os.read(self.listen, 4096)
            except BlockingIOError:
                return True
            if not data:
                return False


def bells(workers: int) -> list[Siblings]:
    """Each of `workers` workers' `Siblings`, by index (pipes made here, inherited by fork)."""
    pipes = [os.pipe() for _ in range(workers)]
    for read, write in pipes:
        os.set_blocking(read, False)
        os.set_blocking(write, False)
    return [
        Siblings(read, tuple(write for j, (_, write) in enumerate(pipes) if j != i))
        for i, (read, _) in enumerate(pipes)
    ]
