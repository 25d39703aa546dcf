"""Stored views against replay, on every backend (SPEC §2, §3; issue: projections).

Random operator and loop events — with redeliveries (the same `id` again) and out-of-order
`at` times — are appended in random batches to a real ledger, and the stored views are caught up
at random moments. Then:

- replaying the log equals the live stored views, state for state (and digest for digest);
- the state as of position p equals a replay of positions 1..p;
- appending the same events again (same ids) changes neither the log nor any state;
- a strict append refuses exactly what the projections would reject.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import StrictRefusedError
from ledger.events import (
    EnterMaintenance,
    Event,
    ExitMaintenance,
    HealthObserved,
    KeepAliveFailed,
    MaintenanceObserved,
    SetPolicy,
)
from ledger.ledger import Ledger
from projections.api import Views
from projections.state import Folder, digest
from projections.views import Carry, codec
from replay import audit as audit_module
from replay import workers
from replay.audit import run_audit
from replay.audit_record import Audit
from replay.parts import Part
from replay.rebuild import as_of, rebuild
from tests.conftest import drop_pg_schema, fresh_pg_url
from tests.eventgen import event_logs, ts

BACKENDS = ["lmdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def fresh_ledger(backend: str) -> Iterator[Ledger]:
    if backend == "lmdb":
        with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "v.lmdb") as log:
            yield log
        return
    url = fresh_pg_url()
    try:
        with Ledger.open(url) as log:
            yield log
    finally:
        drop_pg_schema(url)


def batches(events: list[Event], cuts: list[int]) -> list[list[Event]]:
    points = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(points) if b > a]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25)
@given(
    events=event_logs(max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    catch=st.booleans(),
)
def test_replay_equals_live_views(
    backend: str, events: list[Event], cuts: list[int], catch: bool
) -> None:
    with fresh_ledger(backend) as log:
        views = Views(log)
        for batch in batches(events, cuts):
            log.append_batch(batch)
            if catch:
                views.catch_up()
        stored = views.states()
        folder, position = rebuild(log)
        assert position == log.size() == views.tracking()
        assert digest(stored) == folder.digest()
        assert {k: v for k, v in stored.items() if v} == {
            k: v for k, v in folder.states.items() if v
        }
        assert run_audit(log).diverged == []


@settings(max_examples=40)
@given(events=event_logs(max_size=60), count=st.integers(1, 4))
def test_parts_of_the_subjects_fold_to_the_whole(events: list[Event], count: int) -> None:
    """Folding each part of the subjects on its own (as the processes of a long replay do) and
    putting the parts together gives the whole replay: states, verdict counts and refusals."""
    with fresh_ledger("lmdb") as log:
        log.append_batch(events)
        whole_audit = Audit()
        whole, _ = rebuild(log, audit=whole_audit)
        states: dict[str, dict[str, object]] = {name: {} for name in whole.states}
        counts = {name: dict.fromkeys(c, 0) for name, c in whole_audit.counts.items()}
        rejected = []
        for number in range(count):
            audit = Audit()
            folder, _ = rebuild(log, audit=audit, part=Part(number, count))
            for name, table in folder.states.items():
                for subject, state in table.items():
                    assert states[name].setdefault(subject, state) == state
            for name, c in audit.counts.items():
                for verdict, n in c.items():
                    counts[name][verdict] += n
            rejected += audit.rejected
        assert states == whole.states
        assert counts == whole_audit.counts
        assert sorted(rejected, key=lambda r: r.position) == whole_audit.rejected


def test_every_part_folds_the_settings_for_every_subject() -> None:
    """A policy for ``*`` tunes the subjects of every part: one keep-alive failure detaches each
    runner once the threshold is 1, whichever part folds it."""
    runners = [f"runner-{i}" for i in range(12)]
    events: list[Event] = [SetPolicy(subject="*", actor="op", keepalive_failure_threshold=1)]
    events += [KeepAliveFailed(subject=r) for r in runners]
    with fresh_ledger("lmdb") as log:
        log.append_batch(events)
        whole, _ = rebuild(log)
        detached = {s for s, state in whole.states["detachment"].items() if state.detached}
        assert detached == set(runners)
        for number in range(3):
            folder, _ = rebuild(log, part=Part(number, 3))
            mine = set(folder.states["detachment"])
            assert mine, "12 subjects over 3 parts: each part has some"
            assert all(folder.states["detachment"][s].detached for s in mine)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=8, deadline=None)
@given(events=event_logs(max_size=60))
def test_a_replay_shared_with_a_second_process_reports_the_same(
    backend: str, events: list[Event]
) -> None:
    folded_here: list[int | None] = []  # the parts this process folded

    def spy(*args: Any, **kwargs: Any) -> Any:
        folded_here.append(kwargs["part"].number if kwargs.get("part") else None)
        return rebuild(*args, **kwargs)

    with fresh_ledger(backend) as log:
        log.append_batch(events)
        alone = run_audit(log)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(audit_module, "rebuild", spy)
            patch.setattr(workers, "PARALLEL_FROM", 1)
            folded_here.clear()
            shared = run_audit(log)
            assert folded_here == ([0] if events else [None]), "the worker folded part 1"
            seen: list[int] = []
            streamed = run_audit(log, on_rejected=lambda r: seen.append(r.position))
            patch.setattr(log.backend, "location", "/nonexistent/ledger")  # the worker fails
            folded_here.clear()
            fallback = run_audit(log)
            assert folded_here == ([0, 1] if events else [None]), "part 1 folded here instead"
    assert shared.to_json() == alone.to_json()
    assert fallback.to_json() == alone.to_json()
    assert seen == [r.position for r in alone.rejected]
    assert streamed.rejected == []


@pytest.mark.parametrize("backend", ["lmdb"])
@settings(max_examples=30)
@given(events=event_logs(max_size=40), data=st.data())
def test_state_as_of_p_equals_replay_of_one_to_p(
    backend: str, events: list[Event], data: st.DataObject
) -> None:
    with fresh_ledger(backend) as log:
        log.append_batch(events)
        size = log.size()
        p = data.draw(st.integers(0, size))
        folder, position = as_of(log, position=p)
        expected = Folder()
        for entry in log.read(1, p) if p else []:
            expected.apply(entry.event)
        assert position == p
        assert folder.digest() == expected.digest()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20)
@given(events=event_logs(max_size=40))
def test_appending_the_same_events_again_changes_nothing(backend: str, events: list[Event]) -> None:
    with fresh_ledger(backend) as log:
        first = log.append_batch(events)
        stored_events = [e.event for e in log.read()]
        views = Views(log)
        before = views.states()
        again = log.append_batch(stored_events)
        assert [r.duplicate for r in again] == [True] * len(again)
        assert [r.position for r in again] == [e.position for e in log.read()]
        assert log.size() == len({r.position for r in first})
        assert views.states() == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_strict_refuses_what_the_projection_rejects(backend: str) -> None:
    with fresh_ledger(backend) as log:
        views = Views(log)
        strict = views.strict()
        log.append(EnterMaintenance(subject="n", actor="a", at=ts(0)), precondition=strict)
        log.append(MaintenanceObserved(subject="n", state="DrainFailed", reason="x", at=ts(1)))
        with pytest.raises(StrictRefusedError, match="needs_force"):
            log.append(ExitMaintenance(subject="n", actor="a", at=ts(2)), precondition=strict)
        assert log.size() == 2
        log.append(
            ExitMaintenance(subject="n", actor="a", at=ts(3), force=True), precondition=strict
        )
        # a batch builds on itself: the second event is checked against the first
        with pytest.raises(StrictRefusedError) as info:
            log.append_batch(
                [
                    EnterMaintenance(subject="m", actor="a", at=ts(4)),
                    ExitMaintenance(subject="m", actor="a", at=ts(5)),
                ],
                precondition=strict,
            )
        assert info.value.line == 2
        assert log.size() == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_views_resume_after_a_failed_catch_up(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up chunk that fails leaves views and tracking as they were; the next resumes."""
    with fresh_ledger(backend) as log:
        log.append_batch(
            [EnterMaintenance(subject=f"n{i}", actor="a", at=ts(i)) for i in range(10)]
        )
        views = Views(log)
        store_module = sys.modules[type(views.store).__module__]
        real = store_module.catch_up_txn

        def exploding(txn: object, limit: int, *rest: object) -> tuple[int, int]:
            real(txn, limit, *rest)  # writes everything, then fails before the commit
            raise RuntimeError("crash after the writes, before the commit")

        monkeypatch.setattr(store_module, "catch_up_txn", exploding)
        with pytest.raises(RuntimeError):
            views.catch_up()
        monkeypatch.undo()
        with views.reader() as reader:
            assert reader.tracking() == 0
            assert list(reader.scan("maintenance")) == []
        assert views.catch_up() == 10
        assert len(views.states()["maintenance"]) == 10


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25)
@given(events=event_logs(max_size=60), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_history_verdicts_are_the_whole_logs_verdicts(
    backend: str, events: list[Event], cuts: list[int]
) -> None:
    """`history` recomputes a subject's verdicts from its own events and the settings for every
    subject (nothing per position is stored): they are exactly the verdicts that folding the
    whole log gives each position, and `Views.verdicts` agrees, caught up or not."""
    events = [SetPolicy(subject="*", actor="op", keepalive_failure_threshold=1), *events]
    with fresh_ledger(backend) as log:
        for batch in batches(events, cuts):
            log.append_batch(batch)
        folder = Folder()
        whole = {e.position: folder.apply(e.event) for e in log.read()}
        views = Views(log)
        for subject in {e.subject for e in events}:
            for row in views.history(subject):
                expected = [
                    {k: v for k, v in msgspec.structs.asdict(verdict).items() if v is not None}
                    for verdict in whole[row["position"]]
                ]
                assert row["verdicts"] == expected
        last = log.size()
        assert views.verdicts(last) == [
            {k: v for k, v in msgspec.structs.asdict(verdict).items() if v is not None}
            for verdict in whole[last]
        ]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25)
