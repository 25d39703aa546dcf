"""Wake-ups between the worker processes of one `serve --workers` over an LMDB ledger.

Each worker folds its own appends into the shared views in the append's transaction; its
siblings learn of them through a bell: one pipe per worker, made by the parent before it forks,
into which every other worker writes, after each commit, how far the views and the log now are
(two integers, 16 bytes: a write that small is atomic). A worker's event loop listens on its
pipe (`loop.add_reader`) and, when it rings, takes the largest figures rung (`Hub.advanced`): a
subscriber on one worker sees an event appended through another within one turn of its event
loop, with no read of the store (where polling the log would cost a read and a thread switch
every few milliseconds).

A message lost to a full pipe is not lost news for long: the pipe is not empty, so the reader
wakes anyway, and the follower thread still waits for the log to grow beyond what the hub
knows, which also catches what the CLI appends beside the server.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Siblings", "bells"]

_RING: Final = struct.Struct("<QQ")
"""One ring: the views' tracking and the log's size after a commit."""


@dataclass(frozen=True, slots=True)
class Siblings:
    """One worker's end of the bells: the pipe it listens on, and those of the others."""

    listen: int
    """The read end of this worker's pipe (non-blocking)."""
    others: Sequence[int]
    """The write ends of every other worker's pipe (non-blocking)."""

    def ring(self, tracking: int, size: int) -> None:
        """Tell every other worker that the views hold `tracking` of a log of `size` (never
        blocks)."""
        message = _RING.pack(tracking, size)
        for fd in self.others:
            try:
                os.write(fd, message)
            except BlockingIOError:  # the pipe is full: that worker has yet to look anyway
                continue

    def drain(self) -> tuple[bool, int, int]:
        """Empty this worker's pipe: whether anybody can still ring (False once every write
        end is closed: then stop listening, the follower's polling remains), and the largest
        tracking and size rung (0 and 0: none)."""
        tracking = size = 0
        while True:
            try:
                data = os.read(self.listen, 4096)  # whole messages: 4096 is a multiple of 16
            except BlockingIOError:
                return True, tracking, size
            if not data:
                return False, tracking, size
            for rung, grown in _RING.iter_unpack(data):
                tracking, size = max(tracking, rung), max(size, grown)


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
