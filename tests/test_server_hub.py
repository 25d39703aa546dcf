"""The server's hub in-process: its tail of recent entries, the bells between sibling workers
(how a worker learns that a sibling appended and folded, without reading the store), and the
appender's news to the hub."""

from __future__ import annotations

import asyncio
import os
import select
from datetime import UTC, datetime
from pathlib import Path

from adminchain.server.hub import Hub, Recent, Tail
from adminchain.server.siblings import bells
from ledger import Ledger
from ledger.events import KeepAliveFailed
from ledger.ledger import Entry
from projections.api import Views


def _entry(position: int) -> Entry:
    event = KeepAliveFailed(subject=f"r-{position}")
    return Entry(position, datetime.now(UTC), event, b"")


def test_the_tail_holds_the_newest_entries_and_answers_only_whole_ranges() -> None:
    tail = Tail(size=4)
    tail.put([Recent(_entry(p), None) for p in range(1, 7)])
    assert tail.get(3, 6) is not None
    assert [r.entry.position for r in tail.get(3, 6) or []] == [3, 4, 5, 6]
    assert tail.get(2, 4) is None  # 2 was forgotten
    assert tail.get(6, 7) is None  # 7 is not there yet
    tail.put([Recent(_entry(7), None)])
    assert tail.get(4, 7) is not None
    assert tail.get(3, 3) is None
    assert sorted(tail.kept(2, 9)) == [4, 5, 6, 7]  # what is kept of a range, by position
    tail.clear()
    assert tail.get(7, 7) is None
    assert tail.kept(1, 9) == {}


def test_a_bell_wakes_every_other_worker_with_the_largest_figures_and_never_blocks() -> None:
    ends = bells(3)
    try:
        assert all(e.drain() == (True, 0, 0) for e in ends)  # nothing rang; every pipe is open
        ends[0].ring(5, 7)
        ends[2].ring(9, 9)
        ends[0].ring(6, 8)  # rings can arrive out of order: the largest figures count
        for other, heard in ((ends[1], (True, 9, 9)), (ends[2], (True, 6, 8))):
            readable, _, _ = select.select([other.listen], [], [], 5)
            assert readable == [other.listen]
            assert other.drain() == heard
        assert ends[0].drain() == (True, 9, 9)  # a worker does not hear itself
        for n in range(100_000):  # far more than a pipe holds: ringing never blocks
            ends[1].ring(n, n)
        listening, tracking, size = ends[0].drain()
        assert listening
        assert 0 < tracking == size < 100_000
        assert ends[0].drain() == (True, 0, 0)
    finally:
        for e in ends:
            os.close(e.listen)
        for fd in {fd for e in ends for fd in e.others}:
            os.close(fd)


def test_a_bell_whose_ringers_are_gone_says_so() -> None:
    ends = bells(2)
    os.close(ends[0].others[0])
    try:
        assert ends[1].drain() == (False, 0, 0)
    finally:
        os.close(ends[0].listen)
        os.close(ends[1].listen)
        os.close(ends[1].others[0])


def test_a_sibling_appender_rings_what_its_fold_left_and_the_hub_wakes_on_it(
    tmp_path: Path,
) -> None:
    """Two handles on one LMDB ledger stand for two workers: what one appends (folded in its
    own transaction) it rings; the other's hub, hearing the bell, wakes its waiters with no read
    of the store and its follower not running."""
    from adminchain.server.appender import Appender  # noqa: PLC0415

    target = str(tmp_path / "ledger")
    ends = bells(2)
    with Ledger.open(target, create=True) as ours, Ledger.open(target) as theirs:
        hub = Hub(Views(ours))
        their_views = Views(theirs)
        their_fold = their_views.inline()
        appender = Appender(theirs, their_views, Hub(their_views), their_fold, siblings=ends[1])

        async def run() -> bool:
            appender.start(asyncio.get_running_loop())
            waiting = asyncio.ensure_future(hub.wait_beyond(1, 30))
            await asyncio.sleep(0)
            request = theirs.prepare(
                [KeepAliveFailed(subject="r-1"), KeepAliveFailed(subject="r-2")], after=their_fold
            )
            await appender.append(request)
            assert hub.tracking == 0
            assert not waiting.done()
            readable, _, _ = select.select([ends[0].listen], [], [], 5)
            assert readable == [ends[0].listen]
            listening, tracking, size = ends[0].drain()
            assert (listening, tracking, size) == (True, 2, 2)
            hub.heard(tracking, size)
            assert (hub.tracking, hub.size) == (2, 2)
            return await asyncio.wait_for(waiting, 5)

        try:
            assert asyncio.run(run()) is True
        finally:
            appender.stop()
            for e in ends:
                os.close(e.listen)
                for fd in e.others:
                    os.close(fd)
        assert hub.ready()


def test_the_appender_tells_the_hub_what_its_fold_left_without_a_read(tmp_path: Path) -> None:
    """The appender's write folds the views in its own transaction; once it commits, the hub
    learns the views' position from that fold (`InlineFold.tracking`), not from a catch-up that
    opens a read (on PostgreSQL: another connection and half a dozen round trips per write)."""
    from adminchain.server.appender import Appender  # noqa: PLC0415

    with Ledger.open(str(tmp_path / "ledger"), create=True) as ledger:
        views = Views(ledger)
        hub = Hub(views)
        catch_ups = []
        real_catch_up = views.catch_up

        def counted(*args: object, **kwargs: object) -> int:
            catch_ups.append(1)
            return real_catch_up(*args, **kwargs)  # type: ignore[arg-type]

        views.catch_up = counted  # type: ignore[method-assign]
        fold = views.inline()
        appender = Appender(ledger, views, hub, fold)

        async def run() -> list[int]:
            appender.start(asyncio.get_running_loop())
            positions = []
            for n in range(3):
                request = ledger.prepare([KeepAliveFailed(subject=f"r-{n}")], after=fold)
                results, verdicts = await appender.append(request)
                assert [v.verdict for v in verdicts[0]] == ["applied"]
                positions.append(results[0].position)
                assert hub.tracking == results[0].position == fold.tracking
            return positions

        try:
            assert asyncio.run(run()) == [1, 2, 3]
        finally:
            appender.stop()
        assert catch_ups == []
        assert (hub.tracking, hub.size) == (3, 3)