@given(
    events=event_logs(max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    reads=st.lists(st.tuples(st.integers(1, 61), st.integers(0, 20)), min_size=1, max_size=8),
)
def test_verdicts_read_forward_in_chunks_are_the_whole_logs_verdicts(
    backend: str, events: list[Event], cuts: list[int], reads: list[tuple[int, int]]
) -> None:
    """`entry_verdicts` remembers where it left off in each subject (a subscription reads
    forward, chunk by chunk, while the log grows): whatever the order of the reads, forward,
    backward or overlapping, and appends between them, every position gets exactly the
    verdicts that folding the whole log gives it."""
    events = [SetPolicy(subject="*", actor="op", keepalive_failure_threshold=2), *events]
    with fresh_ledger(backend) as log:
        views = Views(log)
        for batch in batches(events, cuts):
            log.append_batch(batch)
            for start, length in reads:
                entries = list(log.read(start, start + length))
                if not entries:
                    continue
                folder = Folder()
                whole = {e.position: folder.apply(e.event) for e in log.read()}
                got = views.entry_verdicts(entries)
                assert got == [[_as_json(v) for v in whole[e.position]] for e in entries]


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_verdicts_honour_the_settings_for_every_subject(backend: str) -> None:
    """A runner's verdicts depend on the policy for ``*`` in force at each of its events: the
    recomputed history folds those settings where they stand in the log."""
    events: list[Event] = [
        KeepAliveFailed(subject="r", at=ts(1)),
        SetPolicy(subject="*", actor="op", at=ts(2), keepalive_failure_threshold=1),
        KeepAliveFailed(subject="r", at=ts(9)),  # detached now: at the threshold of 1
        KeepAliveFailed(subject="r", at=ts(5)),  # older than the detachment: stale
        SetPolicy(subject="*", actor="op", at=ts(10), keepalive_failure_threshold=3),
        HealthObserved(subject="r", at=ts(11), healthy=True),
    ]
    with fresh_ledger(backend) as log:
        log.append_batch(events)
        folder = Folder()
        whole = [[verdict.verdict for verdict in folder.apply(e)] for e in events]
        without = Folder()
        alone = [[v.verdict for v in without.apply(e)] for e in events if e.subject == "r"]
        views = Views(log)
        rows = views.history("r")
        got = [[v["verdict"] for v in row["verdicts"]] for row in rows]
        assert [row["position"] for row in rows] == [1, 3, 4, 6]
        assert got == [whole[p - 1] for p in (1, 3, 4, 6)]
        assert got != alone  # the settings for every subject made a difference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [False, True])
@settings(max_examples=6, deadline=None)
@given(events=event_logs(max_size=50), cut=st.integers(0, 50))
def test_a_replay_right_after_an_append_brings_the_views_up(
    backend: str, shared: bool, events: list[Event], cut: int
) -> None:
    """Views behind the log are brought up to the end by the replay itself (no separate
    catch-up): afterwards they hold exactly what a catch-up would have written, and the report
    is the one a replay over caught-up views gives."""
    with fresh_ledger(backend) as log, pytest.MonkeyPatch.context() as patch:
        if shared:
            patch.setattr(workers, "PARALLEL_FROM", 1)
        views = Views(log)
        log.append_batch(events[:cut])
        views.catch_up()
        log.append_batch(events[cut:])
        report = run_audit(log)
        assert report.compared
        assert report.diverged == []
        assert views.tracking() == log.size()
        folder, _ = rebuild(log)
        assert views.states() == folder.states
        assert run_audit(log).to_json() == report.to_json()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [False, True])
