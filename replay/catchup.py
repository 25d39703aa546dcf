"""A long catch-up of the stored views shared with a second process (``adminchain catch-up``).

The views are caught up from one read snapshot at their tracking position T to the log's size
N: this process folds part 0 of 2 of the subjects (`replay.parts.Part`), a worker
(`replay.workers`) part 1, each in memory on top of the states stored at T
(`projections.views.fold_part`: both fold the settings for every subject, in log order); then
ONE write transaction stores the states each part changed for its own subjects, with N as the
tracking position, if the tracking position is still T (`Views.advance`). So the views move
from T to N in one commit, as a single-process catch-up's chunks would have left them: a crash
or a kill before that commit leaves them at T, untouched. If the worker fails, its part is
folded here; if another catch-up moved the views meanwhile, the ordinary catch-up goes on from
where they are.

Only an LMDB ledger is split, and only from `workers.PARALLEL_FROM` events behind: below, a
second process costs more than it saves; on PostgreSQL the ordinary chunked catch-up runs
(several runners on several hosts share its chunks by their tracking).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from ledger.ledger import Ledger
from projections.api import Views
from projections.state import SHARED_KEYS, encode_state
from projections.views import fold_part
from replay import workers
from replay.parts import Part
from replay.rebuild import paused_gc

__all__ = ["catch_up"]


def catch_up(views: Views, progress: Callable[[int, int], None] | None = None) -> int:
    """Fold every event beyond the views' tracking position into them (`Views.catch_up`), a long
    catch-up on LMDB in two processes (see the module's docstring); returns the new tracking
    position."""
    ledger = views.ledger
    with views.reader() as reader:
        tracking, size = reader.tracking(), reader.size()
    if (
        size - tracking < workers.PARALLEL_FROM
        or ledger.backend.kind != "lmdb"
        or ledger.backend.read_only
    ):
        return views.catch_up(progress)
    other = workers.start("catch-up", _Request(ledger.location, tracking, size))
    if other is None:
        return views.catch_up(progress)
    try:
        within = None if progress is None else (lambda position: progress(position, size))
        mine = _fold(views, Part(0, 2), tracking, size, within)  # encoded while it works
        theirs = _other_part(views, tracking, size, other)
    finally:
        workers.stop(other)
    if mine is not None and theirs is not None and mine.last == theirs.last:
        ours = {(name, subject) for name, subject, _ in mine.changes}
        encoded = [c for c in theirs.changes if (c[0], c[1]) not in ours]  # the shared: in both
        views.advance(tracking, mine.last, (), mine.changes + encoded)
    return views.catch_up(progress)  # what was appended meanwhile (or everything, on a miss)


class _Request(msgspec.Struct, array_like=True):
    """What the worker is asked: fold part 1 of 2 of the subjects of the ledger at `location`
    from the views' tracking position, which must be `tracking`, to `stop`."""

    location: str
    tracking: int
    stop: int


class _Part(msgspec.Struct, array_like=True):
    """What the worker sends back: the last position it folded and, for the states of its own
    subjects (and the shared settings) that changed, (projection, subject, state or None)."""

    last: int
    changes: list[tuple[str, str, bytes | None]]


_REQUEST: Final = msgspec.msgpack.Decoder(_Request)
_PART: Final = msgspec.msgpack.Decoder(_Part | None)


def _fold(
    views: Views,
    part: Part,
    tracking: int,
    stop: int,
    progress: Callable[[int], None] | None = None,
) -> _Part | None:
    """`part` of the subjects folded from `tracking` to `stop` on the stored views: the last
    position, the changed states (encoded) of its own subjects and of the shared settings; None
    if the views are no longer at `tracking`."""
    with views.reader() as reader, paused_gc():
        if reader.tracking() != tracking:
            return None
        last, changes = fold_part(reader, stop, part.folds, progress)
    owns = part.owns
    return _Part(
        last,
        [
            (name, subject, None if state is None else encode_state(state))
            for name, subject, state in changes
            if owns(subject) or (name, subject) in SHARED_KEYS
        ],
    )


def _second_part(views: Views, tracking: int, stop: int) -> _Part | None:
    """Part 1 of 2 folded, as the worker sends it (None: the views moved)."""
    return _fold(views, Part(1, 2), tracking, stop)


def _other_part(views: Views, tracking: int, stop: int, process: workers.Worker) -> _Part | None:
    """The worker's part, or (if it failed) the same part folded here."""
    try:
        return workers.receive(process, _PART)
    except (workers.WorkerFailed, OSError):
        return _second_part(views, tracking, stop)


def work() -> None:
    """``python -m replay catch-up``: part 1 of `catch_up`'s fold, one `_Part` message (None if
    the views moved; nothing on a failure: the parent folds that part itself)."""
    request = workers.request(_REQUEST)
    with Ledger.open(request.location, create=False) as ledger:
        folded = _second_part(Views(ledger), request.tracking, request.stop)
    workers.send(folded)