def test_views_that_diverged_before_the_replay_caught_them_up_are_named(
    backend: str, shared: bool
) -> None:
    """A stored state edited while the views were behind: the replay that brings them up
    still names the projection and the subject, and the views are caught up all the same."""
    with fresh_ledger(backend) as log, pytest.MonkeyPatch.context() as patch:
        if shared:
            patch.setattr(workers, "PARALLEL_FROM", 1)
        views = Views(log)
        log.append_batch([EnterMaintenance(subject=f"n{i}", actor="a", at=ts(i)) for i in range(6)])
        views.catch_up()
        current = views.state("maintenance", "n1")
        assert current is not None
        edited = msgspec.structs.replace(current, reason="edited behind the ledger's back")
        views.store.transact(lambda txn: txn.save("maintenance", "n1", codec.encode(edited)))
        log.append_batch([KeepAliveFailed(subject=f"n{i}", at=ts(10 + i)) for i in range(6)])
        report = run_audit(log)
        assert report.compared
        assert report.diverged == ["maintenance"]
        assert report.differences["maintenance"] == ["n1"]
        assert views.tracking() == log.size()


@pytest.mark.parametrize("number", [0, 1])
def test_a_part_decodes_only_the_events_of_its_subjects(
    number: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On LMDB a part tells its subjects' events from the others' by the subject in the stored
    record's header: the others' are never decoded (only the settings for every subject are
    decoded by every part), and the part folds the same as before."""
    import zlib  # noqa: PLC0415

    rebuild_module = sys.modules["replay.rebuild"]

    events: list[Event] = [SetPolicy(subject="*", actor="op", keepalive_failure_threshold=2)]
    events += [KeepAliveFailed(subject=f"runner-{i % 9}", at=ts(i)) for i in range(300)]
    decoded: list[int] = []
    real = rebuild_module.decode_chunk

    def counting(chunk: list[tuple[int, bytes]]) -> list[Event]:
        decoded.append(len(chunk))
        result: list[Event] = real(chunk)
        return result

    with fresh_ledger("lmdb") as log:
        log.append_batch(events)
        monkeypatch.setattr(rebuild_module, "decode_chunk", counting)
        folder, position = rebuild(log, part=Part(number, 2))
    mine = [e for e in events if e.subject == "*" or zlib.crc32(e.subject.encode()) % 2 == number]
    assert position == len(events)
    assert sum(decoded) == len(mine) < len(events)
    expected = Folder().apply_all(mine)
    assert folder.states["detachment"] == expected.states["detachment"]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=15)
@given(events=event_logs(max_size=60), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_a_catch_up_in_many_chunks_equals_replay(
    backend: str, events: list[Event], cuts: list[int]
) -> None:
    """Chunks of 7: each chunk goes on from the states the previous one left (`Carry`), and the
    views equal a replay whatever the cuts between appends and catch-ups."""
    with fresh_ledger(backend) as log, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules["projections.api"], "CHUNK", 7)
        views = Views(log)
        for batch in batches(events, cuts):
            log.append_batch(batch)
            views.catch_up()
        folder, _ = rebuild(log)
        assert views.states() == folder.states


def test_chunks_take_up_the_states_the_previous_chunk_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stored state is loaded once over a catch-up of many chunks; when another catch-up
    moved the views in between, the next chunk loads what is stored again."""
    from projections import store_lmdb  # noqa: PLC0415

    api_module = sys.modules["projections.api"]
    monkeypatch.setattr(api_module, "CHUNK", 10)
    loads: list[tuple[str, str]] = []
    real = store_lmdb._LMDBViewTxn.load

    def load(self: Any, projection: str, subject: str) -> Any:
        loads.append((projection, subject))
        return real(self, projection, subject)

    monkeypatch.setattr(store_lmdb._LMDBViewTxn, "load", load)
    with fresh_ledger("lmdb") as log:
        log.append_batch([KeepAliveFailed(subject=f"r{i % 3}", at=ts(i)) for i in range(95)])
        views = Views(log)
        assert views.catch_up() == 95
        assert len(loads) == len(set(loads)) == 6 * 4  # r0, r1, r2 and "*", every projection
        loads.clear()
        log.append_batch([KeepAliveFailed(subject=f"r{i % 3}", at=ts(100 + i)) for i in range(30)])
        store = views.store
        carry = Carry()
        assert store.catch_up_chunk(10, None, carry)[0] == 105
        Views(log).store.catch_up_chunk(10)  # someone else moves the views on
        loads.clear()
        assert store.catch_up_chunk(10, None, carry)[0] == 125
        assert len(loads) == 6 * 4  # loaded again: the carried states were stale
        folder, _ = rebuild(log)
        assert views.states() == folder.states


# ---------------------------------------------------------------- verdicts without stored rows


def _expected_verdicts(log: Ledger) -> dict[int, list[dict[str, Any]]]:
    """Each position's verdicts from a fold of the whole log (what ``history`` recomputes)."""
    folder = Folder()
    return {e.position: [_as_json(v) for v in folder.apply(e.event)] for e in log.read()}


def _drained(events: int) -> list[Event]:
    out: list[Event] = [MaintenanceObserved(subject="n1", state="DrainFailed", reason="pods")]
    out += [ExitMaintenance(subject="n1", actor="op")]  # rejected: needs force
    out += [KeepAliveFailed(subject=f"r{i % 3}", at=ts(i)) for i in range(events)]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_inline_fold_hands_back_the_verdicts_of_its_transaction(backend: str) -> None:
    """The server's appends fold inside their own transaction (`Views.inline`): the fold keeps
    each folded position's verdicts for the appender to take, once; they are those `history`
    recomputes."""
    with fresh_ledger(backend) as log:
        views = Views(log)
        fold = views.inline()
        log.append_batch(_drained(4), after=fold)
        taken = fold.take()
        assert fold.take() == {}
        expected = _expected_verdicts(log)
        assert sorted(taken) == sorted(expected)
        assert {p: [_as_json(v) for v in found] for p, found in taken.items()} == expected
        assert views.tracking() == log.size()  # folded in the append's transaction
        assert [row["verdicts"] for row in views.history("n1")] == [expected[1], expected[2]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_inline_fold_takes_the_requests_events_without_reading_them_back(
    backend: str, log_reads: list[tuple[int, int]]
) -> None:
    """Told the transaction's requests (`InlineFold.expect`, as the server's appender does),
    the fold takes their new events as given; it reads the log only for what the views lagged
    behind by, and a repeated id is not folded twice. The verdicts are the same."""
    read = log_reads
    with fresh_ledger(backend) as log:
        views = Views(log)
        fold = views.inline()
        first = log.prepare(_drained(4), None, after=fold)
        fold.expect([first])
        log.write([first])
        assert read == []  # positions 1-6 folded as given
        assert views.tracking() == 6
        given_first = fold.take()
        third = log.prepare([*_drained(1), first.events[0]], None, after=fold)  # 7-9, a repeat
        fold.expect([third])
        log.write([third])
        assert read == []
        assert views.tracking() == 9
        given_third = fold.take()
        expected = _expected_verdicts(log)
        for taken, positions in ((given_first, range(1, 7)), (given_third, range(7, 10))):
            assert {p: [_as_json(v) for v in found] for p, found in taken.items()} == {
                p: expected[p] for p in positions
            }
        log.append_batch(_drained(2))  # 10-13, not folded: the views lag behind
        again = log.prepare(_drained(2), None, after=fold)  # 14-17
        fold.expect([again])
        log.write([again])
        assert read == [(10, 17)]  # the lag and the rest read back, once
        taken = fold.take()
        expected = _expected_verdicts(log)
        assert {p: [_as_json(v) for v in found] for p, found in taken.items()} == {
            p: expected[p] for p in range(10, 18)
        }
        assert views.tracking() == log.size() == 17


def _as_json(verdict: Any) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(verdict).items() if v is not None}


@pytest.mark.parametrize("backend", BACKENDS)
def test_outcomes_fold_a_chunk_at_a_time_and_recompute_what_was_folded_before(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Views.outcomes` gathers the verdicts of a few appended events at a time as it catches
    the views up (no verdict is stored); a duplicate's original, folded long before, has its
    verdicts recomputed: the same as a fold of the whole log gives."""
    api = sys.modules["projections.api"]
    monkeypatch.setattr(api, "_OUTCOMES", 3)
    with fresh_ledger(backend) as log:
        views = Views(log)
        first = log.append_batch(_drained(2))
        views.catch_up()
        results = log.append_batch(_drained(9))  # the exit is refused again: needs force
        repeat = log.append_batch([MaintenanceObserved(subject="n1", state="DrainFailed",
                                                       reason="pods", id=first[0].id)])  # fmt: skip
        assert repeat[0].duplicate
        appended = [*results, *repeat]
        expected = _expected_verdicts(log)
        done = list(views.outcomes(appended))
        assert [o.position for o in done] == [r.position for r in appended]
        assert [o.verdicts for o in done] == [expected[r.position] for r in appended]
        assert any(v["verdict"] == "rejected" for o in done for v in o.verdicts)
        assert done[-1].duplicate
        assert done[-1].position == 1
        assert views.tracking() == log.size()


def test_a_part_follows_the_trust_events_whatever_their_subject() -> None:
    """A replay shared between two processes: each part skips the other part's events without
    decoding them, but not the trust events, which every part follows (a key trusted under a
    subject of the other part still signs this part's events)."""
    from ledger.notes import Signer  # noqa: PLC0415
    from ledger.signing import OperatorKey  # noqa: PLC0415

    alice = OperatorKey(Signer.generate("alice"))
    assert Part(0, 2).may_keep(b"alice", b"TrustKey")
    assert Part(1, 2).may_keep(b"x", b"RevokeKey")
    from ledger.trust import TrustFold  # noqa: PLC0415

    with fresh_ledger("lmdb") as log, pytest.MonkeyPatch.context() as patch:
        log.trust(alice.signer.verifier.encode())
        log.append_batch([alice.sign(EnterMaintenance(subject=f"n{i}", actor="alice"))
                          for i in range(12)])  # fmt: skip
        for number in (0, 1):  # each part ends with alice trusted, whichever owns "alice"
            trust = TrustFold()
            rebuild(log, audit=Audit(), part=Part(number, 2), resume=(Folder(), 0, trust))
            assert list(trust.keys) == ["alice"]
        patch.setattr(workers, "PARALLEL_FROM", 1)
        report = run_audit(log)
        assert report.rejected == []
        assert report.counts["maintenance"]["applied"] == 12


def _pg_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL text of every statement executed from now on (psycopg's `Cursor.execute`)."""
    import psycopg  # noqa: PLC0415

    statements: list[str] = []
    real = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(query.as_string(self.connection) if hasattr(query, "as_string")
                          else str(query))  # fmt: skip
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return statements


@contextmanager
def _pg_ledger(count: int) -> Iterator[tuple[Ledger, Views, Any]]:
    """A fresh PostgreSQL ledger holding `count` events (subjects r0, r1, …), its views and
    the server's inline fold; the schema is dropped afterwards."""
    from ledger.events import KeepAliveFailed  # noqa: PLC0415

    url = fresh_pg_url()
    try:
        with Ledger.open(url) as log:
            views = Views(log)
            log.append_batch([KeepAliveFailed(subject=f"r{i}", at=ts(i)) for i in range(count)])
            yield log, views, views.inline()
    finally:
        drop_pg_schema(url)


def _server_batch(log: Ledger, fold: Any, count: int) -> dict[int, Any]:
    """`count` single-event requests (subjects r0, r1, …) written as the server's appender
    writes them, in one transaction with the inline fold; each position's verdicts."""
    from ledger.events import KeepAliveFailed  # noqa: PLC0415

    requests = [
        log.prepare([KeepAliveFailed(subject=f"r{i}", at=ts(100 + i))], after=fold)
        for i in range(count)
    ]
    fold.take()
    fold.expect(requests)
    log.write(requests)
    verdicts: dict[int, Any] = fold.take()
    return verdicts


@pytest.mark.postgres
def test_an_inline_fold_on_postgres_loads_a_batchs_states_with_one_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's appends fold the events they were given: the stored states of all the
    batch's subjects come in one query (not one per subject), and the log's size from the
    append's own operations (not a query)."""
    with _pg_ledger(40) as (log, views, fold):
        views.catch_up()
        statements = _pg_statements(monkeypatch)
        verdicts = _server_batch(log, fold, 32)
    assert len(verdicts) == 32
    loads = [s for s in statements if "view_state" in s and s.lstrip().startswith("SELECT")]
    assert len(loads) == 1, loads  # the settings for every subject with the batch's
    sizes = [s for s in statements if "COALESCE(MAX(notification_id)" in s]
    assert len(sizes) == 1, sizes  # the append's own, under its lock


@pytest.mark.postgres
def test_verdicts_of_many_subjects_on_postgres_take_one_query_for_their_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A follower recomputing the verdicts of a batch of other appenders' events asks for all
    its subjects' newer positions in one query (not one a subject; the history of the settings
    for every subject is one more), and gets what the append's own fold gave."""
    with _pg_ledger(30) as (log, views, fold):
        given = _server_batch(log, fold, 30)
        entries = list(log.read(31))
        statements = _pg_statements(monkeypatch)
        recomputed = views.verdicts_of(entries)
    assert recomputed == [given[e.position] for e in entries]
    positions = [s for s in statements if "originator_version >" in s]
    assert len(positions) == 2, positions  # the settings for every subject, then the 30
